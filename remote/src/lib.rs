//! Docker's remote network and IPAM plugin protocols for cnm.
//!
//! [`Plugin`] answers dockerd's `NetworkDriver` and `IpamDriver` calls
//! (protocol v1.2, JSON over HTTP/1.1) from a cnm [`Controller`]:
//! `docker network create -d cnm` makes a cnm bridge network, `docker run`
//! a cnm endpoint whose veth dockerd moves into the container,
//! `--ipam-driver cnm` takes subnets and addresses from cnm-ipam.
//! [`PluginServer`] serves it on the unix socket dockerd looks for
//! (`/run/docker/plugins/NAME.sock`). Synchronous: a thread per connection.
//!
//! The other way round, [`RemoteDriver`] makes any Docker network plugin a
//! cnm network driver, and [`RemoteIpam`] any Docker IPAM plugin a cnm IPAM
//! driver ([`PluginClient`] finds them as dockerd does).
//!
//! ```no_run
//! use std::sync::Arc;
//! # fn controller() -> cnm_core::Controller { unimplemented!() }
//! let ctl = Arc::new(controller());
//! let plugin = Arc::new(cnm_remote::Plugin::new(ctl, cnm_remote::PluginConfig::default()));
//! let server = cnm_remote::PluginServer::serve(plugin, cnm_remote::default_socket("cnm"))?;
//! # Ok::<(), cnm_remote::Error>(())
//! ```
//!
//! [`Controller`]: cnm_core::Controller

#![warn(missing_docs)]

mod client;
mod driver;
mod error;
mod http;
mod ipam;
mod ipam_client;
mod ipam_store;
mod plugin;
mod protocol;
mod server;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::PluginClient;
pub use driver::RemoteDriver;
pub use error::{Error, ErrorKind, Result};
pub use ipam_client::RemoteIpam;
pub use plugin::{docker_name, Plugin, PluginConfig, DOCKER_NETWORK_ID};
pub use server::{default_socket, PluginServer};
