//! [`ServicePlane`]: services as load balancing on one host, in three kinds
//! of namespace (as Docker's swarm mode lays them out, with nftables where
//! Docker uses IPVS):
//!
//! - every local sandbox on a service's network balances the service's
//!   virtual IP there over the backends' addresses on that network, in
//!   its own output hook (so the backend sees the client's address);
//! - the ingress sandbox balances each ingress port over every backend's
//!   address on the ingress network, and masquerades, so that backends on
//!   any host answer through it;
//! - the host namespace sends each ingress port to the ingress sandbox, and
//!   each host-mode port to this host's backends.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Mutex;

use cnm_core::{Id, PublishMode, Service};
use cnm_netns::NetNs;
use ipnet::Ipv4Net;

use crate::error::NatError;
use crate::lb::{LbContent, LbTable};

/// A sandbox of this host, as the plane needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalSandbox {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub netns: PathBuf,
    /// The networks it is on.
    pub networks: Vec<Id>,
}

/// This host's ingress sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSandbox {
    /// Its namespace.
    pub netns: PathBuf,
    /// Its address on the gateway bridge, which the host's ingress ports
    /// lead to.
    pub address: Ipv4Addr,
    /// The ingress network's subnet (traffic into it is masqueraded).
    pub subnet: Ipv4Net,
}

/// Everything the plane programs from.
#[derive(Debug, Clone, Default)]
pub struct HostView {
    /// This host's name (backends of other hosts are only reached through
    /// the networks).
    pub node: String,
    /// Every service.
    pub services: Vec<Service>,
    /// This host's sandboxes.
    pub sandboxes: Vec<LocalSandbox>,
    /// The ingress sandbox, once there is one.
    pub ingress: Option<IngressSandbox>,
}

/// Where a table is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Host,
    Ingress(PathBuf),
    Sandbox(PathBuf),
}

/// Programs services on one host, keeping a table (and a netlink socket)
/// per namespace, so that a change is only the element changes it needs.
pub struct ServicePlane {
    host: NetNs,
    tables: Mutex<BTreeMap<Place, LbTable>>,
    /// Whether a host table left by an earlier process was looked for.
    host_checked: std::sync::atomic::AtomicBool,
}

impl ServicePlane {
    /// A plane for the host namespace `host`.
    pub fn new(host: NetNs) -> ServicePlane {
        ServicePlane { host, tables: Mutex::new(BTreeMap::new()), host_checked: Default::default() }
    }

    /// Makes every namespace balance what `view` says: only the changes
    /// in namespaces it already programs, the whole table in the others;
    /// tables of namespaces that left the view are dropped. Every
    /// namespace is tried; the errors are reported together.
    pub fn sync(&self, view: &HostView) -> Result<(), NatError> {
        let desired = desired(view);
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let mut errors = Vec::new();
        // Without services the host keeps no table (one left by another
        // process is looked for once); a sandbox's goes with its namespace.
        let first = !self.host_checked.swap(true, std::sync::atomic::Ordering::SeqCst);
        if !desired.contains_key(&Place::Host) && (tables.contains_key(&Place::Host) || first) {
            errors.extend(LbTable::delete(&self.host, "host").err());
        }
        tables.retain(|place, _| desired.contains_key(place));
        for (place, (masq, content)) in desired {
            let r = match tables.get_mut(&place) {
                Some(t) => t.update(&content),
                None => self.create(&place, masq, content).map(|t| {
                    tables.insert(place.clone(), t);
                }),
            };
            if let Err(e) = r {
                tracing::warn!(?place, error = %e, "services: cannot program a namespace");
                errors.push(e);
            }
        }
        match errors.into_iter().next() {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Programs one service's change (`old` → `new`; either may be absent)
    /// in the namespaces already programmed: only its own virtual IPs and
    /// ports are looked at, so the cost does not grow with the number of
    /// services (`view.services` is not read). `Ok(false)`: a namespace
    /// that has no table yet needs one (a service's first backend there),
    /// and nothing was changed: call [`ServicePlane::sync`].
    pub fn change(&self, view: &HostView, old: Option<&Service>, new: Option<&Service>) -> Result<bool, NatError> {
        let one = |s: Option<&Service>| HostView {
            node: view.node.clone(),
            services: s.into_iter().cloned().collect(),
            sandboxes: view.sandboxes.clone(),
            ingress: view.ingress.clone(),
        };
        let (before, after) = (desired(&one(old)), desired(&one(new)));
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if after.iter().any(|(place, (_, c))| !c.is_empty() && !tables.contains_key(place)) {
            return Ok(false);
        }
        for (place, table) in tables.iter_mut() {
            let empty = (None, LbContent::default());
            let (_, was) = before.get(place).unwrap_or(&empty);
            let (_, now) = after.get(place).unwrap_or(&empty);
            for vip in was.vips.keys().filter(|v| !now.vips.contains_key(v)) {
                table.set_vip(*vip, &[])?;
            }
            for (proto, port) in was.ports.keys().filter(|p| !now.ports.contains_key(p)) {
                table.set_port(*proto, *port, &[])?;
            }
            for (vip, b) in &now.vips {
                table.set_vip(*vip, b)?;
            }
            for ((proto, port), t) in &now.ports {
                table.set_port(*proto, *port, t)?;
            }
        }
        Ok(true)
    }

    /// Programs one sandbox from scratch (after it joined a network), in
    /// one transaction; nothing when no service is on its networks and it
    /// had no table.
    pub fn program_sandbox(&self, view: &HostView, sandbox: &LocalSandbox) -> Result<(), NatError> {
        let content = sandbox_content(view, sandbox);
        let place = Place::Sandbox(sandbox.netns.clone());
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        if content.is_empty() && !tables.contains_key(&place) {
            return Ok(());
        }
        let t = self.create(&place, None, content)?;
        tables.insert(place, t);
        Ok(())
    }

    fn create(&self, place: &Place, masq: Option<Ipv4Net>, content: LbContent) -> Result<LbTable, NatError> {
        match place {
            Place::Host => LbTable::create(&self.host, "host", masq, content),
            Place::Ingress(p) | Place::Sandbox(p) => {
                let ns = NetNs::open(p)?;
                LbTable::create(&ns, &p.display().to_string(), masq, content)
            }
        }
    }
}

/// Every namespace's table as `view` wants it.
fn desired(view: &HostView) -> BTreeMap<Place, (Option<Ipv4Net>, LbContent)> {
    let mut out = BTreeMap::new();
    let mut host = LbContent::default();
    let mut ingress = LbContent::default();
    for svc in &view.services {
        for p in &svc.ports {
            let key = (p.protocol, p.published);
            match p.mode {
                PublishMode::Ingress => {
                    let Some(ing) = &view.ingress else { continue };
                    let via = svc.ingress_network.as_ref();
                    let targets: Vec<SocketAddrV4> = svc
                        .backends
                        .iter()
                        .filter_map(|b| via.and_then(|n| b.address_on(n.as_str())))
                        .filter_map(v4)
                        .map(|a| SocketAddrV4::new(a, p.target))
                        .collect();
                    if !targets.is_empty() {
                        ingress.ports.insert(key, targets);
                        host.ports.insert(key, vec![SocketAddrV4::new(ing.address, p.published)]);
                    }
                }
                PublishMode::Host => {
                    let targets: Vec<SocketAddrV4> = svc
                        .backends
                        .iter()
                        .filter(|b| b.host == view.node)
                        .filter_map(|b| b.local_address.and_then(v4))
                        .map(|a| SocketAddrV4::new(a, p.target))
                        .collect();
                    if !targets.is_empty() {
                        host.ports.insert(key, targets);
                    }
                }
            }
        }
    }
    if !view.services.is_empty() {
        out.insert(Place::Host, (None, host));
    }
    if let Some(ing) = &view.ingress {
        out.insert(Place::Ingress(ing.netns.clone()), (Some(ing.subnet), ingress));
    }
    for sb in &view.sandboxes {
        if view.ingress.as_ref().is_some_and(|i| i.netns == sb.netns) {
            continue;
        }
        let content = sandbox_content(view, sb);
        if !content.is_empty() {
            out.insert(Place::Sandbox(sb.netns.clone()), (None, content));
        }
    }
    out
}

/// The virtual IPs a sandbox balances: those of the services on its
/// networks.
fn sandbox_content(view: &HostView, sb: &LocalSandbox) -> LbContent {
    let mut content = LbContent::default();
    for svc in &view.services {
        for vip in svc.vips.iter().filter(|v| sb.networks.contains(&v.network_id)) {
            let Some(addr) = v4(vip.address.addr()) else { continue };
            let backends: Vec<Ipv4Addr> =
                svc.backends.iter().filter_map(|b| b.address_on(vip.network_id.as_str())).filter_map(v4).collect();
            if !backends.is_empty() {
                content.vips.insert(addr, backends);
            }
        }
    }
    content
}

fn v4(a: IpAddr) -> Option<Ipv4Addr> {
    match a {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}
