//! The macvlan driver on a "LAN": a namespace with a bridge and another LAN
//! host on it (the gateway, 192.168.77.1), and a veth in the test's host
//! namespace whose peer is on that bridge, serving as the parent. Checked
//! with ping, tcpdump on the LAN and `ip`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cnm_core::store::{MemStore, Store};
use cnm_core::testing::Faults;
use cnm_core::{Controller, EndpointConfig, ErrorKind, NetworkConfig, SandboxConfig};
use cnm_ipam::Ipam;
use cnm_macvlan::MacvlanDriver;
use cnm_netns::testing::{ping, TestHost, TestNs};
use cnm_netns::{AddrFlags, LinkAdd, NetNs, VethPeer};

struct Lan {
    host: TestHost,
    /// The LAN's switch (a bridge `lanbr`) lives here.
    lan: TestNs,
    /// Another host of the LAN, its gateway (kept alive with the test).
    _gw: TestNs,
    ctl: Controller,
    store: Arc<dyn Store>,
    faults: Arc<Faults>,
}

const GW: &str = "192.168.77.1";

impl Lan {
    fn new(test: &str) -> Option<Lan> {
        let host = TestHost::new(test)?;
        let lan = host.container("lan").unwrap();
        lan.handle.link_add(&LinkAdd::bridge("lanbr").up()).unwrap();
        let gw = host.container("gw").unwrap();
        let br = lan.handle.link_get("lanbr").unwrap().index;
        lan.handle.link_add(&LinkAdd::veth("p-gw", VethPeer::new("eth0").netns(&gw.ns)).master(br).up()).unwrap();
        let eth0 = gw.handle.link_get("eth0").unwrap().index;
        gw.handle.link_set_up(eth0).unwrap();
        gw.handle.addr_add(eth0, format!("{GW}/24").parse().unwrap(), AddrFlags::empty()).unwrap();
        gw.handle.addr_add(eth0, "fd77::1/64".parse().unwrap(), AddrFlags::NODAD).unwrap();
        let faults = Arc::new(Faults::default());
        let hook = faults.hook();
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let ctl = Controller::builder()
            .fault_hook(hook.clone())
            .host_netns(host.ns.try_clone().unwrap())
            .run_dir(host.dir().join("run"))
            .store(store.clone())
            .ipam(Arc::new(Ipam::new(store.clone())))
            .driver(Arc::new(MacvlanDriver::with_fault_hook(hook)))
            .build()
            .unwrap();
        let lan = Lan { host, lan, _gw: gw, ctl, store, faults };
        lan.parent("lan0");
        Some(lan)
    }

    /// A parent for the host: a veth whose peer is a port of the LAN bridge.
    fn parent(&self, name: &str) {
        let peer = format!("p-{name}");
        self.host.handle.link_add(&LinkAdd::veth(name, VethPeer::new(peer.as_str()).netns(&self.lan.ns)).up()).unwrap();
        let br = self.lan.handle.link_get("lanbr").unwrap().index;
        let p = self.lan.handle.link_get(peer.as_str()).unwrap().index;
        self.lan.handle.link_set_master(p, br).unwrap();
        self.lan.handle.link_set_up(p).unwrap();
    }

    fn network(&self, name: &str, subnet: &str, options: &[(&str, &str)]) -> cnm_core::Result<cnm_core::Network> {
        let mut cfg = NetworkConfig::new(name, "macvlan").subnet(subnet);
        if subnet.starts_with("192.168.77.") {
            cfg.ipam.config[0].gateway = Some(GW.parse().unwrap());
        }
        for (k, v) in options {
            cfg.options.insert(k.to_string(), v.to_string());
        }
        self.ctl.create_network(cfg)
    }

    fn sandbox(&self, name: &str, net: &str, ip: Option<&str>) -> NetNs {
        let sb = self.ctl.create_sandbox(SandboxConfig { name: name.into(), ..Default::default() }).unwrap();
        let cfg = EndpointConfig { ipv4: ip.map(|i| i.parse().unwrap()), ..Default::default() };
        self.ctl.connect(net, name, cfg).unwrap();
        NetNs::open(&sb.netns).unwrap()
    }

    /// The host's and the LAN's links, addresses and routes, and the store.
    fn state(&self) -> String {
        let mut out = self.host.kernel_state(&[&self.host.ns, &self.lan.ns]);
        for e in self.store.list("").unwrap() {
            if !e.key.starts_with("ipam/") {
                out.push_str(&format!("{} {}\n", e.key, String::from_utf8_lossy(&e.value)));
            }
        }
        out
    }
}

/// `state` without MAC addresses and peer indexes.
fn without_macs(state: &str) -> String {
    state
        .split_whitespace()
        .filter(|w| !(w.len() == 17 && w.bytes().filter(|b| *b == b':').count() == 5))
        .map(|w| w.split("@if").next().unwrap_or(w))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn containers_sit_on_the_lan_with_their_own_addresses_and_macs() {
    let Some(l) = Lan::new("macvlan-lan") else { return };
    let empty = l.state();
    let mut cfg = NetworkConfig::new("lan", "macvlan").subnet("192.168.77.0/24");
    cfg.ipam.config[0].gateway = Some(GW.parse().unwrap());
    cfg.ipam.config[0].ip_range = Some("192.168.77.128/25".parse().unwrap());
    cfg.enable_ipv6 = true;
    cfg.ipam.config.push(cnm_core::IpamPoolConfig {
        subnet: Some("fd77::/64".parse().unwrap()),
        gateway: Some("fd77::1".parse().unwrap()),
        ..Default::default()
    });
    cfg.options.insert("parent".into(), "lan0".into());
    l.ctl.create_network(cfg).unwrap();
    // Inspect as Docker shows a macvlan network: the options as given.
    let v = serde_json::to_value(l.ctl.inspect_network("lan").unwrap()).unwrap();
    assert_eq!(v["Driver"], "macvlan");
    assert_eq!(v["Scope"], "local");
    assert_eq!(v["Options"], serde_json::json!({ "parent": "lan0" }));
    assert_eq!(v["IPAM"]["Config"][0]["IPRange"], "192.168.77.128/25", "{v}");
    let c1 = l.sandbox("c1", "lan", Some("192.168.77.200"));
    let c2 = l.sandbox("c2", "lan", None);
    let ep1 = l.ctl.endpoint("lan", &l.ctl.sandbox("c1").unwrap().endpoints[0].name).unwrap();
    let mac1 = ep1.mac.unwrap().to_string();
    assert_eq!(mac1, "02:42:c0:a8:4d:c8", "Docker's MAC for 192.168.77.200");
    let ep2 = l.ctl.endpoint("lan", &l.ctl.sandbox("c2").unwrap().endpoints[0].name).unwrap();
    assert!(ep2.ipv4.unwrap().addr().to_string().starts_with("192.168.77.1"), "from the ip range: {ep2:?}");

    // On the LAN, c1 is a host of its own: its address and MAC on the wire.
    let dump = l.host.spawn_ready(&l.lan.ns, "tcpdump", &["-lnei", "lanbr", "-c", "2", "icmp"], "listening on");
    assert!(ping(&c1, ip(GW)));
    let seen = dump.wait(Duration::from_secs(10));
    assert!(seen.contains(&mac1) && seen.contains("192.168.77.200 > 192.168.77.1"), "{seen}");
    // Its default route is the LAN's gateway; IPv6 too.
    let routes = l.host.ip_json(&c1, &["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], GW, "{routes}");
    assert!(ping(&c1, ip("fd77::1")));
    // Bridge mode: containers on one parent reach each other.
    assert!(ping(&c1, ep2.ipv4.unwrap().addr()));
    assert!(ping(&c2, ip("192.168.77.200")));

    // A second network on the same parent is refused, as Docker refuses it.
    let e = l.network("lan2", "192.168.78.0/24", &[("parent", "lan0")]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("network \"lan\" is already using parent interface lan0"), "{e}");
    // An 802.1Q parent: this kernel has none, and says so.
    let before = l.state();
    let e = l.network("vlan", "192.168.79.0/24", &[("parent", "lan0.10")]).unwrap_err();
    assert!(e.to_string().contains("802.1Q"), "{e}");
    assert_eq!(l.state(), before, "a refused VLAN parent left something");
    let e = l.network("gone", "192.168.79.0/24", &[("parent", "nosuch0")]).unwrap_err();
    assert!(e.to_string().contains("\"nosuch0\" not found"), "{e}");

    // The parent goes away (and its macvlan devices with it), comes back:
    // reconcile joins the endpoints again.
    l.host.handle.link_del("lan0").unwrap();
    assert!(!ping(&c1, ip(GW)));
    l.parent("lan0");
    let report = l.ctl.reconcile().unwrap();
    assert!(report.repairs.iter().filter(|r| r.contains("joined endpoint")).count() == 2, "{:?}", report.repairs);
    assert!(ping(&c1, ip(GW)) && ping(&c2, ip("192.168.77.200")));
    assert!(l.ctl.reconcile().unwrap().repairs.is_empty(), "a second pass has nothing to do");

    for c in ["c1", "c2"] {
        l.ctl.disconnect("lan", c).unwrap();
        let ns = if c == "c1" { &c1 } else { &c2 };
        assert!(cnm_netns::Handle::open(ns).unwrap().link_get("eth0").is_err(), "{c}'s device went");
        l.ctl.delete_sandbox(c).unwrap();
    }
    l.ctl.delete_network("lan").unwrap();
    // The parent was made again above: its MACs and indexes differ.
    assert_eq!(without_macs(&l.state()), without_macs(&empty), "disconnect and network rm left something");
}

#[test]
fn private_mode_isolates_and_an_internal_network_needs_no_parent() {
    let Some(l) = Lan::new("macvlan-modes") else { return };
    l.network("priv", "192.168.77.0/24", &[("parent", "lan0"), ("macvlan_mode", "private")]).unwrap();
    let p1 = l.sandbox("p1", "priv", Some("192.168.77.21"));
    let p2 = l.sandbox("p2", "priv", Some("192.168.77.22"));
    // Positive control on the same path first: the LAN answers both.
    assert!(ping(&p1, ip(GW)) && ping(&p2, ip(GW)));
    assert!(!ping(&p1, ip("192.168.77.22")), "private mode: siblings do not reach each other");

    // Internal: no parent given; on a device of its own, nothing beyond.
    let mut cfg = NetworkConfig::new("int", "macvlan").subnet("10.77.0.0/24");
    cfg.internal = true;
    let net = l.ctl.create_network(cfg).unwrap();
    let i1 = l.sandbox("i1", "int", Some("10.77.0.11"));
    let i2 = l.sandbox("i2", "int", Some("10.77.0.12"));
    assert!(ping(&i1, ip("10.77.0.12")) && ping(&i2, ip("10.77.0.11")));
    assert!(l.host.ip_json(&i1, &["route", "show", "default"]).as_array().unwrap().is_empty());
    let parent = format!("dm-{}", net.id.short());
    assert!(l.host.handle.link_get(parent.as_str()).is_ok());
    for (n, c) in [("int", "i1"), ("int", "i2"), ("priv", "p1"), ("priv", "p2")] {
        l.ctl.disconnect(n, c).unwrap();
    }
    l.ctl.delete_network("int").unwrap();
    assert!(l.host.handle.link_get(parent.as_str()).is_err(), "the internal parent went with its network");
}

#[test]
fn a_failure_at_every_step_leaves_nothing() {
    let Some(l) = Lan::new("macvlan-faults") else { return };
    // Warm up what is made once and kept (IPAM's records).
    l.network("w", "192.168.77.0/24", &[("parent", "lan0")]).unwrap();
    l.ctl.delete_network("w").unwrap();
    for internal in [false, true] {
        let before = l.state();
        for k in 1..20 {
            l.faults.arm(k);
            let r = match internal {
                false => l.network("f", "192.168.77.0/24", &[("parent", "lan0")]),
                true => l.network("f", "10.78.0.0/24", &[]),
            };
            l.faults.arm(0);
            match r {
                Ok(_) => {
                    l.ctl.delete_network("f").unwrap();
                    assert_eq!(l.state(), before);
                    break;
                }
                Err(e) => {
                    assert!(e.to_string().contains("injected failure"), "{e}");
                    assert_eq!(l.state(), before, "create (internal: {internal}) failing at step {k} left something");
                }
            }
        }
    }
    l.network("f", "192.168.77.0/24", &[("parent", "lan0")]).unwrap();
    let sb = l.ctl.create_sandbox(SandboxConfig { name: "c".into(), ..Default::default() }).unwrap();
    let ns = NetNs::open(&sb.netns).unwrap();
    l.ctl.connect("f", "c", EndpointConfig::default()).unwrap();
    l.ctl.disconnect("f", "c").unwrap();
    let before = format!("{}{}", l.state(), l.host.kernel_state(&[&ns]));
    let mut failed = 0;
    for k in 1..40 {
        l.faults.arm(k);
        let r = l.ctl.connect("f", "c", EndpointConfig::default());
        l.faults.arm(0);
        match r {
            Ok(_) => {
                assert!(failed > 3, "only {failed} steps");
                break;
            }
            Err(e) => {
                failed += 1;
                assert!(e.to_string().contains("injected failure"), "{e}");
                let now = format!("{}{}", l.state(), l.host.kernel_state(&[&ns]));
                assert_eq!(now, before, "connect failing at step {k} left something");
            }
        }
    }
    assert!(ping(&ns, ip(GW)));
}
