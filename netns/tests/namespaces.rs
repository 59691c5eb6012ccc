//! `NetNs`: running code and programs inside a namespace, named namespaces,
//! sysctls, and handles used from many threads at once.

use cnm_netns::testing::TestHost;
use cnm_netns::{ErrorKind, Handle, LinkAdd, NetNs, VethPeer};

fn thread_netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino()
}

#[test]
fn run_leaves_the_callers_namespace_unchanged() {
    let Some(host) = TestHost::new("run_leaves_callers_namespace") else { return };
    let before = thread_netns_inode();
    let inside = host.ns.run(thread_netns_inode).unwrap();
    assert_ne!(inside, before, "the closure must run inside the other namespace");
    assert_eq!(inside, host.ns.inode().unwrap());
    assert_eq!(thread_netns_inode(), before);

    let err = host.ns.run(|| -> u32 { panic!("boom inside") }).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    assert!(err.to_string().contains("boom inside"), "{err}");
    assert_eq!(thread_netns_inode(), before, "a panic inside must not change the caller's namespace");
    assert!(!NetNs::current().unwrap().same_as(&host.ns).unwrap());
}

#[test]
fn commands_and_sysctls_are_per_namespace() {
    let Some(host) = TestHost::new("commands_and_sysctls") else { return };
    let c = host.container("c").unwrap();
    // The test host turned forwarding on; a fresh container has it off.
    assert_eq!(host.ns.sysctl_get("net.ipv4.ip_forward").unwrap(), "1");
    assert_eq!(c.ns.sysctl_get("net.ipv4.ip_forward").unwrap(), "0");
    c.ns.sysctl_set("net/ipv4/ip_forward", "1").unwrap();
    // An external program inside the namespace sees the same value.
    assert_eq!(host.exec(&c.ns, "cat", &["/proc/sys/net/ipv4/ip_forward"]).trim(), "1");
    let err = c.ns.sysctl_get("net.ipv4.no_such_knob").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("net.ipv4.no_such_knob"), "{err}");

    host.handle.link_add(&LinkAdd::bridge("brx")).unwrap();
    let out = host.exec(&host.ns, "ip", &["-o", "link", "show"]);
    assert!(out.contains("brx"), "{out}");
    let out = host.exec(&c.ns, "ip", &["-o", "link", "show"]);
    assert!(!out.contains("brx"), "{out}");
    let failed = c.ns.exec("ip", ["link", "show", "dev", "nonexistent0"]).unwrap_err();
    assert_eq!(failed.kind(), ErrorKind::Command);
}

#[test]
fn named_namespaces_are_visible_by_path_and_removed() {
    let Some(host) = TestHost::new("named_namespaces") else { return };
    let dir = host.dir().to_path_buf();
    let ns = NetNs::create_named(&dir, "red").unwrap();
    let path = dir.join("red");
    assert_eq!(ns.path(), Some(path.as_path()));
    let h = Handle::open(&ns).unwrap();
    h.link_add(&LinkAdd::bridge("brred")).unwrap();

    // Visible to nsenter-style tools through its path.
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["ip", "-o", "link", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("brred"));
    // Reopening the path gives the same namespace.
    assert!(NetNs::open(&path).unwrap().same_as(&ns).unwrap());

    // A duplicate name is refused and leaves the first one intact.
    let dup = NetNs::create_named(&dir, "red").unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists, "{dup}");
    assert!(NetNs::open(&path).unwrap().same_as(&ns).unwrap());
    assert_eq!(NetNs::create_named(&dir, "a/b").unwrap_err().kind(), ErrorKind::InvalidArgument);

    NetNs::remove_named(&dir, "red").unwrap();
    assert!(!path.exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&path.display().to_string()), "bind mount left behind");
    // Removing it again is not an error.
    NetNs::remove_named(&dir, "red").unwrap();
    assert_eq!(NetNs::open(&path).unwrap_err().kind(), ErrorKind::NotFound);
    // Not a namespace at all.
    assert_eq!(NetNs::open("/proc/self/status").unwrap_err().kind(), ErrorKind::InvalidArgument);

    // The harness's own named containers go the same way.
    let c = host.named_container("blue").unwrap();
    assert!(c.ns.path().unwrap().exists());
}

#[test]
fn eight_threads_each_in_their_own_namespace() {
    let Some(host) = TestHost::new("eight_threads") else { return };
    let containers: Vec<_> = (0..8).map(|i| host.container(&format!("t{i}")).unwrap()).collect();
    std::thread::scope(|s| {
        for (t, c) in containers.iter().enumerate() {
            s.spawn(move || {
                // A handle of its own, used from this thread only.
                let h = Handle::open(&c.ns).unwrap();
                for i in 0..50 {
                    h.link_add(&LinkAdd::veth(format!("a{t}x{i}"), VethPeer::new(format!("b{t}x{i}")))).unwrap();
                    assert_eq!(h.link_get(format!("b{t}x{i}").as_str()).unwrap().kind.as_deref(), Some("veth"));
                }
                let names: Vec<String> = h.link_list().unwrap().into_iter().map(|l| l.name).collect();
                assert_eq!(names.len(), 101, "thread {t}: {names:?}");
                assert!(
                    names.iter().all(|n| n == "lo" || n[1..].starts_with(&format!("{t}x"))),
                    "thread {t}: {names:?}"
                );
                for i in 0..50 {
                    h.link_del(format!("a{t}x{i}").as_str()).unwrap();
                }
            });
        }
    });
    // Nothing landed in the host or in another thread's namespace, and all is gone.
    for c in &containers {
        let out = host.exec(&c.ns, "ip", &["-o", "link", "show"]);
        assert_eq!(out.lines().count(), 1, "{}: {out}", c.name);
    }
    assert_eq!(host.exec(&host.ns, "ip", &["-o", "link", "show"]).lines().count(), 1);
}

/// A command outlives the `NetNs` it was made from: its child still enters
/// that namespace, even when the descriptor number was reused in between
/// (here by another namespace opened right after the drop).
#[test]
fn a_command_enters_its_namespace_after_the_netns_is_dropped() {
    let Some(host) = TestHost::new("command_outlives_netns") else { return };
    let ns = host.ns.try_clone().unwrap();
    let want = ns.inode().unwrap();
    let mut cmd = ns.command("readlink");
    cmd.arg("/proc/self/ns/net");
    drop(ns);
    // Likely to take the freed descriptor number.
    let other = NetNs::create_anonymous().unwrap();
    assert_ne!(other.inode().unwrap(), want);
    let out = cmd.output().unwrap();
    let link = String::from_utf8(out.stdout).unwrap();
    assert_eq!(link.trim(), format!("net:[{want}]"), "the child entered another namespace");
}
