//! Workload 9: CNI, as runtimes run it, each plugin a whole process. ADD
//! and DEL of one container with 10 published ports: `cnm-cni` alone,
//! against the reference chain (`bridge` with `host-local`, then
//! `portmap`), alternating in one run. And `podman run --rm … true`
//! (Podman 4.3, CNI backend) with each chain, and with no network.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use cnm_cni::testing::{plugin_dir, Podman};
use cnm_netns::testing::TestHost;
use serde_json::{json, Value};

/// One timed operation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CniSample {
    /// `cnm` or `reference`, or `none` for Podman without a network.
    pub system: &'static str,
    /// `add`, `del` or `podman-run`.
    pub op: &'static str,
    pub run: usize,
    pub ms: f64,
}

/// The published ports of every container.
const PORTS: u16 = 10;

fn cnm_cni() -> Option<PathBuf> {
    let p = std::env::current_exe().ok()?.parent()?.join("cnm-cni");
    p.exists().then_some(p)
}

pub fn available() -> Result<(), String> {
    for f in ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/portmap"] {
        if !Path::new(f).exists() {
            return Err(format!("{f} is missing (Debian package containernetworking-plugins)"));
        }
    }
    cnm_cni().map(|_| ()).ok_or_else(|| "no cnm-cni next to cnm-bench (cargo build -p cnm-cni)".into())
}

/// Runs `plugin` for `command` with `conf` in the host's namespace; its
/// result.
fn call(host: &TestHost, plugin: &Path, command: &str, id: &str, netns: &str, conf: &Value) -> Value {
    let mut child = host
        .ns
        .command(plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", plugin.display()));
    child.stdin.take().unwrap().write_all(conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{} {command}: {text}", plugin.display());
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn port_mappings() -> Value {
    (0..PORTS).map(|i| json!({"hostPort": 20000 + i, "containerPort": 80 + i, "protocol": "tcp"})).collect()
}

/// The two chains for one container: ADD and DEL wall times.
struct Chains {
    cnm: PathBuf,
    cnm_conf: Value,
    bridge_conf: Value,
}

impl Chains {
    fn new(host: &TestHost, cnm: PathBuf) -> Chains {
        let cnm_conf = json!({"cniVersion": "1.0.0", "name": "cnmbench", "type": "cnm", "subnet": "10.96.1.0/24",
            "bridge": host.name("cn"), "dataDir": host.dir().join("cnm"), "runDir": host.dir().join("cnm-run"),
            "runtimeConfig": {"portMappings": port_mappings()}});
        let bridge_conf = json!({"cniVersion": "1.0.0", "name": "refbench", "type": "bridge", "bridge": host.name("rf"),
            "isGateway": true, "ipMasq": true, "hairpinMode": true,
            "ipam": {"type": "host-local", "dataDir": host.dir().join("host-local"),
                     "ranges": [[{"subnet": "10.96.2.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}});
        Chains { cnm, cnm_conf, bridge_conf }
    }

    fn portmap_conf(prev: &Value) -> Value {
        json!({"cniVersion": "1.0.0", "name": "refbench", "type": "portmap", "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": port_mappings()}, "prevResult": prev})
    }

    /// ADD then DEL of container `id` in `netns` with `system`'s chain.
    fn round(&self, host: &TestHost, system: &str, id: &str, netns: &str) -> (f64, f64) {
        let t = Instant::now();
        let portmap = if system == "cnm" {
            call(host, &self.cnm, "ADD", id, netns, &self.cnm_conf);
            None
        } else {
            let r = call(host, Path::new("/usr/lib/cni/bridge"), "ADD", id, netns, &self.bridge_conf);
            let conf = Chains::portmap_conf(&r);
            call(host, Path::new("/usr/lib/cni/portmap"), "ADD", id, netns, &conf);
            Some(conf)
        };
        let add = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        match portmap {
            None => {
                call(host, &self.cnm, "DEL", id, netns, &self.cnm_conf);
            }
            Some(conf) => {
                call(host, Path::new("/usr/lib/cni/portmap"), "DEL", id, netns, &conf);
                call(host, Path::new("/usr/lib/cni/bridge"), "DEL", id, netns, &self.bridge_conf);
            }
        }
        (add, t.elapsed().as_secs_f64() * 1e3)
    }
}

/// Waits (untimed) until the veths `cnm-cni`'s DEL parked are deleted by
/// the process it left for that, so that deletion, off DEL's path, does not
/// slow the next measurement down.
fn settle(host: &TestHost) {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while host.handle.link_list().unwrap().iter().any(|l| l.group == cnm_bridge::REAPER_GROUP) {
        assert!(Instant::now() < deadline, "parked veths were never deleted");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// The workload; nothing when a plugin is missing.
pub fn run_all(quick: bool) -> Vec<CniSample> {
    let cnm = match available() {
        Ok(()) => cnm_cni().unwrap(),
        Err(why) => {
            println!("cni workload: skipped, {why}");
            return Vec::new();
        }
    };
    let host = TestHost::new("bench-cni").expect("cnm-bench needs root");
    let chains = Chains::new(&host, cnm.clone());
    let runs = if quick { 3 } else { 30 };
    let mut out = Vec::new();
    // Round 0 makes the networks (the bridges) and is not kept.
    for run in 0..=runs {
        for system in ["cnm", "reference"] {
            let name = format!("{system}{run}");
            let _ns = host.named_container(&name).unwrap();
            let netns = host.dir().join(&name).display().to_string();
            let (add, del) = chains.round(&host, system, &name, &netns);
            if run > 0 {
                out.push(CniSample { system, op: "add", run, ms: add });
                out.push(CniSample { system, op: "del", run, ms: del });
                println!("cni {system:<9} run {run:>2}: ADD {add:>6.1} ms, DEL {del:>6.1} ms ({PORTS} ports)");
            }
            cnm_netns::NetNs::remove_named(host.dir(), &name).unwrap();
            settle(&host);
        }
    }
    out.extend(podman_runs(&host, &cnm, if quick { 2 } else { 15 }));
    out
}

/// `podman run --rm --network NET localhost/bb true` with each chain, and
/// with `--network none`. cnm's state is the ADD/DEL rounds' (one cnm per
/// host namespace).
fn podman_runs(host: &TestHost, cnm: &Path, runs: usize) -> Vec<CniSample> {
    if std::process::Command::new("podman").arg("--version").output().is_err() {
        println!("cni workload: podman runs skipped, no podman (Debian package podman)");
        return Vec::new();
    }
    let dir = std::env::temp_dir().join(format!("cnm-bench-podman-{}-{}", std::process::id(), host.prefix()));
    let plugins = plugin_dir(&dir, cnm);
    let cnm_list = json!({"cniVersion": "1.0.0", "name": "cnmpod", "plugins": [
        {"type": "cnm", "subnet": "10.96.3.0/24", "bridge": host.name("cp"), "dataDir": host.dir().join("cnm"),
         "runDir": host.dir().join("cnm-run"), "capabilities": {"portMappings": true}}]});
    let ref_list = json!({"cniVersion": "1.0.0", "name": "refpod", "plugins": [
        {"type": "bridge", "bridge": host.name("rp"), "isGateway": true, "ipMasq": true, "hairpinMode": true,
         "ipam": {"type": "host-local", "dataDir": dir.join("host-local"),
                  "ranges": [[{"subnet": "10.96.4.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": true}}]});
    let podman = Podman::new(&host.ns, &dir, &plugins, "cnmpod", &cnm_list, host.prefix());
    std::fs::write(dir.join("net.d/refpod.conflist"), ref_list.to_string()).unwrap();
    podman.import_busybox();
    let mut out = Vec::new();
    for run in 0..=runs {
        for (system, net) in [("cnm", "cnmpod"), ("reference", "refpod"), ("none", "none")] {
            let t = Instant::now();
            podman.ok(&["run", "--rm", "--network", net, "localhost/bb", "true"]);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if run > 0 {
                out.push(CniSample { system, op: "podman-run", run, ms });
                println!("podman run --network {net:<6} ({system:<9}) run {run:>2}: {ms:>7.1} ms");
            }
        }
    }
    out
}
