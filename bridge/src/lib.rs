//! The bridge driver for cnm: Docker's default networking. A Linux bridge
//! per network (its MAC set once, gateways on it, forwarding on, firewall
//! rules through the controller's firewall), one veth pair per endpoint with
//! the sandbox end created directly in the sandbox (no move step), named
//! `eth0`, `eth1` … in join order, with Docker's MAC rule, its addresses and,
//! for the endpoint that provides it, the default routes. Published ports go
//! to the firewall in the same operation. Detached veths are deleted in
//! batches, off the caller's path.

#![warn(missing_docs)]

mod driver;
pub mod options;
mod reaper;

pub use driver::{BridgeDriver, MARKER};
pub use options::BridgeNetworkOptions;
pub use reaper::GROUP as REAPER_GROUP;
