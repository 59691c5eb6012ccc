//! Benchmark: attaching and detaching containers with the bridge driver
//! through the controller, inside a test host: sequential attaches (create
//! endpoint + join) with 0, 1 and 10 published ports, then the matching
//! detaches (leave + delete endpoint). Sandbox namespaces are made before
//! the clock starts, as a runtime makes them.
//!
//! `cargo run --release -p cnm-examples --example bench-bridge [-- N]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_bridge::BridgeDriver;
use cnm_core::store::{MemStore, Store};
use cnm_core::{Controller, EndpointConfig, NetworkConfig, PortMapping, SandboxConfig};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::testing::TestHost;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    pct(&s, 0.5)
}

fn run(n: usize, ports: u16) {
    let host = TestHost::new("bench-bridge").expect("bench-bridge needs root");
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let ctl = Controller::builder()
        .host_netns(host.ns.try_clone().unwrap())
        .run_dir(host.dir().join("run"))
        .store(store.clone())
        .ipam(Arc::new(Ipam::new(store.clone())))
        .firewall(Arc::new(NatFirewall::new(Backend::Nftables, host.ns.try_clone().unwrap(), store)))
        .driver(Arc::new(BridgeDriver::new()))
        .build()
        .unwrap();
    ctl.create_network(NetworkConfig::new("bench", "bridge").subnet("10.80.0.0/20")).unwrap();
    let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    for name in &names {
        ctl.create_sandbox(SandboxConfig { name: name.clone(), ..Default::default() }).unwrap();
    }
    let mut attach = Vec::with_capacity(n);
    for (i, name) in names.iter().enumerate() {
        let base = 10000 + (i as u32 * ports as u32) % 50000;
        let cfg = EndpointConfig {
            ports: (0..ports)
                .map(|p| format!("{}:{}", base + p as u32, 80 + p).parse::<PortMapping>().unwrap())
                .collect(),
            ..Default::default()
        };
        let t = Instant::now();
        ctl.connect("bench", name, cfg).unwrap();
        attach.push(t.elapsed());
    }
    let mut detach = Vec::with_capacity(n);
    for name in &names {
        let t = Instant::now();
        ctl.disconnect("bench", name).unwrap();
        detach.push(t.elapsed());
    }
    let first = median(&attach[..10.min(n)]);
    let last = median(&attach[n.saturating_sub(10)..]);
    let mut a = attach.clone();
    a.sort();
    let mut d = detach.clone();
    d.sort();
    println!(
        "{ports:>2} ports  attach median {:>6.2} ms  p99 {:>6.2} ms  first10 {:>6.2} ms  last10 {:>6.2} ms ({:.2}x)  detach median {:>6.2} ms  p99 {:>6.2} ms",
        ms(pct(&a, 0.5)),
        ms(pct(&a, 0.99)),
        ms(first),
        ms(last),
        last.as_secs_f64() / first.as_secs_f64(),
        ms(pct(&d, 0.5)),
        ms(pct(&d, 0.99)),
    );
}

fn main() {
    let n: usize = std::env::args().nth(1).map(|a| a.parse().expect("N must be a number")).unwrap_or(1000);
    println!("{n} sequential attaches, then {n} detaches, one bridge network, controller kept alive");
    for ports in [0u16, 1, 10] {
        run(n, ports);
    }
}
