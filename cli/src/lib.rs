//! The `cnm` tool's library part: the reachability checks its demo makes,
//! shared with the example programs, and how `cnm exec` runs a command. The tool itself is the `cnm` binary
//! (see the crate's README).

#![warn(missing_docs)]

pub mod exec;
pub mod probe;
pub mod services;
