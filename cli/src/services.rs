//! Services on this host: the view the data plane programs from, the
//! ingress sandbox, and the agent's thread that follows the store.
//!
//! The agent applies every change the store's watch brings (each one a few
//! element changes, see `cnm_nat::ServicePlane::change`), and everything
//! again every [`RESYNC`]; the commands program the sandbox they connect,
//! and the `service` commands this host at once, so a host without an agent
//! works too.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_core::service::SERVICES_PREFIX;
use cnm_core::store::WatchEvent;
use cnm_core::{Controller, Result, SandboxConfig, Service, INGRESS_NETWORK};
use cnm_nat::{HostView, IngressSandbox, LocalSandbox, ServicePlane};

/// The sandbox through which this host's ingress ports reach the ingress
/// network (Docker's `ingress-sbox`).
pub const INGRESS_SANDBOX: &str = "ingress-sbox";

/// How often the agent programs everything again, under the watch.
pub const RESYNC: Duration = Duration::from_secs(10);

/// How often the agent reads the services when the store has no watch (a
/// single host's file store).
const POLL: Duration = Duration::from_millis(50);

/// This host's sandboxes and the services, as the plane needs them.
pub fn host_view(ctl: &Controller, services: Vec<Service>, ingress: Option<IngressSandbox>) -> Result<HostView> {
    let sandboxes = ctl
        .sandboxes()?
        .into_iter()
        .map(|sb| LocalSandbox {
            name: sb.name.clone(),
            netns: sb.netns.clone(),
            networks: sb.endpoints.iter().map(|e| e.network_id.clone()).collect(),
        })
        .collect();
    Ok(HostView { node: ctl.node().to_string(), services, sandboxes, ingress })
}

/// The ingress sandbox, made (and connected to the ingress network, which
/// gives it an endpoint on the gateway bridge too) when `create` and it is
/// not there yet; `None` when there is none, or while another process is
/// still making it. Only the agent makes it: one process per host.
pub fn ingress_sandbox(ctl: &Controller, create: bool) -> Result<Option<IngressSandbox>> {
    let sb = match ctl.sandbox(INGRESS_SANDBOX) {
        Ok(sb) => sb,
        Err(e) if e.kind() == cnm_core::ErrorKind::NotFound && create => {
            let sb = ctl.create_sandbox(SandboxConfig { name: INGRESS_SANDBOX.into(), ..Default::default() })?;
            if let Err(e) = ctl.connect(INGRESS_NETWORK, &sb.name, Default::default()).and_then(|_| forward(&sb.netns))
            {
                let _ = ctl.delete_sandbox(&sb.name);
                return Err(e);
            }
            ctl.sandbox(INGRESS_SANDBOX)?
        }
        Err(e) if e.kind() == cnm_core::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let ingress = ctl.network(INGRESS_NETWORK)?;
    let subnet = ingress.pools.iter().find_map(|p| match p.subnet {
        ipnet::IpNet::V4(n) => Some(n),
        ipnet::IpNet::V6(_) => None,
    });
    let mut address = None;
    for r in &sb.endpoints {
        let ep = ctl.endpoint(r.network_id.as_str(), &r.name)?;
        if ep.network == cnm_vxlan::overlay::GATEWAY_BRIDGE {
            address = ep.ipv4.and_then(|a| match a.addr() {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            });
        }
    }
    let (Some(address), Some(subnet)) = (address, subnet) else {
        // Still being connected by another process (the agent).
        tracing::debug!("{INGRESS_SANDBOX} is not ready yet");
        return Ok(None);
    };
    Ok(Some(IngressSandbox { netns: sb.netns, address, subnet: subnet.trunc() }))
}

/// The ingress sandbox routes between the gateway bridge and the ingress
/// network.
fn forward(netns: &std::path::Path) -> Result<()> {
    cnm_netns::NetNs::open(netns)?.sysctl_set("net.ipv4.ip_forward", "1").map_err(Into::into)
}

/// Programs this host from the store's services; `agent`: the ingress
/// sandbox is made first when a service publishes in ingress mode.
pub fn sync_host(ctl: &Controller, plane: &ServicePlane, agent: bool) -> Result<Vec<Service>> {
    let services = ctl.services()?;
    let wants = agent && services.iter().any(Service::has_ingress) && ctl.network(INGRESS_NETWORK).is_ok();
    let ingress = ingress_sandbox(ctl, wants)?;
    if let (true, Some(i)) = (agent, &ingress) {
        // Again at every resynchronisation: a namespace made anew (after a
        // reboot and reconcile) starts with forwarding off.
        forward(&i.netns)?;
    }
    let view = host_view(ctl, services.clone(), ingress)?;
    plane.sync(&view)?;
    Ok(services)
}

/// Programs a sandbox that just joined a network with the virtual IPs of
/// the services there (nothing to do, and no cost, when there is none).
pub fn program_sandbox(ctl: &Controller, sandbox: &str) -> Result<()> {
    let services = ctl.services()?;
    let sb = ctl.sandbox(sandbox)?;
    let on_its_networks =
        |s: &Service| s.vips.iter().any(|v| sb.endpoints.iter().any(|e| e.network_id == v.network_id));
    if !services.iter().any(on_its_networks) {
        return Ok(());
    }
    let local = LocalSandbox {
        name: sb.name.clone(),
        netns: sb.netns.clone(),
        networks: sb.endpoints.iter().map(|e| e.network_id.clone()).collect(),
    };
    let view = HostView { node: ctl.node().to_string(), services, sandboxes: vec![local.clone()], ingress: None };
    ServicePlane::new(ctl.host_netns().try_clone()?).program_sandbox(&view, &local).map_err(Into::into)
}

/// What the agent's thread tells the name server.
pub type NamesHook = Arc<dyn Fn(Option<&Service>, Option<&Service>) + Send + Sync>;

/// The agent's service thread: everything at start and every [`RESYNC`],
/// each change as the store's watch (or, without one, a poll) reports it.
pub fn agent(ctl: Arc<Controller>, names: Option<NamesHook>, stop: &'static AtomicBool) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let plane = match ctl.host_netns().try_clone() {
            Ok(ns) => ServicePlane::new(ns),
            Err(e) => return eprintln!("cnm: error: services: {e}"),
        };
        let mut known: BTreeMap<String, Service> = BTreeMap::new();
        let mut watch = ctl.store().watch(SERVICES_PREFIX).ok();
        let mut last_sync: Option<Instant> = None;
        while !stop.load(Ordering::SeqCst) {
            if last_sync.is_none_or(|t| t.elapsed() >= RESYNC) {
                match sync_host(&ctl, &plane, true) {
                    Ok(all) => {
                        let now: BTreeMap<String, Service> = all.into_iter().map(|s| (s.name.clone(), s)).collect();
                        tell_names(names.as_ref(), &known, &now);
                        known = now;
                        last_sync = Some(Instant::now());
                    }
                    Err(e) => {
                        eprintln!("cnm: error: services: {e}");
                        last_sync = Some(Instant::now() - RESYNC + Duration::from_secs(1));
                    }
                }
            }
            let changed = match &mut watch {
                Some(w) => match w.next(Duration::from_millis(200)) {
                    Ok(Some(ev)) => Some(event_change(ev)),
                    Ok(None) => None,
                    Err(e) => {
                        eprintln!("cnm: warning: services: the watch failed ({e}); reading everything again");
                        watch = ctl.store().watch(SERVICES_PREFIX).ok();
                        last_sync = None;
                        None
                    }
                },
                None => {
                    std::thread::sleep(POLL);
                    poll_changes(&ctl, &known)
                }
            };
            let Some(changes) = changed else { continue };
            for (name, new) in changes {
                let old = known.get(&name).cloned();
                let applied = apply_change(&ctl, &plane, old.as_ref(), new.as_ref());
                if matches!(applied, Ok(false)) {
                    // A namespace needs its first table: everything again.
                    last_sync = None;
                }
                if let Err(e) = applied {
                    eprintln!("cnm: error: services: {name}: {e}");
                    last_sync = None;
                }
                if let Some(hook) = &names {
                    hook(old.as_ref(), new.as_ref());
                }
                match new {
                    Some(s) => known.insert(name, s),
                    None => known.remove(&name),
                };
            }
        }
    })
}

/// A service's change in this host's namespaces; `Ok(false)`: it needs
/// everything programmed again (see `ServicePlane::change`).
fn apply_change(ctl: &Controller, plane: &ServicePlane, old: Option<&Service>, new: Option<&Service>) -> Result<bool> {
    let started = Instant::now();
    let wants_ingress = new.is_some_and(Service::has_ingress);
    let ingress = ingress_sandbox(ctl, wants_ingress && ctl.network(INGRESS_NETWORK).is_ok())?;
    // The other services are not needed for one service's change.
    let view = host_view(ctl, Vec::new(), ingress)?;
    let done = plane.change(&view, old, new)?;
    tracing::debug!(took = ?started.elapsed(), "service change programmed");
    Ok(done)
}

/// The service a watch event is about, with its new record (none: gone).
fn event_change(ev: WatchEvent) -> Vec<(String, Option<Service>)> {
    match ev {
        WatchEvent::Put(e) => match serde_json::from_slice::<Service>(&e.value) {
            Ok(s) => vec![(s.name.clone(), Some(s))],
            Err(_) => Vec::new(),
        },
        WatchEvent::Delete { key } => match key.strip_prefix(SERVICES_PREFIX) {
            Some(name) => vec![(name.to_string(), None)],
            None => Vec::new(),
        },
    }
}

/// Without a watch: the services that differ from `known`.
fn poll_changes(ctl: &Controller, known: &BTreeMap<String, Service>) -> Option<Vec<(String, Option<Service>)>> {
    let now: BTreeMap<String, Service> = ctl.services().ok()?.into_iter().map(|s| (s.name.clone(), s)).collect();
    let mut out: Vec<(String, Option<Service>)> =
        known.keys().filter(|k| !now.contains_key(*k)).map(|k| (k.clone(), None)).collect();
    out.extend(now.into_iter().filter(|(k, s)| known.get(k) != Some(s)).map(|(k, s)| (k, Some(s))));
    (!out.is_empty()).then_some(out)
}

/// Tells the name server every service that differs between two readings.
fn tell_names(names: Option<&NamesHook>, before: &BTreeMap<String, Service>, now: &BTreeMap<String, Service>) {
    let Some(hook) = names else { return };
    for (k, old) in before {
        if !now.contains_key(k) {
            hook(Some(old), None);
        }
    }
    for (k, s) in now {
        if before.get(k) != Some(s) {
            hook(before.get(k), Some(s));
        }
    }
}
