//! The operation lock: ordinary operations hold it shared, `reconcile()`
//! exclusive, so reconcile never mistakes another operation's work in
//! progress (an address allocated but not yet recorded) for a crash's
//! leftovers. Between threads it is an `RwLock`; between processes sharing a
//! run directory, a `flock` on `RUN_DIR/ops.lock`.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{Error, Result};

pub(crate) struct OpLock {
    path: Option<PathBuf>,
    local: RwLock<()>,
}

/// Held for the duration of an operation.
#[allow(dead_code)] // the fields are held for their Drop
pub(crate) enum OpGuard<'a> {
    Shared(RwLockReadGuard<'a, ()>, Option<Flock<File>>),
    Exclusive(RwLockWriteGuard<'a, ()>, Option<Flock<File>>),
}

impl OpLock {
    pub(crate) fn new(path: Option<PathBuf>) -> OpLock {
        OpLock { path, local: RwLock::new(()) }
    }

    fn flock(&self, arg: FlockArg) -> Result<Option<Flock<File>>> {
        let Some(path) = &self.path else { return Ok(None) };
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::store("lock", path.display().to_string(), e))?;
        Flock::lock(f, arg).map(Some).map_err(|(_, e)| Error::store("lock", path.display().to_string(), e))
    }

    pub(crate) fn shared(&self) -> Result<OpGuard<'_>> {
        let g = self.local.read().unwrap_or_else(|p| p.into_inner());
        Ok(OpGuard::Shared(g, self.flock(FlockArg::LockShared)?))
    }

    pub(crate) fn exclusive(&self) -> Result<OpGuard<'_>> {
        let g = self.local.write().unwrap_or_else(|p| p.into_inner());
        Ok(OpGuard::Exclusive(g, self.flock(FlockArg::LockExclusive)?))
    }
}
