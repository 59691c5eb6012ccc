//! An overlay through CNI: two hosts and etcd, all in namespaces the test
//! creates, each host with the overlay agent (what `cnm agent` runs) over
//! the directories and store its CNI configuration names. Containers ADDed
//! on the two hosts talk through cnm's VXLAN overlay; DEL takes their
//! endpoints out of etcd.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_core::Store;
use cnm_netns::testing::{TestHost, TestNs};
use cnm_netns::LinkAdd;
use cnm_store_etcd::testing::EtcdServer;
use cnm_store_etcd::EtcdStore;
use serde_json::{json, Value};

mod common;
use common::*;

const ETCD: &str = "192.0.2.100";

/// A host: its namespace, its CNI configuration, and its agent, stopped
/// and joined on drop.
struct Host {
    ns: TestNs,
    conf: Value,
    stop: Arc<AtomicBool>,
    agent: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.agent.take() {
            let _ = t.join();
        }
    }
}

fn host(tb: &TestHost, n: usize) -> Host {
    let ns = tb.on_bridge("ul0", &format!("h{n}"), &format!("192.0.2.{n}")).unwrap();
    let dir = tb.dir().join(format!("h{n}"));
    let conf = json!({
        "cniVersion": "1.0.0", "name": "ov", "type": "cnm", "driver": "overlay",
        "subnet": "10.97.40.0/24", "store": format!("etcd://{ETCD}:2379"), "hostName": format!("h{n}"),
        "dataDir": dir.join("data"), "runDir": dir.join("run"),
    });
    let parsed = cnm_cni::NetConf::parse(conf.to_string().as_bytes()).unwrap();
    let driver = cnm_cni::stack::overlay_driver(&parsed, &ns.ns).unwrap().expect("an overlay");
    assert_eq!(driver.config().advertise_addr.to_string(), format!("192.0.2.{n}"), "the address toward etcd");
    let opts = cnm_vxlan::overlay::AgentOptions { ttl: Duration::from_secs(3), ..Default::default() };
    let agent = cnm_vxlan::overlay::Agent::new(driver, opts);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let agent = std::thread::spawn(move || agent.run(&flag));
    Host { ns, conf, stop, agent: Some(agent) }
}

/// `cnm-cni` in a host's namespace.
fn call_on(h: &Host, command: &str, id: &str, netns: &str) -> Value {
    let env = [("CNI_COMMAND", command), ("CNI_CONTAINERID", id), ("CNI_NETNS", netns), ("CNI_IFNAME", "eth0")];
    let mut cmd = h.ns.ns.command(cnm_cni());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(h.conf.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{command} {id}: {text}");
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

#[test]
fn containers_on_two_hosts_talk_through_a_cni_overlay() {
    let Some(tb) = TestHost::new("cni_overlay") else { return };
    tb.handle.link_add(&LinkAdd::bridge("ul0").up()).unwrap();
    let etcd_ns = tb.on_bridge("ul0", "etcd", ETCD).unwrap();
    let etcd = EtcdServer::start(&etcd_ns.ns, ETCD.parse().unwrap(), tb.dir().join("etcd"));
    let hosts = [host(&tb, 1), host(&tb, 2)];
    let store = EtcdStore::connect_in(&etcd.url, Some(&etcd_ns.ns)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.count("global/overlay/hosts/").unwrap() < 2 {
        assert!(Instant::now() < deadline, "the agents never registered");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (c1, p1) = container(&tb, "c1");
    let (c2, p2) = container(&tb, "c2");
    let r1 = call_on(&hosts[0], "ADD", "c1", &p1);
    let r2 = call_on(&hosts[1], "ADD", "c2", &p2);
    let addr = |r: &Value| r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    let (a1, a2) = (addr(&r1), addr(&r2));
    assert!(a1.starts_with("10.97.40.") && a2.starts_with("10.97.40.") && a1 != a2, "{a1} {a2}");
    assert_eq!(r1["interfaces"][0]["sandbox"], p1.as_str(), "{r1}");
    // Across the underlay, both ways (the agents program the peers as
    // their records arrive).
    let reach = |from: &TestNs, to: &str| (0..10).any(|_| tb.ping(&from.ns, to.parse().unwrap()));
    assert!(reach(&c1, &a2), "c1 on host 1 reaches c2 on host 2");
    assert!(reach(&c2, &a1), "c2 reaches c1");

    // DEL: the endpoints leave etcd; the network stays for the next ADD.
    call_on(&hosts[0], "DEL", "c1", &p1);
    call_on(&hosts[1], "DEL", "c2", &p2);
    call_on(&hosts[1], "DEL", "c2", &p2);
    let peers = store.list_keys("global/overlay/peers/").unwrap();
    assert!(peers.is_empty(), "{peers:?}");
    assert!(store.list_keys("global/networks/").unwrap().iter().any(|k| k.ends_with("/ov")));
}
