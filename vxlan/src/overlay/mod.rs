//! Docker's multi-host overlay network driver (scope global).
//!
//! - A network may have several subnets; each gets its own VXLAN id, unique
//!   in the cluster, taken through the shared store from 4097 up (or as
//!   given in `com.docker.network.driver.overlay.vxlanid_list`).
//! - On each host the network lives in its own namespace, made at the first
//!   join on that host and removed at the last leave.
//! - Endpoints are veth pairs from the sandbox to their subnet's bridge,
//!   with the underlay MTU less the VXLAN overhead and Docker's MAC rule.
//! - Where endpoints live is in the shared store under the host's lease;
//!   every host programs permanent neighbour and FDB entries from it: no
//!   flooding, no learning. The driver does this for the
//!   joining host at join; the [`Agent`] does it as peers come and go.

mod agent;
mod garp;
mod layout;
mod program;
mod records;
mod vtep_filter;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use cnm_core::driver::{Capabilities, DriverContext, NetworkDriver};
use cnm_core::inspect::Peer;
use cnm_core::join::{JoinInfo, JoinRequest};
use cnm_core::{Endpoint, Error, Expect, Network, Result, Scope, Store, StoreExt, Undo};
use cnm_netns::{Handle, LinkAdd, NetNs, VethPeer};
use serde::{Deserialize, Serialize};

pub use agent::{Agent, AgentOptions, PeersHook, RemoteEndpoint, RemoteNames, MAX_BACKOFF};
use layout::SubnetPlan;
pub use program::SyncReport;
use records::PeerRecord;
pub use vtep_filter::remove as remove_vtep_filter;

/// The option (and inspect key) listing a network's VXLAN ids, one per
/// subnet, comma-separated.
pub const VXLANID_LIST: &str = "com.docker.network.driver.overlay.vxlanid_list";
/// Docker's `docker_gwbridge`, here `cnm_gwbridge`: the name of the local
/// bridge network (and of its Linux bridge) through which sandboxes on
/// overlay networks reach the outside.
pub const GATEWAY_BRIDGE: &str = "cnm_gwbridge";

/// The gateway bridge network's configuration, for
/// `ControllerBuilder::gateway_bridge`: masquerade to the outside, no
/// traffic between its sandboxes (they talk over their overlays).
pub fn gateway_bridge() -> cnm_core::NetworkConfig {
    let mut cfg = cnm_core::NetworkConfig::new(GATEWAY_BRIDGE, "bridge");
    for (k, v) in [
        ("com.docker.network.bridge.name", GATEWAY_BRIDGE),
        ("com.docker.network.bridge.enable_icc", "false"),
        ("com.docker.network.bridge.enable_ip_masquerade", "true"),
    ] {
        cfg.options.insert(k.into(), v.into());
    }
    cfg
}

/// The option overriding the MTU of the network's interfaces.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";

/// How this host takes part in overlays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverlayConfig {
    /// This host's name: a label (shown in inspect's `Peers`); several
    /// hosts may share one.
    pub host_name: String,
    /// This host's identity in the cluster: every record of this host is
    /// keyed by it. Persistent and random ([`node_id`] keeps one in a state
    /// directory), so cloned machines or hosts of one name stay apart.
    /// Empty: the host name is used.
    #[serde(default)]
    pub node_id: String,
    /// This host's VTEP address: an address of the host namespace that the
    /// other hosts reach (Docker's `--advertise-addr`).
    pub advertise_addr: IpAddr,
    /// Where overlay namespaces are bound (e.g. `/run/cnm/overlay`).
    pub netns_dir: PathBuf,
    /// VXLAN UDP port (IANA: 4789).
    #[serde(default = "default_port")]
    pub port: u16,
}

fn default_port() -> u16 {
    4789
}

impl OverlayConfig {
    /// A configuration with the standard port.
    pub fn new(host_name: impl Into<String>, advertise_addr: IpAddr, netns_dir: impl Into<PathBuf>) -> Self {
        OverlayConfig {
            host_name: host_name.into(),
            node_id: String::new(),
            advertise_addr,
            netns_dir: netns_dir.into(),
            port: 4789,
        }
    }

    /// With this node id (see [`OverlayConfig::node_id`]).
    pub fn with_node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = id.into();
        self
    }

    /// The key this host's records are under: the node id, or the host name.
    pub fn node(&self) -> &str {
        if self.node_id.is_empty() {
            &self.host_name
        } else {
            &self.node_id
        }
    }
}

/// This host's persistent node id, kept in `state_dir/node-id` (made on
/// first use: 32 random hex digits, mode 0600). Copying a state directory
/// to another machine copies the id; the agent then refuses to register
/// the second live host (see [`Agent::register`](crate::overlay::Agent::register)).
pub fn node_id(state_dir: &std::path::Path) -> Result<String> {
    let path = state_dir.join("node-id");
    let read = |path: &std::path::Path| -> Result<Option<String>> {
        use std::io::Read;
        let mut text = String::new();
        match cnm_core::files::open_nofollow(path).and_then(|mut f| f.read_to_string(&mut text)) {
            Ok(_) if text.trim().len() == 32 && text.trim().bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(Some(text.trim().to_string()))
            }
            Ok(_) => Err(Error::store("read", path.display().to_string(), "not a node id (32 hex digits)")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::store("read", path.display().to_string(), e)),
        }
    };
    if let Some(id) = read(&path)? {
        return Ok(id);
    }
    let id = cnm_core::Id::random()?.as_str()[..32].to_string();
    cnm_core::files::write_atomic(&path, format!("{id}\n").as_bytes(), cnm_core::files::PRIVATE_FILE, true)
        .map_err(|e| Error::store("write", path.display().to_string(), e))?;
    Ok(id)
}

/// The overlay driver. Give it the same store as the controller: one that
/// sends the cluster's keys to etcd (see
/// [`SplitStore::cluster`](cnm_core::SplitStore::cluster)).
pub struct OverlayDriver {
    cfg: OverlayConfig,
    store: Arc<dyn Store>,
}

impl OverlayDriver {
    /// A driver for this host. Checks the configuration; touches nothing.
    pub fn new(cfg: OverlayConfig, store: Arc<dyn Store>) -> Result<OverlayDriver> {
        cnm_core::store::validate_key(&records::host_key(cfg.node()))
            .map_err(|_| Error::invalid("overlay node id", format!("{:?} cannot be a store key", cfg.node())))?;
        if cfg.advertise_addr.is_unspecified() || cfg.advertise_addr.is_multicast() {
            return Err(Error::invalid(
                "overlay advertise address",
                format!("{} is not a unicast address", cfg.advertise_addr),
            ));
        }
        Ok(OverlayDriver { cfg, store })
    }

    /// The configuration.
    pub fn config(&self) -> &OverlayConfig {
        &self.cfg
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    fn mtu(&self, host: &Handle, net: &Network) -> Result<u32> {
        if let Some(m) = net.options.get(MTU_OPTION) {
            return m.parse().map_err(|_| Error::invalid(MTU_OPTION, format!("{m:?} is not a number")));
        }
        let overhead = if self.cfg.advertise_addr.is_ipv4() { layout::OVERHEAD_V4 } else { layout::OVERHEAD_V6 };
        Ok(layout::underlay_mtu(host, self.cfg.advertise_addr)?.saturating_sub(overhead))
    }

    /// Opens the overlay namespace of `net`, making it first if this host
    /// has none. Call with the network's lock held.
    fn ensure_ns(&self, host: &NetNs, net: &Network, plan: &[SubnetPlan]) -> Result<(layout::OverlayNs, bool)> {
        if let Some(o) = layout::open(&self.cfg.netns_dir, net.id.as_str())? {
            return Ok((o, false));
        }
        let hh = Handle::open(host).map_err(Error::from_netns("open host namespace"))?;
        let b = layout::Build {
            host_handle: &hh,
            dir: &self.cfg.netns_dir,
            vtep: self.cfg.advertise_addr,
            port: self.cfg.port,
            mtu: self.mtu(&hh, net)?,
        };
        Ok((layout::create(&b, net, plan)?, true))
    }

    /// Programs every remote peer of `net` into this host's overlay
    /// namespace, if it has one; returns what changed.
    pub fn sync_network(&self, net_id: &str) -> Result<SyncReport> {
        let nets = self.store.list_json::<Network>("global/networks/")?;
        let Some((net, _)) = nets.into_iter().find(|(n, _)| n.id.as_str() == net_id) else {
            return Ok(Default::default());
        };
        let _lock = layout::lock(&self.cfg.netns_dir, net_id)?;
        let Some(o) = layout::open(&self.cfg.netns_dir, net_id)? else { return Ok(Default::default()) };
        let devs = program::devices(&o.handle, &layout::plan(&net)?)?;
        let peers = records::peers(&*self.store, net_id)?;
        let report = program::sync(&o.handle, &devs, self.cfg.node(), &peers)?;
        if let Err(e) = garp::announce(&o.ns, &report.announce) {
            tracing::debug!(error = %e, "overlay: gratuitous ARP failed");
        }
        Ok(report)
    }

    /// Ids of the overlay networks this host has endpoints on (from its own
    /// records).
    pub fn local_networks(&self) -> Result<Vec<String>> {
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for k in self.store.list_keys(records::LOCAL_PEERS)? {
            if let Some(id) = k[records::LOCAL_PEERS.len()..].split('/').next() {
                ids.insert(id.to_string());
            }
        }
        Ok(ids.into_iter().collect())
    }

    /// The sandbox side: per address, its subnet's gateway, and routes to
    /// the network's other subnets of that family through it.
    fn sandbox_side(mut info: JoinInfo, ep: &Endpoint, plan: &[SubnetPlan], mtu: u32) -> JoinInfo {
        info = info.mtu(Some(mtu));
        for addr in [ep.ipv4, ep.ipv6].into_iter().flatten() {
            let Some(own) = plan.iter().find(|s| s.subnet.contains(&addr.addr())) else { continue };
            info = info.gateway(Some(own.gateway.addr()));
            let same_family = |s: &&SubnetPlan| s.subnet.addr().is_ipv4() == addr.addr().is_ipv4();
            for other in plan.iter().filter(|s| s.vni != own.vni).filter(same_family) {
                info = info.route(other.subnet, Some(own.gateway.addr()));
            }
        }
        info
    }

    /// Publishes a peer record in one transaction with the read of the
    /// network's peers, under the lease this host's agent noted, if this
    /// host's record is still on it: the lease and the peers, or `None`.
    fn publish_at_once(
        &self,
        net: &Network,
        key: &str,
        bytes: &[u8],
    ) -> Result<Option<(cnm_core::store::LeaseId, Vec<PeerRecord>)>> {
        let Some(lease) = records::noted_lease(&*self.store)? else { return Ok(None) };
        let holder = records::host_key(self.cfg.node());
        let prefix = records::peers_prefix(net.id.as_str());
        let reads = [cnm_core::Read::Prefix(&prefix)];
        match self.store.put_while_leased(key, bytes, lease, &holder, &reads)? {
            Some(got) => Ok(Some((lease, records::decode_peers(got.first().map_or(&[][..], |v| &v[..]))?))),
            None => Ok(None),
        }
    }

    /// The name recorded at the join (7 digits before the name was
    /// widened), or the one a join gives now.
    fn veth_name(ep: &Endpoint) -> String {
        ep.driver_data.get("veth").cloned().unwrap_or_else(|| cnm_core::driver::veth_name(ep))
    }
}

impl NetworkDriver for OverlayDriver {
    fn name(&self) -> &str {
        "overlay"
    }

    fn capabilities(&self) -> Capabilities {
        // Every bridge of the overlay namespace is a Linux bridge.
        Capabilities { scope: Scope::Global, gateway_bridge: true, ..Default::default() }
    }

    fn validate_network(&self, net: &Network) -> Result<()> {
        for (k, v) in &net.options {
            match k.as_str() {
                VXLANID_LIST => {
                    for s in v.split(',') {
                        let ok = s.trim().parse::<u32>().is_ok_and(|n| (1..=records::LAST_VNI).contains(&n));
                        if !ok {
                            return Err(Error::invalid(
                                VXLANID_LIST,
                                format!("{s:?} is not a VXLAN id (1 to 16777215)"),
                            ));
                        }
                    }
                }
                MTU_OPTION => {
                    if !v.parse::<u32>().is_ok_and(|m| (1280..=65535).contains(&m)) {
                        return Err(Error::invalid(MTU_OPTION, format!("{v:?} is not an MTU (1280 to 65535)")));
                    }
                }
                other => {
                    return Err(Error::invalid(
                        format!("option {other:?}"),
                        format!("unknown to the overlay driver (known: {VXLANID_LIST}, {MTU_OPTION})"),
                    ))
                }
            }
        }
        Ok(())
    }

    fn peers(&self, _: &DriverContext<'_>, net: &Network) -> Result<Option<Vec<Peer>>> {
        // Shown by name; a record of an older version has only the host.
        let mut hosts: Vec<(String, IpAddr)> = records::peers(&*self.store, net.id.as_str())?
            .into_iter()
            .map(|p| (if p.host_name.is_empty() { p.host } else { p.host_name }, p.vtep))
            .collect();
        hosts.sort();
        hosts.dedup();
        Ok(Some(hosts.into_iter().map(|(name, ip)| Peer { name, ip: ip.to_string() }).collect()))
    }

    fn create_network(&self, _: &DriverContext<'_>, net: &mut Network) -> Result<()> {
        let wanted: Vec<u32> = match net.options.get(VXLANID_LIST) {
            Some(list) => list.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
            None => Vec::new(),
        };
        if !wanted.is_empty() && wanted.len() != net.pools.len() {
            return Err(Error::invalid(
                VXLANID_LIST,
                format!("{} ids given for {} subnets", wanted.len(), net.pools.len()),
            ));
        }
        let mut undo = Undo::new();
        let mut vnis = Vec::new();
        for (i, p) in net.pools.iter().enumerate() {
            match records::allocate_vni(&*self.store, net.id.as_str(), p.subnet, wanted.get(i).copied()) {
                Ok(v) => {
                    vnis.push(v.to_string());
                    let (store, id) = (self.store.clone(), net.id.to_string());
                    undo.push(format!("release VXLAN id {v}"), move || records::release_vni(&*store, &id, v));
                }
                Err(e) => return undo.fail(e),
            }
        }
        net.driver_options.insert(VXLANID_LIST.into(), vnis.join(","));
        undo.commit();
        tracing::debug!(network = %net.name, vnis = %net.driver_options[VXLANID_LIST], "overlay network created");
        Ok(())
    }

    fn delete_network(&self, ctx: &DriverContext<'_>, net: &Network) -> Result<()> {
        let peers = records::peers(&*self.store, net.id.as_str())?;
        if !peers.is_empty() {
            let hosts: BTreeSet<&str> = peers
                .iter()
                .map(|p| if p.host_name.is_empty() { p.host.as_str() } else { p.host_name.as_str() })
                .collect();
            return Err(Error::conflict(
                format!("overlay network {:?}", net.name),
                format!(
                    "it has {} endpoint(s) on host(s) {}",
                    peers.len(),
                    hosts.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let _ = ctx;
        let mut errors = Vec::new();
        let plan = layout::plan(net).unwrap_or_default();
        {
            let _lock = layout::lock(&self.cfg.netns_dir, net.id.as_str())?;
            if let Some(o) = layout::open(&self.cfg.netns_dir, net.id.as_str())? {
                errors.extend(layout::destroy(&o.ns, &self.cfg.netns_dir, net.id.as_str(), &plan).err());
            }
        }
        for vni in layout::vni_list(net).unwrap_or_default() {
            errors.extend(records::release_vni(&*self.store, net.id.as_str(), vni).err());
        }
        Error::teardown(format!("delete overlay network {:?}", net.name), errors)
    }

    fn create_endpoint(&self, _: &DriverContext<'_>, _: &Network, ep: &mut Endpoint) -> Result<()> {
        if !ep.ports.is_empty() {
            return Err(Error::invalid(
                format!("ports of endpoint {:?}", ep.name),
                "the overlay driver publishes no ports (publish them on a bridge network)",
            ));
        }
        cnm_core::driver::assign_docker_mac(ep)?;
        Ok(())
    }

    fn join(
        &self,
        ctx: &DriverContext<'_>,
        net: &Network,
        ep: &mut Endpoint,
        req: &JoinRequest<'_>,
    ) -> Result<JoinInfo> {
        let plan = layout::plan(net)?;
        let ip =
            ep.ipv4.or(ep.ipv6).ok_or_else(|| Error::invalid("endpoint", format!("{:?} has no address", ep.name)))?;
        let mac = ep.mac.ok_or_else(|| Error::Internal(format!("endpoint {:?} has no MAC", ep.name)))?;
        let home = plan
            .iter()
            .find(|s| s.subnet.contains(&ip.addr()))
            .ok_or_else(|| Error::Internal(format!("{ip} is in no subnet of network {:?}", net.name)))?
            .clone();
        // Where it lives: for this host's agent, and for every other host.
        let rec = PeerRecord {
            endpoint: ep.id.to_string(),
            ip,
            mac,
            host: self.cfg.node().to_string(),
            host_name: self.cfg.host_name.clone(),
            vtep: self.cfg.advertise_addr,
            network_name: net.name.clone(),
            sandbox: req.sandbox.name.clone(),
            names: cnm_core::names::endpoint_names(req.sandbox, ep),
        };
        let bytes = serde_json::to_vec(&rec).map_err(|e| Error::Internal(e.to_string()))?;
        let key = records::peer_key(net.id.as_str(), self.cfg.node(), ep.id.as_str());

        let _lock = layout::lock(&self.cfg.netns_dir, net.id.as_str())?;
        let mut undo = Undo::new();
        // Published, with the remote peers read, in one etcd transaction
        // that holds only while this host's record is on the lease its
        // agent noted; else the host's lease and the peers are read first
        // (refused without a live agent) and the record put at the end.
        let (lease, peers, published) = match self.publish_at_once(net, &key, &bytes)? {
            Some((lease, peers)) => (lease, peers, true),
            None => {
                let (lease, peers) = records::host_lease_and_peers(
                    &*self.store,
                    self.cfg.node(),
                    self.cfg.advertise_addr,
                    net.id.as_str(),
                )?;
                (lease, peers, false)
            }
        };
        if published {
            let (store, key) = (self.store.clone(), key.clone());
            undo.push("delete shared peer record", move || match store.delete(&key, Expect::Any) {
                Err(e) if e.kind() != cnm_core::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            });
        }
        let (o, created) = self.ensure_ns(ctx.host, net, &plan)?;
        if created {
            let dir = self.cfg.netns_dir.clone();
            let (id, plan2) = (net.id.to_string(), plan.clone());
            undo.push("remove overlay namespace", move || match NetNs::open(dir.join(layout::netns_name(&id))) {
                Ok(ns) => layout::destroy(&ns, &dir, &id, &plan2),
                Err(_) => Ok(()),
            });
        }
        let devs = match program::devices(&o.handle, &plan) {
            Ok(d) => d,
            Err(e) => return undo.fail(e),
        };
        let br = devs.iter().find(|d| d.plan.vni == home.vni).expect("home subnet is in the plan").bridge;
        let mtu = match o.handle.link_get(br) {
            Ok(l) => l.mtu,
            Err(e) => return undo.fail(Error::from_netns("read bridge MTU")(e)),
        };

        let veth = Self::veth_name(ep);
        // The sandbox end goes straight into the sandbox, or, for a runtime
        // that moves it itself (dockerd), into the host namespace.
        let src_name = format!("{veth}c");
        let peer = match req.in_host {
            true => VethPeer::new(src_name.as_str()).netns(ctx.host),
            false => VethPeer::new(req.ifname).netns(req.netns),
        };
        let add = LinkAdd::veth(veth.as_str(), peer.mac(mac).mtu(mtu)).mtu(mtu).master(br).up();
        let link = match o.handle.link_add(&add) {
            Ok(l) => l,
            Err(e) => return undo.fail(Error::from_netns(format!("create veth {veth:?}"))(e)),
        };
        {
            let v = veth.clone();
            let ns_path = self.cfg.netns_dir.join(layout::netns_name(net.id.as_str()));
            undo.push("delete veth", move || {
                let ns = NetNs::open(&ns_path).map_err(Error::from_netns("open overlay namespace"))?;
                let h = Handle::open(&ns).map_err(Error::from_netns("open overlay namespace"))?;
                match h.link_del(v.as_str()) {
                    Err(e) if e.kind() != cnm_netns::ErrorKind::NotFound => Err(Error::from_netns("delete veth")(e)),
                    _ => Ok(()),
                }
            });
        }

        match program::sync(&o.handle, &devs, self.cfg.node(), &peers) {
            Ok(r) => {
                if let Err(e) = garp::announce(&o.ns, &r.announce) {
                    tracing::debug!(error = %e, "overlay: gratuitous ARP failed");
                }
            }
            Err(e) => return undo.fail(e),
        }

        let local_key = records::local_peer_key(net.id.as_str(), ep.id.as_str());
        if let Err(e) = self.store.put_json(&local_key, &rec, Expect::Any) {
            return undo.fail(e);
        }
        let store = self.store.clone();
        undo.push("delete local peer record", move || match store.delete(&local_key, Expect::Any) {
            Err(e) if e.kind() != cnm_core::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        });
        if !published {
            if let Err(e) = self.store.put_with_lease(&key, &bytes, Expect::Any, lease) {
                return undo.fail(e);
            }
        }
        ep.driver_data.insert("veth".into(), veth);
        ep.driver_data.insert("vni".into(), home.vni.to_string());
        undo.commit();
        tracing::debug!(endpoint = %ep.name, network = %net.name, %ip, vni = home.vni, "overlay endpoint joined");
        let side = match req.in_host {
            true => JoinInfo::in_host(ep, src_name, "eth"),
            false => JoinInfo::in_sandbox(ep, link.peer_index),
        };
        Ok(Self::sandbox_side(side, ep, &plan, mtu))
    }

    fn leave(&self, _: &DriverContext<'_>, net: &Network, ep: &Endpoint, _: Option<&NetNs>) -> Result<()> {
        let _lock = layout::lock(&self.cfg.netns_dir, net.id.as_str())?;
        let mut errors = Vec::new();
        let key = records::peer_key(net.id.as_str(), self.cfg.node(), ep.id.as_str());
        for k in [key, records::local_peer_key(net.id.as_str(), ep.id.as_str())] {
            match self.store.delete(&k, Expect::Any) {
                Err(e) if e.kind() != cnm_core::ErrorKind::NotFound => errors.push(e),
                _ => {}
            }
        }
        if let Some(o) = layout::open(&self.cfg.netns_dir, net.id.as_str())? {
            match o.handle.link_del(Self::veth_name(ep).as_str()) {
                Err(e) if e.kind() != cnm_netns::ErrorKind::NotFound => {
                    errors.push(Error::from_netns("delete veth")(e))
                }
                _ => {}
            }
            // The last endpoint on this host takes the namespace with it.
            match o.handle.link_list() {
                Ok(links) if !links.iter().any(|l| l.kind.as_deref() == Some("veth")) => {
                    let plan = layout::plan(net).unwrap_or_default();
                    errors.extend(layout::destroy(&o.ns, &self.cfg.netns_dir, net.id.as_str(), &plan).err());
                }
                Ok(_) => {}
                Err(e) => errors.push(Error::from_netns("list overlay links")(e)),
            }
        }
        Error::teardown(format!("leave overlay network {:?}", net.name), errors)
    }

    fn remove_leftovers(&self, _: &DriverContext<'_>, networks: &[Network], _: &[Endpoint]) -> Result<Vec<String>> {
        let known: BTreeSet<String> = networks.iter().map(|n| layout::netns_name(n.id.as_str())).collect();
        let mut removed = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.cfg.netns_dir) else { return Ok(removed) };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("ov-") && !known.contains(&name) {
                NetNs::remove_named(&self.cfg.netns_dir, &name)
                    .map_err(Error::from_netns("remove overlay namespace"))?;
                removed.push(format!("removed overlay namespace {name} of a network that no longer exists"));
            }
        }
        Ok(removed)
    }
}
