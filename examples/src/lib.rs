//! Shared helpers for the cnm example programs. Their reachability checks
//! (ICMP echo over a raw socket, TCP connect) are the `cnm` tool's
//! ([`cnm_cli::probe`]), so the examples need nothing but the kernel.

#![warn(missing_docs)]

pub mod scratch;
pub mod veth_ping;

/// The README's code samples, compiled as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// `docs/embedding.md`'s code samples, compiled as doc tests.
#[doc = include_str!("../../docs/embedding.md")]
#[cfg(doctest)]
pub struct EmbeddingDoctests;

/// `docs/firewall.md`'s code samples, compiled as doc tests.
#[doc = include_str!("../../docs/firewall.md")]
#[cfg(doctest)]
pub struct FirewallDoctests;

/// `docs/overlay.md`'s code samples, compiled as doc tests.
#[doc = include_str!("../../docs/overlay.md")]
#[cfg(doctest)]
pub struct OverlayDoctests;

/// `docs/dns.md`'s code samples, compiled as doc tests.
#[doc = include_str!("../../docs/dns.md")]
#[cfg(doctest)]
pub struct DnsDoctests;
