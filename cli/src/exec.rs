//! `cnm exec`: a command inside a sandbox's network namespace that sees
//! the sandbox's resolv.conf and hosts file as `/etc/resolv.conf` and
//! `/etc/hosts`, in a private mount namespace, and a `/sys` of the
//! sandbox's namespace, as `ip netns exec` arranges with `/etc/netns/NAME`.
//! Without that, glibc inside would read the host's files.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use cnm_netns::NetNs;

/// A command that runs `program` in `netns`, with the files of
/// `files_dir` (`resolv.conf`, `hosts`) mounted over `/etc`'s.
pub fn command(netns: &NetNs, files_dir: Option<&Path>, program: &str) -> Command {
    let mut cmd = netns.command(program);
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
    let binds: Vec<(CString, CString)> = files_dir
        .into_iter()
        .flat_map(|d| ["resolv.conf", "hosts"].map(|f| (d.join(f), Path::new("/etc").join(f))))
        .filter(|(src, _)| src.exists())
        .filter_map(|(src, dst)| Some((c(&src)?, c(&dst)?)))
        .collect();
    let lit = |s: &str| CString::new(s).expect("no NUL");
    let (root, sys, sysfs) = (lit("/"), lit("/sys"), lit("sysfs"));
    // SAFETY: between fork and exec only async-signal-safe calls: unshare,
    // mount and umount2 are plain system calls, and every string they take
    // was made before the fork. The namespace's own pre_exec (setns) runs
    // first, so the sysfs mounted here shows the sandbox's devices.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Nothing mounted here propagates back to the host.
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (src, dst) in &binds {
                // A missing /etc file stays missing: best effort.
                libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null());
            }
            if libc::umount2(sys.as_ptr(), libc::MNT_DETACH) == 0 {
                libc::mount(sysfs.as_ptr(), sys.as_ptr(), sysfs.as_ptr(), 0, std::ptr::null());
            }
            Ok(())
        });
    }
    cmd
}
