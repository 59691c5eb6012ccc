//! Workload 8: `docker run --rm --network NET bb true` on dockerd (Debian's
//! docker.io), with NET a cnm network (dockerd using `cnm plugin`), a
//! network of Docker's built-in bridge driver, and `none` (no network: what
//! the rest of `docker run` costs), alternating in one run. The plugin's own
//! share is the time it spent answering dockerd's calls during each run,
//! from its `took_us` log lines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cnm_netns::testing::TestHost;
use cnm_remote::testing::{import_busybox, Docker, RemoveDir};

use crate::systems::CnmCli;

/// One `docker run`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DockerResult {
    /// `cnm`, `docker-bridge` or `none`.
    pub system: &'static str,
    pub run: usize,
    /// Wall time of the `docker run` command.
    pub ms: f64,
    /// The plugin's time answering dockerd's calls during it (cnm only).
    pub plugin_ms: Option<f64>,
    /// How many calls dockerd made to the plugin during it.
    pub plugin_calls: Option<usize>,
}

pub fn available() -> Result<(), String> {
    for f in ["/usr/sbin/dockerd", "/usr/bin/docker", "/bin/busybox"] {
        if !Path::new(f).exists() {
            return Err(format!("{f} is missing (Debian packages docker.io, busybox-static)"));
        }
    }
    CnmCli::binary().map(|_| ()).ok_or_else(|| "the cnm binary is not built".into())
}

/// `cnm -vv plugin`, its call timings collected from its log.
struct PluginProcess {
    child: Child,
    calls: Arc<Mutex<Vec<u64>>>,
    socket: PathBuf,
}

impl PluginProcess {
    fn start(host: &TestHost, dir: &Path, name: &str) -> PluginProcess {
        let mut child = Command::new(CnmCli::binary().unwrap())
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--run-dir")
            .arg(dir.join("run"))
            .arg("--host-netns")
            .arg(host.ns.proc_path())
            .args(["-vv", "plugin", "--name", name])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cnm plugin");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.starts_with("cnm plugin:"), "cnm plugin said {line:?}");
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let (c, err) = (calls.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut log = std::env::var_os("CNM_BENCH_PLUGIN_LOG").and_then(|p| std::fs::File::create(p).ok());
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if let Some(f) = log.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{l}");
                }
                let took = l.split_whitespace().find_map(|w| w.strip_prefix("took_us=")?.parse().ok());
                if let (true, Some(us)) = (l.contains("plugin call"), took) {
                    c.lock().unwrap().push(us);
                }
            }
        });
        PluginProcess { child, calls, socket: cnm_remote::default_socket(name) }
    }

    /// The calls logged since the last take, as (count, total ms).
    fn take(&self) -> (usize, f64) {
        let calls = std::mem::take(&mut *self.calls.lock().unwrap());
        (calls.len(), calls.iter().sum::<u64>() as f64 / 1e3)
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The workload; nothing when dockerd or the tool is missing.
pub fn run_all(quick: bool) -> Vec<DockerResult> {
    if let Err(why) = available() {
        println!("docker workload: skipped, {why}");
        return Vec::new();
    }
    let host = TestHost::new("bench-docker").expect("cnm-bench needs root");
    let dir = std::env::temp_dir().join(format!("cnm-bench-docker-{}-{}", std::process::id(), host.prefix()));
    let _remove = RemoveDir(dir.clone());
    let name = format!("cnm{}", host.prefix());
    let plugin = PluginProcess::start(&host, &dir, &name);
    let docker = Docker::start(&host.ns, &dir.join("docker"), host.prefix());
    import_busybox(&docker, &dir);
    docker.ok(&["network", "create", "-d", &name, "--subnet", "10.94.0.0/24", "cnmnet"]);
    docker.ok(&["network", "create", "-d", "bridge", "--subnet", "10.95.0.0/24", "brnet"]);
    let systems = [("cnm", "cnmnet"), ("docker-bridge", "brnet"), ("none", "none")];
    let runs = if quick { 2 } else { 30 };
    let mut out = Vec::new();
    // Round 0 warms dockerd's caches up and is not kept.
    for run in 0..=runs {
        for (system, net) in systems {
            plugin.take();
            let t = Instant::now();
            docker.ok(&["run", "--rm", "--network", net, "bb", "true"]);
            let ms = t.elapsed().as_secs_f64() * 1e3;
            let (calls, plugin_ms) = plugin.take();
            let cnm = system == "cnm";
            if run > 0 {
                out.push(DockerResult {
                    system,
                    run,
                    ms,
                    plugin_ms: cnm.then_some(plugin_ms),
                    plugin_calls: cnm.then_some(calls),
                });
                println!("docker run --network {net:<7} ({system:<13}) run {run:>2}: {ms:>7.1} ms");
            }
        }
    }
    docker.ok(&["network", "rm", "cnmnet", "brnet"]);
    out
}
