//! Masquerade, published ports and isolation between networks, rendered as
//! one atomic nftables (or iptables-restore) transaction per operation.
//!
//! Status: arrives with the cnm-nat issue.

#![warn(missing_docs)]
