//! Addresses, routes, neighbours and FDB entries of `Handle`, checked against
//! `ip -j addr`, `ip -j route`, `ip -j neigh` and `bridge -j fdb show`.

use std::net::IpAddr;

use cnm_netns::testing::TestHost;
use cnm_netns::{
    AddrFlags, ErrorKind, Family, FdbEntry, LinkAdd, MacAddr, Neighbour, Route, Rule, VethPeer, VxlanOptions,
};
use ipnet::IpNet;
use serde_json::Value;

fn addrs_of(host: &TestHost, ns: &cnm_netns::NetNs, dev: &str) -> Vec<String> {
    let v = host.ip_json(ns, &["addr", "show", "dev", dev]);
    let mut out: Vec<String> = v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect();
    out.sort();
    out
}

#[test]
fn addresses_ipv4_and_ipv6() {
    let Some(host) = TestHost::new("addresses_ipv4_and_ipv6") else { return };
    let h = &host.handle;
    let br = h.link_add(&LinkAdd::bridge("br0").up()).unwrap().index;
    let want: Vec<IpNet> =
        ["10.1.1.1/24", "11.1.1.1/24", "fd00:1::1/64", "fd00:2::1/64"].iter().map(|s| s.parse().unwrap()).collect();
    for a in &want {
        h.addr_add(br, *a, AddrFlags::NODAD).unwrap();
    }
    let mut expect: Vec<String> = want.iter().map(|a| a.to_string()).collect();
    expect.sort();
    assert_eq!(addrs_of(&host, &host.ns, "br0"), expect);

    // The IPv4 broadcast address is set as `ip addr add … brd +` would.
    let j = host.ip_json(&host.ns, &["-4", "addr", "show", "dev", "br0"]);
    assert!(j[0]["addr_info"].as_array().unwrap().iter().any(|a| a["broadcast"] == "10.1.1.255"), "{j}");

    let mut listed: Vec<String> = h
        .addr_list(Some(br), None)
        .unwrap()
        .into_iter()
        .filter(|a| !matches!(a.scope, cnm_netns::AddrScope::Link))
        .map(|a| a.address.to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, expect);
    assert_eq!(
        h.addr_list(Some(br), Some(Family::V6)).unwrap().iter().filter(|a| a.address.addr().is_ipv4()).count(),
        0
    );

    let dup = h.addr_add(br, want[0], AddrFlags::empty()).unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists, "{dup}");
    assert!(dup.to_string().contains("addr_add 10.1.1.1/24"), "{dup}");

    h.addr_del(br, want[0]).unwrap();
    h.addr_del(br, want[2]).unwrap();
    assert_eq!(addrs_of(&host, &host.ns, "br0"), vec!["11.1.1.1/24".to_string(), "fd00:2::1/64".to_string()]);
    let gone = h.addr_del(br, want[0]).unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
}

fn routes(host: &TestHost, ns: &cnm_netns::NetNs, v6: bool) -> Vec<Value> {
    let fam = if v6 { "-6" } else { "-4" };
    host.ip_json(ns, &[fam, "route", "show"]).as_array().unwrap().clone()
}

#[test]
fn routes_default_gateway_onlink_and_device() {
    let Some(host) = TestHost::new("routes_default_gateway") else { return };
    let c = host.container("c").unwrap();
    host.handle.link_add(&LinkAdd::veth("vh", VethPeer::new("eth0").netns(&c.ns)).up()).unwrap();
    c.handle.link_set_up("eth0").unwrap();
    let h = &c.handle;
    let eth0 = c.index("eth0");
    h.addr_add(eth0, "172.18.0.2/16".parse().unwrap(), AddrFlags::empty()).unwrap();
    h.addr_add(eth0, "fd00:18::2/64".parse().unwrap(), AddrFlags::NODAD).unwrap();

    h.route_add(&Route::default_via("172.18.0.1".parse().unwrap())).unwrap();
    h.route_add(&Route::default_via("fd00:18::1".parse().unwrap())).unwrap();
    // A gateway outside every subnet works only on-link.
    let onlink = Route::new("203.0.113.0/24".parse().unwrap()).oif(eth0);
    let onlink = Route { gateway: Some("192.168.255.1".parse().unwrap()), ..onlink }.onlink();
    h.route_add(&onlink).unwrap();
    h.route_add(&Route::device("198.51.100.0/24".parse().unwrap(), eth0).metric(50)).unwrap();

    let v4 = routes(&host, &c.ns, false);
    let find =
        |dst: &str| v4.iter().find(|r| r["dst"] == dst).cloned().unwrap_or_else(|| panic!("{dst} not in {v4:?}"));
    assert_eq!(find("default")["gateway"], "172.18.0.1");
    assert_eq!(find("default")["dev"], "eth0");
    let o = find("203.0.113.0/24");
    assert_eq!(o["gateway"], "192.168.255.1");
    assert!(o["flags"].as_array().unwrap().iter().any(|f| f == "onlink"), "{o}");
    let d = find("198.51.100.0/24");
    assert_eq!((d["scope"].as_str(), d["metric"].as_u64()), (Some("link"), Some(50)));
    let v6 = routes(&host, &c.ns, true);
    assert!(v6.iter().any(|r| r["dst"] == "default" && r["gateway"] == "fd00:18::1"), "{v6:?}");

    let listed = h.route_list(None).unwrap();
    let main: Vec<&Route> = listed.iter().filter(|r| r.table == cnm_netns::TABLE_MAIN).collect();
    assert!(main
        .iter()
        .any(|r| r.is_default() && r.gateway == Some("172.18.0.1".parse().unwrap()) && r.oif == Some(eth0)));
    assert!(main.iter().any(|r| r.is_default() && r.gateway == Some("fd00:18::1".parse().unwrap())));
    assert!(main.iter().any(|r| r.dst.to_string() == "203.0.113.0/24" && r.onlink));
    assert!(main.iter().any(|r| r.dst.to_string() == "198.51.100.0/24" && r.metric == Some(50)));
    assert!(h.route_list(Some(Family::V4)).unwrap().iter().all(|r| r.dst.addr().is_ipv4()));

    let dup = h.route_add(&Route::default_via("172.18.0.1".parse().unwrap())).unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists, "{dup}");
    let e = h.route_add(&Route::new("10.0.0.1/8".parse().unwrap()).oif(eth0)).unwrap_err();
    assert_eq!((e.kind(), e.errno()), (ErrorKind::InvalidArgument, None), "{e}");

    h.route_del(&Route::default_via("172.18.0.1".parse().unwrap())).unwrap();
    h.route_del(&Route::device("198.51.100.0/24".parse().unwrap(), eth0).metric(50)).unwrap();
    let v4 = routes(&host, &c.ns, false);
    assert!(!v4.iter().any(|r| r["dst"] == "default" || r["dst"] == "198.51.100.0/24"), "{v4:?}");
    let gone = h.route_del(&Route::default_via("172.18.0.1".parse().unwrap())).unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
}

#[test]
fn permanent_neighbours() {
    let Some(host) = TestHost::new("permanent_neighbours") else { return };
    let h = &host.handle;
    let br = h.link_add(&LinkAdd::bridge("br0").up()).unwrap().index;
    h.addr_add(br, "10.9.0.1/24".parse().unwrap(), AddrFlags::empty()).unwrap();
    let mac: MacAddr = "02:42:0a:09:00:07".parse().unwrap();
    let ip: IpAddr = "10.9.0.7".parse().unwrap();
    h.neigh_add(&Neighbour::permanent(br, ip, mac)).unwrap();
    h.neigh_add(&Neighbour::permanent(br, "fd00:9::7".parse().unwrap(), mac)).unwrap();

    let j = host.ip_json(&host.ns, &["neigh", "show", "dev", "br0"]);
    let e = j.as_array().unwrap().iter().find(|n| n["dst"] == "10.9.0.7").unwrap_or_else(|| panic!("{j}"));
    assert_eq!(e["lladdr"], "02:42:0a:09:00:07");
    assert!(e["state"].as_array().unwrap().iter().any(|s| s == "PERMANENT"), "{e}");
    assert!(j.as_array().unwrap().iter().any(|n| n["dst"] == "fd00:9::7"), "{j}");

    let listed = h.neigh_list(Some(br)).unwrap();
    assert!(listed.iter().any(|n| n.ip == ip && n.mac == Some(mac) && n.state == cnm_netns::NeighState::Permanent));

    let dup = h.neigh_add(&Neighbour::permanent(br, ip, mac)).unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists, "{dup}");
    let other: MacAddr = "02:42:0a:09:00:08".parse().unwrap();
    h.neigh_replace(&Neighbour::permanent(br, ip, other)).unwrap();
    assert!(h.neigh_list(Some(br)).unwrap().iter().any(|n| n.ip == ip && n.mac == Some(other)));

    h.neigh_del(br, ip).unwrap();
    let j = host.ip_json(&host.ns, &["neigh", "show", "dev", "br0"]);
    assert!(!j.as_array().unwrap().iter().any(|n| n["dst"] == "10.9.0.7"), "{j}");
    assert_eq!(h.neigh_del(br, ip).unwrap_err().kind(), ErrorKind::NotFound);
}

#[test]
fn vxlan_fdb_entries() {
    let Some(host) = TestHost::new("vxlan_fdb_entries") else { return };
    let h = &host.handle;
    let opts = VxlanOptions { learning: false, ..VxlanOptions::new(4098) };
    let vx = h.link_add(&LinkAdd::vxlan("vx0", opts).up()).unwrap().index;
    let mac: MacAddr = "02:42:0b:01:01:0c".parse().unwrap();
    let zero = MacAddr::default();
    h.fdb_append(&FdbEntry::vxlan(vx, mac, "192.0.2.12".parse().unwrap())).unwrap();
    // The all-zeros entry may have several destinations: that is what append is for.
    h.fdb_append(&FdbEntry::vxlan(vx, zero, "192.0.2.2".parse().unwrap())).unwrap();
    h.fdb_append(&FdbEntry::vxlan(vx, zero, "192.0.2.3".parse().unwrap())).unwrap();
    let with_vni = FdbEntry {
        vni: Some(5000),
        ..FdbEntry::vxlan(vx, "02:42:0b:01:01:0d".parse().unwrap(), "192.0.2.13".parse().unwrap())
    };
    h.fdb_append(&with_vni).unwrap();

    let j = host.bridge_json(&host.ns, &["fdb", "show", "dev", "vx0"]);
    let entries = j.as_array().unwrap();
    let has =
        |m: &str, dst: &str| entries.iter().any(|e| e["mac"] == m && e["dst"] == dst && e["state"] == "permanent");
    assert!(has("02:42:0b:01:01:0c", "192.0.2.12"), "{j}");
    assert!(has("00:00:00:00:00:00", "192.0.2.2") && has("00:00:00:00:00:00", "192.0.2.3"), "{j}");
    assert!(entries.iter().any(|e| e["mac"] == "02:42:0b:01:01:0d" && e["vni"] == 5000), "{j}");

    let listed = h.fdb_list(Some(vx)).unwrap();
    assert!(listed.iter().any(|e| e.mac == mac && e.dst == Some("192.0.2.12".parse().unwrap()) && e.permanent));
    assert_eq!(listed.iter().filter(|e| e.mac == zero).count(), 2);

    h.fdb_del(&FdbEntry::vxlan(vx, zero, "192.0.2.2".parse().unwrap())).unwrap();
    h.fdb_del(&FdbEntry::vxlan(vx, mac, "192.0.2.12".parse().unwrap())).unwrap();
    let j = host.bridge_json(&host.ns, &["fdb", "show", "dev", "vx0"]);
    let entries = j.as_array().unwrap();
    assert!(!entries.iter().any(|e| e["mac"] == "02:42:0b:01:01:0c"), "{j}");
    assert!(entries.iter().any(|e| e["mac"] == "00:00:00:00:00:00" && e["dst"] == "192.0.2.3"), "{j}");
    assert!(!entries.iter().any(|e| e["dst"] == "192.0.2.2"), "{j}");
    let gone = h.fdb_del(&FdbEntry::vxlan(vx, mac, "192.0.2.12".parse().unwrap())).unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
}

#[test]
fn policy_rules_by_source() {
    let Some(host) = TestHost::new("policy_rules_by_source") else { return };
    let h = &host.handle;
    let rules = [
        Rule::from_source("10.1.1.0/24".parse().unwrap(), 4097, 100),
        Rule::from_source("fd00:1::/64".parse().unwrap(), 70000, 101),
    ];
    for r in &rules {
        h.rule_add(r).unwrap();
    }
    let e = h.rule_add(&rules[0]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    let v4 = host.ip_json(&host.ns, &["-4", "rule", "show"]);
    assert!(
        v4.as_array()
            .unwrap()
            .iter()
            .any(|r| r["priority"] == 100 && r["src"] == "10.1.1.0" && r["srclen"] == 24 && r["table"] == "4097"),
        "{v4}"
    );
    let v6 = host.ip_json(&host.ns, &["-6", "rule", "show"]);
    assert!(v6.as_array().unwrap().iter().any(|r| r["priority"] == 101 && r["table"] == "70000"), "{v6}");
    let listed = h.rule_list().unwrap();
    for r in &rules {
        assert!(listed.contains(r), "{r:?} not in {listed:?}");
    }
    // The kernel's own (local, main, default) are listed too.
    assert!(listed.iter().any(|r| r.table == 254 && r.priority == 32766 && !r.v6));
    for r in &rules {
        h.rule_del(r).unwrap();
    }
    assert_eq!(h.rule_del(&rules[0]).unwrap_err().kind(), ErrorKind::NotFound);
    assert!(!host.exec(&host.ns, "ip", &["rule"]).contains("4097"));
}
