//! Start-up: loading the state, and repairing it against the kernel both
//! ways after a crash or a reboot.

use std::collections::BTreeSet;

use cnm_netns::NetNs;

use super::{ep_key, Controller};
use crate::error::{Error, Result};
use crate::model::{Endpoint, JoinState, Network, Sandbox, State};
use crate::store::StoreExt;

/// Whether a sandbox's namespace is gone for good: its path does not exist,
/// or is no network namespace any more. Any other failure to open it (too
/// many open files, no permission) says nothing about the sandbox.
fn netns_gone(sb: &Sandbox) -> bool {
    match NetNs::open(&sb.netns) {
        Ok(_) => false,
        Err(e) => match e.kind() {
            cnm_netns::ErrorKind::NotFound | cnm_netns::ErrorKind::InvalidArgument => true,
            _ => {
                tracing::warn!(sandbox = %sb.name, "cannot open its namespace, keeping it: {e}");
                false
            }
        },
    }
}

/// What [`Controller::restore`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Networks in the state.
    pub networks: usize,
    /// Endpoints in the state.
    pub endpoints: usize,
    /// Sandboxes in the state.
    pub sandboxes: usize,
    /// Records of operations that did not finish (reconcile rolls them back).
    pub unfinished: usize,
}

/// What [`Controller::reconcile`] repaired, one line per repair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Human-readable repairs, in the order they were made.
    pub repairs: Vec<String>,
}

impl Controller {
    /// Loads and checks the whole state; a torn or garbage record is an
    /// error naming its file.
    pub fn restore(&self) -> Result<RestoreSummary> {
        let nets = self.store.list_json::<Network>("networks/")?;
        let eps = self.store.list_json::<Endpoint>("endpoints/")?;
        let sbs = self.store.list_json::<Sandbox>("sandboxes/")?;
        let unfinished = nets.iter().filter(|(n, _)| n.state != State::Ready).count()
            + eps
                .iter()
                .filter(|(e, _)| {
                    e.state != State::Ready || matches!(e.join_state, JoinState::Joining | JoinState::Leaving)
                })
                .count();
        Ok(RestoreSummary { networks: nets.len(), endpoints: eps.len(), sandboxes: sbs.len(), unfinished })
    }

    /// Compares the state with the kernel, the firewall and IPAM, and repairs
    /// both ways: rolls back operations a crash interrupted, drops sandboxes
    /// whose namespace is gone, re-creates what the kernel lost for networks
    /// the state has (after a reboot), removes kernel objects and rules of
    /// ours the state does not know, and releases addresses and pools nothing
    /// uses. Holds the operation lock exclusively, so no operation of another
    /// thread or process is mistaken for a crash's leftovers.
    pub fn reconcile(&self) -> Result<ReconcileReport> {
        let _op = self.op()?;
        let mut r = ReconcileReport::default();
        let mut errors = Vec::new();

        // 1. Networks whose creation or deletion did not finish.
        for (net, _) in self.store.list_json::<Network>("networks/")? {
            if net.state != State::Ready {
                match self.teardown_network(&net) {
                    Ok(()) => r.repairs.push(format!("rolled back unfinished network {:?}", net.name)),
                    Err(e) => errors.push(e),
                }
            }
        }

        // 2. Endpoints whose join, leave, creation or deletion did not finish.
        //    Each record is read afresh: repairing one endpoint may change
        //    another (the default route moves to it).
        for key in self.store.list_keys("endpoints/")? {
            let Some((ep, rev)) = self.store.get_json::<Endpoint>(&key)? else { continue };
            let net = match self.network_of(&ep) {
                Ok(net) => net,
                // Unreachable (a remote store down) is not gone.
                Err(e) if e.kind() != crate::ErrorKind::NotFound => {
                    errors.push(e);
                    continue;
                }
                Err(_) => {
                    errors.extend(super::delete_record(&*self.store, &ep_key(&ep)).err());
                    r.repairs.push(format!("removed endpoint {:?} of a network that no longer exists", ep.name));
                    continue;
                }
            };
            let mut ep = ep;
            let unfinished_join = matches!(ep.join_state, JoinState::Joining | JoinState::Leaving);
            if unfinished_join || (ep.state != State::Ready && ep.sandbox.is_some()) {
                match self.leave_locked(&net, ep.clone(), rev, None) {
                    Ok(()) => r.repairs.push(format!("finished interrupted join/leave of endpoint {:?}", ep.name)),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                }
                match self.find_endpoint(&net, &ep.name) {
                    Ok((e, _)) => ep = e,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                }
            }
            if ep.state != State::Ready && ep.sandbox.is_none() {
                match self.teardown_endpoint(&net, &ep) {
                    Ok(()) => r.repairs.push(format!("rolled back unfinished endpoint {:?}", ep.name)),
                    Err(e) => errors.push(e),
                }
            }
        }

        // 3. Sandboxes whose namespace is gone (the runtime removed the
        //    container, or the host rebooted): leave everything, drop them.
        for (sb, _) in self.store.list_json::<Sandbox>("sandboxes/")? {
            if netns_gone(&sb) {
                match self.teardown_sandbox(&sb) {
                    Ok(()) => r.repairs.push(format!("dropped sandbox {:?}: its namespace is gone", sb.name)),
                    Err(e) => errors.push(e),
                }
            }
        }
        //    Endpoints that claim a sandbox that does not list them.
        let sandboxes = self.sandboxes()?;
        for (ep, rev) in self.store.list_json::<Endpoint>("endpoints/")? {
            if let Some(id) = &ep.sandbox {
                let listed = sandboxes.iter().any(|s| &s.id == id && s.endpoints.iter().any(|m| m.id == ep.id));
                if !listed {
                    if let Ok(net) = self.network_of(&ep) {
                        match self.leave_locked(&net, ep.clone(), rev, None) {
                            Ok(()) => {
                                r.repairs.push(format!("detached endpoint {:?} from a sandbox that lost it", ep.name))
                            }
                            Err(e) => errors.push(e),
                        }
                    }
                }
            }
        }
        //    Sandboxes that list endpoints that no longer exist.
        let endpoints = self.endpoints(None)?;
        for sb in &sandboxes {
            let stale: Vec<_> =
                sb.endpoints.iter().filter(|m| !endpoints.iter().any(|e| e.id == m.id)).map(|m| m.id.clone()).collect();
            if !stale.is_empty() {
                errors.extend(self.update_sandbox(&sb.name, |s| s.endpoints.retain(|x| !stale.contains(&x.id))).err());
                r.repairs.push(format!("removed {} vanished endpoint(s) from sandbox {:?}", stale.len(), sb.name));
            }
        }

        // 4. The kernel: re-create what it lost, remove what nobody owns.
        let networks = self.networks()?;
        let endpoints = self.endpoints(None)?;
        for net in &networks {
            let eps: Vec<Endpoint> = endpoints.iter().filter(|e| e.network_id == net.id).cloned().collect();
            match self.driver(&net.driver).and_then(|d| d.restore_network(&self.ctx(), net, &eps)) {
                Ok(v) => r.repairs.extend(v),
                Err(e) => errors.push(e),
            }
        }
        for d in self.drivers.values() {
            let mine: Vec<Network> = networks.iter().filter(|n| n.driver == d.name()).cloned().collect();
            let eps: Vec<Endpoint> =
                endpoints.iter().filter(|e| mine.iter().any(|n| n.id == e.network_id)).cloned().collect();
            match d.remove_leftovers(&self.ctx(), &mine, &eps) {
                Ok(v) => r.repairs.extend(v),
                Err(e) => errors.push(e),
            }
        }
        // The firewall: rules and published ports nothing owns any more.
        let joined: BTreeSet<String> =
            endpoints.iter().filter(|e| e.sandbox.is_some()).map(|e| e.id.to_string()).collect();
        let known: BTreeSet<String> = networks.iter().map(|n| n.id.to_string()).collect();
        let stale = [
            ("published ports of endpoint", self.firewall.endpoint_ids(), &joined),
            ("firewall rules of network", self.firewall.network_ids(), &known),
        ];
        for (what, ids, keep) in stale {
            let ids = match ids {
                Ok(ids) => ids,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            for id in ids.into_iter().filter(|id| !keep.contains(id)) {
                let removed = if what.starts_with("published") {
                    self.firewall.remove_ports(&id)
                } else {
                    self.firewall.remove_network(&id)
                };
                match removed {
                    Ok(()) => r.repairs.push(format!("removed {what} {}", &id[..12.min(id.len())])),
                    Err(e) => errors.push(e),
                }
            }
        }
        match self.firewall.repair() {
            Ok(v) => r.repairs.extend(v),
            Err(e) => errors.push(e),
        }

        // 5. IPAM: addresses and pools nothing uses.
        if let Some(ipam) = &self.ipam {
            let mut live = BTreeSet::new();
            for ep in &endpoints {
                for (pool, a) in [(&ep.ipv4_pool, ep.ipv4), (&ep.ipv6_pool, ep.ipv6)] {
                    if let (Some(p), Some(a)) = (pool, a) {
                        live.insert((p.clone(), a.addr()));
                    }
                }
            }
            let used_pools: BTreeSet<&str> =
                networks.iter().flat_map(|n| n.pools.iter().map(|p| p.pool_id.as_str())).collect();
            match ipam.pools() {
                Ok(pools) => {
                    // Global pools are the cluster's: another host may be
                    // half-way through creating the network that owns one.
                    // (IPAM drivers name global pools `global-…`.)
                    let local = |p: &crate::ipam::Pool| !p.id.starts_with("global-");
                    for p in pools.into_iter().filter(|p| local(p) && !used_pools.contains(p.id.as_str())) {
                        match ipam.release_pool(&p.id) {
                            Ok(()) => r.repairs.push(format!("released pool {} that no network uses", p.subnet)),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
            //    Addresses in use whose lease was lost (a deleted lease
            //    file): taken again, so they are not given out twice.
            let pools: BTreeSet<&String> = live.iter().map(|(p, _)| p).collect();
            for pool in pools {
                let leased: BTreeSet<std::net::IpAddr> = match ipam.addresses(pool) {
                    Ok(v) => v.into_iter().collect(),
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                };
                for (_, addr) in live.iter().filter(|(p, a)| p == pool && !leased.contains(a)) {
                    match ipam.request_address(pool, crate::ipam::AddressRequest::Exact(*addr)) {
                        Ok(_) => {
                            r.repairs.push(format!("took address {addr} of pool {pool} again: its lease was lost"))
                        }
                        Err(e) => errors.push(e),
                    }
                }
            }
            match ipam.gc(&live) {
                Ok(freed) => r.repairs.extend(
                    freed.into_iter().map(|(p, a)| format!("released address {a} of pool {p} that no endpoint uses")),
                ),
                Err(e) => errors.push(e),
            }
        }

        // 6. Named namespaces of ours that no sandbox references.
        if let Some(dir) = self.netns_dir() {
            let known: BTreeSet<String> =
                self.sandboxes()?.iter().filter(|s| s.owns_netns).map(|s| s.id.short().to_string()).collect();
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !known.contains(&name) {
                        match NetNs::remove_named(&dir, &name) {
                            Ok(()) => r.repairs.push(format!("removed orphaned namespace {name}")),
                            Err(e) => errors.push(e.into()),
                        }
                    }
                }
            }
        }

        Error::teardown("reconcile", errors)?;
        self.tidy_if_empty();
        Ok(r)
    }
}
