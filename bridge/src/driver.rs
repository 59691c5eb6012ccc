//! [`BridgeDriver`]: cnm-core's `NetworkDriver` for Linux bridges.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cnm_core::driver::{DriverContext, NetworkDriver};
use cnm_core::join::{JoinInfo, JoinRequest};
use cnm_core::{Endpoint, Error, FirewallNetwork, Network, PortRequest, Result, Undo};
use cnm_netns::{AddrFlags, ErrorKind as NsKind, Handle, LinkAdd, MacAddr, NetNs, VethPeer};
use ipnet::IpNet;

use crate::options::BridgeNetworkOptions;
use crate::reaper::Reaper;

/// The marker every link this driver creates carries as its alias, followed
/// by the owning network's or endpoint's id.
pub const MARKER: &str = "cnm:";

/// Docker's bridge driver: a Linux bridge per network, a veth pair per
/// endpoint with the sandbox end created directly in the sandbox, NAT and
/// published ports through the controller's firewall.
pub struct BridgeDriver {
    /// One handle per host namespace (by inode), opened once.
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    /// How leave gets rid of a veth.
    removal: Removal,
    /// Whether a leave parked a veth ([`BridgeDriver::parking`]).
    parked: AtomicBool,
    fault: Option<FaultHook>,
}

/// How leave gets rid of a veth.
enum Removal {
    /// Deleted at once, in one request ([`BridgeDriver::one_shot`]).
    Now,
    /// Parked, and deleted by the batching thread ([`BridgeDriver::new`]).
    Batched(Reaper),
    /// Parked, for the caller to delete ([`BridgeDriver::parking`]).
    Parked,
}

/// Called with the name of every host-side kernel step just before it runs.
type FaultHook = Arc<dyn Fn(&str) -> Result<()> + Send + Sync>;

impl Default for BridgeDriver {
    fn default() -> Self {
        BridgeDriver::new()
    }
}

/// The forwarding switches a network needs on.
fn forwarding_keys(net: &Network) -> impl Iterator<Item = &'static str> {
    let ipv6 = net.enable_ipv6;
    ["net.ipv4.ip_forward"].into_iter().chain(ipv6.then_some("net.ipv6.conf.all.forwarding"))
}

/// Takes a parked veth's sandbox end down and renames it (`cnmp` and the
/// endpoint id's first 11 digits), so that its name is free for the next
/// join before the veth is deleted. Best effort: a sandbox that is gone
/// took the veth's end with it.
fn free_name(sandbox: &NetNs, ifname: &str, ep: &Endpoint) {
    let renamed = Handle::open(sandbox).and_then(|c| {
        let link = c.link_get(ifname)?;
        c.link_set_down(link.index)?;
        c.link_set_name(link.index, &format!("cnmp{}", &ep.id.as_str()[..11]))
    });
    if let Err(e) = renamed {
        tracing::debug!(endpoint = %ep.name, "parked veth keeps its name: {e}");
    }
}

/// Deletes the veths that [`BridgeDriver::parking`] drivers parked in
/// `host` (one request, one RCU grace period for all of them).
pub fn delete_parked(host: &NetNs) -> cnm_core::Result<()> {
    let h = Handle::open(host).map_err(Error::from_netns("open host namespace"))?;
    gone_ok(h.link_del_group(crate::reaper::GROUP)).map_err(Error::from_netns("delete parked veths"))
}

/// Treats "already gone" as done.
fn gone_ok(r: std::result::Result<(), cnm_netns::Error>) -> std::result::Result<(), cnm_netns::Error> {
    match r {
        Err(e) if e.kind() == NsKind::NotFound => Ok(()),
        other => other,
    }
}

impl BridgeDriver {
    /// A driver; it keeps a netlink handle per host namespace and a
    /// background thread that deletes detached veths in batches. When the
    /// system cannot start that thread, it works as [`BridgeDriver::one_shot`]
    /// does (each leave deletes its veth at once) and says so in a warning;
    /// [`BridgeDriver::try_new`] makes that an error instead.
    pub fn new() -> BridgeDriver {
        BridgeDriver::try_new().unwrap_or_else(|e| {
            tracing::warn!("{e}; detached veths are deleted one by one");
            BridgeDriver::one_shot()
        })
    }

    /// [`BridgeDriver::new`], or an error when its thread cannot start.
    pub fn try_new() -> Result<BridgeDriver> {
        let reaper =
            Reaper::start().map_err(|e| Error::Internal(format!("starting the bridge driver's reaper thread: {e}")))?;
        Ok(BridgeDriver::with_removal(Removal::Batched(reaper)))
    }

    /// A driver for a process that does one operation and exits (a command
    /// line tool): leave deletes the veth at once, in one request, instead of
    /// taking it down and handing it to the batching thread, which would
    /// only delete it when the process ends.
    pub fn one_shot() -> BridgeDriver {
        BridgeDriver::with_removal(Removal::Now)
    }

    /// A driver for a process that must not wait for the kernel to delete a
    /// veth (a CNI plugin's `DEL`: one deletion costs an RCU grace period,
    /// about 20 ms): leave takes the veth down, renames its sandbox end out
    /// of the way (so the interface name is free at once) and parks it in
    /// [`REAPER_GROUP`](crate::REAPER_GROUP); the caller deletes the group
    /// afterwards, off its path ([`delete_parked`]), when
    /// [`BridgeDriver::parked`] says a leave parked one.
    pub fn parking() -> BridgeDriver {
        BridgeDriver::with_removal(Removal::Parked)
    }

    /// Whether a leave of this driver parked a veth that is not deleted yet
    /// ([`BridgeDriver::parking`]).
    pub fn parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    fn with_removal(removal: Removal) -> BridgeDriver {
        BridgeDriver { handles: Mutex::new(HashMap::new()), removal, parked: AtomicBool::new(false), fault: None }
    }

    /// A driver that calls `hook` before every kernel step (for tests that
    /// fail each step in turn).
    #[cfg(feature = "testing")]
    pub fn with_fault_hook(hook: cnm_core::testing::FaultHook) -> BridgeDriver {
        BridgeDriver { fault: Some(hook), ..BridgeDriver::new() }
    }

    fn step(&self, name: &str) -> Result<()> {
        match &self.fault {
            Some(h) => h(name),
            None => Ok(()),
        }
    }

    fn handle(&self, ns: &NetNs) -> Result<Arc<Handle>> {
        let ino = ns.inode().map_err(Error::from_netns("open host namespace"))?;
        let mut g = self.handles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = g.get(&ino) {
            return Ok(h.clone());
        }
        let h = Arc::new(Handle::open(ns).map_err(Error::from_netns("open host namespace"))?);
        g.insert(ino, h.clone());
        Ok(h)
    }

    /// The bridge's name: the option, or `br-` and 12 hex digits of the id.
    pub fn bridge_name(net: &Network) -> Result<String> {
        let o = BridgeNetworkOptions::from_docker(&net.options)?;
        Ok(o.name.unwrap_or_else(|| format!("br-{}", net.id.short())))
    }

    /// Publishes the endpoint's ports (the network's default host address
    /// where a mapping names none) and records the bindings.
    fn publish(ctx: &DriverContext<'_>, net: &Network, o: &BridgeNetworkOptions, ep: &mut Endpoint) -> Result<()> {
        let mut ports = ep.ports.clone();
        if let Some(default_ip) = o.host_binding_ipv4 {
            for p in ports.iter_mut().filter(|p| p.host_ip.is_none()) {
                p.host_ip = Some(default_ip);
            }
        }
        let addresses: Vec<IpAddr> = [ep.ipv4, ep.ipv6].into_iter().flatten().map(|a| a.addr()).collect();
        let req = PortRequest { endpoint: ep.id.to_string(), network: net.id.to_string(), addresses, ports };
        ep.bindings = ctx.firewall.add_ports(&req)?;
        Ok(())
    }

    /// The host-side veth name of an endpoint: `veth` and 7 hex digits.
    pub fn veth_name(ep: &Endpoint) -> String {
        // Endpoints recorded before the name was kept had 7 digits.
        ep.driver_data.get("veth").cloned().unwrap_or_else(|| format!("veth{}", &ep.id.as_str()[..7]))
    }

    fn firewall_network(net: &Network, o: &BridgeNetworkOptions, bridge: &str) -> FirewallNetwork {
        FirewallNetwork {
            id: net.id.to_string(),
            interface: bridge.to_string(),
            subnets: net.pools.iter().map(|p| p.subnet).collect(),
            internal: net.internal,
            masquerade: o.masquerade,
            icc: o.icc,
        }
    }

    /// The kernel part of creating a network: the bridge with its MAC set
    /// once (so it never changes as ports come and go), up, its gateways,
    /// forwarding on. Undone on failure.
    fn create_bridge(
        &self,
        ctx: &DriverContext<'_>,
        net: &Network,
        o: &BridgeNetworkOptions,
        name: &str,
    ) -> Result<()> {
        let h = self.handle(ctx.host)?;
        let mut undo = Undo::new();
        let opts = cnm_netns::BridgeOptions { multicast_snooping: Some(o.multicast_snooping), ..Default::default() };
        let mac = MacAddr::random_local().map_err(Error::from_netns("a random bridge MAC"))?;
        let mut add = LinkAdd::bridge_with(name, opts).mac(mac).alias(format!("{MARKER}{}", net.id)).up();
        if let Some(m) = o.mtu {
            add = add.mtu(m);
        }
        self.step("create bridge")?;
        let br = h.link_add(&add).map_err(Error::from_netns(format!("create bridge {name:?}")))?.index;
        let h2 = h.clone();
        let n = name.to_string();
        undo.push("delete bridge", move || {
            gone_ok(h2.link_del(n.as_str())).map_err(Error::from_netns("delete bridge"))
        });
        for gw in net.pools.iter().filter_map(|p| p.gateway) {
            let flags = if gw.addr().is_ipv6() { AddrFlags::NODAD } else { AddrFlags::empty() };
            let added = self.step("add gateway").and_then(|_| {
                h.addr_add(br, gw, flags).map_err(Error::from_netns(format!("add gateway {gw} to {name:?}")))
            });
            if let Err(e) = added {
                return undo.fail(e);
            }
        }
        for key in forwarding_keys(net) {
            let set = self
                .step("forwarding")
                .and_then(|_| ctx.host.sysctl_set(key, "1").map_err(Error::from_netns(format!("sysctl {key}"))));
            if let Err(e) = set {
                return undo.fail(e);
            }
        }
        undo.commit();
        Ok(())
    }
}

impl NetworkDriver for BridgeDriver {
    fn name(&self) -> &str {
        "bridge"
    }

    fn capabilities(&self) -> cnm_core::Capabilities {
        // BR_MAX_PORTS in the kernel.
        cnm_core::Capabilities { max_endpoints: Some(1024), ..Default::default() }
    }

    fn validate_network(&self, net: &Network) -> Result<()> {
        BridgeNetworkOptions::from_docker(&net.options)?;
        // A Linux bridge network is one subnet per family, as Docker's.
        for v6 in [false, true] {
            let subnets: Vec<String> = net
                .ipam
                .config
                .iter()
                .filter_map(|p| p.subnet)
                .filter(|s| s.addr().is_ipv6() == v6)
                .map(|s| s.to_string())
                .collect();
            if subnets.len() > 1 {
                return Err(Error::invalid(
                    "ipam.config",
                    format!(
                        "a bridge network takes one IPv{} subnet, not {}",
                        if v6 { 6 } else { 4 },
                        subnets.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn avoid_subnets(&self, ctx: &DriverContext<'_>) -> Result<Vec<IpNet>> {
        let routes = self.handle(ctx.host)?.route_list(None).map_err(Error::from_netns("list host routes"))?;
        Ok(routes.into_iter().map(|r| r.dst).filter(|d| d.prefix_len() > 0 && !d.addr().is_loopback()).collect())
    }

    fn create_network(&self, ctx: &DriverContext<'_>, net: &mut Network) -> Result<()> {
        let o = BridgeNetworkOptions::from_docker(&net.options)?;
        let name = Self::bridge_name(net)?;
        self.create_bridge(ctx, net, &o, &name)?;
        let rules = self
            .step("firewall add_network")
            .and_then(|_| ctx.firewall.add_network(&Self::firewall_network(net, &o, &name)));
        if let Err(e) = rules {
            let _ = gone_ok(self.handle(ctx.host)?.link_del(name.as_str()));
            return Err(e);
        }
        tracing::debug!(bridge = %name, "bridge network created");
        Ok(())
    }

    fn delete_network(&self, ctx: &DriverContext<'_>, net: &Network) -> Result<()> {
        let mut errors = Vec::new();
        errors.extend(ctx.firewall.remove_network(net.id.as_str()).err());
        let name = Self::bridge_name(net)?;
        let h = self.handle(ctx.host)?;
        errors.extend(
            gone_ok(h.link_del(name.as_str())).map_err(Error::from_netns(format!("delete bridge {name:?}"))).err(),
        );
        Error::teardown(format!("delete bridge network {:?}", net.name), errors)
    }

    fn create_endpoint(&self, _: &DriverContext<'_>, _: &Network, ep: &mut Endpoint) -> Result<()> {
        cnm_core::driver::assign_docker_mac(ep)?;
        ep.driver_data.insert("veth".into(), cnm_core::driver::veth_name(ep));
        Ok(())
    }

    fn join(
        &self,
        ctx: &DriverContext<'_>,
        net: &Network,
        ep: &mut Endpoint,
        req: &JoinRequest<'_>,
    ) -> Result<JoinInfo> {
        let o = BridgeNetworkOptions::from_docker(&net.options)?;
        let bridge = Self::bridge_name(net)?;
        let h = self.handle(ctx.host)?;
        let br = h
            .link_get(bridge.as_str())
            .map_err(Error::from_netns(format!("bridge {bridge:?} of network {:?}", net.name)))?;
        let veth = Self::veth_name(ep);

        // The sandbox end is created directly in the sandbox, with its name,
        // MAC and MTU, in the same request as the host end; for a runtime
        // that moves it itself (dockerd), it stays in the host namespace.
        let src_name = format!("{veth}c");
        let mut peer =
            if req.in_host { VethPeer::new(src_name.as_str()) } else { VethPeer::new(req.ifname).netns(req.netns) };
        if let Some(m) = ep.mac {
            peer = peer.mac(m);
        }
        if let Some(m) = o.mtu {
            peer = peer.mtu(m);
        }
        // Created down: the host end gets IPv6 turned off before it comes up.
        let mut add = LinkAdd::veth(veth.as_str(), peer).master(br.index).alias(format!("{MARKER}{}", ep.id));
        if o.hairpin {
            // A container reaching its own published port gets the DNAT'ed
            // frame back through its own port.
            add = add.hairpin();
        }
        if let Some(m) = o.mtu {
            add = add.mtu(m);
        }
        let mut undo = Undo::new();
        self.step("create veth")?;
        let link = h.link_add(&add).map_err(|e| {
            // Either end's name may be the one taken: say which.
            let in_sandbox = || Handle::open(req.netns).is_ok_and(|c| c.link_get(req.ifname).is_ok());
            if e.kind() == NsKind::AlreadyExists && in_sandbox() {
                Error::conflict(
                    format!("interface {:?} in sandbox {:?}", req.ifname, req.sandbox.name),
                    "the sandbox has an interface of that name already",
                )
            } else {
                Error::from_netns(format!("create veth {veth:?}"))(e)
            }
        })?;
        let (h2, v2) = (h.clone(), veth.clone());
        undo.push("delete veth", move || gone_ok(h2.link_del(v2.as_str())).map_err(Error::from_netns("delete veth")));

        let host_end = || -> Result<()> {
            let k = |what: &str| Error::from_netns(format!("{what} of endpoint {:?}", ep.name));
            // The host end is a bridge port and needs no IPv6 of its own.
            // With it, every port adds a route to one shared fib node and
            // the kernel walks them all on every link change: attaches get
            // slower as the bridge fills (0.6 ms to 0.9 ms per attach at
            // 1000 ports here); without, they stay flat.
            self.step("host end without IPv6")?;
            match ctx.host.sysctl_set(&format!("net/ipv6/conf/{veth}/disable_ipv6"), "1") {
                // A kernel without IPv6 has no such switch.
                Err(e) if e.kind() == NsKind::NotFound => {}
                other => other.map_err(k("disable IPv6 on the host end"))?,
            }
            self.step("host end up")?;
            h.link_set_up(link.index).map_err(k("host end up"))
        };
        if let Err(e) = host_end() {
            return undo.fail(e);
        }

        // A runtime that programs the sandbox itself asks for the ports
        // separately (program_external).
        if !ep.ports.is_empty() && !req.in_host {
            if let Err(e) = self.step("publish ports").and_then(|_| Self::publish(ctx, net, &o, ep)) {
                return undo.fail(e);
            }
        }
        ep.driver_data.insert("veth".into(), veth);
        undo.commit();
        let info = if req.in_host {
            JoinInfo::in_host(ep, src_name, "eth")
        } else {
            JoinInfo::in_sandbox(ep, link.peer_index)
        };
        Ok(info.mtu(o.mtu).gateway(net.gateway_v4().map(|g| g.addr())).gateway(net.gateway_v6().map(|g| g.addr())))
    }

    fn program_external(&self, ctx: &DriverContext<'_>, net: &Network, ep: &mut Endpoint) -> Result<()> {
        if ep.ports.is_empty() || !ep.bindings.is_empty() {
            return Ok(());
        }
        let o = BridgeNetworkOptions::from_docker(&net.options)?;
        Self::publish(ctx, net, &o, ep)
    }

    fn revoke_external(&self, ctx: &DriverContext<'_>, _: &Network, ep: &Endpoint) -> Result<()> {
        ctx.firewall.remove_ports(ep.id.as_str())
    }

    fn leave(&self, ctx: &DriverContext<'_>, _: &Network, ep: &Endpoint, sandbox: Option<&NetNs>) -> Result<()> {
        let mut errors = Vec::new();
        if !ep.ports.is_empty() || !ep.bindings.is_empty() {
            errors.extend(self.step("unpublish ports").and_then(|_| ctx.firewall.remove_ports(ep.id.as_str())).err());
        }
        let h = self.handle(ctx.host)?;
        let veth = Self::veth_name(ep);
        // Down now (the sandbox loses the link at once), deleted in a batch
        // shortly after: the kernel charges one RCU grace period (about
        // 20 ms) per deletion request, not per link.
        if let Err(e) = self.step("remove veth") {
            errors.push(e);
        } else {
            let removed = match &self.removal {
                Removal::Batched(r) => h.link_park(veth.as_str(), crate::reaper::GROUP).map(|()| r.schedule(h.clone())),
                Removal::Parked => {
                    let parked = h.link_park(veth.as_str(), crate::reaper::GROUP);
                    if parked.is_ok() {
                        self.parked.store(true, Ordering::SeqCst);
                        if let (Some(ns), Some(ifname)) = (sandbox, ep.ifname.as_deref()) {
                            free_name(ns, ifname, ep);
                        }
                    }
                    parked
                }
                Removal::Now => h.link_del(veth.as_str()),
            };
            match removed {
                Ok(()) => {}
                Err(e) if e.kind() == NsKind::NotFound => {}
                Err(e) => errors.push(Error::from_netns(format!("remove veth {veth:?}"))(e)),
            }
        }
        Error::teardown(format!("leave endpoint {:?}", ep.name), errors)
    }

    fn restore_network(&self, ctx: &DriverContext<'_>, net: &Network, endpoints: &[Endpoint]) -> Result<Vec<String>> {
        let name = Self::bridge_name(net)?;
        let o = BridgeNetworkOptions::from_docker(&net.options)?;
        let h = self.handle(ctx.host)?;
        let k = |what: String| Error::from_netns(format!("{what} of bridge {name:?}"));
        let mut repairs = Vec::new();
        let br = match h.link_get(name.as_str()) {
            Ok(l) => l,
            Err(e) if e.kind() == NsKind::NotFound => {
                self.create_bridge(ctx, net, &o, &name)?;
                ctx.firewall.add_network(&Self::firewall_network(net, &o, &name))?;
                repairs.push(format!("re-created bridge {name} of network {:?}", net.name));
                h.link_get(name.as_str()).map_err(k("find".into()))?
            }
            Err(e) => return Err(k("find".into())(e)),
        };
        if !br.up {
            h.link_set_up(br.index).map_err(k("bring up".into()))?;
            repairs.push(format!("brought bridge {name} back up"));
        }
        let have: BTreeSet<IpNet> = h
            .addr_list(Some(br.index), None)
            .map_err(k("list addresses".into()))?
            .into_iter()
            .map(|a| a.address)
            .collect();
        for gw in net.pools.iter().filter_map(|p| p.gateway).filter(|g| !have.contains(g)) {
            let flags = if gw.addr().is_ipv6() { AddrFlags::NODAD } else { AddrFlags::empty() };
            h.addr_add(br.index, gw, flags).map_err(k(format!("add gateway {gw}")))?;
            repairs.push(format!("re-added gateway {gw} to bridge {name}"));
        }
        for key in forwarding_keys(net) {
            if ctx.host.sysctl_get(key).map_err(Error::from_netns(format!("sysctl {key}")))?.trim() != "1" {
                ctx.host.sysctl_set(key, "1").map_err(Error::from_netns(format!("sysctl {key}")))?;
                repairs.push(format!("turned {key} back on for network {:?}", net.name));
            }
        }
        // Joined endpoints' host ends: a re-created bridge has no ports.
        for ep in endpoints.iter().filter(|e| e.sandbox.is_some()) {
            let veth = Self::veth_name(ep);
            let link = match h.link_get(veth.as_str()) {
                Ok(l) => l,
                Err(e) if e.kind() == NsKind::NotFound => continue,
                Err(e) => return Err(Error::from_netns(format!("find veth {veth:?}"))(e)),
            };
            if link.master != Some(br.index) {
                h.link_set_master(link.index, br.index)
                    .map_err(Error::from_netns(format!("attach {veth:?} to {name:?}")))?;
                if o.hairpin {
                    h.link_set_hairpin(link.index, true).map_err(Error::from_netns(format!("hairpin on {veth:?}")))?;
                }
                repairs.push(format!("attached {veth} of endpoint {:?} to bridge {name} again", ep.name));
            }
            if !link.up {
                h.link_set_up(link.index).map_err(Error::from_netns(format!("bring up {veth:?}")))?;
                repairs.push(format!("brought {veth} of endpoint {:?} back up", ep.name));
            }
        }
        Ok(repairs)
    }

    fn remove_leftovers(
        &self,
        ctx: &DriverContext<'_>,
        networks: &[Network],
        endpoints: &[Endpoint],
    ) -> Result<Vec<String>> {
        let h = self.handle(ctx.host)?;
        let nets: BTreeSet<String> = networks.iter().map(|n| n.id.to_string()).collect();
        let joined: BTreeSet<String> =
            endpoints.iter().filter(|e| e.sandbox.is_some()).map(|e| e.id.to_string()).collect();
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        for l in h.link_list().map_err(Error::from_netns("list links"))? {
            let Some(id) = l.alias.as_deref().and_then(|a| a.strip_prefix(MARKER)) else { continue };
            let stale = match l.kind.as_deref() {
                Some("bridge") => !nets.contains(id),
                Some("veth") => !joined.contains(id),
                _ => false,
            };
            if stale {
                match gone_ok(h.link_del(l.index)) {
                    Ok(()) => removed.push(format!("removed leftover {} {}", l.kind.unwrap_or_default(), l.name)),
                    Err(e) => errors.push(Error::from_netns(format!("delete leftover {}", l.name))(e)),
                }
            }
        }
        Error::teardown("remove leftovers", errors)?;
        Ok(removed)
    }
}
