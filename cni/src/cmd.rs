//! The commands: `ADD`, `DEL`, `CHECK`, `VERSION`, `STATUS` and `GC`, each
//! from the configuration and the environment to the JSON a runtime reads.

use std::net::IpAddr;
use std::path::Path;

use cnm_core::{Controller, Endpoint, EndpointConfig, ErrorKind as CoreKind, Network, Sandbox, SandboxConfig, State};
use cnm_netns::{Handle, NetNs};
use ipnet::IpNet;
use serde_json::{json, Value};

use crate::config::{NetConf, SUPPORTED_VERSIONS};
use crate::delegate;
use crate::env::{CniEnv, Command};
use crate::error::{Error, Result};
use crate::result::{CniResult, Dns, Interface, IpConfig, Route};

/// The host namespace a call works in, and how it gets rid of veths.
pub struct Host {
    ns: NetNs,
    park: bool,
    bridges: std::cell::RefCell<Vec<std::sync::Arc<cnm_bridge::BridgeDriver>>>,
}

impl Host {
    /// The caller's namespace. `park`: leaves park veths for
    /// [`cnm_bridge::delete_parked`] instead of deleting each (see
    /// [`cnm_bridge::BridgeDriver::parking`]).
    pub fn current(park: bool) -> Result<Host> {
        Ok(Host::new(NetNs::current()?, park))
    }

    /// Another namespace as the host (an embedder's, a test's).
    pub fn new(ns: NetNs, park: bool) -> Host {
        Host { ns, park, bridges: Default::default() }
    }

    /// Whether a leave of this call parked a veth that is not deleted yet.
    pub fn parked(&self) -> bool {
        self.bridges.borrow().iter().any(|b| b.parked())
    }

    fn controller(&self, conf: &NetConf) -> Result<Controller> {
        let bridge = std::sync::Arc::new(match self.park {
            true => cnm_bridge::BridgeDriver::parking(),
            false => cnm_bridge::BridgeDriver::one_shot(),
        });
        self.bridges.borrow_mut().push(bridge.clone());
        crate::stack::controller_with(conf, &self.ns, bridge)
    }
}

/// cnm's sandbox for a container.
pub fn sandbox_name(container_id: &str) -> String {
    format!("cni-{container_id}")
}

/// cnm's endpoint for a container's interface on a network: the container
/// id and the interface name (its characters outside cnm's name set as
/// `_`).
pub fn endpoint_name(container_id: &str, ifname: &str) -> String {
    let ifname: String =
        ifname.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect();
    format!("{container_id}-{ifname}")
}

/// Runs one call: `stdin` is the network configuration. The JSON to print,
/// if any. Veths go at once.
pub fn run(env: &CniEnv, stdin: &[u8]) -> Result<Option<Value>> {
    run_in(env, stdin, &Host::current(false)?)
}

/// [`run`] in `host`.
pub fn run_in(env: &CniEnv, stdin: &[u8], host: &Host) -> Result<Option<Value>> {
    if env.command == Command::Version {
        return Ok(Some(version(stdin)));
    }
    let conf = NetConf::parse(stdin)?;
    conf.validate()?;
    match env.command {
        Command::Add => add(env, &conf, stdin, host).map(Some),
        Command::Del => del(env, &conf, stdin, host).map(|_| None),
        Command::Check => check(env, &conf, stdin, host).map(|_| None),
        Command::Status => status(&conf, host).map(|_| None),
        Command::Gc => gc(&conf, host).map(|_| None),
        Command::Version => unreachable!("answered above"),
    }
}

/// `VERSION`: the versions spoken, in the version asked for (the latest
/// when none or an unknown one is asked).
fn version(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(String::from))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| SUPPORTED_VERSIONS.last().unwrap().to_string());
    json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS})
}

/// `ADD`: the network if it is new, the container's sandbox, and an
/// endpoint joined to it; with a delegated IPAM plugin, its addresses (and
/// its `DEL` if anything after it fails).
fn add(env: &CniEnv, conf: &NetConf, stdin: &[u8], host: &Host) -> Result<Value> {
    let runtime = conf.runtime()?;
    let netns = env.netns.as_deref().expect("checked for ADD");
    if !netns.exists() {
        return Err(Error::env("CNI_NETNS", format!("{} does not exist", netns.display())));
    }
    let ipam = conf.ipam_type()?;
    let delegated = match &ipam {
        Some(t) => match delegate::run(t, "ADD", env, stdin)? {
            Some(v) => Some(CniResult::parse(&format!("the answer of IPAM plugin {t:?}"), &v)?),
            None => return Err(Error::Decode { what: format!("IPAM plugin {t:?}"), reason: "no result".into() }),
        },
        None => None,
    };
    let attached = attach(env, conf, netns, host, &runtime, delegated.as_ref());
    match (attached, &ipam) {
        (Ok(mut r), _) => {
            if let Some(prev) = &conf.prev_result {
                let mut all = CniResult::parse("prevResult", prev)?;
                all.append(r);
                r = all;
            }
            Ok(r.to_version(&conf.cni_version))
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

/// `DEL`: the endpoint goes, and the sandbox with its last endpoint; what
/// is already gone (the namespace, the interface, the container, an `ADD`
/// that never ran) is success. A delegated IPAM plugin gets its `DEL`
/// whatever cnm had.
fn del(env: &CniEnv, conf: &NetConf, stdin: &[u8], host: &Host) -> Result<()> {
    let detached = detach(env, conf, host);
    let released = match conf.ipam_type()? {
        Some(t) => delegate::run(&t, "DEL", env, stdin).map(|_| ()),
        None => Ok(()),
    };
    detached.and(released)
}

fn detach(env: &CniEnv, conf: &NetConf, host: &Host) -> Result<()> {
    let ctl = host.controller(conf)?;
    let gone = |e: &cnm_core::Error| e.kind() == CoreKind::NotFound;
    let ep = match ctl.endpoint(&conf.name, &endpoint_name(&env.container_id, &env.ifname)) {
        Ok(ep) => ep,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let sb_name = sandbox_name(&env.container_id);
    match ctl.disconnect(&conf.name, &sb_name) {
        Err(e) if gone(&e) => match ctl.delete_endpoint(&conf.name, &ep.name) {
            Err(e) if !gone(&e) => return Err(e.into()),
            _ => {}
        },
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    match ctl.sandbox(&sb_name) {
        Ok(sb) if sb.endpoints.is_empty() => match ctl.delete_sandbox(&sb_name) {
            Err(e) if !gone(&e) => Err(e.into()),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// `CHECK`: the endpoint is joined to the container's sandbox, its
/// interface is in the namespace with its MAC and addresses, and the
/// previous result names those addresses.
fn check(env: &CniEnv, conf: &NetConf, stdin: &[u8], host: &Host) -> Result<()> {
    if conf.cni_version.starts_with("0.3") {
        return Err(Error::IncompatibleVersion {
            version: conf.cni_version.clone(),
            supported: "0.4.0 and later for CHECK".into(),
        });
    }
    let prev = match &conf.prev_result {
        Some(p) => CniResult::parse("prevResult", p)?,
        None => return Err(Error::config("prevResult", "CHECK needs the result of ADD")),
    };
    if let Some(t) = conf.ipam_type()? {
        delegate::run(&t, "CHECK", env, stdin)?;
    }
    let ctl = host.controller(conf)?;
    let failed = |what: String| Error::CheckFailed(what);
    let ep = ctl
        .endpoint(&conf.name, &endpoint_name(&env.container_id, &env.ifname))
        .map_err(|e| failed(format!("container {:?} on network {:?}: {e}", env.container_id, conf.name)))?;
    let sb = ctl.sandbox(&sandbox_name(&env.container_id)).map_err(|e| failed(e.to_string()))?;
    if ep.sandbox.as_ref() != Some(&sb.id) {
        return Err(failed(format!("endpoint {:?} is not joined to the container", ep.name)));
    }
    let netns = env.netns.as_deref().expect("checked for CHECK");
    let ns = NetNs::open(netns).map_err(|e| failed(format!("namespace {}: {e}", netns.display())))?;
    let h = Handle::open(&ns).map_err(|e| failed(format!("namespace {}: {e}", netns.display())))?;
    let link = h.link_get(env.ifname.as_str()).map_err(|e| failed(format!("interface {:?}: {e}", env.ifname)))?;
    if ep.mac.is_some() && link.mac != ep.mac {
        return Err(failed(format!("interface {:?} has MAC {:?}, not {:?}", env.ifname, link.mac, ep.mac)));
    }
    let have: Vec<IpNet> = h
        .addr_list(Some(link.index), None)
        .map_err(|e| failed(e.to_string()))?
        .into_iter()
        .map(|a| a.address)
        .collect();
    for a in [ep.ipv4, ep.ipv6].into_iter().flatten() {
        if !have.iter().any(|h| h.addr() == a.addr()) {
            return Err(failed(format!("interface {:?} lacks {a}", env.ifname)));
        }
        if !prev.ips.iter().any(|p| p.address.addr() == a.addr()) {
            return Err(failed(format!("prevResult lacks {a}")));
        }
    }
    Ok(())
}

/// `STATUS`: ready when the store (and etcd, for an overlay) answers.
fn status(conf: &NetConf, host: &Host) -> Result<()> {
    let ctl = host.controller(conf).map_err(|e| Error::NotAvailable(e.to_string()))?;
    ctl.networks().map_err(|e| Error::NotAvailable(e.to_string()))?;
    Ok(())
}

/// `GC`: every attachment to this network that the runtime no longer lists
/// (`cni.dev/valid-attachments`) goes, with sandboxes left empty.
fn gc(conf: &NetConf, host: &Host) -> Result<()> {
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let ctl = host.controller(conf)?;
    let eps = match ctl.endpoints(Some(&conf.name)) {
        Ok(e) => e,
        Err(e) if e.kind() == CoreKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut errors = Vec::new();
    for ep in eps {
        let ifname = ep.requested_ifname.clone().unwrap_or_default();
        let Some(cid) = ep.name.strip_suffix(&format!("-{ifname}")) else { continue };
        if ep.requested_ifname.is_none() || valid.iter().any(|a| a.container_id == cid && a.ifname == ifname) {
            continue;
        }
        let env = CniEnv {
            command: Command::Del,
            container_id: cid.to_string(),
            netns: None,
            ifname,
            args: Vec::new(),
            path: Vec::new(),
        };
        if let Err(e) = detach(&env, conf, host) {
            errors.push(e.to_string());
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(Error::Cnm(cnm_core::Error::Internal(format!("GC: {}", errors.join("; "))))),
    }
}
