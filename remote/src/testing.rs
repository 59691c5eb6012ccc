//! Helpers for tests and benchmarks that drive a real dockerd (Debian's
//! docker.io) against a plugin, inside a network namespace they made
//! (enabled by the `testing` feature). The setup follows
//! `../shared/clients/docker-remote.sh`: dockerd entered into the namespace
//! with a plain setns (`ip netns exec` would remount /sys and hide the
//! cgroups), its data, sockets and cgroups its own, all removed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cnm_netns::NetNs;
use serde_json::{json, Value};

/// dockerd in a namespace, with its data in a directory of its own.
pub struct Docker {
    dir: PathBuf,
    cgroup: String,
    dockerd: Option<Child>,
    key_json_was_there: bool,
    cluster: Option<DockerCluster>,
}

/// A dockerd that is one host of a classic (pre-swarm) cluster: networks
/// of global scope live in `store`, shared by every dockerd that names it.
#[derive(Debug, Clone)]
pub struct DockerCluster {
    /// `--cluster-store`: `etcd://HOST:PORT` (etcd's v2 API, which dockerd
    /// 20.10's libkv speaks; etcd 3.4 needs `--enable-v2`).
    pub store: String,
    /// `--cluster-advertise`: `IP:PORT` of this host.
    pub advertise: String,
    /// The host's name (dockerd's node name in the cluster; each must be
    /// different).
    pub hostname: String,
    /// A directory of this dockerd's own for `/etc/docker` (its plugin spec
    /// files under `plugins/`): every dockerd of the cluster finds the
    /// plugin of one name, each its own host's.
    pub etc: PathBuf,
}

impl Docker {
    /// Starts dockerd in `netns` with everything under `dir`; `tag` names
    /// its cgroup parent (unique per test).
    pub fn start(netns: &NetNs, dir: &Path, tag: &str) -> Docker {
        Docker::start_with(netns, dir, tag, None)
    }

    /// [`Docker::start`], as one host of a cluster: dockerd runs in a mount
    /// and UTS namespace of its own (a slave of the test's: the test's
    /// unmounts reach it, its mounts stay its own) with `cluster.etc` over
    /// `/etc/docker`, and its host name.
    pub fn start_in_cluster(netns: &NetNs, dir: &Path, tag: &str, cluster: DockerCluster) -> Docker {
        Docker::start_with(netns, dir, tag, Some(cluster))
    }

    fn start_with(netns: &NetNs, dir: &Path, tag: &str, cluster: Option<DockerCluster>) -> Docker {
        std::fs::create_dir_all(dir.join("cli")).unwrap();
        let config = match &cluster {
            Some(c) => json!({"cluster-store": c.store, "cluster-advertise": c.advertise}),
            None => json!({}),
        };
        std::fs::write(dir.join("daemon.json"), config.to_string()).unwrap();
        let mut d = Docker {
            dir: dir.to_path_buf(),
            cgroup: format!("cnm-{tag}"),
            dockerd: None,
            key_json_was_there: Path::new("/etc/docker/key.json").exists(),
            cluster,
        };
        d.launch(netns);
        d
    }

    /// dockerd's command: itself, or inside its own mount and UTS
    /// namespaces for a cluster host.
    fn dockerd_command(&self, netns: &NetNs) -> Command {
        let Some(c) = &self.cluster else { return netns.command("dockerd") };
        std::fs::create_dir_all("/etc/docker").unwrap();
        let mut cmd = netns.command("unshare");
        cmd.args(["--mount", "--uts", "--propagation", "slave", "sh", "-ec"]);
        cmd.arg(r#"mount --bind "$0" /etc/docker; hostname "$1"; shift; exec dockerd "$@""#);
        cmd.arg(&c.etc).arg(&c.hostname);
        cmd
    }

    /// Starts dockerd (with `nsenter`'s plain setns, as `NetNs::command`
    /// does: `ip netns exec` would remount /sys and hide the cgroups) and
    /// waits until it answers.
    pub fn launch(&mut self, netns: &NetNs) {
        let dir = &self.dir;
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = self
            .dockerd_command(netns)
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("--cgroup-parent")
            .arg(format!("/{}", self.cgroup))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd (Debian package docker.io)");
        self.dockerd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.run(&["version"]).status.success() {
            assert!(Instant::now() < deadline, "dockerd never answered: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What dockerd said.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// `docker ARGS` against this dockerd (Debian's CLI of the same version).
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/docker")
            .env("DOCKER_HOST", format!("unix://{}", self.dir.join("docker.sock").display()))
            .env("DOCKER_CONFIG", self.dir.join("cli"))
            .args(args)
            .output()
            .expect("running docker")
    }

    /// `docker ARGS`, which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// SIGTERM and wait: dockerd stops its containers first.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.dockerd.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::SIGTERM);
            let _ = c.wait();
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if self.dockerd.is_some() {
            let ids = self.run(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.run(&["rm", "-f", id]);
            }
        }
        self.stop();
        // What dockerd mounted below its directories, then the rest.
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| Path::new(p).starts_with(&self.dir))
            .collect();
        points.sort_by(|a, b| b.cmp(a));
        for p in points {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        for controller in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let ours = controller.path().join(&self.cgroup);
            for sub in std::fs::read_dir(&ours).into_iter().flatten().flatten() {
                let _ = std::fs::remove_dir(sub.path());
            }
            let _ = std::fs::remove_dir(&ours);
        }
        // A cluster host's dockerd wrote its key under its own /etc/docker.
        if !self.key_json_was_there && self.cluster.is_none() {
            let _ = std::fs::remove_file("/etc/docker/key.json");
        }
    }
}

pub use cnm_netns::testing::RemoveDir;

/// Imports `bb:latest`, a busybox image from Debian's busybox-static, with
/// no registry; its files go under `dir`.
pub fn import_busybox(docker: &Docker, dir: &Path) {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    let applets = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for a in String::from_utf8_lossy(&applets.stdout).split_whitespace().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(a));
    }
    let tar = Command::new("tar").arg("-C").arg(&root).args(["-cf"]).arg(dir.join("rootfs.tar")).arg(".").status();
    assert!(tar.unwrap().success());
    docker.ok(&["import", "-c", "ENV PATH=/bin", &dir.join("rootfs.tar").display().to_string(), "bb:latest"]);
}

/// A Docker network plugin that answers its own way, on a thread: its links are
/// `tpN`/`tpNc`, it picks the MAC, gives no gateway but a route to
/// 10.99.0.0/16 through 10.1.5.1, prefixes names with `net`, and sends
/// its answers chunked.
pub struct TestPlugin {
    calls: Arc<Mutex<Vec<String>>>,
}

fn chunked(out: &mut UnixStream, body: &[u8]) {
    let mut msg = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in body.chunks(7) {
        msg.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        msg.extend_from_slice(part);
        msg.extend_from_slice(b"\r\n");
    }
    msg.extend_from_slice(b"0\r\n\r\n");
    out.write_all(&msg).unwrap();
}

impl TestPlugin {
    /// Serves on `listener` from a thread, making its links in `host`.
    pub fn start(listener: UnixListener, host: NetNs) -> TestPlugin {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let log = calls.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut out) = conn else { return };
                let mut r = BufReader::new(out.try_clone().unwrap());
                let (mut line, mut len) = (String::new(), 0);
                r.read_line(&mut line).unwrap();
                let method = line.split_whitespace().nth(1).unwrap_or("").trim_start_matches('/').to_string();
                loop {
                    let mut h = String::new();
                    r.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                log.lock().unwrap().push(method.clone());
                let answer = match method.as_str() {
                    "Plugin.Activate" => json!({"Implements": ["NetworkDriver"]}),
                    "NetworkDriver.GetCapabilities" => json!({"Scope": "local"}),
                    "NetworkDriver.CreateEndpoint" => json!({"Interface": {"MacAddress": "02:00:00:00:be:ef"}}),
                    "NetworkDriver.Join" => {
                        let n = &req["EndpointID"].as_str().unwrap()[..6];
                        let peer = format!("tp{n}c");
                        host.exec("ip", ["link", "add", &format!("tp{n}"), "type", "veth", "peer", "name", &peer])
                            .unwrap();
                        host.exec("ip", ["link", "set", &format!("tp{n}"), "up"]).unwrap();
                        json!({"InterfaceName": {"SrcName": peer, "DstPrefix": "net"},
                               "StaticRoutes": [{"Destination": "10.99.0.0/16", "RouteType": 0, "NextHop": "10.1.5.1"}]})
                    }
                    "NetworkDriver.Leave" => {
                        let n = &req["EndpointID"].as_str().unwrap()[..6];
                        let _ = host.exec("ip", ["link", "del", &format!("tp{n}")]);
                        json!({})
                    }
                    _ => json!({}),
                };
                chunked(&mut out, answer.to_string().as_bytes());
            }
        });
        TestPlugin { calls }
    }

    /// The methods called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}
