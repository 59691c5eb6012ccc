//! IP address management: address spaces, pools, subnets and addresses,
//! persisted with compare-and-swap so that nothing collides or leaks.
//!
//! Status: arrives with the cnm-ipam issue.

#![warn(missing_docs)]
