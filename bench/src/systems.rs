//! The systems under test, each attaching and detaching one container on a
//! bridge network with N published ports, inside its own test host:
//!
//! - `cnm`: the controller in process (what an embedder runs);
//! - `netavark`: `netavark setup`/`teardown` with Podman's network JSON;
//! - `cni`: the `bridge` plugin with `host-local`, chained with `portmap`
//!   when ports are published, invoked as a container runtime invokes them;
//! - `floor`: the same links, addresses and routes by `ip -batch` (one
//!   process for the host side, one inside the container) and the same NAT
//!   entries by one `nft -f` process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_bridge::BridgeDriver;
use cnm_core::{Controller, EndpointConfig, MemStore, NetworkConfig, PortMapping, SandboxConfig, Store};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::testing::TestHost;
use cnm_netns::NetNs;

/// netavark from Debian's package.
pub const NETAVARK: &str = "/usr/lib/podman/netavark";
/// The CNI plugins from Debian's containernetworking-plugins.
pub const CNI_PATH: &str = "/usr/lib/cni";

/// One system's attach and detach.
pub trait System {
    /// Its name in the results (`cnm`, `netavark`, `cni`, `floor`).
    fn name(&self) -> &'static str;
    /// Attaches container `i` with `ports` published ports; the time taken.
    fn attach(&mut self, i: usize, ports: u16) -> Duration;
    /// Detaches container `i`; the time taken.
    fn detach(&mut self, i: usize) -> Duration;
    /// Container `i`'s namespace and address, while attached (for traffic).
    fn endpoint(&self, _i: usize) -> Option<(PathBuf, String)> {
        None
    }
}

/// Which systems are installed here, with a sentence for those that are not.
pub fn available() -> Vec<(&'static str, Result<(), String>)> {
    let have = |p: &str| Path::new(p).exists();
    vec![
        ("cnm", Ok(())),
        ("netavark", if have(NETAVARK) { Ok(()) } else { Err("not installed (apt-get install netavark)".into()) }),
        (
            "cni",
            if have(&format!("{CNI_PATH}/bridge")) && have(&format!("{CNI_PATH}/portmap")) {
                Ok(())
            } else {
                Err("not installed (apt-get install containernetworking-plugins)".into())
            },
        ),
        ("floor", if which("nft") && which("ip") { Ok(()) } else { Err("needs ip and nft".into()) }),
    ]
}

fn which(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path.split(':').chain(["/usr/sbin", "/sbin"]).any(|d| Path::new(d).join(tool).is_file());
    found
}

/// Host ports of container `i`: distinct for every attach of a run.
fn host_port(i: usize, ports: u16, p: u16) -> u16 {
    (20000 + (i * usize::from(ports.max(1))) % 40000) as u16 + p
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// Runs `cmd` with `input` on stdin; panics with its stderr on failure.
pub(crate) fn run(cmd: &mut Command, input: &str, what: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Named container namespaces, made before the clock starts.
pub(crate) struct Containers {
    pub paths: Vec<PathBuf>,
}

impl Containers {
    pub(crate) fn new(host: &TestHost, n: usize) -> Containers {
        let paths = (0..n)
            .map(|i| {
                let c = host.named_container(&format!("c{i}")).unwrap();
                c.ns.path().unwrap().to_path_buf()
            })
            .collect();
        Containers { paths }
    }
}

/// cnm in process.
pub struct Cnm {
    _host: TestHost,
    ctl: Controller,
    addrs: std::collections::HashMap<usize, String>,
}

impl Cnm {
    /// A controller on a fresh test host with `n` sandboxes made.
    pub fn new(n: usize) -> Cnm {
        let host = TestHost::new("bench-cnm").expect("cnm-bench needs root");
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
        ctl.create_network(NetworkConfig::new("bench", "bridge").subnet("10.96.0.0/16")).unwrap();
        for i in 0..n {
            ctl.create_sandbox(SandboxConfig { name: format!("c{i}"), ..Default::default() }).unwrap();
        }
        Cnm { _host: host, ctl, addrs: Default::default() }
    }
}

impl System for Cnm {
    fn name(&self) -> &'static str {
        "cnm"
    }
    fn attach(&mut self, i: usize, ports: u16) -> Duration {
        let cfg = EndpointConfig {
            ports: (0..ports)
                .map(|p| format!("{}:{}", host_port(i, ports, p), 80 + p).parse::<PortMapping>().unwrap())
                .collect(),
            ..Default::default()
        };
        let mut ep = None;
        let t = time(|| ep = Some(self.ctl.connect("bench", &format!("c{i}"), cfg).unwrap()));
        if let Some(a) = ep.and_then(|e| e.ipv4) {
            self.addrs.insert(i, a.addr().to_string());
        }
        t
    }
    fn detach(&mut self, i: usize) -> Duration {
        self.addrs.remove(&i);
        time(|| self.ctl.disconnect("bench", &format!("c{i}")).unwrap())
    }
    fn endpoint(&self, i: usize) -> Option<(PathBuf, String)> {
        let sb = self.ctl.sandbox(&format!("c{i}")).ok()?;
        Some((sb.netns, self.addrs.get(&i)?.clone()))
    }
}

/// `netavark setup`/`teardown`.
pub struct Netavark {
    host: TestHost,
    containers: Containers,
    config: PathBuf,
    opts: Vec<Option<String>>,
}

impl Netavark {
    /// A fresh test host with `n` container namespaces.
    pub fn new(n: usize) -> Netavark {
        let host = TestHost::new("bench-netavark").expect("cnm-bench needs root");
        let containers = Containers::new(&host, n);
        let config = host.dir().join("netavark");
        Netavark { host, containers, config, opts: vec![None; n] }
    }

    fn call(&self, verb: &str, i: usize) {
        let mut cmd = self.host.ns.command(NETAVARK);
        cmd.args([
            "--config",
            &self.config.display().to_string(),
            verb,
            &self.containers.paths[i].display().to_string(),
        ]);
        run(&mut cmd, self.opts[i].as_deref().unwrap(), &format!("netavark {verb}"));
    }
}

impl System for Netavark {
    fn name(&self) -> &'static str {
        "netavark"
    }
    fn attach(&mut self, i: usize, ports: u16) -> Duration {
        let mappings: Vec<String> = (0..ports)
            .map(|p| {
                format!(
                    r#"{{"host_ip": "", "container_port": {}, "host_port": {}, "range": 1, "protocol": "tcp"}}"#,
                    80 + p,
                    host_port(i, ports, p)
                )
            })
            .collect();
        let id = format!("{:064x}", i + 1);
        let ip = format!("10.95.{}.{}", 1 + i / 250, 2 + i % 250);
        self.opts[i] = Some(format!(
            r#"{{"container_id": "{id}", "container_name": "c{i}", "port_mappings": [{}],
            "networks": {{"bench": {{"interface_name": "eth0", "static_ips": ["{ip}"], "aliases": []}}}},
            "network_info": {{"bench": {{"name": "bench", "id": "{netid}", "driver": "bridge", "network_interface": "nvbench0",
            "subnets": [{{"subnet": "10.95.0.0/16", "gateway": "10.95.0.1"}}], "ipv6_enabled": false, "internal": false,
            "dns_enabled": false, "ipam_options": {{"driver": "host-local"}}}}}}}}"#,
            mappings.join(","),
            netid = "ab".repeat(32)
        ));
        time(|| self.call("setup", i))
    }
    fn detach(&mut self, i: usize) -> Duration {
        time(|| self.call("teardown", i))
    }
    fn endpoint(&self, i: usize) -> Option<(PathBuf, String)> {
        self.opts[i].as_ref()?;
        Some((self.containers.paths[i].clone(), format!("10.95.{}.{}", 1 + i / 250, 2 + i % 250)))
    }
}

/// The CNI reference plugins: bridge + host-local, then portmap.
pub struct Cni {
    host: TestHost,
    containers: Containers,
    data: PathBuf,
    results: Vec<Option<(String, u16)>>,
}

impl Cni {
    /// A fresh test host with `n` container namespaces.
    pub fn new(n: usize) -> Cni {
        let host = TestHost::new("bench-cni").expect("cnm-bench needs root");
        let containers = Containers::new(&host, n);
        let data = host.dir().join("cni");
        Cni { host, containers, data, results: vec![None; n] }
    }

    fn bridge_conf(&self) -> String {
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "bench", "type": "bridge", "bridge": "cnibench0", "isGateway": true,
            "ipMasq": true, "ipam": {{"type": "host-local", "subnet": "10.94.0.0/16", "dataDir": "{}"}}}}"#,
            self.data.display()
        )
    }

    fn portmap_conf(i: usize, ports: u16, prev: &str) -> String {
        let maps: Vec<String> = (0..ports)
            .map(|p| {
                format!(r#"{{"hostPort": {}, "containerPort": {}, "protocol": "tcp"}}"#, host_port(i, ports, p), 80 + p)
            })
            .collect();
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "bench", "type": "portmap", "capabilities": {{"portMappings": true}},
            "runtimeConfig": {{"portMappings": [{}]}}, "prevResult": {prev}}}"#,
            maps.join(",")
        )
    }

    fn plugin(&self, plugin: &str, command: &str, i: usize, conf: &str) -> String {
        let mut cmd = self.host.ns.command(format!("{CNI_PATH}/{plugin}"));
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("bench{i}"))
            .env("CNI_NETNS", &self.containers.paths[i])
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PATH);
        run(&mut cmd, conf, &format!("CNI {plugin} {command}"))
    }
}

impl System for Cni {
    fn name(&self) -> &'static str {
        "cni"
    }
    fn attach(&mut self, i: usize, ports: u16) -> Duration {
        let conf = self.bridge_conf();
        let mut result = String::new();
        let t = time(|| {
            result = self.plugin("bridge", "ADD", i, &conf);
            if ports > 0 {
                self.plugin("portmap", "ADD", i, &Self::portmap_conf(i, ports, &result));
            }
        });
        self.results[i] = Some((result, ports));
        t
    }
    fn detach(&mut self, i: usize) -> Duration {
        let (result, ports) = self.results[i].take().unwrap();
        let conf = self.bridge_conf();
        time(|| {
            if ports > 0 {
                self.plugin("portmap", "DEL", i, &Self::portmap_conf(i, ports, &result));
            }
            self.plugin("bridge", "DEL", i, &conf);
        })
    }
}

/// The kernel floor: `ip -batch` and `nft -f`.
pub struct Floor {
    host: TestHost,
    containers: Containers,
    ports: Vec<u16>,
}

impl Floor {
    /// A fresh test host with a bridge, a NAT table like cnm's and `n`
    /// container namespaces.
    pub fn new(n: usize) -> Floor {
        let host = TestHost::new("bench-floor").expect("cnm-bench needs root");
        let containers = Containers::new(&host, n);
        let script = "link add flbr0 type bridge\nlink set flbr0 up\naddr add 10.93.0.1/16 dev flbr0\n";
        run(host.ns.command("ip").args(["-batch", "-"]), script, "ip -batch (bridge)");
        let table = "table inet floor {\n map dnat4 { type inet_proto . inet_service : ipv4_addr . inet_service; }\n \
                     set published4 { type ipv4_addr . inet_proto . inet_service; }\n \
                     chain pre { type nat hook prerouting priority dstnat; policy accept;\n  \
                     fib daddr type local dnat ip addr . port to meta l4proto . th dport map @dnat4\n }\n}\n";
        run(host.ns.command("nft").args(["-f", "-"]), table, "nft -f (table)");
        Floor { host, containers, ports: vec![0; n] }
    }

    fn ip(i: usize) -> String {
        format!("10.93.{}.{}", 1 + i / 250, 2 + i % 250)
    }

    fn elements(i: usize, ports: u16, add: bool) -> String {
        let ip = Self::ip(i);
        let (dnat, published): (Vec<String>, Vec<String>) = (0..ports)
            .map(|p| {
                let hp = host_port(i, ports, p);
                let key = format!("tcp . {hp}");
                (if add { format!("{key} : {ip} . {}", 80 + p) } else { key }, format!("{ip} . tcp . {}", 80 + p))
            })
            .unzip();
        let verb = if add { "add" } else { "delete" };
        format!(
            "{verb} element inet floor dnat4 {{ {} }}\n{verb} element inet floor published4 {{ {} }}\n",
            dnat.join(", "),
            published.join(", ")
        )
    }
}

impl System for Floor {
    fn name(&self) -> &'static str {
        "floor"
    }
    fn attach(&mut self, i: usize, ports: u16) -> Duration {
        let ns = self.containers.paths[i].display().to_string();
        let host_side = format!("link add fv{i} type veth peer name eth0 netns {ns}\nlink set fv{i} master flbr0 up\n");
        let inside = format!(
            "link set lo up\nlink set eth0 up\naddr add {}/16 dev eth0\nroute add default via 10.93.0.1\n",
            Self::ip(i)
        );
        let container = NetNs::open(&self.containers.paths[i]).unwrap();
        self.ports[i] = ports;
        time(|| {
            run(self.host.ns.command("ip").args(["-batch", "-"]), &host_side, "ip -batch (host side)");
            run(container.command("ip").args(["-batch", "-"]), &inside, "ip -batch (container side)");
            if ports > 0 {
                run(self.host.ns.command("nft").args(["-f", "-"]), &Self::elements(i, ports, true), "nft -f (add)");
            }
        })
    }
    fn detach(&mut self, i: usize) -> Duration {
        let ports = self.ports[i];
        time(|| {
            if ports > 0 {
                run(self.host.ns.command("nft").args(["-f", "-"]), &Self::elements(i, ports, false), "nft -f (delete)");
            }
            run(self.host.ns.command("ip").args(["link", "del", &format!("fv{i}")]), "", "ip link del");
        })
    }
}

/// The `cnm` command-line tool, one process per operation (what a runtime
/// that shells out sees).
pub struct CnmCli {
    host: TestHost,
    exe: PathBuf,
    containers: Containers,
}

impl CnmCli {
    /// The `cnm` binary next to this one, if it was built.
    pub fn binary() -> Option<PathBuf> {
        let exe = std::env::current_exe().ok()?.parent()?.join("cnm");
        exe.is_file().then_some(exe)
    }

    /// A fresh test host with a bridge network and `n` sandboxes on
    /// container namespaces, made through the tool before the clock starts.
    pub fn new(n: usize) -> CnmCli {
        let host = TestHost::new("bench-cnm-cli").expect("cnm-bench needs root");
        let exe = Self::binary().expect("the cnm binary (cargo build -p cnm-cli)");
        let containers = Containers::new(&host, n);
        let c = CnmCli { host, exe, containers };
        c.cnm(&["network", "create", "--subnet", "10.92.0.0/16", "bench"]);
        for i in 0..n {
            let path = c.containers.paths[i].display().to_string();
            c.cnm(&["sandbox", "create", "--netns", &path, &format!("c{i}")]);
        }
        c
    }

    /// The test host the tool works in.
    pub fn host(&self) -> &TestHost {
        &self.host
    }

    /// The command for `cnm ARGS` against this test host.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--state-dir")
            .arg(self.host.dir().join("state"))
            .arg("--run-dir")
            .arg(self.host.dir().join("run"))
            .arg("--host-netns")
            .arg(self.host.ns.proc_path())
            .args(args);
        cmd
    }

    fn cnm(&self, args: &[&str]) {
        run(&mut self.command(args), "", &format!("cnm {}", args.join(" ")));
    }
}

impl System for CnmCli {
    fn name(&self) -> &'static str {
        "cnm"
    }
    fn attach(&mut self, i: usize, ports: u16) -> Duration {
        let maps: Vec<String> = (0..ports).map(|p| format!("{}:{}", host_port(i, ports, p), 80 + p)).collect();
        let mut args: Vec<String> = Vec::new();
        for m in &maps {
            args.push("-p".into());
            args.push(m.clone());
        }
        args.extend(["bench".to_string(), format!("c{i}")]);
        let mut full = vec!["connect"];
        full.extend(args.iter().map(String::as_str));
        time(|| self.cnm(&full))
    }
    fn detach(&mut self, i: usize) -> Duration {
        time(|| self.cnm(&["disconnect", "bench", &format!("c{i}")]))
    }
}

/// TCP throughput from container 1 to container 0 of `s` (both attached),
/// one iperf3 stream for `secs` seconds, in Gbit/s; or why it did not run.
pub fn iperf3(s: &dyn System, secs: u32) -> Result<f64, String> {
    let (server_ns, server_ip) = s.endpoint(0).ok_or("container 0 is not attached")?;
    let (client_ns, _) = s.endpoint(1).ok_or("container 1 is not attached")?;
    let server = NetNs::open(&server_ns).map_err(|e| e.to_string())?;
    let client = NetNs::open(&client_ns).map_err(|e| e.to_string())?;
    // Up to three attempts, each with a fresh one-shot server: a run that
    // fails or reports no result is tried again from scratch.
    let mut last = String::from("did not run");
    for _ in 0..3 {
        let mut srv = server
            .command("iperf3")
            .args(["-s", "-1", "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3: {e}"))?;
        // The server listens within milliseconds; the client retries for up
        // to five seconds until it gets a complete report.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut result = None;
        while result.is_none() && Instant::now() < deadline {
            let o =
                client.command("iperf3").args(["-c", &server_ip, "-p", "5201", "-t", &secs.to_string(), "-J"]).output();
            let o = match o {
                Ok(o) => o,
                Err(e) => {
                    last = e.to_string();
                    break;
                }
            };
            // iperf3 -J reports errors inside the JSON, sometimes with a
            // zero exit status.
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            match v["end"]["sum_received"]["bits_per_second"].as_f64() {
                Some(b) if o.status.success() && b > 0.0 => result = Some(b / 1e9),
                _ => {
                    last = v["error"].as_str().unwrap_or("no result in iperf3's report").to_string();
                    if o.status.success() {
                        // The one-shot server is done; start another.
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let _ = srv.kill();
        let _ = srv.wait();
        if let Some(g) = result {
            return Ok(g);
        }
    }
    Err(format!("iperf3 client to {server_ip}: {last}"))
}
