//! A failure at every step of an overlay join's sandbox side (cnm-core
//! programs it from the overlay driver's `JoinInfo`) leaves nothing behind:
//! no link, address or route in the host, the sandbox or an overlay
//! namespace, no record in the store, no address lease, no hosts-file line.

use std::sync::Arc;
use std::time::Duration;

use cnm_core::testing::Faults;
use cnm_core::{Controller, EndpointConfig, MemStore, NetworkConfig, SandboxConfig, Store};
use cnm_ipam::Ipam;
use cnm_netns::testing::TestHost;
use cnm_netns::{AddrFlags, LinkAdd, NetNs};
use cnm_vxlan::overlay::{Agent, AgentOptions, OverlayConfig, OverlayDriver};

/// Links, addresses and routes of `nss`, the overlay namespaces, the hosts
/// file and the whole store.
fn snapshot(host: &TestHost, nss: &[&NetNs], store: &dyn Store) -> String {
    let mut out = host.kernel_state(nss);
    let overlay: Vec<String> = std::fs::read_dir(host.dir().join("overlay"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ov-"))
        .collect();
    out += &format!("overlay namespaces: {overlay:?}\n");
    out += &std::fs::read_to_string(host.dir().join("files/c1/hosts")).unwrap_or_default();
    for e in store.list("").unwrap() {
        out += &format!("{} {}\n", e.key, String::from_utf8_lossy(&e.value));
    }
    out
}

#[test]
fn an_overlay_join_fails_cleanly_at_every_step_of_the_sandbox_side() {
    let Some(host) = TestHost::new("overlay_fault_every_step") else { return };
    // The underlay: an address the VTEP advertises.
    let ul = host.handle.link_add(&LinkAdd::bridge("ul0").up()).unwrap().index;
    host.handle.addr_add(ul, "192.0.2.1/24".parse().unwrap(), AddrFlags::empty()).unwrap();
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let cfg = OverlayConfig::new("h1", "192.0.2.1".parse().unwrap(), host.dir().join("overlay"));
    let driver = Arc::new(OverlayDriver::new(cfg, store.clone()).unwrap());
    let opts = AgentOptions { ttl: Duration::from_secs(600), ..Default::default() };
    Agent::new(driver.clone(), opts).register().unwrap();
    let faults = Arc::new(Faults::default());
    let ctl = Controller::builder()
        .host_netns(host.ns.try_clone().unwrap())
        .run_dir(host.dir().join("run"))
        .sandbox_files(host.dir().join("files"))
        .store(store.clone())
        .ipam(Arc::new(Ipam::new(store.clone())))
        .driver(driver)
        .fault_hook(faults.hook())
        .build()
        .unwrap();
    ctl.create_network(NetworkConfig::new("ov", "overlay").subnet("10.70.0.0/24")).unwrap();
    let sb = ctl.create_sandbox(SandboxConfig { name: "c1".into(), ..Default::default() }).unwrap();
    let ns = NetNs::open(&sb.netns).unwrap();
    // Warm up what stays by design (the sandbox's loopback up).
    ctl.connect("ov", "c1", EndpointConfig::default()).unwrap();
    ctl.disconnect("ov", "c1").unwrap();
    let before = snapshot(&host, &[&host.ns, &ns], &*store);

    let mut steps = 0;
    for k in 1..40 {
        faults.arm(k);
        match ctl.connect("ov", "c1", EndpointConfig::default()) {
            Ok(ep) => {
                faults.arm(0);
                steps = k - 1;
                // The join worked: the interface is programmed as described.
                let routes = host.exec(&ns, "ip", &["-4", "route"]);
                assert!(routes.contains("default via 10.70.0.1 dev eth0"), "{routes}");
                assert_eq!(
                    host.ip_json(&ns, &["link", "show", "dev", "eth0"])[0]["address"],
                    ep.mac.unwrap().to_string()
                );
                ctl.disconnect("ov", "c1").unwrap();
                break;
            }
            Err(e) => {
                assert!(e.to_string().contains("injected failure"), "k={k}: {e}");
                let now = snapshot(&host, &[&host.ns, &ns], &*store);
                assert_eq!(now, before, "a failure at step {k} ({e}) left something");
            }
        }
    }
    // open, loopback, no IPv6, up, address, default route, hosts file.
    assert!(steps >= 7, "only {steps} steps failed in turn");
    assert_eq!(snapshot(&host, &[&host.ns, &ns], &*store), before);
}
