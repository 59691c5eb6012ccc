//! Start-up: loading the state, and repairing it against the kernel both
//! ways after a crash or a reboot.

use std::collections::BTreeSet;

use cnm_netns::NetNs;

use super::sandbox_side::Program;
use super::{ep_key, Controller};
use crate::error::{Error, Result};
use crate::ipam::{AddressRequest, AddressSpace, IpamDriver};
use crate::join::JoinRequest;
use crate::model::{Endpoint, JoinState, Network, Sandbox, State};
use crate::store::Expect;
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
        let mut pass = Pass::default();
        self.roll_back_networks(&mut pass)?;
        self.finish_endpoints(&mut pass)?;
        self.drop_sandboxes_without_namespace(&mut pass)?;
        self.match_sandboxes_and_endpoints(&mut pass)?;
        let networks = self.networks()?;
        let endpoints = self.endpoints(None)?;
        self.repair_kernel(&networks, &endpoints, &mut pass);
        self.repair_firewall(&networks, &endpoints, &mut pass);
        if let Some(ipam) = self.ipams.get(super::DEFAULT_IPAM) {
            // Another IPAM driver (a plugin) keeps its own books.
            let networks: Vec<Network> =
                networks.iter().filter(|n| n.ipam.driver == super::DEFAULT_IPAM).cloned().collect();
            let endpoints: Vec<Endpoint> =
                endpoints.iter().filter(|e| networks.iter().any(|n| n.id == e.network_id)).cloned().collect();
            Self::repair_ipam(&**ipam, &networks, &endpoints, &mut pass);
        }
        self.remove_orphaned_namespaces(&mut pass)?;
        self.repair_sandbox_files(&mut pass)?;
        Error::teardown("reconcile", pass.errors)?;
        self.tidy_if_empty();
        Ok(ReconcileReport { repairs: pass.repairs })
    }

    /// Networks whose creation or deletion did not finish.
    fn roll_back_networks(&self, pass: &mut Pass) -> Result<()> {
        for (net, _) in self.store.list_json::<Network>("networks/")? {
            if net.state != State::Ready {
                pass.done(self.teardown_network(&net), || format!("rolled back unfinished network {:?}", net.name));
            }
        }
        Ok(())
    }

    /// Endpoints whose join, leave, creation or deletion did not finish.
    /// Each record is read afresh: repairing one endpoint may change
    /// another (the default route moves to it).
    fn finish_endpoints(&self, pass: &mut Pass) -> Result<()> {
        for key in self.store.list_keys("endpoints/")? {
            let Some((ep, rev)) = self.store.get_json::<Endpoint>(&key)? else { continue };
            let net = match self.network_of(&ep) {
                Ok(net) => net,
                // Unreachable (a remote store down) is not gone.
                Err(e) if e.kind() != crate::ErrorKind::NotFound => {
                    pass.errors.push(e);
                    continue;
                }
                Err(_) => {
                    let removed = super::delete_record(&*self.store, &ep_key(&ep));
                    pass.done(removed, || format!("removed endpoint {:?} of a network that no longer exists", ep.name));
                    continue;
                }
            };
            let mut ep = ep;
            let unfinished_join = matches!(ep.join_state, JoinState::Joining | JoinState::Leaving);
            if unfinished_join || (ep.state != State::Ready && ep.sandbox.is_some()) {
                let left = self.leave_locked(&net, ep.clone(), rev, None);
                if !pass.done(left, || format!("finished interrupted join/leave of endpoint {:?}", ep.name)) {
                    continue;
                }
                match self.find_endpoint(&net, &ep.name) {
                    Ok((e, _)) => ep = e,
                    Err(e) => {
                        pass.errors.push(e);
                        continue;
                    }
                }
            }
            if ep.state != State::Ready && ep.sandbox.is_none() {
                pass.done(self.teardown_endpoint(&net, &ep), || {
                    format!("rolled back unfinished endpoint {:?}", ep.name)
                });
            }
        }
        Ok(())
    }

    /// Sandboxes whose namespace is gone (the runtime removed the
    /// container, or the host rebooted): leave everything, drop them.
    /// An external sandbox is the runtime's to remove: its namespace
    /// appears only when the container starts.
    fn drop_sandboxes_without_namespace(&self, pass: &mut Pass) -> Result<()> {
        for (sb, _) in self.store.list_json::<Sandbox>("sandboxes/")? {
            if !sb.external && netns_gone(&sb) {
                pass.done(self.teardown_sandbox(&sb), || {
                    format!("dropped sandbox {:?}: its namespace is gone", sb.name)
                });
            }
        }
        Ok(())
    }

    /// Endpoints that claim a sandbox that does not list them, and
    /// sandboxes that list endpoints that no longer exist.
    fn match_sandboxes_and_endpoints(&self, pass: &mut Pass) -> Result<()> {
        let sandboxes = self.sandboxes()?;
        for (ep, rev) in self.store.list_json::<Endpoint>("endpoints/")? {
            let Some(id) = &ep.sandbox else { continue };
            let listed = sandboxes.iter().any(|s| &s.id == id && s.endpoints.iter().any(|m| m.id == ep.id));
            if let (false, Ok(net)) = (listed, self.network_of(&ep)) {
                let left = self.leave_locked(&net, ep.clone(), rev, None);
                pass.done(left, || format!("detached endpoint {:?} from a sandbox that lost it", ep.name));
            }
        }
        let endpoints = self.endpoints(None)?;
        for sb in &sandboxes {
            let stale: Vec<_> =
                sb.endpoints.iter().filter(|m| !endpoints.iter().any(|e| e.id == m.id)).map(|m| m.id.clone()).collect();
            if !stale.is_empty() {
                let updated = self.update_sandbox(&sb.name, |s| s.endpoints.retain(|x| !stale.contains(&x.id)));
                pass.done(updated, || {
                    format!("removed {} vanished endpoint(s) from sandbox {:?}", stale.len(), sb.name)
                });
            }
        }
        Ok(())
    }

    /// The kernel: drivers re-create what it lost and remove what nobody
    /// owns.
    fn repair_kernel(&self, networks: &[Network], endpoints: &[Endpoint], pass: &mut Pass) {
        // A network whose kernel objects wait for its first join has none
        // to repair.
        for net in networks.iter().filter(|n| !n.kernel_pending) {
            let eps: Vec<Endpoint> = endpoints.iter().filter(|e| e.network_id == net.id).cloned().collect();
            pass.lines(self.driver(&net.driver).and_then(|d| d.restore_network(&self.ctx(), net, &eps)));
            pass.lines(self.rejoin_lost(net, &eps));
        }
        for d in self.drivers.values() {
            let mine: Vec<Network> = networks.iter().filter(|n| n.driver == d.name()).cloned().collect();
            let eps: Vec<Endpoint> =
                endpoints.iter().filter(|e| mine.iter().any(|n| n.id == e.network_id)).cloned().collect();
            pass.lines(d.remove_leftovers(&self.ctx(), &mine, &eps));
        }
    }

    /// Joins again the endpoints whose interface the kernel took away (see
    /// [`NetworkDriver::lost_endpoints`](crate::NetworkDriver)), and
    /// programs their sandbox side as a join does.
    fn rejoin_lost(&self, net: &Network, endpoints: &[Endpoint]) -> Result<Vec<String>> {
        let driver = self.driver(&net.driver)?.clone();
        let lost = driver.lost_endpoints(&self.ctx(), net, endpoints)?;
        let mut repairs = Vec::new();
        for ep in endpoints.iter().filter(|e| lost.iter().any(|id| e.id.as_str() == id)) {
            let Some(sb_id) = &ep.sandbox else { continue };
            let Ok((sb, _)) = self.find_sandbox(sb_id.as_str()) else { continue };
            if sb.external {
                continue;
            }
            let ifname = ep.ifname.clone().unwrap_or_else(|| "eth0".into());
            let netns = NetNs::open(&sb.netns)?;
            let (mut joined, rev) = self.find_endpoint(net, &ep.name)?;
            let req = JoinRequest { sandbox: &sb, netns: &netns, ifname: &ifname, in_host: false };
            let info = driver.join(&self.ctx(), net, &mut joined, &req)?;
            let others: Vec<Endpoint> = self.sandbox_endpoints(&sb)?.into_iter().filter(|e| e.id != ep.id).collect();
            let program = Program {
                sandbox: &sb,
                netns: &netns,
                endpoint: &joined,
                info: &info,
                default_route: joined.gateway,
                others: &others,
            };
            if let Err(e) = self.program_sandbox(&program) {
                let _ = driver.leave(&self.ctx(), net, &joined, Some(&netns));
                return Err(e);
            }
            joined.join_info = Some(info);
            self.store.put_json(&ep_key(&joined), &joined, Expect::Revision(rev))?;
            repairs
                .push(format!("joined endpoint {:?} to sandbox {:?} again (its interface was gone)", ep.name, sb.name));
        }
        Ok(repairs)
    }

    /// The firewall: rules and published ports nothing owns any more, then
    /// the rules compared with the state.
    fn repair_firewall(&self, networks: &[Network], endpoints: &[Endpoint], pass: &mut Pass) {
        let joined: BTreeSet<String> =
            endpoints.iter().filter(|e| e.sandbox.is_some()).map(|e| e.id.to_string()).collect();
        let known: BTreeSet<String> = networks.iter().map(|n| n.id.to_string()).collect();
        match self.firewall.endpoint_ids() {
            Ok(ids) => {
                for id in ids.into_iter().filter(|id| !joined.contains(id)) {
                    let short = &id[..12.min(id.len())];
                    pass.done(self.firewall.remove_ports(&id), || {
                        format!("removed published ports of endpoint {short}")
                    });
                }
            }
            Err(e) => pass.errors.push(e),
        }
        match self.firewall.network_ids() {
            Ok(ids) => {
                for id in ids.into_iter().filter(|id| !known.contains(id)) {
                    let short = &id[..12.min(id.len())];
                    pass.done(self.firewall.remove_network(&id), || {
                        format!("removed firewall rules of network {short}")
                    });
                }
            }
            Err(e) => pass.errors.push(e),
        }
        pass.lines(self.firewall.repair());
    }

    /// IPAM: pools nothing uses released, lost leases of addresses in use
    /// taken again (so they are not given out twice), unused addresses
    /// released.
    fn repair_ipam(ipam: &dyn IpamDriver, networks: &[Network], endpoints: &[Endpoint], pass: &mut Pass) {
        let mut live = BTreeSet::new();
        for ep in endpoints {
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
                let unused =
                    pools.into_iter().filter(|p| p.space == AddressSpace::Local && !used_pools.contains(p.id.as_str()));
                for p in unused {
                    pass.done(ipam.release_pool(&p.id), || format!("released pool {} that no network uses", p.subnet));
                }
            }
            Err(e) => pass.errors.push(e),
        }
        let pools: BTreeSet<&String> = live.iter().map(|(p, _)| p).collect();
        for pool in pools {
            let leased: BTreeSet<std::net::IpAddr> = match ipam.addresses(pool) {
                Ok(v) => v.into_iter().collect(),
                Err(e) => {
                    pass.errors.push(e);
                    continue;
                }
            };
            for (_, addr) in live.iter().filter(|(p, a)| p == pool && !leased.contains(a)) {
                let taken = ipam.request_address(pool, AddressRequest::Exact(*addr)).map(|_| ());
                pass.done(taken, || format!("took address {addr} of pool {pool} again: its lease was lost"));
            }
        }
        match ipam.gc(&live) {
            Ok(freed) => pass.repairs.extend(
                freed.into_iter().map(|(p, a)| format!("released address {a} of pool {p} that no endpoint uses")),
            ),
            Err(e) => pass.errors.push(e),
        }
    }

    /// Named namespaces of ours that no sandbox references.
    fn remove_orphaned_namespaces(&self, pass: &mut Pass) -> Result<()> {
        let Some(dir) = self.netns_dir() else { return Ok(()) };
        let known: BTreeSet<String> =
            self.sandboxes()?.iter().filter(|s| s.owns_netns).map(|s| s.id.short().to_string()).collect();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                let removed = NetNs::remove_named(&dir, &name).map_err(Error::from);
                pass.done(removed, || format!("removed orphaned namespace {name}"));
            }
        }
        Ok(())
    }

    /// Hosts files that do not list exactly the sandbox's joined endpoints
    /// (a leave that failed half-way), rewritten.
    fn repair_sandbox_files(&self, pass: &mut Pass) -> Result<()> {
        for sb in self.sandboxes()?.into_iter().filter(|s| !s.external) {
            let Some(dir) = self.sandbox_files_dir(&sb.name) else { return Ok(()) };
            let members = self.sandbox_endpoints(&sb)?;
            let want = crate::etc::hosts(&sb, &members);
            if std::fs::read_to_string(dir.join("hosts")).ok().as_deref() != Some(want.as_str()) {
                pass.done(self.write_hosts(&sb, &members), || {
                    format!("rewrote the hosts file of sandbox {:?}", sb.name)
                });
            }
        }
        Ok(())
    }
}

/// One reconcile pass: the repairs made and the errors met so far.
#[derive(Default)]
struct Pass {
    repairs: Vec<String>,
    errors: Vec<Error>,
}

impl Pass {
    /// Records a repair that worked, or its error; whether it worked.
    fn done(&mut self, result: Result<()>, repair: impl FnOnce() -> String) -> bool {
        match result {
            Ok(()) => {
                self.repairs.push(repair());
                true
            }
            Err(e) => {
                self.errors.push(e);
                false
            }
        }
    }

    /// Records the repairs a driver or firewall reports, or its error.
    fn lines(&mut self, result: Result<Vec<String>>) {
        match result {
            Ok(v) => self.repairs.extend(v),
            Err(e) => self.errors.push(e),
        }
    }
}
