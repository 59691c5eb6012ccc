//! dockerd (Debian's docker.io, 20.10) using `cnm plugin` as its network
//! and IPAM driver, inside a namespace the test creates: containers on a
//! cnm network talk, a published port keeps the client's address, connect
//! and disconnect work on a running container, and the networks survive a
//! restart of dockerd and of the plugin. Everything is removed at the end.
//! The setup follows `../shared/clients/docker-remote.sh`.

use std::path::Path;
use std::time::{Duration, Instant};

use cnm_core::Store;
use cnm_netns::testing::{TestHost, TestNs};
use cnm_netns::LinkAdd;
use cnm_remote::testing::{import_busybox, Docker, DockerCluster, RemoveDir};
use cnm_store_etcd::testing::EtcdServer;
use cnm_store_etcd::EtcdStore;

mod common;
use common::{cnm_ok, underlay_ns, PluginProcess};

/// Removes a file at the end, and its directory if that is left empty.
struct RemoveFile(std::path::PathBuf);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = self.0.parent().map(std::fs::remove_dir);
    }
}

/// `docker run -d --stop-timeout 1 --name NAME ARGS` (busybox as PID 1
/// ignores SIGTERM: without the short timeout every stop waits 10 s).
fn run_detached(docker: &Docker, name: &str, args: &[&str]) {
    let mut all = vec!["run", "-d", "--stop-timeout", "1", "--name", name];
    all.extend_from_slice(args);
    docker.ok(&all);
}

/// A container's address on a network.
fn address(docker: &Docker, container: &str, network: &str) -> String {
    let f = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    docker.ok(&["inspect", "-f", &f, container]).trim().to_string()
}

#[test]
fn dockerd_runs_containers_on_cnm_networks() {
    let Some(host) = TestHost::new("docker_plugin") else { return };
    let dir = std::env::temp_dir().join(format!("cnm-docker-{}-{}", std::process::id(), host.prefix()));
    let _remove = RemoveDir(dir.clone());
    let name = format!("cnm{}", host.prefix());
    // dockerd finds the plugin through a spec file naming its socket.
    let socket = dir.join("plugin.sock");
    let spec = Path::new("/etc/docker/plugins").join(format!("{name}.spec"));
    std::fs::create_dir_all(spec.parent().unwrap()).unwrap();
    std::fs::write(&spec, format!("unix://{}\n", socket.display())).unwrap();
    let _spec = RemoveFile(spec);
    let mut plugin = Some(PluginProcess::start(&host, &dir, &name, Some(&socket)));
    let mut docker = Docker::start(&host.ns, &dir.join("docker"), host.prefix());
    import_busybox(&docker, &dir);
    let outside = host.outside().unwrap();

    // A cnm network; dockerd's own IPAM gives the addresses.
    let id = docker.ok(&["network", "create", "-d", &name, "--subnet", "10.93.70.0/24", "web"]);
    let cnm_name = cnm_remote::docker_name(id.trim());
    assert!(cnm_ok(&host, &dir, &["network", "ls"]).contains(&cnm_name), "cnm sees dockerd's network");
    let inspect: serde_json::Value = serde_json::from_str(&docker.ok(&["network", "inspect", "web"])).unwrap();
    assert_eq!(inspect[0]["Driver"], name.as_str());

    // Two containers talk; a published port keeps the client's address.
    run_detached(&docker, "ca", &["--network", "web", "bb", "sleep", "600"]);
    let serve = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -vv -p 80 -h /www";
    run_detached(&docker, "cb", &["--network", "web", "-p", "8080:80", "bb", "sh", "-c", serve]);
    let (ip_a, ip_b) = (address(&docker, "ca", "web"), address(&docker, "cb", "web"));
    assert!(ip_a.starts_with("10.93.70.") && ip_b.starts_with("10.93.70."), "{ip_a} {ip_b}");
    docker.ok(&["exec", "ca", "ping", "-c", "1", "-W", "5", &ip_b]);
    docker.ok(&["exec", "cb", "ping", "-c", "1", "-W", "5", "10.93.70.1"]);
    let page = host.exec(&outside.ns, "curl", &["-s", "--max-time", "10", "http://198.51.100.1:8080/"]);
    assert_eq!(page.trim(), "hello");
    let logs = docker.run(&["logs", "cb"]);
    let logs = String::from_utf8_lossy(&logs.stderr).to_string() + &String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains("198.51.100.2]:") || logs.contains("198.51.100.2:"),
        "the server sees the client's address: {logs}"
    );

    // A second network from cnm's IPAM, connected to a running container
    // and disconnected again.
    docker.ok(&["network", "create", "-d", &name, "--ipam-driver", &name, "back"]);
    docker.ok(&["network", "connect", "back", "ca"]);
    let ip_back = address(&docker, "ca", "back");
    assert!(!ip_back.is_empty(), "an address from cnm's IPAM");
    let links = docker.ok(&["exec", "ca", "ip", "-o", "-4", "addr"]);
    assert!(links.contains(&format!("{ip_back}/")), "{links}");
    docker.ok(&["network", "disconnect", "back", "ca"]);
    assert!(!docker.ok(&["exec", "ca", "ip", "-o", "-4", "addr"]).contains(&ip_back));
    docker.ok(&["exec", "ca", "ping", "-c", "1", "-W", "5", &ip_b]);

    // Docker's own bridge driver with cnm's IPAM.
    docker.ok(&["network", "create", "--ipam-driver", &name, "plain"]);
    let out = docker.ok(&["run", "--rm", "--network", "plain", "bb", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(out.contains("inet "), "{out}");

    // dockerd restarts; a container with a restart policy comes back on
    // the cnm network, and talks.
    run_detached(&docker, "cc", &["--restart", "always", "--network", "web", "bb", "sleep", "600"]);
    docker.stop();
    docker.launch(&host.ns);
    let deadline = Instant::now() + Duration::from_secs(30);
    while docker.ok(&["inspect", "-f", "{{.State.Running}}", "cc"]).trim() != "true" {
        assert!(Instant::now() < deadline, "cc never came back: {}", docker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    docker.ok(&["exec", "cc", "ping", "-c", "1", "-W", "5", "10.93.70.1"]);

    // The plugin restarts; what it made keeps working, new containers too.
    plugin.take().unwrap().stop();
    plugin = Some(PluginProcess::start(&host, &dir, &name, Some(&socket)));
    docker.ok(&["exec", "cc", "ping", "-c", "1", "-W", "5", "10.93.70.1"]);
    docker.ok(&["run", "--rm", "--network", "web", "bb", "ping", "-c", "1", "-W", "5", "10.93.70.1"]);

    // Everything goes; cnm keeps nothing of dockerd's.
    docker.ok(&["rm", "-f", "ca", "cb", "cc"]);
    docker.ok(&["network", "rm", "web", "back", "plain"]);
    assert!(!cnm_ok(&host, &dir, &["network", "ls"]).contains("docker-"));
    assert!(!cnm_ok(&host, &dir, &["sandbox", "ls"]).contains("docker-"), "no external sandbox is left");
    let links = host.exec(&host.ns, "ip", &["-o", "link", "show"]);
    assert!(!links.contains("veth"), "no veth is left: {links}");
    docker.stop();
    plugin.take().unwrap().stop();
}

const ETCD: &str = "192.0.2.100";

/// One host of a dockerd cluster: dockerd and `cnm plugin` in its
/// namespace, both on the shared etcd. Fields drop in order: dockerd (it
/// leaves its endpoints through the plugin), the plugin, the namespace.
struct ClusterHost {
    docker: Docker,
    _plugin: PluginProcess,
    n: usize,
    dir: std::path::PathBuf,
    ns: TestNs,
}

impl ClusterHost {
    fn start(tb: &TestHost, n: usize, name: &str) -> ClusterHost {
        let ns = underlay_ns(tb, &format!("h{n}"), &format!("192.0.2.{n}"));
        let dir = tb.dir().join(format!("h{n}"));
        let socket = dir.join("plugin.sock");
        // This host's dockerd finds this host's plugin by the shared name.
        let etc = dir.join("etc");
        std::fs::create_dir_all(etc.join("plugins")).unwrap();
        std::fs::write(etc.join("plugins").join(format!("{name}.spec")), format!("unix://{}\n", socket.display()))
            .unwrap();
        let mut cmd = ClusterHost::cnm(&ns, &dir, n);
        cmd.args(["plugin", "--name", name, "--lease-ttl", "3", "--socket"]).arg(&socket);
        let plugin = PluginProcess::spawn(cmd, socket);
        let cluster = DockerCluster {
            store: format!("etcd://{ETCD}:2379"),
            advertise: format!("192.0.2.{n}:2376"),
            hostname: format!("{}-h{n}", tb.prefix()),
            etc,
        };
        let docker = Docker::start_in_cluster(&ns.ns, &dir.join("docker"), &format!("{}-h{n}", tb.prefix()), cluster);
        ClusterHost { docker, _plugin: plugin, n, dir, ns }
    }

    /// `cnm` on this host: its state, the shared store, its overlay address.
    fn cnm(ns: &TestNs, dir: &Path, n: usize) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cnm"));
        c.arg("--state-dir").arg(dir.join("state")).arg("--run-dir").arg(dir.join("run"));
        c.arg("--host-netns").arg(ns.ns.proc_path());
        c.args(["--store", &format!("etcd://{ETCD}:2379"), "--host-name", &format!("h{n}")]);
        c.args(["--advertise-addr", &format!("192.0.2.{n}")]);
        c
    }

    fn cnm_ok(&self, args: &[&str]) -> String {
        let o = ClusterHost::cnm(&self.ns, &self.dir, self.n).args(args).output().unwrap();
        assert!(o.status.success(), "h{}: cnm {args:?}: {}", self.n, String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }
}

/// Two hosts of a classic Docker cluster (dockerd 20.10 with
/// `--cluster-store` on etcd's v2 API), each with its own `cnm plugin` on
/// the same etcd (v3): the plugin's networks are of global scope, so both
/// dockerds see one network; containers on the two hosts talk through
/// cnm's VXLAN overlay; cnm's IPAM gives addresses from a global space
/// both hosts share; and nothing is left in etcd at the end.
#[test]
fn dockerd_cluster_runs_containers_on_a_cnm_overlay() {
    let Some(tb) = TestHost::new("docker_overlay") else { return };
    tb.handle.link_add(&LinkAdd::bridge("ul0").up()).unwrap();
    let etcd_ns = underlay_ns(&tb, "etcd", ETCD);
    let etcd = EtcdServer::start_with_v2(&etcd_ns.ns, ETCD.parse().unwrap(), tb.dir().join("etcd"));
    let name = format!("cnm{}", tb.prefix());
    let hosts: Vec<ClusterHost> = (1..=2).map(|n| ClusterHost::start(&tb, n, &name)).collect();
    let (d1, d2) = (&hosts[0].docker, &hosts[1].docker);
    import_busybox(d1, &hosts[0].dir);
    import_busybox(d2, &hosts[1].dir);

    // Made on host 1, a global network both dockerds know.
    let id = d1.ok(&["network", "create", "-d", &name, "--subnet", "10.93.80.0/24", "ov"]);
    assert_eq!(d2.ok(&["network", "inspect", "-f", "{{.Scope}} {{.Driver}}", "ov"]).trim(), format!("global {name}"));
    let cnm_name = cnm_remote::docker_name(id.trim());

    // A container on each host; they talk across the underlay.
    run_detached(d1, "ca", &["--network", "ov", "bb", "sleep", "600"]);
    run_detached(d2, "cb", &["--network", "ov", "bb", "sleep", "600"]);
    let (ip_a, ip_b) = (address(d1, "ca", "ov"), address(d2, "cb", "ov"));
    assert!(ip_a.starts_with("10.93.80.") && ip_b.starts_with("10.93.80.") && ip_a != ip_b, "{ip_a} {ip_b}");
    d1.ok(&["exec", "ca", "ping", "-c", "1", "-W", "5", &ip_b]);
    d2.ok(&["exec", "cb", "ping", "-c", "1", "-W", "5", &ip_a]);
    // cnm on host 2 sees the overlay host 1's dockerd made.
    let ls = hosts[1].cnm_ok(&["network", "ls"]);
    assert!(ls.lines().any(|l| l.contains(&cnm_name) && l.contains("overlay") && l.contains("global")), "{ls}");

    // cnm's IPAM, global space: one pool, distinct addresses on both hosts.
    d2.ok(&["network", "create", "-d", &name, "--ipam-driver", &name, "ov2"]);
    d1.ok(&["network", "connect", "ov2", "ca"]);
    d2.ok(&["network", "connect", "ov2", "cb"]);
    let (ip_a2, ip_b2) = (address(d1, "ca", "ov2"), address(d2, "cb", "ov2"));
    assert!(!ip_a2.is_empty() && ip_a2 != ip_b2, "{ip_a2} {ip_b2}");
    d2.ok(&["exec", "cb", "ping", "-c", "1", "-W", "5", &ip_a2]);

    // Everything goes, from either host; etcd keeps only the hosts' leases.
    d1.ok(&["rm", "-f", "ca"]);
    d2.ok(&["rm", "-f", "cb"]);
    d1.ok(&["network", "rm", "ov", "ov2"]);
    for h in &hosts {
        assert!(!h.cnm_ok(&["network", "ls"]).contains("docker-"), "h{}", h.n);
    }
    let store = EtcdStore::connect_in(&etcd.url, Some(&etcd_ns.ns)).unwrap();
    let left: Vec<String> =
        store.list_keys("").unwrap().into_iter().filter(|k| !k.contains("overlay/hosts/")).collect();
    assert!(left.is_empty(), "left in etcd: {left:?}");
}
