//! The one source of randomness: the kernel's `getrandom(2)`, through the
//! getrandom crate (no descriptor to open, so no `EMFILE`; it blocks only
//! until the kernel's pool is first seeded, at boot).

use crate::error::{Error, Result};

/// Fills `buf` with random bytes; a failure is [`Error::Internal`] naming
/// the system's reason.
pub fn fill(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Internal(format!("reading random bytes (getrandom): {e}")))
}
