//! cnm as a CNI plugin: the `cnm-cni` binary puts cnm's bridge (with cnm-nat
//! published ports) and VXLAN overlay under containerd, CRI-O, Podman's CNI
//! mode and every Kubernetes runtime, over the same store as the `cnm` tool.
//!
//! It implements the CNI specification 1.1.0 (`ADD`, `DEL`, `CHECK`,
//! `VERSION`, `STATUS`, `GC`) and accepts configurations of versions
//! 0.3.1, 0.4.0, 1.0.0 and 1.1.0, answering in the configuration's version.
//! See the crate's README for the configuration keys.

#![warn(missing_docs)]

pub mod cmd;
pub mod config;
pub mod delegate;
pub mod env;
pub mod error;
pub mod result;
pub mod stack;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{NetConf, RuntimeArgs, SUPPORTED_VERSIONS};
pub use env::{CniEnv, Command};
pub use error::{CniError, Error, ErrorKind, Result};
pub use result::CniResult;
