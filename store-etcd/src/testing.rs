//! An etcd server for tests: Debian's `etcd` (package `etcd-server`) started
//! inside a namespace the test made, with its data on tmpfs, and killed
//! (data removed) when dropped.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cnm_netns::NetNs;

/// A running etcd.
pub struct EtcdServer {
    child: Option<Child>,
    ns: NetNs,
    dir: PathBuf,
    v2: bool,
    /// `http://ip:2379`.
    pub url: String,
}

impl EtcdServer {
    /// Starts etcd in `ns`, serving clients on `ip:2379`, with its data
    /// under `dir` (created; removed on drop), and waits until it answers.
    pub fn start(ns: &NetNs, ip: IpAddr, dir: impl Into<PathBuf>) -> EtcdServer {
        EtcdServer::start_with(ns, ip, dir.into(), false)
    }

    /// [`EtcdServer::start`], serving etcd's v2 API as well (`--enable-v2`:
    /// dockerd 20.10's `--cluster-store` speaks only that).
    pub fn start_with_v2(ns: &NetNs, ip: IpAddr, dir: impl Into<PathBuf>) -> EtcdServer {
        EtcdServer::start_with(ns, ip, dir.into(), true)
    }

    fn start_with(ns: &NetNs, ip: IpAddr, dir: PathBuf, v2: bool) -> EtcdServer {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let host = match ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        let ns = ns.try_clone().expect("clone namespace");
        let mut server = EtcdServer { child: None, ns, dir, v2, url: format!("http://{host}:2379") };
        server.restart();
        server
    }

    /// Starts it again (after [`EtcdServer::kill`]) on the same data, and
    /// waits until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let url = self.url.clone();
        let child = self
            .ns
            .command("etcd")
            .args(["--name", "cnm-test", "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
            .args(["--initial-cluster", "cnm-test=http://127.0.0.1:2380"])
            .args(["--log-level", "error", "--logger", "zap"])
            .args(self.v2.then_some("--enable-v2=true"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("etcd.log")).expect("etcd log"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting etcd (Debian package etcd-server): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = self.ns.run(|| crate::EtcdStore::connect(&url).is_ok()).unwrap_or(false);
            if up {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                panic!("etcd exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "etcd did not answer on {url} within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().ok();
            c.wait().ok();
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
