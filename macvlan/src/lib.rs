#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod driver;
pub mod options;

pub use driver::{MacvlanDriver, MARKER};
pub use options::{MacvlanOptions, Parent};
