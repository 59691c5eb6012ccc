#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod controller;
pub mod driver;
pub mod drivers;
mod error;
pub mod etc;
pub mod files;
pub mod firewall;
pub mod id;
pub mod inspect;
pub mod ipam;
pub mod join;
pub mod model;
pub mod names;
pub mod random;
pub mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod undo;

pub use controller::{
    Controller, ControllerBuilder, DefaultBridge, ReconcileReport, RestoreSummary, CLAIMS_DIR, DEFAULT_IPAM,
    GLOBAL_PREFIXES, PREDEFINED, VOLATILE_PREFIXES,
};
pub use driver::{Capabilities, DriverContext, NetworkDriver};
pub use error::{Error, ErrorKind, Result};
pub use firewall::{Firewall, FirewallNetwork, NoFirewall, PortRequest};
pub use id::Id;
pub use inspect::NetworkInspect;
pub use ipam::{AddressRequest, AddressSpace, IpamDriver, Pool, PoolRequest};
pub use join::{Interface, JoinInfo, JoinRequest, StaticRoute};
pub use model::{
    DnsConfig, Endpoint, EndpointConfig, EndpointRef, IpamConfig, IpamPoolConfig, JoinState, Network, NetworkConfig,
    PortBinding, PortMapping, PortRange, Protocol, Sandbox, SandboxConfig, Scope, State,
};
pub use names::{NameServer, EMBEDDED_DNS};
pub use service::{
    BackendAddress, PublishMode, Service, ServiceBackend, ServiceConfig, ServicePort, ServiceVip, INGRESS_NETWORK,
};
pub use store::{Expect, FileStore, KvEntry, MemStore, Read, SplitStore, Store, StoreExt};
pub use time::Timestamp;
pub use undo::Undo;
