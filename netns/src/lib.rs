//! Network namespaces and a synchronous rtnetlink handle bound to one
//! namespace: the one place in the cnm workspace that speaks netlink.
//!
//! - [`NetNs`]: open, create (named like `ip netns add`, or anonymous), run a
//!   closure or a program inside a namespace, read and write its sysctls.
//!   The calling thread's namespace never changes.
//! - [`Handle`]: links (bridge, veth with its peer created directly in another
//!   namespace, vxlan), addresses, routes, neighbours and VXLAN FDB entries,
//!   with errors that name the operation and the object
//!   (`link_add veth "vethab12": File exists`).
//!
//! No netlink-packet-route type appears in this crate's API; it has its own
//! small types ([`LinkAdd`], [`Link`], [`Address`], [`Route`], [`Neighbour`],
//! [`FdbEntry`]).
//!
//! ```no_run
//! use cnm_netns::{AddrFlags, Handle, LinkAdd, NetNs, Route, VethPeer};
//! # fn main() -> cnm_netns::Result<()> {
//! let container = NetNs::create_anonymous()?;
//! let host = Handle::new()?;
//! host.link_add(&LinkAdd::veth("veth0", VethPeer::new("eth0").netns(&container)).up())?;
//! let inside = Handle::open(&container)?;
//! let eth0 = inside.link_get("eth0")?.index;
//! inside.addr_add(eth0, "10.0.0.2/24".parse().unwrap(), AddrFlags::empty())?;
//! inside.link_set_up(eth0)?;
//! inside.route_add(&Route::default_via("10.0.0.1".parse().unwrap()))?;
//! # Ok(()) }
//! ```

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
pub use link::{BridgeOptions, Link, LinkAdd, LinkKind, LinkRef, VethPeer, VxlanInfo, VxlanOptions};
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
