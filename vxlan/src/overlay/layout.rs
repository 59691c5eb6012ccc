//! The per-host, per-network overlay namespace: one bridge per subnet with
//! the subnet's gateway address, and a VXLAN device on each bridge whose UDP
//! socket is in the host namespace (it is asked for from there, and made
//! directly in the overlay namespace).
//! Overlay subnets therefore never appear in the host's routing table.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use cnm_core::{Error, Network, Result};
use cnm_netns::{AddrFlags, Handle, LinkAdd, MacAddr, NetNs, Rule, VxlanOptions};
use ipnet::IpNet;

/// Bytes VXLAN adds over an IPv4 underlay: outer Ethernet 14 + IPv4 20 +
/// UDP 8 + VXLAN 8.
pub const OVERHEAD_V4: u32 = 50;
/// Over an IPv6 underlay (IPv6 header 40).
pub const OVERHEAD_V6: u32 = 70;

/// Priority of the per-subnet rules (before the main table's 32766).
pub const RULE_PRIORITY: u32 = 100;

/// One subnet of an overlay network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetPlan {
    /// The subnet.
    pub subnet: IpNet,
    /// Its gateway (on the bridge), with the prefix length.
    pub gateway: IpNet,
    /// Its VXLAN id.
    pub vni: u32,
}

impl SubnetPlan {
    /// The bridge's name inside the overlay namespace.
    pub fn bridge(&self) -> String {
        format!("br-{}", self.vni)
    }
    /// The routing table of traffic from this subnet: its VXLAN id above
    /// 2^28, clear of the kernel's tables (253-255) whatever the id.
    pub fn table(&self) -> u32 {
        0x1000_0000 + self.vni
    }
    /// The VXLAN device's name (also while it is briefly in the host
    /// namespace; VXLAN ids are unique in the cluster, so are these).
    pub fn vxlan(&self) -> String {
        format!("vx-{}", self.vni)
    }
}

/// The subnets of `net` with their VXLAN ids, in pool order.
pub fn plan(net: &Network) -> Result<Vec<SubnetPlan>> {
    let vnis = vni_list(net)?;
    if vnis.len() != net.pools.len() {
        return Err(Error::Internal(format!(
            "overlay network {:?} has {} subnets but {} VXLAN ids",
            net.name,
            net.pools.len(),
            vnis.len()
        )));
    }
    net.pools
        .iter()
        .zip(vnis)
        .map(|(p, vni)| {
            let gateway = p.gateway.ok_or_else(|| Error::Internal(format!("subnet {} has no gateway", p.subnet)))?;
            Ok(SubnetPlan { subnet: p.subnet, gateway, vni })
        })
        .collect()
}

/// The VXLAN ids recorded on a network, in pool order.
pub fn vni_list(net: &Network) -> Result<Vec<u32>> {
    let Some(list) = net.driver_options.get(super::VXLANID_LIST) else { return Ok(Vec::new()) };
    list.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.trim().parse().map_err(|_| Error::invalid(super::VXLANID_LIST, format!("{s:?} is not a VXLAN id"))))
        .collect()
}

/// The MAC of a host's bridge for one subnet: derived from the host's VTEP
/// address and the VXLAN id, so every other host can compute it. Traffic
/// between subnets crosses the wire on the sender's subnet's VXLAN id to
/// this MAC and is routed on the receiving host.
pub fn bridge_mac(vtep: IpAddr, vni: u32) -> MacAddr {
    // FNV-1a over the address and the id.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let addr = match vtep {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    for b in addr.iter().chain(vni.to_be_bytes().iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // 06: locally administered unicast, and never Docker's 02:42.
    MacAddr([0x06, b[0], b[1], b[2], b[3], b[4]])
}

/// Where a network's overlay namespace is bound.
pub fn netns_name(net_id: &str) -> String {
    format!("ov-{}", &net_id[..12.min(net_id.len())])
}

/// An open overlay namespace.
pub struct OverlayNs {
    /// The namespace.
    pub ns: NetNs,
    /// A netlink handle inside it.
    pub handle: Handle,
}

/// Opens the overlay namespace of `net_id` if this host has one.
pub fn open(dir: &Path, net_id: &str) -> Result<Option<OverlayNs>> {
    let path = dir.join(netns_name(net_id));
    if !path.exists() {
        return Ok(None);
    }
    match NetNs::open(&path) {
        Ok(ns) => {
            let handle = Handle::open(&ns).map_err(Error::from_netns("open overlay namespace"))?;
            Ok(Some(OverlayNs { ns, handle }))
        }
        // A stale file without a mount behind it (a crash mid-creation).
        Err(_) => Ok(None),
    }
}

/// What creating an overlay namespace needs.
pub struct Build<'a> {
    /// A handle in the host namespace (where the VXLAN sockets live).
    pub host_handle: &'a Handle,
    /// Directory of named overlay namespaces.
    pub dir: &'a Path,
    /// This host's VTEP address.
    pub vtep: IpAddr,
    /// VXLAN UDP port.
    pub port: u16,
    /// MTU of bridges, VXLAN devices and veths.
    pub mtu: u32,
}

/// Creates the overlay namespace of `net` with a bridge and a VXLAN device
/// per subnet. All or nothing: on failure nothing is left.
pub fn create(b: &Build<'_>, net: &Network, subnets: &[SubnetPlan]) -> Result<OverlayNs> {
    let name = netns_name(net.id.as_str());
    let ns =
        NetNs::create_named(b.dir, &name).map_err(Error::from_netns(format!("create overlay namespace {name}")))?;
    let built = (|| -> Result<Handle> {
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            // Replies between subnets come back on another bridge than the
            // one the host routes to them through.
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            ns.sysctl_set(key, value).map_err(Error::from_netns(format!("sysctl {key} in {name}")))?;
        }
        // No firewall works inside the overlay namespace, so bridged frames
        // need not climb into the IP hooks (on by default in every new
        // namespace): a quarter of the throughput otherwise.
        for key in [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ] {
            match ns.sysctl_set(key, "0") {
                // A kernel without bridge netfilter has no such switch.
                Err(e) if e.kind() == cnm_netns::ErrorKind::NotFound => {}
                other => other.map_err(Error::from_netns(format!("sysctl {key} in {name}")))?,
            }
        }
        ns.loopback_up().map_err(Error::from_netns("loopback up"))?;
        let h = Handle::open(&ns).map_err(Error::from_netns("open overlay namespace"))?;
        for s in subnets {
            let br = h
                .link_add(&LinkAdd::bridge(s.bridge()).mac(bridge_mac(b.vtep, s.vni)).mtu(b.mtu).up())
                .map_err(Error::from_netns(format!("create bridge {} in {name}", s.bridge())))?;
            let flags = if s.gateway.addr().is_ipv6() { AddrFlags::NODAD } else { AddrFlags::empty() };
            h.addr_add(br.index, s.gateway, flags).map_err(Error::from_netns(format!("add gateway {}", s.gateway)))?;
            let opts = VxlanOptions {
                vni: s.vni,
                port: b.port,
                local: Some(b.vtep),
                learning: false,
                proxy: true,
                // RFC 7348 §5: zero over IPv4 (the inner frame has its own).
                udp_csum: false,
                ..Default::default()
            };
            // Asked from the host namespace, made in the overlay's: the
            // device lives in the overlay namespace, its UDP socket in the
            // host's. One request, attached and up.
            b.host_handle
                .link_add(&LinkAdd::vxlan(s.vxlan(), opts).mtu(b.mtu).netns(&ns).master(br.index).up())
                .map_err(Error::from_netns(format!("create VXLAN device {} (id {})", s.vxlan(), s.vni)))?;
            // What comes from this subnet is looked up in its own table
            // first: there, remote endpoints of the other subnets are
            // reached through this subnet's bridge (see `program`).
            h.rule_add(&Rule::from_source(s.subnet, s.table(), RULE_PRIORITY))
                .map_err(Error::from_netns(format!("rule for {}", s.subnet)))?;
        }
        Ok(h)
    })();
    match built {
        Ok(handle) => Ok(OverlayNs { ns, handle }),
        Err(e) => {
            let _ = destroy(&ns, b.dir, net.id.as_str(), subnets);
            Err(e)
        }
    }
}

/// Removes an overlay namespace: its VXLAN devices first (so their ids are
/// free at once, not when the kernel gets round to the namespace), then the
/// namespace.
pub fn destroy(ns: &NetNs, dir: &Path, net_id: &str, subnets: &[SubnetPlan]) -> Result<()> {
    let mut errors = Vec::new();
    if let Ok(h) = Handle::open(ns) {
        for s in subnets {
            match h.link_del(s.vxlan().as_str()) {
                Err(e) if e.kind() != cnm_netns::ErrorKind::NotFound => {
                    errors.push(Error::from_netns(format!("delete {}", s.vxlan()))(e))
                }
                _ => {}
            }
        }
    }
    if let Err(e) = NetNs::remove_named(dir, &netns_name(net_id)) {
        errors.push(Error::from_netns("remove overlay namespace")(e));
    }
    Error::teardown(format!("remove overlay namespace of network {net_id}"), errors)
}

/// A lock serialising everything that creates, fills or removes one
/// network's overlay namespace on this host, across processes.
pub struct NetLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

/// Takes the lock of `net_id` (waiting for it).
pub fn lock(dir: &Path, net_id: &str) -> Result<NetLock> {
    cnm_core::files::create_dir(dir).map_err(|e| Error::store("create", dir.display().to_string(), e))?;
    let path: PathBuf = dir.join(format!(".{}.lock", netns_name(net_id)));
    let f = cnm_core::files::open_lock(&path).map_err(|e| Error::store("open", path.display().to_string(), e))?;
    let file = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::store("lock", path.display().to_string(), e))?;
    Ok(NetLock { _file: file })
}

/// The underlay MTU: that of the host link holding `vtep`.
pub fn underlay_mtu(h: &Handle, vtep: IpAddr) -> Result<u32> {
    let addrs = h.addr_list(None, None).map_err(Error::from_netns("list host addresses"))?;
    let a = addrs.iter().find(|a| a.address.addr() == vtep).ok_or_else(|| {
        Error::invalid("overlay VTEP address", format!("{vtep} is not an address of the host namespace"))
    })?;
    Ok(h.link_get(a.index).map_err(Error::from_netns("find the underlay link"))?.mtu)
}
