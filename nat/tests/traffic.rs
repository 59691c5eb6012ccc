//! Traffic through the firewall, the same suite for both backends, inside
//! test hosts: an "outside" namespace routed to the host, bridges with
//! container namespaces on them, servers and clients from socat.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use cnm_core::store::MemStore;
use cnm_core::{FirewallNetwork, PortMapping, PortRequest};
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::testing::{Background, TestHost, TestNs};
use cnm_netns::{AddrFlags, LinkAdd, Route, VethPeer};

struct Topo {
    host: TestHost,
    outside: TestNs,
    fw: NatFirewall,
    store: Arc<MemStore>,
}

const HOST_IP: &str = "198.51.100.1";
const OUTSIDE_IP: &str = "198.51.100.2";

impl Topo {
    fn new(test: &str, backend: Backend) -> Option<Topo> {
        let host = TestHost::new(test)?;
        let outside = host.outside().unwrap();
        // The outside has no route to the container subnets: replies reach it
        // only when the host masquerades.
        let store = Arc::new(MemStore::new());
        let fw = NatFirewall::new(backend, host.ns.try_clone().unwrap(), store.clone());
        Some(Topo { host, outside, fw, store })
    }

    /// A bridge with `gw` (v4 and optionally v6) and its firewall rules.
    fn network(
        &self,
        name: &str,
        v4: &str,
        v6: Option<&str>,
        tweak: impl FnOnce(&mut FirewallNetwork),
    ) -> FirewallNetwork {
        let br = self.host.handle.link_add(&LinkAdd::bridge(name).up()).unwrap().index;
        let mut subnets = vec![v4.parse::<ipnet::IpNet>().unwrap().trunc()];
        self.host.handle.addr_add(br, v4.parse().unwrap(), AddrFlags::empty()).unwrap();
        if let Some(v6) = v6 {
            self.host.handle.addr_add(br, v6.parse().unwrap(), AddrFlags::NODAD).unwrap();
            subnets.push(v6.parse::<ipnet::IpNet>().unwrap().trunc());
        }
        let mut n = FirewallNetwork {
            id: format!("net-{name}"),
            interface: name.into(),
            subnets,
            internal: false,
            masquerade: true,
            icc: true,
        };
        tweak(&mut n);
        self.fw.add_network(&n).unwrap();
        n
    }

    /// A container on bridge `br` with `addr` (and `addr6`), default routes
    /// via the bridge's gateways.
    fn container(&self, name: &str, br: &str, addr: &str, gw: &str, v6: Option<(&str, &str)>) -> TestNs {
        let c = self.host.container(name).unwrap();
        let br_index = self.host.index(br);
        let veth = format!("v{name}");
        self.host
            .handle
            .link_add(&LinkAdd::veth(veth.as_str(), VethPeer::new("eth0").netns(&c.ns)).master(br_index).up())
            .unwrap();
        // Hairpin mode, as the bridge driver sets it: a container reaching
        // its own published port gets the DNAT'ed frame back on its port.
        self.host.exec(&self.host.ns, "bridge", &["link", "set", "dev", &veth, "hairpin", "on"]);
        let eth0 = c.index("eth0");
        c.handle.link_set_up(eth0).unwrap();
        c.handle.addr_add(eth0, addr.parse().unwrap(), AddrFlags::empty()).unwrap();
        c.handle.route_add(&Route::default_via(gw.parse().unwrap())).unwrap();
        if let Some((a6, g6)) = v6 {
            c.handle.addr_add(eth0, a6.parse().unwrap(), AddrFlags::NODAD).unwrap();
            c.handle.route_add(&Route::default_via(g6.parse().unwrap())).unwrap();
        }
        c
    }

    fn publish(&self, endpoint: &str, network: &str, addrs: &[&str], ports: &[&str]) -> Vec<cnm_core::PortBinding> {
        self.fw
            .add_ports(&PortRequest {
                endpoint: endpoint.into(),
                network: network.into(),
                addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
                ports: ports.iter().map(|p| p.parse::<PortMapping>().unwrap()).collect(),
            })
            .unwrap()
    }
}

/// A server in `ns` that answers every connection with the peer's address.
fn echo_peer(host: &TestHost, ns: &TestNs, proto: &str, port: u16) -> Background {
    let listen = match proto {
        "tcp" => format!("TCP-LISTEN:{port},fork,reuseaddr"),
        "tcp6" => format!("TCP6-LISTEN:{port},fork,reuseaddr,ipv6only=1"),
        "udp" => format!("UDP-RECVFROM:{port},fork,reuseaddr"),
        _ => unreachable!(),
    };
    let bg = host.spawn(&ns.ns, "socat", &[&listen, "SYSTEM:echo $SOCAT_PEERADDR"]);
    // Wait until it listens: under CPU hogs socat can take seconds to
    // start, and a connection before that is refused at once (no retry
    // would help). The deadline only turns a server that never starts
    // into a clear failure.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = ns.ns.exec("ss", ["-lntu"]).unwrap_or_default();
        if out.contains(&format!(":{port} ")) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "socat never listened on {proto} port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    bg
}

/// [`ask`] for a port that should answer: up to three tries, so a loaded
/// machine (a slow fork of the echo server) is not taken for a blocked port.
fn ask_ok(ns: &TestNs, proto: &str, addr: &str, port: u16) -> String {
    for _ in 0..2 {
        let out = ask(ns, proto, addr, port);
        if !out.is_empty() {
            return out;
        }
    }
    ask(ns, proto, addr, port)
}

/// Connects from `ns` and returns what the server said (empty on failure).
fn ask(ns: &TestNs, proto: &str, addr: &str, port: u16) -> String {
    let target = match (proto, addr.parse::<IpAddr>().unwrap()) {
        ("tcp", IpAddr::V6(a)) => format!("TCP6:[{a}]:{port},connect-timeout=2"),
        ("tcp", a) => format!("TCP4:{a}:{port},connect-timeout=2"),
        ("udp", a) => format!("UDP4:{a}:{port}"),
        _ => unreachable!(),
    };
    // TCP: the echo server answers and closes, so socat ends at once on a
    // working path; the inactivity limit only waits for a slow fork of the
    // echo (seconds under CPU hogs), never for a blocked port, which fails
    // at connect. UDP has no close: 2 s of silence ends it.
    let idle = if proto == "tcp" { "10" } else { "2" };
    let out = ns
        .ns
        .command("socat")
        .args(["-T", idle, "-", &target])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let _ = c.stdin.take().unwrap().write_all(b"hello\n");
            c.wait_with_output()
        });
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

fn published_port_suite(backend: Backend, test: &str) {
    let Some(t) = Topo::new(test, backend) else { return };
    t.network("brA", "10.88.1.1/24", None, |_| {});
    let c1 = t.container("c1", "brA", "10.88.1.2/24", "10.88.1.1", None);
    let _tcp = echo_peer(&t.host, &c1, "tcp", 80);
    let _udp = echo_peer(&t.host, &c1, "udp", 53);
    let _other = echo_peer(&t.host, &c1, "tcp", 81);
    let bound = t.publish("ep1", "net-brA", &["10.88.1.2"], &["8080:80", "5353:53/udp", "127.0.0.1:9090:80", "80"]);
    assert_eq!(bound.len(), 4);
    // The rules, as the kernel reports them.
    match backend {
        Backend::Nftables => {
            let j: serde_json::Value =
                serde_json::from_str(&t.host.exec(&t.host.ns, "nft", &["-j", "list", "table", "inet", "cnm"])).unwrap();
            let items = j["nftables"].as_array().unwrap();
            let map = items.iter().find(|i| i["map"]["name"] == "dnat4_any").expect("map dnat4_any");
            assert_eq!(map["map"]["elem"].as_array().map(|e| e.len()), Some(3), "{map}");
            assert!(items
                .iter()
                .any(|i| i["map"]["name"] == "dnat4_ip" && i["map"]["elem"].as_array().is_some_and(|e| e.len() == 1)));
            assert!(items.iter().any(|i| i["chain"]["name"] == "nat_prerouting" && i["chain"]["hook"] == "prerouting"));
            let text = t.host.exec(&t.host.ns, "nft", &["list", "table", "inet", "cnm"]);
            assert!(text.contains("ip saddr 10.88.1.0/24 oifname != \"brA\" masquerade"), "{text}");
            // The elements written over netlink, as nft decodes them.
            for want in [
                "tcp . 8080 : 10.88.1.2 . 80",
                "udp . 5353 : 10.88.1.2 . 53",
                "127.0.0.1 . tcp . 9090 : 10.88.1.2 . 80",
                "10.88.1.2 . tcp . 80",
                "10.88.1.2 . udp . 53",
            ] {
                assert!(text.contains(want), "{want:?} missing in\n{text}");
            }
        }
        Backend::Iptables => {
            let save = t.host.exec(&t.host.ns, "iptables-save", &[]);
            assert!(save.contains("-A CNM-DNAT -p tcp -m tcp --dport 8080 -m comment --comment \"cnm:ep1\" -j DNAT --to-destination 10.88.1.2:80"), "{save}");
            assert!(
                save.contains(
                    "-A CNM-POSTROUTING -s 10.88.1.0/24 ! -o brA -m comment --comment \"cnm:net-brA\" -j MASQUERADE"
                ),
                "{save}"
            );
            assert!(save.contains("-A PREROUTING -m addrtype --dst-type LOCAL -j CNM-DNAT"), "{save}");
            assert_eq!(save.matches("-j CNM-FORWARD").count(), 1, "one jump, however often rules were applied");
        }
    }
    let chosen =
        bound.iter().find(|b| b.container_port == 80 && b.host_ip.is_none() && b.host_port != 8080).unwrap().host_port;
    assert!(chosen >= 32768, "an omitted host port comes from the ephemeral range: {chosen}");

    // From another namespace through the host's address; the container sees
    // the client's real address.
    assert_eq!(ask_ok(&t.outside, "tcp", HOST_IP, 8080), OUTSIDE_IP, "tcp from outside");
    assert_eq!(ask_ok(&t.outside, "udp", HOST_IP, 5353), OUTSIDE_IP, "udp from outside");
    assert_eq!(ask_ok(&t.outside, "tcp", HOST_IP, chosen), OUTSIDE_IP, "ephemeral port from outside");
    // From the host itself, through its own address and through 127.0.0.1,
    // with no proxy process.
    assert!(!ask_ok(&t.host, "tcp", HOST_IP, 8080).is_empty(), "host via its address");
    assert_eq!(
        ask_ok(&t.host, "tcp", "127.0.0.1", 8080),
        "10.88.1.1",
        "host via 127.0.0.1 (masqueraded to the gateway)"
    );
    assert!(!ask_ok(&t.host, "tcp", "127.0.0.1", 9090).is_empty(), "127.0.0.1-bound port from the host");
    // Hairpin: the container reaches its own published port via the host.
    assert!(!ask_ok(&c1, "tcp", HOST_IP, 8080).is_empty(), "hairpin");
    // A 127.0.0.1-bound port is not reachable through the host's address.
    assert_eq!(ask(&t.outside, "tcp", HOST_IP, 9090), "", "127.0.0.1-bound port via the host address");

    // Direct routing: the outside routes the container subnet via the host.
    let direct = Route { gateway: Some(HOST_IP.parse().unwrap()), ..Route::new("10.88.1.0/24".parse().unwrap()) };
    t.outside.handle.route_add(&direct).unwrap();
    assert_eq!(ask_ok(&t.outside, "tcp", "10.88.1.2", 80), OUTSIDE_IP, "a published container port, routed straight");
    assert_eq!(ask(&t.outside, "tcp", "10.88.1.2", 81), "", "an unpublished port is unreachable by direct routing");

    // Masquerade: the container reaches the outside, which sees the host.
    let _out = echo_peer(&t.host, &t.outside, "tcp", 7000);
    assert_eq!(ask_ok(&c1, "tcp", OUTSIDE_IP, 7000), HOST_IP, "masquerade");

    // Someone flushes the ruleset: published ports stop; reapply restores them.
    match backend {
        Backend::Nftables => {
            t.host.exec(&t.host.ns, "nft", &["flush", "ruleset"]);
        }
        Backend::Iptables => {
            t.host.exec(&t.host.ns, "iptables", &["-t", "nat", "-F"]);
            t.host.exec(&t.host.ns, "iptables", &["-F"]);
        }
    }
    assert_eq!(ask(&t.outside, "tcp", HOST_IP, 8080), "", "after the flush");
    t.fw.reapply().unwrap();
    assert_eq!(ask_ok(&t.outside, "tcp", HOST_IP, 8080), OUTSIDE_IP, "after reapply");

    // Removing the ports removes exactly them; removing again is fine.
    t.fw.remove_ports("ep1").unwrap();
    t.fw.remove_ports("ep1").unwrap();
    assert_eq!(ask(&t.outside, "tcp", HOST_IP, 8080), "");
    assert_eq!(ask_ok(&c1, "tcp", OUTSIDE_IP, 7000), HOST_IP, "network rules stay");
    t.fw.remove_network("net-brA").unwrap();
    t.fw.remove_network("net-brA").unwrap();
}

fn isolation_suite(backend: Backend, test: &str) {
    let Some(t) = Topo::new(test, backend) else { return };
    t.network("brA", "10.88.1.1/24", None, |_| {});
    t.network("brB", "10.88.2.1/24", None, |_| {});
    t.network("brI", "10.88.3.1/24", None, |n| n.internal = true);
    t.network("brC", "10.88.4.1/24", None, |n| n.icc = false);
    let a = t.container("a", "brA", "10.88.1.2/24", "10.88.1.1", None);
    let a2 = t.container("a2", "brA", "10.88.1.3/24", "10.88.1.1", None);
    let b = t.container("b", "brB", "10.88.2.2/24", "10.88.2.1", None);
    let i = t.container("i", "brI", "10.88.3.2/24", "10.88.3.1", None);
    let c = t.container("c", "brC", "10.88.4.2/24", "10.88.4.1", None);
    let c2 = t.container("c2", "brC", "10.88.4.3/24", "10.88.4.1", None);
    let ping = |from: &TestNs, to: &str| t.host.ping(&from.ns, to.parse().unwrap());

    assert!(ping(&a, "10.88.1.3"), "same network talks");
    assert!(ping(&a, OUTSIDE_IP), "a non-internal network reaches the outside");
    assert!(!ping(&a, "10.88.2.2"), "two networks are isolated");
    assert!(!ping(&b, "10.88.1.2"), "… both ways");
    assert!(!ping(&i, OUTSIDE_IP), "an internal network has no egress");
    assert!(!ping(&i, "10.88.1.2"));
    assert!(!ping(&c, "10.88.4.3"), "icc off: no container-to-container traffic");
    assert!(!ping(&c2, "10.88.4.2"));
    assert!(ping(&c, OUTSIDE_IP), "icc off still has egress");
    // b publishes a port: reached from network A through A's gateway (the
    // positive control on the same path), never from the internal network.
    let _srv = echo_peer(&t.host, &b, "tcp", 80);
    t.publish("epb", "net-brB", &["10.88.2.2"], &["8080:80"]);
    assert!(!ask_ok(&a, "tcp", "10.88.1.1", 8080).is_empty(), "a published port is public");
    assert_eq!(ask(&i, "tcp", "10.88.3.1", 8080), "", "nothing leaves an internal network");
    let _ = (a2,);
}

fn localhost_suite(backend: Backend, test: &str) {
    let Some(t) = Topo::new(test, backend) else { return };
    t.network("brA", "10.88.1.1/24", None, |_| {});
    let c1 = t.container("c1", "brA", "10.88.1.2/24", "10.88.1.1", None);
    let c2 = t.container("c2", "brA", "10.88.1.3/24", "10.88.1.1", None);
    let _srv = echo_peer(&t.host, &c1, "tcp", 80);
    t.publish("ep1", "net-brA", &["10.88.1.2"], &["127.0.0.1:9090:80", "127.0.0.1:9091:53/udp"]);
    assert!(!ask_ok(&t.host, "tcp", "127.0.0.1", 9090).is_empty(), "reachable from the host itself");

    // Crafted routes: other namespaces send packets for 127.0.0.1 to the
    // host over their link (CVE-2020-8558). UDP shows whether a packet got
    // through at all (a TCP handshake would fail on the way back anyway).
    // The receiver is a socket made inside c1: bound before anything is sent.
    let sink = c1.ns.run(|| std::net::UdpSocket::bind("0.0.0.0:53")).unwrap().unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let send = |ns: &TestNs, what: &str| {
        let mut c = ns
            .ns
            .command("socat")
            .args(["-u", "-", "UDP4-SENDTO:127.0.0.1:9091"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(format!("{what}\n").as_bytes()).unwrap();
        c.wait().unwrap();
    };
    for (ns, via) in [(&t.outside, HOST_IP), (&c2, "10.88.1.1")] {
        for cmd in [
            "ip route del local 127.0.0.1 dev lo table local".to_string(),
            "ip route del local 127.0.0.0/8 dev lo table local".to_string(),
            format!("ip route add 127.0.0.1/32 via {via} dev eth0"),
            "sysctl -qw net.ipv4.conf.all.route_localnet=1".to_string(),
            "sysctl -qw net.ipv4.conf.eth0.route_localnet=1".to_string(),
        ] {
            let argv: Vec<&str> = cmd.split(' ').collect();
            t.host.exec(&ns.ns, argv[0], &argv[1..]);
        }
        send(ns, &format!("crafted-from-{}", ns.name));
    }
    // The positive control comes last: once it has arrived, anything sent
    // before it that got through has arrived too.
    send(&t.host, "from-the-host");
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.iter().any(|m: &String| m.contains("from-the-host")) {
        let (n, _) = sink.recv_from(&mut buf).expect("the legitimate path works: nothing arrived in 10 s");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    sink.set_nonblocking(true).unwrap();
    while let Ok((n, _)) = sink.recv_from(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(
        !got.iter().any(|m| m.contains("crafted")),
        "a 127.0.0.1-bound port was reached from another namespace: {got:?}"
    );
}

fn ipv6_suite(backend: Backend, test: &str) {
    let Some(t) = Topo::new(test, backend) else { return };
    t.network("brA", "10.88.1.1/24", Some("fd00:88:1::1/64"), |_| {});
    let c1 = t.container("c1", "brA", "10.88.1.2/24", "10.88.1.1", Some(("fd00:88:1::2/64", "fd00:88:1::1")));
    let _srv = echo_peer(&t.host, &c1, "tcp6", 80);
    let _out = echo_peer(&t.host, &t.outside, "tcp6", 7000);
    t.publish("ep1", "net-brA", &["10.88.1.2", "fd00:88:1::2"], &["8080:80"]);
    // Readiness: links that just came up carry IPv6 only once the kernel has
    // reported their carrier (linkwatch, late under load) and neighbour
    // discovery has run. Each side first reaches its own gateway.
    for (from, gw) in [(&c1, "fd00:88:1::1"), (&t.outside, "2001:db8:1::1")] {
        let gw: IpAddr = gw.parse().unwrap();
        assert!((0..10).any(|_| t.host.ping(&from.ns, gw)), "{} never reached its gateway {gw}", from.name);
    }
    // Allow one retry for the first connection all the same.
    let ask6 = |from: &TestNs, to: &str, port: u16| -> Option<IpAddr> {
        (0..2).find_map(|_| ask(from, "tcp", to, port).trim_matches(['[', ']']).parse().ok())
    };
    assert_eq!(
        ask6(&t.outside, "2001:db8:1::1", 8080),
        Some("2001:db8:1::2".parse().unwrap()),
        "IPv6 DNAT, source kept"
    );
    assert_eq!(ask6(&c1, "2001:db8:1::2", 7000), Some("2001:db8:1::1".parse().unwrap()), "NAT66 masquerade");
}

/// A UDP client keeps sending to a published port (every 10 ms) while the
/// port moves to another container: its packets reach the new container,
/// because the flow's conntrack entry (and its NAT decision) is flushed.
fn moved_udp_port_suite(backend: Backend, test: &str) {
    use std::net::UdpSocket;
    let Some(t) = Topo::new(test, backend) else { return };
    t.network("brA", "10.88.1.1/24", None, |_| {});
    let c1 = t.container("c1", "brA", "10.88.1.2/24", "10.88.1.1", None);
    let c2 = t.container("c2", "brA", "10.88.1.3/24", "10.88.1.1", None);
    let listen = |c: &TestNs| {
        let s = c.ns.run(|| UdpSocket::bind("0.0.0.0:53")).unwrap().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let (r1, r2) = (listen(&c1), listen(&c2));
    t.publish("ep1", "net-brA", &["10.88.1.2"], &["5300:53/udp"]);
    let client = t.outside.ns.run(|| UdpSocket::bind("0.0.0.0:40000")).unwrap().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            // Bounded: at most 20 s of traffic.
            for _ in 0..2000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = client.send_to(b"ping", format!("{HOST_IP}:5300"));
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let mut buf = [0u8; 16];
        assert!(r1.recv_from(&mut buf).is_ok(), "the first container gets the flow");
        t.fw.remove_ports("ep1").unwrap();
        let moved = std::time::Instant::now();
        t.publish("ep2", "net-brA", &["10.88.1.3"], &["5300:53/udp"]);
        let got = r2.recv_from(&mut buf);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(got.is_ok(), "the flow never reached the new container (stale conntrack entry)");
        eprintln!("{test}: the flow reached the new container {:?} after the move", moved.elapsed());
    });
}

/// A host port claimed by a publish that a crash interrupted (the claim is
/// written, the mapping never recorded) is released by `repair`, and the
/// port can be published again.
fn stale_claim_suite(backend: Backend, test: &str) {
    use cnm_core::store::{Expect, Store};
    let Some(t) = Topo::new(test, backend) else { return };
    t.network("brA", "10.88.1.1/24", None, |_| {});
    t.store.put("firewall/hostports/tcp/8123/any", br#"{"endpoint":"crashed"}"#, Expect::Absent).unwrap();
    let req = |ep: &str| PortRequest {
        endpoint: ep.into(),
        network: "net-brA".into(),
        addresses: vec!["10.88.1.2".parse().unwrap()],
        ports: vec!["8123:80".parse().unwrap()],
    };
    let e = t.fw.add_ports(&req("ep1")).unwrap_err();
    assert!(e.to_string().contains("crashed"), "the stale claim holds the port: {e}");
    let repairs = t.fw.repair().unwrap();
    assert!(repairs.iter().any(|r| r.contains("firewall/hostports/tcp/8123/any")), "{repairs:?}");
    t.fw.add_ports(&req("ep1")).unwrap();
    assert!(t.fw.repair().unwrap().is_empty(), "a held claim is kept");
}

fn bad_input_suite(backend: Backend, test: &str) {
    let Some(t) = Topo::new(test, backend) else { return };
    t.network("brA", "10.88.1.1/24", None, |_| {});
    t.publish("ep1", "net-brA", &["10.88.1.2"], &["8080:80"]);
    let rules = |t: &Topo| match backend {
        Backend::Nftables => t.host.exec(&t.host.ns, "nft", &["-j", "list", "table", "inet", "cnm"]),
        // Rules only: chain counters change with traffic.
        Backend::Iptables => t
            .host
            .exec(&t.host.ns, "iptables-save", &[])
            .lines()
            .filter(|l| l.starts_with("-A"))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let before = rules(&t);
    let req = |ports: Vec<PortMapping>, addrs: &[&str]| PortRequest {
        endpoint: "ep2".into(),
        network: "net-brA".into(),
        addresses: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        ports,
    };
    let pm = |s: &str| s.parse::<PortMapping>().unwrap();
    let raw = |hs: u16, he: u16, cs: u16, ce: u16| PortMapping {
        protocol: cnm_core::Protocol::Tcp,
        host_ip: None,
        host_port: Some(cnm_core::PortRange { start: hs, end: he }),
        container_port: cnm_core::PortRange { start: cs, end: ce },
    };
    let cases: Vec<(PortRequest, &str)> = vec![
        (req(vec![raw(0, 0, 80, 80)], &["10.88.1.3"]), "bad port range 0"),
        (req(vec![raw(8000, 8010, 80, 85)], &["10.88.1.3"]), "differ in length"),
        (req(vec![raw(9000, 8990, 80, 90)], &["10.88.1.3"]), "bad port range"),
        (req(vec![pm("[2001:db8::1]:8081:80")], &["10.88.1.3"]), "no IPv6 address"),
        (req(vec![pm("8082:80"), pm("8082:81")], &["10.88.1.3"]), "given twice"),
    ];
    for (r, want) in cases {
        let e = t.fw.add_ports(&r).unwrap_err();
        assert_eq!(e.kind(), cnm_core::ErrorKind::InvalidParameter, "{e}");
        assert!(e.to_string().contains(want), "{e} should say {want}");
    }
    assert!("80/icmp".parse::<PortMapping>().is_err(), "unknown protocol");
    assert!("70000:80".parse::<PortMapping>().is_err(), "port above 65535");
    // A published port is refused, naming its owner, and nothing changes.
    let e = t.fw.add_ports(&req(vec![pm("8080:81")], &["10.88.1.3"])).unwrap_err();
    assert_eq!(e.kind(), cnm_core::ErrorKind::Conflict);
    assert_eq!(e.to_string(), "port 8080/tcp on all addresses is already published by endpoint ep1");
    let e = t.fw.add_ports(&req(vec![pm("127.0.0.1:8080:81"), pm("8090:81")], &["10.88.1.3"])).unwrap_err();
    assert!(e.to_string().contains("ep1"), "{e}");
    assert_eq!(rules(&t), before, "no rule changed");
    // The claim of the failed request's first port was released.
    t.publish("ep3", "net-brA", &["10.88.1.4"], &["8090:81"]);

    if backend == Backend::Nftables {
        // The table was deleted behind the firewall's back: the element
        // change is refused by the kernel, so the whole table is rebuilt
        // from the state, with the new port and the ones published before.
        t.host.exec(&t.host.ns, "nft", &["delete", "table", "inet", "cnm"]);
        t.fw.add_ports(&req(vec![pm("8100:80")], &["10.88.1.5"])).unwrap();
        let map = t.host.exec(&t.host.ns, "nft", &["list", "map", "inet", "cnm", "dnat4_any"]);
        assert!(map.contains("8100") && map.contains("8090"), "{map}");
        t.fw.remove_ports("ep2").unwrap();
        t.publish("ep5", "net-brA", &["10.88.1.5"], &["8100:80"]);
    }
}

macro_rules! both_backends {
    ($($suite:ident),*) => {
        mod nftables {
            $(#[test] fn $suite() { super::$suite(cnm_nat::Backend::Nftables, concat!("nft_", stringify!($suite))); })*
        }
        mod iptables {
            $(#[test] fn $suite() { super::$suite(cnm_nat::Backend::Iptables, concat!("ipt_", stringify!($suite))); })*
        }
    };
}

both_backends!(
    published_port_suite,
    isolation_suite,
    localhost_suite,
    ipv6_suite,
    bad_input_suite,
    moved_udp_port_suite,
    stale_claim_suite
);
