//! Benchmark: publishing ports with cnm-nat, both backends, inside a test
//! host: 1, 10, 100 and 1000 ports on one container, and one more port when
//! 0, 1,000 and 10,000 mappings already exist.
//!
//! `cargo run --release -p cnm-examples --example bench-nat [-- RUNS]`
//!
//! Anchor: where netavark is installed (Debian's `netavark`), the same
//! "publish N ports" workloads run through `netavark setup`/`teardown` in
//! the same test host, and the ratios are printed. Netavark cannot publish
//! ports without attaching the container, so its figure is shown whole and
//! as the difference to a setup with no ports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_core::store::MemStore;
use cnm_core::{FirewallNetwork, PortMapping, PortRequest};
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::testing::TestHost;
use cnm_netns::LinkAdd;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `n` separate single-port mappings (`-p P:P` given `n` times), as a
/// runtime passes them; netavark gets the same.
fn request(endpoint: &str, ip: &str, first: u16, n: u16) -> PortRequest {
    PortRequest {
        endpoint: endpoint.into(),
        network: "bench".into(),
        addresses: vec![ip.parse().unwrap()],
        ports: (first..first + n).map(|p| format!("{p}:{p}").parse::<PortMapping>().unwrap()).collect(),
    }
}

fn setup(backend: Backend) -> (TestHost, NatFirewall) {
    let host = TestHost::new("bench-nat").expect("bench-nat needs root");
    let br = host.handle.link_add(&LinkAdd::bridge("brbench").up()).unwrap().index;
    host.handle.addr_add(br, "10.99.0.1/16".parse().unwrap(), cnm_netns::AddrFlags::empty()).unwrap();
    let fw = NatFirewall::new(backend, host.ns.try_clone().unwrap(), Arc::new(MemStore::new()));
    fw.add_network(&FirewallNetwork {
        id: "bench".into(),
        interface: "brbench".into(),
        subnets: vec!["10.99.0.0/16".parse().unwrap()],
        internal: false,
        masquerade: true,
        icc: true,
    })
    .unwrap();
    (host, fw)
}

const NETAVARK: &str = "/usr/lib/podman/netavark";

/// Median time of `netavark setup` of one container with `n` ports
/// (`n == 0`: none), each followed by a teardown, inside a test host.
fn netavark(n: u16, runs: usize) -> Duration {
    let host = TestHost::new("bench-nat-netavark").expect("root");
    let c = host.named_container("ctr").unwrap();
    let ns_path = c.ns.path().unwrap().display().to_string();
    let config = host.dir().join("netavark");
    let ports = format!(
        "[{}]",
        (20000..20000 + n)
            .map(|p| format!(
                r#"{{"host_ip": "", "container_port": {p}, "host_port": {p}, "range": 1, "protocol": "tcp"}}"#
            ))
            .collect::<Vec<_>>()
            .join(",")
    );
    let opts = format!(
        r#"{{"container_id": "{id}", "container_name": "c1", "port_mappings": {ports},
        "networks": {{"bench": {{"interface_name": "eth0", "static_ips": ["10.98.0.2"], "aliases": []}}}},
        "network_info": {{"bench": {{"name": "bench", "id": "{id}", "driver": "bridge", "network_interface": "nvbench0",
        "subnets": [{{"subnet": "10.98.0.0/16", "gateway": "10.98.0.1"}}], "ipv6_enabled": false, "internal": false,
        "dns_enabled": false, "ipam_options": {{"driver": "host-local"}}}}}}}}"#,
        id = "0123456789abcdef".repeat(4)
    );
    let run = |verb: &str| {
        use std::io::Write;
        let mut child = host
            .ns
            .command(NETAVARK)
            .args(["--config", &config.display().to_string(), verb, &ns_path])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(opts.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "netavark {verb}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let mut t = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        run("setup");
        t.push(start.elapsed());
        run("teardown");
    }
    median(t)
}

fn main() {
    let runs: usize = std::env::args().nth(1).map(|a| a.parse().expect("RUNS must be a number")).unwrap_or(5);
    let have_netavark = std::path::Path::new(NETAVARK).exists();
    println!("anchor netavark: {}", if have_netavark { NETAVARK } else { "not installed (apt-get install netavark)" });
    println!("anchor CNI portmap: not run by this benchmark (the benchmark suite issue adds it)");
    let mut cnm_publish: Vec<(u16, Duration)> = Vec::new();
    println!("\n{:<10} {:<44} {:>10} {:>10}", "backend", "workload", "median ms", "runs");
    for backend in [Backend::Nftables, Backend::Iptables] {
        let name = format!("{backend:?}").to_lowercase();
        let (_host, fw) = setup(backend);
        for n in [1u16, 10, 100, 1000] {
            let mut t = Vec::new();
            for r in 0..runs {
                let ep = format!("pub{n}-{r}");
                let start = Instant::now();
                fw.add_ports(&request(&ep, "10.99.1.2", 20000, n)).unwrap();
                t.push(start.elapsed());
                fw.remove_ports(&ep).unwrap();
            }
            let m = median(t);
            if backend == Backend::Nftables {
                cnm_publish.push((n, m));
            }
            println!("{name:<10} {:<44} {:>10.2} {:>10}", format!("publish {n} ports on one container"), ms(m), runs);
        }
        // One more port with 0, 1,000 and 10,000 mappings in place.
        let mut existing = 0u32;
        for target in [0u32, 1000, 10_000] {
            while existing < target {
                let ep = format!("bulk{existing}");
                let ip = format!("10.99.{}.{}", 2 + existing / 1000 / 250, 1 + (existing / 1000) % 250);
                fw.add_ports(&request(&ep, &ip, 30000 + existing as u16, 1000)).unwrap();
                existing += 1000;
            }
            let mut t = Vec::new();
            for r in 0..runs {
                let ep = format!("one{target}-{r}");
                let start = Instant::now();
                fw.add_ports(&request(&ep, "10.99.200.2", 2000 + r as u16, 1)).unwrap();
                t.push(start.elapsed());
                fw.remove_ports(&ep).unwrap();
            }
            println!(
                "{name:<10} {:<44} {:>10.2} {:>10}",
                format!("add 1 port with {target} mappings in place"),
                ms(median(t)),
                runs
            );
        }
    }
    if have_netavark {
        println!();
        let base = netavark(0, runs);
        println!("{:<10} {:<44} {:>10.2} {:>10}", "netavark", "setup, no ports (attach only)", ms(base), runs);
        for (n, cnm) in cnm_publish {
            // netavark takes over a minute for 1000 separate ports.
            let r = if n >= 1000 {
                1
            } else if n >= 100 {
                runs.min(3)
            } else {
                runs
            };
            let t = netavark(n, r);
            let delta = t.saturating_sub(base);
            println!(
                "{:<10} {:<44} {:>10.2} {:>10}   ports alone {:.2} ms = {:.0}x cnm nftables ({:.2} ms)",
                "netavark",
                format!("setup with {n} ports"),
                ms(t),
                r,
                ms(delta),
                delta.as_secs_f64() / cnm.as_secs_f64(),
                ms(cnm)
            );
        }
    }
}
