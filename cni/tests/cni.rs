//! `cnm-cni` driven as a runtime drives it, inside namespaces each test
//! creates: ADD, CHECK and DEL with the specification's edge cases, results
//! per version, published ports keeping the client's address, errors with
//! their codes leaving nothing behind, 32 parallel ADDs, chaining with the
//! reference `tuning` and `firewall` plugins, delegated `host-local` IPAM,
//! GC and STATUS. The state is checked through the library the `cnm` tool
//! is built on, over the same directories.

use std::collections::BTreeSet;

use cnm_netns::testing::TestHost;
use serde_json::{json, Value};

mod common;
use common::*;

/// cnm's view of the state, as `cnm --state-dir DATA --run-dir RUN` has it.
fn controller(host: &TestHost, conf: &Value) -> cnm_core::Controller {
    let conf = cnm_cni::NetConf::parse(conf.to_string().as_bytes()).unwrap();
    cnm_cni::stack::controller(&conf, &host.ns).unwrap()
}

#[test]
fn add_check_del_and_their_edge_cases() {
    let Some(host) = TestHost::new("cni_edges") else { return };
    let outside = host.outside().unwrap();
    let (c1, p1) = container(&host, "c1");
    let mut conf = bridge_conf(&host, "1.0.0", "edges", "10.97.1.0/24");
    conf["runtimeConfig"] = json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]});

    // ADD: the result names the bridge, the host end and the container's
    // interface with its namespace; the address points at it.
    let r = ok(&host, "ADD", "c1", &p1, "eth0", &conf);
    assert_eq!(r["cniVersion"], "1.0.0");
    let ifs = r["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3, "{r}");
    assert_eq!(ifs[0]["name"], host.name("br").as_str());
    assert_eq!(ifs[2]["name"], "eth0");
    assert_eq!(ifs[2]["sandbox"], p1.as_str());
    let ip = &r["ips"][0];
    assert_eq!(ip["interface"], 2);
    assert_eq!(ip["gateway"], "10.97.1.1");
    assert!(ip.get("version").is_none(), "1.0.0 has no version: {r}");
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    let addr = ip["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    let link = &host.ip_json(&c1.ns, &["addr", "show", "eth0"])[0];
    assert_eq!(link["address"], ifs[2]["mac"], "the MAC in the result is the interface's");
    assert!(link["addr_info"].as_array().unwrap().iter().any(|a| a["local"] == addr.as_str()));
    assert!(host.ping(&c1.ns, "10.97.1.1".parse().unwrap()), "the container reaches its gateway");

    // The published port, from outside, with the client's address kept.
    let _server = echo_server(&host, &c1, 80);
    assert_eq!(ask(&outside, "198.51.100.1:8080"), "198.51.100.2");

    // cnm's state has the network and the container's endpoint.
    let ctl = controller(&host, &conf);
    let ep = ctl.endpoint("edges", "c1-eth0").unwrap();
    assert_eq!(ep.ifname.as_deref(), Some("eth0"));
    assert_eq!(ctl.sandbox("cni-c1").unwrap().netns.display().to_string(), p1);

    // CHECK against the result passes, and fails once the interface is
    // deleted behind cnm's back.
    let mut check = conf.clone();
    check["prevResult"] = r.clone();
    ok(&host, "CHECK", "c1", &p1, "eth0", &check);
    c1.handle.link_del("eth0").unwrap();
    let a = call(&host, "CHECK", "c1", &p1, "eth0", &check);
    assert!(!a.ok && a.json["code"] == 100, "{}", a.json);
    assert!(a.json["msg"].as_str().unwrap().contains("eth0"), "{}", a.json);

    // DEL, three times as runtimes do; then nothing is left.
    for _ in 0..3 {
        ok(&host, "DEL", "c1", &p1, "eth0", &conf);
    }
    assert!(veths(&host).iter().all(|v| v == "uplink"), "veths left: {:?}", veths(&host));
    let rules = host.exec(&host.ns, "nft", &["list", "ruleset"]);
    assert!(!rules.contains("8080"), "the published port is gone: {rules}");
    assert!(ctl.sandboxes().unwrap().is_empty());
    assert!(ctl.endpoints(Some("edges")).unwrap().is_empty());

    // DEL of a container ADD never saw, with or without a namespace.
    ok(&host, "DEL", "never", &p1, "eth0", &conf);
    ok(&host, "DEL", "never", "", "eth0", &conf);

    // DEL after the namespace went: the host end and the ports go too.
    let (_c2, p2) = container(&host, "c2");
    ok(&host, "ADD", "c2", &p2, "eth0", &conf);
    assert_eq!(veths(&host).len(), 2);
    cnm_netns::NetNs::remove_named(host.dir(), "c2").unwrap();
    ok(&host, "DEL", "c2", &p2, "eth0", &conf);
    ok(&host, "DEL", "c2", "", "eth0", &conf);
    assert_eq!(veths(&host), ["uplink"]);
    assert!(!host.exec(&host.ns, "nft", &["list", "ruleset"]).contains("8080"));
}

#[test]
fn bad_input_gets_the_specifications_codes_and_leaves_nothing() {
    let Some(host) = TestHost::new("cni_errors") else { return };
    let (_c, p) = container(&host, "c");
    let good = bridge_conf(&host, "1.0.0", "errs", "10.97.2.0/24");
    let before = host.kernel_state(&[&host.ns]);
    let expect = |a: Answer, code: u64, words: &str| {
        assert!(!a.ok, "should fail: {}", a.json);
        assert_eq!(a.json["code"], code, "{}", a.json);
        assert!(a.json["msg"].as_str().unwrap().contains(words), "{} should name {words}", a.json);
        assert!(a.json["cniVersion"].is_string(), "{}", a.json);
    };

    // 1: an unsupported version.
    let mut c = good.clone();
    c["cniVersion"] = json!("0.2.0");
    expect(call(&host, "ADD", "c", &p, "eth0", &c), 1, "0.2.0");
    // 4: the environment.
    expect(call(&host, "ADD", "", &p, "eth0", &good), 4, "CNI_CONTAINERID");
    expect(call(&host, "ADD", "c", "", "eth0", &good), 4, "CNI_NETNS");
    expect(call(&host, "ADD", "c", &p, "", &good), 4, "CNI_IFNAME");
    expect(call(&host, "ADD", "c", &p, "this-is-too-long", &good), 4, "CNI_IFNAME");
    expect(call(&host, "BOGUS", "c", &p, "eth0", &good), 4, "CNI_COMMAND");
    expect(call(&host, "ADD", "c", "/nonexistent/ns", "eth0", &good), 4, "CNI_NETNS");
    // 6: not JSON.
    let env = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c"), ("CNI_NETNS", p.as_str()), ("CNI_IFNAME", "eth0")];
    let a = call_raw(&host, &cnm_cni(), &env, b"{not json");
    expect(a, 6, "decoding");
    // 7: invalid configuration values and capability arguments.
    for (key, value, words) in [
        ("subnet", json!("10.97.2.0/33"), "configuration"),
        ("gateway", json!("10.1.1.1"), "gateway"),
        ("driver", json!("ipvlan"), "driver"),
        ("mtu", json!(10), "MTU"),
        ("runtimeConfig", json!({"portMappings": [{"hostPort": 0, "containerPort": 80}]}), "hostPort"),
        ("runtimeConfig", json!({"ips": ["10.200.0.5/24"]}), "10.200.0.5"),
        ("runtimeConfig", json!({"mac": "not-a-mac"}), "mac"),
    ] {
        let mut c = good.clone();
        c[key] = value;
        let a = call(&host, "ADD", "c", &p, "eth0", &c);
        expect(a, 7, words);
    }
    // Nothing of any of them is left: no link, no container state.
    settle(&host);
    assert_eq!(host.kernel_state(&[&host.ns]), before);
    let ctl = controller(&host, &good);
    assert!(ctl.sandboxes().unwrap().is_empty(), "no sandbox is left");
    assert!(ctl.endpoints(None).unwrap().is_empty(), "no endpoint is left");

    // A port already published by another container: refused, nothing left.
    let mut with_port = good.clone();
    with_port["runtimeConfig"] = json!({"portMappings": [{"hostPort": 8081, "containerPort": 80}]});
    let (_d, pd) = container(&host, "d");
    ok(&host, "ADD", "d", &pd, "eth0", &with_port);
    let links = veths(&host);
    let a = call(&host, "ADD", "c", &p, "eth0", &with_port);
    assert!(!a.ok && a.json["code"] == 101 && a.json["msg"].as_str().unwrap().contains("8081"), "{}", a.json);
    assert_eq!(veths(&host), links, "the refused container left no veth");
    assert!(ctl.sandbox("cni-c").is_err(), "nor a sandbox");
    ok(&host, "DEL", "d", &pd, "eth0", &with_port);

    // VERSION.
    let v = ok(&host, "VERSION", "", "", "", &json!({"cniVersion": "1.0.0"}));
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(v["supportedVersions"], json!(["0.3.1", "0.4.0", "1.0.0", "1.1.0"]));
}

#[test]
fn results_are_written_in_the_configurations_version() {
    let Some(host) = TestHost::new("cni_versions") else { return };
    for (i, version) in ["0.3.1", "0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let mut conf = bridge_conf(&host, version, "vers", "10.97.3.0/24");
        conf["dns"] = json!({"nameservers": ["192.0.2.53"], "search": ["example.org"], "options": ["ndots:2"]});
        let (_c, p) = container(&host, &format!("v{i}"));
        let r = ok(&host, "ADD", &format!("v{i}"), &p, "eth0", &conf);
        assert_eq!(r["cniVersion"], version);
        // The configuration's DNS is the container's (no cnm-dns here).
        assert_eq!(r["dns"], json!({"nameservers": ["192.0.2.53"], "search": ["example.org"], "options": ["ndots:2"]}));
        let tagged = r["ips"][0].get("version").and_then(Value::as_str);
        assert_eq!(tagged, if version < "1.0.0" { Some("4") } else { None }, "{version}: {r}");
        assert_eq!(r["ips"][0]["interface"], 2, "{version}: {r}");
        ok(&host, "DEL", &format!("v{i}"), &p, "eth0", &conf);
    }
}

#[test]
fn thirty_two_parallel_adds_get_distinct_addresses() {
    let Some(host) = TestHost::new("cni_parallel") else { return };
    let conf = bridge_conf(&host, "1.0.0", "par", "10.97.4.0/24");
    let containers: Vec<_> = (0..32).map(|i| container(&host, &format!("p{i}"))).collect();
    let addresses: Vec<String> = std::thread::scope(|s| {
        let calls: Vec<_> = containers
            .iter()
            .enumerate()
            .map(|(i, (_, p))| {
                let (host, conf) = (&host, &conf);
                s.spawn(move || ok(host, "ADD", &format!("p{i}"), p, "eth0", conf)["ips"][0]["address"].to_string())
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let distinct: BTreeSet<&String> = addresses.iter().collect();
    assert_eq!(distinct.len(), 32, "{addresses:?}");
    // Each has its own address on its own eth0, and reaches the others.
    let first = addresses[0].trim_matches('"').split('/').next().unwrap().to_string();
    assert!(host.ping(&containers[31].0.ns, first.parse().unwrap()));
    std::thread::scope(|s| {
        for (i, (_, p)) in containers.iter().enumerate() {
            let (host, conf) = (&host, &conf);
            s.spawn(move || ok(host, "DEL", &format!("p{i}"), p, "eth0", conf));
        }
    });
    assert!(veths(&host).is_empty(), "{:?}", veths(&host));
}

#[test]
fn reference_plugins_chained_after_it_get_its_result() {
    let Some(host) = TestHost::new("cni_chain") else { return };
    let (c, p) = container(&host, "c");
    let conf = bridge_conf(&host, "1.0.0", "chain", "10.97.5.0/24");
    let r = ok(&host, "ADD", "c", &p, "eth0", &conf);
    let addr = r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    let env = [("CNI_CONTAINERID", "c"), ("CNI_NETNS", p.as_str()), ("CNI_IFNAME", "eth0")];
    let plugin = |name: &str, command: &str, conf: &Value| {
        let mut e = env.to_vec();
        e.push(("CNI_COMMAND", command));
        call_plugin(&host, std::path::Path::new(&format!("/usr/lib/cni/{name}")), &e, conf)
    };

    // tuning: a sysctl and a MAC in the container, as the result tells it.
    let tuning = json!({"cniVersion": "1.0.0", "name": "chain", "type": "tuning",
        "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "1"}, "mac": "02:00:00:0c:4a:1e", "prevResult": r});
    let a = plugin("tuning", "ADD", &tuning);
    assert!(a.ok, "tuning: {}", a.json);
    assert_eq!(host.exec(&c.ns, "cat", &["/proc/sys/net/ipv4/conf/eth0/arp_ignore"]).trim(), "1");
    assert_eq!(a.json["interfaces"][2]["mac"], "02:00:00:0c:4a:1e", "tuning found eth0 by its sandbox: {}", a.json);

    // firewall (iptables): rules for the container's address.
    let firewall = json!({"cniVersion": "1.0.0", "name": "chain", "type": "firewall", "backend": "iptables",
        "prevResult": a.json});
    let f = plugin("firewall", "ADD", &firewall);
    assert!(f.ok, "firewall: {}", f.json);
    let rules = host.exec(&host.ns, "iptables-save", &[]);
    assert!(rules.contains(&format!("-d {addr}/32")), "firewall used the address: {rules}");
    let check = json!({"cniVersion": "1.0.0", "name": "chain", "type": "firewall", "backend": "iptables",
        "prevResult": f.json});
    assert!(plugin("firewall", "CHECK", &check).ok);

    // Teardown in reverse order.
    assert!(plugin("firewall", "DEL", &firewall).ok);
    assert!(plugin("tuning", "DEL", &tuning).ok);
    ok(&host, "DEL", "c", &p, "eth0", &conf);
    assert!(!host.exec(&host.ns, "iptables-save", &[]).contains(&addr));
}

#[test]
fn delegated_host_local_ipam_decides_the_addresses() {
    let Some(host) = TestHost::new("cni_hostlocal") else { return };
    let ipam_dir = host.dir().join("host-local");
    let mut conf = bridge_conf(&host, "1.0.0", "hl", "unused");
    conf.as_object_mut().unwrap().remove("subnet");
    conf["ipam"] = json!({"type": "host-local", "dataDir": ipam_dir,
        "ranges": [[{"subnet": "10.97.6.0/24", "rangeStart": "10.97.6.100", "gateway": "10.97.6.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}]});
    let (c, p) = container(&host, "c");
    let r = ok(&host, "ADD", "c", &p, "eth0", &conf);
    assert_eq!(r["ips"][0]["address"], "10.97.6.100/24", "{r}");
    assert!(ipam_dir.join("hl").join("10.97.6.100").exists(), "host-local recorded it");
    assert!(host.ping(&c.ns, "10.97.6.1".parse().unwrap()));
    // A second container gets host-local's next address.
    let (_d, pd) = container(&host, "d");
    assert_eq!(ok(&host, "ADD", "d", &pd, "eth0", &conf)["ips"][0]["address"], "10.97.6.101/24");
    // DEL gives the address back to host-local.
    ok(&host, "DEL", "c", &p, "eth0", &conf);
    ok(&host, "DEL", "c", &p, "eth0", &conf);
    assert!(!ipam_dir.join("hl").join("10.97.6.100").exists(), "host-local released it");
    ok(&host, "DEL", "d", &pd, "eth0", &conf);

    // A failure after host-local gave an address gives it back.
    let mut bad = conf.clone();
    bad["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80}, {"hostPort": 8080, "containerPort": 80}]});
    let a = call(&host, "ADD", "c", &p, "eth0", &bad);
    assert!(!a.ok, "{}", a.json);
    let held: Vec<_> = std::fs::read_dir(ipam_dir.join("hl"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .collect();
    assert!(held.is_empty(), "host-local holds {held:?}");
}

#[test]
fn gc_removes_what_the_runtime_no_longer_lists_and_status_answers() {
    let Some(host) = TestHost::new("cni_gc") else { return };
    let conf = bridge_conf(&host, "1.1.0", "gcnet", "10.97.7.0/24");
    let (_a, pa) = container(&host, "a");
    let (_b, pb) = container(&host, "b");
    ok(&host, "ADD", "a", &pa, "eth0", &conf);
    ok(&host, "ADD", "b", &pb, "eth0", &conf);
    assert_eq!(veths(&host).len(), 2);
    ok(&host, "STATUS", "", "", "", &conf);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "a", "ifname": "eth0"}]);
    ok(&host, "GC", "", "", "", &gc);
    let ctl = controller(&host, &conf);
    let left: Vec<String> = ctl.endpoints(Some("gcnet")).unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(left, ["a-eth0"]);
    assert_eq!(veths(&host).len(), 1);
    assert!(ctl.sandbox("cni-b").is_err());
    ok(&host, "DEL", "a", &pa, "eth0", &conf);

    // STATUS fails with 50 when the store cannot be used.
    let mut broken = conf.clone();
    broken["dataDir"] = json!("/proc/cnm-no-such-dir");
    let a = call(&host, "STATUS", "", "", "", &broken);
    assert!(!a.ok && a.json["code"] == 50, "{}", a.json);
}

#[test]
fn networks_are_isolated_and_aliases_resolve_with_cnm_dns() {
    let Some(host) = TestHost::new("cni_names") else { return };
    // cnm's DNS server, as `cnm agent` runs it over the same run directory.
    let resolv = host.dir().join("host-resolv.conf");
    std::fs::create_dir_all(host.dir()).unwrap();
    std::fs::write(&resolv, "nameserver 192.0.2.53\n").unwrap();
    let dns =
        cnm_dns::DnsServer::start(cnm_dns::ServerConfig::new(host.ns.try_clone().unwrap()).host_resolv_conf(&resolv))
            .unwrap();
    let run = host.dir().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let control = cnm_dns::ControlSocket::serve(dns.clone(), run.join("dns.sock")).unwrap();

    let mut front = bridge_conf(&host, "1.0.0", "front", "10.97.8.0/24");
    let back = json!({"cniVersion": "1.0.0", "name": "back", "type": "cnm", "subnet": "10.97.9.0/24",
        "bridge": host.name("bk"), "dataDir": front["dataDir"], "runDir": front["runDir"]});
    front["runtimeConfig"] = json!({"aliases": {"front": ["web"]}});
    let (a, pa) = container(&host, "a");
    let (b, pb) = container(&host, "b");
    let (c, pc) = container(&host, "c");
    let ra = ok(&host, "ADD", "a", &pa, "eth0", &front);
    front["runtimeConfig"] = json!({});
    ok(&host, "ADD", "b", &pb, "eth0", &front);
    let rc = ok(&host, "ADD", "c", &pc, "eth0", &back);
    let addr = |r: &Value| r["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    assert_eq!(ra["dns"]["nameservers"], json!(["127.0.0.11"]), "{ra}");

    // The alias resolves for a container on the same network.
    let answer = host.exec(&b.ns, "dig", &["+short", "+time=2", "+tries=2", "@127.0.0.11", "web"]);
    assert_eq!(answer.trim(), addr(&ra));
    // Same network: reachable (the positive control); the other network: not.
    assert!(host.ping(&b.ns, addr(&ra).parse().unwrap()));
    assert!(host.ping(&c.ns, "10.97.9.1".parse().unwrap()), "c reaches its own gateway");
    assert!(!host.ping(&c.ns, addr(&ra).parse().unwrap()), "c on back must not reach a on front");
    assert!(!host.ping(&a.ns, addr(&rc).parse().unwrap()), "nor a reach c");

    for (id, p, conf) in [("a", &pa, &front), ("b", &pb, &front), ("c", &pc, &back)] {
        ok(&host, "DEL", id, p, "eth0", conf);
    }
    control.close();
    dns.stop();
}
