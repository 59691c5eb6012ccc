//! Helpers shared by the `cnm` tool's test files.

use std::path::{Path, PathBuf};

/// Every file and directory below `d`, recursively (none if `d` is gone).
pub fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}
