//! Benchmark: publishing ports with cnm-nat, both backends, inside a test
//! host: 1, 10, 100 and 1000 ports on one container, and one more port when
//! 0, 1,000 and 10,000 mappings already exist.
//!
//! `cargo run --release -p cnm-examples --example bench-nat [-- RUNS]`
//!
//! Anchors: where netavark or the CNI `portmap` plugin are installed
//! (Debian's `netavark`, `containernetworking-plugins`), this prints that
//! they were found; running their workloads side by side belongs to the
//! benchmark suite (`cnm-bench`).

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

fn request(endpoint: &str, ip: &str, first: u16, n: u16) -> PortRequest {
    let end = first + n - 1;
    PortRequest {
        endpoint: endpoint.into(),
        network: "bench".into(),
        addresses: vec![ip.parse().unwrap()],
        ports: vec![format!("{first}-{end}:{first}-{end}").parse::<PortMapping>().unwrap()],
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

fn main() {
    let runs: usize = std::env::args().nth(1).map(|a| a.parse().expect("RUNS must be a number")).unwrap_or(5);
    for tool in ["netavark", "/usr/lib/cni/portmap"] {
        let found = std::path::Path::new(tool).exists()
            || std::process::Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
        println!(
            "anchor {tool}: {}",
            if found { "installed (run cnm-bench for side-by-side figures)" } else { "not installed" }
        );
    }
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
            println!(
                "{name:<10} {:<44} {:>10.2} {:>10}",
                format!("publish {n} ports on one container"),
                ms(median(t)),
                runs
            );
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
}
