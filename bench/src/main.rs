//! `cnm-bench`: cnm side by side with netavark, the CNI plugins and the
//! kernel floor, inside test host namespaces it creates. Systems are
//! interleaved run by run (A B C D, A B C D …) so machine noise hits all of
//! them alike. Prints median, p10, p90, p99 and runs per workload and
//! system with each anchor's ratio to cnm, and writes `summary.json`,
//! `samples.json`, `datapath.json` and the plots (SVG and PNG) to `--out`.
//!
//! Run as root: `cargo run --release -p cnm-bench -- [--quick] [--out DIR]`.

mod cni;
mod dns;
mod docker;
mod docs;
mod plot;
mod services;
mod stats;
mod systems;
mod tables;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::stats::Record;
use crate::systems::System;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "cnm-bench", about = "cnm side by side with netavark, the CNI plugins and the kernel floor")]
struct Args {
    /// Where the JSON and the plots go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// A reduced run (under two minutes), to keep the harness working.
    #[arg(long)]
    quick: bool,
    /// Runs per workload and system (default: 30, or 5 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Runs nothing: rewrites the benchmark tables and quoted outputs in the
    /// README and `docs/` under this workspace root from `docs/bench`.
    #[arg(long, value_name = "ROOT")]
    docs: Option<PathBuf>,
    /// With `--docs`: change nothing, fail when a quoted block differs.
    #[arg(long, requires = "docs")]
    check: bool,
    /// Only the DNS workload (embedded DNS against aardvark-dns).
    #[arg(long)]
    dns_only: bool,
    /// Only the dockerd workload (`docker run` on a cnm network against
    /// Docker's bridge).
    #[arg(long)]
    docker_only: bool,
    /// Only the CNI workload (`cnm-cni` against the reference plugins, and
    /// `podman run` with each).
    #[arg(long)]
    cni_only: bool,
    /// Only the services workload (virtual IPs and backend changes against
    /// kube-proxy's iptables rules).
    #[arg(long)]
    services_only: bool,
}

fn build(name: &str, n: usize) -> Box<dyn System> {
    match name {
        "cnm" => Box::new(systems::Cnm::new(n)),
        "netavark" => Box::new(systems::Netavark::new(n)),
        "cni" => Box::new(systems::Cni::new(n)),
        "floor" => Box::new(systems::Floor::new(n)),
        other => unreachable!("unknown system {other}"),
    }
}

/// Samples per (workload, system).
type Samples = BTreeMap<(String, &'static str), Vec<Duration>>;

/// Workload 1: attach and detach one container with 0, 1 and 10 ports.
fn single(names: &[&'static str], runs: usize, samples: &mut Samples) {
    for ports in [0u16, 1, 10] {
        // A fresh test host per system and workload; containers are made
        // before the clock starts.
        let mut systems: Vec<Box<dyn System>> = names.iter().map(|n| build(n, runs)).collect();
        for r in 0..runs {
            for s in systems.iter_mut() {
                let a = s.attach(r, ports);
                let d = s.detach(r);
                samples.entry((format!("attach-{ports}-ports"), s.name())).or_default().push(a);
                samples.entry((format!("detach-{ports}-ports"), s.name())).or_default().push(d);
            }
        }
    }
}

/// Workload 2: attaches with one published port one after another, `n` for
/// cnm and the floor, for an anchor as many as fit in `budget` but at least
/// `min_anchor`; then all the detaches. Returns the attach latencies in
/// order, per system.
fn scale(
    names: &[&'static str],
    n: usize,
    min_anchor: usize,
    budget: Duration,
    samples: &mut Samples,
) -> Vec<(String, Vec<f64>)> {
    let mut systems: Vec<Box<dyn System>> = names.iter().map(|s| build(s, n)).collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); systems.len()];
    let mut spent = vec![Duration::ZERO; systems.len()];
    for i in 0..n {
        for (k, s) in systems.iter_mut().enumerate() {
            let anchor = !matches!(s.name(), "cnm" | "floor");
            if anchor && i >= min_anchor && spent[k] > budget {
                continue;
            }
            let t = s.attach(i, 1);
            spent[k] += t;
            times[k].push(t);
        }
    }
    let mut series = Vec::new();
    for (k, s) in systems.iter_mut().enumerate() {
        let detach: Vec<Duration> = (0..times[k].len()).map(|i| s.detach(i)).collect();
        samples.insert(("scale-attach-1-port".into(), s.name()), times[k].clone());
        samples.insert(("scale-detach-1-port".into(), s.name()), detach);
        let med = |r: std::ops::Range<usize>| {
            let mut v = times[k].get(r)?.to_vec();
            v.sort();
            Some(v[v.len() / 2].as_secs_f64() * 1e3)
        };
        let growth = |at: usize| match (med(0..10), med(at - 10..at)) {
            (Some(a), Some(b)) => format!("attach {at}: {b:.2} ms ({:.2}x attach 10)", b / a),
            _ => String::new(),
        };
        println!(
            "scale {:<9} {} attaches; attaches 1-10 {:.2} ms; {}; {}",
            s.name(),
            times[k].len(),
            med(0..10).unwrap_or(0.0),
            growth(300),
            growth(1000)
        );
        series.push((s.name().to_string(), times[k].iter().map(|d| d.as_secs_f64() * 1e3).collect()));
    }
    series
}

/// Workload 5: whole processes, `cnm connect`/`cnm disconnect` against
/// `netavark setup`/`teardown`, with 0 and 10 ports.
fn processes(names: &[&'static str], runs: usize, samples: &mut Samples) {
    if systems::CnmCli::binary().is_none() {
        println!("process workloads: skipped, no cnm binary next to cnm-bench (cargo build -p cnm-cli)");
        return;
    }
    for ports in [0u16, 10] {
        let mut systems: Vec<Box<dyn System>> = vec![Box::new(systems::CnmCli::new(runs))];
        if names.contains(&"netavark") {
            systems.push(Box::new(systems::Netavark::new(runs)));
        }
        for r in 0..runs {
            for s in systems.iter_mut() {
                let a = s.attach(r, ports);
                let d = s.detach(r);
                samples.entry((format!("process-attach-{ports}-ports"), s.name())).or_default().push(a);
                samples.entry((format!("process-detach-{ports}-ports"), s.name())).or_default().push(d);
            }
        }
    }
}

/// Workload 4: `n` `cnm connect` processes started at once; the total time
/// until the last one finished.
fn concurrent(n: usize, samples: &mut Samples) {
    if systems::CnmCli::binary().is_none() {
        return;
    }
    let cli = systems::CnmCli::new(n);
    let t = std::time::Instant::now();
    let children: Vec<std::process::Child> = (0..n)
        .map(|i| {
            cli.command(&["connect", "bench", &format!("c{i}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "concurrent cnm connect: {}", String::from_utf8_lossy(&o.stderr));
    }
    let total = t.elapsed();
    println!(
        "concurrency: {n} cnm connect processes at once: {:.1} ms in all, {:.0} attaches/s",
        total.as_secs_f64() * 1e3,
        n as f64 / total.as_secs_f64()
    );
    samples.insert((format!("concurrent-{n}-attaches"), "cnm"), vec![total]);
}

/// Workload 6: one iperf3 TCP stream between two containers on one
/// network, for cnm and netavark; both use the kernel's bridge, so they must
/// be equal within noise. Returns (system, Gbit/s) pairs.
fn datapath(names: &[&'static str], secs: u32) -> Vec<(&'static str, f64)> {
    let mut out = Vec::new();
    for name in names.iter().filter(|n| matches!(**n, "cnm" | "netavark")) {
        let mut s = build(name, 2);
        s.attach(0, 0);
        s.attach(1, 0);
        match systems::iperf3(s.as_ref(), secs) {
            Ok(g) => {
                println!("datapath {name:<9} iperf3 one TCP stream, {secs} s: {g:.1} Gbit/s");
                out.push((*name, g));
            }
            Err(why) => println!("datapath {name:<9} not measured: {why}"),
        }
        s.detach(0);
        s.detach(1);
    }
    out
}

/// Workload 3: attach latency against the number of published ports on one
/// container, then one more port when many mappings exist (cnm and the
/// floor only: the anchors would need hours for 10,000 mappings). Returns
/// the median attach latency per port count, per system, for the plot.
fn port_scale(names: &[&'static str], quick: bool, samples: &mut Samples) -> Vec<(String, Vec<(f64, f64)>)> {
    let counts: &[u16] = if quick { &[1, 10, 100] } else { &[1, 10, 100, 1000] };
    let runs_of = |p: u16, system: &str| -> usize {
        match (p, system) {
            (1000, "netavark") | (1000, "cni") => 1,
            (1000, _) => 3,
            _ if quick => 2,
            _ => 5,
        }
    };
    let slots: usize = counts.iter().map(|p| runs_of(*p, "cnm")).sum::<usize>() + 11;
    let mut systems: Vec<Box<dyn System>> = names.iter().map(|n| build(n, slots)).collect();
    let mut lines: Vec<(String, Vec<(f64, f64)>)> =
        systems.iter().map(|s| (s.name().to_string(), Vec::new())).collect();
    let mut slot = 0;
    for &p in counts {
        let runs = runs_of(p, "cnm");
        for r in 0..runs {
            for (k, s) in systems.iter_mut().enumerate() {
                if r >= runs_of(p, s.name()) {
                    continue;
                }
                let t = s.attach(slot + r, p);
                s.detach(slot + r);
                samples.entry((format!("publish-{p}-ports"), s.name())).or_default().push(t);
                let _ = k;
            }
        }
        slot += runs;
        for (k, s) in systems.iter().enumerate() {
            if let Some(v) = samples.get(&(format!("publish-{p}-ports"), s.name())) {
                let mut v = v.clone();
                v.sort();
                lines[k].1.push((f64::from(p), v[v.len() / 2].as_secs_f64() * 1e3));
            }
        }
    }
    // One more port when many mappings exist: ten containers with a tenth
    // of them each, then the timed one.
    let (per, total) = if quick { (100u16, 1000) } else { (1000u16, 10000) };
    for s in systems.iter_mut().filter(|s| matches!(s.name(), "cnm" | "floor")) {
        for c in 0..10 {
            s.attach(slot + c, per);
        }
        let t = s.attach(slot + 10, 1);
        samples.insert((format!("add-1-port-{total}-mappings"), s.name()), vec![t]);
        println!("one more port with {total} mappings in place, {:<6}: {:.2} ms", s.name(), t.as_secs_f64() * 1e3);
        for c in 0..=10 {
            s.detach(slot + c);
        }
    }
    lines
}

fn main() {
    let args = Args::parse();
    if let Some(root) = &args.docs {
        match docs::sync(root, !args.check) {
            Ok(differ) if differ.is_empty() => println!("every quoted benchmark block is up to date"),
            Ok(differ) if args.check => {
                eprintln!("out of date (run `cnm-bench --docs {}`):\n{}", root.display(), differ.join("\n"));
                std::process::exit(1);
            }
            Ok(differ) => println!("rewrote:\n{}", differ.join("\n")),
            Err(e) => {
                eprintln!("cnm-bench --docs: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    if !cnm_netns::testing::require_root("cnm-bench") {
        eprintln!("cnm-bench: run it as root");
        std::process::exit(1);
    }
    if args.cni_only {
        let cni = cni::run_all(args.quick);
        std::fs::create_dir_all(&args.out).unwrap();
        std::fs::write(args.out.join("cni.json"), serde_json::to_string_pretty(&cni).unwrap()).unwrap();
        return;
    }
    if args.docker_only {
        let docker = docker::run_all(args.quick);
        std::fs::create_dir_all(&args.out).unwrap();
        std::fs::write(args.out.join("docker.json"), serde_json::to_string_pretty(&docker).unwrap()).unwrap();
        return;
    }
    if args.services_only {
        let svc = services::run_all(args.quick);
        std::fs::create_dir_all(&args.out).unwrap();
        std::fs::write(args.out.join("services.json"), serde_json::to_string_pretty(&svc).unwrap()).unwrap();
        return;
    }
    if args.dns_only {
        let dns = dns::run_all(args.quick, &args.out);
        std::fs::write(args.out.join("dns.json"), serde_json::to_string_pretty(&dns).unwrap()).unwrap();
        return;
    }
    let runs = args.runs.unwrap_or(if args.quick { 5 } else { 30 });
    let mut names = Vec::new();
    for (name, found) in systems::available() {
        match found {
            Ok(()) => {
                println!("system {name}: found");
                names.push(name);
            }
            Err(why) => println!("system {name}: skipped, {why}"),
        }
    }
    let mut samples = Samples::new();
    single(&names, runs, &mut samples);
    let (n, min_anchor, budget) =
        if args.quick { (100, 30, Duration::from_secs(3)) } else { (1000, 300, Duration::from_secs(60)) };
    let series = scale(&names, n, min_anchor, budget, &mut samples);
    processes(&names, runs, &mut samples);
    concurrent(32, &mut samples);
    let throughput = datapath(&names, if args.quick { 2 } else { 10 });
    let by_ports = port_scale(&names, args.quick, &mut samples);
    let dns = dns::run_all(args.quick, &args.out);
    let docker = docker::run_all(args.quick);
    let cni = cni::run_all(args.quick);
    let records: Vec<Record> = samples.iter().map(|((w, s), v)| Record::new(w, s, v)).collect();
    print!("{}", stats::table(&records));
    std::fs::create_dir_all(&args.out).expect("creating the output directory");
    let raw: Vec<serde_json::Value> = samples
        .iter()
        .map(|((w, s), v)| {
            serde_json::json!({"workload": w, "system": s, "samples_ms": v.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>()})
        })
        .collect();
    std::fs::write(args.out.join("summary.json"), serde_json::to_string_pretty(&records).unwrap()).unwrap();
    std::fs::write(args.out.join("samples.json"), serde_json::to_string_pretty(&raw).unwrap()).unwrap();
    let dp: Vec<serde_json::Value> = throughput
        .iter()
        .map(|(s, g)| serde_json::json!({"workload": "datapath-iperf3", "system": s, "gbit_s": g}))
        .collect();
    std::fs::write(args.out.join("datapath.json"), serde_json::to_string_pretty(&dp).unwrap()).unwrap();
    std::fs::write(args.out.join("dns.json"), serde_json::to_string_pretty(&dns).unwrap()).unwrap();
    std::fs::write(args.out.join("docker.json"), serde_json::to_string_pretty(&docker).unwrap()).unwrap();
    std::fs::write(args.out.join("cni.json"), serde_json::to_string_pretty(&cni).unwrap()).unwrap();
    let mut written: Vec<String> =
        ["summary.json", "samples.json", "datapath.json", "dns.json", "docker.json", "cni.json"]
            .map(|f| args.out.join(f).display().to_string())
            .into();
    let single: Vec<Record> = records
        .iter()
        .filter(|r| r.workload.starts_with("attach-") || r.workload.starts_with("detach-"))
        .cloned()
        .collect();
    written.extend(plot::single(&single, &args.out, "single").expect("drawing the single-container chart"));
    let title = "attach latency (1 published port) against containers already attached";
    written.extend(
        plot::lines(&series, 50.min(n / 4), title, "containers attached", &args.out, "scale")
            .expect("drawing the scale chart"),
    );
    let title = "attach latency against the number of published ports";
    written.extend(plot::xy(&by_ports, title, "published ports", &args.out, "ports").expect("drawing the ports chart"));
    println!("wrote {}", written.join(", "));
}
