//! Three hosts and etcd in namespaces of one test host: the host
//! namespaces and etcd's on an underlay bridge, and on each host its own
//! `cnm` state and `cnm agent` process.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cnm_core::Store;
use cnm_netns::testing::{TestHost, TestNs};
use cnm_netns::{LinkAdd, NetNs};
use cnm_store_etcd::testing::EtcdServer;
use cnm_store_etcd::EtcdStore;

use super::underlay_ns;

pub const ETCD_IP: &str = "192.0.2.100";
pub const LEASE_TTL_S: u64 = 2;

/// One host: its namespace, directories and agent.
pub struct Host {
    pub n: usize,
    /// `--host-name` (a label; several hosts may share one).
    pub name: String,
    pub ns: TestNs,
    pub state: PathBuf,
    pub run: PathBuf,
    pub agent: Option<Child>,
}

impl Host {
    pub fn addr(&self) -> String {
        format!("192.0.2.{}", self.n)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cnm"));
        c.arg("--state-dir").arg(&self.state).arg("--run-dir").arg(&self.run);
        c.arg("--host-netns").arg(self.ns.ns.proc_path());
        c.args(["--store", &format!("etcd://{ETCD_IP}:2379")]);
        c.args(["--host-name", &self.name, "--advertise-addr", &self.addr()]);
        c.args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("running cnm")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "host{}: cnm {args:?} failed: {}", self.n, String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    pub fn start_agent(&mut self) {
        let ttl = LEASE_TTL_S.to_string();
        let child = self
            .cmd(&["agent", "--interval", "3600", "--lease-ttl", &ttl])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting cnm agent");
        self.agent = Some(child);
    }

    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }

    /// A sandbox connected to `net` with `ip`; its namespace.
    pub fn container(&self, name: &str, net: &str, ip: &str) -> NetNs {
        let path = self.ok(&["sandbox", "create", name]);
        self.ok(&["connect", "--ip", ip, net, name]);
        NetNs::open(path.trim()).unwrap()
    }

    /// The overlay namespace of network `id` on this host.
    pub fn overlay_ns(&self, id: &str) -> Option<NetNs> {
        NetNs::open(self.run.join("overlay").join(format!("ov-{}", &id[..12]))).ok()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill_agent();
    }
}

/// Fields drop in order: agents first, the test host (and its directory)
/// last.
pub struct Cluster {
    pub hosts: Vec<Host>,
    pub etcd: EtcdServer,
    pub _etcd_ns: TestNs,
    pub tb: TestHost,
}

pub fn cluster(test: &str) -> Option<Cluster> {
    let tb = TestHost::new(test)?;
    tb.handle.link_add(&LinkAdd::bridge("ul0").up()).unwrap();
    let attach = |name: &str, ip: &str| underlay_ns(&tb, name, ip);
    let etcd_ns = attach("etcd", ETCD_IP);
    let etcd = EtcdServer::start(&etcd_ns.ns, ETCD_IP.parse().unwrap(), tb.dir().join("etcd"));
    let hosts = (1..=3)
        .map(|n| {
            let ns = attach(&format!("h{n}"), &format!("192.0.2.{n}"));
            let d = tb.dir().join(format!("h{n}"));
            Host { n, name: format!("host{n}"), ns, state: d.join("state"), run: d.join("run"), agent: None }
        })
        .collect();
    Some(Cluster { hosts, etcd, _etcd_ns: etcd_ns, tb })
}

impl Cluster {
    /// A client of the shared store, from host 1's namespace.
    pub fn store(&self) -> EtcdStore {
        EtcdStore::connect_in(&self.etcd.url, Some(&self.hosts[0].ns.ns)).unwrap()
    }

    pub fn wait_hosts_registered(&self, n: usize) {
        let s = self.store();
        let t = Instant::now();
        while s.count("global/overlay/hosts/").unwrap() < n {
            assert!(t.elapsed() < Duration::from_secs(10), "agents did not register");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Waits until `f` holds; how long that took.
pub fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    t.elapsed()
}
