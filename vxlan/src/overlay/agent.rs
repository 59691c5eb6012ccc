//! The per-host agent: keeps this host's lease alive, publishes this host's
//! endpoints under it, and programs every other host's endpoints as the
//! store reports them. The only long-running part of the project.
//!
//! It survives losing the store: the kernel entries stay (traffic between
//! known endpoints keeps flowing), and once the store answers again it
//! takes a new lease if the old one expired, publishes again and programs
//! everything from scratch, so nothing missed while away is lost.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_core::store::{LeaseId, Watch, WatchEvent};
use cnm_core::{Expect, Result, StoreExt};
use cnm_netns::NetNs;

use super::layout;
use super::records::{self, HostRecord, PeerRecord};
use super::OverlayDriver;

/// How the agent paces itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentOptions {
    /// The lease's time to live: how long after this host dies its
    /// endpoints vanish from the other hosts. Renewed every third of it.
    pub ttl: Duration,
    /// How often everything is programmed again from scratch, as a safety
    /// net under the watch.
    pub resync_every: Duration,
    /// How long to wait before trying again when the store is unreachable;
    /// doubled at each failure in a row, up to [`MAX_BACKOFF`].
    pub retry: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            ttl: Duration::from_secs(10),
            resync_every: Duration::from_secs(30),
            retry: Duration::from_millis(500),
        }
    }
}

/// The longest pause between two tries while the store stays unreachable.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The endpoints other hosts have on one network (see
/// [`Agent::with_peers_hook`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteNames {
    /// The network's id.
    pub network_id: String,
    /// Its name (empty when no host has an endpoint on it).
    pub network_name: String,
    /// Every endpoint of the other hosts.
    pub endpoints: Vec<RemoteEndpoint>,
}

/// An endpoint on another host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteEndpoint {
    /// Its id.
    pub endpoint: String,
    /// Its sandbox's name.
    pub sandbox: String,
    /// The names it answers to ([`cnm_core::names::endpoint_names`]).
    pub names: Vec<String>,
    /// Its address.
    pub address: IpAddr,
}

/// See [`Agent::with_peers_hook`].
pub type PeersHook = Arc<dyn Fn(&RemoteNames) + Send + Sync>;

/// The agent of one host.
pub struct Agent {
    driver: Arc<OverlayDriver>,
    opts: AgentOptions,
    /// Told the other hosts' endpoints of a network whenever they change.
    peers_hook: Option<PeersHook>,
    /// The host namespace whose VXLAN sources are filtered, and the set
    /// last applied there.
    filter: Option<(NetNs, std::sync::Mutex<Option<BTreeSet<IpAddr>>>)>,
}

impl Agent {
    /// An agent for `driver`'s host.
    pub fn new(driver: Arc<OverlayDriver>, opts: AgentOptions) -> Agent {
        Agent { driver, opts, filter: None, peers_hook: None }
    }

    /// Calls `hook` with the other hosts' endpoints of a network each time
    /// they are programmed (at every change the watch brings, and at each
    /// resynchronisation): what a name server needs to resolve them.
    pub fn with_peers_hook(mut self, hook: PeersHook) -> Agent {
        self.peers_hook = Some(hook);
        self
    }

    /// Passes a network's remote endpoints to the hook.
    fn tell_peers(&self, network: &str) {
        let Some(hook) = &self.peers_hook else { return };
        let peers = match records::peers(&**self.driver.store(), network) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(network, error = %e, "overlay agent: cannot read the peers for names");
                return;
            }
        };
        let node = self.driver.config().node();
        let network_name = peers.iter().map(|p| p.network_name.clone()).find(|n| !n.is_empty()).unwrap_or_default();
        let endpoints = peers
            .into_iter()
            .filter(|p| p.host != node)
            .map(|p| RemoteEndpoint { endpoint: p.endpoint, sandbox: p.sandbox, names: p.names, address: p.ip.addr() })
            .collect();
        hook(&RemoteNames { network_id: network.to_string(), network_name, endpoints });
    }

    /// Also keeps the VXLAN source filter (`table inet cnm_vxlan`)
    /// in `host` (the namespace the VXLAN sockets are in): VXLAN is taken
    /// only from the live hosts of the cluster. The `cnm` tool's agent does.
    pub fn with_vtep_filter(mut self, host: NetNs) -> Agent {
        self.filter = Some((host, std::sync::Mutex::new(None)));
        self
    }

    /// Brings the VXLAN source filter up to date with the live hosts (when
    /// it is on, and only when they changed).
    pub fn update_vtep_filter(&self) -> Result<()> {
        let Some((host, applied)) = &self.filter else { return Ok(()) };
        let cfg = self.driver.config();
        let vteps: BTreeSet<IpAddr> = self
            .driver
            .store()
            .list_json::<HostRecord>(records::HOSTS)?
            .into_iter()
            .map(|(h, _)| h.addr)
            .filter(|a| *a != cfg.advertise_addr)
            .collect();
        let mut last = applied.lock().unwrap_or_else(|p| p.into_inner());
        if last.as_ref() != Some(&vteps) {
            super::vtep_filter::apply(host, cfg.port, &vteps)?;
            tracing::debug!(hosts = vteps.len(), "VXLAN source filter updated");
            *last = Some(vteps);
        }
        Ok(())
    }

    fn update_vtep_filter_logged(&self) {
        if let Err(e) = self.update_vtep_filter() {
            tracing::warn!(error = %e, "overlay agent: updating the VXLAN source filter failed");
        }
    }

    /// Takes a new lease, writes this host's record under it, and publishes
    /// this host's endpoints under it again (removing shared records of this
    /// host that it no longer has).
    pub fn register(&self) -> Result<LeaseId> {
        let store = self.driver.store();
        let cfg = self.driver.config();
        // Another live host with this node id (a cloned machine, a copied
        // state directory) would take over this host's records: refused.
        // The same address is this host again (its agent restarted).
        let key = records::host_key(cfg.node());
        if let Some((other, _)) = store.get_json::<HostRecord>(&key)? {
            if other.addr != cfg.advertise_addr {
                return Err(records::clone_refused(cfg.node(), &other));
            }
        }
        let lease = store.grant_lease(self.opts.ttl)?;
        let host = HostRecord { name: cfg.host_name.clone(), addr: cfg.advertise_addr, lease: lease.0 };
        let bytes = serde_json::to_vec(&host).map_err(|e| cnm_core::Error::Internal(e.to_string()))?;
        store.put_with_lease(&key, &bytes, Expect::Any, lease)?;
        // For joins: their one transaction holds while the record is on it.
        store.put_json(records::LOCAL_LEASE, &lease.0, Expect::Any)?;
        let keep = self.publish(lease)?;
        for e in store.list(records::PEERS)? {
            let Ok(p) = serde_json::from_slice::<PeerRecord>(&e.value) else { continue };
            if p.host != cfg.node() || keep.contains(&e.key) {
                continue;
            }
            // Under the network's lock, so that a join or leave running now
            // is either finished or not begun; a record this host has stays.
            let Some(net) = records::network_of_peer_key(&e.key) else { continue };
            let _lock = layout::lock(&cfg.netns_dir, net)?;
            if store.get(&records::local_peer_key(net, &p.endpoint))?.is_none() {
                let _ = store.delete(&e.key, Expect::Revision(e.revision));
            }
        }
        tracing::info!(host = %cfg.host_name, node = %cfg.node(), lease = lease.0, endpoints = keep.len(), "overlay host registered");
        Ok(lease)
    }

    /// Writes every endpoint this host has to the shared store under
    /// `lease` (again); returns their shared keys.
    pub fn publish(&self, lease: LeaseId) -> Result<BTreeSet<String>> {
        let store = self.driver.store();
        let cfg = self.driver.config();
        let mut keep = BTreeSet::new();
        for net in self.driver.local_networks()? {
            // Joins and leaves of this network wait meanwhile: a record
            // read here is not deleted before it is written back.
            let _lock = layout::lock(&cfg.netns_dir, &net)?;
            for e in store.list(&format!("{}{net}/", records::LOCAL_PEERS))? {
                let Ok(p) = serde_json::from_slice::<PeerRecord>(&e.value) else { continue };
                let key = records::peer_key(&net, cfg.node(), &p.endpoint);
                store.put_with_lease(&key, &e.value, Expect::Any, lease)?;
                keep.insert(key);
            }
        }
        Ok(keep)
    }

    /// Programs every network this host has endpoints on; returns how many
    /// kernel entries changed.
    pub fn resync(&self) -> Result<usize> {
        let mut changed = 0;
        let mut errors = Vec::new();
        for net in self.driver.local_networks()? {
            match self.driver.sync_network(&net) {
                Ok(r) => changed += r.added + r.removed,
                Err(e) => errors.push(e),
            }
            self.tell_peers(&net);
        }
        cnm_core::Error::teardown("resynchronise overlay peers", errors)?;
        Ok(changed)
    }

    /// Sleeps before the next try after a failure: the retry pause,
    /// doubled at each failure in a row, at most [`MAX_BACKOFF`]; wakes
    /// early when stopped. The data path stays as it was programmed.
    fn back_off(&self, failures: &mut u32, stop: &AtomicBool) {
        let pause = self.opts.retry.saturating_mul(1 << (*failures).min(8)).min(MAX_BACKOFF);
        *failures += 1;
        let until = Instant::now() + pause;
        while !stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Runs until `stop` is set.
    pub fn run(&self, stop: &AtomicBool) {
        let mut failures = 0;
        let mut lease: Option<LeaseId> = None;
        let mut watch: Option<Box<dyn Watch>> = None;
        let renew = self.opts.ttl / 3;
        let mut renewed = Instant::now();
        let mut resynced = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if lease.is_none() {
                match self.register() {
                    Ok(l) => {
                        lease = Some(l);
                        renewed = Instant::now();
                        self.update_vtep_filter_logged();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "overlay agent: cannot register; retrying");
                        self.back_off(&mut failures, stop);
                        continue;
                    }
                }
            }
            if watch.is_none() {
                // Watch first, then program everything: a change between the
                // two is seen twice rather than not at all.
                match self.driver.store().watch(records::PEERS) {
                    Ok(w) => watch = Some(w),
                    Err(e) => {
                        tracing::warn!(error = %e, "overlay agent: cannot watch; retrying");
                        self.back_off(&mut failures, stop);
                        continue;
                    }
                }
                failures = 0;
                self.update_vtep_filter_logged();
                self.resync_logged();
                resynced = Instant::now();
            }
            if renewed.elapsed() >= renew {
                match self.driver.store().keep_alive(lease.expect("registered above")) {
                    Ok(()) => renewed = Instant::now(),
                    Err(e) if e.kind() == cnm_core::ErrorKind::NotFound => {
                        tracing::warn!("overlay agent: lease expired; registering again");
                        lease = None;
                        watch = None;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "overlay agent: cannot renew the lease");
                        watch = None;
                        self.back_off(&mut failures, stop);
                        continue;
                    }
                }
            }
            if resynced.elapsed() >= self.opts.resync_every {
                // Also this host's own records, should the store have lost
                // any (an etcd restored from an old snapshot).
                if let Err(e) = self.publish(lease.expect("registered above")) {
                    tracing::warn!(error = %e, "overlay agent: publishing failed");
                }
                self.update_vtep_filter_logged();
                self.resync_logged();
                resynced = Instant::now();
            }
            let wait = renew.saturating_sub(renewed.elapsed()).min(Duration::from_millis(200));
            let w = watch.as_mut().expect("watching");
            match w.next(wait) {
                Ok(None) => {}
                Ok(Some(first)) => {
                    let mut nets = BTreeSet::new();
                    let mut ev = Some(first);
                    // Take every change already queued, then program once
                    // per network.
                    while let Some(e) = ev {
                        let key = match &e {
                            WatchEvent::Put(kv) => kv.key.clone(),
                            WatchEvent::Delete { key } => key.clone(),
                        };
                        if let Some(n) = records::network_of_peer_key(&key) {
                            nets.insert(n.to_string());
                        }
                        ev = w.next(Duration::ZERO).unwrap_or(None);
                    }
                    // First the filter: a new peer's host is let in before
                    // anything is sent to it.
                    self.update_vtep_filter_logged();
                    for n in nets {
                        match self.driver.sync_network(&n) {
                            Ok(r) if r.added + r.removed > 0 => {
                                tracing::debug!(network = %n, added = r.added, removed = r.removed, "overlay peers programmed")
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(network = %n, error = %e, "overlay agent: programming failed"),
                        }
                        self.tell_peers(&n);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "overlay agent: watch lost; reconnecting");
                    watch = None;
                    self.back_off(&mut failures, stop);
                }
            }
        }
    }

    fn resync_logged(&self) {
        match self.resync() {
            Ok(n) => tracing::debug!(changed = n, "overlay peers resynchronised"),
            Err(e) => tracing::warn!(error = %e, "overlay agent: resynchronising failed"),
        }
    }
}
