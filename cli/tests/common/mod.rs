//! Helpers shared by the `cnm` tool's test files.

#![allow(dead_code)]

pub mod cluster;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use cnm_netns::testing::{TestHost, TestNs};

/// `cnm` with the state and run directories under `state`, working in the
/// test host's namespace.
pub fn cnm_command(host: &TestHost, state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cnm"));
    c.arg("--state-dir").arg(state.join("state")).arg("--run-dir").arg(state.join("run"));
    c.arg("--host-netns").arg(host.ns.proc_path());
    c
}

/// `cnm ARGS` (see [`cnm_command`]), which must succeed; its output.
pub fn cnm_ok(host: &TestHost, state: &Path, args: &[&str]) -> String {
    let o = cnm_command(host, state).args(args).output().unwrap();
    assert!(o.status.success(), "cnm {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// A namespace of the test host on its underlay bridge `ul0`, with
/// address `ip`/24 on its `eth0`.
pub fn underlay_ns(tb: &TestHost, name: &str, ip: &str) -> TestNs {
    tb.on_bridge("ul0", name, ip).unwrap()
}

/// Waits until something listens on TCP `port` in `ns` (`ss`): the
/// readiness of a server just started. The deadline (60 s, for a loaded
/// machine) only turns a server that never starts into a clear failure.
pub fn wait_listening(ns: &cnm_netns::NetNs, port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let filter = format!("sport = :{port}");
    while ns.exec("ss", ["-Htln", filter.as_str()]).unwrap_or_default().trim().is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Every file and directory below `d`, recursively (none if `d` is gone).
pub fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

/// `cnm plugin` in the background, against the test's state and host
/// namespace.
pub struct PluginProcess {
    child: Child,
    socket: PathBuf,
}

impl PluginProcess {
    /// `cnm plugin --name NAME` on its default socket, or on `socket`.
    pub fn start(host: &TestHost, state: &Path, name: &str, socket: Option<&Path>) -> PluginProcess {
        let mut cmd = cnm_command(host, state);
        cmd.args(["plugin", "--name", name]);
        if let Some(s) = socket {
            cmd.arg("--socket").arg(s);
        }
        let socket = socket.map(Path::to_path_buf).unwrap_or_else(|| cnm_remote::default_socket(name));
        PluginProcess::spawn(cmd, socket)
    }

    /// `cmd` (a `cnm … plugin` command serving on `socket`), once it says
    /// where it listens.
    pub fn spawn(mut cmd: Command, socket: PathBuf) -> PluginProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting cnm plugin");
        // Ready when it says where it listens; the rest of what it says
        // is read to the end, so it never writes to a closed pipe.
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut said = String::new();
        loop {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                panic!("cnm plugin exited before it listened; it said {said:?}");
            }
            said.push_str(&line);
            if line.starts_with("cnm plugin:") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        PluginProcess { child, socket }
    }

    /// SIGTERM; it must exit 0 and take its socket with it.
    pub fn stop(mut self) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "cnm plugin exited with {status}");
        assert!(!self.socket.exists(), "the socket went with the plugin");
    }
}

impl Drop for PluginProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}
