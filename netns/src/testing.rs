//! Test support for the cnm crates (feature `testing`): a fresh namespace
//! acting as the host, container namespaces, tool runners and reachability
//! checks. Everything a test creates lives in namespaces it made itself and
//! is removed when the [`TestHost`] is dropped, also after a panic.
//!
//! ```no_run
//! use cnm_netns::testing::TestHost;
//! let Some(host) = TestHost::new("my_test") else { return }; // skipped: not root
//! let c1 = host.container("c1").unwrap();
//! let links = host.ip_json(&c1.ns, &["link", "show"]);
//! assert!(links.as_array().unwrap().iter().any(|l| l["ifname"] == "lo"));
//! ```

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::{Handle, NetNs};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether the process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether the tests run in CI (`CI=true`), where a skipped privileged test
/// is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Decides whether a privileged test can run. Not root: prints a loud skip
/// line and returns `false`, or panics when `CI=true`.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if in_ci() {
        panic!("privileged test `{test}` cannot run: not root, and CI=true makes a skipped privileged test a failure");
    }
    eprintln!("\n!!!!!!!! SKIPPED privileged test `{test}`: it needs root (run the tests as root) !!!!!!!!\n");
    false
}

/// A short prefix unique to this test in this process, for names of
/// interfaces, namespaces and rules.
pub fn unique_prefix(test: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // FNV-1a over the test name, the pid and a counter.
    let mut h: u32 = 0x811c9dc5;
    for b in test.bytes().chain(std::process::id().to_le_bytes()).chain(n.to_le_bytes()) {
        h = (h ^ b as u32).wrapping_mul(0x01000193);
    }
    format!("t{:05x}", h & 0xfffff)
}

/// Removes a directory when dropped (declare it first: it goes last).
pub struct RemoveDir(pub PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A namespace made by a test, with a netlink handle inside it.
#[derive(Debug)]
pub struct TestNs {
    /// Name for messages.
    pub name: String,
    /// The namespace.
    pub ns: NetNs,
    /// A handle bound to it.
    pub handle: Handle,
}

impl TestNs {
    fn new(name: String, ns: NetNs) -> TestNs {
        let handle = Handle::open(&ns).unwrap_or_else(|e| panic!("opening a netlink handle in {name}: {e}"));
        handle.link_set_up("lo").unwrap_or_else(|e| panic!("bringing lo up in {name}: {e}"));
        TestNs { name, ns, handle }
    }

    /// Index of the interface called `name` in this namespace.
    pub fn index(&self, name: &str) -> u32 {
        self.handle.link_get(name).unwrap_or_else(|e| panic!("{}: {e}", self.name)).index
    }
}

/// A kill-on-drop guard for a background process started in a namespace.
#[derive(Debug)]
pub struct Background {
    child: Option<Child>,
}

impl Background {
    /// Stops the process and returns what it printed on stdout.
    pub fn finish(mut self) -> String {
        let child = self.child.take().expect("finished once");
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let out = child.wait_with_output().expect("waiting for a background process");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits for the process to exit by itself (bounded) and returns its stdout.
    pub fn wait(mut self, timeout: Duration) -> String {
        let mut child = self.child.take().expect("waited once");
        let deadline = std::time::Instant::now() + timeout;
        while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("waiting for a background process");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A fresh namespace acting as a host: loopback up, IPv4 and IPv6 forwarding
/// on, a private directory for named namespaces, unique names. Dropping it
/// removes everything it created, also after a panic.
pub struct TestHost {
    /// The host namespace.
    pub host: TestNs,
    prefix: String,
    dir: PathBuf,
    named: Mutex<Vec<String>>,
}

impl std::ops::Deref for TestHost {
    type Target = TestNs;
    fn deref(&self) -> &TestNs {
        &self.host
    }
}

/// Where test hosts keep their private directories: tmpfs (`/dev/shm`)
/// when there is one, as a run directory (`/run`) is in production, else
/// the temporary directory.
fn scratch_base() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    match nix::sys::statfs::statfs(shm) {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC => shm.to_path_buf(),
        _ => std::env::temp_dir(),
    }
}

impl TestHost {
    /// A fresh host for `test`, or `None` when the test must be skipped (not
    /// root; panics instead when `CI=true`).
    pub fn new(test: &str) -> Option<TestHost> {
        if !require_root(test) {
            return None;
        }
        let prefix = unique_prefix(test);
        let ns = NetNs::create_anonymous().unwrap_or_else(|e| panic!("creating the test host namespace: {e}"));
        let host = TestNs::new(format!("{prefix}-host"), ns);
        host.ns.sysctl_set("net.ipv4.ip_forward", "1").expect("ip_forward");
        host.ns.sysctl_set("net.ipv6.conf.all.forwarding", "1").expect("ipv6 forwarding");
        let dir = scratch_base().join(format!("cnm-test-{}-{prefix}", std::process::id()));
        Some(TestHost { host, prefix, dir, named: Mutex::new(Vec::new()) })
    }

    /// The unique prefix of this test (6 characters).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `prefix` + `suffix`, checked to fit an interface name.
    pub fn name(&self, suffix: &str) -> String {
        let n = format!("{}{suffix}", self.prefix);
        crate::validate_ifname("test", &n).unwrap_or_else(|e| panic!("{e}"));
        n
    }

    /// The private directory for this test's named namespaces.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A fresh anonymous "container" namespace with loopback up.
    pub fn container(&self, name: &str) -> crate::Result<TestNs> {
        let ns = NetNs::create_anonymous()?;
        Ok(TestNs::new(format!("{}-{name}", self.prefix), ns))
    }

    /// An "outside" namespace joined to the host by a veth pair: the host
    /// end `uplink` has 198.51.100.1/24 and 2001:db8:1::1/64, the outside
    /// end `eth0` has 198.51.100.2/24 and 2001:db8:1::2/64 (documentation
    /// prefixes). The outside has no route to anything behind the host, so
    /// replies reach it only when the host masquerades.
    pub fn outside(&self) -> crate::Result<TestNs> {
        use crate::{AddrFlags, LinkAdd, VethPeer};
        let outside = self.container("outside")?;
        let up = self.handle.link_add(&LinkAdd::veth("uplink", VethPeer::new("eth0").netns(&outside.ns)).up())?;
        self.handle.addr_add(up.index, "198.51.100.1/24".parse().unwrap(), AddrFlags::empty())?;
        self.handle.addr_add(up.index, "2001:db8:1::1/64".parse().unwrap(), AddrFlags::NODAD)?;
        let eth0 = outside.handle.link_get("eth0")?.index;
        // Up before the addresses (IPv6 on a link that was down stays silent
        // for a second after it comes up).
        outside.handle.link_set_up(eth0)?;
        outside.handle.addr_add(eth0, "198.51.100.2/24".parse().unwrap(), AddrFlags::empty())?;
        outside.handle.addr_add(eth0, "2001:db8:1::2/64".parse().unwrap(), AddrFlags::NODAD)?;
        Ok(outside)
    }

    /// A namespace on the bridge `bridge` of the host (an underlay),
    /// through a veth whose host end is `ul-NAME`: its `eth0` is up with
    /// address `ip`/24.
    pub fn on_bridge(&self, bridge: &str, name: &str, ip: &str) -> crate::Result<TestNs> {
        use crate::{AddrFlags, LinkAdd, VethPeer};
        let br = self.handle.link_get(bridge)?.index;
        let ns = self.container(name)?;
        let port = format!("ul-{name}");
        self.handle.link_add(&LinkAdd::veth(port.as_str(), VethPeer::new("eth0").netns(&ns.ns)).master(br).up())?;
        let eth0 = ns.handle.link_get("eth0")?.index;
        ns.handle.link_set_up(eth0)?;
        let ip =
            format!("{ip}/24").parse().map_err(|_| crate::Error::invalid("on_bridge", ip, "not an IPv4 address"))?;
        ns.handle.addr_add(eth0, ip, AddrFlags::empty())?;
        Ok(ns)
    }

    /// A fresh namespace bound in this test's private directory (like
    /// `ip netns add`), removed when the host is dropped.
    pub fn named_container(&self, name: &str) -> crate::Result<TestNs> {
        let ns = NetNs::create_named(&self.dir, name)?;
        self.named.lock().unwrap().push(name.to_string());
        Ok(TestNs::new(format!("{}-{name}", self.prefix), ns))
    }

    /// Runs a tool inside `ns` and returns its stdout; panics with its stderr
    /// when it fails.
    pub fn exec(&self, ns: &NetNs, program: &str, args: &[&str]) -> String {
        ns.exec(program, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `ip -j -d ARGS…` inside `ns` and parses its JSON output.
    pub fn ip_json(&self, ns: &NetNs, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-j", "-d"];
        full.extend_from_slice(args);
        let out = self.exec(ns, "ip", &full);
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })
            .unwrap_or_else(|e| panic!("ip {args:?}: bad JSON ({e}): {out}"))
    }

    /// Runs `bridge -j ARGS…` inside `ns` and parses its JSON output.
    pub fn bridge_json(&self, ns: &NetNs, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.exec(ns, "bridge", &full);
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })
            .unwrap_or_else(|e| panic!("bridge {args:?}: bad JSON ({e}): {out}"))
    }

    /// Starts `program args…` inside `ns` in the background; it is killed
    /// when the returned guard (or the host) goes away.
    pub fn spawn(&self, ns: &NetNs, program: &str, args: &[&str]) -> Background {
        let child = ns
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        Background { child: Some(child) }
    }

    /// [`TestHost::spawn`] for a tool that says on stderr when it is ready
    /// (`tcpdump`'s "listening on"): returns once a stderr line contains
    /// `ready`; panics if the tool exits or says nothing of it within 10 s.
    pub fn spawn_ready(&self, ns: &NetNs, program: &str, args: &[&str], ready: &str) -> Background {
        use std::io::BufRead;
        let mut child = ns
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program}: {e}"));
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let ready = ready.to_string();
        // Reads stderr to its end, so the tool never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut said = false;
            for line in std::io::BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if !said && line.contains(&ready) {
                    said = true;
                    let _ = tx.send(());
                }
            }
        });
        let bg = Background { child: Some(child) };
        rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|_| panic!("{program} {args:?} never got ready"));
        bg
    }

    /// The links, addresses and routes (all tables) of `nss` as `ip` lists
    /// them, sorted, for before/after comparisons of fault tests. Left out:
    /// carrier and operational state words (they follow ports
    /// asynchronously, through linkwatch), and IPv6 link-local addresses
    /// with their routes and a link's `ff00::/8` multicast route (the
    /// kernel's own, added when a link first gets carrier, which linkwatch
    /// may report a second late).
    pub fn kernel_state(&self, nss: &[&NetNs]) -> String {
        let mut out = String::new();
        for ns in nss {
            for what in [&["-br", "link", "show"][..], &["-br", "addr", "show"], &["route", "show", "table", "all"]] {
                let text = self.exec(ns, "ip", what).replace("NO-CARRIER,", "").replace(" linkdown", "");
                let state_word =
                    |w: &str| w.contains("LOWER_UP") || matches!(w, "UP" | "DOWN" | "UNKNOWN" | "LOWERLAYERDOWN");
                let mut lines: Vec<String> = text
                    .lines()
                    .filter(|l| what[0] != "route" || !(l.contains("fe80::") || l.starts_with("multicast ff00::/8")))
                    .map(|l| {
                        l.split_whitespace()
                            .filter(|w| !w.starts_with("fe80::") && !state_word(w))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .collect();
                lines.sort();
                out.push_str(&lines.join("\n"));
                out.push('\n');
            }
        }
        out
    }

    /// Whether one ICMP echo from `from` to `to` is answered within 2 s
    /// (Debian's `ping`).
    pub fn ping(&self, from: &NetNs, to: IpAddr) -> bool {
        ping(from, to)
    }

    /// Whether a TCP connection from `from` to `to` succeeds within 2 s.
    pub fn tcp_connect(&self, from: &NetNs, to: SocketAddr) -> bool {
        tcp_connect(from, to)
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        for name in self.named.lock().map(|v| v.clone()).unwrap_or_default() {
            if let Err(e) = NetNs::remove_named(&self.dir, &name) {
                eprintln!("test cleanup: {e}");
            }
        }
        if self.dir.exists() {
            // Whatever the test mounted below its directory (namespaces a
            // controller made, the shared bind mounts of their directories).
            NetNs::unmount_all_below(&self.dir);
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("test cleanup: removing {}: {e}", self.dir.display());
            }
        }
    }
}

/// Whether one ICMP echo from `from` to `to` is answered within 2 s.
pub fn ping(from: &NetNs, to: IpAddr) -> bool {
    let fam = if to.is_ipv4() { "-4" } else { "-6" };
    command_ok(from.command("ping").args([fam, "-n", "-q", "-c", "1", "-W", "2", &to.to_string()]))
}

/// Whether a TCP connection from `from` to `to` succeeds within 2 s.
pub fn tcp_connect(from: &NetNs, to: SocketAddr) -> bool {
    from.run(|| TcpStream::connect_timeout(&to, Duration::from_secs(2)).is_ok()).unwrap_or(false)
}

fn command_ok(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// A path to this process's own network namespace that can stand in for a
/// container's where no kernel work is done (fake drivers): a descriptor
/// held for the process's lifetime, `/proc/PID/fd/N`, valid for any process
/// while this one lives.
pub fn own_netns_path() -> PathBuf {
    static NS: std::sync::OnceLock<NetNs> = std::sync::OnceLock::new();
    NS.get_or_init(|| NetNs::current().expect("opening the own namespace")).proc_path()
}

/// In a child process of a race: says it is ready (a file `ready-PID` in
/// `dir`), then waits for the parent's `go` (see [`release_when_ready`]).
pub fn ready_then_wait_for_go(dir: &Path) {
    std::fs::write(dir.join(format!("ready-{}", std::process::id())), b"").expect("writing the ready file");
    while !dir.join("go").exists() {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// In the parent of a race: waits until `children` have said they are ready
/// (60 s at most), then releases them all at once.
pub fn release_when_ready(dir: &Path, children: usize) {
    let ready = || {
        std::fs::read_dir(dir)
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("ready-")).count())
            .unwrap_or(0)
    };
    let t = std::time::Instant::now();
    while ready() < children {
        assert!(t.elapsed() < Duration::from_secs(60), "only {} of {children} children got ready", ready());
        std::thread::sleep(Duration::from_millis(1));
    }
    std::fs::write(dir.join("go"), b"").expect("writing the go file");
}
