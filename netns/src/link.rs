//! Link types: what to create (bridge, veth, vxlan) and what is read back.
//! Conversion to and from netlink-packet-route stays private to this crate.

use std::fmt;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_route::link::{
    BridgeStpState, InfoBridge, InfoData, InfoKind, InfoMacVlan, InfoVeth, InfoVlan, InfoVxlan, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ifname::validate_ifname;
use crate::mac::MacAddr;
use crate::ns::NetNs;

/// Names a link either by index or by name. The kernel accepts both in a
/// request, so naming by name costs no extra lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRef<'a> {
    /// Interface index.
    Index(u32),
    /// Interface name.
    Name(&'a str),
}

impl From<u32> for LinkRef<'_> {
    fn from(i: u32) -> Self {
        LinkRef::Index(i)
    }
}

impl<'a> From<&'a str> for LinkRef<'a> {
    fn from(n: &'a str) -> Self {
        LinkRef::Name(n)
    }
}

impl<'a> From<&'a String> for LinkRef<'a> {
    fn from(n: &'a String) -> Self {
        LinkRef::Name(n)
    }
}

impl fmt::Display for LinkRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkRef::Index(i) => write!(f, "link index {i}"),
            LinkRef::Name(n) => write!(f, "link {n:?}"),
        }
    }
}

impl LinkRef<'_> {
    pub(crate) fn validate(&self, op: &'static str) -> Result<()> {
        match self {
            LinkRef::Name(n) => validate_ifname(op, n),
            LinkRef::Index(_) => Ok(()),
        }
    }

    /// A request message addressed to this link.
    pub(crate) fn message(&self) -> LinkMessage {
        let mut m = LinkMessage::default();
        match self {
            LinkRef::Index(i) => m.header.index = *i,
            LinkRef::Name(n) => m.attributes.push(LinkAttribute::IfName(n.to_string())),
        }
        m
    }
}

/// Options of a Linux bridge. `None` leaves the kernel's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeOptions {
    /// Spanning tree protocol on or off (kernel default: off).
    pub stp: Option<bool>,
    /// VLAN filtering (kernel default: off).
    pub vlan_filtering: Option<bool>,
    /// Multicast snooping (kernel default: on).
    pub multicast_snooping: Option<bool>,
    /// FDB ageing time in centiseconds.
    pub ageing_time: Option<u32>,
}

/// The peer end of a veth pair.
#[derive(Debug, Clone)]
pub struct VethPeer<'a> {
    /// Name of the peer interface.
    pub name: String,
    /// Namespace the peer is created in (default: the handle's own), so no
    /// separate move step is needed.
    pub netns: Option<&'a NetNs>,
    /// MAC address of the peer.
    pub mac: Option<MacAddr>,
    /// MTU of the peer (default: the same as the first end's).
    pub mtu: Option<u32>,
}

impl<'a> VethPeer<'a> {
    /// A peer named `name`, in the handle's namespace. It is created down:
    /// the kernel cannot open one end of a pair before the other exists
    /// (`ENOTCONN`), so the peer is brought up from its own namespace.
    pub fn new(name: impl Into<String>) -> Self {
        VethPeer { name: name.into(), netns: None, mac: None, mtu: None }
    }
    /// Creates the peer directly inside `ns`.
    pub fn netns(mut self, ns: &'a NetNs) -> Self {
        self.netns = Some(ns);
        self
    }
    /// Sets the peer's MAC address.
    pub fn mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }
    /// Sets the peer's MTU.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
}

/// Options of a VXLAN device (RFC 7348).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VxlanOptions {
    /// The 24-bit VXLAN network identifier.
    pub vni: u32,
    /// Destination UDP port (IANA: 4789).
    pub port: u16,
    /// Source address of encapsulated packets.
    pub local: Option<IpAddr>,
    /// Multicast group or unicast remote; `None` for FDB-driven overlays.
    pub remote: Option<IpAddr>,
    /// Index of the underlay link to bind to.
    pub link: Option<u32>,
    /// Learn remote MACs from received packets (kernel default: on).
    pub learning: bool,
    /// ARP/ND proxy: answer neighbour requests from the neighbour table.
    pub proxy: bool,
    /// Notify user space of L2 (FDB) misses.
    pub l2miss: bool,
    /// Notify user space of L3 (neighbour) misses.
    pub l3miss: bool,
    /// Outer TTL (default: 64 via the kernel's inheritance rules).
    pub ttl: Option<u8>,
    /// Compute the outer UDP checksum over an IPv4 underlay (kernel
    /// default: on). RFC 7348 says it SHOULD be zero over IPv4; over IPv6 it
    /// is always computed.
    pub udp_csum: bool,
}

impl Default for VxlanOptions {
    fn default() -> Self {
        VxlanOptions {
            vni: 0,
            port: 4789,
            local: None,
            remote: None,
            link: None,
            learning: true,
            proxy: false,
            l2miss: false,
            l3miss: false,
            ttl: None,
            udp_csum: true,
        }
    }
}

impl VxlanOptions {
    /// Options for `vni` on port 4789 with the kernel's defaults otherwise.
    pub fn new(vni: u32) -> Self {
        VxlanOptions { vni, ..Default::default() }
    }
}

/// What kind of link to create.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LinkKind<'a> {
    /// A Linux bridge.
    Bridge(BridgeOptions),
    /// A veth pair; the value describes the peer.
    Veth(VethPeer<'a>),
    /// A VXLAN device.
    Vxlan(VxlanOptions),
    /// A macvlan device on the link with index `parent` (in the handle's
    /// namespace, also when the device is created in another one).
    Macvlan {
        /// The parent (lower) device's index.
        parent: u32,
        /// How its siblings on the same parent reach each other.
        mode: MacvlanMode,
    },
    /// An 802.1Q VLAN sub-interface of the link with index `parent` (needs
    /// the kernel's 8021q support; without it the kernel answers "not
    /// supported").
    Vlan {
        /// The parent device's index.
        parent: u32,
        /// The VLAN id (1 to 4094).
        id: u16,
    },
}

/// A macvlan device's mode (`ip link add … type macvlan mode MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MacvlanMode {
    /// Siblings do not reach each other; only the parent's network.
    Private,
    /// Everything goes out through the parent (a VEPA switch may send it
    /// back).
    Vepa,
    /// Siblings reach each other directly, inside the kernel.
    Bridge,
    /// The only device on the parent, taking over the parent's MAC.
    Passthru,
}

impl std::str::FromStr for MacvlanMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "private" => Ok(MacvlanMode::Private),
            "vepa" => Ok(MacvlanMode::Vepa),
            "bridge" => Ok(MacvlanMode::Bridge),
            "passthru" => Ok(MacvlanMode::Passthru),
            _ => Err(format!("{s:?} is not bridge, private, vepa or passthru")),
        }
    }
}

impl std::fmt::Display for MacvlanMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MacvlanMode::Private => "private",
            MacvlanMode::Vepa => "vepa",
            MacvlanMode::Bridge => "bridge",
            MacvlanMode::Passthru => "passthru",
        })
    }
}

impl LinkKind<'_> {
    fn label(&self) -> &'static str {
        match self {
            LinkKind::Bridge(_) => "bridge",
            LinkKind::Veth(_) => "veth",
            LinkKind::Vxlan(_) => "vxlan",
            LinkKind::Macvlan { .. } => "macvlan",
            LinkKind::Vlan { .. } => "vlan",
        }
    }
}

/// A link to create with [`Handle::link_add`](crate::Handle::link_add).
#[derive(Debug, Clone)]
pub struct LinkAdd<'a> {
    /// Interface name.
    pub name: String,
    /// Kind and kind-specific options.
    pub kind: LinkKind<'a>,
    /// MTU.
    pub mtu: Option<u32>,
    /// MAC address.
    pub mac: Option<MacAddr>,
    /// Index of the bridge to enslave the new link to, in the same request.
    pub master: Option<u32>,
    /// Link group, so that many links can later be deleted in one request.
    pub group: Option<u32>,
    /// Bring the link up as it is created.
    pub up: bool,
    /// Interface alias (`ip link set alias`), e.g. a marker saying who owns
    /// it. The kernel ignores an alias in a create request, so it is set by a
    /// second request right after.
    pub alias: Option<String>,
    /// No IPv6 link-local address (`addrgenmode none`), for links that never
    /// carry IP traffic of their own, such as bridge ports: each such
    /// address adds routes that the kernel walks on every link change in the
    /// namespace, and duplicate-address detection work that takes the RTNL
    /// lock. Set by the same second request as the alias, before the link
    /// can have a carrier.
    pub addrgenmode_none: bool,
    /// Hairpin mode on the new bridge port (needs `master`); set by the
    /// same second request.
    pub hairpin: bool,
    /// Create the link directly in this namespace (`ip link add … netns
    /// NS`) rather than in the handle's. `master` is then an index there.
    /// The request still comes from the handle's namespace, and a VXLAN
    /// device keeps its UDP socket there: this is how an overlay puts its
    /// device in a namespace of its own without moving it (a move costs
    /// the kernel an RCU grace period, 10-50 ms here). Alias, hairpin and
    /// addrgenmode cannot be combined with it.
    pub netns: Option<&'a NetNs>,
}

impl<'a> LinkAdd<'a> {
    fn new(name: impl Into<String>, kind: LinkKind<'a>) -> Self {
        LinkAdd {
            name: name.into(),
            kind,
            mtu: None,
            mac: None,
            master: None,
            group: None,
            up: false,
            alias: None,
            addrgenmode_none: false,
            hairpin: false,
            netns: None,
        }
    }
    /// A bridge with the kernel's default options.
    pub fn bridge(name: impl Into<String>) -> Self {
        Self::new(name, LinkKind::Bridge(BridgeOptions::default()))
    }
    /// A bridge with options.
    pub fn bridge_with(name: impl Into<String>, opts: BridgeOptions) -> Self {
        Self::new(name, LinkKind::Bridge(opts))
    }
    /// A veth pair whose other end is `peer`.
    pub fn veth(name: impl Into<String>, peer: VethPeer<'a>) -> Self {
        Self::new(name, LinkKind::Veth(peer))
    }
    /// A VXLAN device.
    pub fn vxlan(name: impl Into<String>, opts: VxlanOptions) -> Self {
        Self::new(name, LinkKind::Vxlan(opts))
    }
    /// A macvlan device on `parent` (an index in the handle's namespace).
    pub fn macvlan(name: impl Into<String>, parent: u32, mode: MacvlanMode) -> Self {
        Self::new(name, LinkKind::Macvlan { parent, mode })
    }
    /// An 802.1Q sub-interface of `parent` for VLAN `id`.
    pub fn vlan(name: impl Into<String>, parent: u32, id: u16) -> Self {
        Self::new(name, LinkKind::Vlan { parent, id })
    }
    /// Sets the MTU.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
    /// Sets the MAC address.
    pub fn mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }
    /// Enslaves the link to the bridge with this index as it is created.
    pub fn master(mut self, index: u32) -> Self {
        self.master = Some(index);
        self
    }
    /// Puts the link into a link group.
    pub fn group(mut self, group: u32) -> Self {
        self.group = Some(group);
        self
    }
    /// Brings the link up as it is created.
    pub fn up(mut self) -> Self {
        self.up = true;
        self
    }
    /// Sets the interface alias.
    pub fn alias(mut self, alias: impl Into<String>) -> Self {
        self.alias = Some(alias.into());
        self
    }
    /// Turns hairpin mode on for the new bridge port (see
    /// [`Handle::link_set_hairpin`](crate::Handle::link_set_hairpin)).
    pub fn hairpin(mut self) -> Self {
        self.hairpin = true;
        self
    }
    /// Creates the link in `ns` instead of the handle's namespace.
    pub fn netns(mut self, ns: &'a NetNs) -> Self {
        self.netns = Some(ns);
        self
    }
    /// Gives the link no IPv6 link-local address (`addrgenmode none`).
    pub fn addrgenmode_none(mut self) -> Self {
        self.addrgenmode_none = true;
        self
    }

    /// `veth "name"`, for error messages.
    pub(crate) fn object(&self) -> String {
        format!("{} {:?}", self.kind.label(), self.name)
    }

    /// Checks everything that can be checked without the kernel.
    pub(crate) fn validate(&self) -> Result<()> {
        use crate::error::Error;
        validate_ifname("link_add", &self.name)?;
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(Error::invalid("link_add", self.object(), format!("MTU {mtu} outside 68..=65535")));
            }
        }
        if let Some(mac) = self.mac {
            if mac.is_multicast() || mac.0 == [0; 6] {
                return Err(Error::invalid("link_add", self.object(), format!("MAC {mac} is not a unicast address")));
            }
        }
        if self.hairpin && self.master.is_none() {
            return Err(Error::invalid("link_add", self.object(), "hairpin mode needs a master bridge"));
        }
        if self.netns.is_some() && (self.alias.is_some() || self.hairpin || self.addrgenmode_none) {
            return Err(Error::invalid(
                "link_add",
                self.object(),
                "alias, hairpin and addrgenmode cannot be set on a link created in another namespace",
            ));
        }
        if self.alias.as_ref().is_some_and(|a| a.len() > 255) {
            return Err(Error::invalid("link_add", self.object(), "an alias has at most 255 bytes"));
        }
        match &self.kind {
            LinkKind::Veth(peer) => {
                validate_ifname("link_add", &peer.name)?;
                if peer.netns.is_none() && peer.name == self.name {
                    return Err(Error::invalid(
                        "link_add",
                        self.object(),
                        "veth peer has the same name in the same namespace",
                    ));
                }
            }
            LinkKind::Vxlan(v) => {
                if v.vni >= 1 << 24 {
                    return Err(Error::invalid(
                        "link_add",
                        self.object(),
                        format!("VNI {} does not fit in 24 bits", v.vni),
                    ));
                }
                if v.port == 0 {
                    return Err(Error::invalid("link_add", self.object(), "VXLAN port 0"));
                }
                if let (Some(l), Some(r)) = (v.local, v.remote) {
                    if l.is_ipv4() != r.is_ipv4() {
                        return Err(Error::invalid(
                            "link_add",
                            self.object(),
                            "local and remote of different address families",
                        ));
                    }
                }
            }
            LinkKind::Vlan { id, .. } if !(1..=4094).contains(id) => {
                return Err(Error::invalid("link_add", self.object(), format!("VLAN id {id} is not 1 to 4094")));
            }
            LinkKind::Bridge(_) | LinkKind::Macvlan { .. } | LinkKind::Vlan { .. } => {}
        }
        Ok(())
    }

    /// The `RTM_NEWLINK` body.
    pub(crate) fn to_message(&self) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(self.name.clone()));
        if let Some(mtu) = self.mtu {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = self.mac {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(master) = self.master {
            m.attributes.push(LinkAttribute::Controller(master));
        }
        if let Some(group) = self.group {
            m.attributes.push(LinkAttribute::Group(group));
        }
        if let Some(ns) = self.netns {
            m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        if self.up {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        }
        let (kind, data) = match &self.kind {
            LinkKind::Bridge(o) => (InfoKind::Bridge, bridge_data(o)),
            LinkKind::Veth(p) => (InfoKind::Veth, Some(InfoData::Veth(InfoVeth::Peer(peer_message(p))))),
            LinkKind::Vxlan(v) => (InfoKind::Vxlan, Some(InfoData::Vxlan(vxlan_data(v)))),
            LinkKind::Macvlan { parent, mode } => {
                m.attributes.push(LinkAttribute::Link(*parent));
                let mode = match mode {
                    MacvlanMode::Private => MacVlanMode::Private,
                    MacvlanMode::Vepa => MacVlanMode::Vepa,
                    MacvlanMode::Bridge => MacVlanMode::Bridge,
                    MacvlanMode::Passthru => MacVlanMode::Passthrough,
                };
                (InfoKind::MacVlan, Some(InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)])))
            }
            LinkKind::Vlan { parent, id } => {
                m.attributes.push(LinkAttribute::Link(*parent));
                (InfoKind::Vlan, Some(InfoData::Vlan(vec![InfoVlan::Id(*id)])))
            }
        };
        let mut info = vec![LinkInfo::Kind(kind)];
        info.extend(data.map(LinkInfo::Data));
        m.attributes.push(LinkAttribute::LinkInfo(info));
        m
    }
}

fn bridge_data(o: &BridgeOptions) -> Option<InfoData> {
    let mut d = Vec::new();
    if let Some(stp) = o.stp {
        d.push(InfoBridge::StpState(if stp { BridgeStpState::KernelStp } else { BridgeStpState::Disabled }));
    }
    if let Some(v) = o.vlan_filtering {
        d.push(InfoBridge::VlanFiltering(v));
    }
    if let Some(v) = o.multicast_snooping {
        d.push(InfoBridge::MulticastSnooping(v));
    }
    if let Some(v) = o.ageing_time {
        d.push(InfoBridge::AgeingTime(v));
    }
    (!d.is_empty()).then_some(InfoData::Bridge(d))
}

fn peer_message(p: &VethPeer<'_>) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(p.name.clone()));
    if let Some(ns) = p.netns {
        m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
    }
    if let Some(mac) = p.mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    if let Some(mtu) = p.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    m
}

fn vxlan_data(v: &VxlanOptions) -> Vec<InfoVxlan> {
    let mut d = vec![InfoVxlan::Id(v.vni), InfoVxlan::Port(v.port)];
    match v.local {
        Some(IpAddr::V4(a)) => d.push(InfoVxlan::Local(a)),
        Some(IpAddr::V6(a)) => d.push(InfoVxlan::Local6(a)),
        None => {}
    }
    match v.remote {
        Some(IpAddr::V4(a)) => d.push(InfoVxlan::Group(a)),
        Some(IpAddr::V6(a)) => d.push(InfoVxlan::Group6(a)),
        None => {}
    }
    if let Some(link) = v.link {
        d.push(InfoVxlan::Link(link));
    }
    if let Some(ttl) = v.ttl {
        d.push(InfoVxlan::Ttl(ttl));
    }
    d.push(InfoVxlan::Learning(v.learning));
    d.push(InfoVxlan::Proxy(v.proxy));
    d.push(InfoVxlan::L2Miss(v.l2miss));
    d.push(InfoVxlan::L3Miss(v.l3miss));
    d.push(InfoVxlan::UDPCsum(v.udp_csum));
    d
}

/// VXLAN settings read back from the kernel.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanInfo {
    /// VXLAN network identifier.
    pub vni: u32,
    /// Destination UDP port.
    pub port: u16,
    /// Local (source) address.
    pub local: Option<IpAddr>,
    /// Multicast group or unicast remote.
    pub remote: Option<IpAddr>,
    /// Underlay link index.
    pub link: Option<u32>,
    /// Source-MAC learning.
    pub learning: bool,
    /// ARP/ND proxy.
    pub proxy: bool,
    /// L2-miss notifications.
    pub l2miss: bool,
    /// L3-miss notifications.
    pub l3miss: bool,
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Kind (`bridge`, `veth`, `vxlan` …), `None` for devices without one (loopback, physical).
    pub kind: Option<String>,
    /// MTU.
    pub mtu: u32,
    /// MAC address, for Ethernet-like links.
    pub mac: Option<MacAddr>,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Carrier present (`IFF_LOWER_UP`).
    pub lower_up: bool,
    /// Index of the bridge (or other master) it is enslaved to.
    pub master: Option<u32>,
    /// Link group.
    pub group: u32,
    /// For a veth: the peer's index (in the peer's namespace); for a
    /// macvlan: its parent's (`IFLA_LINK`).
    pub peer_index: Option<u32>,
    /// Kernel-assigned id of the namespace the peer lives in, when different.
    pub link_netnsid: Option<i32>,
    /// VXLAN settings, for a vxlan link.
    pub vxlan: Option<VxlanInfo>,
    /// Interface alias.
    pub alias: Option<String>,
}

impl Link {
    /// Decodes an `RTM_NEWLINK` message.
    pub(crate) fn from_message(m: &LinkMessage) -> Link {
        let mut l = Link {
            index: m.header.index,
            up: m.header.flags.contains(LinkFlags::Up),
            lower_up: m.header.flags.contains(LinkFlags::LowerUp),
            ..Default::default()
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => l.name = n.clone(),
                LinkAttribute::Mtu(v) => l.mtu = *v,
                LinkAttribute::Address(b) => l.mac = MacAddr::from_slice(b),
                LinkAttribute::Controller(v) => l.master = Some(*v),
                LinkAttribute::Group(v) => l.group = *v,
                LinkAttribute::Link(v) => l.peer_index = Some(*v),
                LinkAttribute::LinkNetNsId(v) => l.link_netnsid = Some(*v),
                LinkAttribute::IfAlias(a) => l.alias = Some(a.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => l.kind = Some(kind_name(k)),
                            LinkInfo::Data(InfoData::Vxlan(v)) => l.vxlan = Some(vxlan_info(v)),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        l
    }
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Bridge => "bridge".into(),
        InfoKind::Veth => "veth".into(),
        InfoKind::Vxlan => "vxlan".into(),
        InfoKind::MacVlan => "macvlan".into(),
        InfoKind::Other(s) => s.clone(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn vxlan_info(v: &[InfoVxlan]) -> VxlanInfo {
    let mut i = VxlanInfo::default();
    for a in v {
        match a {
            InfoVxlan::Id(x) => i.vni = *x,
            InfoVxlan::Port(x) => i.port = *x,
            InfoVxlan::Local(x) => i.local = Some(IpAddr::V4(*x)),
            InfoVxlan::Local6(x) => i.local = Some(IpAddr::V6(*x)),
            InfoVxlan::Group(x) if !x.is_unspecified() => i.remote = Some(IpAddr::V4(*x)),
            InfoVxlan::Group6(x) if !x.is_unspecified() => i.remote = Some(IpAddr::V6(*x)),
            InfoVxlan::Link(x) => i.link = Some(*x),
            InfoVxlan::Learning(x) => i.learning = *x,
            InfoVxlan::Proxy(x) => i.proxy = *x,
            InfoVxlan::L2Miss(x) => i.l2miss = *x,
            InfoVxlan::L3Miss(x) => i.l3miss = *x,
            _ => {}
        }
    }
    i
}
