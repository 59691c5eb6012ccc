//! The `host` and `null` drivers, in a test host namespace (privileged).

use cnm_core::{Controller, EndpointConfig, ErrorKind, NetworkConfig, SandboxConfig};
use cnm_netns::testing::TestHost;
use cnm_netns::{LinkAdd, NetNs};

fn controller(host: &TestHost) -> Controller {
    Controller::builder().host_netns(host.ns.try_clone().unwrap()).run_dir(host.dir().join("run")).build().unwrap()
}

fn link_names(host: &TestHost, ns: &NetNs) -> Vec<(String, bool)> {
    host.ip_json(ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let up = l["flags"].as_array().unwrap().iter().any(|f| f == "UP");
            (l["ifname"].as_str().unwrap().to_string(), up)
        })
        .collect()
}

#[test]
fn null_sandbox_has_loopback_only_and_up() {
    let Some(host) = TestHost::new("null_sandbox_has_loopback_only") else { return };
    let ctl = controller(&host);
    ctl.create_network(NetworkConfig::new("none", "null")).unwrap();
    // No namespace given: the controller makes a named one under its run directory.
    let sb = ctl.create_sandbox(SandboxConfig { name: "c1".into(), ..Default::default() }).unwrap();
    assert!(sb.owns_netns && sb.netns.starts_with(host.dir()));
    let ns = NetNs::open(&sb.netns).unwrap();
    assert_eq!(link_names(&host, &ns), vec![("lo".to_string(), false)], "a fresh namespace has lo, down");

    let ep = ctl.connect("none", "c1", EndpointConfig::default()).unwrap();
    assert!(ep.ipv4.is_none() && ep.ipv6.is_none());
    assert_eq!(link_names(&host, &ns), vec![("lo".to_string(), true)]);
    assert!(host.ping(&ns, "127.0.0.1".parse().unwrap()));

    // A none-mode sandbox can be on no other network.
    ctl.create_network(NetworkConfig::new("h", "host")).unwrap();
    let e = ctl.connect("h", "c1", EndpointConfig::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden, "{e}");

    ctl.delete_sandbox("c1").unwrap();
    assert!(!sb.netns.exists(), "the namespace the controller made is gone with the sandbox");
    assert!(ctl.endpoints(None).unwrap().is_empty());
    ctl.delete_network("none").unwrap();
}

#[test]
fn host_sandbox_sees_the_host_namespace() {
    let Some(host) = TestHost::new("host_sandbox_sees_host") else { return };
    let ctl = controller(&host);
    ctl.create_network(NetworkConfig::new("host", "host")).unwrap();
    let bridge = host.name("br");
    host.handle.link_add(&LinkAdd::bridge(bridge.as_str())).unwrap();

    // The runtime passes the host namespace's path for a host-mode container.
    let sb = ctl
        .create_sandbox(SandboxConfig { name: "web".into(), netns: Some(host.ns.proc_path()), ..Default::default() })
        .unwrap();
    let ep = ctl.connect("host", "web", EndpointConfig::default()).unwrap();
    assert!(ep.ipv4.is_none() && ep.mac.is_none(), "no interface, no address");
    let seen = NetNs::open(&sb.netns).unwrap();
    assert!(link_names(&host, &seen).iter().any(|(n, _)| *n == bridge), "the sandbox sees the host's links");
    assert_eq!(link_names(&host, &host.ns).len(), 2, "joining created nothing in the host");

    // A host-mode sandbox joins no other network …
    ctl.create_network(NetworkConfig::new("none", "null")).unwrap();
    assert_eq!(ctl.connect("none", "web", EndpointConfig::default()).unwrap_err().kind(), ErrorKind::Forbidden);
    // … and a sandbox with a namespace of its own cannot be host-mode.
    let c = host.named_container("other").unwrap();
    ctl.create_sandbox(SandboxConfig {
        name: "other".into(),
        netns: c.ns.path().map(|p| p.to_path_buf()),
        ..Default::default()
    })
    .unwrap();
    let e = ctl.connect("host", "other", EndpointConfig::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden, "{e}");
    assert!(e.to_string().contains("not the host namespace"), "{e}");
    assert_eq!(ctl.endpoints(Some("host")).unwrap().len(), 1, "the refused connect left no endpoint");

    ctl.delete_sandbox("web").unwrap();
    ctl.delete_sandbox("other").unwrap();
    assert!(sb.netns.exists(), "the controller does not remove a namespace it did not make");
    ctl.delete_network("host").unwrap();
}

#[test]
fn reconcile_drops_sandboxes_whose_namespace_vanished_and_gc_removes_dead_ones() {
    let Some(host) = TestHost::new("reconcile_drops_vanished_sandboxes") else { return };
    let ctl = controller(&host);
    ctl.create_network(NetworkConfig::new("none", "null")).unwrap();
    for name in ["a", "b", "c"] {
        ctl.create_sandbox(SandboxConfig { name: name.into(), ..Default::default() }).unwrap();
        ctl.connect("none", name, EndpointConfig::default()).unwrap();
    }
    // The runtime (or a reboot) removed a's namespace behind the controller's back.
    let a = ctl.sandbox("a").unwrap();
    NetNs::remove_named(a.netns.parent().unwrap(), a.netns.file_name().unwrap().to_str().unwrap()).unwrap();
    let report = ctl.reconcile().unwrap();
    assert!(report.repairs.iter().any(|r| r.contains("dropped sandbox \"a\"")), "{report:?}");
    let names: Vec<String> = ctl.sandboxes().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["b", "c"]);
    assert_eq!(ctl.endpoints(Some("none")).unwrap().len(), 2);
    // A second reconcile finds nothing to do.
    assert_eq!(ctl.reconcile().unwrap().repairs, Vec::<String>::new());

    // The runtime says only "c" still exists.
    let removed = ctl.gc(&["c".to_string()].into_iter().collect()).unwrap();
    assert_eq!(removed, vec!["b"]);
    assert_eq!(ctl.sandboxes().unwrap().len(), 1);
    assert_eq!(ctl.endpoints(Some("none")).unwrap().len(), 1);
}
