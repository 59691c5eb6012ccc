//! The plugin server driven over its socket by `curl` with the requests
//! dockerd sends (`../shared/reference/docker-plugin-requests.txt`): a
//! whole container's life, IPAM, and bad requests, which get `Err` answers
//! and leave nothing behind.

use std::path::PathBuf;
use std::sync::Arc;

use cnm_bridge::BridgeDriver;
use cnm_core::{Controller, MemStore, Store};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::testing::TestHost;
use cnm_remote::{Plugin, PluginConfig, PluginServer};
use serde_json::{json, Value};

const NET: &str = "05d9621da7c0982f801ae6ae73f5d8d19fc4e1bd81e76c20f2978b0a5fb17f52";
const EP: &str = "91c7d5339d3163c7bd1ee1ca26d08efd9e1c4651cc351d97f73f6749e8e0f3f5";

struct Rig {
    host: TestHost,
    ctl: Arc<Controller>,
    socket: PathBuf,
    _server: PluginServer,
}

fn rig(test: &str) -> Option<Rig> {
    let host = TestHost::new(test)?;
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let ctl = Controller::builder()
        .host_netns(host.ns.try_clone().unwrap())
        .run_dir(host.dir().join("run"))
        .store(store.clone())
        .firewall(Arc::new(NatFirewall::new(Backend::Nftables, host.ns.try_clone().unwrap(), store.clone())))
        .ipam(Arc::new(Ipam::new(store)))
        .driver(Arc::new(BridgeDriver::new()))
        .build()
        .unwrap();
    let ctl = Arc::new(ctl);
    std::fs::create_dir_all(host.dir()).unwrap();
    let socket = host.dir().join("plugin.sock");
    let plugin = Arc::new(Plugin::new(ctl.clone(), PluginConfig::default()));
    let server = PluginServer::serve(plugin, &socket).unwrap();
    Some(Rig { host, ctl, socket, _server: server })
}

impl Rig {
    /// POSTs `body` to `/METHOD` with curl; the JSON answer.
    fn call(&self, method: &str, body: &str) -> Value {
        let out = self.host.exec(
            &self.host.ns,
            "curl",
            &[
                "-s",
                "--max-time",
                "10",
                "--unix-socket",
                &self.socket.display().to_string(),
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                &format!("http://plugin/{method}"),
            ],
        );
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method}: not JSON ({e}): {out:?}"))
    }

    fn ok(&self, method: &str, body: Value) -> Value {
        let v = self.call(method, &body.to_string());
        assert!(v.get("Err").is_none(), "{method}: {v}");
        v
    }

    fn err(&self, method: &str, body: &str) -> String {
        let v = self.call(method, body);
        v["Err"].as_str().unwrap_or_else(|| panic!("{method} {body}: no Err in {v}")).to_string()
    }

    fn links(&self) -> String {
        self.host.exec(&self.host.ns, "ip", &["-o", "link", "show"])
    }
}

fn endpoint_body() -> Value {
    json!({
        "NetworkID": NET, "EndpointID": EP,
        "Interface": {"Address": "10.1.3.2/24", "AddressIPv6": "", "MacAddress": ""},
        "Options": {"com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 80}],
                    "com.docker.network.portmap": [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8002, "HostPortEnd": 8002}]}
    })
}

#[test]
fn a_containers_life_as_dockerd_drives_it() {
    let Some(r) = rig("remote_life") else { return };
    assert_eq!(r.ok("Plugin.Activate", json!(null))["Implements"], json!(["NetworkDriver", "IpamDriver"]));
    assert_eq!(r.ok("NetworkDriver.GetCapabilities", json!(null))["Scope"], "local");
    r.ok(
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": NET, "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {"com.docker.network.driver.mtu": "1400"}},
               "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": "10.1.3.1/24", "Pool": "10.1.3.0/24"}], "IPv6Data": []}),
    );
    let net = r.ctl.network("docker-05d9621da7c0").unwrap();
    assert_eq!(net.labels.get(cnm_remote::DOCKER_NETWORK_ID).map(String::as_str), Some(NET));

    let created = r.ok("NetworkDriver.CreateEndpoint", endpoint_body());
    let mac = created["Interface"]["MacAddress"].as_str().unwrap().to_string();
    assert_eq!(mac, "02:42:0a:01:03:02", "Docker's MAC rule, answered because dockerd left it empty");
    assert!(created["Interface"].get("Address").is_none(), "dockerd's own address is not answered back");

    let sandbox = r.host.dir().join("netns-deb1c3c54459");
    let joined =
        r.ok("NetworkDriver.Join", json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": sandbox, "Options": {}}));
    assert_eq!(joined["InterfaceName"]["DstPrefix"], "eth");
    assert_eq!(joined["Gateway"], "10.1.3.1");
    let src = joined["InterfaceName"]["SrcName"].as_str().unwrap();
    // The container end waits in the host namespace for dockerd, with its
    // MAC and MTU.
    let link = r.host.ip_json(&r.host.ns, &["link", "show", src]);
    assert_eq!(link[0]["address"], mac.as_str());
    assert_eq!(link[0]["mtu"], 1400);
    let nft = || r.host.exec(&r.host.ns, "nft", &["list", "ruleset"]);
    assert!(!nft().contains("8002"), "ports wait for ProgramExternalConnectivity: {}", nft());
    // A second join of the same endpoint is refused, and changes nothing.
    let before = r.links();
    let e = r.err(
        "NetworkDriver.Join",
        &json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": sandbox, "Options": {}}).to_string(),
    );
    assert!(e.contains("already joined"), "{e}");
    assert_eq!(r.links(), before);

    let both = json!({"NetworkID": NET, "EndpointID": EP});
    r.ok("NetworkDriver.ProgramExternalConnectivity", both.clone());
    assert!(nft().contains("8002"), "the published port is programmed: {}", nft());
    let info = r.ok("NetworkDriver.EndpointOperInfo", both.clone());
    assert!(info["Value"]["cnm.ports"][0].as_str().unwrap().contains("8002->80/tcp"), "{info}");
    // dockerd revokes when the default route moves to another network,
    // and programs again when it comes back.
    r.ok("NetworkDriver.RevokeExternalConnectivity", both.clone());
    assert!(!nft().contains("8002"), "revoked: {}", nft());
    r.ok("NetworkDriver.ProgramExternalConnectivity", both.clone());
    assert!(nft().contains("8002"), "programmed again: {}", nft());
    r.ok("NetworkDriver.RevokeExternalConnectivity", both.clone());
    r.ok("NetworkDriver.Leave", both.clone());
    // Down at once, deleted in the bridge driver's next batch.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while r.links().contains(src) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!r.links().contains(src), "the veth went after Leave");
    assert!(r.ctl.sandboxes().unwrap().is_empty(), "the external sandbox went with its last endpoint");
    r.ok("NetworkDriver.DeleteEndpoint", both.clone());
    r.ok("NetworkDriver.DeleteEndpoint", both);
    r.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": NET}));
    assert!(r.ctl.networks().unwrap().is_empty());
    assert!(!r.host.exec(&r.host.ns, "nft", &["list", "ruleset"]).contains("8002"));
    assert!(!r.links().contains("br-"), "{}", r.links());
}

#[test]
fn the_ipam_side_hands_out_pools_gateways_and_addresses() {
    let Some(r) = rig("remote_ipam") else { return };
    let spaces = r.ok("IpamDriver.GetDefaultAddressSpaces", json!(null));
    let local = spaces["LocalDefaultAddressSpace"].as_str().unwrap().to_string();
    let pool = r.ok(
        "IpamDriver.RequestPool",
        json!({"AddressSpace": local, "Pool": "", "SubPool": "", "Options": {}, "V6": false}),
    );
    let (id, subnet) = (pool["PoolID"].as_str().unwrap(), pool["Pool"].as_str().unwrap());
    let subnet: ipnet::Ipv4Net = subnet.parse().unwrap();
    let gw = r.ok(
        "IpamDriver.RequestAddress",
        json!({"PoolID": id, "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
    );
    let gw: ipnet::Ipv4Net = gw["Address"].as_str().unwrap().parse().unwrap();
    assert_eq!(gw.addr(), subnet.hosts().next().unwrap(), "the gateway is the first address");
    let a = r.ok("IpamDriver.RequestAddress", json!({"PoolID": id, "Address": "", "Options": null}));
    let b = r.ok("IpamDriver.RequestAddress", json!({"PoolID": id, "Address": "", "Options": null}));
    assert_ne!(a["Address"], b["Address"]);
    assert_ne!(a["Address"], gw.to_string());
    // An explicit address twice: the second is refused.
    let exact = subnet.hosts().nth(9).unwrap().to_string();
    r.ok("IpamDriver.RequestAddress", json!({"PoolID": id, "Address": exact, "Options": null}));
    let e = r.err("IpamDriver.RequestAddress", &json!({"PoolID": id, "Address": exact, "Options": null}).to_string());
    assert!(e.contains(&exact), "{e}");
    // The same subnet again is refused while the pool is held.
    let e = r.err(
        "IpamDriver.RequestPool",
        &json!({"AddressSpace": local, "Pool": subnet.to_string(), "SubPool": "", "Options": {}, "V6": false})
            .to_string(),
    );
    assert!(!e.is_empty());
    for addr in [a["Address"].as_str().unwrap(), b["Address"].as_str().unwrap()] {
        let addr = addr.split('/').next().unwrap();
        r.ok("IpamDriver.ReleaseAddress", json!({"PoolID": id, "Address": addr}));
    }
    r.ok("IpamDriver.ReleaseAddress", json!({"PoolID": id, "Address": gw.addr().to_string()}));
    r.ok("IpamDriver.ReleasePool", json!({"PoolID": id}));
    r.ok("IpamDriver.ReleasePool", json!({"PoolID": id}));
    // Released: the subnet can be had again.
    let again = r.ok(
        "IpamDriver.RequestPool",
        json!({"AddressSpace": local, "Pool": subnet.to_string(), "SubPool": "", "Options": {}, "V6": false}),
    );
    assert_eq!(again["Pool"], subnet.to_string());
    // cnm's own IPAM never saw any of it.
    assert!(r.ctl.networks().unwrap().is_empty());
}

#[test]
fn bad_requests_get_errors_and_change_nothing() {
    let Some(r) = rig("remote_bad") else { return };
    let e = r.err("NetworkDriver.CreateNetwork", "{not json");
    assert!(e.contains("malformed request"), "{e}");
    let e = r.err("NetworkDriver.CreateNetwork", r#"{"NetworkID": "nothex!", "IPv4Data": []}"#);
    assert!(e.contains("NetworkID"), "{e}");
    let e = r.err(
        "NetworkDriver.CreateNetwork",
        &json!({"NetworkID": NET, "IPv4Data": [{"Pool": "10.1.3.0/33", "Gateway": ""}]}).to_string(),
    );
    assert!(e.contains("Pool"), "{e}");
    let e = r.err(
        "NetworkDriver.CreateNetwork",
        &json!({"NetworkID": NET, "Options": {"com.docker.network.generic": {"no.such.option": "1"}},
                "IPv4Data": [{"Pool": "10.1.3.0/24", "Gateway": "10.1.3.1/24"}]})
        .to_string(),
    );
    assert!(e.contains("no.such.option"), "an unknown option is named: {e}");
    let e = r.err("NetworkDriver.CreateEndpoint", &endpoint_body().to_string());
    assert!(e.contains("docker-05d9621da7c0"), "an unknown network is named: {e}");
    let e = r.err("NetworkDriver.Leave", &json!({"NetworkID": NET, "EndpointID": EP}).to_string());
    assert!(!e.is_empty());
    let e = r.err("IpamDriver.RequestAddress", r#"{"PoolID": "local-10.9.9.0/24", "Address": ""}"#);
    assert!(e.contains("no pool"), "{e}");
    let e = r.err("NetworkDriver.Nothing", "{}");
    assert!(e.contains("no such method"), "{e}");
    // A request that is not even HTTP gets an answer and a closed connection.
    let mut s = std::os::unix::net::UnixStream::connect(&r.socket).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"garbage\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(r.ctl.networks().unwrap().is_empty());
    assert!(!r.links().contains("br-"), "{}", r.links());

    // A sandbox of cnm's own under the name dockerd's would get is not
    // taken over.
    r.ok(
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": NET, "IPv4Data": [{"Pool": "10.1.3.0/24", "Gateway": "10.1.3.1/24"}]}),
    );
    r.ok("NetworkDriver.CreateEndpoint", endpoint_body());
    r.ctl.create_sandbox(cnm_core::SandboxConfig { name: "docker-deadbeef0000".into(), ..Default::default() }).unwrap();
    let join = json!({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/var/run/docker/netns/deadbeef0000"});
    let e = r.err("NetworkDriver.Join", &join.to_string());
    assert!(e.contains("not dockerd's"), "{e}");
    assert!(r.ctl.endpoint("docker-05d9621da7c0", "docker-91c7d5339d31").unwrap().sandbox.is_none());
    r.ctl.delete_sandbox("docker-deadbeef0000").unwrap();
    r.ok("NetworkDriver.DeleteEndpoint", json!({"NetworkID": NET, "EndpointID": EP}));
    r.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": NET}));
}

#[test]
fn calls_are_served_concurrently() {
    let Some(r) = rig("remote_concurrent") else { return };
    r.ok(
        "NetworkDriver.CreateNetwork",
        json!({"NetworkID": NET, "Options": {}, "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": "10.1.6.1/24", "Pool": "10.1.6.0/24"}]}),
    );
    // Eight clients at once, each on its own connection, each asking for
    // an endpoint whose address cnm picks.
    let answers: Vec<Value> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..8)
            .map(|i| {
                let r = &r;
                s.spawn(move || {
                    let ep = format!("{i:02x}{}", "a".repeat(62));
                    r.ok("NetworkDriver.CreateEndpoint", json!({"NetworkID": NET, "EndpointID": ep, "Interface": {}}))
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let mut addrs: Vec<&str> = answers.iter().map(|a| a["Interface"]["Address"].as_str().unwrap()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 8, "eight distinct addresses: {answers:?}");
    for i in 0..8 {
        r.ok(
            "NetworkDriver.DeleteEndpoint",
            json!({"NetworkID": NET, "EndpointID": format!("{i:02x}{}", "a".repeat(62))}),
        );
    }
    r.ok("NetworkDriver.DeleteNetwork", json!({"NetworkID": NET}));
    assert!(r.ctl.networks().unwrap().is_empty());
}
