//! [`RemoteDriver`]: any Docker network plugin as a cnm network driver. The
//! plugin creates the link and leaves it in the host namespace; cnm-core
//! moves it into the sandbox, names it and programs it from the join
//! answer (the JoinInfo path), as libnetwork's sandbox code does.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use cnm_core::{
    Capabilities, DriverContext, Endpoint, JoinInfo, JoinRequest, Network, NetworkDriver, PortMapping, Protocol, Scope,
};
use cnm_netns::NetNs;
use ipnet::IpNet;
use serde_json::{json, Value};

use crate::client::PluginClient;
use crate::error::{Error, Result};
use crate::protocol::{ENABLE_IPV6, GENERIC, PORTMAP, ROUTE_CONNECTED};

/// A Docker network plugin as a cnm network driver, named after the plugin.
/// It is activated (and asked its capabilities) at its first use, so a
/// plugin that is down fails only the operations that need it.
#[derive(Debug)]
pub struct RemoteDriver {
    client: PluginClient,
    scope: Mutex<Option<Scope>>,
}

fn core<T>(r: Result<T>) -> cnm_core::Result<T> {
    r.map_err(cnm_core::Error::from)
}

/// A cnm port mapping as `com.docker.network.portmap` entries, one per
/// container port.
fn portmap(ports: &[PortMapping]) -> Value {
    let mut out = Vec::new();
    for p in ports {
        let proto = match p.protocol {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        };
        for (i, port) in (p.container_port.start..=p.container_port.end).enumerate() {
            let host = p.host_port.map(|h| h.start + i as u16).unwrap_or(0);
            out.push(json!({
                "Proto": proto, "IP": "", "Port": port,
                "HostIP": p.host_ip.map(|a| a.to_string()).unwrap_or_default(),
                "HostPort": host, "HostPortEnd": host,
            }));
        }
    }
    Value::Array(out)
}

fn ids(net: &Network, ep: &Endpoint) -> Value {
    json!({"NetworkID": net.id.as_str(), "EndpointID": ep.id.as_str()})
}

impl RemoteDriver {
    /// A driver calling the plugin `client` reaches.
    pub fn new(client: PluginClient) -> RemoteDriver {
        RemoteDriver { client, scope: Mutex::new(None) }
    }

    /// The plugin named `name`, found as dockerd finds it
    /// ([`PluginClient::discover`]).
    pub fn discover(name: &str) -> Result<RemoteDriver> {
        Ok(RemoteDriver::new(PluginClient::discover(name)?))
    }

    /// Activates the plugin once and learns its scope.
    fn activated(&self) -> Result<Scope> {
        let mut scope = self.scope.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = *scope {
            return Ok(s);
        }
        self.client.activate("NetworkDriver")?;
        let caps = self.client.call("NetworkDriver.GetCapabilities", &Value::Null)?;
        let s = if caps.get("Scope").and_then(Value::as_str) == Some("global") { Scope::Global } else { Scope::Local };
        *scope = Some(s);
        Ok(s)
    }

    fn call(&self, method: &str, body: &Value) -> Result<Value> {
        self.activated()?;
        self.client.call(method, body)
    }

    /// The join answer as the sandbox side cnm-core programs.
    fn join_info(&self, ep: &Endpoint, answer: &Value) -> Result<JoinInfo> {
        let m = "NetworkDriver.Join";
        let bad = |what: String| Error::Plugin { plugin: self.client.name().into(), method: m.into(), err: what };
        let name = &answer["InterfaceName"];
        let (Some(src), dst) = (name["SrcName"].as_str(), name["DstPrefix"].as_str().unwrap_or("eth")) else {
            return Err(bad("the answer names no interface (InterfaceName.SrcName)".into()));
        };
        let mut info = JoinInfo::in_host(ep, src, if dst.is_empty() { "eth" } else { dst });
        for key in ["Gateway", "GatewayIPv6"] {
            if let Some(g) = answer[key].as_str().filter(|s| !s.is_empty()) {
                let g: IpAddr = g.parse().map_err(|_| bad(format!("{key} {g:?} is not an address")))?;
                info = info.gateway(Some(g));
            }
        }
        for (i, r) in answer["StaticRoutes"].as_array().into_iter().flatten().enumerate() {
            let dest = r["Destination"].as_str().unwrap_or("");
            let dest: IpNet = dest.parse().map_err(|_| bad(format!("StaticRoutes[{i}].Destination {dest:?}")))?;
            let hop = match r["NextHop"].as_str().filter(|s| !s.is_empty()) {
                _ if r["RouteType"].as_u64() == Some(u64::from(ROUTE_CONNECTED)) => None,
                Some(h) => Some(h.parse().map_err(|_| bad(format!("StaticRoutes[{i}].NextHop {h:?}")))?),
                None => None,
            };
            info = info.route(dest, hop);
        }
        Ok(info.default_route(!answer["DisableGatewayService"].as_bool().unwrap_or(false)))
    }
}

impl NetworkDriver for RemoteDriver {
    fn name(&self) -> &str {
        self.client.name()
    }

    /// The plugin's scope, once it answered; local until then (the
    /// operations that need the plugin report it unreachable).
    fn capabilities(&self) -> Capabilities {
        let scope = self.activated().unwrap_or(Scope::Local);
        Capabilities { scope, ..Capabilities::default() }
    }

    fn create_network(&self, _: &DriverContext<'_>, net: &mut Network) -> cnm_core::Result<()> {
        let space = if net.scope == Scope::Global { "GlobalDefault" } else { "LocalDefault" };
        let data = |v6: bool| -> Vec<Value> {
            net.pools
                .iter()
                .filter(|p| p.subnet.addr().is_ipv6() == v6)
                .map(|p| {
                    let aux: BTreeMap<&String, String> = p.aux.iter().map(|(k, a)| (k, a.to_string())).collect();
                    json!({"AddressSpace": space, "Pool": p.subnet.to_string(),
                           "Gateway": p.gateway.map(|g| g.to_string()).unwrap_or_default(), "AuxAddresses": aux})
                })
                .collect()
        };
        let body = json!({
            "NetworkID": net.id.as_str(),
            "Options": {ENABLE_IPV6: net.enable_ipv6, GENERIC: net.options},
            "IPv4Data": data(false), "IPv6Data": data(true),
        });
        core(self.call("NetworkDriver.CreateNetwork", &body)).map(|_| ())
    }

    fn delete_network(&self, _: &DriverContext<'_>, net: &Network) -> cnm_core::Result<()> {
        core(self.call("NetworkDriver.DeleteNetwork", &json!({"NetworkID": net.id.as_str()}))).map(|_| ())
    }

    fn create_endpoint(&self, _: &DriverContext<'_>, net: &Network, ep: &mut Endpoint) -> cnm_core::Result<()> {
        let text = |a: Option<IpNet>| a.map(|a| a.to_string()).unwrap_or_default();
        let mut body = ids(net, ep);
        body["Interface"] = json!({"Address": text(ep.ipv4), "AddressIPv6": text(ep.ipv6),
                                   "MacAddress": ep.mac.map(|m| m.to_string()).unwrap_or_default()});
        body["Options"] = json!({PORTMAP: portmap(&ep.ports)});
        let answer = core(self.call("NetworkDriver.CreateEndpoint", &body))?;
        let iface = &answer["Interface"];
        let given = |k: &str| iface[k].as_str().filter(|s| !s.is_empty());
        if given("Address").is_some() && ep.ipv4.is_some() || given("AddressIPv6").is_some() && ep.ipv6.is_some() {
            let err = "the plugin answered an address the endpoint already has".to_string();
            return Err(Error::Plugin {
                plugin: self.name().into(),
                method: "NetworkDriver.CreateEndpoint".into(),
                err,
            }
            .into());
        }
        if let (None, Some(mac)) = (ep.mac, given("MacAddress")) {
            ep.mac =
                Some(mac.parse().map_err(|e| cnm_core::Error::invalid("MacAddress from the plugin", format!("{e}")))?);
        }
        Ok(())
    }

    fn delete_endpoint(&self, _: &DriverContext<'_>, net: &Network, ep: &Endpoint) -> cnm_core::Result<()> {
        core(self.call("NetworkDriver.DeleteEndpoint", &ids(net, ep))).map(|_| ())
    }

    fn join(
        &self,
        _: &DriverContext<'_>,
        net: &Network,
        ep: &mut Endpoint,
        req: &JoinRequest<'_>,
    ) -> cnm_core::Result<JoinInfo> {
        let mut body = ids(net, ep);
        body["SandboxKey"] = json!(req.sandbox.netns);
        body["Options"] = json!({});
        let answer = core(self.call("NetworkDriver.Join", &body))?;
        let info = match self.join_info(ep, &answer) {
            Ok(i) => i,
            Err(e) => {
                let _ = self.call("NetworkDriver.Leave", &ids(net, ep));
                return Err(e.into());
            }
        };
        let mut program = ids(net, ep);
        program["Options"] = json!({PORTMAP: portmap(&ep.ports)});
        if let Err(e) = self.call("NetworkDriver.ProgramExternalConnectivity", &program) {
            let _ = self.call("NetworkDriver.Leave", &ids(net, ep));
            return Err(e.into());
        }
        Ok(info)
    }

    fn leave(&self, _: &DriverContext<'_>, net: &Network, ep: &Endpoint, _: Option<&NetNs>) -> cnm_core::Result<()> {
        let revoked = core(self.call("NetworkDriver.RevokeExternalConnectivity", &ids(net, ep))).err();
        let left = core(self.call("NetworkDriver.Leave", &ids(net, ep))).err();
        cnm_core::Error::teardown(format!("leave endpoint {:?}", ep.name), revoked.into_iter().chain(left).collect())
    }
}
