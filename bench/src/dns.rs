//! Workload 7: embedded DNS, `dnsperf` from inside a container against
//! cnm's 127.0.0.11 (the `cnm agent`, the tool's own server process) and
//! against aardvark-dns (started by netavark for its network, answering on
//! the gateway), side by side in one run. Names are the containers' own;
//! no query leaves the test hosts (cnm's sandboxes name an address of the
//! test host's outside namespace as upstream, and only local names are
//! asked).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cnm_netns::testing::TestHost;
use cnm_netns::NetNs;

use crate::systems::{run, CnmCli, Containers, NETAVARK};

/// aardvark-dns from Debian's package.
pub const AARDVARK: &str = "/usr/lib/podman/aardvark-dns";

/// One measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DnsResult {
    pub system: &'static str,
    pub containers: usize,
    pub round: usize,
    /// `dnsperf -c 100 -q 100`: answered queries per second.
    pub qps: f64,
    pub lost: u64,
    /// Per-query latency at 100 in flight (`dnsperf -v`), microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
    /// The server process's resident memory, kB.
    pub rss_kb: u64,
}

/// A DNS server under test with `n` containers whose names it serves.
trait DnsSystem {
    fn name(&self) -> &'static str;
    /// The namespace queries come from and the server address there.
    fn client(&self) -> (PathBuf, String);
    fn server_pid(&self) -> u32;
}

/// cnm: `cnm agent` with `n` sandboxes connected through the tool.
struct CnmDns {
    cli: CnmCli,
    n: usize,
    agent: Child,
    _outside: cnm_netns::testing::TestNs,
}

impl CnmDns {
    fn new(n: usize) -> CnmDns {
        let cli = CnmCli::new(0);
        let outside = cli.host().outside().unwrap();
        let containers = Containers::new(cli.host(), n);
        for (i, path) in containers.paths.iter().enumerate() {
            let (path, name) = (path.display().to_string(), format!("c{i}"));
            let create = ["sandbox", "create", "--dns", "198.51.100.2", "--netns", &path, &name];
            run(&mut cli.command(&create), "", "cnm sandbox create");
            run(&mut cli.command(&["connect", "bench", &name]), "", "cnm connect");
        }
        let mut agent = cli
            .command(&["agent", "--interval", "3600"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cnm agent");
        let lines = BufReader::new(agent.stdout.take().unwrap()).lines();
        let ready = lines.map_while(|l| l.ok()).find(|l| l.contains("DNS at 127.0.0.11"));
        assert!(ready.is_some(), "the agent never served names");
        CnmDns { cli, n, agent, _outside: outside }
    }
}

impl DnsSystem for CnmDns {
    fn name(&self) -> &'static str {
        "cnm"
    }
    fn client(&self) -> (PathBuf, String) {
        (self.cli.host().dir().join("c0"), "127.0.0.11".into())
    }
    fn server_pid(&self) -> u32 {
        self.agent.id()
    }
}

impl Drop for CnmDns {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.agent.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.agent.wait();
        for i in 0..self.n {
            let _ = self.cli.command(&["sandbox", "rm", &format!("c{i}")]).output();
        }
        let _ = self.cli.command(&["network", "rm", "bench"]).output();
    }
}

/// aardvark-dns as netavark starts it, for `n` containers on one network
/// with DNS enabled.
struct Aardvark {
    host: TestHost,
    containers: Containers,
    config: PathBuf,
}

impl Aardvark {
    fn new(n: usize) -> Aardvark {
        let host = TestHost::new("bench-aardvark").expect("cnm-bench needs root");
        let containers = Containers::new(&host, n);
        let config = host.dir().join("netavark");
        std::fs::create_dir_all(&config).unwrap();
        let a = Aardvark { host, containers, config };
        for i in 0..n {
            a.netavark("setup", i);
        }
        a
    }

    fn netavark(&self, verb: &str, i: usize) {
        let id = format!("{:064x}", i + 1);
        let ip = format!("10.96.{}.{}", 1 + i / 250, 2 + i % 250);
        let opts = format!(
            r#"{{"container_id": "{id}", "container_name": "c{i}", "port_mappings": [],
            "networks": {{"dnsbench": {{"interface_name": "eth0", "static_ips": ["{ip}"], "aliases": []}}}},
            "network_info": {{"dnsbench": {{"name": "dnsbench", "id": "{netid}", "driver": "bridge", "network_interface": "nvdns0",
            "subnets": [{{"subnet": "10.96.0.0/16", "gateway": "10.96.0.1"}}], "ipv6_enabled": false, "internal": false,
            "dns_enabled": true, "ipam_options": {{"driver": "host-local"}}}}}}}}"#,
            netid = "cd".repeat(32)
        );
        let mut cmd = self.host.ns.command(NETAVARK);
        cmd.env("NETAVARK_FW", "iptables").args([
            "--config",
            &self.config.display().to_string(),
            "--aardvark-binary",
            AARDVARK,
            verb,
            &self.containers.paths[i].display().to_string(),
        ]);
        run(&mut cmd, &opts, &format!("netavark {verb}"));
    }
}

impl DnsSystem for Aardvark {
    fn name(&self) -> &'static str {
        "aardvark-dns"
    }
    fn client(&self) -> (PathBuf, String) {
        (self.containers.paths[0].clone(), "10.96.0.1".into())
    }
    fn server_pid(&self) -> u32 {
        let f = self.config.join("aardvark-dns/aardvark.pid");
        std::fs::read_to_string(&f).ok().and_then(|p| p.trim().parse().ok()).unwrap_or(0)
    }
}

impl Drop for Aardvark {
    fn drop(&mut self) {
        let pid = self.server_pid();
        for i in 0..self.containers.paths.len() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.netavark("teardown", i)));
        }
        if pid != 0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Whether this machine can run the workload; why not otherwise.
pub fn available() -> Result<(), String> {
    let have = |p: &str| Path::new(p).exists();
    if !have(NETAVARK) || !have(AARDVARK) {
        return Err("needs netavark and aardvark-dns (apt-get install netavark aardvark-dns)".into());
    }
    if Command::new("dnsperf").arg("-h").output().is_err() {
        return Err("needs dnsperf (apt-get install dnsperf)".into());
    }
    if CnmCli::binary().is_none() {
        return Err("no cnm binary next to cnm-bench (cargo build -p cnm-cli)".into());
    }
    Ok(())
}

/// `dnsperf` inside `netns` against `server`; its report.
fn dnsperf(netns: &Path, server: &str, file: &Path, secs: u32, verbose: bool) -> String {
    let ns = NetNs::open(netns).expect("client namespace");
    let secs = secs.to_string();
    let mut args = vec!["-s", server, "-d", file.to_str().unwrap(), "-c", "100", "-q", "100", "-l", &secs, "-t", "2"];
    if verbose {
        args.push("-v");
    }
    let out = ns.command("dnsperf").args(&args).output().expect("dnsperf");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field(report: &str, label: &str) -> f64 {
    report
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .and_then(|l| l.split(':').nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Per-query latencies (µs) from `dnsperf -v` lines (`> NOERROR … LATENCY`).
fn latencies(report: &str) -> Vec<f64> {
    let mut v: Vec<f64> = report
        .lines()
        .filter(|l| l.starts_with("> "))
        .filter_map(|l| l.split_whitespace().nth(4)?.parse::<f64>().ok())
        .map(|s| s * 1e6)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn measure(s: &dyn DnsSystem, n: usize, round: usize, secs: u32, dir: &Path) -> DnsResult {
    let file = dir.join(format!("dns-queries-{n}.txt"));
    if !file.exists() {
        // 20,000 lookups of the containers' names, spread over all of them.
        let text: String = (0..20_000).map(|k| format!("c{} A\n", (k * 7919) % n)).collect();
        std::fs::write(&file, text).unwrap();
    }
    let (ns, server) = s.client();
    // A warm-up second, not counted (the first queries after a start meet
    // cold caches and conntrack entries).
    dnsperf(&ns, &server, &file, 1, false);
    let report = dnsperf(&ns, &server, &file, secs, false);
    let lat = latencies(&dnsperf(&ns, &server, &file, secs.min(3), true));
    let pct = |p: f64| if lat.is_empty() { 0.0 } else { lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] };
    let r = DnsResult {
        system: s.name(),
        containers: n,
        round,
        qps: field(&report, "Queries per second"),
        lost: field(&report, "Queries lost") as u64,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        rss_kb: rss_kb(s.server_pid()),
    };
    println!(
        "dns {:<13} {n:>5} containers round {round}: {:>9.0} queries/s ({} lost), p50 {:>6.0} us, p99 {:>6.0} us at 100 in flight, rss {} kB",
        r.system, r.qps, r.lost, r.p50_us, r.p99_us, r.rss_kb
    );
    r
}

/// The workload: qps and latency with a few containers, rounds
/// alternating between the systems, then the resident memory with many.
pub fn run_all(quick: bool, dir: &Path) -> Vec<DnsResult> {
    if let Err(why) = available() {
        println!("dns workload: skipped, {why}");
        return Vec::new();
    }
    std::fs::create_dir_all(dir).unwrap();
    // Both servers share the two cores with dnsperf, and how the scheduler
    // places the threads moves a round's figure by up to a third: five
    // rounds, alternating, and their median.
    let (small, rounds, secs, large) = if quick { (20, 1, 2, 100) } else { (50, 5, 5, 1000) };
    let mut out = Vec::new();
    {
        let systems: Vec<Box<dyn DnsSystem>> = vec![Box::new(CnmDns::new(small)), Box::new(Aardvark::new(small))];
        for round in 1..=rounds {
            for s in &systems {
                out.push(measure(s.as_ref(), small, round, secs, dir));
            }
        }
    }
    for make in
        [|n| Box::new(CnmDns::new(n)) as Box<dyn DnsSystem>, |n| Box::new(Aardvark::new(n)) as Box<dyn DnsSystem>]
    {
        let s = make(large);
        out.push(measure(s.as_ref(), large, 1, secs, dir));
    }
    out
}
