//! The bridge driver through the controller, inside test hosts, with the
//! real IPAM and the nftables firewall: what `docker network create -d
//! bridge` and `docker run --network` do on one host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_bridge::BridgeDriver;
use cnm_core::store::{MemStore, Store};
use cnm_core::{Controller, EndpointConfig, NetworkConfig, SandboxConfig};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::testing::{TestHost, TestNs};
use cnm_netns::NetNs;

const HOST_IP: &str = "198.51.100.1";
const OUTSIDE_IP: &str = "198.51.100.2";

struct Rig {
    host: TestHost,
    outside: TestNs,
    ctl: Controller,
}

fn rig(test: &str) -> Option<Rig> {
    let host = TestHost::new(test)?;
    let outside = host.outside().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let fw = NatFirewall::new(Backend::Nftables, host.ns.try_clone().unwrap(), store.clone());
    let ctl = Controller::builder()
        .host_netns(host.ns.try_clone().unwrap())
        .run_dir(host.dir().join("run"))
        .store(store.clone())
        .ipam(Arc::new(Ipam::new(store)))
        .firewall(Arc::new(fw))
        .driver(Arc::new(BridgeDriver::new()))
        .build()
        .unwrap();
    Some(Rig { host, outside, ctl })
}

impl Rig {
    /// A sandbox with a controller-made namespace, connected to `net`.
    fn sandbox(&self, name: &str, net: &str, cfg: EndpointConfig) -> (NetNs, cnm_core::Endpoint) {
        let sb = self.ctl.create_sandbox(SandboxConfig { name: name.into(), ..Default::default() }).unwrap();
        let ep = self.ctl.connect(net, name, cfg).unwrap();
        (NetNs::open(&sb.netns).unwrap(), ep)
    }

    fn ping(&self, from: &NetNs, to: &str) -> bool {
        self.host.ping(from, to.parse().unwrap())
    }
}

fn ip(ep: &cnm_core::Endpoint) -> String {
    ep.ipv4.unwrap().addr().to_string()
}

fn tcp_peer(host: &TestHost, server: &NetNs, port: u16) -> cnm_netns::testing::Background {
    let bg =
        host.spawn(server, "socat", &[&format!("TCP-LISTEN:{port},fork,reuseaddr"), "SYSTEM:echo $SOCAT_PEERADDR"]);
    for _ in 0..100 {
        if server.exec("ss", ["-lnt"]).unwrap_or_default().contains(&format!(":{port} ")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bg
}

fn ask(from: &NetNs, target: &str) -> String {
    from.exec("socat", ["-T", "2", "-", &format!("{target},connect-timeout=2")])
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// [`ask`] for a port that should answer: up to three tries, so a loaded
/// machine is not taken for a blocked port.
fn ask_ok(from: &NetNs, target: &str) -> String {
    (0..3).map(|_| ask(from, target)).find(|s| !s.is_empty()).unwrap_or_default()
}

#[test]
fn two_sandboxes_talk_reach_the_outside_masqueraded_and_publish_ports() {
    let Some(r) = rig("bridge_two_sandboxes") else { return };
    let net = r.ctl.create_network(NetworkConfig::new("tn", "bridge").subnet("10.1.1.0/24")).unwrap();
    let bridge = format!("br-{}", net.id.short());
    let (c1, e1) =
        r.sandbox("c1", "tn", EndpointConfig { ports: vec!["8080:80".parse().unwrap()], ..Default::default() });
    let (c2, e2) = r.sandbox("c2", "tn", EndpointConfig::default());
    assert_eq!((ip(&e1), ip(&e2)), ("10.1.1.2".to_string(), "10.1.1.3".to_string()));

    // The kernel agrees: eth0 with the address and Docker's MAC, default route.
    let a = r.host.ip_json(&c1, &["addr", "show", "dev", "eth0"]);
    assert_eq!(a[0]["address"], "02:42:0a:01:01:02");
    assert!(a[0]["addr_info"].as_array().unwrap().iter().any(|x| x["local"] == "10.1.1.2" && x["prefixlen"] == 24));
    let routes = r.host.ip_json(&c1, &["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "10.1.1.1");
    let br = r.host.ip_json(&r.host.ns, &["link", "show", "dev", &bridge]);
    assert_eq!(br[0]["linkinfo"]["info_kind"], "bridge");
    let port = r.host.bridge_json(&r.host.ns, &["-d", "link", "show", "dev", &e1.driver_data["veth"]]);
    assert_eq!(port[0]["master"], bridge);
    assert_eq!(port[0]["hairpin"], true);
    // No IPv6 on an IPv4-only network: none in the sandbox (Docker's rule),
    // and no link-local address on the bridge port either.
    let has_v6 = |ns: &NetNs, dev: &str| {
        r.host.ip_json(ns, &["addr", "show", "dev", dev])[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["family"] == "inet6")
    };
    assert!(!has_v6(&c1, "eth0") && !has_v6(&r.host.ns, &e1.driver_data["veth"]));
    // The bridge port has IPv6 off altogether: not even a multicast route.
    let veth = &e1.driver_data["veth"];
    let sysctl = r.host.exec(&r.host.ns, "sysctl", &["-n", &format!("net.ipv6.conf.{veth}.disable_ipv6")]);
    assert_eq!(sysctl.trim(), "1");
    let routes = r.host.ip_json(&r.host.ns, &["-6", "route", "show", "table", "all", "dev", veth]);
    assert_eq!(routes.as_array().map(Vec::len), Some(0), "{routes}");

    assert!(r.ping(&c1, "10.1.1.3") && r.ping(&c2, "10.1.1.2"), "sandboxes ping each other");
    let _o = tcp_peer(&r.host, &r.outside.ns, 7000);
    assert_eq!(ask_ok(&c1, &format!("TCP4:{OUTSIDE_IP}:7000")), HOST_IP, "masquerade: the outside sees the host");
    assert_eq!(ask_ok(&c2, &format!("TCP4:{OUTSIDE_IP}:7000")), HOST_IP);
    let _s = tcp_peer(&r.host, &c1, 80);
    assert_eq!(ask_ok(&r.outside.ns, &format!("TCP4:{HOST_IP}:8080")), OUTSIDE_IP, "published port from outside");
    assert!(!ask_ok(&r.host.ns, "TCP4:127.0.0.1:8080").is_empty(), "published port from the host");

    // Inspect: Docker's shape and MAC rule.
    let inspect = serde_json::to_value(r.ctl.inspect_network("tn").unwrap()).unwrap();
    let macs: Vec<&str> =
        inspect["Containers"].as_object().unwrap().values().map(|c| c["MacAddress"].as_str().unwrap()).collect();
    assert!(macs.contains(&"02:42:0a:01:01:02") && macs.contains(&"02:42:0a:01:01:03"), "{inspect}");

    // Leave: the veth is down at once and gone within a second.
    let veth = e1.driver_data["veth"].clone();
    let t = Instant::now();
    r.ctl.disconnect("tn", "c1").unwrap();
    let detach = t.elapsed();
    assert!(!ask(&r.outside.ns, &format!("TCP4:{HOST_IP}:8080")).contains('.'), "the port went with the endpoint");
    let deadline = Instant::now() + Duration::from_secs(1);
    while r.host.handle.link_get(veth.as_str()).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(r.host.handle.link_get(veth.as_str()).is_err(), "veth still there after 1 s");
    println!("detach took {detach:?}");
    assert!(r.host.ip_json(&c1, &["link", "show"]).as_array().unwrap().len() == 1, "c1 keeps loopback only");

    r.ctl.delete_sandbox("c2").unwrap();
    r.ctl.delete_sandbox("c1").unwrap();
    r.ctl.delete_network("tn").unwrap();
    // Detached veths go in the reaper's next batch.
    let names = || -> Vec<String> {
        let left = r.host.ip_json(&r.host.ns, &["link", "show"]);
        left.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap().to_string()).collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while names() != ["lo", "uplink"] && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(names(), vec!["lo", "uplink"], "nothing left behind");
}

#[test]
fn isolation_internal_and_icc() {
    let Some(r) = rig("bridge_isolation") else { return };
    r.ctl.create_network(NetworkConfig::new("a", "bridge")).unwrap();
    r.ctl.create_network(NetworkConfig::new("b", "bridge")).unwrap();
    let mut internal = NetworkConfig::new("int", "bridge");
    internal.internal = true;
    r.ctl.create_network(internal).unwrap();
    let mut noicc = NetworkConfig::new("noicc", "bridge");
    noicc.options.insert("com.docker.network.bridge.enable_icc".into(), "false".into());
    r.ctl.create_network(noicc).unwrap();
    let (a1, _) = r.sandbox("a1", "a", EndpointConfig::default());
    let published = EndpointConfig { ports: vec!["8080:80".parse().unwrap()], ..Default::default() };
    let (b1, eb) = r.sandbox("b1", "b", published);
    let (i1, _) = r.sandbox("i1", "int", EndpointConfig::default());
    let (n1, _) = r.sandbox("n1", "noicc", EndpointConfig::default());
    let (_n2, en2) = r.sandbox("n2", "noicc", EndpointConfig::default());
    assert!(r.ping(&a1, OUTSIDE_IP));
    assert!(!r.ping(&a1, &ip(&eb)), "two networks are isolated");
    assert!(!r.ping(&i1, OUTSIDE_IP), "an internal network cannot reach the outside");
    assert!(!r.ping(&n1, &ip(&en2)), "icc off blocks container to container");
    assert!(r.ping(&n1, OUTSIDE_IP));
    // Another network's published port, through the container's own
    // gateway: reached from a non-internal network (the positive control
    // on the same path), never from an internal one.
    let _srv = tcp_peer(&r.host, &b1, 80);
    let gw = |net: &str| r.ctl.network(net).unwrap().pools[0].gateway.unwrap().addr().to_string();
    assert!(!ask_ok(&a1, &format!("TCP4:{}:8080", gw("a"))).is_empty(), "a published port is public");
    assert_eq!(ask(&i1, &format!("TCP4:{}:8080", gw("int"))), "", "nothing leaves an internal network");
    let mut bad = NetworkConfig::new("bad", "bridge");
    bad.options.insert("com.docker.network.bridge.nonsense".into(), "1".into());
    let e = r.ctl.create_network(bad).unwrap_err();
    assert!(e.to_string().contains("com.docker.network.bridge.nonsense"), "{e}");
}

#[test]
fn two_networks_one_default_route_that_moves() {
    let Some(r) = rig("bridge_two_networks") else { return };
    r.ctl.create_network(NetworkConfig::new("first", "bridge").subnet("10.5.0.0/24")).unwrap();
    r.ctl.create_network(NetworkConfig::new("second", "bridge").subnet("10.6.0.0/24")).unwrap();
    let (c, _) = r.sandbox("c", "first", EndpointConfig::default());
    r.ctl.connect("second", "c", EndpointConfig::default()).unwrap();
    let addrs = |dev: &str| r.host.ip_json(&c, &["-4", "addr", "show", "dev", dev])[0]["addr_info"][0]["local"].clone();
    assert_eq!((addrs("eth0"), addrs("eth1")), ("10.5.0.2".into(), "10.6.0.2".into()));
    let defaults = || r.host.ip_json(&c, &["-4", "route", "show", "default"]);
    assert_eq!(defaults().as_array().unwrap().len(), 1);
    assert_eq!(defaults()[0]["gateway"], "10.5.0.1");
    r.ctl.disconnect("first", "c").unwrap();
    assert_eq!(defaults().as_array().unwrap().len(), 1);
    assert_eq!(defaults()[0]["gateway"], "10.6.0.1", "the default route moved to the second network");
    assert!(r.ping(&c, OUTSIDE_IP));
}

#[test]
fn dual_stack_sandboxes_talk_over_ipv6_and_reach_the_outside() {
    let Some(r) = rig("bridge_dual_stack") else { return };
    let mut cfg = NetworkConfig::new("v6", "bridge").subnet("10.7.0.0/24");
    cfg.enable_ipv6 = true;
    cfg.ipam
        .config
        .push(cnm_core::IpamPoolConfig { subnet: Some("fd00:7::/64".parse().unwrap()), ..Default::default() });
    r.ctl.create_network(cfg).unwrap();
    let (c1, e1) = r.sandbox("c1", "v6", EndpointConfig::default());
    let (c2, e2) = r.sandbox("c2", "v6", EndpointConfig::default());
    assert_eq!(e1.ipv6.unwrap().to_string(), "fd00:7::2/64");
    // On an IPv6 network the sandbox's interface has its link-local
    // address next to the global one.
    let v6: Vec<String> = r.host.ip_json(&c1, &["-6", "addr", "show", "dev", "eth0"])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["local"].as_str().unwrap().to_string())
        .collect();
    assert!(v6.iter().any(|a| a.starts_with("fe80:")) && v6.contains(&"fd00:7::2".to_string()), "{v6:?}");
    let six = |e: &cnm_core::Endpoint| e.ipv6.unwrap().addr().to_string();
    assert!(r.ping(&c1, &six(&e2)) && r.ping(&c2, &six(&e1)), "IPv6 between sandboxes");
    assert!(r.ping(&c1, "2001:db8:1::2"), "IPv6 to the outside (NAT66)");
    assert!(r.ping(&c1, OUTSIDE_IP));
}

#[test]
fn reconcile_after_a_simulated_reboot() {
    let Some(r) = rig("bridge_reboot") else { return };
    let net = r.ctl.create_network(NetworkConfig::new("tn", "bridge")).unwrap();
    let bridge = format!("br-{}", net.id.short());
    let (c1, e1) = r.sandbox("c1", "tn", EndpointConfig::default());
    // The kernel loses the bridge and the rules; the sandbox goes too.
    r.host.handle.link_del(bridge.as_str()).unwrap();
    r.host.exec(&r.host.ns, "nft", &["flush", "ruleset"]);
    let sb = r.ctl.sandbox("c1").unwrap();
    NetNs::remove_named(sb.netns.parent().unwrap(), sb.netns.file_name().unwrap().to_str().unwrap()).unwrap();
    drop(c1);
    let report = r.ctl.reconcile().unwrap();
    assert!(report.repairs.iter().any(|x| x.contains(&format!("re-created bridge {bridge}"))), "{report:?}");
    assert!(report.repairs.iter().any(|x| x.contains("dropped sandbox \"c1\"")), "{report:?}");
    assert!(r.ctl.endpoints(Some("tn")).unwrap().is_empty());
    assert!(r.host.handle.link_get(bridge.as_str()).is_ok());
    let rules = r.host.exec(&r.host.ns, "nft", &["list", "table", "inet", "cnm"]);
    assert!(rules.contains(&bridge), "rules are back: {rules}");
    // A new sandbox works again.
    let (c2, _) = r.sandbox("c2", "tn", EndpointConfig::default());
    assert!(r.ping(&c2, OUTSIDE_IP));
    let _ = e1;
}

#[test]
fn a_thousand_endpoints_join_and_leave_leaving_nothing() {
    let Some(r) = rig("bridge_thousand") else { return };
    let net = r.ctl.create_network(NetworkConfig::new("big", "bridge").subnet("10.64.0.0/22")).unwrap();
    let bridge = format!("br-{}", net.id.short());
    let t = Instant::now();
    let mut eps = Vec::new();
    for i in 0..1000 {
        r.ctl.create_sandbox(SandboxConfig { name: format!("s{i}"), ..Default::default() }).unwrap();
        eps.push(r.ctl.connect("big", &format!("s{i}"), EndpointConfig::default()).unwrap());
    }
    println!("1000 sandboxes created and joined in {:?}", t.elapsed());
    let ports = r.host.bridge_json(&r.host.ns, &["link", "show"]);
    assert_eq!(ports.as_array().unwrap().iter().filter(|p| p["master"] == bridge).count(), 1000);
    for ep in eps.iter().step_by(97) {
        // ARP across a bridge with 1000 ports can lose its first request on a
        // loaded machine: up to three echo requests, 2 s each.
        assert!((0..3).any(|_| r.ping(&r.host.ns, &ip(ep))), "{} unreachable from the host", ip(ep));
    }
    let t = Instant::now();
    for i in 0..1000 {
        r.ctl.delete_sandbox(&format!("s{i}")).unwrap();
    }
    println!("1000 sandboxes left and deleted in {:?}", t.elapsed());
    let deadline = Instant::now() + Duration::from_secs(2);
    let links = || r.host.handle.link_list().unwrap().into_iter().map(|l| l.name).collect::<Vec<_>>();
    while links().len() > 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut left = links();
    left.sort();
    let mut want = vec!["lo".to_string(), "uplink".to_string(), bridge.clone()];
    want.sort();
    assert_eq!(left, want, "links left behind");
    assert!(r.ctl.endpoints(None).unwrap().is_empty());
    let rules = r.host.exec(&r.host.ns, "nft", &["-j", "list", "set", "inet", "cnm", "published4"]);
    assert!(!rules.contains("\"elem\""), "published ports left: {rules}");
    // The addresses are free again: a new endpoint gets the first one.
    let (_c, e) = r.sandbox("again", "big", EndpointConfig::default());
    assert_eq!(ip(&e), "10.64.0.2");
}

#[test]
fn the_1025th_endpoint_is_refused_before_the_kernel_is_asked() {
    let Some(r) = rig("bridge_1025") else { return };
    r.ctl.create_network(NetworkConfig::new("full", "bridge").subnet("10.65.0.0/21")).unwrap();
    for i in 0..1024 {
        r.ctl.create_endpoint("full", EndpointConfig { name: Some(format!("e{i}")), ..Default::default() }).unwrap();
    }
    let e = r.ctl.create_endpoint("full", EndpointConfig::default()).unwrap_err();
    assert_eq!(e.kind(), cnm_core::ErrorKind::Exhausted, "{e}");
    assert_eq!(e.to_string(), "endpoints of network \"full\" exhausted: a bridge network takes at most 1024 endpoints");
    assert_eq!(r.ctl.endpoints(Some("full")).unwrap().len(), 1024);
}

/// `BridgeDriver::parking` (what the CNI plugin's `DEL` uses): a leave takes
/// the veth down into the reaper's group and renames its sandbox end, so
/// the interface name is free for the next join at once; `delete_parked`
/// deletes it.
#[test]
fn a_parking_driver_leaves_deletion_to_its_caller() {
    let Some(host) = TestHost::new("bridge_parking") else { return };
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let bridge = Arc::new(BridgeDriver::parking());
    let ctl = Controller::builder()
        .host_netns(host.ns.try_clone().unwrap())
        .run_dir(host.dir().join("run"))
        .store(store.clone())
        .ipam(Arc::new(Ipam::new(store)))
        .driver(bridge.clone())
        .build()
        .unwrap();
    let mut net = NetworkConfig::new("park", "bridge");
    net.options.insert("com.docker.network.bridge.name".into(), host.name("br"));
    ctl.create_network(net).unwrap();
    let sb = ctl.create_sandbox(SandboxConfig { name: "p".into(), ..Default::default() }).unwrap();
    let ns = NetNs::open(&sb.netns).unwrap();
    let ep = ctl.connect("park", "p", EndpointConfig::default()).unwrap();
    let veth = ep.driver_data["veth"].clone();
    assert!(!bridge.parked());

    ctl.disconnect("park", "p").unwrap();
    assert!(bridge.parked());
    let parked = host.handle.link_get(veth.as_str()).unwrap();
    assert_eq!(parked.group, cnm_bridge::REAPER_GROUP);
    assert!(!parked.up);
    let inside = host.ip_json(&ns, &["link", "show"]);
    let names: Vec<&str> = inside.as_array().unwrap().iter().filter_map(|l| l["ifname"].as_str()).collect();
    assert!(!names.contains(&"eth0") && names.iter().any(|n| n.starts_with("cnmp")), "{names:?}");

    // The name is free: the sandbox joins again at once, as eth0.
    let again = ctl.connect("park", "p", EndpointConfig::default()).unwrap();
    assert_eq!(again.ifname.as_deref(), Some("eth0"));
    cnm_bridge::delete_parked(&host.ns).unwrap();
    assert!(host.handle.link_get(veth.as_str()).is_err(), "the parked veth is deleted");
    assert!(host.handle.link_get(again.driver_data["veth"].as_str()).is_ok(), "the joined one is not");
    ctl.delete_sandbox("p").unwrap();
    ctl.delete_network("park").unwrap();
    cnm_bridge::delete_parked(&host.ns).unwrap();
}
