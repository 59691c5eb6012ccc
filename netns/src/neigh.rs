//! Neighbour (ARP/NDP) entries and bridge/VXLAN forwarding-database entries.

use std::net::IpAddr;

use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::RouteType;
use netlink_packet_route::AddressFamily;
use serde::{Deserialize, Serialize};

use crate::addr::family_of;
use crate::mac::MacAddr;

/// State of a neighbour entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NeighState {
    /// Resolution in progress.
    Incomplete,
    /// Confirmed reachable.
    Reachable,
    /// Valid but not recently confirmed.
    Stale,
    /// Waiting before probing.
    Delay,
    /// Probing.
    Probe,
    /// Resolution failed.
    Failed,
    /// No resolution needed (e.g. point-to-point).
    Noarp,
    /// Static: never expires, never re-resolved.
    Permanent,
    /// No state.
    None,
    /// Any other value.
    Other(u16),
}

impl From<&NeighbourState> for NeighState {
    fn from(s: &NeighbourState) -> Self {
        match s {
            NeighbourState::Incomplete => NeighState::Incomplete,
            NeighbourState::Reachable => NeighState::Reachable,
            NeighbourState::Stale => NeighState::Stale,
            NeighbourState::Delay => NeighState::Delay,
            NeighbourState::Probe => NeighState::Probe,
            NeighbourState::Failed => NeighState::Failed,
            NeighbourState::Noarp => NeighState::Noarp,
            NeighbourState::Permanent => NeighState::Permanent,
            NeighbourState::None => NeighState::None,
            other => NeighState::Other(u16::from(*other)),
        }
    }
}

/// A neighbour entry: IP address to MAC address on one interface (what the
/// overlay programs for every remote endpoint, like `ip neigh add … nud permanent`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    /// Interface index.
    pub index: u32,
    /// IP address.
    pub ip: IpAddr,
    /// MAC address (absent for incomplete entries).
    pub mac: Option<MacAddr>,
    /// State; entries added by [`Handle::neigh_add`](crate::Handle::neigh_add) are permanent.
    pub state: NeighState,
}

impl Neighbour {
    /// A permanent entry `ip` → `mac` on interface `index`.
    pub fn permanent(index: u32, ip: IpAddr, mac: MacAddr) -> Neighbour {
        Neighbour { index, ip, mac: Some(mac), state: NeighState::Permanent }
    }

    pub(crate) fn object(&self) -> String {
        match self.mac {
            Some(m) => format!("neighbour {} lladdr {m} dev {}", self.ip, self.index),
            None => format!("neighbour {} dev {}", self.ip, self.index),
        }
    }

    pub(crate) fn to_message(&self) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = family_of(&self.ip);
        m.header.ifindex = self.index;
        m.header.state = NeighbourState::Permanent;
        m.header.kind = RouteType::Unspec;
        m.attributes.push(NeighbourAttribute::Destination(ip_to_neigh(self.ip)));
        if let Some(mac) = self.mac {
            m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        }
        m
    }

    pub(crate) fn from_message(m: &NeighbourMessage) -> Option<Neighbour> {
        let mut ip = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(d) => ip = neigh_to_ip(d),
                NeighbourAttribute::LinkLayerAddress(b) => mac = MacAddr::from_slice(b),
                _ => {}
            }
        }
        Some(Neighbour { index: m.header.ifindex, ip: ip?, mac, state: (&m.header.state).into() })
    }
}

/// A forwarding-database entry: which remote VTEP a MAC address lives behind
/// on a VXLAN device (`bridge fdb append MAC dev vxlan0 dst IP self permanent`),
/// or a bridge port entry when read back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    /// Interface index (the VXLAN device, or a bridge port).
    pub index: u32,
    /// MAC address; `00:00:00:00:00:00` is the VXLAN default destination.
    pub mac: MacAddr,
    /// Remote VTEP address.
    pub dst: Option<IpAddr>,
    /// VXLAN network identifier, when it differs from the device's.
    pub vni: Option<u32>,
    /// Remote UDP port, when it differs from the device's.
    pub port: Option<u16>,
    /// Index of the bridge that owns the entry (entries read from a bridge).
    pub master: Option<u32>,
    /// Permanent (static) rather than learned.
    pub permanent: bool,
}

impl FdbEntry {
    /// A permanent entry `mac` → `dst` on VXLAN device `index`.
    pub fn vxlan(index: u32, mac: MacAddr, dst: IpAddr) -> FdbEntry {
        FdbEntry { index, mac, dst: Some(dst), vni: None, port: None, master: None, permanent: true }
    }

    pub(crate) fn object(&self) -> String {
        match self.dst {
            Some(d) => format!("fdb {} dst {d} dev {}", self.mac, self.index),
            None => format!("fdb {} dev {}", self.mac, self.index),
        }
    }

    pub(crate) fn to_message(&self) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = self.index;
        m.header.state = if self.permanent { NeighbourState::Permanent } else { NeighbourState::Reachable };
        // NTF_SELF: the entry belongs to the device's own table (the VXLAN
        // driver's), not to a bridge it may be enslaved to.
        m.header.flags = NeighbourFlags::Own;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(self.mac.0.to_vec()));
        if let Some(d) = self.dst {
            m.attributes.push(NeighbourAttribute::Destination(ip_to_neigh(d)));
        }
        if let Some(v) = self.vni {
            m.attributes.push(NeighbourAttribute::Vni(v));
        }
        if let Some(p) = self.port {
            m.attributes.push(NeighbourAttribute::Port(p));
        }
        m
    }

    pub(crate) fn from_message(m: &NeighbourMessage) -> Option<FdbEntry> {
        let mut e = FdbEntry {
            index: m.header.ifindex,
            mac: MacAddr::default(),
            dst: None,
            vni: None,
            port: None,
            master: None,
            permanent: m.header.state == NeighbourState::Permanent,
        };
        let mut have_mac = false;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::LinkLayerAddress(b) => {
                    e.mac = MacAddr::from_slice(b)?;
                    have_mac = true;
                }
                NeighbourAttribute::Destination(d) => e.dst = neigh_to_ip(d),
                NeighbourAttribute::Vni(v) => e.vni = Some(*v),
                NeighbourAttribute::Port(p) => e.port = Some(*p),
                NeighbourAttribute::Controller(c) => e.master = Some(*c),
                _ => {}
            }
        }
        have_mac.then_some(e)
    }
}

fn ip_to_neigh(ip: IpAddr) -> NeighbourAddress {
    match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }
}

fn neigh_to_ip(a: &NeighbourAddress) -> Option<IpAddr> {
    match a {
        NeighbourAddress::Inet(x) => Some(IpAddr::V4(*x)),
        NeighbourAddress::Inet6(x) => Some(IpAddr::V6(*x)),
        // In AF_BRIDGE (FDB) messages the destination's family is not the
        // message's, so it arrives as raw bytes: 4 for IPv4, 16 for IPv6.
        NeighbourAddress::Other(b) => match b.len() {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(&b[..]).ok()?)),
            16 => Some(IpAddr::from(<[u8; 16]>::try_from(&b[..]).ok()?)),
            _ => None,
        },
        _ => None,
    }
}
