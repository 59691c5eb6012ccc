//! Benchmark: attaching and detaching containers with the bridge driver
//! through the controller, inside a test host.
//!
//! 1. Sequential attaches (create endpoint + join) with 0, 1 and 10
//!    published ports, then the matching detaches (leave + delete), with
//!    the controller kept alive, as an embedding runtime does. Each round
//!    uses a fresh test host; growth is judged on the per-position medians
//!    over the rounds, so one noisy attach does not decide it.
//! 2. One-shot detaches: a separate process per detach (what a runtime that
//!    shells out sees), next to `ip link del` of another endpoint's veth,
//!    interleaved.
//!
//! Sandbox namespaces are made before the clock starts, as a runtime makes
//! them.
//!
//! `cargo run --release -p cnm-examples --example bench-bridge [-- N [ROUNDS]]`

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_bridge::BridgeDriver;
use cnm_core::store::{MemStore, SplitStore, Store};
use cnm_core::{Controller, EndpointConfig, NetworkConfig, PortMapping, SandboxConfig};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::testing::TestHost;
use cnm_netns::{Handle, NetNs};

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

/// A controller over `store` working in `host`.
fn controller(host: &NetNs, run_dir: &Path, store: Arc<dyn Store>, driver: BridgeDriver) -> Controller {
    Controller::builder()
        .host_netns(host.try_clone().unwrap())
        .run_dir(run_dir)
        .store(store.clone())
        .ipam(Arc::new(Ipam::new(store.clone())))
        .firewall(Arc::new(NatFirewall::new(Backend::Nftables, host.try_clone().unwrap(), store)))
        .driver(Arc::new(driver))
        .build()
        .unwrap()
}

struct Round {
    attach: Vec<Duration>,
    detach: Vec<Duration>,
    /// From the last detach until no veth is left in the host namespace.
    gone: Duration,
}

fn round(n: usize, ports: u16) -> Round {
    let host = TestHost::new("bench-bridge").expect("bench-bridge needs root");
    let ctl = controller(&host.ns, &host.dir().join("run"), Arc::new(MemStore::new()), BridgeDriver::new());
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
    let t = Instant::now();
    let h = Handle::open(&host.ns).unwrap();
    while h.link_list().unwrap().iter().any(|l| l.kind.as_deref() == Some("veth")) {
        std::thread::sleep(Duration::from_millis(1));
    }
    Round { attach, detach, gone: t.elapsed() }
}

/// Lets the kernel finish tearing down the namespaces of the previous round
/// (it does that in the background, holding locks attaches need).
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

fn sequential(n: usize, rounds: usize, ports: u16) {
    let runs: Vec<Round> = (0..rounds)
        .map(|_| {
            let r = round(n, ports);
            settle();
            r
        })
        .collect();
    // Per position, the median over the rounds.
    let at = |i: usize| median(&runs.iter().map(|r| r.attach[i]).collect::<Vec<_>>());
    let first = median(&(0..10.min(n)).map(at).collect::<Vec<_>>());
    let last = median(&(n.saturating_sub(10)..n).map(at).collect::<Vec<_>>());
    let mut a: Vec<Duration> = runs.iter().flat_map(|r| r.attach.iter().copied()).collect();
    a.sort();
    let mut d: Vec<Duration> = runs.iter().flat_map(|r| r.detach.iter().copied()).collect();
    d.sort();
    let gone = runs.iter().map(|r| r.gone).max().unwrap();
    let buckets: Vec<String> = (0..n)
        .step_by(100.max(n / 10))
        .map(|s| format!("{:.2}", ms(median(&(s..(s + 100.max(n / 10)).min(n)).map(at).collect::<Vec<_>>()))))
        .collect();
    println!(
        "{ports:>2} ports  attach median {:>5.2} ms  p99 {:>5.2} ms  first10 {:>5.2} ms  last10 {:>5.2} ms ({:.2}x)  \
         detach median {:>5.2} ms  p99 {:>5.2} ms  links gone {:>4.0} ms after the last detach",
        ms(pct(&a, 0.5)),
        ms(pct(&a, 0.99)),
        ms(first),
        ms(last),
        last.as_secs_f64() / first.as_secs_f64(),
        ms(pct(&d, 0.5)),
        ms(pct(&d, 0.99)),
        ms(gone),
    );
    println!("          attach median by position, per {}: {} ms", 100.max(n / 10), buckets.join(" "));
}

/// The child side of a one-shot detach: a fresh controller over the state
/// directories, one disconnect, exit; the one-shot driver deletes the veth
/// within the disconnect.
fn oneshot_child(args: &[String]) {
    let [state, run, hostns, sandbox] = args else { panic!("--oneshot-disconnect STATE RUN HOSTNS SANDBOX") };
    let host = NetNs::open(hostns).unwrap();
    let store: Arc<dyn Store> = Arc::new(SplitStore::open_state_dirs(Path::new(state), Path::new(run)).unwrap());
    controller(&host, Path::new(run), store, BridgeDriver::one_shot()).disconnect("bench", sandbox).unwrap();
}

fn oneshot(runs: usize) {
    let host = TestHost::new("bench-oneshot").expect("bench-bridge needs root");
    let (state, run) = (host.dir().join("state"), host.dir().join("run"));
    // Two endpoints per run: one detached by a cnm process, the other's veth
    // deleted by `ip link del`, the same kind of link made the same way.
    let mut veths = Vec::new();
    {
        let store = Arc::new(SplitStore::open_state_dirs(&state, &run).unwrap());
        let ctl = controller(&host.ns, &run, store, BridgeDriver::new());
        ctl.create_network(NetworkConfig::new("bench", "bridge").subnet("10.81.0.0/20")).unwrap();
        for i in 0..2 * runs {
            let name = format!("s{i}");
            ctl.create_sandbox(SandboxConfig { name: name.clone(), ..Default::default() }).unwrap();
            let ep = ctl.connect("bench", &name, EndpointConfig::default()).unwrap();
            veths.push(ep.driver_data["veth"].clone());
        }
    }
    settle();
    let exe = std::env::current_exe().unwrap();
    let hostns = host.ns.proc_path();
    let (mut ours, mut ip) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // Ours: a process that opens the state and disconnects.
        let t = Instant::now();
        let st = Command::new(&exe)
            .arg("--oneshot-disconnect")
            .args([state.as_os_str(), run.as_os_str(), hostns.as_os_str()])
            .arg(format!("s{}", 2 * i))
            .status()
            .unwrap();
        ours.push(t.elapsed());
        assert!(st.success());
        let t = Instant::now();
        host.exec(&host.ns, "ip", &["link", "del", &veths[2 * i + 1]]);
        ip.push(t.elapsed());
    }
    let left = Handle::open(&host.ns)
        .unwrap()
        .link_list()
        .unwrap()
        .iter()
        .filter(|l| l.kind.as_deref() == Some("veth"))
        .count();
    assert_eq!(left, 0, "a one-shot detach left a veth behind");
    let (o, i) = (median(&ours), median(&ip));
    println!(
        "one-shot detach (a process each, {runs} runs): cnm {:.1} ms, `ip link del` of the same kind of veth {:.1} ms, ratio {:.2}",
        ms(o),
        ms(i),
        o.as_secs_f64() / i.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--oneshot-disconnect") {
        return oneshot_child(&args[1..]);
    }
    let n: usize = args.first().map(|a| a.parse().expect("N must be a number")).unwrap_or(1000);
    let rounds: usize = args.get(1).map(|a| a.parse().expect("ROUNDS must be a number")).unwrap_or(3);
    println!("{n} sequential attaches, then {n} detaches, one bridge network, controller kept alive, {rounds} rounds");
    for ports in [0u16, 1, 10] {
        sequential(n, rounds, ports);
    }
    oneshot(40);
}
