//! The overlay driver across three hosts, as an operator runs it: three host
//! namespaces on an underlay bridge, etcd (Debian's etcd-server) in a fifth
//! namespace on that underlay, and on each host its own `cnm agent` process
//! with its own state directory. Checked with ping, tcpdump, iperf3 and
//! `ip neigh`, and the captured packets decoded with the codec.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cnm_core::Store;
use cnm_netns::testing::{ping, TestHost};
use cnm_netns::{AddrFlags, LinkAdd, NetNs, VethPeer};

mod common;
use common::cluster::{cluster, until, Host, ETCD_IP, LEASE_TTL_S};
use common::{underlay_ns, wait_listening};

/// A VXLAN payload (header and inner frame) carrying one UDP datagram with
/// `text` to `ip`:`port` at `mac`, on `vni`.
fn vxlan_frame(vni: u32, mac: [u8; 6], ip: std::net::Ipv4Addr, port: u16, text: &str) -> Vec<u8> {
    let mut inner = Vec::new();
    inner.extend_from_slice(&mac);
    inner.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00]);
    let total = (20 + 8 + text.len()) as u16;
    let mut ipv4 = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 9, 0, 99];
    ipv4[2..4].copy_from_slice(&total.to_be_bytes());
    ipv4.extend_from_slice(&ip.octets());
    let sum = !ipv4.chunks(2).fold(0u32, |a, w| {
        let a = a + u32::from(u16::from_be_bytes([w[0], w[1]]));
        (a & 0xffff) + (a >> 16)
    }) as u16;
    ipv4[10..12].copy_from_slice(&sum.to_be_bytes());
    inner.extend_from_slice(&ipv4);
    inner.extend_from_slice(&40000u16.to_be_bytes());
    inner.extend_from_slice(&port.to_be_bytes());
    inner.extend_from_slice(&((8 + text.len()) as u16).to_be_bytes());
    inner.extend_from_slice(&[0, 0]);
    inner.extend_from_slice(text.as_bytes());
    let mut out = vec![0u8; 8];
    let mut p = cnm_vxlan::wire::VxlanPacket::new_checked(&mut out[..]).unwrap();
    cnm_vxlan::wire::VxlanRepr { vni }.emit(&mut p).unwrap();
    out.extend_from_slice(&inner);
    out
}

/// `network inspect`'s `Peers` of `net` on host `h`: (name, IP) pairs.
fn inspect_peers(h: &Host, net: &str) -> Vec<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["network", "inspect", net])).unwrap();
    v[0]["Peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["Name"].as_str().unwrap().to_string(), p["IP"].as_str().unwrap().to_string()))
        .collect()
}

/// Pings until one is answered (at most `tries` seconds or so).
fn reaches(from: &NetNs, to: &str, tries: usize) -> bool {
    (0..tries).any(|_| ping(from, to.parse().unwrap()))
}

/// The IPs with permanent neighbour entries in `ns`.
fn neighbours(tb: &TestHost, ns: &NetNs) -> Vec<String> {
    let j = tb.ip_json(ns, &["neigh", "show", "nud", "permanent"]);
    j.as_array().unwrap().iter().filter_map(|n| n["dst"].as_str().map(String::from)).collect()
}

/// VXLAN ids and inner IPv4 source addresses of the UDP 4789 packets in a
/// pcap file (Ethernet link type), decoded with the codec.
fn decode_pcap(path: &Path) -> Vec<(u32, IpAddr, IpAddr)> {
    let data = std::fs::read(path).unwrap();
    assert!(data.len() >= 24, "empty capture");
    assert_eq!(u32::from_le_bytes(data[20..24].try_into().unwrap()), 1, "Ethernet capture");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &data[at + 16..(at + 16 + len).min(data.len())];
        at += 16 + len;
        let d = cnm_vxlan::wire::decapsulate(frame).unwrap_or_else(|e| panic!("captured frame does not decode: {e}"));
        let inner = d.inner;
        // Inner Ethernet (14) + IPv4: source at 26..30, destination at 30..34.
        if inner.len() >= 34 && inner[12..14] == [0x08, 0x00] {
            let src = IpAddr::from(<[u8; 4]>::try_from(&inner[26..30]).unwrap());
            let dst = IpAddr::from(<[u8; 4]>::try_from(&inner[30..34]).unwrap());
            out.push((d.vni, src, dst));
        }
    }
    out
}

fn iperf_gbits(tb: &TestHost, server: &NetNs, client: &NetNs, to: &str, secs: u32) -> f64 {
    for _ in 0..3 {
        let srv = tb.spawn(server, "iperf3", &["-s", "-1"]);
        wait_listening(server, 5201);
        let out = client.exec("iperf3", ["-c", to, "-t", &secs.to_string(), "-J"]).unwrap_or_default();
        drop(srv);
        let Ok(j) = serde_json::from_str::<serde_json::Value>(&out) else { continue };
        if let Some(bps) = j["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bps / 1e9;
        }
    }
    panic!("iperf3 to {to} gave no result three times");
}

#[test]
fn overlay_spans_three_hosts_through_etcd() {
    let Some(mut c) = cluster("overlay_3hosts") else { return };
    for h in &mut c.hosts {
        h.start_agent();
    }
    c.wait_hosts_registered(3);
    let (h1, h2, h3) = (&c.hosts[0], &c.hosts[1], &c.hosts[2]);

    // Created on host 1, visible on hosts 2 and 3, one VXLAN id per subnet
    // (Docker's reference has the first two subnets).
    let subnets = ["--subnet", "10.1.1.0/24", "--subnet", "11.1.1.0/24", "--subnet", "12.1.1.0/24"];
    let id = h1.ok(&[&["network", "create", "-d", "overlay"][..], &subnets, &["ov"]].concat());
    let id = id.trim().to_string();
    for h in [h2, h3] {
        let ls = h.ok(&["network", "ls"]);
        assert!(ls.contains(&format!("{}   ov       overlay   global", &id[..12])), "host{}: {ls}", h.n);
        let v: serde_json::Value = serde_json::from_str(&h.ok(&["network", "inspect", "ov"])).unwrap();
        assert_eq!(v[0]["Options"]["com.docker.network.driver.overlay.vxlanid_list"], "4097,4098,4099");
        assert_eq!(v[0]["Scope"], "global");
    }

    // Containers on each host, in both subnets.
    let c1 = h1.container("c1", "ov", "10.1.1.7");
    let c2 = h2.container("c2", "ov", "11.1.1.12");
    let c3 = h3.container("c3", "ov", "10.1.1.9");
    let c3b = h3.container("c3b", "ov", "11.1.1.13");
    let c2c = h2.container("c2c", "ov", "12.1.1.5");
    // MTU 1450 on a 1500 underlay; Docker's MAC rule.
    let eth = &c.tb.ip_json(&c1, &["link", "show", "eth0"])[0];
    assert_eq!((eth["mtu"].as_u64(), eth["address"].as_str()), (Some(1450), Some("02:42:0a:01:01:07")));
    // Nothing of the overlay in a host's own routing table.
    let routes = c.tb.exec(&h1.ns.ns, "ip", &["route"]);
    assert!(!routes.contains("10.1.1.") && !routes.contains("11.1.1."), "{routes}");
    // Egress through the host's gateway bridge (eth1, default route, NAT):
    // an outside namespace with no route back sees replies only if masqueraded.
    let out = c.tb.container("out1").unwrap();
    h1.ns.handle.link_add(&LinkAdd::veth("uplink", VethPeer::new("eth0").netns(&out.ns)).up()).unwrap();
    h1.ns.handle.addr_add(h1.ns.index("uplink"), "198.51.100.1/24".parse().unwrap(), AddrFlags::empty()).unwrap();
    out.handle.link_set_up(out.index("eth0")).unwrap();
    out.handle.addr_add(out.index("eth0"), "198.51.100.2/24".parse().unwrap(), AddrFlags::empty()).unwrap();
    assert!(reaches(&c1, "198.51.100.2", 3), "no egress from the overlay container");
    let r = c.tb.exec(&c1, "ip", &["route", "show", "default"]);
    assert!(r.contains("dev eth1"), "default route not via the gateway bridge: {r}");
    assert!(h1.ok(&["network", "ls"]).contains("cnm_gwbridge   bridge    local"));
    // An internal overlay network gets no gateway bridge.
    h1.ok(&["network", "create", "-d", "overlay", "--internal", "--subnet", "10.9.0.0/24", "ovi"]);
    let c5 = h1.container("c5", "ovi", "10.9.0.5");
    let links = c.tb.exec(&c5, "ip", &["-o", "link"]);
    assert!(links.contains("eth0") && !links.contains("eth1"), "{links}");
    assert!(c.tb.exec(&c5, "ip", &["route", "show", "default"]).trim().is_empty());
    h1.ok(&["disconnect", "ovi", "c5"]);
    h1.ok(&["sandbox", "rm", "c5"]);
    h1.ok(&["network", "rm", "ovi"]);

    for (from, to) in [
        (&c1, "11.1.1.12"),
        (&c1, "10.1.1.9"),
        (&c1, "11.1.1.13"),
        (&c2, "10.1.1.7"),
        (&c2, "10.1.1.9"),
        (&c3, "11.1.1.12"),
        (&c3b, "10.1.1.7"),
        (&c2c, "10.1.1.7"),
        (&c2c, "11.1.1.13"),
    ] {
        assert!(reaches(from, to, 3), "no ping to {to}");
    }
    let peers = inspect_peers(h1, "ov");
    assert_eq!(peers, [1, 2, 3].map(|n| (format!("host{n}"), format!("192.0.2.{n}"))));

    // On the wire: UDP 4789 with the sender's subnet's VXLAN id.
    let pcap = c.tb.dir().join("h2.pcap");
    let pcap_s = pcap.to_str().unwrap().to_string();
    let dump = c.tb.spawn_ready(
        &h2.ns.ns,
        "tcpdump",
        &["-i", "eth0", "-U", "-c", "8", "-w", &pcap_s, "udp", "port", "4789"],
        "listening on",
    );
    for _ in 0..2 {
        assert!(reaches(&c1, "11.1.1.12", 3));
        assert!(reaches(&c2c, "10.1.1.7", 3));
    }
    dump.wait(Duration::from_secs(5));
    let seen = decode_pcap(&pcap);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert!(seen.contains(&(4097, ip("10.1.1.7"), ip("11.1.1.12"))), "{seen:?}");
    assert!(seen.contains(&(4098, ip("11.1.1.12"), ip("10.1.1.7"))), "{seen:?}");
    assert!(seen.contains(&(4099, ip("12.1.1.5"), ip("10.1.1.7"))), "{seen:?}");
    assert!(seen.contains(&(4097, ip("10.1.1.7"), ip("12.1.1.5"))), "{seen:?}");
    // Every packet on the sender's subnet's id, with three subnets too.
    let vni_of = |a: &IpAddr| 4097 + u32::from(a.to_string().split('.').next().unwrap().parse::<u8>().unwrap() - 10);
    assert!(seen.iter().all(|(vni, src, _)| *vni == vni_of(src)), "{seen:?}");

    // TCP across the overlay: MSS 1410, and a transfer that completes. How
    // fast it is against the underlay is measured, not gated: a functional
    // test on a shared 2-core machine cannot judge speed.
    let syn = c.tb.spawn_ready(
        &c3,
        "tcpdump",
        &["-i", "eth0", "-nn", "-l", "-c", "1", "tcp[tcpflags] & tcp-syn != 0"],
        "listening on",
    );
    let o = iperf_gbits(&c.tb, &c3, &c1, "10.1.1.9", 1);
    assert!(o > 0.0, "iperf3 across the overlay moved nothing");
    let syn = syn.wait(Duration::from_secs(5));
    assert!(syn.contains("mss 1410"), "{syn}");

    // Host 2 dies: its endpoints leave hosts 1 and 3 within the lease's TTL.
    let ov1 = h1.overlay_ns(&id).expect("host 1 has the overlay namespace");
    let ov3 = h3.overlay_ns(&id).expect("host 3 has the overlay namespace");
    assert!(neighbours(&c.tb, &ov1).contains(&"11.1.1.12".to_string()));
    c.hosts[1].kill_agent();
    let gone = until(Duration::from_secs(LEASE_TTL_S + 5), "host 2's entries removed", || {
        !neighbours(&c.tb, &ov1).contains(&"11.1.1.12".to_string())
            && !neighbours(&c.tb, &ov3).contains(&"11.1.1.12".to_string())
    });
    eprintln!("host 2's entries gone {gone:?} after its agent was killed (TTL {LEASE_TTL_S} s)");
    assert!(!ping(&c1, ip("11.1.1.12")));
    c.hosts[1].start_agent();
    until(Duration::from_secs(10), "host 2 back", || ping(&c1, ip("11.1.1.12")));
    let (h1, h3) = (&c.hosts[0], &c.hosts[2]);

    // Removing an endpoint removes its entries everywhere within a second.
    let t = Instant::now();
    h3.ok(&["disconnect", "ov", "c3"]);
    until(Duration::from_secs(1).saturating_sub(t.elapsed()), "10.1.1.9 removed from host 1", || {
        !neighbours(&c.tb, &ov1).contains(&"10.1.1.9".to_string())
    });
    eprintln!("endpoint removed everywhere {:?} after disconnect began", t.elapsed());

    // etcd lost: a clear error naming it; traffic keeps flowing; on return
    // the agents resynchronise.
    c.etcd.kill();
    let o = h1.run(&["network", "ls"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("{ETCD_IP}:2379")), "{err}");
    assert!(reaches(&c1, "11.1.1.12", 3), "traffic stopped with etcd");
    c.etcd.restart();
    let h3 = &c.hosts[2];
    let c4 = h3.container("c4", "ov", "11.1.1.20");
    until(Duration::from_secs(10), "host 1 reaches a container made after etcd came back", || {
        ping(&c1, ip("11.1.1.20"))
    });
    assert!(reaches(&c4, "10.1.1.7", 3));

    // Teardown: nothing left anywhere.
    for (h, sb) in [(0, "c1"), (1, "c2"), (1, "c2c"), (2, "c3b"), (2, "c4")] {
        c.hosts[h].ok(&["disconnect", "ov", sb]);
    }
    // The gateway bridge endpoint went with the last overlay endpoint.
    let gw = c.hosts[0].ok(&["network", "inspect", "cnm_gwbridge"]);
    let gw: serde_json::Value = serde_json::from_str(&gw).unwrap();
    assert_eq!(gw[0]["Containers"].as_object().unwrap().len(), 0, "{gw}");
    for (h, sb) in [(0, "c1"), (1, "c2"), (1, "c2c"), (2, "c3"), (2, "c3b"), (2, "c4")] {
        c.hosts[h].ok(&["sandbox", "rm", sb]);
    }
    c.hosts[1].ok(&["network", "rm", "ov"]);
    for h in &c.hosts {
        assert!(h.overlay_ns(&id).is_none(), "host{} kept its overlay namespace", h.n);
        let links = c.tb.exec(&h.ns.ns, "ip", &["-o", "link"]);
        assert!(!links.contains("vx-"), "host{}: {links}", h.n);
    }
    let s = c.store();
    assert_eq!(s.count("global/overlay/peers/").unwrap(), 0);
    assert_eq!(s.count("global/overlay/vni/").unwrap(), 0);
    assert_eq!(s.count("global/networks/").unwrap(), 0);
}

#[test]
fn hosts_racing_never_collide_and_bad_requests_leave_nothing() {
    let Some(mut c) = cluster("overlay_race") else { return };
    let h1 = &c.hosts[0];

    // Refused before anything is touched.
    let e = String::from_utf8(h1.run(&["network", "create", "-d", "overlay", "-o", "vxlanid=5", "x"]).stderr).unwrap();
    assert!(e.contains("\"vxlanid\"") && e.contains("unknown to the overlay driver"), "{e}");
    let opt = "com.docker.network.driver.overlay.vxlanid_list=abc";
    let e = String::from_utf8(h1.run(&["network", "create", "-d", "overlay", "-o", opt, "x"]).stderr).unwrap();
    assert!(e.contains("\"abc\" is not a VXLAN id"), "{e}");
    let o = Command::new(env!("CARGO_BIN_EXE_cnm"))
        .args(["--advertise-addr", "192.0.2.1", "network", "ls"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("needs --store etcd://"), "{o:?}");

    // No agent on host 1 yet: joining is refused, with the reason, and
    // leaves no namespace, device, record or address behind.
    h1.ok(&["network", "create", "-d", "overlay", "--subnet", "10.20.0.0/24", "ovr"]);
    h1.ok(&["sandbox", "create", "s0"]);
    let o = h1.run(&["connect", "--ip", "10.20.0.5", "ovr", "s0"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("start `cnm agent` on this host"), "{e}");
    let nothing_left = |h: &Host| {
        assert!(std::fs::read_dir(h.run.join("overlay"))
            .map(|d| d.flatten().all(|e| e.file_name().to_string_lossy().starts_with('.')))
            .unwrap_or(true));
        assert!(!c.tb.exec(&h.ns.ns, "ip", &["-o", "link"]).contains("vx-"));
    };
    nothing_left(h1);
    let v: serde_json::Value = serde_json::from_str(&h1.ok(&["network", "inspect", "ovr"])).unwrap();
    assert_eq!(v[0]["Containers"].as_object().unwrap().len(), 0);

    for h in &mut c.hosts[..2] {
        h.start_agent();
    }
    c.wait_hosts_registered(2);
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    // The address was given back: the same one works now.
    h1.ok(&["connect", "--ip", "10.20.0.5", "ovr", "s0"]);
    // A VXLAN id in use is refused, and the subnet it would have had is free.
    let opt = "com.docker.network.driver.overlay.vxlanid_list=4097";
    let e = String::from_utf8(
        h2.run(&["network", "create", "-d", "overlay", "-o", opt, "--subnet", "10.21.0.0/24", "x"]).stderr,
    )
    .unwrap();
    assert!(e.contains("VXLAN id 4097") && e.contains("already used"), "{e}");
    h2.ok(&["network", "create", "-d", "overlay", "--subnet", "10.21.0.0/24", "x"]);

    // Both hosts create networks (automatic subnets) and connect sandboxes
    // at the same time: no subnet, VXLAN id or address is handed out twice.
    std::thread::scope(|s| {
        for h in [h1, h2] {
            for i in 0..4 {
                s.spawn(move || h.ok(&["network", "create", "-d", "overlay", &format!("r{}-{i}", h.n)]));
            }
        }
    });
    let store = c.store();
    let vnis = store.list_keys("global/overlay/vni/").unwrap();
    assert_eq!(vnis.len(), 10, "{vnis:?}");
    let mut subnets: Vec<String> = Vec::new();
    for h in [1, 2] {
        for i in 0..4 {
            let v: serde_json::Value =
                serde_json::from_str(&h1.ok(&["network", "inspect", &format!("r{h}-{i}")])).unwrap();
            subnets.push(v[0]["IPAM"]["Config"][0]["Subnet"].as_str().unwrap().to_string());
        }
    }
    let unique: std::collections::BTreeSet<&String> = subnets.iter().collect();
    assert_eq!(unique.len(), 8, "{subnets:?}");
    std::thread::scope(|s| {
        for h in [h1, h2] {
            for i in 0..5 {
                s.spawn(move || {
                    let sb = format!("p{}-{i}", h.n);
                    h.ok(&["sandbox", "create", &sb]);
                    h.ok(&["connect", "x", &sb]);
                });
            }
        }
    });
    let peers: Vec<serde_json::Value> = store
        .list("global/overlay/peers/")
        .unwrap()
        .iter()
        .map(|e| serde_json::from_slice(&e.value).unwrap())
        .filter(|p: &serde_json::Value| p["ip"].as_str().unwrap().starts_with("10.21."))
        .collect();
    let ips: std::collections::BTreeSet<&str> = peers.iter().map(|p| p["ip"].as_str().unwrap()).collect();
    assert_eq!((peers.len(), ips.len()), (10, 10), "{peers:?}");
    // And they reach each other across the hosts.
    let ns = |h: &Host, sb: &str| {
        let v: serde_json::Value = serde_json::from_str(&h.ok(&["sandbox", "inspect", sb])).unwrap();
        NetNs::open(v["NetNs"].as_str().expect("netns path")).unwrap()
    };
    let far = peers.iter().find(|p| p["host_name"] == "host2").unwrap()["ip"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(reaches(&ns(h1, "p1-0"), &far, 3));

    // A network with endpoints on another host cannot be removed from here.
    let o = h2.run(&["network", "rm", "ovr"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("endpoint(s) on host(s) host1"), "{e}");
    for h in [h1, h2] {
        for i in 0..5 {
            h.ok(&["sandbox", "rm", &format!("p{}-{i}", h.n)]);
        }
    }
    h1.ok(&["sandbox", "rm", "s0"]);
    for n in ["ovr", "x", "r1-0", "r1-1", "r1-2", "r1-3", "r2-0", "r2-1", "r2-2", "r2-3"] {
        h2.ok(&["network", "rm", n]);
    }
    assert_eq!(store.count("global/").unwrap(), store.count("global/overlay/hosts/").unwrap());
    nothing_left(h1);
    nothing_left(h2);
}

/// Hosts are keyed by a persistent random node id, not by name: three hosts
/// of one name work together, and a host whose state directory (so its
/// node id) was copied from a live one is refused, naming that host.
#[test]
fn hosts_of_one_name_work_and_a_cloned_node_id_is_refused() {
    let Some(mut c) = cluster("overlay_node_ids") else { return };
    for h in &mut c.hosts[..2] {
        h.name = "same".into();
        h.start_agent();
    }
    c.wait_hosts_registered(2);
    c.hosts[0].ok(&["network", "create", "-d", "overlay", "--subnet", "10.9.0.0/24", "ov"]);
    let a = c.hosts[0].container("a", "ov", "10.9.0.10");
    let b = c.hosts[1].container("b", "ov", "10.9.0.11");
    assert!(reaches(&a, "10.9.0.11", 5) && reaches(&b, "10.9.0.10", 5), "two hosts named alike talk");
    let peers = inspect_peers(&c.hosts[0], "ov");
    assert_eq!(peers, [("same".to_string(), "192.0.2.1".to_string()), ("same".to_string(), "192.0.2.2".to_string())]);

    // VXLAN into host 1 (a frame for container a, on the network's id,
    // built with the project's codec): from a peer host it gets through
    // (the positive control), from a fourth machine on the underlay never.
    let sink = a.run(|| std::net::UdpSocket::bind("0.0.0.0:9999")).unwrap().unwrap();
    sink.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let evil = underlay_ns(&c.tb, "evil", "192.0.2.200");
    let frame = |what: &str| vxlan_frame(4097, [0x02, 0x42, 10, 9, 0, 10], "10.9.0.10".parse().unwrap(), 9999, what);
    let send = |ns: &NetNs, what: &str| {
        let s = ns.run(|| std::net::UdpSocket::bind("0.0.0.0:0")).unwrap().unwrap();
        s.send_to(&frame(what), "192.0.2.1:4789").unwrap();
    };
    send(&evil.ns, "from-outsider");
    send(&c.hosts[1].ns.ns, "from-peer");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.iter().any(|g: &String| g == "from-peer") {
        let (n, _) = sink.recv_from(&mut buf).expect("a peer's VXLAN frame never arrived");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    sink.set_nonblocking(true).unwrap();
    while let Ok((n, _)) = sink.recv_from(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(!got.iter().any(|g| g == "from-outsider"), "VXLAN from outside the cluster got in: {got:?}");

    // Host 3 gets host 1's node id (a cloned machine): its agent is refused
    // while host 1 lives, and so is a join; host 1 keeps working.
    std::fs::create_dir_all(&c.hosts[2].state).unwrap();
    std::fs::copy(c.hosts[0].state.join("node-id"), c.hosts[2].state.join("node-id")).unwrap();
    let mut agent = c.hosts[2]
        .cmd(&["agent", "--interval", "3600", "--lease-ttl", &LEASE_TTL_S.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(agent.stderr.take().unwrap()).lines();
        // Readiness: the agent says why it cannot register (it retries).
        for _ in 0..50 {
            said = lines.next().expect("the agent said nothing").unwrap();
            if said.contains("overlay node id") {
                break;
            }
        }
    }
    agent.kill().ok();
    agent.wait().ok();
    assert!(said.contains("host \"same\" at 192.0.2.1 has it"), "{said}");
    c.hosts[2].ok(&["sandbox", "create", "x"]);
    let o = c.hosts[2].run(&["connect", "ov", "x"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("overlay node id"), "{err}");
    assert!(reaches(&a, "10.9.0.11", 5), "host 1 is unaffected");
    c.hosts[2].ok(&["sandbox", "rm", "x"]);
    c.hosts[0].ok(&["sandbox", "rm", "a"]);
    c.hosts[1].ok(&["sandbox", "rm", "b"]);
    c.hosts[0].ok(&["network", "rm", "ov"]);
}

/// A stub upstream resolver in `ns` at `ip`:53 that says NXDOMAIN to
/// everything (so a name not known locally fails at once, and nothing
/// ever leaves the test's namespaces).
fn nxdomain_stub(ns: &NetNs, ip: &str) {
    let sock = ns.run(|| std::net::UdpSocket::bind((ip, 53)).unwrap()).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            if n >= 12 {
                let mut a = buf[..n].to_vec();
                a[2] |= 0x80;
                a[3] = (a[3] & 0xf0) | 3;
                let _ = sock.send_to(&a, peer);
            }
        }
    });
}

/// Asks 127.0.0.11 in `ns` for the A record of `name`; the address, if any.
fn lookup(sock: &std::net::UdpSocket, id: u16, name: &str) -> Option<String> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    sock.send(&q).unwrap();
    let mut buf = [0u8; 512];
    loop {
        let n = sock.recv(&mut buf).ok()?;
        if buf[..2] != id.to_be_bytes() {
            continue;
        }
        let answers = u16::from_be_bytes([buf[6], buf[7]]);
        return (buf[3] & 0x0f == 0 && answers == 1)
            .then(|| std::net::Ipv4Addr::new(buf[n - 4], buf[n - 3], buf[n - 2], buf[n - 1]).to_string());
    }
}

/// Names of overlay endpoints on other hosts resolve through each host's
/// own embedded DNS, from the cluster store's watch: soon after `connect`
/// returns on the other host, and no more after `disconnect`.
#[test]
fn overlay_names_resolve_on_every_host() {
    let Some(mut c) = cluster("overlay_dns") else { return };
    nxdomain_stub(&c._etcd_ns.ns, ETCD_IP);
    for h in &mut c.hosts {
        h.start_agent();
    }
    c.wait_hosts_registered(3);
    let (h1, h2) = (&c.hosts[0], &c.hosts[1]);
    h1.ok(&["network", "create", "-d", "overlay", "--subnet", "10.41.0.0/24", "ovd"]);
    let sandbox = |h: &Host, name: &str, ip: &str, alias: &str| -> NetNs {
        let path = h.ok(&["sandbox", "create", "--dns", ETCD_IP, name]);
        h.ok(&["connect", "--ip", ip, "--alias", alias, "ovd", name]);
        NetNs::open(path.trim()).unwrap()
    };
    // The agents serve names once they run: wait until n1 resolves itself.
    let n1 = sandbox(h1, "n1", "10.41.0.11", "first");
    let sock = n1.run(|| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
    sock.connect("127.0.0.11:53").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert_eq!(lookup(&sock, 1, "n1").as_deref(), Some("10.41.0.11"), "n1 resolves itself");
    assert_eq!(lookup(&sock, 2, "n2"), None, "n2 does not exist yet");
    let path = h2.ok(&["sandbox", "create", "--dns", ETCD_IP, "n2"]);
    h2.ok(&["connect", "--ip", "10.41.0.12", "--alias", "second", "ovd", "n2"]);
    let connected = Instant::now();
    let mut id = 10;
    let took = until(Duration::from_secs(5), "n2 resolvable on host 1", || {
        id += 1;
        lookup(&sock, id, "n2").as_deref() == Some("10.41.0.12")
    });
    eprintln!(
        "n2 resolvable on host 1 {took:?} after its connect returned on host 2 ({:?} in all)",
        connected.elapsed()
    );
    assert_eq!(lookup(&sock, 100, "SECOND.ovd").as_deref(), Some("10.41.0.12"), "the alias, NAME.NETWORK");
    // And the other way round, through glibc on host 2.
    let n2 = NetNs::open(path.trim()).unwrap();
    let out = h2.ok(&["exec", "n2", "--", "getent", "hosts", "first"]);
    assert!(out.starts_with("10.41.0.11 "), "{out}");
    assert!(ping(&n2, "10.41.0.11".parse().unwrap()));
    h2.ok(&["disconnect", "ovd", "n2"]);
    let gone = until(Duration::from_secs(5), "n2 gone from host 1", || {
        id += 1;
        lookup(&sock, id, "n2").is_none()
    });
    eprintln!("n2 gone from host 1 {gone:?} after its disconnect returned");
    h2.ok(&["sandbox", "rm", "n2"]);
    h1.ok(&["sandbox", "rm", "n1"]);
    h1.ok(&["network", "rm", "ovd"]);
}
