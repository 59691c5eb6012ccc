//! Masquerade, published ports and isolation between networks for cnm, as
//! one atomic transaction per operation, on nftables (default) or iptables.
//!
//! - **nftables**: everything lives in `table inet cnm`, which this crate
//!   owns; nothing else is read, edited or flushed. Published ports are
//!   elements of maps and sets (`dnat4_any`, `dnat4_ip`, `published4` …), so
//!   publishing or removing a container's ports is an element change whose
//!   cost does not depend on how many mappings exist.
//! - **iptables**: chains of our own (`CNM-DNAT`, `CNM-POSTROUTING`,
//!   `CNM-FORWARD`, `CNM-RAW`), each hooked by one jump, rebuilt by one
//!   `iptables-restore --noflush -w` per address family.
//!
//! The firewall records what it owns in a cnm-core store, so `reapply()`
//! rebuilds everything after another tool flushed the ruleset, and works in
//! the host namespace it is given, never implicitly in the caller's.

#![warn(missing_docs)]

mod conntrack;
mod error;
mod firewall;
pub mod iptables;
mod nfnl;
pub mod nft;
mod ports;
pub use ports::MAX_HOST_PORTS;
pub mod state;

pub use error::NatError;
pub use firewall::{Backend, NatFirewall};
pub use state::{Desired, EndpointPorts, Mapping};
