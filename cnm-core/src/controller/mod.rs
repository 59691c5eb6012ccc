//! The [`Controller`]: what an embedding runtime talks to.
//!
//! Every operation validates first, then records its intent in the store,
//! then does the work (IPAM, driver), then records the result. Each step
//! registers its undo; a failure unwinds them, so the store, IPAM and the
//! kernel are as before. Records left half-way by a crash carry a state other
//! than `Ready`, and [`Controller::reconcile`] rolls them back.

mod claim;
mod endpoint;
mod lock;
mod names;
mod network;
mod predefined;
mod reconcile;
mod sandbox;
mod sandbox_side;
mod service;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cnm_netns::NetNs;

pub use claim::CLAIMS_DIR;
pub use predefined::{DefaultBridge, PREDEFINED};
pub use reconcile::{ReconcileReport, RestoreSummary};

use crate::driver::{DriverContext, NetworkDriver};
use crate::drivers::{HostDriver, NullDriver};
use crate::error::{Error, Result};
use crate::firewall::{Firewall, NoFirewall};
use crate::id::resolve;
use crate::ipam::IpamDriver;
use crate::model::{Endpoint, Network, NetworkConfig, Sandbox};
use crate::names::NameServer;
use crate::store::{MemStore, SplitStore, Store, StoreExt};
use claim::Claim;
use lock::{OpGuard, OpLock};

/// Key prefixes whose state lives exactly as long as the kernel objects it
/// describes; [`ControllerBuilder::state_dirs`] keeps them on the volatile
/// (tmpfs) side. IPAM implementations keep address leases under `leases/`,
/// firewalls their rules' state under `firewall/` (the kernel forgets rules at
/// a reboot too), the overlay driver this host's endpoints under `overlay/`
/// (after a reboot its agent must not publish endpoints that are gone).
pub const VOLATILE_PREFIXES: &[&str] = &["endpoints/", "sandboxes/", "leases/", "firewall/", "overlay/"];

/// Key prefixes every host of a cluster shares: global-scope networks
/// (`global/networks/`), what global drivers keep (`global/<driver>/`), and
/// the global address space with its leases. [`SplitStore::cluster`] sends
/// them to the shared store (etcd) and keeps everything else on the host.
pub const GLOBAL_PREFIXES: &[&str] = &["global/", "ipam/spaces/global", "leases/global-"];

/// The name of the IPAM given to [`ControllerBuilder::ipam`].
pub const DEFAULT_IPAM: &str = "default";

/// Builds a [`Controller`].
pub struct ControllerBuilder {
    drivers: Vec<Arc<dyn NetworkDriver>>,
    ipams: BTreeMap<String, Arc<dyn IpamDriver>>,
    firewall: Arc<dyn Firewall>,
    store: Option<Arc<dyn Store>>,
    host: Option<NetNs>,
    run_dir: Option<PathBuf>,
    gateway_bridge: Option<NetworkConfig>,
    claim: bool,
    sandbox_files: Option<PathBuf>,
    host_resolv_conf: PathBuf,
    fault: Option<FaultHook>,
    name_server: Option<Arc<dyn NameServer>>,
    node: Option<String>,
    predefined: Option<DefaultBridge>,
}

/// A hook called with the name of every step of the sandbox side before it
/// runs (see `testing::FaultHook`).
pub(crate) type FaultHook = Arc<dyn Fn(&str) -> Result<()> + Send + Sync>;

impl ControllerBuilder {
    /// Claims the host namespace for this instance (identified by its run
    /// directory, which this requires): every operation that changes state
    /// is refused with [`ErrorKind::Forbidden`](crate::ErrorKind) while
    /// another instance, with another run directory, manages the same host
    /// namespace; two would erase each other's rules and take each other's
    /// bridges for leftovers. The claim is given up when the state is empty.
    /// On by default with [`ControllerBuilder::state_dirs`]; the `cnm` tool
    /// always claims.
    pub fn claim_host_netns(mut self) -> Self {
        self.claim = true;
        self
    }

    /// The local network through which sandboxes on networks of drivers
    /// with [`Capabilities::gateway_bridge`](crate::Capabilities) (overlay)
    /// reach the outside, like Docker's `docker_gwbridge`: created on first
    /// use; each such sandbox gets an endpoint on it, which provides its
    /// default route, and loses it when it leaves its last such network.
    /// Internal networks get none. Without it, such networks provide the
    /// default route themselves.
    pub fn gateway_bridge(mut self, cfg: NetworkConfig) -> Self {
        self.gateway_bridge = Some(cfg);
        self
    }

    /// Adds a network driver (replacing one of the same name). `host` and
    /// `null` are always there.
    pub fn driver(mut self, d: Arc<dyn NetworkDriver>) -> Self {
        self.drivers.push(d);
        self
    }

    /// The IPAM to use (required when a driver needs addresses): the
    /// `default` IPAM driver.
    pub fn ipam(mut self, ipam: Arc<dyn IpamDriver>) -> Self {
        self.ipams.insert(DEFAULT_IPAM.to_string(), ipam);
        self
    }

    /// Another IPAM driver, for networks that name it
    /// (`NetworkConfig::ipam.driver`, Docker's `--ipam-driver`), e.g. a
    /// Docker IPAM plugin. Reconcile repairs only the default IPAM's
    /// pools and addresses: another driver keeps its own books.
    pub fn ipam_driver(mut self, name: impl Into<String>, ipam: Arc<dyn IpamDriver>) -> Self {
        self.ipams.insert(name.into(), ipam);
        self
    }

    /// The firewall (default: none).
    pub fn firewall(mut self, fw: Arc<dyn Firewall>) -> Self {
        self.firewall = fw;
        self
    }

    /// The store (default: in memory).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Persists configuration in `state_dir` (durable, e.g. `/var/lib/cnm`)
    /// and what lives as long as the kernel objects in `run_dir` (tmpfs, e.g.
    /// `/run/cnm`), where named sandbox namespaces and the cross-process
    /// operation lock live too.
    pub fn state_dirs(mut self, state_dir: impl AsRef<Path>, run_dir: impl AsRef<Path>) -> Result<Self> {
        self.store = Some(Arc::new(SplitStore::open_state_dirs(state_dir.as_ref(), run_dir.as_ref())?));
        self.run_dir = Some(run_dir.as_ref().to_path_buf());
        self.claim = true;
        Ok(self)
    }

    /// The run directory alone (named namespaces, the operation lock).
    pub fn run_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.run_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Keeps each sandbox's `resolv.conf` and `hosts` in `dir/<sandbox
    /// name>/`, as `docker run` writes them for a container to bind-mount:
    /// written when the sandbox is created, the hosts file rewritten at
    /// every join and leave, both removed with the sandbox.
    pub fn sandbox_files(mut self, dir: impl AsRef<Path>) -> Self {
        self.sandbox_files = Some(dir.as_ref().to_path_buf());
        self
    }

    /// The resolv.conf a sandbox without DNS settings copies its name
    /// servers from (default: `/etc/resolv.conf`).
    pub fn host_resolv_conf(mut self, path: impl AsRef<Path>) -> Self {
        self.host_resolv_conf = path.as_ref().to_path_buf();
        self
    }

    /// The name server that answers inside the sandboxes (an embedded DNS
    /// server, `cnm_dns::DnsServer`, or a client of one in another
    /// process): told of every sandbox and of every join and leave within
    /// the operation. A sandbox it serves gets `nameserver 127.0.0.11` in
    /// its resolv.conf; the others get the upstream servers.
    pub fn name_server(mut self, ns: Arc<dyn NameServer>) -> Self {
        self.name_server = Some(ns);
        self
    }

    /// Calls `hook` before every step of the sandbox side (for tests that
    /// fail each step in turn).
    #[cfg(feature = "testing")]
    pub fn fault_hook(mut self, hook: crate::testing::FaultHook) -> Self {
        self.fault = Some(hook);
        self
    }

    /// This host's name in a cluster (default: the system's host name):
    /// the backends a host adds to services are recorded under it, so that
    /// each host knows which backends are its own.
    pub fn node(mut self, name: impl Into<String>) -> Self {
        self.node = Some(name.into());
        self
    }

    /// Docker's predefined networks exist from the start (off by default;
    /// on in the `cnm` tool): `bridge` (driver bridge, Linux bridge
    /// `bridge.name`, made when the first sandbox joins it and kept from
    /// then on), `host` (driver host) and `none` (driver null). They
    /// cannot be removed. Needs the bridge driver and an IPAM.
    pub fn predefined_networks(mut self, bridge: DefaultBridge) -> Self {
        self.predefined = Some(bridge);
        self
    }

    /// The namespace the controller works in (default: the caller's).
    pub fn host_netns(mut self, ns: NetNs) -> Self {
        self.host = Some(ns);
        self
    }

    /// Builds it.
    pub fn build(self) -> Result<Controller> {
        let mut drivers: BTreeMap<String, Arc<dyn NetworkDriver>> = BTreeMap::new();
        let builtin: [Arc<dyn NetworkDriver>; 2] = [Arc::new(HostDriver), Arc::new(NullDriver)];
        for d in builtin.into_iter().chain(self.drivers) {
            drivers.insert(d.name().to_string(), d);
        }
        let host = match self.host {
            Some(h) => h,
            None => NetNs::current()?,
        };
        if let Some(d) = &self.run_dir {
            crate::files::create_dir(d).map_err(|e| Error::store("open", d.display().to_string(), e))?;
        }
        let claim = match (&self.run_dir, self.claim) {
            (Some(d), true) => Some(Claim::new(&host, d)?),
            (None, true) => {
                return Err(Error::invalid("claim_host_netns", "an instance is known by its run directory: set one"))
            }
            _ => None,
        };
        let predefined = self.predefined;
        let ctl = Controller {
            claim,
            drivers,
            ipams: self.ipams,
            firewall: self.firewall,
            store: self.store.unwrap_or_else(|| Arc::new(MemStore::new())),
            host,
            ops: OpLock::new(self.run_dir.as_ref().map(|d| d.join("ops.lock"))),
            run_dir: self.run_dir,
            gateway_bridge: self.gateway_bridge,
            sandbox_files: self.sandbox_files,
            host_resolv_conf: self.host_resolv_conf,
            fault: self.fault,
            name_server: self.name_server,
            node: self.node.unwrap_or_else(crate::etc::system_host_name),
            predefined: predefined.is_some(),
        };
        if let Some(bridge) = &predefined {
            ctl.ensure_predefined(bridge)?;
        }
        Ok(ctl)
    }
}

/// The CNM controller: networks, endpoints and sandboxes, persisted in a
/// store, with the kernel work delegated to drivers. Safe to share between
/// threads; with a [`FileStore`](crate::FileStore) also between processes.
pub struct Controller {
    drivers: BTreeMap<String, Arc<dyn NetworkDriver>>,
    ipams: BTreeMap<String, Arc<dyn IpamDriver>>,
    firewall: Arc<dyn Firewall>,
    store: Arc<dyn Store>,
    host: NetNs,
    run_dir: Option<PathBuf>,
    ops: OpLock,
    /// This instance's claim on the host namespace (with a run directory).
    claim: Option<Claim>,
    gateway_bridge: Option<NetworkConfig>,
    sandbox_files: Option<PathBuf>,
    host_resolv_conf: PathBuf,
    fault: Option<FaultHook>,
    name_server: Option<Arc<dyn NameServer>>,
    node: String,
    /// The predefined networks are on (the default bridge serves no names).
    predefined: bool,
}

impl Controller {
    /// Starts an operation that changes state: takes the operation lock,
    /// then makes sure no other instance manages the host namespace.
    pub(crate) fn op(&self) -> Result<OpGuard<'_>> {
        let g = self.ops.exclusive()?;
        if let Some(c) = &self.claim {
            c.take()?;
        }
        Ok(g)
    }

    /// A builder with the built-in `host` and `null` drivers, no firewall and
    /// an in-memory store.
    pub fn builder() -> ControllerBuilder {
        ControllerBuilder {
            drivers: Vec::new(),
            ipams: BTreeMap::new(),
            firewall: Arc::new(NoFirewall),
            store: None,
            host: None,
            run_dir: None,
            gateway_bridge: None,
            claim: false,
            sandbox_files: None,
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
            fault: None,
            name_server: None,
            node: None,
            predefined: None,
        }
    }

    /// The namespace the controller works in.
    pub fn host_netns(&self) -> &NetNs {
        &self.host
    }

    /// This host's name in the cluster (see [`ControllerBuilder::node`]).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Names of the registered drivers.
    pub fn driver_names(&self) -> Vec<String> {
        self.drivers.keys().cloned().collect()
    }

    pub(crate) fn ctx(&self) -> DriverContext<'_> {
        DriverContext { host: &self.host, firewall: &*self.firewall }
    }

    pub(crate) fn driver(&self, name: &str) -> Result<&Arc<dyn NetworkDriver>> {
        self.drivers.get(name).ok_or_else(|| {
            Error::invalid("driver", format!("unknown driver {name:?} (known: {})", self.driver_names().join(", ")))
        })
    }

    /// The IPAM driver `name` (a network's `ipam.driver`).
    fn ipam(&self, name: &str) -> Result<&Arc<dyn IpamDriver>> {
        self.ipams.get(name).ok_or_else(|| match self.ipams.is_empty() {
            true => Error::Internal("this controller was built without an IPAM".into()),
            false => Error::invalid(
                "ipam.driver",
                format!(
                    "unknown IPAM driver {name:?} (known: {})",
                    self.ipams.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ),
        })
    }

    // ----- lookups -------------------------------------------------------

    /// Every network, sorted by name.
    pub fn networks(&self) -> Result<Vec<Network>> {
        let mut all: Vec<Network> = self.store.list_json::<Network>("networks/")?.into_iter().map(|(n, _)| n).collect();
        all.extend(self.store.list_json::<Network>(GLOBAL_NETWORKS)?.into_iter().map(|(n, _)| n));
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The network named `key`, or whose id is or starts with `key`.
    pub fn network(&self, key: &str) -> Result<Network> {
        self.find_network(key).map(|(n, _)| n)
    }

    /// Looks an object up by name, id or unique id prefix. Objects are
    /// stored under `prefix` + name, so a name costs one read and only an id
    /// or a prefix needs a listing.
    fn find<T: serde::de::DeserializeOwned + Clone>(
        &self,
        what: &'static str,
        prefix: &str,
        key: &str,
        name: impl Fn(&T) -> &str,
        id: impl Fn(&T) -> &crate::Id,
    ) -> Result<(T, u64)> {
        let direct = format!("{prefix}{key}");
        if crate::store::validate_key(&direct).is_ok() {
            if let Some(found) = self.store.get_json::<T>(&direct)? {
                return Ok(found);
            }
        }
        let all = self.store.list_json::<T>(prefix)?;
        resolve(what, key, &all, |t| name(&t.0), |t| id(&t.0)).cloned()
    }

    fn find_network(&self, key: &str) -> Result<(Network, u64)> {
        // Local networks first (one read by name), then the cluster's.
        match self.find("network", "networks/", key, |n: &Network| &n.name, |n| &n.id) {
            Err(e) if e.kind() == crate::ErrorKind::NotFound => {
                self.find("network", GLOBAL_NETWORKS, key, |n: &Network| &n.name, |n| &n.id)
            }
            other => other,
        }
    }

    /// Every endpoint of a network (all networks with `None`).
    pub fn endpoints(&self, network: Option<&str>) -> Result<Vec<Endpoint>> {
        let prefix = match network {
            Some(k) => format!("endpoints/{}/", self.find_network(k)?.0.id),
            None => "endpoints/".to_string(),
        };
        Ok(self.store.list_json::<Endpoint>(&prefix)?.into_iter().map(|(e, _)| e).collect())
    }

    /// The endpoint `key` (name, id or id prefix) of network `network`.
    pub fn endpoint(&self, network: &str, key: &str) -> Result<Endpoint> {
        let net = self.find_network(network)?.0;
        self.find_endpoint(&net, key).map(|(e, _)| e)
    }

    fn find_endpoint(&self, net: &Network, key: &str) -> Result<(Endpoint, u64)> {
        self.find("endpoint", &format!("endpoints/{}/", net.id), key, |e: &Endpoint| &e.name, |e| &e.id)
    }

    /// Every sandbox, sorted by name.
    pub fn sandboxes(&self) -> Result<Vec<Sandbox>> {
        Ok(self.store.list_json::<Sandbox>("sandboxes/")?.into_iter().map(|(s, _)| s).collect())
    }

    /// The sandbox named `key`, or whose id is or starts with `key`.
    pub fn sandbox(&self, key: &str) -> Result<Sandbox> {
        self.find_sandbox(key).map(|(s, _)| s)
    }

    fn find_sandbox(&self, key: &str) -> Result<(Sandbox, u64)> {
        self.find("sandbox", "sandboxes/", key, |s: &Sandbox| &s.name, |s| &s.id)
    }
}

impl Controller {
    /// Once the state holds nothing (no network, endpoint or sandbox),
    /// removes what cnm keeps beside it: the run directory's namespace mount
    /// point, the stores' lock files and empty directories, the operation
    /// lock file, and the run directory itself when empty. Called with the
    /// operation lock held, at the end of every operation that deletes.
    pub(super) fn tidy_if_empty(&self) {
        if let Err(e) = self.try_tidy() {
            tracing::warn!("{e}");
        }
    }

    fn try_tidy(&self) -> Result<()> {
        for prefix in ["networks/", GLOBAL_NETWORKS, "endpoints/", "sandboxes/"] {
            if self.store.count(prefix)? > 0 {
                return Ok(());
            }
        }
        let mut errors = Vec::new();
        if let Some(dir) = self.netns_dir() {
            let empty = std::fs::read_dir(&dir).map(|mut d| d.next().is_none()).unwrap_or(false);
            if empty {
                errors.extend(NetNs::release_dir(&dir).err().map(Error::from));
                let _ = std::fs::remove_dir(&dir);
            }
        }
        errors.extend(self.store.tidy().err());
        if let Some(c) = &self.claim {
            c.release();
        }
        if let Some(lock) = self.ops.path() {
            // Held by us: see `store::lock_file` for why removing it is safe.
            let _ = std::fs::remove_file(lock);
        }
        if let Some(dir) = &self.run_dir {
            let _ = std::fs::remove_dir(dir);
        }
        Error::teardown("remove what an empty state leaves", errors)
    }
}

/// Where global-scope networks are stored (shared by every host).
const GLOBAL_NETWORKS: &str = "global/networks/";

fn net_key(name: &str, scope: crate::model::Scope) -> String {
    match scope {
        crate::model::Scope::Local => format!("networks/{name}"),
        crate::model::Scope::Global => format!("{GLOBAL_NETWORKS}{name}"),
    }
}

fn ep_key(ep: &Endpoint) -> String {
    format!("endpoints/{}/{}", ep.network_id, ep.name)
}

fn sb_key(name: &str) -> String {
    format!("sandboxes/{name}")
}

/// Deletes a record, treating "already gone" as done.
fn delete_record(store: &dyn Store, key: &str) -> Result<()> {
    match store.delete(key, crate::store::Expect::Any) {
        Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Treats `NotFound` as success (idempotent teardown).
fn gone_ok(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.kind() == crate::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
