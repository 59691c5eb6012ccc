//! Process-level tests: a child killed with SIGKILL at random moments, and
//! many processes sharing one state directory at once.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_core::store::{FileStore, SplitStore, Store};
use cnm_core::{
    Controller, EndpointConfig, ErrorKind, JoinState, NetworkConfig, SandboxConfig, State, VOLATILE_PREFIXES,
};
use common::{FakeDriver, Faults, TestIpam};

struct Opened {
    ctl: Controller,
    ipam: Arc<TestIpam>,
    driver: Arc<FakeDriver>,
}

/// A controller on `dir` as a separate process would open it.
fn open(dir: &Path) -> Opened {
    let durable: Arc<dyn Store> = Arc::new(FileStore::open(dir.join("lib")).unwrap());
    let volatile: Arc<dyn Store> = Arc::new(FileStore::open_volatile(dir.join("run/state")).unwrap());
    let store: Arc<dyn Store> =
        Arc::new(SplitStore::new(durable, volatile, VOLATILE_PREFIXES.iter().map(|s| s.to_string()).collect()));
    let faults = Arc::new(Faults::default());
    let ipam = Arc::new(TestIpam { store: store.clone(), faults: faults.clone() });
    let driver = Arc::new(FakeDriver::new("bridge", faults, Some(dir.join("kernel"))));
    let ctl = Controller::builder()
        .store(store)
        .run_dir(dir.join("run"))
        .ipam(ipam.clone())
        .driver(driver.clone())
        .build()
        .unwrap();
    Opened { ctl, ipam, driver }
}

/// Removes the test's directory when dropped, also after a panic.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmpdir(tag: &str) -> (PathBuf, Cleanup) {
    let d = std::env::temp_dir().join(format!("cnm-core-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    (d.clone(), Cleanup(d))
}

fn child(mode: &str, dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_entry", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CNM_CHILD", mode)
        .env("CNM_DIR", dir)
        // The parent's namespace, by a path that outlives the child.
        .env("CNM_NETNS", cnm_netns::testing::own_netns_path())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .stdout(Stdio::piped());
    c
}

/// Not a test: the body of the child processes the tests below start.
#[test]
#[ignore = "helper: run as a child process by the other tests in this file"]
fn child_entry() {
    let (Ok(mode), Ok(dir)) = (std::env::var("CNM_CHILD"), std::env::var("CNM_DIR")) else { return };
    let dir = PathBuf::from(dir);
    match mode.as_str() {
        "crash-loop" => crash_loop(&dir),
        "create-network" => {
            let name = std::env::var("CNM_NAME").unwrap();
            cnm_netns::testing::ready_then_wait_for_go(&dir);
            let o = open(&dir);
            match o.ctl.create_network(NetworkConfig::new(name, "bridge")) {
                Ok(_) => println!("RESULT OK"),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => println!("RESULT EXISTS {e}"),
                Err(e) => println!("RESULT ERR {e}"),
            }
        }
        "connect" => {
            let name = std::env::var("CNM_NAME").unwrap();
            cnm_netns::testing::ready_then_wait_for_go(&dir);
            let o = open(&dir);
            let netns =
                std::env::var_os("CNM_NETNS").map(PathBuf::from).unwrap_or_else(cnm_netns::testing::own_netns_path);
            let sb = SandboxConfig { name: name.clone(), netns: Some(netns), ..Default::default() };
            let r = o.ctl.create_sandbox(sb).and_then(|_| o.ctl.connect("shared", &name, EndpointConfig::default()));
            match r {
                Ok(ep) => println!("RESULT OK {}", ep.ipv4.unwrap()),
                Err(e) => println!("RESULT ERR {e}"),
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Creates, connects, disconnects and deletes as fast as it can, forever.
fn crash_loop(dir: &Path) {
    let o = open(dir);
    let ctl = &o.ctl;
    let seed = std::process::id() as usize;
    for i in seed.. {
        let net = format!("n{}", i % 3);
        match ctl.create_network(NetworkConfig::new(net.clone(), "bridge")) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => panic!("{e}"),
        }
        let sb = format!("s{}", i % 5);
        let netns = std::env::var_os("CNM_NETNS").map(PathBuf::from).unwrap_or_else(cnm_netns::testing::own_netns_path);
        let _ = ctl.create_sandbox(SandboxConfig { name: sb.clone(), netns: Some(netns), ..Default::default() });
        let _ = ctl.connect(&net, &sb, EndpointConfig::default());
        println!("connected {i}");
        if i % 2 == 0 {
            let _ = ctl.disconnect(&net, &sb);
        }
        if i % 3 == 0 {
            let _ = ctl.delete_sandbox(&sb);
        }
        if i % 7 == 0 {
            let _ = ctl.delete_network(&net);
        }
    }
}

/// The invariants after restore + reconcile.
fn check_consistent(dir: &Path) -> (usize, usize) {
    let o = open(dir);
    o.ctl.restore().unwrap_or_else(|e| panic!("restore: {e}"));
    let report = o.ctl.reconcile().unwrap_or_else(|e| panic!("reconcile: {e}"));
    let nets = o.ctl.networks().unwrap();
    let eps = o.ctl.endpoints(None).unwrap();
    let sbs = o.ctl.sandboxes().unwrap();
    let pools = o.ipam.dump();
    let mut expected_kernel = std::collections::BTreeSet::new();
    for n in &nets {
        assert_eq!(n.state, State::Ready, "network {} left {:?}", n.name, n.state);
        expected_kernel.insert(format!("net:{}", n.id));
    }
    let mut owned = std::collections::BTreeSet::new();
    for n in &nets {
        for p in &n.pools {
            owned.insert(p.gateway.unwrap().addr());
        }
    }
    for e in &eps {
        assert_eq!(e.state, State::Ready, "endpoint {} left {:?}", e.name, e.state);
        let a = e.ipv4.expect("an endpoint without its address").addr();
        let (_, (_, allocated)) = pools.iter().find(|(_, (s, _))| s.contains(&a)).expect("endpoint address in no pool");
        assert!(allocated.contains(&a), "endpoint {} has {a}, which IPAM does not have allocated", e.name);
        assert!(owned.insert(a), "address {a} given twice");
        expected_kernel.insert(format!("ep:{}", e.id));
        match &e.sandbox {
            Some(sb) => {
                assert_eq!(e.join_state, JoinState::Joined);
                let s = sbs.iter().find(|s| &s.id == sb).expect("joined to a sandbox that does not exist");
                assert!(s.endpoints.iter().any(|m| m.id == e.id));
                expected_kernel.insert(format!("join:{}", e.id));
            }
            None => assert_eq!(e.join_state, JoinState::Detached),
        }
    }
    let allocated: std::collections::BTreeSet<_> = pools.values().flat_map(|(_, a)| a.iter().copied()).collect();
    assert_eq!(allocated, owned, "addresses allocated without an endpoint or gateway");
    assert_eq!(pools.len(), nets.iter().map(|n| n.pools.len()).sum::<usize>(), "pools without a network");
    assert_eq!(o.driver.objects(), expected_kernel, "fake kernel objects differ from the state");
    (eps.len(), report.repairs.len())
}

#[test]
fn sigkill_at_random_moments_leaves_a_consistent_state() {
    let (dir, _cleanup) = tmpdir("crash");
    let mut rng: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let (mut kills, mut repairs, mut saw_endpoints, mut connects) = (0, 0, 0, 0);
    let start = Instant::now();
    while kills < 200 {
        let mut c = child("crash-loop", &dir).spawn().unwrap();
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(5 + (rng >> 33) % 60));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        c.wait().unwrap();
        connects += out.lines().filter(|l| l.starts_with("connected")).count();
        kills += 1;
        let (eps, fixed) = check_consistent(&dir);
        saw_endpoints += (eps > 0) as usize;
        repairs += (fixed > 0) as usize;
    }
    println!(
        "{kills} kills in {:?}: {connects} connects done, {repairs} recoveries needed repairs, {saw_endpoints} states had endpoints",
        start.elapsed()
    );
    assert!(connects > 100, "the child did too little work to test anything: {connects}");
    assert!(repairs > 10, "kills never landed mid-operation: {repairs}");
}

/// Starts one child per name in `mode`, releases them at once when all are
/// ready, and returns each one's RESULT line.
fn race(dir: &Path, mode: &str, names: &[String]) -> Vec<(String, String)> {
    let kids: Vec<_> =
        names.iter().map(|n| (n.clone(), child(mode, dir).env("CNM_NAME", n).spawn().unwrap())).collect();
    cnm_netns::testing::release_when_ready(dir, kids.len());
    kids.into_iter()
        .map(|(name, c)| {
            let out = c.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            // The harness prints "test child_entry ... " before the child's own output.
            let at = text.find("RESULT").unwrap_or_else(|| panic!("no result from {name}: {text}"));
            (name, text[at..].lines().next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn sixteen_processes_connecting_to_one_network_get_distinct_addresses() {
    let (dir, _cleanup) = tmpdir("connect");
    open(&dir).ctl.create_network(NetworkConfig::new("shared", "bridge").subnet("10.77.0.0/24")).unwrap();
    let names: Vec<String> = (0..16).map(|i| format!("c{i}")).collect();
    let results = race(&dir, "connect", &names);
    let addrs: std::collections::BTreeSet<&str> =
        results.iter().map(|(n, r)| r.strip_prefix("RESULT OK ").unwrap_or_else(|| panic!("{n}: {r}"))).collect();
    assert_eq!(addrs.len(), 16, "{results:?}");
    let o = open(&dir);
    assert_eq!(o.ctl.endpoints(Some("shared")).unwrap().len(), 16);
    assert!(o.ctl.sandboxes().unwrap().iter().all(|s| s.endpoints.len() == 1));
    check_consistent(&dir);
}

#[test]
fn sixteen_processes_creating_networks_with_clashing_names() {
    let (dir, _cleanup) = tmpdir("clash");
    let names: Vec<String> = (0..16).map(|i| if i < 8 { format!("uniq-{i}") } else { "clash".to_string() }).collect();
    let results = race(&dir, "create-network", &names);
    let clash: Vec<&String> = results.iter().filter(|(n, _)| n == "clash").map(|(_, r)| r).collect();
    assert_eq!(clash.iter().filter(|r| r.as_str() == "RESULT OK").count(), 1, "{clash:?}");
    assert_eq!(
        clash.iter().filter(|r| r.starts_with("RESULT EXISTS network \"clash\" already exists")).count(),
        7,
        "{clash:?}"
    );
    assert!(results.iter().filter(|(n, _)| n != "clash").all(|(_, r)| r == "RESULT OK"), "{results:?}");
    let o = open(&dir);
    let nets = o.ctl.networks().unwrap();
    assert_eq!(nets.len(), 9);
    assert!(nets.iter().all(|n| n.state == State::Ready));
    let subnets: std::collections::BTreeSet<_> = nets.iter().map(|n| n.pools[0].subnet).collect();
    assert_eq!(subnets.len(), 9, "every network got its own subnet");
    assert_eq!(o.ipam.dump().len(), 9, "no pool of a loser left behind");
}
