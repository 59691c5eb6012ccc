//! A failure at every step of create-network, join and leave (the bridge
//! driver's and cnm-core's sandbox side) leaves no link, address, route,
//! rule, address lease or hosts-file line behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_bridge::BridgeDriver;
use cnm_core::store::{MemStore, Store};
use cnm_core::testing::Faults;
use cnm_core::{Controller, EndpointConfig, NetworkConfig, SandboxConfig};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::testing::TestHost;
use cnm_netns::NetNs;

struct Rig {
    host: TestHost,
    ctl: Controller,
    store: Arc<dyn Store>,
    faults: Arc<Faults>,
}

fn rig(test: &str) -> Option<Rig> {
    let host = TestHost::new(test)?;
    let faults = Arc::new(Faults::default());
    // One counter for the driver's host-side steps and cnm-core's sandbox
    // side: every step of a join fails in turn.
    let hook = faults.hook();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let ctl = Controller::builder()
        .fault_hook(hook.clone())
        .sandbox_files(host.dir().join("files"))
        .host_netns(host.ns.try_clone().unwrap())
        .run_dir(host.dir().join("run"))
        .store(store.clone())
        .ipam(Arc::new(Ipam::new(store.clone())))
        .firewall(Arc::new(NatFirewall::new(Backend::Nftables, host.ns.try_clone().unwrap(), store.clone())))
        .driver(Arc::new(BridgeDriver::with_fault_hook(hook)))
        .build()
        .unwrap();
    Some(Rig { host, ctl, store, faults })
}

/// Links, addresses and routes of the host and of a sandbox, our nftables
/// table and the whole store (records, leases, port claims).
fn snapshot(r: &Rig, sandbox: Option<&NetNs>) -> String {
    // Detached veths wait a moment for the batched deletion.
    let deadline = Instant::now() + Duration::from_secs(2);
    while r.host.handle.link_list().unwrap().iter().any(|l| l.group == cnm_bridge::REAPER_GROUP)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut nss = vec![&r.host.ns];
    nss.extend(sandbox);
    let mut out = r.host.kernel_state(&nss);
    out.push_str(&r.host.ns.exec("nft", ["list", "table", "inet", "cnm"]).unwrap_or_default());
    // The sandboxes' hosts files.
    for sb in std::fs::read_dir(r.host.dir().join("files")).into_iter().flatten().flatten() {
        let hosts = std::fs::read_to_string(sb.path().join("hosts")).unwrap_or_default();
        out.push_str(&format!("{}:\n{hosts}", sb.file_name().to_string_lossy()));
    }
    for e in r.store.list("").unwrap() {
        out.push_str(&format!("{} {}\n", e.key, String::from_utf8_lossy(&e.value)));
    }
    out
}

/// Fails `op` at step 1, 2, … until it succeeds; after each failure the
/// state must equal `expected` (taken by `setup`'s caller).
fn every_step(name: &str, r: &Rig, sandbox: Option<&NetNs>, op: impl Fn() -> cnm_core::Result<()>, undo: impl Fn()) {
    let before = snapshot(r, sandbox);
    for k in 1..50 {
        r.faults.arm(k);
        match op() {
            Ok(()) => {
                assert!(k > 3, "{name}: only {} steps", k - 1);
                r.faults.arm(0);
                undo();
                assert_eq!(snapshot(r, sandbox), before, "{name}: undoing the successful call left something");
                return;
            }
            Err(e) => {
                assert!(e.to_string().contains("injected failure"), "{name} k={k}: {e}");
                assert_eq!(snapshot(r, sandbox), before, "{name}: a failure at step {k} left something ({e})");
            }
        }
    }
    panic!("{name} never succeeded");
}

#[test]
fn create_network_and_join_fail_cleanly_at_every_step() {
    let Some(r) = rig("bridge_fault_every_step") else { return };
    let mut cfg = NetworkConfig::new("tn", "bridge").subnet("10.40.0.0/24");
    cfg.enable_ipv6 = true;
    // Warm up what is created once and kept by design (IPAM's ULA prefix and
    // space records, the firewall's table).
    r.ctl.create_network(cfg.clone()).unwrap();
    r.ctl.delete_network("tn").unwrap();
    every_step(
        "create_network",
        &r,
        None,
        || r.ctl.create_network(cfg.clone()).map(|_| ()),
        || r.ctl.delete_network("tn").unwrap(),
    );

    r.ctl.create_network(cfg).unwrap();
    let sb = r.ctl.create_sandbox(SandboxConfig { name: "c1".into(), ..Default::default() }).unwrap();
    let ns = NetNs::open(&sb.netns).unwrap();
    // Warm up: loopback stays up and the bridge keeps its link-local address
    // once it has had a port; both are the sandbox's and the bridge's own.
    r.ctl.connect("tn", "c1", EndpointConfig::default()).unwrap();
    r.ctl.disconnect("tn", "c1").unwrap();
    let with_ports = EndpointConfig {
        ports: vec!["8080:80".parse().unwrap(), "5353:53/udp".parse().unwrap()],
        ..Default::default()
    };
    every_step(
        "connect",
        &r,
        Some(&ns),
        || r.ctl.connect("tn", "c1", with_ports.clone()).map(|_| ()),
        || r.ctl.disconnect("tn", "c1").unwrap(),
    );
}

#[test]
fn a_failed_leave_leaves_nothing_once_reconciled() {
    let Some(r) = rig("bridge_fault_leave") else { return };
    r.ctl.create_network(NetworkConfig::new("tn", "bridge")).unwrap();
    let sb = r.ctl.create_sandbox(SandboxConfig { name: "c1".into(), ..Default::default() }).unwrap();
    let ns = NetNs::open(&sb.netns).unwrap();
    let cfg = EndpointConfig { ports: vec!["8080:80".parse().unwrap()], ..Default::default() };
    r.ctl.connect("tn", "c1", cfg.clone()).unwrap();
    r.ctl.disconnect("tn", "c1").unwrap();
    let before = snapshot(&r, Some(&ns));
    for k in 1..10 {
        r.ctl.connect("tn", "c1", cfg.clone()).unwrap();
        r.faults.arm(k);
        let first = r.ctl.disconnect("tn", "c1");
        r.faults.arm(0);
        if first.is_ok() {
            assert!(k > 2, "leave has several steps");
            assert_eq!(snapshot(&r, Some(&ns)), before);
            return;
        }
        assert!(first.unwrap_err().to_string().contains("injected failure"));
        // Best effort: whatever is left, reconcile finishes.
        r.ctl.reconcile().unwrap();
        assert_eq!(snapshot(&r, Some(&ns)), before, "a failure at step {k} of leave left something after reconcile");
    }
    panic!("leave never succeeded");
}
