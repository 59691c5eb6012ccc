//! Test seams, for this workspace's fault-injection tests (feature
//! `testing`; never needed in production).

use std::sync::Arc;

use crate::error::Result;

/// A hook called with the name of every kernel step just before it runs;
/// an error fails the step as if the kernel had refused it. Give the same
/// hook to [`ControllerBuilder::fault_hook`](crate::ControllerBuilder::fault_hook)
/// and to a driver's (e.g. cnm-bridge's `with_fault_hook`) to fail every
/// step of a join in turn, the sandbox side's included.
pub type FaultHook = Arc<dyn Fn(&str) -> Result<()> + Send + Sync>;
