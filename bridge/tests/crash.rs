//! A process killed with SIGKILL in the middle of joins and leaves:
//! `reconcile()` finds its leftover veths, rules and leases, and afterwards
//! the links, published ports and leases match the live endpoints exactly.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cnm_bridge::{BridgeDriver, MARKER};
use cnm_core::{Controller, EndpointConfig, NetworkConfig, SandboxConfig};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::testing::TestHost;
use cnm_netns::NetNs;

fn controller(dir: &Path, host: NetNs) -> Controller {
    let b = Controller::builder().state_dirs(dir.join("lib"), dir.join("run")).unwrap();
    // The same split store the builder made, for IPAM and the firewall.
    let durable: Arc<dyn cnm_core::Store> = Arc::new(cnm_core::FileStore::open(dir.join("lib")).unwrap());
    let volatile: Arc<dyn cnm_core::Store> =
        Arc::new(cnm_core::FileStore::open_volatile(dir.join("run/state")).unwrap());
    let store: Arc<dyn cnm_core::Store> = Arc::new(cnm_core::SplitStore::new(
        durable,
        volatile,
        cnm_core::VOLATILE_PREFIXES.iter().map(|s| s.to_string()).collect(),
    ));
    b.store(store.clone())
        .ipam(Arc::new(Ipam::new(store.clone())))
        .firewall(Arc::new(NatFirewall::new(Backend::Nftables, host.try_clone().unwrap(), store)))
        .driver(Arc::new(BridgeDriver::new()))
        .host_netns(host)
        .build()
        .unwrap()
}

/// Not a test: the body of the child process.
#[test]
#[ignore = "helper: run as a child process by the crash test"]
fn child_entry() {
    let (Ok(dir), Ok(ns)) = (std::env::var("CNM_DIR"), std::env::var("CNM_HOSTNS")) else { return };
    let ctl = controller(Path::new(&dir), NetNs::open(&ns).unwrap());
    for i in std::process::id() as usize.. {
        let sb = format!("s{}", i % 6);
        let _ = ctl.create_sandbox(SandboxConfig { name: sb.clone(), ..Default::default() });
        let ports = if i % 2 == 0 { vec![format!("{}:80", 20000 + i % 6).parse().unwrap()] } else { vec![] };
        if ctl.connect("tn", &sb, EndpointConfig { ports, ..Default::default() }).is_ok() {
            println!("joined {i}");
        }
        if i % 3 == 0 {
            let _ = ctl.disconnect("tn", &sb);
        }
        if i % 4 == 0 {
            let _ = ctl.delete_sandbox(&sb);
        }
    }
}

#[test]
fn sigkill_during_joins_is_repaired_by_reconcile() {
    let Some(host) = TestHost::new("bridge_sigkill") else { return };
    let dir = host.dir().join("state");
    let ctl = controller(&dir, host.ns.try_clone().unwrap());
    let net = ctl.create_network(NetworkConfig::new("tn", "bridge").subnet("10.70.0.0/24")).unwrap();
    let bridge = format!("br-{}", net.id.short());
    drop(ctl);
    let mut rng: u64 = (std::process::id() as u64).wrapping_mul(0x9e3779b97f4a7c15);
    let (mut joins, mut repaired) = (0, 0);
    for round in 0..25 {
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_entry", "--ignored", "--nocapture", "--test-threads=1"])
            .env("CNM_DIR", &dir)
            .env("CNM_HOSTNS", host.ns.proc_path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(30 + (rng >> 33) % 150));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        let mut out = String::new();
        c.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        c.wait().unwrap();
        joins += out.matches("joined").count();

        let ctl = controller(&dir, host.ns.try_clone().unwrap());
        ctl.restore().unwrap();
        let report = ctl.reconcile().unwrap_or_else(|e| panic!("round {round}: reconcile: {e}"));
        repaired += usize::from(!report.repairs.is_empty());
        let eps = ctl.endpoints(Some("tn")).unwrap();
        let joined: Vec<_> = eps.iter().filter(|e| e.sandbox.is_some()).collect();
        // Links: exactly one veth on the bridge per joined endpoint.
        let ours: Vec<String> = host
            .handle
            .link_list()
            .unwrap()
            .into_iter()
            .filter(|l| l.kind.as_deref() == Some("veth") && l.alias.as_deref().is_some_and(|a| a.starts_with(MARKER)))
            .map(|l| l.alias.unwrap()[MARKER.len()..].to_string())
            .collect();
        let mut want: Vec<String> = joined.iter().map(|e| e.id.to_string()).collect();
        let mut got = ours.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want, "round {round}: veths vs joined endpoints ({report:?})");
        let ports = host.bridge_json(&host.ns, &["link", "show"]);
        assert_eq!(ports.as_array().unwrap().iter().filter(|p| p["master"] == bridge).count(), joined.len());
        // Leases: one per endpoint; published ports: those of joined endpoints.
        let leases = host.dir().join("state/run/state/leases");
        let lease_count = walk(&leases);
        assert_eq!(lease_count, eps.len(), "round {round}: address leases vs endpoints");
        let published: usize = joined.iter().map(|e| e.bindings.len()).sum();
        let table = host.exec(&host.ns, "nft", &["-j", "list", "map", "inet", "cnm", "dnat4_any"]);
        let v: serde_json::Value = serde_json::from_str(&table).unwrap();
        let elems = v["nftables"][1]["map"]["elem"].as_array().map(|a| a.len()).unwrap_or(0);
        assert_eq!(elems, published, "round {round}: published ports vs bindings");
        // Sandboxes whose namespace the controller made are all still there.
        for sb in ctl.sandboxes().unwrap() {
            assert!(NetNs::open(&sb.netns).is_ok(), "round {round}: sandbox {} lost its namespace", sb.name);
        }
        assert_eq!(
            ctl.reconcile().unwrap().repairs,
            Vec::<String>::new(),
            "round {round}: a second reconcile finds nothing"
        );
    }
    println!("25 kills: {joins} joins done, {repaired} recoveries needed repairs");
    assert!(joins > 25, "the child did too little work to test anything");
    assert!(repaired > 3, "kills never landed mid-operation");
}

/// Files below `dir` (the IPAM's lease keys).
fn walk(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                usize::from(!e.file_name().to_string_lossy().starts_with('.'))
            }
        })
        .sum()
}
