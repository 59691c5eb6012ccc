//! The undo stack: every successful step pushes its inverse; on error the
//! steps unwind in reverse; `commit()` disarms it.

use crate::error::{Error, Result};

type Step<'a> = (String, Box<dyn FnOnce() -> Result<()> + 'a>);

/// Undo actions of an operation in progress. Dropped without
/// [`Undo::commit`], it runs them (newest first) and logs failures; call
/// [`Undo::rollback`] to get them as an error instead.
#[derive(Default)]
pub struct Undo<'a> {
    steps: Vec<Step<'a>>,
}

impl<'a> Undo<'a> {
    /// An empty stack.
    pub fn new() -> Self {
        Undo { steps: Vec::new() }
    }

    /// Registers the inverse of a step that just succeeded.
    pub fn push(&mut self, what: impl Into<String>, f: impl FnOnce() -> Result<()> + 'a) {
        self.steps.push((what.into(), Box::new(f)));
    }

    /// How many steps are registered.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether no step is registered.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The operation succeeded: forget the inverses.
    pub fn commit(mut self) {
        self.steps.clear();
    }

    /// Runs every inverse, newest first, all of them even when some fail.
    pub fn rollback(mut self) -> Result<()> {
        let mut errors = Vec::new();
        while let Some((what, f)) = self.steps.pop() {
            if let Err(e) = f() {
                tracing::warn!("rollback step {what:?} failed: {e}");
                errors.push(e);
            }
        }
        Error::teardown("rollback", errors)
    }

    /// Rolls back and returns `err`, with any rollback failure attached.
    pub fn fail<T>(self, err: Error) -> Result<T> {
        match self.rollback() {
            Ok(()) => Err(err),
            Err(rb) => Err(Error::RollbackFailed { source: Box::new(err), rollback: Box::new(rb) }),
        }
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        while let Some((what, f)) = self.steps.pop() {
            if let Err(e) = f() {
                tracing::warn!("rollback step {what:?} failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn unwinds_in_reverse_and_collects_every_error() {
        let log = RefCell::new(Vec::new());
        let mut u = Undo::new();
        u.push("a", || {
            log.borrow_mut().push("a");
            Ok(())
        });
        u.push("b", || {
            log.borrow_mut().push("b");
            Err(Error::Internal("b failed".into()))
        });
        u.push("c", || {
            log.borrow_mut().push("c");
            Ok(())
        });
        let e = u.fail::<()>(Error::Internal("step 4".into())).unwrap_err();
        assert_eq!(*log.borrow(), vec!["c", "b", "a"]);
        assert!(e.to_string().contains("step 4") && e.to_string().contains("b failed"), "{e}");
    }

    #[test]
    fn commit_disarms() {
        let ran = RefCell::new(false);
        let mut u = Undo::new();
        u.push("x", || {
            *ran.borrow_mut() = true;
            Ok(())
        });
        u.commit();
        assert!(!*ran.borrow());
    }
}
