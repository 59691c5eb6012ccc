//! VXLAN (RFC 7348) for cnm.
//!
//! - [`wire`]: a zero-copy, allocation-free codec for the VXLAN header and
//!   whole encapsulated frames (outer Ethernet + IPv4/IPv6 + UDP), into and
//!   out of buffers the caller owns. It uses only `core`: build the crate
//!   with `--no-default-features` for `no_std` targets.
//! - [`overlay`] (feature `driver`, on by default): Docker's multi-host
//!   overlay driver, whose cluster state lives in a shared store (etcd, via
//!   `cnm-store-etcd`), and the per-host [`overlay::Agent`] that programs
//!   remote endpoints as they come and go.

#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

pub mod wire;

#[cfg(feature = "driver")]
pub mod overlay;
