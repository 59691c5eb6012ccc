//! Programming remote peers into an overlay namespace, from the store's
//! records, by difference: what the records say against what the kernel
//! has. Idempotent, so the agent can run it after every change, after a
//! restart and after losing the store for a while.
//!
//! For a remote endpoint P in subnet S on host H:
//! - on S's VXLAN device: neighbour P.ip → P.mac (the device answers ARP
//!   itself: proxy, no flooding), and FDB P.mac → H's VTEP (no learning);
//! - for every other subnet T of the network on this host: in T's table
//!   (consulted first for traffic from T, see `layout`), a host route to P
//!   via T's bridge; neighbour P.ip → H's bridge MAC for T on that bridge;
//!   and FDB of that MAC → H's VTEP on T's VXLAN device. A packet from T to
//!   P therefore crosses the wire on T's id (the sender's subnet's) and is
//!   routed on H, as Docker's capture shows. On H, P is local and in no
//!   table but the main one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use cnm_core::{Error, Result};
use cnm_netns::{FdbEntry, Handle, MacAddr, NeighState, Neighbour, Route};
use ipnet::IpNet;

use super::layout::{bridge_mac, SubnetPlan};
use super::records::PeerRecord;

/// A subnet's devices in an overlay namespace.
#[derive(Debug, Clone)]
pub struct Devices {
    /// The subnet.
    pub plan: SubnetPlan,
    /// Its bridge's index.
    pub bridge: u32,
    /// Its VXLAN device's index.
    pub vxlan: u32,
}

/// Finds each subnet's bridge and VXLAN device.
pub fn devices(h: &Handle, plan: &[SubnetPlan]) -> Result<Vec<Devices>> {
    let links = h.link_list().map_err(Error::from_netns("list overlay links"))?;
    let find = |name: String| {
        links
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.index)
            .ok_or_else(|| Error::Internal(format!("overlay namespace lacks {name}")))
    };
    plan.iter().map(|p| Ok(Devices { plan: p.clone(), bridge: find(p.bridge())?, vxlan: find(p.vxlan())? })).collect()
}

/// What a sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Entries added or corrected.
    pub added: usize,
    /// Entries removed.
    pub removed: usize,
    /// Remote IPv4 endpoints newly reachable on a subnet's bridge, to be
    /// announced there (see `garp`).
    pub(crate) announce: Vec<super::garp::Announce>,
}

fn host_prefix(ip: IpAddr) -> IpNet {
    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full-length prefix")
}

/// Makes the kernel hold exactly the entries for `peers` that are not on
/// host `me`.
pub fn sync(h: &Handle, devs: &[Devices], me: &str, peers: &[PeerRecord]) -> Result<SyncReport> {
    // Desired state.
    let mut neigh: BTreeMap<(u32, IpAddr), MacAddr> = BTreeMap::new();
    let mut fdb: BTreeSet<(u32, MacAddr, IpAddr)> = BTreeSet::new();
    let mut routes: BTreeSet<(IpNet, u32, u32)> = BTreeSet::new();
    for p in peers.iter().filter(|p| p.host != me) {
        let Some(home) = devs.iter().find(|d| d.plan.subnet.contains(&p.ip.addr())) else { continue };
        neigh.insert((home.vxlan, p.ip.addr()), p.mac);
        fdb.insert((home.vxlan, p.mac, p.vtep));
        for t in
            devs.iter().filter(|d| d.vxlan != home.vxlan && d.plan.subnet.addr().is_ipv4() == p.ip.addr().is_ipv4())
        {
            let mac = bridge_mac(p.vtep, t.plan.vni);
            routes.insert((host_prefix(p.ip.addr()), t.bridge, t.plan.table()));
            neigh.insert((t.bridge, p.ip.addr()), mac);
            fdb.insert((t.vxlan, mac, p.vtep));
        }
    }

    let ours: BTreeSet<u32> = devs.iter().flat_map(|d| [d.bridge, d.vxlan]).collect();
    let vxlans: BTreeSet<u32> = devs.iter().map(|d| d.vxlan).collect();
    let tables: BTreeSet<u32> = devs.iter().map(|d| d.plan.table()).collect();
    let mut report = SyncReport::default();
    let mut errors = Vec::new();

    // Neighbours.
    let have = h.neigh_list(None).map_err(Error::from_netns("list overlay neighbours"))?;
    let have: BTreeMap<(u32, IpAddr), Option<MacAddr>> = have
        .into_iter()
        .filter(|n| ours.contains(&n.index) && n.state == NeighState::Permanent)
        .map(|n| ((n.index, n.ip), n.mac))
        .collect();
    for ((index, ip), mac) in &neigh {
        if have.get(&(*index, *ip)) != Some(&Some(*mac)) {
            match h.neigh_replace(&Neighbour::permanent(*index, *ip, *mac)) {
                Ok(()) => {
                    report.added += 1;
                    // Entries on a VXLAN device are endpoints of its subnet,
                    // which local containers resolve with ARP.
                    if let (Some(d), IpAddr::V4(v4)) = (devs.iter().find(|d| d.vxlan == *index), ip) {
                        report.announce.push(super::garp::Announce { bridge: d.bridge, ip: *v4, mac: *mac });
                    }
                }
                Err(e) => errors.push(Error::from_netns("add neighbour")(e)),
            }
        }
    }
    for (index, ip) in have.keys().filter(|k| !neigh.contains_key(k)) {
        match h.neigh_del(*index, *ip) {
            Ok(()) => report.removed += 1,
            Err(e) if e.kind() == cnm_netns::ErrorKind::NotFound => {}
            Err(e) => errors.push(Error::from_netns("delete neighbour")(e)),
        }
    }

    // Forwarding entries on the VXLAN devices.
    let have: BTreeSet<(u32, MacAddr, IpAddr)> = h
        .fdb_list(None)
        .map_err(Error::from_netns("list overlay FDB"))?
        .into_iter()
        .filter(|e| vxlans.contains(&e.index) && e.master.is_none())
        .filter_map(|e| Some((e.index, e.mac, e.dst?)))
        .filter(|(_, mac, _)| mac.0 != [0; 6])
        .collect();
    for (index, mac, dst) in fdb.difference(&have) {
        match h.fdb_append(&FdbEntry::vxlan(*index, *mac, *dst)) {
            Ok(()) => report.added += 1,
            Err(e) => errors.push(Error::from_netns("add FDB entry")(e)),
        }
    }
    for (index, mac, dst) in have.difference(&fdb) {
        match h.fdb_del(&FdbEntry::vxlan(*index, *mac, *dst)) {
            Ok(()) => report.removed += 1,
            Err(e) if e.kind() == cnm_netns::ErrorKind::NotFound => {}
            Err(e) => errors.push(Error::from_netns("delete FDB entry")(e)),
        }
    }

    // Host routes between subnets.
    let have: BTreeSet<(IpNet, u32, u32)> = h
        .route_list(None)
        .map_err(Error::from_netns("list overlay routes"))?
        .into_iter()
        .filter(|r| tables.contains(&r.table) && r.gateway.is_none())
        .filter_map(|r| Some((r.dst, r.oif?, r.table)))
        .collect();
    let route = |dst: IpNet, oif: u32, table: u32| Route { table, ..Route::device(dst, oif) };
    for (dst, oif, table) in routes.difference(&have) {
        match h.route_replace(&route(*dst, *oif, *table)) {
            Ok(()) => report.added += 1,
            Err(e) => errors.push(Error::from_netns("add host route")(e)),
        }
    }
    for (dst, oif, table) in have.difference(&routes) {
        match h.route_del(&route(*dst, *oif, *table)) {
            Ok(()) => report.removed += 1,
            Err(e) if e.kind() == cnm_netns::ErrorKind::NotFound => {}
            Err(e) => errors.push(Error::from_netns("delete host route")(e)),
        }
    }
    Error::teardown("program overlay peers", errors)?;
    Ok(report)
}
