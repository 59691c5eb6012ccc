//! VXLAN (RFC 7348) for cnm.
//!
//! - [`wire`]: a zero-copy, allocation-free codec for the VXLAN header and
//!   whole encapsulated frames (outer Ethernet + IPv4/IPv6 + UDP), into and
//!   out of buffers the caller owns. It uses only `core`: build the crate
//!   with `--no-default-features` for `no_std` targets.
//! - The multi-host overlay driver arrives with the rest of the overlay
//!   work; its kernel side builds on `cnm_netns::Handle::fdb_append` and
//!   `neigh_add`.

#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

pub mod wire;
