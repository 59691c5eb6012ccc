//! The operation lock: the one unit of serialisation of a host. Every
//! operation that changes state holds it exclusively, from its first read to
//! its last write, so each check (names, exclusive networks, "network has
//! endpoints", free interface names) and each firewall transaction sees the
//! latest state and nothing changes it behind the operation's back. Between
//! threads it is an `RwLock`; between processes sharing a run directory, a
//! `flock` on `RUN_DIR/ops.lock`. Lookups take no lock: they read whole
//! records, which are replaced atomically.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{RwLock, RwLockWriteGuard};

use nix::fcntl::{Flock, FlockArg};

use crate::error::Result;

pub(crate) struct OpLock {
    path: Option<PathBuf>,
    local: RwLock<()>,
}

/// Held for the duration of an operation.
#[allow(dead_code)] // the fields are held for their Drop
pub(crate) struct OpGuard<'a>(RwLockWriteGuard<'a, ()>, Option<Flock<File>>);

impl OpLock {
    pub(crate) fn new(path: Option<PathBuf>) -> OpLock {
        OpLock { path, local: RwLock::new(()) }
    }

    /// The path of the lock file, if the lock spans processes.
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    pub(crate) fn exclusive(&self) -> Result<OpGuard<'_>> {
        let g = self.local.write().unwrap_or_else(|p| p.into_inner());
        let f = match &self.path {
            Some(p) => Some(crate::store::lock_file(p, FlockArg::LockExclusive)?),
            None => None,
        };
        Ok(OpGuard(g, f))
    }
}
