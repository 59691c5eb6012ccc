#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod conntrack;
mod error;
mod firewall;
// The renderers are public only for golden-file tests (feature `testing`;
// not a stable API).
#[cfg(feature = "testing")]
pub mod iptables;
#[cfg(not(feature = "testing"))]
mod iptables;
mod lb;
mod nfnl;
#[cfg(feature = "testing")]
pub mod nft;
#[cfg(not(feature = "testing"))]
mod nft;
mod ports;
mod services;
mod state;

pub use ports::MAX_HOST_PORTS;

pub use error::NatError;
pub use firewall::{Backend, NatFirewall};
pub use lb::{LbContent, LbTable, LB_TABLE};
pub use services::{HostView, IngressSandbox, LocalSandbox, ServicePlane};
pub use state::{Desired, EndpointPorts, Mapping};
