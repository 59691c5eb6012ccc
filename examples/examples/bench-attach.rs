//! Benchmark: the kernel work of attaching one container — a veth pair with
//! its peer created directly in the container's namespace, an address, link
//! up, a default route — through cnm-netns, next to the same work done by
//! iproute2 in the same run, inside a test host namespace.
//!
//! `cargo run --release -p cnm-examples --example bench-attach [-- ITERATIONS]`
//!
//! iproute2 cannot switch namespaces between lines of one `ip -batch`, so
//! its side is measured in two parts: one `ip -batch` process creating every
//! container's veth pair in the host (its total divided by the number of
//! containers; the fair floor for the host side), and one `ip -batch`
//! process per container for the container side (what a runtime that shells
//! out to `ip` pays).

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cnm_netns::testing::TestHost;
use cnm_netns::{AddrFlags, Handle, LinkAdd, NetNs, Route, VethPeer};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn container_addr(i: usize) -> String {
    format!("10.88.{}.{}/16", i / 250, i % 250 + 2)
}

struct Containers {
    dir: std::path::PathBuf,
    names: Vec<String>,
    ns: Vec<NetNs>,
}

impl Containers {
    fn create(host: &TestHost, tag: &str, n: usize) -> Containers {
        let dir = host.dir().join(tag);
        // Named (bind-mounted) namespaces, so that `ip` can reach them by path;
        // every one fresh, so nothing touches the machine's own.
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let ns =
            names.iter().map(|name| NetNs::create_named(&dir, name).expect("create container namespace")).collect();
        Containers { dir, names, ns }
    }

    fn path(&self, i: usize) -> String {
        self.dir.join(&self.names[i]).display().to_string()
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        self.ns.clear();
        for n in &self.names {
            let _ = NetNs::remove_named(&self.dir, n);
        }
        let _ = NetNs::release_dir(&self.dir);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Attaches container `i`; returns the time the host-side step took.
fn attach_cnm(host: &Handle, ns: &NetNs, i: usize) -> cnm_netns::Result<Duration> {
    let t = Instant::now();
    let veth = host.link_add(&LinkAdd::veth(format!("vh{i}"), VethPeer::new("eth0").netns(ns)).up())?;
    let host_side = t.elapsed();
    let c = Handle::open(ns)?;
    // The new link comes back with its peer's index: no lookup needed.
    let eth0 = veth.peer_index.expect("veth peer index");
    c.addr_add(eth0, container_addr(i).parse().unwrap(), AddrFlags::empty())?;
    c.link_set_up(eth0)?;
    c.route_add(&Route::default_via("10.88.0.1".parse().unwrap()))?;
    Ok(host_side)
}

fn main() {
    let n: usize = std::env::args().nth(1).map(|a| a.parse().expect("ITERATIONS must be a number")).unwrap_or(1000);
    let Some(host) = TestHost::new("bench-attach") else {
        eprintln!("bench-attach needs root");
        std::process::exit(1);
    };
    println!("attach one container: veth (peer created in the container), address, up, default route; {n} containers");

    // --- cnm-netns: one host Handle, one Handle per container --------------
    let cs = Containers::create(&host, "cnm", n);
    let mut cnm = Vec::with_capacity(n);
    let mut cnm_host = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let host_side = attach_cnm(&host.handle, &cs.ns[i], i).unwrap_or_else(|e| panic!("container {i}: {e}"));
        cnm.push(t.elapsed());
        cnm_host.push(host_side);
    }
    drop(cs);

    // --- iproute2 -----------------------------------------------------------
    let cs = Containers::create(&host, "ip", n);
    let mut script = String::new();
    for i in 0..n {
        script.push_str(&format!("link add vi{i} type veth peer name eth0 netns {}\nlink set vi{i} up\n", cs.path(i)));
    }
    let t = Instant::now();
    run_batch(&host.ns, &script);
    let ip_host_total = t.elapsed();
    let mut ip_inside = Vec::with_capacity(n);
    for (i, ns) in cs.ns.iter().enumerate() {
        let script =
            format!("addr add {} dev eth0\nlink set eth0 up\nroute add default via 10.88.0.1\n", container_addr(i));
        let t = Instant::now();
        run_batch(ns, &script);
        ip_inside.push(t.elapsed());
    }
    // Check that both did the same thing: the last container's route is there.
    let route = host.exec(&cs.ns[n - 1], "ip", &["route", "show", "default"]);
    assert!(route.contains("via 10.88.0.1 dev eth0"), "{route}");
    drop(cs);

    cnm.sort();
    cnm_host.sort();
    ip_inside.sort();
    let ip_host_per = ip_host_total / n as u32;
    let cnm_med = percentile(&cnm, 0.5);
    let ip_total_med = ip_host_per + percentile(&ip_inside, 0.5);
    println!();
    println!("{:<58} {:>10} {:>10}", "per container", "median ms", "p99 ms");
    println!(
        "{:<58} {:>10.3} {:>10.3}",
        "cnm-netns (host Handle + a Handle opened in the container)",
        ms(cnm_med),
        ms(percentile(&cnm, 0.99))
    );
    println!(
        "{:<58} {:>10.3} {:>10.3}",
        "  of which the host side (one link_add)",
        ms(percentile(&cnm_host, 0.5)),
        ms(percentile(&cnm_host, 0.99))
    );
    println!(
        "{:<58} {:>10.3} {:>10}",
        "ip -batch, host side: one process for all containers",
        ms(ip_host_per),
        "(mean)"
    );
    println!(
        "{:<58} {:>10.3} {:>10.3}",
        "ip -batch, container side: one process per container",
        ms(percentile(&ip_inside, 0.5)),
        ms(percentile(&ip_inside, 0.99))
    );
    println!("{:<58} {:>10.3}", "ip total (host share + container process)", ms(ip_total_med));
    println!();
    println!("ratio ip / cnm (median, whole attach): {:.2}x", ip_total_med.as_secs_f64() / cnm_med.as_secs_f64());
    let cnm_host_mean = cnm_host.iter().sum::<Duration>() / n as u32;
    println!(
        "host side, mean against mean: cnm {:.3} ms, ip -batch {:.3} ms: cnm at {:.2}x of the ip -batch floor",
        ms(cnm_host_mean),
        ms(ip_host_per),
        cnm_host_mean.as_secs_f64() / ip_host_per.as_secs_f64()
    );
}

fn run_batch(ns: &NetNs, script: &str) {
    let mut child = ns
        .command("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip -batch");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "ip -batch failed: {}", String::from_utf8_lossy(&out.stderr));
}
