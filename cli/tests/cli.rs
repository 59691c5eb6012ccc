//! The `cnm` binary driven as a user drives it: separate processes, a fresh
//! state directory and a fresh host namespace (`--host-netns`) per test,
//! results checked with iproute2 and against Docker's reference shapes.

mod common;

use common::walk;

use std::path::PathBuf;
use std::process::{Command, Output};

use cnm_netns::testing::TestHost;

struct Cnm {
    host: TestHost,
    state: PathBuf,
    run: PathBuf,
    /// `--no-predefined`: an emptied state leaves nothing behind.
    bare: bool,
}

impl Cnm {
    fn new(test: &str) -> Option<Cnm> {
        let host = TestHost::new(test)?;
        let (state, run) = (host.dir().join("state"), host.dir().join("run"));
        Some(Cnm { host, state, run, bare: false })
    }

    /// Without the predefined networks, for tests of what an emptied state
    /// leaves (nothing).
    fn bare(test: &str) -> Option<Cnm> {
        Cnm::new(test).map(|c| Cnm { bare: true, ..c })
    }

    /// `cnm ARGS` with the test's directories and host namespace.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cnm"));
        if self.bare {
            cmd.arg("--no-predefined");
        }
        cmd.arg("--state-dir")
            .arg(&self.state)
            .arg("--run-dir")
            .arg(&self.run)
            .arg("--host-netns")
            .arg(self.host.ns.proc_path())
            .args(args);
        cmd
    }

    /// Runs `cnm` with the test's directories and host namespace.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running cnm")
    }

    /// Runs `cnm` and expects success; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "cnm {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs `cnm` and expects exit status `code`; its standard error.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(o.status.code(), Some(code), "cnm {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stderr).unwrap()
    }

    /// Names of the links in the host namespace.
    fn host_links(&self) -> Vec<String> {
        let j = self.host.ip_json(&self.host.ns, &["link", "show"]);
        j.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap().to_string()).collect()
    }
}

#[test]
fn networks_are_created_listed_inspected_and_removed() {
    let Some(c) = Cnm::new("cli_networks") else { return };
    let id = c.ok(&["network", "create", "--subnet", "10.71.0.0/24", "--label", "team=a", "web"]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "the full id is printed: {id}");
    assert!(c.host_links().contains(&format!("br-{}", &id[..12])), "{:?}", c.host_links());

    // With the predefined bridge, host and none.
    let ls = c.ok(&["network", "ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert_eq!(lines[0], "NETWORK ID     NAME     DRIVER   SCOPE");
    assert!(lines.contains(&format!("{}   web      bridge   local", &id[..12]).as_str()), "{ls}");
    assert_eq!(lines.len(), 5);
    let q = c.ok(&["network", "ls", "-q"]);
    assert!(q.lines().any(|l| l == &id[..12]));
    let json = c.ok(&["network", "ls", "--format", "json"]);
    let first: serde_json::Value = serde_json::from_str(json.lines().find(|l| l.contains("\"web\"")).unwrap()).unwrap();
    assert_eq!((first["Driver"].as_str(), first["Labels"].as_str()), (Some("bridge"), Some("team=a")));

    // Inspect: a JSON array with the keys of Docker's output.
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["network", "inspect", "web"])).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("../../cnm-core/tests/fixtures/docker-network-inspect-bridge.json")).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&v[0]), keys(&reference[0]));
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.71.0.0/24");
    assert_eq!(v[0]["Id"], id);

    c.ok(&["network", "rm", "web"]);
    assert_eq!(c.ok(&["network", "ls"]).lines().count(), 4);
    assert!(!c.host_links().iter().any(|l| l.starts_with("br-")), "the bridge went with the network");
}

#[test]
fn sandboxes_connect_publish_exec_and_write_dns_files() {
    let Some(c) = Cnm::new("cli_sandboxes") else { return };
    c.ok(&["network", "create", "--subnet", "10.72.0.0/24", "web"]);
    let path = c.ok(&[
        "sandbox",
        "create",
        "--hostname",
        "web1",
        "--dns",
        "10.0.0.2",
        "--dns-search",
        "example.com",
        "--dns-option",
        "ndots:2",
        "c1",
    ]);
    assert!(std::path::Path::new(path.trim()).exists(), "the namespace path is printed: {path}");
    c.ok(&["sandbox", "create", "c2"]);
    let line = c.ok(&["connect", "--ip", "10.72.0.10", "-p", "8080:80", "web", "c1"]);
    assert!(line.contains("eth0 10.72.0.10/24 02:42:0a:48:00:0a") && line.contains("0.0.0.0:8080->80/tcp"), "{line}");
    c.ok(&["connect", "web", "c2"]);
    // An interface name of the caller's choice; a name in use is refused.
    c.ok(&["network", "create", "--subnet", "10.72.1.0/24", "side"]);
    let line = c.ok(&["connect", "--ifname", "side0", "side", "c2"]);
    assert!(line.starts_with("c2 side0 10.72.1."), "{line}");
    let out = c.ok(&["exec", "c2", "--", "ip", "-o", "-4", "addr", "show", "dev", "side0"]);
    assert!(out.contains("10.72.1."), "{out}");
    c.ok(&["disconnect", "side", "c2"]);
    let err = c.fails(1, &["connect", "--ifname", "eth0", "side", "c2"]);
    assert!(err.contains("\"eth0\"") && err.contains("c2"), "{err}");
    c.ok(&["network", "rm", "side"]);

    let inspect: serde_json::Value = serde_json::from_str(&c.ok(&["sandbox", "inspect", "c1"])).unwrap();
    let resolv = std::fs::read_to_string(inspect["ResolvConfPath"].as_str().unwrap()).unwrap();
    assert_eq!(resolv, "nameserver 10.0.0.2\nsearch example.com\noptions ndots:2\n");
    let hosts = std::fs::read_to_string(inspect["HostsPath"].as_str().unwrap()).unwrap();
    assert!(hosts.contains("10.72.0.10\tweb1"), "{hosts}");
    assert_eq!(inspect["Endpoints"][0]["Ports"][0]["HostPort"], "8080");

    // exec runs inside the sandbox: iproute2 sees eth0 with its address, and
    // ping reaches the other sandbox.
    let out = c.ok(&["exec", "c1", "--", "ip", "-j", "addr", "show", "dev", "eth0"]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j[0]["addr_info"][0]["local"], "10.72.0.10");
    c.ok(&["exec", "c2", "--", "ping", "-c1", "-W2", "10.72.0.10"]);
    let o = c.run(&["exec", "c1", "--", "false"]);
    assert_eq!(o.status.code(), Some(1), "exec passes on the command's status");

    let ls = c.ok(&["sandbox", "ls"]);
    assert!(ls.lines().any(|l| l.starts_with("c1 ") && l.ends_with("web")), "{ls}");
    c.ok(&["disconnect", "web", "c1"]);
    let hosts = std::fs::read_to_string(inspect["HostsPath"].as_str().unwrap()).unwrap();
    assert!(!hosts.contains("10.72.0.10"), "the hosts file follows disconnect: {hosts}");
    c.ok(&["sandbox", "rm", "c1"]);
    c.ok(&["sandbox", "rm", "c2"]);
    c.ok(&["network", "rm", "web"]);
    assert_eq!(c.host_links(), vec!["lo".to_string()], "nothing left in the host namespace");
    assert_eq!(c.ok(&["reconcile"]).trim(), "nothing to repair");
}

#[test]
fn documented_errors_are_one_line_and_leave_nothing_half_done() {
    let Some(c) = Cnm::new("cli_errors") else { return };
    c.ok(&["network", "create", "--subnet", "10.73.0.0/24", "web"]);
    c.ok(&["sandbox", "create", "c1"]);
    c.ok(&["sandbox", "create", "c2"]);
    c.ok(&["connect", "-p", "8080:80", "web", "c1"]);
    let links = c.host_links();
    // A host service on port 2222 (a positive control below shows the port
    // is otherwise publishable).
    let _sshd = c.host.spawn(&c.host.ns, "socat", &["TCP-LISTEN:2222,reuseaddr", "STDOUT"]);
    let t = std::time::Instant::now();
    while c.host.ns.exec("ss", ["-Htln", "sport = :2222"]).unwrap_or_default().trim().is_empty() {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "the host service never listened");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    // Usage errors: the command's usage, exit 2.
    let e = c.fails(2, &["network", "create", "--subnet", "10.1.0.0/33", "x"]);
    assert!(e.contains("10.1.0.0/33") && e.contains("Usage: cnm network create"), "{e}");
    // A driver that is not built in is looked up as a Docker plugin.
    let e = c.fails(1, &["network", "create", "-d", "macvlan9", "x"]);
    assert!(e.contains("--driver") && e.contains("plugin \"macvlan9\" not found"), "{e}");
    let e = c.fails(2, &["connect", "-p", "80/icmp", "web", "c2"]);
    assert!(e.contains("80/icmp"), "{e}");

    // Everything else: one line naming what was wrong, exit 1.
    for (args, want) in [
        (
            vec!["network", "create", "--subnet", "10.74.0.0/24", "--gateway", "10.9.9.1", "x"],
            "10.9.9.1 is in no --subnet",
        ),
        (vec!["network", "create", "-o", "com.docker.network.bridge.bogus=1", "x"], "com.docker.network.bridge.bogus"),
        (vec!["network", "create", "--subnet", "10.75.0.0/24", "web"], "already exists"),
        (vec!["connect", "-p", "8080:81", "web", "c2"], "already published"),
        (vec!["connect", "nosuchnet", "c2"], "nosuchnet"),
        (vec!["connect", "web", "nosuchsandbox"], "nosuchsandbox"),
        (vec!["network", "rm", "web"], "web"),
        (vec!["--store", "s3://bucket", "network", "ls"], "--store"),
        // No etcd in the test's namespace.
        (vec!["--store", "etcd://127.0.0.1:2379", "network", "ls"], "--store: etcd at 127.0.0.1:2379 is unreachable"),
        // Nothing can be injected into the firewall's rules or resolv.conf.
        (
            vec!["network", "create", "-o", "com.docker.network.bridge.name=x\"accept#", "x"],
            "com.docker.network.bridge.name: \"x\\\"accept#\"",
        ),
        (
            vec!["sandbox", "create", "--dns-search", "example.com\nnameserver 6.6.6.6", "x"],
            "dns-search: \"example.com\\nnameserver",
        ),
        (vec!["sandbox", "create", "--dns-option", "ndots:1\nnameserver 6.6.6.6", "x"], "dns-option"),
        // Validation (issue 15).
        (vec!["network", "create", "--subnet", "127.0.0.0/16", "x"], "127.0.0.0/8 (loopback)"),
        (vec!["network", "create", "--ipv6", "--subnet", "ff00::/8", "x"], "(multicast)"),
        (vec!["network", "create", "--ipv6", "--subnet", "::/0", "x"], "::/0 overlaps"),
        (vec!["network", "create", "--ipv6", "--subnet", "fd00::/127", "x"], "no room"),
        (vec!["network", "create", "--subnet", "10.76.0.0/24", "--subnet", "10.77.0.0/24", "x"], "one IPv4 subnet"),
        (
            vec![
                "network",
                "create",
                "--subnet",
                "10.78.0.0/16",
                "--ip-range",
                "10.78.1.0/24",
                "--ip-range",
                "10.78.2.0/24",
                "x",
            ],
            "--ip-range: 10.78.2.0/24: subnet 10.78.0.0/16 has --ip-range 10.78.1.0/24 already",
        ),
        (
            vec![
                "network",
                "create",
                "--subnet",
                "10.79.0.0/24",
                "--gateway",
                "10.79.0.1",
                "--aux-address",
                "r=10.79.0.1",
                "x",
            ],
            "10.79.0.1 is the gateway",
        ),
        (vec!["connect", "-p", "192.0.2.77:8085:80", "web", "c2"], "192.0.2.77 is not an address of the host"),
        (vec!["connect", "-p", "127.0.0.1:8090:80", "-p", "8090:81", "web", "c2"], "given twice in this request"),
        (vec!["connect", "-p", "2222:80", "web", "c2"], "port 2222/tcp on all addresses is in use on the host"),
        (vec!["connect", "--mac", "02:42:0a:49:00:02", "web", "c2"], "is the MAC of endpoint"),
        (vec!["connect", "-p", "1-65535:1-65535", "web", "c2"], "at most 10000 are published at once"),
    ] {
        let e = c.fails(1, &args);
        assert!(e.starts_with("cnm: error: ") && e.lines().count() == 1, "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: {e} should name {want}");
    }
    assert_eq!(c.host_links(), links, "no link was added or removed by a failed command");
    // Positive controls: the port is publishable once the host service is
    // gone; an internal network takes the endpoint, only not its ports.
    drop(_sshd);
    let t = std::time::Instant::now();
    while !c.host.ns.exec("ss", ["-Htln", "sport = :2222"]).unwrap_or_default().trim().is_empty() {
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "the host service never went");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    c.ok(&["connect", "-p", "2222:80", "web", "c2"]);
    c.ok(&["disconnect", "web", "c2"]);
    c.ok(&["network", "create", "--internal", "--subnet", "10.80.0.0/24", "int"]);
    let e = c.fails(1, &["connect", "-p", "8086:80", "int", "c2"]);
    assert!(e.contains("network \"int\" is internal"), "{e}");
    c.ok(&["connect", "int", "c2"]);
    c.ok(&["disconnect", "int", "c2"]);
    c.ok(&["network", "rm", "int"]);
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["network", "inspect", "web"])).unwrap();
    assert_eq!(v[0]["Containers"].as_object().unwrap().len(), 1, "no endpoint was left by a failed connect");
    let nets = c.ok(&["network", "ls", "-q"]);
    assert_eq!(nets.lines().count(), 4, "no half-made network (web and the three predefined): {nets}");
    let sandboxes = c.ok(&["sandbox", "ls"]);
    assert!(sandboxes.lines().any(|l| l.split_whitespace().next() == Some("c1")), "{sandboxes}");
    assert!(
        !sandboxes.lines().any(|l| l.split_whitespace().next() == Some("x")),
        "no sandbox from bad DNS: {sandboxes}"
    );
    c.ok(&["sandbox", "rm", "c1"]);
    c.ok(&["sandbox", "rm", "c2"]);
    c.ok(&["network", "rm", "web"]);
}

#[test]
fn every_command_has_help_with_an_example_and_completions_exist() {
    for args in [
        vec!["--help"],
        vec!["network", "create", "--help"],
        vec!["network", "ls", "--help"],
        vec!["network", "inspect", "--help"],
        vec!["network", "rm", "--help"],
        vec!["sandbox", "create", "--help"],
        vec!["sandbox", "ls", "--help"],
        vec!["sandbox", "inspect", "--help"],
        vec!["sandbox", "rm", "--help"],
        vec!["connect", "--help"],
        vec!["disconnect", "--help"],
        vec!["exec", "--help"],
        vec!["reconcile", "--help"],
        vec!["agent", "--help"],
        vec!["service", "create", "--help"],
        vec!["service", "ls", "--help"],
        vec!["service", "inspect", "--help"],
        vec!["service", "rm", "--help"],
        vec!["service", "add-backend", "--help"],
        vec!["service", "rm-backend", "--help"],
        vec!["demo", "--help"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_cnm")).args(&args).output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && text.contains("Example"), "{args:?}: {text}");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_cnm")).args(["completions", "bash"]).output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("_cnm"));
}

#[test]
fn the_demo_passes_and_leaves_nothing_behind() {
    if !cnm_netns::testing::require_root("cli_demo") {
        return;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_cnm"))
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("checks passed") && !out.contains("[FAIL]"), "{out}");
    let scratch = format!("cnm-demo-{pid}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&scratch), "a mount of the demo is left");
    for base in [std::path::Path::new("/dev/shm").to_path_buf(), std::env::temp_dir()] {
        assert!(!base.join(&scratch).exists(), "{} is left", base.join(&scratch).display());
    }
}

#[test]
fn host_mode_ipv6_static_addresses_and_the_iptables_backend() {
    let Some(c) = Cnm::new("cli_more") else { return };
    // Host mode: a sandbox on the host namespace itself (on the predefined
    // `host` network).
    let hostns = c.host.ns.proc_path();
    c.ok(&["sandbox", "create", "--netns", hostns.to_str().unwrap(), "h1"]);
    c.ok(&["connect", "host", "h1"]);
    let e = c.fails(1, &["connect", "none", "h1"]);
    assert!(e.contains("\"host\"") && e.contains("no other network"), "a host-mode sandbox joins nothing else: {e}");

    // Dual stack with static addresses, MAC and alias.
    c.ok(&["network", "create", "--ipv6", "--subnet", "10.76.0.0/24", "--subnet", "fd00:76::/64", "dual"]);
    c.ok(&["sandbox", "create", "c1"]);
    let line = c.ok(&[
        "connect",
        "--ip",
        "10.76.0.9",
        "--ip6",
        "fd00:76::9",
        "--mac",
        "02:00:00:00:00:09",
        "--alias",
        "db",
        "dual",
        "c1",
    ]);
    assert!(
        line.contains("10.76.0.9/24") && line.contains("fd00:76::9/64") && line.contains("02:00:00:00:00:09"),
        "{line}"
    );
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["sandbox", "inspect", "c1"])).unwrap();
    assert_eq!(v["Endpoints"][0]["Aliases"][0], "db");
    let out = c.ok(&["exec", "c1", "--", "ip", "-j", "-6", "addr", "show", "dev", "eth0"]);
    assert!(out.contains("fd00:76::9"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["network", "inspect", "dual", "host"])).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    assert_eq!(v[0]["EnableIPv6"], true);
    c.ok(&["sandbox", "rm", "c1"]);
    c.ok(&["sandbox", "rm", "h1"]);
    c.ok(&["network", "rm", "dual"]);

    // The iptables backend: the same commands, rules in CNM-* chains.
    let ipt = |args: &[&str]| {
        let mut full = vec!["--firewall", "iptables"];
        full.extend_from_slice(args);
        c.ok(&full)
    };
    ipt(&["network", "create", "--subnet", "10.77.0.0/24", "web"]);
    ipt(&["sandbox", "create", "c2"]);
    ipt(&["connect", "-p", "9090:90", "web", "c2"]);
    let save = c.host.exec(&c.host.ns, "iptables-save", &[]);
    assert!(save.contains("--dport 9090") && save.contains("-j DNAT --to-destination 10.77.0.2:90"), "{save}");
    ipt(&["sandbox", "rm", "c2"]);
    ipt(&["network", "rm", "web"]);
    let save = c.host.exec(&c.host.ns, "iptables-save", &[]);
    assert!(!save.contains("--dport 9090"), "the rule went with the endpoint");
}

#[test]
fn the_agent_reconciles_until_told_to_stop() {
    let Some(c) = Cnm::new("cli_agent") else { return };
    let id = c.ok(&["network", "create", "--subnet", "10.78.0.0/24", "web"]);
    // A reboot, as far as the bridge is concerned: it is gone.
    c.host.exec(&c.host.ns, "ip", &["link", "del", &format!("br-{}", &id.trim()[..12])]);
    let child = c.command(&["agent", "--interval", "1"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let bridge = format!("br-{}", &id.trim()[..12]);
    let t = std::time::Instant::now();
    while !c.host_links().contains(&bridge) && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(c.host_links().contains(&bridge), "the agent re-created the bridge: {out}");
    assert!(out.contains("re-created bridge") && out.contains("stopped after"), "{out}");
    c.ok(&["network", "rm", "web"]);
}

/// What the stress run and a code review found (issue 14), each changed by
/// hand the way an operator or a crash would, then repaired by one
/// `reconcile` that says what it did, after which a second finds nothing.
#[test]
fn reconcile_repairs_what_was_changed_by_hand_in_one_pass() {
    let Some(c) = Cnm::bare("cli_repairs") else { return };
    c.ok(&["network", "create", "--subnet", "10.61.0.0/24", "web"]);
    c.ok(&["sandbox", "create", "s1"]);
    c.ok(&["connect", "-p", "8080:80", "web", "s1"]);
    let net: serde_json::Value = serde_json::from_str(&c.ok(&["network", "inspect", "web"])).unwrap();
    let bridge = format!("br-{}", &net[0]["Id"].as_str().unwrap()[..12]);
    let ns = &c.host.ns;
    let host = &c.host;
    // A bridge down without its gateway, forwarding off, a lost lease, a
    // flushed ruleset.
    host.exec(ns, "ip", &["addr", "flush", "dev", &bridge]);
    host.exec(ns, "ip", &["link", "set", &bridge, "down"]);
    host.exec(ns, "sysctl", &["-qw", "net.ipv4.ip_forward=0"]);
    let lease = walk(&c.run).into_iter().find(|p| p.to_string_lossy().contains("10.61.0.2")).expect("a lease file");
    std::fs::remove_file(&lease).unwrap();
    host.exec(ns, "nft", &["flush", "ruleset"]);
    let said = c.ok(&["reconcile"]);
    for want in [
        "re-added gateway 10.61.0.1/24",
        "brought bridge",
        "ip_forward",
        "took address 10.61.0.2",
        "rebuilt the nftables",
    ] {
        assert!(said.contains(want), "reconcile did not say {want:?}: {said}");
    }
    assert_eq!(c.ok(&["reconcile"]).trim(), "nothing to repair");
    assert!(lease.exists(), "the lease is taken again");
    assert!(host.exec(ns, "nft", &["list", "map", "inet", "cnm", "dnat4_any"]).contains("8080"));

    // A deleted bridge comes back with its ports.
    host.exec(ns, "ip", &["link", "del", &bridge]);
    let said = c.ok(&["reconcile"]);
    assert!(said.contains("re-created bridge") && said.contains("to bridge"), "{said}");
    let veth = host.ip_json(ns, &["link", "show", "master", &bridge]);
    assert_eq!(veth.as_array().unwrap().len(), 1, "the veth is on the bridge again: {veth}");
    assert_eq!(c.ok(&["reconcile"]).trim(), "nothing to repair");

    // A connect after `nft flush ruleset` rebuilds the table itself.
    host.exec(ns, "nft", &["flush", "ruleset"]);
    c.ok(&["sandbox", "create", "s2"]);
    c.ok(&["connect", "-p", "8081:80", "web", "s2"]);
    let map = host.exec(ns, "nft", &["list", "map", "inet", "cnm", "dnat4_any"]);
    assert!(map.contains("8080") && map.contains("8081"), "{map}");

    // A stray file in the state directory is skipped with a warning.
    std::fs::write(c.state.join("networks/junk.json"), b"not a record").unwrap();
    let o = c.run(&["network", "ls"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("junk.json"), "the warning names the file");
    std::fs::remove_file(c.state.join("networks/junk.json")).unwrap();

    // A second instance (another run directory) in the same host namespace
    // is refused, naming the first, and changes nothing.
    let second = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cnm"))
            .arg("--state-dir")
            .arg(c.host.dir().join("state2"))
            .arg("--run-dir")
            .arg(c.host.dir().join("run2"))
            .arg("--host-netns")
            .arg(c.host.ns.proc_path())
            .args(args)
            .output()
            .unwrap()
    };
    let other = second(&["network", "create", "--subnet", "10.62.0.0/24", "other"]);
    let err = String::from_utf8_lossy(&other.stderr);
    assert_eq!(other.status.code(), Some(1), "{err}");
    assert!(err.contains("another cnm instance") && err.contains(c.run.to_str().unwrap()), "{err}");
    assert!(!c.host_links().iter().any(|l| l.starts_with("br-") && l != &bridge));

    // Everything removed: nothing of cnm remains.
    c.ok(&["sandbox", "rm", "s1"]);
    c.ok(&["sandbox", "rm", "s2"]);
    c.ok(&["network", "rm", "web"]);
    assert!(!c.state.exists() && !c.run.exists(), "left: {:?} {:?}", walk(&c.state), walk(&c.run));
    assert!(!host.exec(ns, "nft", &["list", "tables"]).contains("cnm"));
    // The first instance is gone, so the second may now work here.
    for args in [&["network", "create", "--subnet", "10.62.0.0/24", "other"][..], &["network", "rm", "other"]] {
        let o = second(args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// Reconcile drops a sandbox only when its namespace is gone for good; a
/// namespace it merely cannot open now (here a path that loops, `ELOOP`;
/// in production `EMFILE` or `EACCES`) is kept with its endpoints.
#[test]
fn reconcile_keeps_a_sandbox_whose_namespace_it_cannot_open() {
    let Some(c) = Cnm::new("cli_keep_sandbox") else { return };
    let ctr = c.host.named_container("k1").unwrap();
    let link = c.host.dir().join("k1-link");
    std::os::unix::fs::symlink(c.host.dir().join("k1"), &link).unwrap();
    c.ok(&["network", "create", "--subnet", "10.63.0.0/24", "n"]);
    c.ok(&["sandbox", "create", "--netns", link.to_str().unwrap(), "s1"]);
    c.ok(&["connect", "n", "s1"]);

    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&link, &link).unwrap();
    let said = c.ok(&["reconcile"]);
    assert!(!said.contains("dropped sandbox"), "{said}");
    assert!(c.ok(&["sandbox", "ls"]).contains("s1"));
    let addrs = c.host.ip_json(&ctr.ns, &["addr", "show"]).to_string();
    assert!(addrs.contains("10.63.0.2"), "the sandbox kept its interface: {addrs}");

    // Gone for real: the path no longer exists.
    std::fs::remove_file(&link).unwrap();
    let said = c.ok(&["reconcile"]);
    assert!(said.contains("dropped sandbox \"s1\""), "{said}");
    c.ok(&["network", "rm", "n"]);
}

/// Files and namespace paths (issue 15): explicit modes whatever the umask,
/// no link in the state or run directory followed, written through or
/// walked, and `--netns` stored canonical, never through `/proc/self`.
#[test]
fn files_have_explicit_modes_and_links_are_never_followed() {
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    use std::os::unix::process::CommandExt;
    let Some(c) = Cnm::new("cli_files") else { return };
    let umask0 = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cnm"));
        cmd.arg("--state-dir").arg(&c.state).arg("--run-dir").arg(&c.run);
        cmd.arg("--host-netns").arg(c.host.ns.proc_path()).args(args);
        // SAFETY: umask is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::stat::umask(nix::sys::stat::Mode::empty());
                Ok(())
            });
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    umask0(&["network", "create", "--subnet", "10.64.0.0/24", "n"]);
    umask0(&["sandbox", "create", "s1"]);
    umask0(&["connect", "-p", "8080:80", "n", "s1"]);
    for p in walk(&c.state).into_iter().chain(walk(&c.run)) {
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() || m.ino() == 0 {
            continue;
        }
        let mode = m.permissions().mode() & 0o777;
        let shared = p.ends_with("resolv.conf") || p.ends_with("hosts");
        let netns = p.parent().is_some_and(|d| d.ends_with("netns"));
        let ok = match () {
            _ if netns => true, // the namespace's own inode (nsfs)
            _ if m.is_dir() => mode == 0o700,
            _ if shared => mode == 0o644,
            _ => mode == 0o600,
        };
        assert!(ok, "{} has mode {mode:o} with umask 000", p.display());
    }

    // A hosts file link is replaced (at the next join), its target untouched.
    let target = c.host.dir().join("precious");
    std::fs::write(&target, "keep me\n").unwrap();
    let hosts = c.run.join("files/s1/hosts");
    std::fs::remove_file(&hosts).unwrap();
    symlink(&target, &hosts).unwrap();
    c.ok(&["disconnect", "n", "s1"]);
    c.ok(&["connect", "n", "s1"]);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
    assert!(!std::fs::symlink_metadata(&hosts).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(std::fs::read_to_string(&hosts).unwrap().contains("\ts1\n"), "the hosts file names the sandbox");

    // Two links pointing at each other, and a link to another directory
    // holding what looks like a dead process's temporary file: no hang,
    // nothing deleted there, and the link is reported.
    let elsewhere = c.host.dir().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join(".tmp-2147483647-x.json"), "{").unwrap();
    symlink(&elsewhere, c.state.join("networks/away")).unwrap();
    symlink(c.state.join("networks/b.json"), c.state.join("networks/a.json")).unwrap();
    symlink(c.state.join("networks/a.json"), c.state.join("networks/b.json")).unwrap();
    let o = c.run(&["network", "ls"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains(" n "), "the real network is listed");
    assert!(String::from_utf8_lossy(&o.stderr).contains("symbolic link"), "the links are reported");
    assert!(elsewhere.join(".tmp-2147483647-x.json").exists(), "nothing deleted through a link");
    for l in ["away", "a.json", "b.json"] {
        std::fs::remove_file(c.state.join("networks").join(l)).unwrap();
    }

    // --netns: a relative path is stored canonical; /proc/self is refused.
    let ctr = c.host.named_container("rel").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_cnm"))
        .current_dir(c.host.dir())
        .arg("--state-dir")
        .arg(&c.state)
        .arg("--run-dir")
        .arg(&c.run)
        .arg("--host-netns")
        .arg(c.host.ns.proc_path())
        .args(["sandbox", "create", "--netns", "rel", "s3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["sandbox", "inspect", "s3"])).unwrap();
    assert_eq!(
        v["NetNs"].as_str().unwrap(),
        std::fs::canonicalize(c.host.dir()).unwrap().join("rel").to_str().unwrap()
    );
    c.ok(&["connect", "n", "s3"]);
    assert!(c.host.ip_json(&ctr.ns, &["addr"]).to_string().contains("10.64.0."), "the interface went to rel");
    for p in ["/proc/self/ns/net", "/proc/thread-self/ns/net"] {
        let e = c.fails(1, &["sandbox", "create", "--netns", p, "s4"]);
        assert!(e.contains("netns") && e.contains(p), "{e}");
    }
    for s in ["s1", "s3"] {
        c.ok(&["sandbox", "rm", s]);
    }
    c.ok(&["network", "rm", "n"]);
}

/// An interface name taken inside the container is reported as that, not
/// as a clash of the host-side veth's name; nothing is left behind.
#[test]
fn an_eth0_clash_names_the_sandbox_interface() {
    let Some(c) = Cnm::new("cli_eth0_clash") else { return };
    let ctr = c.host.named_container("busy").unwrap();
    c.host.exec(&ctr.ns, "ip", &["link", "add", "eth0", "type", "veth", "peer", "name", "x0"]);
    c.ok(&["network", "create", "--subnet", "10.65.0.0/24", "n"]);
    let path = c.host.dir().join("busy");
    c.ok(&["sandbox", "create", "--netns", path.to_str().unwrap(), "s"]);
    let links = c.host_links();
    let e = c.fails(1, &["connect", "n", "s"]);
    assert!(e.contains("interface \"eth0\" in sandbox \"s\""), "{e}");
    assert_eq!(c.host_links(), links, "no veth left");
    c.ok(&["sandbox", "rm", "s"]);
    c.ok(&["network", "rm", "n"]);
}

/// A range of 3,000 ports is one transaction of many netlink messages (one
/// message's attributes hold 64 KiB), and goes away whole.
#[test]
fn a_range_of_three_thousand_ports_is_published_and_removed() {
    let Some(c) = Cnm::new("cli_big_range") else { return };
    c.ok(&["network", "create", "--subnet", "10.66.0.0/24", "n"]);
    c.ok(&["sandbox", "create", "s"]);
    c.ok(&["connect", "-p", "20000-22999:20000-22999", "n", "s"]);
    let count = || {
        let j: serde_json::Value =
            serde_json::from_str(&c.host.exec(&c.host.ns, "nft", &["-j", "list", "map", "inet", "cnm", "dnat4_any"]))
                .unwrap();
        j["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["map"]["elem"].as_array().map_or(0, |e| e.len()))
            .sum::<usize>()
    };
    assert_eq!(count(), 3000);
    c.ok(&["disconnect", "n", "s"]);
    c.ok(&["sandbox", "create", "s2"]);
    c.ok(&["connect", "n", "s2"]);
    assert_eq!(count(), 0);
    c.ok(&["sandbox", "rm", "s"]);
    c.ok(&["sandbox", "rm", "s2"]);
    c.ok(&["network", "rm", "n"]);
}

/// The agent runs the embedded DNS server: sandboxes created before and
/// after it started get `nameserver 127.0.0.11`, `cnm exec` sees the
/// sandbox's resolv.conf and hosts file, names and aliases resolve through
/// glibc (`getent`, `ping NAME`), and when the agent stops every
/// resolv.conf names the upstream servers again.
#[test]
fn the_agent_answers_names_in_sandboxes() {
    use std::io::BufRead;
    let Some(c) = Cnm::new("cli_dns") else { return };
    // The sandboxes' upstream is an address in the test's own outside
    // namespace; only local names are asked here, so nothing goes there.
    let _outside = c.host.outside().unwrap();
    let resolv = |sb: &str| std::fs::read_to_string(c.run.join("files").join(sb).join("resolv.conf")).unwrap();
    c.ok(&["network", "create", "--subnet", "10.62.0.0/24", "web"]);
    c.ok(&["sandbox", "create", "--dns", "198.51.100.2", "early"]);
    assert_eq!(resolv("early"), "nameserver 198.51.100.2\n", "no agent, no 127.0.0.11");
    let mut agent = c.command(&["agent", "--interval", "60"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut lines = std::io::BufReader::new(agent.stdout.take().unwrap()).lines();
    let ready = lines.by_ref().map_while(|l| l.ok()).find(|l| l.contains("DNS at 127.0.0.11"));
    assert_eq!(ready.as_deref(), Some("cnm agent: DNS at 127.0.0.11 in 1 sandboxes"));
    assert_eq!(resolv("early"), "nameserver 127.0.0.11\noptions ndots:0\n");
    for sb in ["c1", "c2"] {
        c.ok(&["sandbox", "create", "--dns", "198.51.100.2", sb]);
    }
    assert_eq!(resolv("c1"), "nameserver 127.0.0.11\noptions ndots:0\n");
    c.ok(&["connect", "web", "c1"]);
    let c2 = c.ok(&["connect", "--alias", "db", "web", "c2"]);
    let ip2 = c2.split_whitespace().nth(2).unwrap().split('/').next().unwrap().to_string();
    assert_eq!(c.ok(&["exec", "c1", "--", "cat", "/etc/resolv.conf"]), resolv("c1"));
    for name in ["c2", "db", "DB.web"] {
        let out = c.ok(&["exec", "c1", "--", "getent", "hosts", name]);
        assert!(out.starts_with(&format!("{ip2} ")), "getent hosts {name}: {out}");
    }
    let ping = c.ok(&["exec", "c1", "--", "ping", "-c1", "-W5", "c2"]);
    assert!(ping.contains(&format!("({ip2})")) && ping.contains("1 received"), "{ping}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent.id() as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    for _ in lines.by_ref() {}
    assert!(agent.wait().unwrap().success());
    for sb in ["early", "c1", "c2"] {
        assert_eq!(resolv(sb), "nameserver 198.51.100.2\n", "{sb} after the agent stopped");
    }
    for sb in ["early", "c1", "c2"] {
        c.ok(&["sandbox", "rm", sb]);
    }
    c.ok(&["network", "rm", "web"]);
}

#[test]
fn services_work_on_one_host_without_an_agent() {
    let Some(c) = Cnm::bare("cli-svc") else { return };
    c.ok(&["network", "create", "--subnet", "10.62.0.0/24", "web"]);
    let mut servers = Vec::new();
    for name in ["s1", "s2"] {
        let path = c.ok(&["sandbox", "create", name]);
        c.ok(&["connect", "web", name]);
        let ns = cnm_netns::NetNs::open(path.trim()).unwrap();
        let say = format!("SYSTEM:echo {name}");
        servers.push(c.host.spawn(&ns, "socat", &["TCP-LISTEN:80,fork,reuseaddr", &say]));
        common::wait_listening(&ns, 80);
    }
    // Ingress needs the overlay (and its agent): refused, nothing made.
    let err = c.fails(1, &["service", "create", "--network", "web", "-p", "8080:80", "api"]);
    assert!(err.contains("mode=ingress needs the overlay driver"), "{err}");
    assert_eq!(c.ok(&["service", "ls"]).lines().count(), 1);

    c.ok(&["service", "create", "--network", "web", "-p", "mode=host,8080:80", "api"]);
    c.ok(&["service", "add-backend", "api", "s1"]);
    c.ok(&["service", "add-backend", "api", "s2"]);
    let err = c.fails(1, &["service", "add-backend", "api", "s2"]);
    assert!(err.contains("already exists"), "{err}");
    // A client connected after the service exists balances its virtual IP.
    let path = c.ok(&["sandbox", "create", "client"]);
    c.ok(&["connect", "web", "client"]);
    let client = cnm_netns::NetNs::open(path.trim()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["service", "inspect", "api"])).unwrap();
    let vip = v[0]["vips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    let ask = |ns: &cnm_netns::NetNs, to: &str| -> String {
        ns.exec("socat", ["-T", "5", "-", &format!("TCP:{to}")]).unwrap_or_default().trim().to_string()
    };
    let seen: std::collections::BTreeSet<String> = (0..30).map(|_| ask(&client, &format!("{vip}:80"))).collect();
    assert_eq!(seen, ["s1", "s2"].map(String::from).into(), "through {vip}");
    // The host-mode port, from the host.
    let seen: std::collections::BTreeSet<String> = (0..30).map(|_| ask(&c.host.ns, "127.0.0.1:8080")).collect();
    assert!(seen.iter().all(|s| s == "s1" || s == "s2") && !seen.is_empty(), "{seen:?}");
    c.ok(&["service", "rm-backend", "api", "s1"]);
    let seen: std::collections::BTreeSet<String> = (0..20).map(|_| ask(&client, &format!("{vip}:80"))).collect();
    assert_eq!(seen, ["s2".to_string()].into());
    c.ok(&["service", "rm", "api"]);
    for name in ["client", "s1", "s2"] {
        c.ok(&["sandbox", "rm", name]);
    }
    c.ok(&["network", "rm", "web"]);
    let nft = c.host.ns.exec("nft", ["list", "tables"]).unwrap();
    assert!(!nft.contains("cnm-lb"), "the last service took its table: {nft}");
    assert!(!c.state.exists() || common::walk(&c.state).iter().all(|p| p.is_dir()), "{:?}", common::walk(&c.state));
}

#[test]
fn predefined_networks_exist_from_the_first_command() {
    let Some(c) = Cnm::new("cli-predef") else { return };
    // Fresh state: Docker's three, in its order and columns.
    let ls = c.ok(&["network", "ls"]);
    let rows: Vec<Vec<&str>> = ls.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]);
    let named: Vec<(&str, &str, &str)> = rows[1..].iter().map(|r| (r[1], r[2], r[3])).collect();
    assert_eq!(named, [("bridge", "bridge", "local"), ("host", "host", "local"), ("none", "null", "local")]);
    assert!(!c.host_links().contains(&"cnm0".to_string()), "cnm0 waits for a first join");

    // Removing one is refused with Docker's message, and changes nothing.
    let before = (c.ok(&["network", "ls"]), walk(&c.state));
    for n in ["bridge", "host", "none"] {
        let err = c.fails(1, &["network", "rm", n]);
        assert!(err.contains(&format!("{n} is a pre-defined network and cannot be removed")), "{err}");
    }
    assert_eq!((c.ok(&["network", "ls"]), walk(&c.state)), before);

    // Inspect: Docker's keys, and the default bridge's options.
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["network", "inspect", "bridge"])).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("../../cnm-core/tests/fixtures/docker-network-inspect-bridge.json")).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&v[0]), keys(&reference[0]));
    let options = serde_json::json!({
        "com.docker.network.bridge.default_bridge": "true",
        "com.docker.network.bridge.enable_icc": "true",
        "com.docker.network.bridge.enable_ip_masquerade": "true",
        "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
        "com.docker.network.bridge.name": "cnm0",
        "com.docker.network.driver.mtu": "1500",
    });
    assert_eq!(v[0]["Options"], options);
    assert_eq!(v[0]["IPAM"]["Config"], serde_json::json!([{ "Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1" }]));
    // Its subnet was taken first: an automatic one comes after it.
    c.ok(&["network", "create", "auto"]);
    let auto: serde_json::Value = serde_json::from_str(&c.ok(&["network", "inspect", "auto"])).unwrap();
    assert_eq!(auto[0]["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/24");

    // An agent serves names (upstream: a stub that says "no such name").
    let outside = c.host.outside().unwrap();
    cnm_cli::probe::dns_nxdomain(&outside.ns).unwrap();
    /// Killed also when the test fails.
    struct Agent(std::process::Child);
    impl Drop for Agent {
        fn drop(&mut self) {
            self.0.kill().ok();
            self.0.wait().ok();
        }
    }
    let mut agent =
        Agent(c.command(&["agent", "--interval", "3600"]).stdout(std::process::Stdio::piped()).spawn().unwrap());
    let mut out = std::io::BufReader::new(agent.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("DNS at 127.0.0.11") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0, "the agent exited");
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let sandbox = |name: &str, net: &str| -> cnm_netns::NetNs {
        let path = c.ok(&["sandbox", "create", "--dns", "198.51.100.2", "--network", net, name]);
        cnm_netns::NetNs::open(path.trim()).unwrap()
    };
    let getent = |sb: &str, name: &str| c.run(&["exec", sb, "--", "getent", "hosts", name]);
    // Positive control: names on a user-defined network.
    sandbox("u1", "auto");
    sandbox("u2", "auto");
    assert!(getent("u1", "u2").status.success(), "names resolve on a user-defined network");
    // The default bridge: addresses, no names.
    let a1 = sandbox("a1", "bridge");
    let a2 = sandbox("a2", "bridge");
    assert!(c.host_links().contains(&"cnm0".to_string()), "cnm0 came with the first join");
    let ip = |ns: &cnm_netns::NetNs| -> String {
        let j = c.host.ip_json(ns, &["-4", "addr", "show", "eth0"]);
        j[0]["addr_info"][0]["local"].as_str().unwrap().to_string()
    };
    let (ip1, ip2) = (ip(&a1), ip(&a2));
    assert!(ip1.starts_with("172.17.0.") && ip2.starts_with("172.17.0."), "{ip1} {ip2}");
    assert!(c.host.ping(&a1, ip2.parse().unwrap()) && c.host.ping(&a2, ip1.parse().unwrap()));
    assert!(!getent("a1", "a2").status.success(), "a1 resolves a2 on the default bridge");
    assert!(!getent("a2", "a1").status.success(), "a2 resolves a1 on the default bridge");
    let v: serde_json::Value = serde_json::from_str(&c.ok(&["network", "inspect", "bridge"])).unwrap();
    let names: Vec<&str> =
        v[0]["Containers"].as_object().unwrap().values().map(|c| c["Name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // none: loopback only; host: the host's namespace.
    let n1 = sandbox("n1", "none");
    let links = c.host.ip_json(&n1, &["link", "show"]);
    assert_eq!(links.as_array().unwrap().len(), 1, "{links}");
    c.ok(&["sandbox", "create", "--network", "host", "h1"]);
    let h1: serde_json::Value = serde_json::from_str(&c.ok(&["sandbox", "inspect", "h1"])).unwrap();
    assert_eq!(h1["NetNs"].as_str().unwrap(), c.host.ns.proc_path().to_str().unwrap());
    let err = c.fails(1, &["sandbox", "create", "--network", "nowhere", "x1"]);
    assert!(err.contains("\"nowhere\" not found"), "{err}");
    assert!(c.fails(1, &["sandbox", "inspect", "x1"]).contains("not found"), "a refused create leaves no sandbox");
    drop(agent);

    // A reboot: cnm0 gone, the run directory empty; reconcile brings cnm0
    // back with its address.
    c.host.handle.link_del("cnm0").unwrap();
    cnm_netns::NetNs::unmount_all_below(&c.run);
    std::fs::remove_dir_all(&c.run).unwrap();
    c.ok(&["reconcile"]);
    let addrs = c.host.ip_json(&c.host.ns, &["addr", "show", "cnm0"]);
    let have: Vec<&str> =
        addrs[0]["addr_info"].as_array().unwrap().iter().filter_map(|a| a["local"].as_str()).collect();
    assert!(have.contains(&"172.17.0.1"), "{addrs}");
}

#[test]
fn the_default_bridge_follows_bip_and_default_address_pool() {
    let Some(c) = Cnm::new("cli-bip") else { return };
    let v: serde_json::Value = serde_json::from_str(&c.ok(&[
        "--bip",
        "10.99.0.1/24",
        "--default-bridge",
        "dflt0",
        "network",
        "inspect",
        "bridge",
    ]))
    .unwrap();
    assert_eq!(v[0]["IPAM"]["Config"], serde_json::json!([{ "Subnet": "10.99.0.0/24", "Gateway": "10.99.0.1" }]));
    assert_eq!(v[0]["Options"]["com.docker.network.bridge.name"], "dflt0");
    let Some(d) = Cnm::new("cli-pool") else { return };
    let pool = ["--default-address-pool", "base=10.123.0.0/16,size=24"];
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&[&pool[..], &["network", "inspect", "bridge"]].concat())).unwrap();
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.123.0.0/24");
    d.ok(&[&pool[..], &["network", "create", "n"]].concat());
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["network", "inspect", "n"])).unwrap();
    assert_eq!(v[0]["IPAM"]["Config"][0]["Subnet"], "10.123.1.0/24");
    let err = d.fails(2, &["--default-address-pool", "base=10.0.0.0/16", "network", "ls"]);
    assert!(err.contains("base=CIDR,size=N"), "{err}");
}
