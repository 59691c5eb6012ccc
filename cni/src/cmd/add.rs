//! `ADD`: the network if it is new, the container's sandbox, an endpoint
//! joined to it, and the result.

use std::net::IpAddr;
use std::path::Path;

use cnm_core::{Controller, Endpoint, EndpointConfig, ErrorKind as CoreKind, Network, Sandbox, SandboxConfig, State};
use cnm_netns::{Handle, NetNs};
use ipnet::IpNet;
use serde_json::Value;

use super::{endpoint_name, sandbox_name, Host};
use crate::config::NetConf;
use crate::delegate;
use crate::env::CniEnv;
use crate::error::{Error, Result};
use crate::result::{CniResult, Dns, Interface, IpConfig, Route};

/// `ADD`: the network if it is new, the container's sandbox, and an
/// endpoint joined to it; with a delegated IPAM plugin, its addresses (and
/// its `DEL` if anything after it fails).
pub(super) fn add(env: &CniEnv, conf: &NetConf, stdin: &[u8], host: &Host) -> Result<Value> {
    let runtime = conf.runtime()?;
    let prev = conf.prev_result.as_ref().map(|p| CniResult::parse("prevResult", p)).transpose()?;
    let netns = env.netns.as_deref().expect("checked for ADD");
    if !netns.exists() {
        return Err(Error::env("CNI_NETNS", format!("{} does not exist", netns.display())));
    }
    let ipam = conf.ipam_type()?;
    let delegated = match &ipam {
        Some(t) => {
            let parsed = match delegate::run(t, "ADD", env, stdin)? {
                Some(v) => CniResult::parse(&format!("the answer of IPAM plugin {t:?}"), &v),
                None => Err(Error::Decode { what: format!("IPAM plugin {t:?}"), reason: "no result".into() }),
            };
            match parsed {
                Ok(r) => Some(r),
                // What it may have given goes back.
                Err(e) => {
                    let _ = delegate::run(t, "DEL", env, stdin);
                    return Err(e);
                }
            }
        }
        None => None,
    };
    let attached = attach(env, conf, netns, host, &runtime, delegated.as_ref());
    match (attached, &ipam) {
        (Ok(r), _) => {
            // After another plugin, cnm's part follows what it made.
            let all = match prev {
                Some(mut all) => {
                    all.append(r);
                    all
                }
                None => r,
            };
            Ok(all.to_version(&conf.cni_version))
        }
        (Err(e), Some(t)) => {
            if let Err(undo) = delegate::run(t, "DEL", env, stdin) {
                tracing::warn!(error = %undo, "IPAM DEL after a failed ADD");
            }
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

/// The cnm side of `ADD`.
fn attach(
    env: &CniEnv,
    conf: &NetConf,
    netns: &Path,
    host: &Host,
    runtime: &crate::config::RuntimeArgs,
    delegated: Option<&CniResult>,
) -> Result<CniResult> {
    let ctl = host.controller(conf)?;
    let given: Vec<IpNet> = delegated.map(|d| d.ips.iter().map(|i| i.address).collect()).unwrap_or_default();
    // A network this call made goes again if the call fails (unless
    // another container joined it meanwhile); a concurrent call that lost
    // its fresh network to that tries again.
    let mut tries = 0;
    let (net, ep, sb) = loop {
        tries += 1;
        let (net, net_created) = ensure_network(&ctl, conf, delegated)?;
        let dns = conf.dns.as_ref().map(|d| d.to_cnm()).unwrap_or_default();
        let joined = join(&ctl, env, netns, runtime, &given, &net, dns);
        match joined {
            Ok((ep, sb)) => break (net, ep, sb),
            Err(e) => {
                if net_created {
                    let _ = ctl.delete_network(&net.name);
                }
                let lost =
                    matches!(&e, Error::Cnm(c) if c.kind() == CoreKind::NotFound) && ctl.network(&net.name).is_err();
                if !lost || tries == 3 {
                    return Err(e);
                }
            }
        }
    };
    let mut r = result(&ctl, &net, &ep, &sb, netns, &host.ns);
    if let Some(d) = delegated {
        // The delegate's prefix lengths, routes and DNS are what it gave.
        for ip in &mut r.ips {
            if let Some(g) = d.ips.iter().find(|g| g.address.addr() == ip.address.addr()) {
                ip.address = g.address;
                ip.gateway = g.gateway.or(ip.gateway);
            }
        }
        for route in &d.routes {
            if !r.routes.contains(route) {
                r.routes.push(route.clone());
            }
        }
        if d.dns != Dns::default() {
            r.dns = d.dns.clone();
        }
    }
    Ok(r)
}

/// The container's sandbox (made if new) and its endpoint on `net`; a
/// sandbox this call made goes again if the endpoint fails.
fn join(
    ctl: &Controller,
    env: &CniEnv,
    netns: &Path,
    runtime: &crate::config::RuntimeArgs,
    given: &[IpNet],
    net: &Network,
    dns: cnm_core::DnsConfig,
) -> Result<(Endpoint, Sandbox)> {
    let mut cfg = EndpointConfig {
        name: Some(endpoint_name(&env.container_id, &env.ifname)),
        mac: runtime.mac,
        aliases: runtime.aliases.clone(),
        ports: runtime.ports.clone(),
        ifname: Some(env.ifname.clone()),
        ..Default::default()
    };
    if let Some(pod) = env.arg("K8S_POD_NAME").filter(|p| cnm_core::model::validate_name("", p).is_ok()) {
        if !cfg.aliases.iter().any(|a| a == pod) {
            cfg.aliases.push(pod.to_string());
        }
    }
    for a in runtime.ips.iter().copied().chain(given.iter().map(IpNet::addr)) {
        let slot = if a.is_ipv4() { &mut cfg.ipv4 } else { &mut cfg.ipv6 };
        if slot.is_some_and(|s| s != a) {
            return Err(Error::config("runtimeConfig.ips", format!("two addresses of one family ({a})")));
        }
        *slot = Some(a);
    }
    let (sb, created) = ensure_sandbox(ctl, env, netns, dns)?;
    let ep = match ctl.connect(&net.name, &sb.name, cfg) {
        Ok(ep) => ep,
        Err(e) => {
            if created {
                let _ = ctl.delete_sandbox(&sb.name);
            }
            return Err(e.into());
        }
    };
    Ok((ep, sb))
}

/// The network `conf` names: made if absent (a concurrent `ADD` may make
/// it first), checked against the configuration if present.
fn ensure_network(ctl: &Controller, conf: &NetConf, delegated: Option<&CniResult>) -> Result<(Network, bool)> {
    let subnets: Vec<(IpNet, Option<IpAddr>)> =
        delegated.map(|d| d.ips.iter().map(|i| (i.address.trunc(), i.gateway)).collect()).unwrap_or_default();
    let wanted = conf.network_config(&subnets)?;
    // A network another call is still making (its record is written before
    // its pools and bridge) is waited for: creating it again waits for that
    // call's operation lock, then finds it made.
    let ready = match ctl.network(&conf.name) {
        Ok(n) if n.state == State::Ready => Some(n),
        Ok(_) => None,
        Err(e) if e.kind() == CoreKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let net = match ready {
        Some(n) => n,
        None => match ctl.create_network(wanted.clone()) {
            Ok(n) => return Ok((n, true)),
            Err(e) if e.kind() == CoreKind::AlreadyExists => ctl.network(&conf.name)?,
            Err(e) => return Err(e.into()),
        },
    };
    if net.state != State::Ready {
        return Err(Error::TryAgain(format!(
            "network {:?} is {:?}: another call is changing it, or one was interrupted (`cnm reconcile` repairs that)",
            net.name, net.state
        )));
    }
    if net.driver != wanted.driver {
        return Err(Error::config("driver", format!("network {:?} exists with driver {}", net.name, net.driver)));
    }
    for p in &wanted.ipam.config {
        let Some(s) = p.subnet else { continue };
        if !net.pools.iter().any(|q| q.subnet == s || q.subnet.contains(&s.addr())) {
            let have: Vec<String> = net.pools.iter().map(|q| q.subnet.to_string()).collect();
            return Err(Error::config(
                "subnet",
                format!("network {:?} exists with subnets {} (not {s})", net.name, have.join(", ")),
            ));
        }
    }
    Ok((net, false))
}

/// The container's sandbox (one per container, whatever its networks),
/// over the runtime's namespace; whether this call made it. A sandbox left
/// by an earlier container of the same id whose namespace is gone is
/// removed first.
fn ensure_sandbox(ctl: &Controller, env: &CniEnv, netns: &Path, dns: cnm_core::DnsConfig) -> Result<(Sandbox, bool)> {
    let name = sandbox_name(&env.container_id);
    match ctl.sandbox(&name) {
        Ok(sb) if sb.netns == netns => return Ok((sb, false)),
        Ok(sb) if sb.netns.exists() => {
            return Err(Error::Cnm(cnm_core::Error::Conflict {
                what: format!("container {:?}", env.container_id),
                reason: format!("it is attached in namespace {} already", sb.netns.display()),
            }))
        }
        Ok(stale) => ctl.delete_sandbox(&stale.name)?,
        Err(e) if e.kind() == CoreKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    let cfg = SandboxConfig { name, netns: Some(netns.to_path_buf()), dns, ..Default::default() };
    Ok((ctl.create_sandbox(cfg)?, true))
}

/// The result of a join: the bridge, the host end and the container's
/// interface (an overlay's other ends are in its own namespace), its
/// addresses with their gateways, the routes, and the resolv.conf cnm wrote.
fn result(ctl: &Controller, net: &Network, ep: &Endpoint, sb: &Sandbox, netns: &Path, host: &NetNs) -> CniResult {
    let mut r = CniResult::default();
    let info = ep.join_info.clone().unwrap_or_default();
    if net.driver == "bridge" {
        let h = Handle::open(host).ok();
        let link = |name: &str| h.as_ref().and_then(|h| h.link_get(name).ok());
        if let Ok(br) = cnm_bridge::BridgeDriver::bridge_name(net) {
            let mac = link(&br).and_then(|l| l.mac).map(|m| m.to_string()).unwrap_or_default();
            r.interfaces.push(Interface { name: br, mac, ..Default::default() });
        }
        if let Some(veth) = ep.driver_data.get("veth") {
            let mac = link(veth).and_then(|l| l.mac).map(|m| m.to_string()).unwrap_or_default();
            r.interfaces.push(Interface { name: veth.clone(), mac, ..Default::default() });
        }
    }
    let index = r.interfaces.len();
    r.interfaces.push(Interface {
        name: ep.ifname.clone().unwrap_or_default(),
        mac: ep.mac.map(|m| m.to_string()).unwrap_or_default(),
        mtu: info.mtu,
        sandbox: netns.display().to_string(),
    });
    for a in [ep.ipv4, ep.ipv6].into_iter().flatten() {
        let gateway = if a.addr().is_ipv4() { info.gateway_v4 } else { info.gateway_v6 };
        r.ips.push(IpConfig { version: None, interface: Some(index), address: a, gateway });
    }
    if ep.gateway {
        for (gw, dst) in [(info.gateway_v4, "0.0.0.0/0"), (info.gateway_v6, "::/0")] {
            if let Some(gw) = gw {
                r.routes.push(Route { dst: dst.parse().expect("a default route"), gw: Some(gw) });
            }
        }
    }
    for s in &info.static_routes {
        r.routes.push(Route { dst: s.destination, gw: s.next_hop });
    }
    r.dns = resolv_conf(ctl, sb);
    r
}

/// The resolv.conf cnm wrote for the sandbox, as the result's DNS.
fn resolv_conf(ctl: &Controller, sb: &Sandbox) -> Dns {
    let mut dns = Dns::default();
    let Some(dir) = ctl.sandbox_files_dir(&sb.name) else { return dns };
    let text = std::fs::read_to_string(dir.join("resolv.conf")).unwrap_or_default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(String::from)),
            Some("search") => dns.search.extend(words.map(String::from)),
            Some("options") => dns.options.extend(words.map(String::from)),
            Some("domain") => dns.domain = words.next().unwrap_or_default().to_string(),
            _ => {}
        }
    }
    dns
}
