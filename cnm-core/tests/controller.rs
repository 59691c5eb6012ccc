//! The controller with a fake driver and a test IPAM: life cycle, gateway
//! election, errors, rollback at every step, and inspect output.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use cnm_core::store::{MemStore, Store};
use cnm_core::{Controller, EndpointConfig, ErrorKind, NetworkConfig, SandboxConfig};
use common::{FakeDriver, Faults, FaultyStore, TestIpam};
use serde_json::Value;

struct Rig {
    ctl: Controller,
    faults: Arc<Faults>,
    driver: Arc<FakeDriver>,
    ipam: Arc<TestIpam>,
    store: Arc<dyn Store>,
}

fn rig() -> Rig {
    let faults = Arc::new(Faults::default());
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let faulty: Arc<dyn Store> = Arc::new(FaultyStore { inner: store.clone(), faults: faults.clone() });
    let driver = Arc::new(FakeDriver::new("bridge", faults.clone(), None));
    let ipam = Arc::new(TestIpam { store: store.clone(), faults: faults.clone() });
    let ctl = Controller::builder().store(faulty).ipam(ipam.clone()).driver(driver.clone()).build().unwrap();
    Rig { ctl, faults, driver, ipam, store }
}

fn sandbox(ctl: &Controller, name: &str) {
    // Our own namespace stands in for a container's: the fake driver does no kernel work.
    ctl.create_sandbox(SandboxConfig {
        name: name.into(),
        netns: Some(cnm_netns::testing::own_netns_path()),
        ..Default::default()
    })
    .unwrap();
}

/// The store's entries, IPAM's pools with their addresses, the fake kernel.
type Snapshot = (Vec<(String, Vec<u8>)>, BTreeMap<String, (ipnet::IpNet, BTreeSet<IpAddr>)>, BTreeSet<String>);

/// Everything the controller, IPAM and the fake kernel hold.
fn snapshot(r: &Rig) -> Snapshot {
    let kv = r.store.list("").unwrap().into_iter().map(|e| (e.key, e.value)).collect();
    (kv, r.ipam.dump(), r.driver.objects())
}

#[test]
fn life_cycle_and_docker_mac_rule() {
    let r = rig();
    let net = r.ctl.create_network(NetworkConfig::new("tn", "bridge").subnet("10.1.1.0/24")).unwrap();
    assert_eq!(net.gateway_v4().unwrap().to_string(), "10.1.1.1/24");
    sandbox(&r.ctl, "c1");
    let ep = r.ctl.connect("tn", "c1", EndpointConfig::default()).unwrap();
    assert_eq!(ep.ipv4.unwrap().to_string(), "10.1.1.2/24");
    assert_eq!(ep.mac.unwrap().to_string(), "02:42:0a:01:01:02");
    assert_eq!(ep.ifname.as_deref(), Some("eth0"));
    assert!(ep.gateway);
    // Lookups by name, full id and unique prefix.
    assert_eq!(r.ctl.network(net.id.as_str()).unwrap().name, "tn");
    assert_eq!(r.ctl.network(net.id.short()).unwrap().name, "tn");
    assert_eq!(r.ctl.endpoint("tn", ep.id.short()).unwrap().id, ep.id);
    assert_eq!(
        r.ctl.sandbox("c1").unwrap().endpoints.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
        vec![ep.id.clone()]
    );
    assert!(r.driver.objects().contains(&format!("join:{}", ep.id)));

    let busy = r.ctl.delete_network("tn").unwrap_err();
    assert_eq!(busy.kind(), ErrorKind::Conflict, "{busy}");
    r.ctl.disconnect("tn", "c1").unwrap();
    r.ctl.delete_sandbox("c1").unwrap();
    r.ctl.delete_network("tn").unwrap();
    assert!(r.store.list("").unwrap().is_empty(), "state left: {:?}", r.store.list("").unwrap());
    assert!(r.driver.objects().is_empty());
}

#[test]
fn errors_name_what_was_wrong() {
    let r = rig();
    r.ctl.create_network(NetworkConfig::new("tn", "bridge").subnet("10.1.1.0/24")).unwrap();
    let dup = r.ctl.create_network(NetworkConfig::new("tn", "bridge")).unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists);
    assert_eq!(dup.to_string(), "network \"tn\" already exists");
    let unknown = r.ctl.create_network(NetworkConfig::new("x", "nosuch")).unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::InvalidParameter);
    assert!(unknown.to_string().contains("unknown driver \"nosuch\""), "{unknown}");
    let mut opt = NetworkConfig::new("y", "bridge");
    opt.options.insert("com.example.bogus".into(), "1".into());
    let e = r.ctl.create_network(opt).unwrap_err();
    assert!(e.to_string().contains("com.example.bogus"), "{e}");
    let overlap = r.ctl.create_network(NetworkConfig::new("z", "bridge").subnet("10.1.0.0/16")).unwrap_err();
    assert_eq!(overlap.kind(), ErrorKind::Conflict, "{overlap}");
    assert!(r.ctl.network("y").is_err() && r.ctl.network("z").is_err(), "nothing half-created");

    sandbox(&r.ctl, "c1");
    let outside = EndpointConfig { ipv4: Some("10.9.9.9".parse().unwrap()), ..Default::default() };
    let e = r.ctl.connect("tn", "c1", outside).unwrap_err();
    assert!(e.to_string().contains("10.9.9.9 is in no subnet"), "{e}");
    let e = r.ctl.connect("nonet", "c1", EndpointConfig::default()).unwrap_err();
    assert_eq!((e.kind(), e.to_string()), (ErrorKind::NotFound, "network \"nonet\" not found".to_string()));
    let e = r.ctl.connect("tn", "nosb", EndpointConfig::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    let fixed = EndpointConfig { ipv4: Some("10.1.1.7".parse().unwrap()), ..Default::default() };
    let ep = r.ctl.connect("tn", "c1", fixed.clone()).unwrap();
    assert_eq!(ep.ipv4.unwrap().to_string(), "10.1.1.7/24");
    sandbox(&r.ctl, "c2");
    let taken = r.ctl.connect("tn", "c2", fixed).unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::Conflict, "{taken}");
    let twice = r.ctl.connect("tn", "c1", EndpointConfig::default()).unwrap_err();
    assert_eq!(twice.kind(), ErrorKind::Conflict, "{twice}");
    // The failed connects left no endpoint and no address behind.
    assert_eq!(r.ctl.endpoints(Some("tn")).unwrap().len(), 1);
    let (_, addrs) = r.ipam.dump().into_values().next().unwrap();
    assert_eq!(addrs.len(), 2, "gateway and 10.1.1.7 only: {addrs:?}");
    let dupsb = r.ctl.create_sandbox(SandboxConfig {
        name: "c1".into(),
        netns: Some(cnm_netns::testing::own_netns_path()),
        ..Default::default()
    });
    assert_eq!(dupsb.unwrap_err().kind(), ErrorKind::AlreadyExists);
    let badns = r.ctl.create_sandbox(SandboxConfig {
        name: "c9".into(),
        netns: Some("/nonexistent".into()),
        ..Default::default()
    });
    assert_eq!(badns.unwrap_err().kind(), ErrorKind::InvalidParameter);
}

#[test]
fn default_route_moves_to_the_next_endpoint() {
    let r = rig();
    r.ctl.create_network(NetworkConfig::new("a", "bridge")).unwrap();
    r.ctl.create_network(NetworkConfig::new("b", "bridge")).unwrap();
    let mut internal = NetworkConfig::new("i", "bridge");
    internal.internal = true;
    r.ctl.create_network(internal).unwrap();
    sandbox(&r.ctl, "c");
    let ei = r.ctl.connect("i", "c", EndpointConfig::default()).unwrap();
    let ea = r.ctl.connect("a", "c", EndpointConfig::default()).unwrap();
    let eb = r.ctl.connect("b", "c", EndpointConfig::default()).unwrap();
    assert_eq!(
        (ei.ifname.as_deref(), ea.ifname.as_deref(), eb.ifname.as_deref()),
        (Some("eth0"), Some("eth1"), Some("eth2"))
    );
    assert!(!ei.gateway, "an internal network never provides the default route");
    assert!(ea.gateway && !eb.gateway);
    r.ctl.disconnect("a", "c").unwrap();
    assert!(r.ctl.endpoint("b", eb.id.as_str()).unwrap().gateway);
    // eth1 is free again and is reused.
    let ea2 = r.ctl.connect("a", "c", EndpointConfig::default()).unwrap();
    assert_eq!(ea2.ifname.as_deref(), Some("eth1"));
    assert!(!ea2.gateway);
}

#[test]
fn host_and_null_are_exclusive() {
    let r = rig();
    r.ctl.create_network(NetworkConfig::new("none", "null")).unwrap();
    r.ctl.create_network(NetworkConfig::new("tn", "bridge")).unwrap();
    let e = r.ctl.create_network(NetworkConfig::new("h2", "host").subnet("10.5.0.0/24")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidParameter);
    sandbox(&r.ctl, "c");
    r.ctl.connect("tn", "c", EndpointConfig::default()).unwrap();
    let e = r.ctl.connect("none", "c", EndpointConfig::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden, "{e}");
    // The other direction (a sandbox on `null` joining more) brings up
    // loopback in the sandbox, so it is tested in a namespace of its own by
    // the privileged tests.
}

/// Runs `op` on a fresh rig prepared by `setup`, failing at step k for every
/// k until it succeeds, and checks that each failure left the store, IPAM
/// and the fake kernel exactly as before the call.
fn rollback_at_every_step(
    name: &str,
    min_steps: usize,
    setup: impl Fn(&Rig),
    op: impl Fn(&Rig) -> cnm_core::Result<()>,
) {
    let mut failures = 0;
    for k in 1..200 {
        let r = rig();
        setup(&r);
        let before = snapshot(&r);
        r.faults.arm(k);
        let res = op(&r);
        r.faults.disarm();
        match res {
            Ok(()) => {
                assert!(failures >= min_steps, "{name}: only {failures} steps were exercised");
                return;
            }
            Err(e) => {
                failures += 1;
                assert!(e.to_string().contains("injected failure"), "{name} k={k}: {e}");
                assert_eq!(snapshot(&r), before, "{name}: state changed after a failure at step {k} ({e})");
            }
        }
    }
    panic!("{name}: never succeeded");
}

#[test]
fn every_failed_step_rolls_back_completely() {
    rollback_at_every_step(
        "create_network",
        4,
        |_| {},
        |r| r.ctl.create_network(NetworkConfig::new("tn", "bridge").subnet("10.1.1.0/24")).map(|_| ()),
    );
    let mut v6 = NetworkConfig::new("dual", "bridge");
    v6.enable_ipv6 = true;
    rollback_at_every_step(
        "create_network dual-stack",
        5,
        |_| {},
        move |r| r.ctl.create_network(v6.clone()).map(|_| ()),
    );
    let net_and_sb = |r: &Rig| {
        r.ctl.create_network(NetworkConfig::new("tn", "bridge")).unwrap();
        sandbox(&r.ctl, "c1");
    };
    rollback_at_every_step("create_endpoint", 4, net_and_sb, |r| {
        r.ctl.create_endpoint("tn", EndpointConfig::default()).map(|_| ())
    });
    rollback_at_every_step("connect", 8, net_and_sb, |r| {
        r.ctl.connect("tn", "c1", EndpointConfig::default()).map(|_| ())
    });
    let with_ep = |r: &Rig| {
        net_and_sb(r);
        r.ctl.create_endpoint("tn", EndpointConfig { name: Some("e1".into()), ..Default::default() }).unwrap();
    };
    rollback_at_every_step("join", 4, with_ep, |r| r.ctl.join("tn", "e1", "c1").map(|_| ()));
    rollback_at_every_step(
        "create_sandbox",
        1,
        |_| {},
        |r| {
            r.ctl
                .create_sandbox(SandboxConfig {
                    name: "s".into(),
                    netns: Some(cnm_netns::testing::own_netns_path()),
                    ..Default::default()
                })
                .map(|_| ())
        },
    );
}

#[test]
fn failed_teardowns_report_and_finish_on_retry() {
    for k in 1..20 {
        let r = rig();
        r.ctl.create_network(NetworkConfig::new("tn", "bridge")).unwrap();
        sandbox(&r.ctl, "c1");
        r.ctl.connect("tn", "c1", EndpointConfig::default()).unwrap();
        r.faults.arm(k);
        let first = r.ctl.delete_sandbox("c1");
        r.faults.disarm();
        if first.is_ok() {
            assert!(k > 3, "delete_sandbox has several steps");
            break;
        }
        assert!(first.unwrap_err().to_string().contains("injected failure"));
        // Whatever was left, a retry or reconcile finishes it.
        let _ = r.ctl.delete_sandbox("c1");
        r.ctl.reconcile().unwrap();
        if let Err(e) = r.ctl.delete_network("tn") {
            panic!("k={k}: {e}: {:#?}", r.ctl.endpoints(None));
        }
        assert!(r.store.list("").unwrap().is_empty(), "k={k}: {:?}", r.store.list("").unwrap());
        assert!(r.driver.objects().is_empty(), "k={k}");
    }
}

/// Same keys at every level, same value kinds, same formats.
fn same_shape(path: &str, ours: &Value, theirs: &Value) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) if path.ends_with(".Containers") => {
            // Keys are ids; compare one entry with one entry.
            assert_eq!(a.is_empty(), b.is_empty(), "{path}");
            if let (Some((ka, va)), Some((_, vb))) = (a.iter().next(), b.iter().next()) {
                assert_eq!(ka.len(), 64, "{path}: container key {ka}");
                same_shape(&format!("{path}.*"), va, vb);
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<&String> = a.keys().collect();
            let kb: Vec<&String> = b.keys().collect();
            let mut sa = ka.clone();
            let mut sb = kb.clone();
            sa.sort();
            sb.sort();
            assert_eq!(sa, sb, "keys differ at {path}");
            for k in a.keys() {
                same_shape(&format!("{path}.{k}"), &a[k], &b[k]);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if let (Some(x), Some(y)) = (a.first(), b.first()) {
                same_shape(&format!("{path}[0]"), x, y);
            }
        }
        (Value::String(a), Value::String(b)) => {
            let fmt = |s: &str| -> &'static str {
                if s.is_empty() {
                    "empty"
                } else if s.parse::<cnm_core::Timestamp>().is_ok() {
                    "time"
                } else if s.parse::<ipnet::IpNet>().is_ok() {
                    "cidr"
                } else if s.parse::<std::net::IpAddr>().is_ok() {
                    "ip"
                } else if s.parse::<cnm_netns::MacAddr>().is_ok() {
                    "mac"
                } else if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
                    "id"
                } else {
                    "text"
                }
            };
            assert_eq!(fmt(a), fmt(b), "value format differs at {path}: {a:?} vs {b:?}");
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (a, b) => {
            assert_eq!(std::mem::discriminant(a), std::mem::discriminant(b), "kind differs at {path}: {a} vs {b}")
        }
    }
}

#[test]
fn inspect_matches_docker_key_by_key() {
    let r = rig();
    r.ctl.create_network(NetworkConfig::new("tn", "bridge").subnet("10.1.1.0/24")).unwrap();
    sandbox(&r.ctl, "c1");
    sandbox(&r.ctl, "c2");
    r.ctl.connect("tn", "c1", EndpointConfig::default()).unwrap();
    r.ctl.connect("tn", "c2", EndpointConfig::default()).unwrap();
    let ours = serde_json::to_value(vec![r.ctl.inspect_network("tn").unwrap()]).unwrap();
    let theirs: Value = serde_json::from_str(include_str!("fixtures/docker-network-inspect-bridge.json")).unwrap();
    same_shape("$", &ours, &theirs);
    let c = &ours[0]["Containers"];
    let mut got: Vec<(String, String, String)> = c
        .as_object()
        .unwrap()
        .values()
        .map(|v| {
            (
                v["Name"].as_str().unwrap().into(),
                v["IPv4Address"].as_str().unwrap().into(),
                v["MacAddress"].as_str().unwrap().into(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("c1".into(), "10.1.1.2/24".into(), "02:42:0a:01:01:02".into()),
            ("c2".into(), "10.1.1.3/24".into(), "02:42:0a:01:01:03".into())
        ]
    );
    // As in Docker's output, a requested subnet shows as requested.
    assert_eq!(ours[0]["IPAM"]["Config"], serde_json::json!([{"Subnet": "10.1.1.0/24"}]));

    // The overlay reference's two-subnet IPAM config has the same shape.
    let mut two = NetworkConfig::new("test-net", "bridge");
    for (s, g) in [("11.1.1.0/24", "11.1.1.1"), ("10.2.1.0/24", "10.2.1.1")] {
        two.ipam.config.push(cnm_core::IpamPoolConfig {
            subnet: Some(s.parse().unwrap()),
            gateway: Some(g.parse().unwrap()),
            ..Default::default()
        });
    }
    r.ctl.create_network(two).unwrap();
    let ours = serde_json::to_value(r.ctl.inspect_network("test-net").unwrap()).unwrap();
    let theirs: Value = serde_json::from_str(include_str!("fixtures/docker-network-inspect-overlay.json")).unwrap();
    same_shape("$.IPAM", &ours["IPAM"], &theirs[0]["IPAM"]);
    assert_eq!(ours["IPAM"]["Config"][0], serde_json::json!({"Subnet": "11.1.1.0/24", "Gateway": "11.1.1.1"}));
}
