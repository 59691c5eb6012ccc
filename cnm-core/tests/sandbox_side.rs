//! cnm-core programs the sandbox side from a driver's `JoinInfo`, here for
//! the path a remote driver takes: the driver leaves one end of a veth pair
//! in the host namespace and describes it (source name, prefix, MTU,
//! gateway, a static route, a sysctl); cnm-core moves, renames and
//! configures it, hands the default route over when endpoints leave, moves
//! it back at leave, and a failure at any of its steps leaves nothing
//! behind. Checked with `ip`, `ping` and the namespace's own sysctls.

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use cnm_core::driver::{DriverContext, NetworkDriver};
use cnm_core::join::{JoinInfo, JoinRequest};
use cnm_core::testing::Faults;
use cnm_core::{
    Controller, Endpoint, EndpointConfig, Error, ErrorKind, MemStore, Network, NetworkConfig, SandboxConfig, Store,
};
use cnm_netns::testing::TestHost;
use cnm_netns::{AddrFlags, Handle, LinkAdd, NetNs, VethPeer};
use common::TestIpam;

/// A driver that leaves the sandbox end in the host namespace, as Docker's
/// remote drivers do: `hv…` (host end, with the gateway address) and
/// `tmp…` (the end to be moved).
struct HostVeth {
    /// Whether to ask for a sysctl that is not the interface's.
    bad_sysctl: AtomicBool,
    joins: AtomicUsize,
}

impl NetworkDriver for HostVeth {
    fn name(&self) -> &str {
        "hostveth"
    }
    fn create_network(&self, _: &DriverContext<'_>, _: &mut Network) -> cnm_core::Result<()> {
        Ok(())
    }
    fn delete_network(&self, _: &DriverContext<'_>, _: &Network) -> cnm_core::Result<()> {
        Ok(())
    }
    fn create_endpoint(&self, _: &DriverContext<'_>, _: &Network, ep: &mut Endpoint) -> cnm_core::Result<()> {
        let v4 = ep.ipv4.and_then(|a| match a.addr() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        });
        ep.mac = Some(cnm_netns::MacAddr::for_endpoint(v4)?);
        Ok(())
    }
    fn join(
        &self,
        ctx: &DriverContext<'_>,
        net: &Network,
        ep: &mut Endpoint,
        _: &JoinRequest<'_>,
    ) -> cnm_core::Result<JoinInfo> {
        self.joins.fetch_add(1, Ordering::SeqCst);
        let host = Handle::open(ctx.host).map_err(Error::from_netns("open host"))?;
        let (outer, inner) = (format!("hv{}", &ep.id.as_str()[..7]), format!("tmp{}", &ep.id.as_str()[..7]));
        let link = host
            .link_add(&LinkAdd::veth(outer.as_str(), VethPeer::new(inner.as_str())).up())
            .map_err(Error::from_netns("veth"))?;
        let gw = net.gateway_v4().expect("an IPv4 network");
        if let Err(e) = host.addr_add(link.index, gw, AddrFlags::empty()) {
            let _ = host.link_del(link.index);
            return Err(Error::from_netns("gateway")(e));
        }
        let prefix = net.options.get("prefix").cloned().unwrap_or_else(|| "eth".into());
        let key = if self.bad_sysctl.load(Ordering::SeqCst) {
            "net.ipv4.ip_forward"
        } else {
            "net.ipv4.conf.IFNAME.rp_filter"
        };
        Ok(JoinInfo::in_host(ep, inner, prefix.clone())
            .mtu(Some(1400))
            .gateway(Some(gw.addr()))
            .route(if prefix == "eth" { "192.0.2.0/24" } else { "198.51.100.0/24" }.parse().unwrap(), Some(gw.addr()))
            .sysctl(key, "2"))
    }
    fn leave(&self, ctx: &DriverContext<'_>, _: &Network, ep: &Endpoint, _: Option<&NetNs>) -> cnm_core::Result<()> {
        // The moved end is back in the host namespace: deleting the host
        // end takes both.
        let host = Handle::open(ctx.host).map_err(Error::from_netns("open host"))?;
        match host.link_del(format!("hv{}", &ep.id.as_str()[..7]).as_str()) {
            Err(e) if e.kind() != cnm_netns::ErrorKind::NotFound => Err(Error::from_netns("delete veth")(e)),
            _ => Ok(()),
        }
    }
}

struct Rig {
    host: TestHost,
    ctl: Controller,
    store: Arc<dyn Store>,
    faults: Arc<Faults>,
    driver: Arc<HostVeth>,
}

fn rig(test: &str) -> Option<Rig> {
    let host = TestHost::new(test)?;
    let faults = Arc::new(Faults::default());
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let driver = Arc::new(HostVeth { bad_sysctl: AtomicBool::new(false), joins: AtomicUsize::new(0) });
    let ctl = Controller::builder()
        .host_netns(host.ns.try_clone().unwrap())
        .run_dir(host.dir().join("run"))
        .sandbox_files(host.dir().join("files"))
        .store(store.clone())
        .ipam(Arc::new(TestIpam { store: store.clone(), faults: Arc::new(Faults::default()) }))
        .driver(driver.clone())
        .fault_hook(faults.hook())
        .build()
        .unwrap();
    Some(Rig { host, ctl, store, faults, driver })
}

/// Links, addresses and routes of the host and the sandbox, the sandbox's
/// hosts file, and the store.
fn snapshot(r: &Rig, sandbox: &NetNs) -> String {
    let mut out = r.host.kernel_state(&[&r.host.ns, sandbox]);
    out += &std::fs::read_to_string(r.host.dir().join("files/c1/hosts")).unwrap_or_default();
    for e in r.store.list("").unwrap() {
        out += &format!("{} {}\n", e.key, String::from_utf8_lossy(&e.value));
    }
    out
}

fn sandbox(r: &Rig) -> NetNs {
    let sb = r.ctl.create_sandbox(SandboxConfig { name: "c1".into(), ..Default::default() }).unwrap();
    NetNs::open(&sb.netns).unwrap()
}

fn link_json(r: &Rig, ns: &NetNs, name: &str) -> serde_json::Value {
    r.host.ip_json(ns, &["-d", "addr", "show", "dev", name])[0].clone()
}

#[test]
fn an_interface_left_in_the_host_namespace_is_moved_renamed_and_programmed() {
    let Some(r) = rig("sandbox_side_in_host") else { return };
    r.ctl.create_network(NetworkConfig::new("a", "hostveth").subnet("10.61.0.0/24")).unwrap();
    let mut other = NetworkConfig::new("b", "hostveth").subnet("10.62.0.0/24");
    other.options.insert("prefix".into(), "ext".into());
    r.ctl.create_network(other).unwrap();
    let ns = sandbox(&r);
    let ea = r.ctl.connect("a", "c1", EndpointConfig::default()).unwrap();
    let eb = r.ctl.connect("b", "c1", EndpointConfig::default()).unwrap();
    assert_eq!((ea.ifname.as_deref(), eb.ifname.as_deref()), (Some("eth0"), Some("ext0")));

    // Named, with the MAC, MTU and address asked for.
    let eth0 = link_json(&r, &ns, "eth0");
    assert_eq!(eth0["mtu"], 1400);
    assert_eq!(eth0["address"], ea.mac.unwrap().to_string());
    assert!(eth0["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{eth0}");
    let addrs: Vec<&str> = eth0["addr_info"].as_array().unwrap().iter().filter_map(|a| a["local"].as_str()).collect();
    assert_eq!(addrs, [ea.ipv4.unwrap().addr().to_string()], "no IPv6 link-local on an IPv4-only endpoint");
    assert!(r.host.ip_json(&ns, &["link", "show", "dev", "ext0"])[0]["ifname"] == "ext0");
    // The source names are gone from the host; the host ends stay.
    let host_links = r.host.exec(&r.host.ns, "ip", &["-br", "link"]);
    assert!(!host_links.contains("tmp"), "{host_links}");
    // Routes: the default through the first endpoint only, the static
    // route through each.
    let routes = r.host.exec(&ns, "ip", &["-4", "route"]);
    assert!(routes.contains("default via 10.61.0.1 dev eth0"), "{routes}");
    assert!(!routes.contains("default via 10.62.0.1"), "{routes}");
    assert!(routes.contains("192.0.2.0/24 via 10.61.0.1 dev eth0"), "{routes}");
    assert!(routes.contains("198.51.100.0/24 via 10.62.0.1 dev ext0"), "{routes}");
    // The per-interface sysctl, and the link works: the gateway answers.
    assert_eq!(ns.sysctl_get("net.ipv4.conf.eth0.rp_filter").unwrap().trim(), "2");
    assert!(r.host.ping(&ns, "10.61.0.1".parse::<IpAddr>().unwrap()));
    // The hosts file lists both addresses.
    let hosts = std::fs::read_to_string(r.host.dir().join("files/c1/hosts")).unwrap();
    for ep in [&ea, &eb] {
        assert!(hosts.contains(&format!("{}\tc1", ep.ipv4.unwrap().addr())), "{hosts}");
    }

    // The default route moves to the next endpoint when its holder leaves;
    // the moved interface goes back to the host and its driver deletes it.
    r.ctl.disconnect("a", "c1").unwrap();
    let routes = r.host.exec(&ns, "ip", &["-4", "route"]);
    assert!(routes.contains("default via 10.62.0.1 dev ext0"), "{routes}");
    assert!(r.ctl.endpoint("b", eb.id.as_str()).unwrap().gateway);
    let hosts = std::fs::read_to_string(r.host.dir().join("files/c1/hosts")).unwrap();
    assert!(!hosts.contains(&ea.ipv4.unwrap().addr().to_string()), "{hosts}");
    r.ctl.disconnect("b", "c1").unwrap();
    assert_eq!(r.host.exec(&ns, "ip", &["-br", "link"]).lines().count(), 1, "only lo is left");
    let host_links = r.host.exec(&r.host.ns, "ip", &["-br", "link"]);
    assert!(!host_links.contains("hv") && !host_links.contains("tmp"), "{host_links}");
}

#[test]
fn a_failure_at_every_step_of_the_sandbox_side_leaves_nothing() {
    let Some(r) = rig("sandbox_side_faults") else { return };
    r.ctl.create_network(NetworkConfig::new("a", "hostveth").subnet("10.63.0.0/24")).unwrap();
    let ns = sandbox(&r);
    // Warm up what stays by design (the sandbox's loopback up).
    r.ctl.connect("a", "c1", EndpointConfig::default()).unwrap();
    r.ctl.disconnect("a", "c1").unwrap();
    let before = snapshot(&r, &ns);
    let mut steps = 0;
    for k in 1..40 {
        r.faults.arm(k);
        match r.ctl.connect("a", "c1", EndpointConfig::default()) {
            Ok(_) => {
                r.faults.disarm();
                steps = k - 1;
                r.ctl.disconnect("a", "c1").unwrap();
                break;
            }
            Err(e) => {
                assert!(e.to_string().contains("injected failure"), "k={k}: {e}");
                assert_eq!(snapshot(&r, &ns), before, "a failure at step {k} ({e}) left something");
            }
        }
    }
    // open, loopback, host namespace, move, rename, MAC, MTU, no IPv6, sysctl,
    // up, address, route, default route, hosts file.
    assert!(steps >= 14, "only {steps} steps failed in turn");
    assert_eq!(snapshot(&r, &ns), before);
}

#[test]
fn a_description_that_asks_for_too_much_is_refused_and_leaves_nothing() {
    let Some(r) = rig("sandbox_side_bad_info") else { return };
    r.ctl.create_network(NetworkConfig::new("a", "hostveth").subnet("10.64.0.0/24")).unwrap();
    let ns = sandbox(&r);
    r.ctl.connect("a", "c1", EndpointConfig::default()).unwrap();
    r.ctl.disconnect("a", "c1").unwrap();
    let before = snapshot(&r, &ns);
    r.driver.bad_sysctl.store(true, Ordering::SeqCst);
    let e = r.ctl.connect("a", "c1", EndpointConfig::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidParameter, "{e}");
    assert!(e.to_string().contains("net.ipv4.ip_forward"), "{e}");
    assert!(r.driver.joins.load(Ordering::SeqCst) >= 2);
    assert_eq!(snapshot(&r, &ns), before);
}
