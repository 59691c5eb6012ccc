//! Shared helpers for the cnm example programs: reachability checks done in
//! Rust (ICMP echo over a raw socket, TCP connect), so the examples need
//! nothing but the kernel.

#![warn(missing_docs)]

pub mod probe;
pub mod scratch;
pub mod veth_ping;

/// The README's code samples, compiled as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
