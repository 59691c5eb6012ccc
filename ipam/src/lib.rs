#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod error;
mod ipam;
mod pool;
pub mod ranges;

pub use error::IpamError;
pub use ipam::{DefaultPool, Ipam, IpamOptions};
pub use pool::{Leases, PoolDef};
