//! The built-in drivers that need no kernel objects of their own.

mod host;
mod null;

pub use host::HostDriver;
pub use null::NullDriver;
