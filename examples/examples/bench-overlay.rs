//! Benchmark: the time from `join` on host 1 to the first ping answered from
//! host 3, over a VXLAN overlay whose state lives in etcd.
//!
//! Two hosts (namespaces on an underlay bridge), etcd (Debian's
//! etcd-server) in a third, a controller with the overlay driver and an
//! agent per host, as `cnm agent` runs it. Host 3 has a container that
//! pings. Each round makes a sandbox on host 1 (before the clock starts),
//! then times: connect (create the endpoint + join), and from there until
//! host 3's container gets an echo reply from it, probing every 2 ms. Host
//! 3 learns of the new endpoint only through etcd's watch and its agent.
//!
//! Then throughput: one iperf3 TCP stream from a container on host 1 to one
//! on host 3 across the overlay, against one between the two hosts' underlay
//! addresses, in interleaved pairs (so drift hits both alike); the median
//! pair ratio is printed against the goal (80%), not asserted: speed on a
//! shared 2-core machine is measured here, not gated in functional tests.
//!
//! Then the cost of TLS: overlay connects through a three-member etcd
//! cluster serving TLS with client certificates, against one serving plain
//! HTTP, alternating; and the etcd round trips one connect costs.
//!
//! `cargo run --release -p cnm-examples --example bench-overlay [-- JOINS [PAIRS]]`
//! (default 50 joins and 9 pairs of 2 s; run by `cargo test` with 5 joins
//! and one pair of 1 s).

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_cli::probe::icmp_echo;
use cnm_core::{Controller, EndpointConfig, NetworkConfig, SandboxConfig, SplitStore, Store};
use cnm_ipam::Ipam;
use cnm_netns::testing::{TestHost, TestNs};
use cnm_netns::{AddrFlags, LinkAdd, NetNs, VethPeer};
use cnm_store_etcd::testing::EtcdCluster;
use cnm_store_etcd::testing::EtcdServer;
use cnm_store_etcd::{EtcdConfig, EtcdStore};
use cnm_vxlan::overlay::{Agent, AgentOptions, OverlayConfig, OverlayDriver};

static STOP: AtomicBool = AtomicBool::new(false);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// A namespace on the underlay bridge `ul` with address `ip`/24.
fn attach(tb: &TestHost, ul: u32, name: &str, ip: &str) -> TestNs {
    let ns = tb.container(name).unwrap();
    tb.handle
        .link_add(&LinkAdd::veth(format!("ul-{name}"), VethPeer::new("eth0").netns(&ns.ns)).master(ul).up())
        .unwrap();
    let eth0 = ns.index("eth0");
    ns.handle.link_set_up(eth0).unwrap();
    ns.handle.addr_add(eth0, format!("{ip}/24").parse().unwrap(), AddrFlags::empty()).unwrap();
    ns
}

/// A host: its controller, its agent, and its etcd client (whose round
/// trips are counted).
struct Host {
    ctl: Controller,
    agent: std::thread::JoinHandle<()>,
    etcd: Arc<EtcdStore>,
}

/// A controller with the overlay driver for one host, and its agent thread
/// (until `stop`).
fn host(dir: &Path, ns: &NetNs, name: &str, addr: &str, etcd: EtcdConfig, stop: &'static AtomicBool) -> Host {
    let local: Arc<dyn Store> =
        Arc::new(SplitStore::open_state_dirs(&dir.join(name).join("state"), &dir.join(name).join("run")).unwrap());
    let shared = Arc::new(EtcdStore::open(etcd, Some(ns)).unwrap());
    let store: Arc<dyn Store> = Arc::new(SplitStore::cluster(local, shared.clone()));
    let cfg = OverlayConfig::new(name, addr.parse().unwrap(), dir.join(name).join("run/overlay"));
    let driver = Arc::new(OverlayDriver::new(cfg, store.clone()).unwrap());
    let ctl = Controller::builder()
        .store(store.clone())
        .run_dir(dir.join(name).join("run"))
        .host_netns(ns.try_clone().unwrap())
        .ipam(Arc::new(Ipam::new(store)))
        .driver(driver.clone())
        .build()
        .unwrap();
    let agent = Agent::new(driver, AgentOptions::default());
    Host { ctl, agent: std::thread::spawn(move || agent.run(stop)), etcd: shared }
}

fn main() {
    let arg = |i: usize, what: &str, default: usize| {
        std::env::args()
            .nth(i)
            .map(|a| a.parse().unwrap_or_else(|_| panic!("{what} must be a number")))
            .unwrap_or(default)
    };
    bench(arg(1, "JOINS", 50), arg(2, "PAIRS", 9), 2);
}

/// `cargo test` runs it with a few joins: everything works end to end, and
/// every join reaches host 3 (the loop fails after 10 s otherwise).
#[cfg(test)]
#[test]
fn bench_overlay_runs() {
    bench(5, 1, 1);
}

/// Waits until something listens on TCP `port` in `ns` (`ss`), 10 s at most.
fn wait_listening(ns: &NetNs, port: u16) {
    let t = Instant::now();
    while ns.exec("ss", ["-Htln", &format!("sport = :{port}")]).unwrap_or_default().trim().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One iperf3 TCP stream of `secs` from `client` to `to` (served in
/// `server`), in Gbit/s.
fn iperf_gbits(tb: &TestHost, server: &NetNs, client: &NetNs, to: IpAddr, secs: u32) -> f64 {
    let _srv = tb.spawn(server, "iperf3", &["-s", "-1"]);
    wait_listening(server, 5201);
    let out = client.exec("iperf3", ["-c", &to.to_string(), "-t", &secs.to_string(), "-J"]).unwrap();
    let j: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("iperf3 gave no JSON ({e}): {out}"));
    j["end"]["sum_received"]["bits_per_second"].as_f64().expect("iperf3 reports a rate") / 1e9
}

fn bench(joins: usize, pairs: usize, secs: u32) {
    let Some(tb) = TestHost::new("bench-overlay") else { return };
    let ul = tb.handle.link_add(&LinkAdd::bridge("ul0").up()).unwrap().index;
    let etcd_ns = attach(&tb, ul, "etcd", "192.0.2.100");
    let etcd = EtcdServer::start(&etcd_ns.ns, "192.0.2.100".parse().unwrap(), tb.dir().join("etcd"));
    let (h1, h3) = (attach(&tb, ul, "h1", "192.0.2.1"), attach(&tb, ul, "h3", "192.0.2.3"));
    let config = EtcdConfig::from_url(&etcd.url).unwrap();
    let host1 = host(tb.dir(), &h1.ns, "host1", "192.0.2.1", config.clone(), &STOP);
    let host3 = host(tb.dir(), &h3.ns, "host3", "192.0.2.3", config, &STOP);
    let (c1, a1, e1) = (host1.ctl, host1.agent, host1.etcd);
    let (c3, a3) = (host3.ctl, host3.agent);
    let t = Instant::now();
    while c1.store().count("global/overlay/hosts/").unwrap() < 2 {
        assert!(t.elapsed() < Duration::from_secs(10), "agents did not register");
        std::thread::sleep(Duration::from_millis(20));
    }

    c1.create_network(NetworkConfig::new("ov", "overlay").subnet("10.1.0.0/16")).unwrap();
    let prober = c3.create_sandbox(SandboxConfig { name: "prober".into(), ..Default::default() }).unwrap();
    c3.connect("ov", "prober", EndpointConfig::default()).unwrap();
    let prober_ns = NetNs::open(&prober.netns).unwrap();

    // Round 1: each join is the first endpoint of the network on host 1,
    // so it also makes the overlay namespace. Round 2: a resident container
    // keeps that namespace, as on a busy host.
    println!("{joins} joins on host 1, each timed until host 3 pings the new endpoint (probes every 2 ms)");
    for resident in [false, true] {
        if resident {
            c1.create_sandbox(SandboxConfig { name: "resident".into(), ..Default::default() }).unwrap();
            c1.connect("ov", "resident", EndpointConfig::default()).unwrap();
        }
        let (mut join_t, mut total_t, mut trips) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..joins {
            let name = format!("c{i}");
            c1.create_sandbox(SandboxConfig { name: name.clone(), ..Default::default() }).unwrap();
            let before = e1.round_trips();
            let start = Instant::now();
            let ep = c1.connect("ov", &name, EndpointConfig::default()).unwrap();
            let joined = start.elapsed();
            trips.push(e1.round_trips() - before);
            let ip: IpAddr = ep.ipv4.unwrap().addr();
            while icmp_echo(&prober_ns, ip, Duration::from_millis(2)).is_err() {
                assert!(start.elapsed() < Duration::from_secs(10), "host 3 never reached {ip}");
            }
            total_t.push(start.elapsed());
            join_t.push(joined);
            c1.disconnect("ov", &name).unwrap();
            c1.delete_sandbox(&name).unwrap();
        }
        join_t.sort();
        total_t.sort();
        let row = |what: &str, v: &[Duration]| {
            println!(
                "  {what:<32} median {:>7.2} ms   p10 {:>7.2}   p90 {:>7.2}   max {:>7.2}",
                ms(pct(v, 0.5)),
                ms(pct(v, 0.1)),
                ms(pct(v, 0.9)),
                ms(*v.last().unwrap())
            )
        };
        println!(
            "{}",
            if resident { "another container already on host 1:" } else { "first container of the network on host 1:" }
        );
        row("join on host 1", &join_t);
        // The fewest: the agent's keep-alives may fall into a join.
        println!("  etcd round trips per connect: {}", trips.iter().min().unwrap());
        row("join -> first ping from host 3", &total_t);
        let met = pct(&total_t, 0.5) < Duration::from_millis(100);
        println!("  goal (median under 100 ms): {}", if met { "met" } else { "MISSED" });
    }
    // Throughput: overlay (resident on host 1 -> prober on host 3) against
    // the underlay (host 1 -> host 3), interleaved.
    let resident_ns = NetNs::open(c1.sandbox("resident").unwrap().netns).unwrap();
    let prober_ip = c3.endpoint("ov", &c3.sandbox("prober").unwrap().endpoints[0].name).unwrap().ipv4.unwrap().addr();
    let mut ratios = Vec::new();
    let (mut overlay, mut underlay) = (0.0, 0.0);
    for _ in 0..pairs {
        let o = iperf_gbits(&tb, &prober_ns, &resident_ns, prober_ip, secs);
        let u = iperf_gbits(&tb, &h3.ns, &h1.ns, "192.0.2.3".parse().unwrap(), secs);
        (overlay, underlay) = (overlay + o / pairs as f64, underlay + u / pairs as f64);
        ratios.push(o / u);
    }
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let ratio = ratios[pairs / 2];
    println!(
        "throughput, {pairs} interleaved pairs of {secs} s: overlay {overlay:.2} Gbit/s, underlay {underlay:.2} Gbit/s; \
         median pair ratio {:.0}% (goal 80%: {})",
        100.0 * ratio,
        if ratio >= 0.8 { "met" } else { "MISSED" }
    );

    c1.disconnect("ov", "resident").unwrap();
    c1.delete_sandbox("resident").unwrap();

    c3.disconnect("ov", "prober").unwrap();
    c3.delete_sandbox("prober").unwrap();
    c1.delete_network("ov").unwrap();
    STOP.store(true, Ordering::Relaxed);
    a1.join().unwrap();
    a3.join().unwrap();
    drop(etcd);
    tls_cost(joins);
}

static STOP_TLS: AtomicBool = AtomicBool::new(false);

/// Overlay connects through a three-member etcd cluster with TLS and
/// client certificates against one without TLS, alternating (goal: at
/// most 1.2×).
fn tls_cost(joins: usize) {
    let Some(tb) = TestHost::new("bench-etcd-tls") else { return };
    let ul = tb.handle.link_add(&LinkAdd::bridge("ul0").up()).unwrap().index;
    let mut clusters = Vec::new();
    let mut hosts = Vec::new();
    for (k, tls) in [(0, false), (1, true)] {
        let ips: Vec<IpAddr> = (0..3).map(|i| format!("192.0.2.{}", 10 * (k + 1) + i).parse().unwrap()).collect();
        let members: Vec<TestNs> =
            ips.iter().enumerate().map(|(i, ip)| attach(&tb, ul, &format!("e{k}{i}"), &ip.to_string())).collect();
        let refs: Vec<&NetNs> = members.iter().map(|m| &m.ns).collect();
        let dir = tb.dir().join(format!("etcd{k}"));
        let c = if tls { EtcdCluster::start(&refs, &ips, dir) } else { EtcdCluster::start_plain(&refs, &ips, dir) };
        let addr = format!("192.0.2.{}", k + 1);
        let ns = attach(&tb, ul, &format!("h{k}"), &addr);
        let h = host(tb.dir(), &ns.ns, &format!("host{k}"), &addr, c.config(), &STOP_TLS);
        let t = Instant::now();
        while h.ctl.store().count("global/overlay/hosts/").unwrap() < 1 {
            assert!(t.elapsed() < Duration::from_secs(10), "agent did not register");
            std::thread::sleep(Duration::from_millis(20));
        }
        h.ctl.create_network(NetworkConfig::new("ov", "overlay").subnet("10.2.0.0/16")).unwrap();
        h.ctl.create_sandbox(SandboxConfig { name: "resident".into(), ..Default::default() }).unwrap();
        h.ctl.connect("ov", "resident", EndpointConfig::default()).unwrap();
        clusters.push((c, members));
        hosts.push((h, ns));
    }
    let mut times = [Vec::new(), Vec::new()];
    for i in 0..joins.max(3) {
        for (k, (h, _)) in hosts.iter().enumerate() {
            let name = format!("c{i}");
            h.ctl.create_sandbox(SandboxConfig { name: name.clone(), ..Default::default() }).unwrap();
            let start = Instant::now();
            h.ctl.connect("ov", &name, EndpointConfig::default()).unwrap();
            times[k].push(start.elapsed());
            h.ctl.disconnect("ov", &name).unwrap();
            h.ctl.delete_sandbox(&name).unwrap();
        }
    }
    for t in &mut times {
        t.sort();
    }
    let (plain, tls) = (pct(&times[0], 0.5), pct(&times[1], 0.5));
    let ratio = tls.as_secs_f64() / plain.as_secs_f64();
    println!(
        "overlay connect through three etcd members, {} alternating: plain {:.2} ms, TLS with client certificates \
         {:.2} ms: {ratio:.2}× (goal at most 1.2×: {})",
        times[0].len(),
        ms(plain),
        ms(tls),
        if ratio <= 1.2 { "met" } else { "MISSED" }
    );
    for (h, _) in &hosts {
        h.ctl.delete_sandbox("resident").unwrap();
        h.ctl.delete_network("ov").unwrap();
    }
    STOP_TLS.store(true, Ordering::Relaxed);
    for (h, _) in hosts {
        h.agent.join().unwrap();
    }
    drop(clusters);
}
