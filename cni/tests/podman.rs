//! Podman 4.3 with its CNI backend running containers on cnm through
//! `cnm-cni`, inside a namespace the test creates: two containers with
//! published ports reach each other and are reached from outside with the
//! client's address kept; `rm -f` leaves nothing behind. The setup follows
//! `../shared/clients/podman-cni.sh`.

use std::time::{Duration, Instant};

use cnm_cni::testing::{plugin_dir, Podman};
use cnm_netns::testing::{RemoveDir, TestHost};
use serde_json::json;

mod common;

#[test]
fn podman_runs_containers_on_cnm() {
    let Some(host) = TestHost::new("cni_podman") else { return };
    let outside = host.outside().unwrap();
    // Podman's overlay storage wants a disk, not the test's tmpfs.
    let dir = std::env::temp_dir().join(format!("cnm-podman-{}-{}", std::process::id(), host.prefix()));
    let _remove = RemoveDir(dir.clone());
    let plugins = plugin_dir(&dir, &common::cnm_cni());
    let net = format!("cnm{}", host.prefix());
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": net,
        "plugins": [
            {"type": "cnm", "subnet": "10.97.20.0/24", "bridge": host.name("br"),
             "dataDir": dir.join("cnm"), "runDir": dir.join("cnm-run"),
             "capabilities": {"portMappings": true, "aliases": true}},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "1"}}
        ]
    });
    let podman = Podman::new(&host.ns, &dir, &plugins, &net, &conflist, host.prefix());
    podman.import_busybox();

    let serve = ["httpd", "-f", "-vv", "-p", "80", "-h", "/www"];
    for (name, port) in [("a", "8080:80"), ("b", "8081:80")] {
        let mut args = vec!["run", "-d", "--name", name, "--network", &net, "-p", port, "localhost/bb"];
        args.extend_from_slice(&serve);
        podman.ok(&args);
    }
    let ip = |c: &str| {
        let f = format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}");
        podman.ok(&["inspect", "-f", &f, c]).trim().to_string()
    };
    let (ip_a, ip_b) = (ip("a"), ip("b"));
    assert!(ip_a.starts_with("10.97.20.") && ip_b.starts_with("10.97.20.") && ip_a != ip_b, "{ip_a} {ip_b}");
    // The tuning plugin after cnm found the container's eth0.
    assert_eq!(podman.ok(&["exec", "a", "cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore"]).trim(), "1");

    // They reach each other, and are reached from outside.
    podman.ok(&["exec", "a", "ping", "-c", "1", "-W", "5", &ip_b]);
    podman.ok(&["exec", "b", "ping", "-c", "1", "-W", "5", &ip_a]);
    for port in ["8080", "8081"] {
        let url = format!("http://198.51.100.1:{port}/");
        // httpd forks into the background of its container; the first
        // request may come before it listens.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let page = outside.ns.exec("curl", ["-s", "--max-time", "5", &url]).unwrap_or_default();
            if page.trim() == "hello" {
                break;
            }
            assert!(Instant::now() < deadline, "{url} never answered: {page:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let logs = podman.run(&["logs", "a"]);
    let logs = String::from_utf8_lossy(&logs.stdout).to_string() + &String::from_utf8_lossy(&logs.stderr);
    assert!(logs.contains("198.51.100.2"), "the server saw the client's address: {logs}");

    // cnm has both, under the names Podman gave (K8S_POD_NAME, aliases).
    let ctl = common::controller_over(&host, &net, &dir.join("cnm"), &dir.join("cnm-run"));
    let eps = ctl.endpoints(Some(&net)).unwrap();
    assert_eq!(eps.len(), 2);
    assert!(eps.iter().any(|e| e.aliases.contains(&"a".to_string())), "{eps:?}");

    // rm -f: cnm's DEL; nothing of theirs is left.
    podman.ok(&["rm", "-f", "-t", "0", "a", "b"]);
    assert!(ctl.endpoints(Some(&net)).unwrap().is_empty());
    assert!(ctl.sandboxes().unwrap().is_empty());
    common::settle(&host);
    let links = host.exec(&host.ns, "ip", &["-o", "link", "show", "type", "veth"]);
    assert!(links.lines().all(|l| l.contains("uplink")), "veths left: {links}");
    assert!(!host.exec(&host.ns, "nft", &["list", "ruleset"]).contains("8080"));

    // A short-lived container: ADD and DEL within one `run --rm`.
    let out = podman.ok(&["run", "--rm", "--network", &net, "localhost/bb", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(out.contains("10.97.20."), "{out}");
    assert!(ctl.endpoints(Some(&net)).unwrap().is_empty());
}
