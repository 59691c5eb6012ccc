//! One instance per host namespace. Two controllers with different run
//! directories working in the same host namespace would erase each other's
//! firewall rules and take each other's bridges for leftovers, so the first
//! to change anything claims the namespace and any other is refused with an
//! error naming the owner. The claim is a file under [`CLAIMS_DIR`] named by
//! the namespace's cookie (unique for as long as the machine runs, unlike
//! its inode number) and holding the owner's run directory; it goes when
//! the owner's state is empty, or when the owner's run directory is gone.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cnm_netns::NetNs;

use crate::error::{Error, Result};

/// Where the claims live (tmpfs: they go with the namespaces at a reboot).
pub const CLAIMS_DIR: &str = "/run/cnm-netns";

pub(crate) struct Claim {
    file: PathBuf,
    owner: PathBuf,
}

impl Claim {
    /// The claim `run_dir`'s controller makes on `host`.
    pub(crate) fn new(host: &NetNs, run_dir: &Path) -> Result<Claim> {
        let cookie = host.run(netns_cookie)?.map_err(|e| Error::store("claim", "the host namespace's cookie", e))?;
        let owner = fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
        Ok(Claim { file: Path::new(CLAIMS_DIR).join(cookie.to_string()), owner })
    }

    /// Claims the namespace, or checks that it is ours.
    pub(crate) fn take(&self) -> Result<()> {
        loop {
            match fs::read_to_string(&self.file) {
                Ok(owner) if Path::new(&owner) == self.owner => return Ok(()),
                Ok(owner) if Path::new(&owner).is_dir() => {
                    return Err(Error::Forbidden {
                        what: format!("manage the host namespace with run directory {}", self.owner.display()),
                        reason: format!(
                            "another cnm instance (run directory {owner}) manages it; two would erase each \
                             other's rules and bridges (use that run directory, or another host namespace)"
                        ),
                    })
                }
                // The owner's run directory is gone: so is its claim.
                Ok(_) => {
                    let _ = fs::remove_file(&self.file);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    sweep_stale();
                    if self.create()? {
                        return Ok(());
                    }
                }
                Err(e) => return Err(Error::store("claim", self.file.display().to_string(), e)),
            }
        }
    }

    /// Writes the claim unless one exists; `false` when another got there first.
    fn create(&self) -> Result<bool> {
        let err = |e: std::io::Error| Error::store("claim", self.file.display().to_string(), e);
        let tmp = self.file.with_extension(format!("tmp-{}", std::process::id()));
        // The directory may go between making it and using it (another
        // instance released the last claim): make it again.
        let mut f = loop {
            crate::files::create_dir(Path::new(CLAIMS_DIR)).map_err(err)?;
            let _ = fs::remove_file(&tmp);
            let created =
                fs::OpenOptions::new().write(true).create_new(true).mode(crate::files::PRIVATE_FILE).open(&tmp);
            match created {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                other => break other.map_err(err)?,
            }
        };
        f.write_all(self.owner.as_os_str().as_encoded_bytes()).map_err(err)?;
        // A hard link appears whole and fails if the name exists.
        let linked = fs::hard_link(&tmp, &self.file);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(err(e)),
        }
    }

    /// Gives the namespace up (the state is empty).
    pub(crate) fn release(&self) {
        if fs::read_to_string(&self.file).is_ok_and(|o| Path::new(&o) == self.owner) {
            let _ = fs::remove_file(&self.file);
            let _ = fs::remove_dir(CLAIMS_DIR);
        }
    }
}

/// Removes the claims whose owner's run directory is gone (an instance whose
/// namespace and directories were removed without emptying its state first).
fn sweep_stale() {
    for e in fs::read_dir(CLAIMS_DIR).into_iter().flatten().flatten() {
        let is_claim = e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        if is_claim && fs::read_to_string(e.path()).is_ok_and(|owner| !Path::new(&owner).is_dir()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The calling thread's network namespace's cookie (`SO_NETNS_COOKIE`).
fn netns_cookie() -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    const SO_NETNS_COOKIE: nix::libc::c_int = 71;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as nix::libc::socklen_t;
    // SAFETY: the buffer is a u64 and its length is passed.
    let rc = unsafe {
        nix::libc::getsockopt(
            sock.as_raw_fd(),
            nix::libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}
