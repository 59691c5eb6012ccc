//! The `NetworkDriver` side: dockerd's calls mapped onto a cnm
//! [`Controller`]. dockerd's networks, endpoints and sandboxes become cnm's,
//! named after dockerd's ids (`docker-` and the first 12 hex digits), so
//! `cnm network ls` shows them and they survive a restart of either side.
//! A join leaves the veth's container end in the host namespace, for
//! dockerd to move and program (an external sandbox).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use cnm_core::{
    Controller, EndpointConfig, ErrorKind as CoreKind, Interface, IpamPoolConfig, NetworkConfig, PortMapping,
    PortRange, Protocol, SandboxConfig,
};
use ipnet::IpNet;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::ipam::IpamSide;
use crate::protocol::*;

/// The label that keeps dockerd's full network id on a cnm network.
pub const DOCKER_NETWORK_ID: &str = "com.docker.network.id";

/// How the plugin presents itself to dockerd.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// The plugin's name (`docker network create -d NAME`); also names its
    /// IPAM address spaces (`NAME-local`, `NAME-global`).
    pub name: String,
    /// The cnm driver dockerd's networks get: `bridge` (local scope) or
    /// `overlay` (global scope, with a cluster store).
    pub driver: String,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig { name: "cnm".into(), driver: "bridge".into() }
    }
}

/// Docker's remote network and IPAM plugin, over a cnm controller.
pub struct Plugin {
    ctl: Arc<Controller>,
    cfg: PluginConfig,
    ipam: IpamSide,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.cfg.name).field("driver", &self.cfg.driver).finish()
    }
}

/// cnm's name for one of dockerd's ids: `docker-` and its first 12 hex
/// digits (what `docker network ls` shows).
pub fn docker_name(id: &str) -> String {
    format!("docker-{}", &id[..id.len().min(12)])
}

fn check_id(method: &str, field: &str, id: &str) -> Result<()> {
    if id.len() < 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(method, format!("{field} {id:?} is not a Docker id (hex digits, at least 12)")));
    }
    Ok(())
}

/// A JSON option value as the string cnm's typed options parse.
fn option_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Plugin {
    /// A plugin serving `ctl`'s networks. Its IPAM side keeps what dockerd
    /// asks for in `ctl`'s store, under `ipam-plugin/`.
    pub fn new(ctl: Arc<Controller>, cfg: PluginConfig) -> Plugin {
        let ipam = IpamSide::new(ctl.store().clone(), &cfg.name);
        Plugin { ctl, cfg, ipam }
    }

    /// Answers one call: `method` is the path without its slash
    /// (`NetworkDriver.Join`), `body` the request's JSON. A failure is the
    /// error dockerd gets as `{"Err": …}`.
    pub fn handle(&self, method: &str, body: &[u8]) -> Result<Vec<u8>> {
        let m = method;
        match method {
            "Plugin.Activate" => Ok(encode(ActivateResponse { implements: vec!["NetworkDriver", "IpamDriver"] })),
            "NetworkDriver.GetCapabilities" => {
                let scope = if self.cfg.driver == "overlay" { "global" } else { "local" };
                Ok(encode(CapabilitiesResponse { scope, connectivity_scope: scope }))
            }
            "NetworkDriver.CreateNetwork" => self.create_network(m, decode(m, body)?),
            "NetworkDriver.DeleteNetwork" => self.delete_network(m, decode(m, body)?),
            "NetworkDriver.CreateEndpoint" => self.create_endpoint(m, decode(m, body)?),
            "NetworkDriver.DeleteEndpoint" => self.delete_endpoint(m, decode(m, body)?),
            "NetworkDriver.Join" => self.join(m, decode(m, body)?),
            "NetworkDriver.Leave" => self.leave(m, decode(m, body)?),
            "NetworkDriver.EndpointOperInfo" => self.oper_info(m, decode(m, body)?),
            "NetworkDriver.ProgramExternalConnectivity" | "NetworkDriver.RevokeExternalConnectivity" => {
                self.external_connectivity(m, decode(m, body)?)
            }
            "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => Ok(b"{}".to_vec()),
            "NetworkDriver.AllocateNetwork" | "NetworkDriver.FreeNetwork" => Ok(b"{}".to_vec()),
            m if m.starts_with("IpamDriver.") => self.ipam.handle(&self.ctl, m, body),
            other => Err(Error::invalid(other, "no such method")),
        }
    }

    fn create_network(&self, m: &str, req: CreateNetworkRequest) -> Result<Vec<u8>> {
        check_id(m, "NetworkID", &req.network_id)?;
        let mut cfg = NetworkConfig::new(docker_name(&req.network_id), self.cfg.driver.as_str());
        if let Some(generic) = req.options.get(GENERIC) {
            let Value::Object(o) = generic else {
                return Err(Error::invalid(m, format!("{GENERIC} is not an object")));
            };
            cfg.options = o.iter().map(|(k, v)| (k.clone(), option_string(v))).collect();
        }
        cfg.enable_ipv6 = req.options.get(ENABLE_IPV6).and_then(Value::as_bool).unwrap_or(false);
        let data = req.ipv4_data.unwrap_or_default().into_iter().chain(req.ipv6_data.unwrap_or_default());
        for (i, d) in data.enumerate() {
            cfg.ipam.config.push(pool_config(m, i, &d)?);
        }
        cfg.labels.insert(DOCKER_NETWORK_ID.into(), req.network_id.clone());
        self.ctl.create_network(cfg).map_err(Error::controller(m))?;
        Ok(b"{}".to_vec())
    }

    fn delete_network(&self, m: &str, req: NetworkRequest) -> Result<Vec<u8>> {
        check_id(m, "NetworkID", &req.network_id)?;
        match self.ctl.delete_network(&docker_name(&req.network_id)) {
            Err(e) if e.kind() != CoreKind::NotFound => Err(Error::controller(m)(e)),
            _ => Ok(b"{}".to_vec()),
        }
    }

    fn create_endpoint(&self, m: &str, req: CreateEndpointRequest) -> Result<Vec<u8>> {
        check_id(m, "NetworkID", &req.network_id)?;
        check_id(m, "EndpointID", &req.endpoint_id)?;
        let given = req.interface.unwrap_or_default();
        let mut cfg = EndpointConfig { name: Some(docker_name(&req.endpoint_id)), ..Default::default() };
        cfg.ipv4 = address(m, "Interface.Address", &given.address)?;
        cfg.ipv6 = address(m, "Interface.AddressIPv6", &given.address_ipv6)?;
        if !given.mac_address.is_empty() {
            let mac = given.mac_address.parse().map_err(|e| Error::invalid(m, format!("Interface.MacAddress: {e}")))?;
            cfg.mac = Some(mac);
        }
        cfg.ports = port_mappings(m, req.options.get(PORTMAP))?;
        let ep = self.ctl.create_endpoint(&docker_name(&req.network_id), cfg).map_err(Error::controller(m))?;
        // Only what dockerd left empty may be answered (it refuses the rest).
        let mut answer = EndpointInterface::default();
        if given.mac_address.is_empty() {
            answer.mac_address = ep.mac.map(|m| m.to_string()).unwrap_or_default();
        }
        if given.address.is_empty() {
            answer.address = ep.ipv4.map(|a| a.to_string()).unwrap_or_default();
        }
        if given.address_ipv6.is_empty() {
            answer.address_ipv6 = ep.ipv6.map(|a| a.to_string()).unwrap_or_default();
        }
        Ok(encode(CreateEndpointResponse { interface: Some(answer) }))
    }

    fn delete_endpoint(&self, m: &str, req: EndpointRequest) -> Result<Vec<u8>> {
        let (net, ep) = self.names(m, &req.network_id, &req.endpoint_id)?;
        // dockerd deletes without a Leave when it cleans up after a crash.
        match self.ctl.endpoint(&net, &ep) {
            Ok(e) if e.sandbox.is_some() => self.leave_endpoint(m, &net, &ep)?,
            Err(e) if e.kind() == CoreKind::NotFound => return Ok(b"{}".to_vec()),
            _ => {}
        }
        match self.ctl.delete_endpoint(&net, &ep) {
            Err(e) if e.kind() != CoreKind::NotFound => Err(Error::controller(m)(e)),
            _ => Ok(b"{}".to_vec()),
        }
    }

    fn names(&self, m: &str, network_id: &str, endpoint_id: &str) -> Result<(String, String)> {
        check_id(m, "NetworkID", network_id)?;
        check_id(m, "EndpointID", endpoint_id)?;
        Ok((docker_name(network_id), docker_name(endpoint_id)))
    }

    fn join(&self, m: &str, req: JoinRequest) -> Result<Vec<u8>> {
        let (net, ep) = self.names(m, &req.network_id, &req.endpoint_id)?;
        let key = Path::new(&req.sandbox_key);
        let Some(base) = key.file_name().and_then(|b| b.to_str()).filter(|_| key.is_absolute()) else {
            return Err(Error::invalid(m, format!("SandboxKey {:?} is not a namespace path", req.sandbox_key)));
        };
        let sandbox = format!("docker-{base}");
        let created = match self.ctl.sandbox(&sandbox) {
            Ok(sb) if sb.external => false,
            Ok(_) => {
                let why = format!("cnm has a sandbox {sandbox:?} of its own, not dockerd's");
                return Err(Error::invalid(m, why));
            }
            Err(e) if e.kind() == CoreKind::NotFound => {
                let cfg = SandboxConfig {
                    name: sandbox.clone(),
                    netns: Some(key.into()),
                    external: true,
                    ..Default::default()
                };
                self.ctl.create_sandbox(cfg).map_err(Error::controller(m))?;
                true
            }
            Err(e) => return Err(Error::controller(m)(e)),
        };
        let joined = self.ctl.join(&net, &ep, &sandbox).map_err(Error::controller(m));
        let joined = match joined {
            Ok(j) => j,
            Err(e) => {
                if created {
                    let _ = self.ctl.delete_sandbox(&sandbox);
                }
                return Err(e);
            }
        };
        let info = joined.join_info.unwrap_or_default();
        let Some(Interface::InHost { src_name, dst_prefix }) = info.interface.clone() else {
            return Err(Error::invalid(m, format!("the {} driver left no interface to move", self.cfg.driver)));
        };
        let text = |a: Option<IpAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let routes = info
            .static_routes
            .iter()
            .map(|r| StaticRoute {
                destination: r.destination.to_string(),
                route_type: if r.next_hop.is_some() { ROUTE_NEXTHOP } else { ROUTE_CONNECTED },
                next_hop: text(r.next_hop),
            })
            .collect();
        // An overlay's gateway leads only to the network's other subnets
        // (its static routes): without one in the answer, dockerd connects
        // the container to its gateway bridge (docker_gwbridge) for the
        // outside, as it does for Docker's own overlay.
        let overlay = self.ctl.network(&net).is_ok_and(|n| n.driver == "overlay");
        let gateway = |a: Option<IpAddr>| if overlay { String::new() } else { text(a) };
        Ok(encode(JoinResponse {
            interface_name: InterfaceName { src_name, dst_prefix },
            gateway: gateway(info.gateway_v4),
            gateway_ipv6: gateway(info.gateway_v6),
            static_routes: routes,
            disable_gateway_service: !info.default_route,
        }))
    }

    fn leave(&self, m: &str, req: EndpointRequest) -> Result<Vec<u8>> {
        let (net, ep) = self.names(m, &req.network_id, &req.endpoint_id)?;
        self.leave_endpoint(m, &net, &ep)?;
        Ok(b"{}".to_vec())
    }

    /// Leaves; the external sandbox goes with its last endpoint.
    fn leave_endpoint(&self, m: &str, net: &str, ep: &str) -> Result<()> {
        let e = self.ctl.endpoint(net, ep).map_err(Error::controller(m))?;
        let Some(sb_id) = e.sandbox else { return Ok(()) };
        self.ctl.leave(net, ep).map_err(Error::controller(m))?;
        if let Ok(sb) = self.ctl.sandbox(sb_id.as_str()) {
            if sb.external && sb.endpoints.is_empty() {
                self.ctl.delete_sandbox(&sb.name).map_err(Error::controller(m))?;
            }
        }
        Ok(())
    }

    fn oper_info(&self, m: &str, req: EndpointRequest) -> Result<Vec<u8>> {
        let (net, ep) = self.names(m, &req.network_id, &req.endpoint_id)?;
        let e = self.ctl.endpoint(&net, &ep).map_err(Error::controller(m))?;
        let mut value = BTreeMap::new();
        value.insert("cnm.endpoint", json!(e.name));
        value.insert("cnm.network", json!(e.network));
        if let Some(v) = e.driver_data.get("veth") {
            value.insert("cnm.veth", json!(v));
        }
        if !e.bindings.is_empty() {
            let ports: Vec<String> = e
                .bindings
                .iter()
                .map(|b| {
                    let ip = b.host_ip.map(|a| a.to_string()).unwrap_or_default();
                    format!("{ip}:{}->{}/{}", b.host_port, b.container_port, b.protocol)
                })
                .collect();
            value.insert("cnm.ports", json!(ports));
        }
        Ok(encode(json!({ "Value": value })))
    }

    /// The published ports (from `CreateEndpoint`'s portmap) are programmed
    /// by cnm-nat here, not at `Join`, and withdrawn at
    /// `RevokeExternalConnectivity` (dockerd revokes when a container's
    /// default route moves to another network, and programs again when it
    /// comes back).
    fn external_connectivity(&self, m: &str, req: EndpointRequest) -> Result<Vec<u8>> {
        let (net, ep) = self.names(m, &req.network_id, &req.endpoint_id)?;
        if m.ends_with("ProgramExternalConnectivity") {
            self.ctl.program_external_connectivity(&net, &ep).map_err(Error::controller(m))?;
        } else {
            self.ctl.revoke_external_connectivity(&net, &ep).map_err(Error::controller(m))?;
        }
        Ok(b"{}".to_vec())
    }
}

/// One `IPv4Data`/`IPv6Data` entry as a cnm pool request.
fn pool_config(m: &str, i: usize, d: &IpamData) -> Result<IpamPoolConfig> {
    let field = |f: &str| format!("IPData[{i}].{f}");
    let net = |f: &str, s: &str| -> Result<IpNet> {
        s.parse().map_err(|_| Error::invalid(m, format!("{}: {s:?} is not an address with prefix", field(f))))
    };
    let subnet = net("Pool", &d.pool)?.trunc();
    let gateway = if d.gateway.is_empty() { None } else { Some(net("Gateway", &d.gateway)?.addr()) };
    let mut aux = BTreeMap::new();
    for (k, v) in &d.aux_addresses {
        let a = net(&format!("AuxAddresses.{k}"), v).map(|n| n.addr()).or_else(|_| {
            v.parse::<IpAddr>().map_err(|_| Error::invalid(m, format!("{}: {v:?} is not an address", field(k))))
        })?;
        aux.insert(k.clone(), a);
    }
    Ok(IpamPoolConfig { subnet: Some(subnet), gateway, auxiliary_addresses: aux, ..Default::default() })
}

/// `10.1.3.2/24` (or empty) as the address alone.
fn address(m: &str, field: &str, s: &str) -> Result<Option<IpAddr>> {
    if s.is_empty() {
        return Ok(None);
    }
    let a = s.parse::<IpNet>().map(|n| n.addr()).or_else(|_| s.parse::<IpAddr>());
    a.map(Some).map_err(|_| Error::invalid(m, format!("{field}: {s:?} is not an address")))
}

/// `com.docker.network.portmap` as cnm port mappings.
fn port_mappings(m: &str, v: Option<&Value>) -> Result<Vec<PortMapping>> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let entries: Vec<PortBinding> =
        serde_json::from_value(v.clone()).map_err(|e| Error::invalid(m, format!("{PORTMAP}: {e}")))?;
    let mut out = Vec::new();
    for (i, p) in entries.iter().enumerate() {
        let field = format!("{PORTMAP}[{i}]");
        let protocol = match p.proto {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            132 => Protocol::Sctp,
            n => return Err(Error::invalid(m, format!("{field}.Proto: unknown protocol number {n}"))),
        };
        let host_ip = if p.host_ip.is_empty() {
            None
        } else {
            Some(p.host_ip.parse().map_err(|_| Error::invalid(m, format!("{field}.HostIP: {:?}", p.host_ip)))?)
        };
        // A host range for one container port means "any free port of
        // the range"; cnm takes its first.
        let host_port = (p.host_port != 0).then(|| PortRange::single(p.host_port));
        let mapping = PortMapping { protocol, host_ip, host_port, container_port: PortRange::single(p.port) };
        mapping.validate().map_err(|e| Error::invalid(m, format!("{field}: {e}")))?;
        out.push(mapping);
    }
    Ok(out)
}
