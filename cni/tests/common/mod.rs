//! Running `cnm-cni` as a runtime does: the configuration on stdin, the
//! `CNI_*` variables, inside the test host's namespace.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cnm_netns::testing::{Background, TestHost, TestNs};
use serde_json::{json, Value};

/// What one call printed, and whether it succeeded.
#[derive(Debug)]
pub struct Answer {
    /// Exit status 0.
    pub ok: bool,
    /// Its JSON (Null when it printed nothing).
    pub json: Value,
}

/// One call of `plugin` (a path) with `conf` on stdin.
pub fn call_plugin(host: &TestHost, plugin: &Path, env: &[(&str, &str)], conf: &Value) -> Answer {
    call_raw(host, plugin, env, conf.to_string().as_bytes())
}

/// [`call_plugin`] with any bytes on stdin.
pub fn call_raw(host: &TestHost, plugin: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Answer {
    let mut cmd = host.ns.command(plugin);
    cmd.env("CNI_PATH", "/usr/lib/cni");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let json = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} printed no JSON ({e}): {text}", plugin.display()))
    };
    Answer { ok: out.status.success(), json }
}

/// The plugin under test.
pub fn cnm_cni() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cnm-cni"))
}

/// `COMMAND` of `cnm-cni` for container `id` with interface `ifname` in
/// `netns` (empty: unset).
pub fn call(host: &TestHost, command: &str, id: &str, netns: &str, ifname: &str, conf: &Value) -> Answer {
    let env = [("CNI_COMMAND", command), ("CNI_CONTAINERID", id), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname)];
    call_plugin(host, &cnm_cni(), &env, conf)
}

/// [`call`], which must succeed; what it printed.
pub fn ok(host: &TestHost, command: &str, id: &str, netns: &str, ifname: &str, conf: &Value) -> Value {
    let a = call(host, command, id, netns, ifname, conf);
    assert!(a.ok, "{command} {id} failed: {}", a.json);
    a.json
}

/// A bridge network's configuration with cnm's state under the test's
/// directory.
pub fn bridge_conf(host: &TestHost, version: &str, name: &str, subnet: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": name,
        "type": "cnm",
        "subnet": subnet,
        "bridge": host.name("br"),
        "dataDir": host.dir().join("data"),
        "runDir": host.dir().join("run"),
    })
}

/// A named namespace for a container; its path.
pub fn container(host: &TestHost, name: &str) -> (TestNs, String) {
    let ns = host.named_container(name).unwrap();
    let path = host.dir().join(name).display().to_string();
    (ns, path)
}

/// A TCP server in `ns` on `port` that answers each connection with the
/// client's address, once it listens.
pub fn echo_server(host: &TestHost, ns: &TestNs, port: u16) -> Background {
    let bg =
        host.spawn(&ns.ns, "socat", &[&format!("TCP-LISTEN:{port},fork,reuseaddr"), "SYSTEM:echo $SOCAT_PEERADDR"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ns.ns.exec("ss", ["-lnt"]).unwrap_or_default().contains(&format!(":{port} ")) {
        assert!(std::time::Instant::now() < deadline, "socat never listened on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    bg
}

/// What the echo server at `addr` says to a client in `ns`.
pub fn ask(ns: &TestNs, addr: &str) -> String {
    ns.ns
        .exec("socat", ["-T", "5", "-", &format!("TCP:{addr},connect-timeout=5")])
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Waits until no veth is parked for deletion in the host (a `DEL` leaves
/// its veth to a detached `cnm-cni` that deletes it right after).
pub fn settle(host: &TestHost) {
    let group = cnm_bridge::REAPER_GROUP.to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        // `ip -j` prints an empty object for every link outside the group.
        let parked = host.ip_json(&host.ns, &["link", "show", "group", &group]);
        if !parked.as_array().is_some_and(|a| a.iter().any(|l| l.get("ifname").is_some())) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "parked veths were never deleted: {parked}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The host's veths, once the parked ones are deleted.
pub fn veths(host: &TestHost) -> Vec<String> {
    settle(host);
    let links = host.ip_json(&host.ns, &["link", "show", "type", "veth"]);
    links.as_array().unwrap().iter().map(|l| l["ifname"].as_str().unwrap().to_string()).collect()
}

/// cnm's controller over the state a runtime's calls left in `data` and
/// `run` (what `cnm --state-dir DATA --run-dir RUN` sees).
pub fn controller_over(host: &TestHost, network: &str, data: &Path, run: &Path) -> cnm_core::Controller {
    let conf = cnm_cni::NetConf {
        cni_version: "1.0.0".into(),
        name: network.to_string(),
        data_dir: Some(data.to_path_buf()),
        run_dir: Some(run.to_path_buf()),
        ..Default::default()
    };
    cnm_cni::stack::controller(&conf, &host.ns).unwrap()
}
