//! cnm using Docker network plugins through `RemoteDriver`: cnm's own plugin
//! server (a second controller behind the socket), and a small plugin
//! written here that does things differently (its own link names, a MAC of
//! its choosing, no gateway but a static route, chunked answers). The
//! plugin leaves the link in the host namespace; cnm-core moves and
//! programs it.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_bridge::BridgeDriver;
use cnm_core::{Controller, EndpointConfig, MemStore, NetworkConfig, SandboxConfig, Store};
use cnm_ipam::Ipam;
use cnm_netns::testing::TestHost;
use cnm_netns::NetNs;
use cnm_remote::testing::TestPlugin;
use cnm_remote::{Plugin, PluginClient, PluginConfig, PluginServer, RemoteDriver, RemoteIpam};
use serde_json::json;

/// A controller on `host` whose only driver is the plugin at `socket`.
fn client_controller(host: &TestHost, name: &str, socket: &Path) -> Controller {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    Controller::builder()
        .host_netns(host.ns.try_clone().unwrap())
        .run_dir(host.dir().join(format!("run-{name}")))
        .store(store.clone())
        .ipam(Arc::new(Ipam::new(store)))
        .driver(Arc::new(RemoteDriver::new(PluginClient::new(name, socket))))
        .ipam_driver(name, Arc::new(RemoteIpam::new(PluginClient::new(name, socket))))
        .build()
        .unwrap()
}

fn wait_gone(host: &TestHost, link: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while host.handle.link_get(link).is_ok() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn cnm_drives_cnms_own_plugin() {
    let Some(host) = TestHost::new("remote_client_cnm") else { return };
    std::fs::create_dir_all(host.dir()).unwrap();
    // The plugin side: its own controller and store, the same host.
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let server_ctl = Arc::new(
        Controller::builder()
            .host_netns(host.ns.try_clone().unwrap())
            .run_dir(host.dir().join("run-server"))
            .store(store.clone())
            .ipam(Arc::new(Ipam::new(store)))
            .driver(Arc::new(BridgeDriver::new()))
            .build()
            .unwrap(),
    );
    let socket = host.dir().join("cnm.sock");
    let _server =
        PluginServer::serve(Arc::new(Plugin::new(server_ctl.clone(), PluginConfig::default())), &socket).unwrap();

    let ctl = client_controller(&host, "plug", &socket);
    // The plugin's refusal comes back with its words, and nothing is kept.
    let mut bad = NetworkConfig::new("bad", "plug").subnet("10.1.4.0/24");
    bad.options.insert("no.such.option".into(), "1".into());
    let e = ctl.create_network(bad).unwrap_err().to_string();
    assert!(e.contains("no.such.option") && e.contains("plug"), "{e}");
    assert!(ctl.networks().unwrap().is_empty() && server_ctl.networks().unwrap().is_empty());

    let net = ctl.create_network(NetworkConfig::new("web", "plug").subnet("10.1.3.0/24")).unwrap();
    let behind = server_ctl.network(&cnm_remote::docker_name(net.id.as_str())).unwrap();
    assert_eq!(behind.pools[0].subnet.to_string(), "10.1.3.0/24", "the plugin got cnm's pool");
    let mut ips = Vec::new();
    for c in ["c1", "c2"] {
        ctl.create_sandbox(SandboxConfig { name: c.into(), ..Default::default() }).unwrap();
        let ep = ctl.connect("web", c, EndpointConfig::default()).unwrap();
        ips.push(ep.ipv4.unwrap().addr());
    }
    let c1 = NetNs::open(ctl.sandbox("c1").unwrap().netns).unwrap();
    // Moved, renamed and programmed by cnm-core from the join answer.
    let eth0 = host.ip_json(&c1, &["addr", "show", "eth0"]);
    assert_eq!(eth0[0]["addr_info"][0]["local"], ips[0].to_string());
    let routes = host.exec(&c1, "ip", &["route"]);
    assert!(routes.contains("default via 10.1.3.1 dev eth0"), "{routes}");
    assert!(host.ping(&c1, ips[1]), "c1 reaches c2 through the plugin's bridge");
    assert!(host.ping(&c1, "10.1.3.1".parse().unwrap()), "and the gateway");

    // A second network whose subnet and addresses come from the plugin's
    // IPAM side (cnm-ipam behind the socket, apart from cnm's own).
    let mut back = NetworkConfig::new("back", "plug");
    back.ipam.driver = "plug".into();
    let back = ctl.create_network(back).unwrap();
    let subnet = back.pools[0].subnet;
    let plugin_ipam = PluginClient::new("plug", &socket);
    let again =
        json!({"AddressSpace": "cnm-local", "Pool": subnet.to_string(), "SubPool": "", "Options": {}, "V6": false});
    let held = plugin_ipam.call("IpamDriver.RequestPool", &again).unwrap_err().to_string();
    assert!(held.contains(&subnet.to_string()), "the plugin holds the pool: {held}");
    let ep = ctl.connect("back", "c1", EndpointConfig::default()).unwrap();
    assert!(subnet.contains(&ep.ipv4.unwrap().addr()), "{ep:?} in {subnet}");
    assert_ne!(ep.ipv4.unwrap().addr(), back.pools[0].gateway.unwrap().addr());
    ctl.disconnect("back", "c1").unwrap();
    ctl.delete_network("back").unwrap();
    let v = plugin_ipam.call("IpamDriver.RequestPool", &again).unwrap();
    assert_eq!(v["Pool"], subnet.to_string(), "released with the network");
    plugin_ipam.call("IpamDriver.ReleasePool", &json!({"PoolID": v["PoolID"]})).unwrap();

    let veth = server_ctl.endpoints(None).unwrap()[0].driver_data["veth"].clone();
    ctl.delete_sandbox("c1").unwrap();
    ctl.delete_sandbox("c2").unwrap();
    assert!(wait_gone(&host, &veth), "the plugin's veth went with the sandbox");
    ctl.delete_network("web").unwrap();
    assert!(server_ctl.networks().unwrap().is_empty(), "the plugin's network went too");
}

#[test]
fn a_plugin_that_does_things_its_own_way() {
    let Some(host) = TestHost::new("remote_client_odd") else { return };
    std::fs::create_dir_all(host.dir()).unwrap();
    // Found through a spec file, as dockerd finds plugins.
    let (socks, specs) = (host.dir().join("sockets"), host.dir().join("specs"));
    std::fs::create_dir_all(&socks).unwrap();
    std::fs::create_dir_all(&specs).unwrap();
    let socket = host.dir().join("odd-elsewhere.sock");
    std::fs::write(specs.join("odd.spec"), format!("unix://{}\n", socket.display())).unwrap();
    let odd = TestPlugin::start(UnixListener::bind(&socket).unwrap(), host.ns.try_clone().unwrap());
    let client = PluginClient::discover_in("odd", &[&socks], &[&specs]).unwrap();
    assert_eq!(client.socket(), socket);
    assert!(PluginClient::discover_in("none", &[&socks], &[&specs]).is_err());

    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let ctl = Controller::builder()
        .host_netns(host.ns.try_clone().unwrap())
        .run_dir(host.dir().join("run"))
        .store(store.clone())
        .ipam(Arc::new(Ipam::new(store)))
        .driver(Arc::new(RemoteDriver::new(client)))
        .build()
        .unwrap();
    ctl.create_network(NetworkConfig::new("odd", "odd").subnet("10.1.5.0/24")).unwrap();
    ctl.create_sandbox(SandboxConfig { name: "c1".into(), ..Default::default() }).unwrap();
    let ep = ctl.connect("odd", "c1", EndpointConfig::default()).unwrap();
    assert_eq!(ep.mac.unwrap().to_string(), "02:00:00:00:be:ef", "the plugin's MAC is kept");
    let c1 = NetNs::open(ctl.sandbox("c1").unwrap().netns).unwrap();
    let link = host.ip_json(&c1, &["addr", "show", "net0"]);
    assert_eq!(link[0]["address"], "02:00:00:00:be:ef");
    assert_eq!(link[0]["addr_info"][0]["local"], ep.ipv4.unwrap().addr().to_string());
    let routes = host.exec(&c1, "ip", &["route"]);
    assert!(routes.contains("10.99.0.0/16 via 10.1.5.1 dev net0"), "{routes}");
    assert!(!routes.contains("default"), "no gateway, no default route: {routes}");
    let src = format!("tp{}", &ep.id.as_str()[..6]);
    assert!(host.handle.link_get(src.as_str()).is_ok());

    ctl.disconnect("odd", "c1").unwrap();
    assert!(host.handle.link_get(src.as_str()).is_err(), "the plugin removed its link at Leave");
    assert!(host.ip_json(&c1, &["link", "show"]).as_array().unwrap().len() == 1, "c1 keeps its loopback only");
    ctl.delete_sandbox("c1").unwrap();
    ctl.delete_network("odd").unwrap();
    let calls = odd.calls();
    let expected = [
        "Plugin.Activate",
        "NetworkDriver.GetCapabilities",
        "NetworkDriver.CreateNetwork",
        "NetworkDriver.CreateEndpoint",
        "NetworkDriver.Join",
        "NetworkDriver.ProgramExternalConnectivity",
        "NetworkDriver.RevokeExternalConnectivity",
        "NetworkDriver.Leave",
        "NetworkDriver.DeleteEndpoint",
        "NetworkDriver.DeleteNetwork",
    ];
    assert_eq!(calls, expected, "dockerd's order of calls");
}
