//! The bridge driver: a Linux bridge per network, one veth pair per endpoint
//! (the host end on the bridge, the other end in the sandbox), NAT and
//! published ports through cnm-nat. Docker's default networking.
//!
//! Status: arrives with the cnm-bridge issue; it will build on
//! [`cnm_netns::Handle`].

#![warn(missing_docs)]
