//! Files cnm writes: explicit modes whatever the umask, and never through a
//! symbolic link. A state or run directory may be reachable by others (a
//! container runtime's, a user's); a link planted in it must not make cnm
//! write, read or delete somewhere else.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Mode of cnm's private files (state records, locks, claims).
pub const PRIVATE_FILE: u32 = 0o600;
/// Mode of cnm's directories.
pub const PRIVATE_DIR: u32 = 0o700;
/// Mode of files a container must read (its resolv.conf and hosts).
pub const SHARED_FILE: u32 = 0o644;

/// Creates `dir` and its missing parents with mode 0700 (existing ones are
/// left as they are).
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(PRIVATE_DIR).create(dir)
}

/// Opens `path` for reading without following a symbolic link: a link is
/// an error (`ELOOP`), never its target.
pub fn open_nofollow(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).custom_flags(nix::libc::O_NOFOLLOW).open(path)
}

/// Opens (creating with mode 0600) a lock file, not through a link.
pub fn open_lock(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(PRIVATE_FILE)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
}

/// Replaces `path` with `bytes` atomically: a new file with `mode` next to
/// it (created exclusively, so never through a link), optionally flushed to
/// disk, then renamed over `path`. A link at `path` is replaced, not written
/// through.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    create_dir(parent)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("x");
    let tmp = parent.join(format!(".tmp-{}-{name}", std::process::id()));
    let written = (|| {
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}
