#![doc = include_str!("../README.md")]
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

pub mod wire;

#[cfg(feature = "driver")]
pub mod overlay;
