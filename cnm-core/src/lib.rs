//! The Container Network Model (CNM) core: the model (networks, endpoints,
//! sandboxes), the `Controller` an embedding runtime talks to, the traits
//! drivers, IPAM, stores and firewalls implement, rollback and persistence,
//! and the built-in `host` and `null` drivers. It never speaks netlink.
//!
//! Status: the model and the Controller arrive with the cnm-core issue.

#![warn(missing_docs)]
