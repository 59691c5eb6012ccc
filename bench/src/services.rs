//! Workload 8: services. What a connection through a virtual IP costs
//! against a direct one, and what a backend change costs in process, with
//! one service and with 1,000 services of 10 backends each in place.
//!
//! cnm's table (`cnm_nat::LbTable`: verdict maps, `numgen`, element changes
//! over a kept netlink socket) is measured side by side with the anchor:
//! kube-proxy's iptables mode as it programs a service (a chain per
//! service, one `statistic --mode random` DNAT rule per backend, a change
//! being an `iptables-restore --noflush` of that chain), on Debian's
//! iptables. IPVS, which Docker's swarm mode uses, is not in this kernel.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use cnm_nat::{LbContent, LbTable};
use cnm_netns::testing::{TestHost, TestNs};
use cnm_netns::{AddrFlags, LinkAdd, NetNs};

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ServiceResult {
    /// `connect` (a TCP connection and its first byte) or `change` (one
    /// backend removed or added).
    pub kind: &'static str,
    pub system: &'static str,
    /// Services in place.
    pub services: usize,
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
}

const CNM_VIP: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 100);
const KUBE_VIP: Ipv4Addr = Ipv4Addr::new(10, 30, 0, 101);

fn result(kind: &'static str, system: &'static str, services: usize, mut d: Vec<Duration>) -> ServiceResult {
    d.sort();
    let us = |p: f64| d[((d.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e6;
    let r = ServiceResult { kind, system, services, samples: d.len(), p50_us: us(0.5), p99_us: us(0.99) };
    println!("services: {kind} {system} ({services} services): p50 {:.1} µs, p99 {:.1} µs", r.p50_us, r.p99_us);
    r
}

/// A server in `ns` that sends one byte to every connection.
fn server(ns: &NetNs) {
    let l = ns.run(|| TcpListener::bind("0.0.0.0:80")).unwrap().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"x");
        }
    });
}

/// One connection and its first byte, from the calling thread (in the
/// client's namespace).
fn connect_once(to: SocketAddr) -> Duration {
    let t = Instant::now();
    let mut s = TcpStream::connect(to).expect("connect");
    let mut b = [0u8; 1];
    s.read_exact(&mut b).expect("first byte");
    t.elapsed()
}

/// kube-proxy's rules for one service: a chain with one DNAT rule per
/// backend, each taking its share of what the earlier ones left.
fn kube_chain(i: usize, backends: &[Ipv4Addr]) -> String {
    let mut s = format!(":SVC-{i} - [0:0]\n");
    for (k, b) in backends.iter().enumerate() {
        let left = backends.len() - k;
        let stat = match left {
            1 => String::new(),
            n => format!("-m statistic --mode random --probability {:.10} ", 1.0 / n as f64),
        };
        s += &format!("-A SVC-{i} -p tcp {stat}-j DNAT --to-destination {b}\n");
    }
    s
}

fn iptables_restore(ns: &NetNs, input: &str) {
    ns.exec_with_input("iptables-restore", ["--noflush"], Some(input)).expect("iptables-restore");
}

/// Connections through each path, in alternating rounds.
fn connections(quick: bool) -> Vec<ServiceResult> {
    let host = TestHost::new("bench-svc").expect("root");
    let br = host.handle.link_add(&LinkAdd::bridge("sbr0").up()).unwrap().index;
    host.handle.addr_add(br, "10.30.0.1/24".parse().unwrap(), AddrFlags::empty()).unwrap();
    let client = host.on_bridge("sbr0", "client", "10.30.0.2").unwrap();
    let backends: Vec<(TestNs, Ipv4Addr)> = (1..=3u8)
        .map(|i| {
            let ip = Ipv4Addr::new(10, 30, 0, 10 + i);
            (host.on_bridge("sbr0", &format!("b{i}"), &ip.to_string()).unwrap(), ip)
        })
        .collect();
    for (ns, _) in &backends {
        server(&ns.ns);
    }
    let ips: Vec<Ipv4Addr> = backends.iter().map(|b| b.1).collect();
    let mut table = LbTable::create(&client.ns, "client", None, LbContent::default()).unwrap();
    table.set_vip(CNM_VIP, &ips).unwrap();
    let rules = format!("*nat\n{}-A OUTPUT -d {KUBE_VIP}/32 -p tcp -j SVC-0\nCOMMIT\n", kube_chain(0, &ips));
    iptables_restore(&client.ns, &rules);

    let n = if quick { 400 } else { 3000 };
    // Direct connections go to each backend in turn, as the balanced ones
    // do (one server's thread kept hot would flatter the direct path), and
    // the paths take turns connection by connection, so that they share
    // the machine's moments alike.
    let paths: [&'static str; 3] = ["direct", "cnm (nftables numgen)", "kube-proxy iptables (statistic)"];
    let target = |path: usize, i: usize| match path {
        0 => SocketAddr::from((ips[i % ips.len()], 80)),
        1 => SocketAddr::from((CNM_VIP, 80)),
        _ => SocketAddr::from((KUBE_VIP, 80)),
    };
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); paths.len()];
    client
        .ns
        .run(|| {
            // Warm up every path (ARP, conntrack tables, caches).
            for i in 0..100 {
                for p in 0..paths.len() {
                    connect_once(target(p, i));
                }
            }
            for i in 0..n {
                for (p, s) in samples.iter_mut().enumerate() {
                    s.push(connect_once(target(p, i)));
                }
            }
        })
        .unwrap();
    paths.iter().zip(samples).map(|(name, d)| result("connect", name, 1, d)).collect()
}

/// Backend changes on one service, with `services` in place.
fn changes(services: usize, quick: bool) -> Vec<ServiceResult> {
    let host = TestHost::new("bench-svc-change").expect("root");
    // One namespace each: iptables-nft's rules in a namespace slow every
    // nftables transaction there (cnm's 30 µs became 380 with 11,000 of
    // them beside it).
    let ns = host.container("lb").unwrap();
    let kube_ns = host.container("kube").unwrap();
    let vip = |i: usize| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i as u32);
    let backends = |i: usize, n: usize| -> Vec<Ipv4Addr> {
        (0..n).map(|k| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 200, 0, 0)) + (i * 16 + k) as u32)).collect()
    };
    let mut content = LbContent::default();
    let mut kube = String::from("*nat\n");
    for i in 0..services {
        content.vips.insert(vip(i), backends(i, 10));
        kube += &kube_chain(i, &backends(i, 10));
        kube += &format!("-A OUTPUT -d {}/32 -p tcp -j SVC-{i}\n", vip(i));
    }
    kube += "COMMIT\n";
    let mut table = LbTable::create(&ns.ns, "lb", None, content).unwrap();
    iptables_restore(&kube_ns.ns, &kube);

    let n = if quick { 50 } else { 300 };
    // Alternately one backend fewer and back to ten; each system's changes
    // in a block of their own (an `iptables-restore` exiting between two of
    // cnm's changes would be measured as cnm's).
    let now = |k: usize| backends(0, if k % 2 == 0 { 9 } else { 10 });
    let cnm: Vec<Duration> = (0..n)
        .map(|k| {
            let b = now(k);
            let t = Instant::now();
            table.set_vip(vip(0), &b).unwrap();
            t.elapsed()
        })
        .collect();
    let anchor: Vec<Duration> = (0..n)
        .map(|k| {
            let input = format!("*nat\n{}COMMIT\n", kube_chain(0, &now(k)));
            let t = Instant::now();
            iptables_restore(&kube_ns.ns, &input);
            t.elapsed()
        })
        .collect();
    vec![
        result("change", "cnm (nftables numgen)", services, cnm),
        result("change", "kube-proxy iptables (statistic)", services, anchor),
    ]
}

/// The whole workload.
pub fn run_all(quick: bool) -> Vec<ServiceResult> {
    let mut out = connections(quick);
    out.extend(changes(1, quick));
    out.extend(changes(1000, quick));
    out
}
