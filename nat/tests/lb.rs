//! The load-balancing table with real traffic: three backend namespaces on
//! a bridge of a test host, each a socat server that says who it is; a
//! client namespace whose table balances a virtual IP over them; the test
//! host's table publishing a port to them from an "outside" namespace.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::time::Duration;

use cnm_core::Protocol;
use cnm_nat::LbTable;
use cnm_netns::testing::{Background, TestHost, TestNs};
use cnm_netns::{AddrFlags, LinkAdd, NetNs};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 100);

struct Lab {
    host: TestHost,
    client: TestNs,
    backends: Vec<(TestNs, Ipv4Addr, Background)>,
}

/// A server in `ns` on port 80 that sends `name` and then echoes.
fn who_am_i(host: &TestHost, ns: &TestNs, name: &str) -> Background {
    let bg = host.spawn(&ns.ns, "socat", &["TCP-LISTEN:80,fork,reuseaddr", &format!("SYSTEM:echo {name}; cat")]);
    // Ready once it listens (the deadline only turns a server that never
    // starts into a clear failure).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ns.ns.exec("ss", ["-lnt"]).unwrap_or_default().contains(":80 ") {
        assert!(std::time::Instant::now() < deadline, "socat never listened in {name}");
        std::thread::sleep(Duration::from_millis(20));
    }
    bg
}

fn lab(test: &str) -> Option<Lab> {
    let host = TestHost::new(test)?;
    let br = host.handle.link_add(&LinkAdd::bridge("lbr0").up()).unwrap().index;
    host.handle.addr_add(br, "10.20.0.1/24".parse().unwrap(), AddrFlags::empty()).unwrap();
    let client = host.on_bridge("lbr0", "client", "10.20.0.2").unwrap();
    let mut backends = Vec::new();
    for i in 1..=3u8 {
        let ip = Ipv4Addr::new(10, 20, 0, 10 + i);
        let ns = host.on_bridge("lbr0", &format!("b{i}"), &ip.to_string()).unwrap();
        let bg = who_am_i(&host, &ns, &format!("b{i}"));
        backends.push((ns, ip, bg));
    }
    Some(Lab { host, client, backends })
}

/// Connects from `ns` to `to` and reads the first line: which backend.
fn who(ns: &NetNs, to: SocketAddr) -> String {
    ns.run(move || {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(10)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).expect("read");
        line.trim().to_string()
    })
    .unwrap()
}

/// `n` connections from `ns` to `to`; how many each backend answered.
fn spread(ns: &NetNs, to: SocketAddr, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        *counts.entry(who(ns, to)).or_default() += 1;
    }
    counts
}

#[test]
fn a_virtual_ip_spreads_connections_evenly_and_changes_atomically() {
    let Some(lab) = lab("lb-vip") else { return };
    let ips: Vec<Ipv4Addr> = lab.backends.iter().map(|b| b.1).collect();
    let mut table = LbTable::create(&lab.client.ns, "client", None, Default::default()).unwrap();
    table.set_vip(VIP, &ips).unwrap();
    let vip: SocketAddr = SocketAddr::from((VIP, 80));

    // 3,000 connections over 3 backends: each gets its share within ±10%.
    let counts = spread(&lab.client.ns, vip, 3000);
    assert_eq!(counts.keys().cloned().collect::<Vec<_>>(), ["b1", "b2", "b3"], "{counts:?}");
    for (b, n) in &counts {
        assert!((900..=1100).contains(n), "{b} got {n} of 3000: {counts:?}");
    }

    // A connection held open to a backend that stays.
    let (mut held, first) = lab
        .client
        .ns
        .run(move || {
            let s = TcpStream::connect_timeout(&vip, Duration::from_secs(10)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            (s, line.trim().to_string())
        })
        .unwrap();
    let gone = ["b1", "b2", "b3"].into_iter().find(|b| *b != first).unwrap();
    let keep: Vec<Ipv4Addr> =
        ips.iter().zip(["b1", "b2", "b3"]).filter(|(_, n)| *n != gone).map(|(ip, _)| *ip).collect();
    table.set_vip(VIP, &keep).unwrap();

    // No new connection reaches the removed backend; the others share.
    let counts = spread(&lab.client.ns, vip, 300);
    assert!(!counts.contains_key(gone), "{gone} was removed: {counts:?}");
    assert_eq!(counts.len(), 2, "{counts:?}");
    // The held connection still talks to its backend.
    held.write_all(b"still here\n").unwrap();
    let mut echoed = String::new();
    let mut r = BufReader::new(held.try_clone().unwrap());
    r.read_line(&mut echoed).unwrap();
    assert_eq!(echoed, "still here\n");

    // Without backends the virtual IP is balanced no more.
    table.set_vip(VIP, &[]).unwrap();
    assert_eq!(table.vips().count(), 0);
    let listing = lab.client.ns.exec("nft", ["list", "map", "inet", "cnm-lb", "vip_backends"]).unwrap();
    assert!(!listing.contains("10.20.0.100"), "{listing}");
    LbTable::delete(&lab.client.ns, "client").unwrap();
    LbTable::delete(&lab.client.ns, "client").unwrap();
    assert!(lab.client.ns.exec("nft", ["list", "tables"]).unwrap().trim().is_empty());
}

#[test]
fn a_published_port_reaches_every_backend_from_outside() {
    let Some(lab) = lab("lb-port") else { return };
    let outside = lab.host.outside().unwrap();
    let host_ns = lab.host.ns.try_clone().unwrap();
    // Backends answer the host's address on their bridge (no route back to
    // the outside): the port masquerades traffic into their subnet.
    let mut table =
        LbTable::create(&host_ns, "host", Some("10.20.0.0/24".parse().unwrap()), Default::default()).unwrap();
    let targets: Vec<SocketAddrV4> = lab.backends.iter().map(|b| SocketAddrV4::new(b.1, 80)).collect();
    table.set_port(Protocol::Tcp, 8080, &targets).unwrap();
    let to: SocketAddr = "198.51.100.1:8080".parse().unwrap();
    let counts = spread(&outside.ns, to, 90);
    assert_eq!(counts.len(), 3, "{counts:?}");
    // More backends than the chains made with the table: one is added.
    let many: Vec<SocketAddrV4> = targets.iter().cycle().take(20).copied().collect();
    table.set_port(Protocol::Tcp, 8080, &many).unwrap();
    assert_eq!(spread(&outside.ns, to, 60).len(), 3);
    table.set_port(Protocol::Tcp, 8080, &targets[..1]).unwrap();
    assert_eq!(spread(&outside.ns, to, 20).keys().cloned().collect::<Vec<_>>(), ["b1"]);
    assert_eq!(table.ports().collect::<Vec<_>>(), [(Protocol::Tcp, 8080)]);
}
