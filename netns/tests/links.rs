//! Link operations of `Handle`, checked against what iproute2 reports inside
//! the test's own namespaces.

use cnm_netns::testing::TestHost;
use cnm_netns::{AddrFlags, BridgeOptions, ErrorKind, LinkAdd, MacAddr, VethPeer, VxlanOptions};
use serde_json::Value;

fn link_json(host: &TestHost, ns: &cnm_netns::NetNs, name: &str) -> Value {
    let v = host.ip_json(ns, &["link", "show", "dev", name]);
    v.as_array().and_then(|a| a.first()).cloned().unwrap_or_else(|| panic!("ip link show dev {name}: {v}"))
}

fn link_names(host: &TestHost, ns: &cnm_netns::NetNs) -> Vec<String> {
    let mut v: Vec<String> = host
        .ip_json(ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn bridge_with_mtu_mac_and_options() {
    let Some(host) = TestHost::new("bridge_with_mtu_mac_and_options") else { return };
    let mac: MacAddr = "02:42:ac:11:00:01".parse().unwrap();
    let opts = BridgeOptions { stp: Some(false), multicast_snooping: Some(false), ..Default::default() };
    let idx = host.handle.link_add(&LinkAdd::bridge_with("br0", opts).mtu(1400).mac(mac).up()).unwrap().index;

    let j = link_json(&host, &host.ns, "br0");
    assert_eq!(j["ifindex"].as_u64().unwrap() as u32, idx);
    assert_eq!(j["mtu"], 1400);
    assert_eq!(j["address"], "02:42:ac:11:00:01");
    assert_eq!(j["linkinfo"]["info_kind"], "bridge");
    assert_eq!(j["linkinfo"]["info_data"]["stp_state"], 0);
    assert_eq!(j["linkinfo"]["info_data"]["mcast_snooping"], 0);
    assert!(j["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{j}");

    let l = host.handle.link_get("br0").unwrap();
    assert_eq!((l.index, l.mtu, l.mac, l.up, l.kind.as_deref()), (idx, 1400, Some(mac), true, Some("bridge")));
    assert_eq!(host.handle.link_get(idx).unwrap().name, "br0");
}

#[test]
fn veth_peer_in_second_namespace_pings_both_ways() {
    let Some(host) = TestHost::new("veth_peer_in_second_namespace") else { return };
    let c = host.container("c1").unwrap();
    let added = host.handle.link_add(&LinkAdd::veth("vh0", VethPeer::new("eth0").netns(&c.ns)).up()).unwrap();
    let idx = added.index;
    c.handle.link_set_up("eth0").unwrap();

    // The peer was created inside the container: no move step.
    assert!(!link_names(&host, &host.ns).contains(&"eth0".to_string()));
    let peer = link_json(&host, &c.ns, "eth0");
    assert_eq!(peer["linkinfo"]["info_kind"], "veth");
    let host_end = host.handle.link_get(idx).unwrap();
    assert_eq!(host_end.kind.as_deref(), Some("veth"));
    assert_eq!(host_end.peer_index, Some(peer["ifindex"].as_u64().unwrap() as u32));
    // link_add reported the same, from the kernel's echo of the new link.
    assert_eq!(added.peer_index, host_end.peer_index);
    assert_eq!(added.name, "vh0");

    host.handle.addr_add(idx, "192.0.2.1/24".parse().unwrap(), AddrFlags::empty()).unwrap();
    let eth0 = c.index("eth0");
    c.handle.addr_add(eth0, "192.0.2.2/24".parse().unwrap(), AddrFlags::empty()).unwrap();
    c.handle.addr_add(eth0, "2001:db8::2/64".parse().unwrap(), AddrFlags::NODAD).unwrap();
    host.handle.addr_add(idx, "2001:db8::1/64".parse().unwrap(), AddrFlags::NODAD).unwrap();

    assert!(host.ping(&host.ns, "192.0.2.2".parse().unwrap()), "host -> container");
    assert!(host.ping(&c.ns, "192.0.2.1".parse().unwrap()), "container -> host");
    assert!(host.ping(&c.ns, "2001:db8::1".parse().unwrap()), "container -> host over IPv6");
    assert!(host.ping(&host.ns, "2001:db8::2".parse().unwrap()), "host -> container over IPv6");
    // And a destination nobody has is not reachable: the check can fail.
    assert!(!host.ping(&c.ns, "192.0.2.99".parse().unwrap()));
}

#[test]
fn vxlan_device_shows_vni_and_port() {
    let Some(host) = TestHost::new("vxlan_device_shows_vni_and_port") else { return };
    let c = host.container("peer").unwrap();
    let under = host.handle.link_add(&LinkAdd::veth("u0", VethPeer::new("u0").netns(&c.ns)).up()).unwrap().index;
    host.handle.addr_add(under, "198.51.100.1/24".parse().unwrap(), AddrFlags::empty()).unwrap();

    let opts = VxlanOptions {
        vni: 4097,
        local: Some("198.51.100.1".parse().unwrap()),
        link: Some(under),
        learning: false,
        proxy: true,
        l2miss: true,
        l3miss: true,
        ..VxlanOptions::new(4097)
    };
    let vx = host.handle.link_add(&LinkAdd::vxlan("vx0", opts).mtu(1450)).unwrap().index;

    let text = host.exec(&host.ns, "ip", &["-d", "link", "show", "vx0"]);
    assert!(text.contains("vxlan id 4097"), "{text}");
    assert!(text.contains("dstport 4789"), "{text}");
    assert!(text.contains("local 198.51.100.1"), "{text}");
    assert!(text.contains("nolearning"), "{text}");
    assert!(text.contains("proxy") && text.contains("l2miss") && text.contains("l3miss"), "{text}");

    let j = link_json(&host, &host.ns, "vx0");
    assert_eq!(j["mtu"], 1450);
    assert_eq!(j["linkinfo"]["info_data"]["id"], 4097);
    assert_eq!(j["linkinfo"]["info_data"]["port"], 4789);
    assert_eq!(j["linkinfo"]["info_data"]["link"], "u0");

    let info = host.handle.link_get(vx).unwrap().vxlan.expect("vxlan info");
    assert_eq!((info.vni, info.port, info.link, info.learning, info.proxy), (4097, 4789, Some(under), false, true));
    assert_eq!(info.local, Some("198.51.100.1".parse().unwrap()));
}

#[test]
fn link_set_operations_match_iproute2() {
    let Some(host) = TestHost::new("link_set_operations") else { return };
    let h = &host.handle;
    let br = h.link_add(&LinkAdd::bridge("br0")).unwrap().index;
    let v = h.link_add(&LinkAdd::veth("va", VethPeer::new("vb"))).unwrap().index;

    h.link_set_up("va").unwrap();
    assert!(link_json(&host, &host.ns, "va")["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    h.link_set_down(v).unwrap();
    assert!(!link_json(&host, &host.ns, "va")["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

    h.link_set_master("va", br).unwrap();
    assert_eq!(link_json(&host, &host.ns, "va")["master"], "br0");
    assert_eq!(h.link_get("va").unwrap().master, Some(br));
    h.link_set_nomaster("va").unwrap();
    assert!(link_json(&host, &host.ns, "va").get("master").is_none());

    h.link_set_mtu("va", 1280).unwrap();
    assert_eq!(link_json(&host, &host.ns, "va")["mtu"], 1280);
    let mac: MacAddr = "02:00:00:00:00:aa".parse().unwrap();
    h.link_set_mac("va", mac).unwrap();
    assert_eq!(link_json(&host, &host.ns, "va")["address"], "02:00:00:00:00:aa");

    h.link_set_name(v, "vrenamed").unwrap();
    assert_eq!(link_json(&host, &host.ns, "vrenamed")["ifindex"].as_u64().unwrap() as u32, v);

    let other = host.container("other").unwrap();
    h.link_set_netns("vrenamed", &other.ns).unwrap();
    assert!(!link_names(&host, &host.ns).contains(&"vrenamed".to_string()));
    assert!(link_names(&host, &other.ns).contains(&"vrenamed".to_string()));

    // link_list agrees with `ip link show` on names and indices.
    let mut ours: Vec<(String, u32)> = h.link_list().unwrap().into_iter().map(|l| (l.name, l.index)).collect();
    let mut theirs: Vec<(String, u32)> = host
        .ip_json(&host.ns, &["link", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["ifname"].as_str().unwrap().to_string(), l["ifindex"].as_u64().unwrap() as u32))
        .collect();
    ours.sort();
    theirs.sort();
    assert_eq!(ours, theirs);

    h.link_del("br0").unwrap();
    h.link_del("vb").unwrap();
    assert_eq!(link_names(&host, &host.ns), vec!["lo".to_string()]);
}

#[test]
fn link_group_deleted_in_one_request() {
    let Some(host) = TestHost::new("link_group_deleted") else { return };
    for i in 0..20 {
        host.handle.link_add(&LinkAdd::veth(format!("g{i}"), VethPeer::new(format!("gp{i}"))).group(7)).unwrap();
    }
    host.handle.link_add(&LinkAdd::veth("keep", VethPeer::new("keepp"))).unwrap();
    assert_eq!(link_json(&host, &host.ns, "g3")["group"], "7");
    host.handle.link_del_group(7).unwrap();
    assert_eq!(link_names(&host, &host.ns), vec!["keep", "keepp", "lo"]);
    assert_eq!(host.handle.link_del_group(0).unwrap_err().kind(), ErrorKind::InvalidArgument);
}

#[test]
fn errors_are_typed_and_leave_nothing() {
    let Some(host) = TestHost::new("errors_are_typed") else { return };
    let h = &host.handle;
    h.link_add(&LinkAdd::veth("vethab12", VethPeer::new("peerab12"))).unwrap();
    let before = link_names(&host, &host.ns);

    let dup = h.link_add(&LinkAdd::veth("vethab12", VethPeer::new("other"))).unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists, "{dup}");
    assert!(dup.to_string().starts_with("link_add veth \"vethab12\": File exists"), "{dup}");

    let missing = h.link_del("nosuchlink").unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
    assert!(missing.to_string().contains("link_del link \"nosuchlink\""), "{missing}");
    assert_eq!(h.link_get(4242).unwrap_err().kind(), ErrorKind::NotFound);

    // 16 bytes: rejected by validation (no errno: the kernel was never asked).
    let long = h.link_add(&LinkAdd::bridge("0123456789abcdef")).unwrap_err();
    assert_eq!(long.kind(), ErrorKind::InvalidArgument);
    assert_eq!(long.errno(), None, "{long}");
    assert!(long.to_string().contains("at most 15 bytes"), "{long}");
    for bad in ["a/b", "with space", ""] {
        let e = h.link_add(&LinkAdd::bridge(bad)).unwrap_err();
        assert_eq!((e.kind(), e.errno()), (ErrorKind::InvalidArgument, None), "{bad:?}: {e}");
    }
    let e = h.link_add(&LinkAdd::veth("okname", VethPeer::new("peer-name-too-long"))).unwrap_err();
    assert_eq!((e.kind(), e.errno()), (ErrorKind::InvalidArgument, None), "{e}");
    let e = h.link_add(&LinkAdd::vxlan("vxbad", VxlanOptions::new(1 << 24))).unwrap_err();
    assert_eq!((e.kind(), e.errno()), (ErrorKind::InvalidArgument, None), "{e}");
    let e = h.link_add(&LinkAdd::bridge("brmtu").mtu(20)).unwrap_err();
    assert_eq!((e.kind(), e.errno()), (ErrorKind::InvalidArgument, None), "{e}");

    assert_eq!(link_names(&host, &host.ns), before, "nothing left behind");
}

#[test]
fn kernel_extended_ack_reaches_the_error() {
    let Some(host) = TestHost::new("kernel_extended_ack") else { return };
    host.handle.link_add(&LinkAdd::vxlan("vxa", VxlanOptions::new(100))).unwrap();
    // Same VNI, same port, same (no) local address: the kernel refuses and says why.
    let e = host.handle.link_add(&LinkAdd::vxlan("vxb", VxlanOptions::new(100))).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert!(e.to_string().contains("VNI"), "extended ACK text missing: {e}");
    assert!(!link_names(&host, &host.ns).contains(&"vxb".to_string()));
}

#[test]
fn dumps_stay_consistent_while_links_change() {
    let Some(host) = TestHost::new("dumps_stay_consistent") else { return };
    // Enough links that one dump spans several datagrams.
    for i in 0..150 {
        host.handle.link_add(&LinkAdd::veth(format!("s{i}"), VethPeer::new(format!("sp{i}")))).unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let churn = cnm_netns::Handle::open(&host.ns).unwrap();
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let name = format!("c{}", i % 4);
                let _ = churn.link_add(&LinkAdd::bridge(name.as_str()));
                let _ = churn.link_del(name.as_str());
                i += 1;
            }
        });
        for _ in 0..40 {
            let links = host.handle.link_list().unwrap();
            let mut stable: Vec<&str> = links.iter().map(|l| l.name.as_str()).filter(|n| n.starts_with('s')).collect();
            stable.sort_unstable();
            let before = stable.len();
            stable.dedup();
            assert_eq!(before, stable.len(), "a link appeared twice in one listing");
            assert_eq!(stable.len(), 300, "a listing missed links");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn bridge_port_hairpin_alias_and_group() {
    let Some(host) = TestHost::new("bridge_port_hairpin_alias") else { return };
    let h = &host.handle;
    let br = h.link_add(&LinkAdd::bridge("br0").up()).unwrap().index;
    let va = h.link_add(&LinkAdd::veth("va", VethPeer::new("vb")).master(br).alias("cnm:endpoint-1").up()).unwrap();
    assert_eq!(va.alias.as_deref(), Some("cnm:endpoint-1"));
    assert_eq!(link_json(&host, &host.ns, "va")["ifalias"], "cnm:endpoint-1");
    assert_eq!(h.link_get("va").unwrap().alias.as_deref(), Some("cnm:endpoint-1"));

    let port = |host: &TestHost| host.bridge_json(&host.ns, &["-d", "link", "show", "dev", "va"])[0].clone();
    assert_eq!(port(&host)["hairpin"], false);
    h.link_set_hairpin("va", true).unwrap();
    assert_eq!(port(&host)["hairpin"], true, "{}", port(&host));
    h.link_set_hairpin(va.index, false).unwrap();
    assert_eq!(port(&host)["hairpin"], false);
    assert_eq!(h.link_set_hairpin("nosuch", true).unwrap_err().kind(), ErrorKind::NotFound);

    h.link_set_group("va", 42).unwrap();
    assert_eq!(link_json(&host, &host.ns, "va")["group"], "42");
    assert_eq!(h.link_get("va").unwrap().group, 42);

    // Down and into a group in one request, still on its bridge.
    let master = h.link_get("va").unwrap().master;
    assert!(master.is_some());
    h.link_park("va", 43).unwrap();
    let l = h.link_get("va").unwrap();
    assert_eq!((l.up, l.master, l.group), (false, master, 43));
    assert!(!link_json(&host, &host.ns, "va")["flags"].as_array().unwrap().iter().any(|f| f == "UP"));

    // Hairpin, alias and no IPv6 link-local address, set with the link.
    let add = LinkAdd::veth("vc", VethPeer::new("vd")).master(br).alias("cnm:endpoint-2").hairpin().addrgenmode_none();
    h.link_add(&add.up()).unwrap();
    h.link_set_up("vd").unwrap();
    let port = host.bridge_json(&host.ns, &["-d", "link", "show", "dev", "vc"])[0].clone();
    assert_eq!(port["hairpin"], true, "{port}");
    let j = link_json(&host, &host.ns, "vc");
    assert_eq!((j["ifalias"].as_str(), j["inet6_addr_gen_mode"].as_str()), (Some("cnm:endpoint-2"), Some("none")));
    // The positive control first: the peer, created without it, gets its
    // link-local address (the kernel adds it asynchronously) ...
    let t = std::time::Instant::now();
    let peer_has_one =
        || !host.ip_json(&host.ns, &["-6", "addr", "show", "dev", "vd"])[0]["addr_info"].as_array().unwrap().is_empty();
    while !peer_has_one() {
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "the peer never got its link-local address");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // ... by which time `vc`, which got carrier at the same moment, would
    // have had one too.
    let addrs = host.ip_json(&host.ns, &["-6", "addr", "show", "dev", "vc"]);
    assert!(addrs.as_array().unwrap().iter().all(|a| a["addr_info"].as_array().unwrap().is_empty()), "{addrs}");
    // Hairpin needs a bridge, and that is checked before the kernel is asked.
    let e = h.link_add(&LinkAdd::veth("ve", VethPeer::new("vf")).hairpin()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(h.link_get("ve").is_err());
}

#[test]
fn vxlan_made_in_another_namespace_keeps_its_socket_here() {
    let Some(host) = TestHost::new("vxlan_made_elsewhere") else { return };
    let c = host.container("ovl").unwrap();
    let br = c.handle.link_add(&LinkAdd::bridge("br0").up()).unwrap().index;
    let opts = VxlanOptions { learning: false, proxy: true, udp_csum: false, ..VxlanOptions::new(4321) };
    // Asked for from the host's handle, made in the container, attached to
    // its bridge and up, in one request.
    let vx = host.handle.link_add(&LinkAdd::vxlan("vx-el", opts).mtu(1450).netns(&c.ns).master(br).up()).unwrap();
    assert!(!link_names(&host, &host.ns).contains(&"vx-el".to_string()));
    let j = link_json(&host, &c.ns, "vx-el");
    assert_eq!(j["ifindex"].as_u64(), Some(u64::from(vx.index)));
    assert_eq!((j["master"].as_str(), j["mtu"].as_u64()), (Some("br0"), Some(1450)));
    assert!(j["flags"].as_array().unwrap().iter().any(|f| f == "UP"), "{j}");
    let info = &j["linkinfo"]["info_data"];
    assert_eq!(
        (info["id"].as_u64(), info["learning"].as_bool(), info["udp_csum"].as_bool()),
        (Some(4321), Some(false), Some(false))
    );
    // Its UDP socket is in the host namespace, not in the container.
    let here = host.exec(&host.ns, "ss", &["-uln"]);
    let there = host.exec(&c.ns, "ss", &["-uln"]);
    assert!(here.contains(":4789"), "{here}");
    assert!(!there.contains(":4789"), "{there}");
    // What cannot be combined with it is refused before the kernel is asked.
    let bad = LinkAdd::vxlan("vx-bad", VxlanOptions::new(4322)).netns(&c.ns).alias("x");
    assert_eq!(host.handle.link_add(&bad).unwrap_err().kind(), cnm_netns::ErrorKind::InvalidArgument);
}
