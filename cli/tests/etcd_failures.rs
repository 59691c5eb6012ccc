//! Overlay hosts on a production-shaped etcd when etcd fails: three cnm
//! hosts (each its own `cnm agent`) on a three-member etcd cluster with TLS
//! and client certificates, all in namespaces the test makes. The etcd
//! leader dies during 100 connects; every etcd member stops (SIGSTOP) for
//! 30 s. Containers keep talking, commands fail cleanly, nothing is lost
//! or given twice, and every host converges.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cnm_core::Store;
use cnm_netns::testing::{ping, TestHost, TestNs};
use cnm_netns::{LinkAdd, NetNs};
use cnm_store_etcd::testing::EtcdCluster;
use cnm_store_etcd::EtcdStore;

/// One cnm host: namespace, directories, agent.
struct Host {
    n: usize,
    ns: TestNs,
    dir: PathBuf,
    store_args: Vec<String>,
    agent: Option<Child>,
}

impl Host {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cnm"));
        c.arg("--state-dir").arg(self.dir.join("state")).arg("--run-dir").arg(self.dir.join("run"));
        c.arg("--host-netns").arg(self.ns.ns.proc_path()).args(&self.store_args);
        c.args(["--host-name", &format!("h{}", self.n), "--advertise-addr", &format!("192.0.2.{}", self.n)]);
        c.args(args);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running cnm")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "h{}: cnm {args:?}: {}", self.n, String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    /// This host's containers on `net` and their addresses (from inspect).
    fn containers(&self, net: &str) -> Vec<(String, String)> {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["network", "inspect", net])).unwrap();
        let containers = v[0]["Containers"].as_object().cloned().unwrap_or_default();
        containers
            .values()
            .map(|c| {
                let addr = c["IPv4Address"].as_str().unwrap().split('/').next().unwrap().to_string();
                (c["Name"].as_str().unwrap().to_string(), addr)
            })
            .collect()
    }

    fn addresses(&self, net: &str) -> Vec<String> {
        self.containers(net).into_iter().map(|(_, a)| a).collect()
    }

    /// A container's namespace.
    fn netns(&self, name: &str) -> NetNs {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["sandbox", "inspect", name])).unwrap();
        NetNs::open(v["NetNs"].as_str().or(v[0]["NetNs"].as_str()).unwrap()).unwrap()
    }

    /// The remote addresses programmed in this host's overlay namespace.
    fn programmed(&self, tb: &TestHost, net_id: &str) -> BTreeSet<String> {
        let path = self.dir.join("run/overlay").join(format!("ov-{}", &net_id[..12]));
        let Ok(ns) = NetNs::open(&path) else { return BTreeSet::new() };
        let j = tb.ip_json(&ns, &["neigh", "show", "nud", "permanent"]);
        j.as_array().unwrap().iter().filter_map(|n| n["dst"].as_str().map(String::from)).collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut a) = self.agent.take() {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

/// Fields drop in order: agents, etcd, namespaces, the test host.
struct Rig {
    hosts: Vec<Host>,
    etcd: EtcdCluster,
    members: Vec<TestNs>,
    tb: TestHost,
}

fn rig(test: &str) -> Option<Rig> {
    let tb = TestHost::new(test)?;
    tb.handle.link_add(&LinkAdd::bridge("ul0").up()).unwrap();
    let ips: Vec<IpAddr> = (11..=13).map(|i| format!("192.0.2.{i}").parse().unwrap()).collect();
    let members: Vec<TestNs> =
        ips.iter().enumerate().map(|(i, ip)| tb.on_bridge("ul0", &format!("e{i}"), &ip.to_string()).unwrap()).collect();
    let refs: Vec<&NetNs> = members.iter().map(|m| &m.ns).collect();
    let etcd = EtcdCluster::start(&refs, &ips, tb.dir().join("etcd"));
    let store_args = vec![
        "--store".to_string(),
        etcd.url(),
        "--store-ca".into(),
        etcd.pki.ca.display().to_string(),
        "--store-cert".into(),
        etcd.client.0.display().to_string(),
        "--store-key".into(),
        etcd.client.1.display().to_string(),
    ];
    let mut hosts: Vec<Host> = (1..=3)
        .map(|n| Host {
            n,
            ns: tb.on_bridge("ul0", &format!("h{n}"), &format!("192.0.2.{n}")).unwrap(),
            dir: tb.dir().join(format!("h{n}")),
            store_args: store_args.clone(),
            agent: None,
        })
        .collect();
    for h in &mut hosts {
        let agent = h.cmd(&["agent", "--interval", "3600", "--lease-ttl", "5", "--no-dns"]);
        h.agent = Some(spawn_quiet(agent));
    }
    let rig = Rig { hosts, etcd, members, tb };
    rig.wait_registered();
    Some(rig)
}

fn spawn_quiet(mut c: Command) -> Child {
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starting cnm agent")
}

impl Rig {
    fn store(&self) -> EtcdStore {
        EtcdStore::open(self.etcd.config(), Some(&self.hosts[0].ns.ns)).unwrap()
    }

    /// Waits until the three agents have their host records in etcd.
    fn wait_registered(&self) {
        let store = self.store();
        let t = Instant::now();
        while store.count("global/overlay/hosts/").unwrap() < 3 {
            assert!(t.elapsed() < Duration::from_secs(30), "the agents never registered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member that leads the cluster now (from each member's status).
    fn leader(&self) -> usize {
        let (ca, cert, key) = (
            self.etcd.pki.ca.display().to_string(),
            self.etcd.client.0.display().to_string(),
            self.etcd.client.1.display().to_string(),
        );
        for (i, m) in self.members.iter().enumerate() {
            let url = format!("https://192.0.2.{}:2379/v3/maintenance/status", 11 + i);
            let args = [
                "-s",
                "--max-time",
                "5",
                "--cacert",
                &ca,
                "--cert",
                &cert,
                "--key",
                &key,
                "-X",
                "POST",
                "-d",
                "{}",
                &url,
            ];
            let out = m.ns.exec("curl", args).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
            if v["leader"].is_string() && v["leader"] == v["header"]["member_id"] {
                return i;
            }
        }
        panic!("no member says it leads");
    }

    /// Waits until every host programs exactly the other hosts' endpoints.
    fn converged(&self, net_id: &str, limit: Duration) {
        let t = Instant::now();
        loop {
            let all: Vec<Vec<String>> = self.hosts.iter().map(|h| h.addresses("ov")).collect();
            let ok = self.hosts.iter().enumerate().all(|(i, h)| {
                let others: BTreeSet<String> =
                    all.iter().enumerate().filter(|(j, _)| *j != i).flat_map(|(_, a)| a.clone()).collect();
                h.programmed(&self.tb, net_id) == others
            });
            if ok {
                return;
            }
            assert!(t.elapsed() < limit, "the hosts never converged: {all:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn net_id(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.hosts[0].ok(&["network", "inspect", "ov"])).unwrap();
        v[0]["Id"].as_str().unwrap().to_string()
    }
}

#[test]
fn the_etcd_leader_dies_during_a_hundred_connects() {
    let Some(mut r) = rig("etcd_leader_dies") else { return };
    r.hosts[0].ok(&["network", "create", "-d", "overlay", "--subnet", "10.81.0.0/16", "ov"]);
    let attempted = AtomicUsize::new(0);
    let (third, third_reached) = std::sync::mpsc::channel::<()>();
    let leader = r.leader();
    let failed: Vec<Vec<String>> = std::thread::scope(|s| {
        let runs: Vec<_> = r
            .hosts
            .iter()
            .map(|h| {
                let (attempted, third) = (&attempted, third.clone());
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for i in 0..34 {
                        let name = format!("c{}x{i}", h.n);
                        h.ok(&["sandbox", "create", &name]);
                        if attempted.fetch_add(1, Ordering::SeqCst) == 32 {
                            let _ = third.send(());
                        }
                        let o = h.run(&["connect", "ov", &name]);
                        if !o.status.success() {
                            failed.push(format!("{name}: {}", String::from_utf8_lossy(&o.stderr)));
                        }
                    }
                    failed
                })
            })
            .collect();
        // A third of the way in, the leader dies.
        third_reached.recv().unwrap();
        r.etcd.kill(leader);
        runs.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let failed: Vec<String> = failed.into_iter().flatten().collect();
    eprintln!("leader m{leader} killed after 33 of 102 connects; {} failed: {failed:#?}", failed.len());
    // A connect may fail while the cluster elects a leader, but cleanly.
    assert!(failed.len() <= 10, "too many failed connects: {failed:#?}");
    for f in &failed {
        assert!(f.contains("unavailable") || f.contains("etcd"), "{f}");
    }

    // No address lost or given twice: the endpoints' addresses are
    // distinct, and etcd holds a lease for each and no other.
    let mut all = Vec::new();
    for h in &r.hosts {
        all.extend(h.addresses("ov"));
    }
    let distinct: BTreeSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "an address given twice: {all:?}");
    assert_eq!(all.len() + failed.len(), 102, "{failed:#?}");
    let store = EtcdStore::open(r.etcd.config(), Some(&r.hosts[0].ns.ns)).unwrap();
    let leases: BTreeSet<String> = store
        .list_keys("leases/global-")
        .unwrap()
        .into_iter()
        .filter_map(|k| k.rsplit('/').next().map(String::from))
        .filter(|a| a != "10.81.0.1")
        .collect();
    let held: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(leases, held, "etcd's leases are exactly the endpoints' addresses");

    // Every host programs every other host's endpoints, and they talk.
    let id = r.net_id();
    r.converged(&id, Duration::from_secs(60));
    let (name, _) = r.hosts[0].containers("ov")[0].clone();
    let (_, to) = r.hosts[2].containers("ov")[0].clone();
    assert!(ping(&r.hosts[0].netns(&name), to.parse().unwrap()), "{name} on host 1 reaches {to} on host 3");
}

/// SIGSTOP or SIGCONT to every member.
fn signal_all(r: &Rig, sig: nix::sys::signal::Signal) {
    for i in 0..3 {
        let pid = r.etcd.pid(i).expect("member runs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
    }
}

#[test]
fn containers_keep_talking_while_etcd_stops_and_everything_converges_after() {
    let Some(r) = rig("etcd_stopped") else { return };
    r.hosts[0].ok(&["network", "create", "-d", "overlay", "--subnet", "10.82.0.0/16", "ov"]);
    let mut spaces = Vec::new();
    for h in &r.hosts {
        let path = h.ok(&["sandbox", "create", &format!("s{}", h.n)]);
        h.ok(&["connect", "ov", &format!("s{}", h.n)]);
        spaces.push(NetNs::open(path.trim()).unwrap());
    }
    let id = r.net_id();
    r.converged(&id, Duration::from_secs(30));
    let addrs: Vec<IpAddr> = r.hosts.iter().map(|h| h.addresses("ov")[0].parse().unwrap()).collect();
    let pairs = [(0, 1), (1, 2), (2, 0)];
    for (a, b) in pairs {
        assert!(ping(&spaces[a], addrs[b]), "before: host {} reaches host {}", a + 1, b + 1);
    }
    r.hosts[0].ok(&["sandbox", "create", "late"]);

    // Every member stops for 30 s.
    signal_all(&r, nix::sys::signal::Signal::SIGSTOP);
    let stopped = Instant::now();
    // A command fails cleanly within a few seconds, leaving nothing.
    let t = Instant::now();
    let o = r.hosts[0].run(&["connect", "ov", "late"]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(t.elapsed() < Duration::from_secs(15), "it took {:?}", t.elapsed());
    assert!(err.contains("unavailable") && err.contains("192.0.2.11:2379"), "{err}");
    // Meanwhile the containers keep talking across hosts.
    while stopped.elapsed() < Duration::from_secs(30) {
        for (a, b) in pairs {
            assert!(ping(&spaces[a], addrs[b]), "while etcd is stopped: host {} reaches host {}", a + 1, b + 1);
        }
    }
    signal_all(&r, nix::sys::signal::Signal::SIGCONT);

    // The failed connect left nothing on host 1.
    let inspect = r.hosts[0].ok(&["sandbox", "inspect", "late"]);
    assert!(!inspect.contains("\"Network\""), "the failed connect left an endpoint: {inspect}");
    let links = r.tb.exec(&r.hosts[0].ns.ns, "ip", &["-o", "link", "show", "type", "veth"]);
    let ports = links.lines().filter(|l| l.contains("master cnm_gwbridge")).count();
    assert_eq!(ports, 1, "one gateway bridge port, s1's: {links}");

    // Everything converges: the late container joins, every host programs
    // it, and the hosts talk as before.
    // etcd may have dropped leases that outlived their TTL while stopped:
    // the agents register again first.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        r.wait_registered();
        let o = r.hosts[0].run(&["connect", "ov", "late"]);
        if o.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(Instant::now() < deadline, "connect never worked again: {err}");
    }
    r.converged(&id, Duration::from_secs(60));
    let late = r.hosts[0].containers("ov").into_iter().find(|(n, _)| n == "late").unwrap().1;
    assert!(ping(&spaces[2], late.parse().unwrap()), "host 3 reaches the late container");
    for (a, b) in pairs {
        assert!(ping(&spaces[a], addrs[b]), "after: host {} reaches host {}", a + 1, b + 1);
    }
}
