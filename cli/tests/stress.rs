//! The randomized stress suite: 16 workers run random `cnm` commands at once
//! against one state (network create/rm, sandbox create/rm, connect and
//! disconnect with and without published ports, reconcile); random commands
//! are killed with SIGKILL at random moments, and others while they hold the
//! operation lock (found in `/proc/locks`), so that kills land inside
//! operations. Then one `reconcile`,
//! after which the kernel (links, addresses, published ports, checked with
//! `ip` and `nft`/`iptables-save`) must match the store exactly, a second
//! reconcile must find nothing to repair, every endpoint must answer on its
//! published ports, and removing everything must leave nothing at all.
//!
//! Size: `CNM_STRESS_OPS` commands per worker (default 20); seed:
//! `CNM_STRESS_SEED` (default: from the clock). A failing run prints its
//! seed, so `CNM_STRESS_SEED=… cargo test -p cnm-cli --test stress` repeats
//! its choices (the interleaving of processes is the machine's).

mod common;

use common::{wait_listening, walk};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cnm_core::store::{SplitStore, StoreExt};
use cnm_core::{Endpoint, Network, Sandbox};
use cnm_netns::testing::TestHost;
use cnm_netns::NetNs;

const WORKERS: usize = 16;
const NETWORKS: usize = 4;
const SANDBOXES: usize = 8;

/// A small deterministic generator (xorshift64*), one per worker.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Stress {
    host: TestHost,
    state: PathBuf,
    run: PathBuf,
    firewall: &'static str,
}

#[derive(Default)]
struct Counts {
    commands: AtomicUsize,
    kills: AtomicUsize,
    /// Repairs reported by the reconciles among the random commands.
    repairs: AtomicUsize,
    /// Commands killed while they held the operation lock: mid-operation.
    lock_kills: AtomicUsize,
    /// Our running `cnm` children (only these may be killed).
    running: std::sync::Mutex<BTreeSet<u32>>,
}

impl Stress {
    fn cnm(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cnm"));
        // The predefined networks are not what this test is about: without
        // them an empty state leaves no directory behind.
        c.arg("--no-predefined")
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--run-dir")
            .arg(&self.run)
            .arg("--host-netns")
            .arg(self.host.ns.proc_path())
            .args(["--firewall", self.firewall])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cnm(args).output().expect("running cnm");
        assert!(
            o.status.success(),
            "cnm {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// One random command; killed at a random moment one time in six.
    fn random_command(&self, rng: &mut Rng, counts: &Counts) {
        let net = format!("n{}", rng.below(NETWORKS as u64));
        let sb = format!("s{}", rng.below(SANDBOXES as u64));
        let subnet = format!("10.{}.{}.0/24", 120, &net[1..]);
        let port = format!("{}:80", 20000 + rng.below(1000));
        let args: Vec<String> = match rng.below(32) {
            0..=3 => vec!["network".into(), "create".into(), "--subnet".into(), subnet, net],
            4 | 5 => vec!["network".into(), "rm".into(), net],
            6..=9 => vec!["sandbox".into(), "create".into(), sb],
            10 | 11 => vec!["sandbox".into(), "rm".into(), sb],
            12..=17 => vec!["connect".into(), net, sb],
            18..=25 => vec!["connect".into(), "-p".into(), port, net, sb],
            26..=30 => vec!["disconnect".into(), net, sb],
            _ => vec!["reconcile".into()],
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let kill_after = (rng.below(6) == 0).then(|| Duration::from_micros(rng.below(30_000)));
        let mut child = self.cnm(&args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("running cnm");
        counts.commands.fetch_add(1, Ordering::Relaxed);
        counts.running.lock().unwrap().insert(child.id());
        if let Some(after) = kill_after {
            std::thread::sleep(after);
            if child.try_wait().unwrap().is_none() {
                let _ = child.kill();
                counts.kills.fetch_add(1, Ordering::Relaxed);
            }
        }
        let pid = child.id();
        let out = child.wait_with_output().unwrap();
        counts.running.lock().unwrap().remove(&pid);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if args == ["reconcile"] && !out.status.success() && std::env::var_os("CNM_STRESS_VERBOSE").is_some() {
            eprintln!("reconcile failed ({:?}): {stderr}", out.status);
        }
        if args == ["reconcile"] && out.status.success() {
            let said = String::from_utf8_lossy(&out.stdout);
            let n = said.lines().filter(|l| *l != "nothing to repair").count();
            counts.repairs.fetch_add(n, Ordering::Relaxed);
        }
        // Refusals are fine (a name taken, a network in use); a panic or an
        // internal error is not.
        assert!(!stderr.contains("panicked"), "cnm {args:?} panicked: {stderr}");
        if out.status.code() == Some(1) {
            assert!(!stderr.contains("internal error"), "cnm {args:?}: {stderr}");
        }
    }

    /// Until `done`: now and then, SIGKILLs the command that holds the
    /// operation lock (found in `/proc/locks`), so kills land inside
    /// operations rather than in processes waiting for their turn.
    fn kill_lock_holders(&self, rng: &mut Rng, counts: &Counts, done: &std::sync::atomic::AtomicBool) {
        use std::os::unix::fs::MetadataExt;
        while !done.load(Ordering::Relaxed) {
            // Not synchronisation: a random pause picks a random moment.
            std::thread::sleep(Duration::from_micros(2000 + rng.below(25_000)));
            let Ok(ino) = std::fs::metadata(self.run.join("ops.lock")).map(|m| m.ino()) else { continue };
            let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
            let holder = locks.lines().filter(|l| !l.contains("->")).find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let same = f.len() > 5 && f[1] == "FLOCK" && f[5].rsplit(':').next() == Some(&ino.to_string());
                same.then(|| f[4].parse::<u32>().ok()).flatten()
            });
            let Some(pid) = holder else { continue };
            std::thread::sleep(Duration::from_micros(rng.below(3000)));
            let running = counts.running.lock().unwrap();
            // Half the time let it finish: reconciles, which hold the lock
            // longest, must complete now and then too.
            if running.contains(&pid) && rng.below(2) == 0 {
                let _ =
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
                counts.lock_kills.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn store(&self) -> SplitStore {
        SplitStore::open_state_dirs(&self.state, &self.run).unwrap()
    }

    /// The kernel matches the store: bridges, veths, addresses, ports.
    fn check_kernel_matches_store(&self) {
        let store = self.store();
        let nets: Vec<Network> = store.list_json::<Network>("networks/").unwrap().into_iter().map(|x| x.0).collect();
        let eps: Vec<Endpoint> = store.list_json::<Endpoint>("endpoints/").unwrap().into_iter().map(|x| x.0).collect();
        let sbs: Vec<Sandbox> = store.list_json::<Sandbox>("sandboxes/").unwrap().into_iter().map(|x| x.0).collect();
        for n in &nets {
            assert_eq!(n.state, cnm_core::State::Ready, "network {} left unfinished", n.name);
        }
        for e in &eps {
            assert_eq!(e.state, cnm_core::State::Ready, "endpoint {} left unfinished", e.name);
            assert!(e.sandbox.is_some(), "endpoint {} of {} is detached: an orphan", e.name, e.network);
        }
        // Links of ours in the host: exactly the networks' bridges and the
        // joined endpoints' veths, each veth on its network's bridge.
        let links = self.host.ip_json(&self.host.ns, &["link", "show"]);
        let mut bridges = BTreeMap::new();
        let mut veths = BTreeMap::new();
        for l in links.as_array().unwrap() {
            let Some(id) = l["ifalias"].as_str().and_then(|a| a.strip_prefix("cnm:")) else { continue };
            let kind = l["linkinfo"]["info_kind"].as_str().unwrap_or_default();
            let entry = (l["ifname"].as_str().unwrap().to_string(), l["master"].as_str().map(str::to_string));
            match kind {
                "bridge" => bridges.insert(id.to_string(), entry),
                "veth" => veths.insert(id.to_string(), entry),
                other => panic!("unexpected link kind {other}: {l}"),
            };
        }
        let want_bridges: BTreeSet<String> = nets.iter().map(|n| n.id.to_string()).collect();
        assert_eq!(bridges.keys().cloned().collect::<BTreeSet<_>>(), want_bridges, "bridges against networks");
        let want_veths: BTreeSet<String> = eps.iter().map(|e| e.id.to_string()).collect();
        assert_eq!(veths.keys().cloned().collect::<BTreeSet<_>>(), want_veths, "veths against endpoints");
        for e in &eps {
            let (bridge, _) = &bridges[e.network_id.as_str()];
            assert_eq!(veths[e.id.as_str()].1.as_deref(), Some(bridge.as_str()), "veth of {} on its bridge", e.name);
        }
        // Each bridge has its gateway and is up.
        for n in &nets {
            let (bridge, _) = &bridges[n.id.as_str()];
            let a = self.host.ip_json(&self.host.ns, &["addr", "show", "dev", bridge]);
            let text = a.to_string();
            let gw = n.pools[0].gateway.unwrap().addr().to_string();
            assert!(text.contains(&format!("\"local\":\"{gw}\"")), "gateway {gw} on {bridge}: {text}");
            assert!(a[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{bridge} is up");
        }
        // Each sandbox has exactly its endpoints' interfaces and addresses;
        // no address is given twice.
        let mut seen = BTreeSet::new();
        for s in &sbs {
            let ns = NetNs::open(&s.netns).unwrap_or_else(|e| panic!("sandbox {}: {e}", s.name));
            let addrs = self.host.ip_json(&ns, &["addr", "show"]);
            let mut have = BTreeSet::new();
            for l in addrs.as_array().unwrap() {
                for a in l["addr_info"].as_array().unwrap() {
                    if a["family"] == "inet" && l["ifname"] != "lo" {
                        have.insert((
                            l["ifname"].as_str().unwrap().to_string(),
                            a["local"].as_str().unwrap().to_string(),
                        ));
                    }
                }
            }
            let want: BTreeSet<(String, String)> = eps
                .iter()
                .filter(|e| e.sandbox.as_ref() == Some(&s.id))
                .map(|e| (e.ifname.clone().unwrap(), e.ipv4.unwrap().addr().to_string()))
                .collect();
            assert_eq!(have, want, "interfaces of sandbox {}", s.name);
            for (_, a) in want {
                assert!(seen.insert(a.clone()), "address {a} given twice");
            }
        }
        // Published ports: exactly the endpoints' bindings.
        let mut want_ports: Vec<String> = eps
            .iter()
            .flat_map(|e| e.bindings.iter().map(|b| format!("{}:{}", b.host_port, b.container_port)))
            .collect();
        want_ports.sort();
        assert_eq!(self.kernel_ports(), want_ports, "published ports in the kernel against the store");
        eprintln!(
            "checked {} networks, {} sandboxes, {} endpoints and {} published ports against the kernel",
            nets.len(),
            sbs.len(),
            eps.len(),
            want_ports.len()
        );
    }

    /// `HOSTPORT:CONTAINERPORT` of every published TCP port in the kernel.
    fn kernel_ports(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.firewall == "nftables" {
            // No table at all when no network is left.
            let Ok(listing) = self.host.ns.exec("nft", ["-j", "list", "map", "inet", "cnm", "dnat4_any"]) else {
                let tables = self.host.exec(&self.host.ns, "nft", &["list", "tables"]);
                assert!(!tables.contains("cnm"), "the table exists but has no map: {tables}");
                return out;
            };
            let j: serde_json::Value = serde_json::from_str(&listing).unwrap();
            for item in j["nftables"].as_array().unwrap() {
                for e in item["map"]["elem"].as_array().into_iter().flatten() {
                    // [[{"concat": ["tcp", 20001]}, {"concat": ["10.120.0.2", 80]}]]
                    let host = e[0]["concat"][1].as_u64().unwrap();
                    let ctr = e[1]["concat"][1].as_u64().unwrap();
                    out.push(format!("{host}:{ctr}"));
                }
            }
        } else {
            let save = self.host.exec(&self.host.ns, "iptables-save", &["-t", "nat"]);
            for l in save.lines().filter(|l| l.starts_with("-A CNM-DNAT") && l.contains("--to-destination")) {
                let dport = l.split("--dport ").nth(1).unwrap().split(' ').next().unwrap();
                let to = l.split("--to-destination ").nth(1).unwrap().split(' ').next().unwrap();
                out.push(format!("{dport}:{}", to.rsplit(':').next().unwrap()));
            }
        }
        out.sort();
        out
    }

    /// Every joined endpoint answers on each of its published ports: a
    /// listener in the sandbox echoes a token to a client in the host that
    /// connects to the network's gateway address (a local address, so the
    /// connection is DNAT'ed like any from outside).
    fn check_ports_answer(&self) {
        let store = self.store();
        let nets: Vec<Network> = store.list_json::<Network>("networks/").unwrap().into_iter().map(|x| x.0).collect();
        let eps: Vec<Endpoint> = store.list_json::<Endpoint>("endpoints/").unwrap().into_iter().map(|x| x.0).collect();
        let sbs: Vec<Sandbox> = store.list_json::<Sandbox>("sandboxes/").unwrap().into_iter().map(|x| x.0).collect();
        for e in eps.iter().filter(|e| !e.bindings.is_empty()) {
            let sb = sbs.iter().find(|s| Some(&s.id) == e.sandbox.as_ref()).unwrap();
            let ns = NetNs::open(&sb.netns).unwrap();
            let net = nets.iter().find(|n| n.id == e.network_id).unwrap();
            let gw = net.pools[0].gateway.unwrap().addr();
            for b in &e.bindings {
                let token = format!("tok-{}-{}", e.name, b.host_port);
                let _srv = self.host.spawn(
                    &ns,
                    "socat",
                    &[
                        &format!("TCP-LISTEN:{},bind={},reuseaddr", b.container_port, e.ipv4.unwrap().addr()),
                        &format!("SYSTEM:echo {token}"),
                    ],
                );
                wait_listening(&ns, b.container_port);
                let got = self.host.exec(
                    &self.host.ns,
                    "socat",
                    &["-T", "5", "-", &format!("TCP:{}", SocketAddr::new(gw, b.host_port))],
                );
                assert_eq!(got.trim(), token, "endpoint {} on published port {}", e.name, b.host_port);
            }
        }
    }

    /// Everything removed through the tool; nothing of cnm may remain.
    fn remove_everything_and_check_nothing_remains(&self) {
        let store = self.store();
        let nets: Vec<Network> = store.list_json::<Network>("networks/").unwrap().into_iter().map(|x| x.0).collect();
        let sbs: Vec<Sandbox> = store.list_json::<Sandbox>("sandboxes/").unwrap().into_iter().map(|x| x.0).collect();
        drop(store);
        for s in &sbs {
            self.ok(&["sandbox", "rm", &s.name]);
        }
        for n in &nets {
            self.ok(&["network", "rm", &n.name]);
        }
        let links = self.host.ip_json(&self.host.ns, &["link", "show"]).to_string();
        assert!(!links.contains("cnm:"), "links of cnm left: {links}");
        if self.firewall == "nftables" {
            let tables = self.host.exec(&self.host.ns, "nft", &["list", "tables"]);
            assert!(!tables.contains("cnm"), "nft tables left: {tables}");
        } else {
            for tool in ["iptables-save", "ip6tables-save"] {
                let save = self.host.exec(&self.host.ns, tool, &[]);
                assert!(!save.contains("CNM"), "{tool} rules left: {save}");
            }
        }
        let leftover = |d: &Path| -> Vec<String> { walk(d).into_iter().map(|p| p.display().to_string()).collect() };
        assert!(!self.state.exists(), "state directory left: {:?}", leftover(&self.state));
        assert!(!self.run.exists(), "run directory left: {:?}", leftover(&self.run));
        for claim in walk(Path::new(cnm_core::CLAIMS_DIR)) {
            let owner = std::fs::read_to_string(&claim).unwrap_or_default();
            assert!(!owner.starts_with(self.host.dir().to_str().unwrap()), "claim {} left", claim.display());
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(self.host.dir().to_str().unwrap()), "mounts left: {mounts}");
    }
}

fn seed() -> u64 {
    match std::env::var("CNM_STRESS_SEED") {
        Ok(s) => s.parse().expect("CNM_STRESS_SEED is a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1,
    }
}

fn stress(test: &str, firewall: &'static str) {
    let Some(host) = TestHost::new(test) else { return };
    let (state, run) = (host.dir().join("state"), host.dir().join("run"));
    let s = Arc::new(Stress { host, state, run, firewall });
    let seed = seed();
    let ops: usize = std::env::var("CNM_STRESS_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    eprintln!("{test}: seed {seed} (repeat with CNM_STRESS_SEED={seed}), {WORKERS} workers x {ops} commands");
    // The seed is printed again if anything below panics.
    struct SaySeed(u64, &'static str);
    impl Drop for SaySeed {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!("{}: FAILED with seed {} (repeat with CNM_STRESS_SEED={})", self.1, self.0, self.0);
            }
        }
    }
    let _say = SaySeed(seed, if firewall == "nftables" { "stress_nftables" } else { "stress_iptables" });

    let counts = Arc::new(Counts::default());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (s, counts) = (s.clone(), counts.clone());
                sc.spawn(move || {
                    let mut rng = Rng(seed.wrapping_add((w as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1);
                    for _ in 0..ops {
                        s.random_command(&mut rng, &counts);
                    }
                })
            })
            .collect();
        let killer = sc.spawn(|| s.kill_lock_holders(&mut Rng(seed ^ 0x5555_aaaa_5555_aaaa | 1), &counts, &done));
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        killer.join().unwrap();
    });
    eprintln!(
        "{test}: {} commands, {} killed at random moments, {} killed holding the operation lock, {} repairs by \
         the reconciles among them",
        counts.commands.load(Ordering::Relaxed),
        counts.kills.load(Ordering::Relaxed),
        counts.lock_kills.load(Ordering::Relaxed),
        counts.repairs.load(Ordering::Relaxed)
    );

    let first = s.ok(&["reconcile"]);
    eprintln!("{test}: reconcile repaired:\n{first}");
    let second = s.ok(&["reconcile"]);
    assert_eq!(second.trim(), "nothing to repair", "a second reconcile still repaired (after the first: {first})");
    s.check_kernel_matches_store();
    s.check_ports_answer();
    s.remove_everything_and_check_nothing_remains();
    eprintln!("{test}: leaks found: 0");
}

#[test]
fn stress_nftables() {
    stress("stress_nft", "nftables");
}

#[test]
fn stress_iptables() {
    stress("stress_ipt", "iptables");
}
