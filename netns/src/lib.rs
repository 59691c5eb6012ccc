#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(feature = "rtnetlink")]
mod addr;
mod error;
#[cfg(feature = "rtnetlink")]
mod handle;
mod ifname;
#[cfg(feature = "rtnetlink")]
mod link;
mod mac;
#[cfg(feature = "rtnetlink")]
mod neigh;
pub mod nlmsg;
mod ns;
#[cfg(feature = "rtnetlink")]
mod route;
#[cfg(feature = "rtnetlink")]
mod rule;
#[cfg(feature = "rtnetlink")]
mod socket;

#[cfg(feature = "testing")]
pub mod testing;

#[cfg(feature = "rtnetlink")]
pub use addr::{AddrFlags, AddrScope, Address};
pub use error::{Error, ErrorKind, KernelMessage, Result};
#[cfg(feature = "rtnetlink")]
pub use handle::{Family, Handle};
pub use ifname::{validate_ifname, IFNAME_MAX};
#[cfg(feature = "rtnetlink")]
pub use link::{BridgeOptions, Link, LinkAdd, LinkKind, LinkRef, MacvlanMode, VethPeer, VxlanInfo, VxlanOptions};
pub use mac::{MacAddr, ParseMacError};
#[cfg(feature = "rtnetlink")]
pub use neigh::{FdbEntry, NeighState, Neighbour};
pub use ns::NetNs;
#[cfg(feature = "rtnetlink")]
pub use route::{Route, RouteScope, TABLE_MAIN};
#[cfg(feature = "rtnetlink")]
pub use rule::Rule;

/// Re-exported so callers name prefixes with the same type this crate uses.
pub use ipnet;
