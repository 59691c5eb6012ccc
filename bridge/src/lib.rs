#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod driver;
pub mod options;
mod reaper;

pub use driver::{delete_parked, BridgeDriver, MARKER};
pub use options::BridgeNetworkOptions;
pub use reaper::GROUP as REAPER_GROUP;
