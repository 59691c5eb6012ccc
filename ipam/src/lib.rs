//! IP address management for cnm: address spaces, pools, subnets and
//! addresses, persisted through a cnm-core [`Store`](cnm_core::Store) with
//! compare-and-swap so that nothing is handed out twice, not even by two
//! processes or two hosts at once.
//!
//! - Default pools like Docker's `default-address-pools`, but many more
//!   networks before exhaustion: /24s of 172.17–31.0.0/16 and 192.168.0.0/16
//!   locally (4096), /24s of 10.0.0.0/8 globally, /64s of a random ULA /48
//!   for IPv6. Automatic subnets skip the host's routes when the caller
//!   passes them.
//! - Addresses are kept as runs of consecutive allocations: memory grows with
//!   what is allocated, never with the prefix (an IPv6 /0 works), and an
//!   allocation costs the same in a nearly full /8 as in an empty /24.
//! - Network, broadcast, gateway and auxiliary addresses are never handed out.
//!
//! ```
//! use std::sync::Arc;
//! use cnm_core::{AddressRequest, MemStore, PoolRequest};
//! use cnm_ipam::Ipam;
//!
//! let ipam = Ipam::new(Arc::new(MemStore::new()));
//! let pool = ipam.allocate_pool(&PoolRequest::default()).unwrap();
//! assert_eq!(pool.subnet.to_string(), "172.17.0.0/24");
//! assert_eq!(pool.gateway.to_string(), "172.17.0.1/24");
//! let a = ipam.allocate_address(&pool.id, AddressRequest::Any).unwrap();
//! assert_eq!(a.to_string(), "172.17.0.2/24");
//! ```

#![warn(missing_docs)]

mod error;
mod ipam;
mod pool;
pub mod ranges;

pub use error::IpamError;
pub use ipam::{DefaultPool, Ipam, IpamOptions};
pub use pool::{Leases, PoolDef};
