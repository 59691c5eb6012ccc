//! VXLAN (RFC 7348): a zero-copy wire codec and the multi-host overlay
//! driver, whose endpoints are programmed into kernel vxlan devices as
//! neighbour and FDB entries.
//!
//! Status: arrives with the cnm-vxlan issue; the kernel side builds on
//! [`cnm_netns::Handle::fdb_append`] and [`cnm_netns::Handle::neigh_add`].

#![warn(missing_docs)]
