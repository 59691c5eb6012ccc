//! Network namespaces: opening, creating (named and anonymous), running code
//! and programs inside one, and its sysctls.
//!
//! The calling thread's namespace never changes: every `setns` happens on a
//! short-lived thread that exits afterwards (a thread that switched namespace
//! and then went back to a pool would carry the wrong namespace into whatever
//! runs on it next), or in a child process between `fork` and `exec`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};

/// Where the calling thread's own network namespace is visible.
const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// A network namespace, held open by a file descriptor (so it stays alive as
/// long as this value does), optionally with the path it was opened from.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    path: Option<PathBuf>,
}

impl NetNs {
    /// The calling thread's current network namespace.
    pub fn current() -> Result<NetNs> {
        let file = File::open(THREAD_NETNS).map_err(|e| Error::io("netns_open", THREAD_NETNS, e))?;
        Ok(NetNs { fd: file.into(), path: None })
    }

    /// Opens the namespace bound at `path` (a bind mount such as
    /// `/run/netns/NAME`, or `/proc/PID/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io("netns_open", path.display().to_string(), e))?;
        let ns = NetNs { fd: file.into(), path: Some(path.to_path_buf()) };
        ns.check_is_netns()?;
        Ok(ns)
    }

    /// Takes ownership of a descriptor that refers to a network namespace.
    pub fn from_fd(fd: OwnedFd) -> Result<NetNs> {
        let ns = NetNs { fd, path: None };
        ns.check_is_netns()?;
        Ok(ns)
    }

    /// Duplicates the descriptor, giving a second handle on the same namespace.
    pub fn try_clone(&self) -> Result<NetNs> {
        let fd = self.fd.try_clone().map_err(|e| Error::io("netns_clone", self.describe(), e))?;
        Ok(NetNs { fd, path: self.path.clone() })
    }

    /// A fresh namespace that lives as long as the returned value (and any
    /// process or bind mount that also holds it).
    pub fn create_anonymous() -> Result<NetNs> {
        std::thread::spawn(|| -> Result<NetNs> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io("netns_create", "anonymous", io::Error::from(e)))?;
            NetNs::current()
        })
        .join()
        .map_err(|p| Error::Panicked { namespace: "new".into(), message: panic_message(&p) })?
    }

    /// Creates a namespace kept alive by a bind mount on `dir/name`, the way
    /// `ip netns add` does. `dir` is created if needed and made a shared mount
    /// point, so the namespace mount propagates into mount namespaces created
    /// later (as `ip netns exec` creates one).
    pub fn create_named(dir: impl AsRef<Path>, name: &str) -> Result<NetNs> {
        let dir = dir.as_ref();
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::invalid(
                "netns_create",
                format!("{name:?}"),
                "a namespace name must be a single path component",
            ));
        }
        make_shared_mount_point(dir)?;
        let path = dir.join(name);
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io("netns_create", path.display().to_string(), e))?;
        let target = path.clone();
        let bound = std::thread::spawn(move || -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io("netns_create", target.display().to_string(), io::Error::from(e)))?;
            mount(Some(THREAD_NETNS), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| Error::io("netns_create", target.display().to_string(), io::Error::from(e)))
        })
        .join()
        .map_err(|p| Error::Panicked { namespace: path.display().to_string(), message: panic_message(&p) })
        .and_then(|r| r);
        if let Err(e) = bound {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        NetNs::open(&path)
    }

    /// Removes a namespace created by [`NetNs::create_named`]: detaches the
    /// bind mount and deletes the file. The namespace itself goes away when
    /// nothing else holds it. Removing one that is already gone is not an error.
    pub fn remove_named(dir: impl AsRef<Path>, name: &str) -> Result<()> {
        let path = dir.as_ref().join(name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::EINVAL) => {}
            Err(e) => return Err(Error::io("netns_remove", path.display().to_string(), io::Error::from(e))),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("netns_remove", path.display().to_string(), e)),
        }
    }

    /// Undoes what [`NetNs::create_named`] did to `dir` itself (the bind mount
    /// that made it a shared mount point) once no namespace is left in it, so
    /// a private directory leaves no mount behind. Not an error when `dir` is
    /// not a mount point or already gone.
    pub fn release_dir(dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        match umount2(dir, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::EINVAL) => Ok(()),
            Err(e) => Err(Error::io("netns_release_dir", dir.display().to_string(), io::Error::from(e))),
        }
    }

    /// Detaches every mount below `dir` (namespaces bound there, and the
    /// bind mounts that made directories shared mount points), deepest
    /// first; a shared mount point stacks propagated copies on one path, so
    /// it repeats until none is left (at most 16 rounds). The one place the
    /// workspace cleans a scratch directory's mounts (test hosts, the demo).
    pub fn unmount_all_below(dir: impl AsRef<Path>) {
        let dir = dir.as_ref();
        for _ in 0..16 {
            let mut mounts: Vec<std::path::PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(4).map(std::path::PathBuf::from))
                .filter(|m| m.starts_with(dir))
                .collect();
            if mounts.is_empty() {
                return;
            }
            mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
            for m in mounts {
                let _ = umount2(&m, MntFlags::MNT_DETACH);
            }
        }
    }

    /// The path this namespace was opened from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A path under `/proc` through which other programs can reach this
    /// namespace while this process holds it, whether or not it has a name.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd()))
    }

    /// The namespace's inode number, which identifies it uniquely while it lives.
    pub fn inode(&self) -> Result<u64> {
        use std::os::unix::fs::MetadataExt;
        let file = File::from(self.fd.try_clone().map_err(|e| Error::io("netns_stat", self.describe(), e))?);
        Ok(file.metadata().map_err(|e| Error::io("netns_stat", self.describe(), e))?.ino())
    }

    /// Whether `self` and `other` are the same namespace.
    pub fn same_as(&self, other: &NetNs) -> Result<bool> {
        Ok(self.inode()? == other.inode()?)
    }

    /// [`NetNs::run`] for this crate's own short closures, which never change
    /// the thread's namespace: on the calling thread when it is in this
    /// namespace already (saving a thread), else on a short-lived one.
    pub(crate) fn run_short<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        use std::os::unix::fs::MetadataExt;
        let here = std::fs::metadata(THREAD_NETNS).map(|m| m.ino());
        if matches!((here, self.inode()), (Ok(a), Ok(b)) if a == b) {
            return std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .map_err(|p| Error::Panicked { namespace: self.describe(), message: panic_message(&p) });
        }
        self.run(f)
    }

    /// Runs `f` inside this namespace on a short-lived thread and returns its
    /// result. The calling thread's namespace never changes; a panic inside
    /// `f` becomes [`Error::Panicked`].
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let fd = self.fd.as_fd();
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                setns(fd, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::io("setns", self.describe(), io::Error::from(e)))?;
                Ok(f())
            })
            .join()
            .map_err(|p| Error::Panicked { namespace: self.describe(), message: panic_message(&p) })?
        })
    }

    /// A [`Command`] whose child process enters this namespace before it
    /// executes `program`. The caller's namespace is untouched. The command
    /// holds its own descriptor of the namespace, so it stays right even if
    /// this `NetNs` is dropped before the command is spawned.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        // A failed dup (no descriptors left) fails the spawn, with its errno.
        let own: std::result::Result<OwnedFd, i32> =
            self.fd.try_clone().map_err(|e| e.raw_os_error().unwrap_or(nix::libc::EBADF));
        // SAFETY: between fork and exec only async-signal-safe calls are
        // allowed; setns is a plain system call. `own` lives in the closure,
        // which the command keeps until it is dropped, so the descriptor is
        // open and ours when the child runs it.
        unsafe {
            cmd.pre_exec(move || match &own {
                Ok(fd) => setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from),
                Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
            });
        }
        cmd
    }

    /// Runs `program args…` inside this namespace and returns its standard
    /// output; a non-zero exit becomes [`Error::Command`] with its stderr.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.exec_with_input(program, args, None)
    }

    /// [`NetNs::exec`] with `input` on the program's standard input (a
    /// script for `nft -f -`, say); `None`: no input at all.
    pub fn exec_with_input<I, S>(&self, program: &str, args: I, input: Option<&str>) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::Write;
        use std::process::Stdio;
        let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let line = std::iter::once(program.to_string())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = self
            .command(program)
            .args(&args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("exec", line.clone(), e))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            // Written whole before the output is read: the inputs given
            // here are small scripts, well under a pipe's buffer.
            stdin.write_all(text.as_bytes()).map_err(|e| Error::io("exec", line.clone(), e))?;
        }
        let out: Output = child.wait_with_output().map_err(|e| Error::io("exec", line.clone(), e))?;
        if !out.status.success() {
            return Err(Error::Command {
                program: line,
                namespace: self.describe(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Reads a sysctl of this namespace, e.g. `net.ipv4.ip_forward` or
    /// `net/ipv4/ip_forward`.
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        let path = sysctl_path(key)?;
        self.run_short(|| std::fs::read_to_string(&path))?
            .map(|s| s.trim_end().to_string())
            .map_err(|e| Error::io("sysctl_get", key.to_string(), e))
    }

    /// Writes a sysctl of this namespace.
    pub fn sysctl_set(&self, key: &str, value: &str) -> Result<()> {
        let path = sysctl_path(key)?;
        self.run_short(|| std::fs::write(&path, value))?
            .map_err(|e| Error::io("sysctl_set", format!("{key}={value}"), e))
    }

    /// Brings the loopback interface of this namespace up, with the classic
    /// `SIOCSIFFLAGS` ioctl (no netlink needed). Already up is fine.
    pub fn loopback_up(&self) -> Result<()> {
        self.run_short(set_loopback_up)?.map_err(|e| Error::io("link_set_up", "link \"lo\"", e))
    }

    /// A short description for error messages: the path, or the inode.
    pub(crate) fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => match self.inode() {
                Ok(ino) => format!("net:[{ino}]"),
                Err(_) => format!("fd {}", self.fd.as_raw_fd()),
            },
        }
    }

    fn check_is_netns(&self) -> Result<()> {
        // ioctl(NS_GET_NSTYPE) tells which kind of namespace a descriptor is.
        const NS_GET_NSTYPE: nix::libc::c_ulong = 0xb703;
        // SAFETY: the ioctl takes no argument and only reads the descriptor.
        let kind = unsafe { nix::libc::ioctl(self.fd.as_raw_fd(), NS_GET_NSTYPE as _) };
        if kind == nix::libc::CLONE_NEWNET {
            Ok(())
        } else {
            Err(Error::invalid("netns_open", self.describe(), "not a network namespace"))
        }
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for NetNs {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<NetNs> for OwnedFd {
    fn from(ns: NetNs) -> OwnedFd {
        ns.fd
    }
}

/// Makes `dir` a shared mount point, bind-mounting it onto itself first when
/// it is not a mount point yet (what `ip netns add` does for /run/netns).
fn make_shared_mount_point(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("netns_create", dir.display().to_string(), e))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    // The kernel refuses (EINVAL) to change the propagation of a path that
    // is not a mount point, so success means it is one already.
    if mount(None::<&str>, dir, None::<&str>, shared, None::<&str>).is_ok() {
        return Ok(());
    }
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| Error::io("netns_create", dir.display().to_string(), io::Error::from(e)))?;
    mount(None::<&str>, dir, None::<&str>, shared, None::<&str>)
        .map_err(|e| Error::io("netns_create", dir.display().to_string(), io::Error::from(e)))
}

/// `ioctl(SIOCGIFFLAGS)` + `ioctl(SIOCSIFFLAGS)` on `lo` in the calling
/// thread's namespace.
fn set_loopback_up() -> io::Result<()> {
    use nix::libc;
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: both ioctls read and write only `req`, which outlives them.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn sysctl_path(key: &str) -> Result<PathBuf> {
    if key.is_empty() || key.contains("..") || key.starts_with('/') {
        return Err(Error::invalid("sysctl", key.to_string(), "not a sysctl key"));
    }
    // "net.ipv4.ip_forward" or "net/ipv4/ip_forward"; the slash form allows
    // interface names that contain dots.
    let rel = if key.contains('/') { key.to_string() } else { key.replace('.', "/") };
    Ok(PathBuf::from("/proc/sys").join(rel))
}

/// Extracts a readable message from a panic payload.
pub(crate) fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
