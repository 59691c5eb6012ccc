#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod answer;
mod batch;
mod cache;
pub mod control;
mod error;
mod forward;
mod listen;
mod records;
mod server;
mod tcp;

pub use control::{ControlClient, ControlSocket};
pub use error::{Error, ErrorKind, Result};
pub use server::{DnsServer, RemoteName, ServerConfig};

/// A random 16-bit query id (the kernel's getrandom; a failure falls back
/// to the clock, which only weakens the id against spoofing).
pub(crate) fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.subsec_nanos() as u16;
    }
    u16::from_be_bytes(b)
}
