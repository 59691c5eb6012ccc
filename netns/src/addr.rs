//! Interface addresses.

use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::AddressFamily;
use serde::{Deserialize, Serialize};

bitflags::bitflags! {
    /// Flags for [`Handle::addr_add`](crate::Handle::addr_add).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct AddrFlags: u32 {
        /// Skip IPv6 duplicate address detection: the address is usable at
        /// once instead of after a second or two of `tentative` state.
        const NODAD = 0x02;
        /// Do not add the prefix route for the address's subnet.
        const NOPREFIXROUTE = 0x200;
    }
}

/// An address on an interface, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Interface index.
    pub index: u32,
    /// Address with prefix length, e.g. `10.1.1.2/24`.
    pub address: IpNet,
    /// Scope: `universe` (global), `link`, `host` …
    pub scope: AddrScope,
    /// Still undergoing IPv6 duplicate address detection.
    pub tentative: bool,
}

/// Scope of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AddrScope {
    /// Valid everywhere (`global` in iproute2).
    Universe,
    /// Valid only on this site (IPv6, deprecated).
    Site,
    /// Valid only on this link.
    Link,
    /// Valid only inside this host.
    Host,
    /// Any other scope value.
    Other(u8),
}

impl From<&AddressScope> for AddrScope {
    fn from(s: &AddressScope) -> Self {
        match s {
            AddressScope::Universe => AddrScope::Universe,
            AddressScope::Site => AddrScope::Site,
            AddressScope::Link => AddrScope::Link,
            AddressScope::Host => AddrScope::Host,
            other => AddrScope::Other(u8::from(*other)),
        }
    }
}

pub(crate) fn family_of(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The `RTM_NEWADDR`/`RTM_DELADDR` body.
pub(crate) fn addr_message(index: u32, addr: &IpNet, flags: AddrFlags) -> AddressMessage {
    let mut m = AddressMessage::default();
    let ip = addr.addr();
    m.header.family = family_of(&ip);
    m.header.prefix_len = addr.prefix_len();
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    if let IpAddr::V4(v4) = ip {
        // The broadcast address `ip addr add … brd +` would set; the kernel
        // does not derive it by itself.
        if addr.prefix_len() < 31 {
            if let IpNet::V4(n) = addr {
                m.attributes.push(AddressAttribute::Broadcast(n.broadcast()));
            }
        }
        let _ = v4;
    }
    if !flags.is_empty() {
        m.attributes.push(AddressAttribute::Flags(AddressFlags::from_bits_retain(flags.bits())));
    }
    m
}

/// Decodes an `RTM_NEWADDR` message.
pub(crate) fn address_from_message(m: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    let mut tentative = false;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => tentative = f.contains(AddressFlags::Tentative),
            _ => {}
        }
    }
    // For point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    let ip = local.or(address)?;
    Some(Address {
        index: m.header.index,
        address: IpNet::new(ip, m.header.prefix_len).ok()?,
        scope: (&m.header.scope).into(),
        tentative,
    })
}
