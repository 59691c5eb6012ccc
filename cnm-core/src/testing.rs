//! Test seams, for this workspace's fault-injection tests (feature
//! `testing`; never needed in production).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};

/// A hook called with the name of every kernel step just before it runs;
/// an error fails the step as if the kernel had refused it. Give the same
/// hook to [`ControllerBuilder::fault_hook`](crate::ControllerBuilder::fault_hook)
/// and to a driver's (e.g. cnm-bridge's `with_fault_hook`) to fail every
/// step of a join in turn, the sandbox side's included.
pub type FaultHook = Arc<dyn Fn(&str) -> Result<()> + Send + Sync>;

/// One-shot fault injection: after [`Faults::arm`]`(k)` the k-th step
/// (counting from 1) fails, once, with an error saying `injected failure`.
#[derive(Debug, Default)]
pub struct Faults {
    target: AtomicUsize,
    count: AtomicUsize,
}

impl Faults {
    /// Fails the `k`-th step from now (0: none).
    pub fn arm(&self, k: usize) {
        self.count.store(0, Ordering::SeqCst);
        self.target.store(k, Ordering::SeqCst);
    }

    /// Fails no step.
    pub fn disarm(&self) {
        self.target.store(0, Ordering::SeqCst);
    }

    /// Counts a step named `what`; the armed one fails.
    pub fn step(&self, what: &str) -> Result<()> {
        let target = self.target.load(Ordering::SeqCst);
        if target == 0 {
            return Ok(());
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == target {
            self.target.store(0, Ordering::SeqCst);
            return Err(Error::Internal(format!("injected failure at step {n} ({what})")));
        }
        Ok(())
    }

    /// A hook counting on these faults, for
    /// [`ControllerBuilder::fault_hook`](crate::ControllerBuilder::fault_hook)
    /// and drivers.
    pub fn hook(self: &Arc<Self>) -> FaultHook {
        let faults = self.clone();
        Arc::new(move |what: &str| faults.step(what))
    }
}
