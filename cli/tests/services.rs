//! Services across three hosts and etcd, all in namespaces, with each
//! host's own `cnm agent`: the ingress routing mesh from a client on the
//! underlay (socat, to a host without a backend), host-mode ports, the
//! virtual IP and the DNS names from inside a container (dig), backend
//! changes, and bad requests that must leave the store and the kernel as
//! they were.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use cnm_core::Store;
use cnm_netns::testing::{Background, TestHost};
use cnm_netns::NetNs;

mod common;
use common::cluster::{cluster, until, Host, ETCD_IP};
use common::{underlay_ns, wait_listening};

/// A server in `ns` on port 80 that says `name` to every connection.
fn who_am_i(tb: &TestHost, ns: &NetNs, name: &str) -> Background {
    let bg = tb.spawn(ns, "socat", &["TCP-LISTEN:80,fork,reuseaddr", &format!("SYSTEM:echo {name}")]);
    wait_listening(ns, 80);
    bg
}

/// Which backend answers a connection from `ns` to `to` (none: refused or
/// silent).
fn who(ns: &NetNs, to: SocketAddr) -> Option<String> {
    ns.run(move || {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim().to_string())
    })
    .unwrap()
}

/// The backends that answer `n` connections.
fn answers(ns: &NetNs, to: SocketAddr, n: usize) -> BTreeSet<String> {
    let all: Vec<Option<String>> = (0..n).map(|_| who(ns, to)).collect();
    assert!(all.iter().all(Option::is_some), "connections to {to} unanswered: {all:?}");
    all.into_iter().flatten().collect()
}

/// A sandbox on `net`; its namespace.
fn container(h: &Host, name: &str, net: &str) -> NetNs {
    let path = h.ok(&["sandbox", "create", "--dns", ETCD_IP, name]);
    h.ok(&["connect", net, name]);
    NetNs::open(path.trim()).unwrap()
}

/// A host's ingress sandbox.
fn ingress_sbox(h: &Host) -> NetNs {
    let v: serde_json::Value = serde_json::from_str(&h.ok(&["sandbox", "inspect", "ingress-sbox"])).unwrap();
    NetNs::open(v["NetNs"].as_str().expect("the sandbox's namespace")).unwrap()
}

/// The backend addresses an ingress sandbox balances ports over.
fn ingress_targets(sbox: &NetNs) -> String {
    sbox.exec("nft", ["list", "map", "inet", "cnm-lb", "port_backends"]).unwrap_or_default()
}

/// Everything in the store, and every host's nftables ruleset.
fn snapshot(c: &common::cluster::Cluster) -> String {
    let mut out = String::new();
    for e in c.store().list("").unwrap() {
        out.push_str(&format!("{} {}\n", e.key, String::from_utf8_lossy(&e.value)));
    }
    for h in &c.hosts {
        out.push_str(&h.ns.ns.exec("nft", ["list", "ruleset"]).unwrap());
    }
    out
}

#[test]
fn services_balance_across_three_hosts_through_ingress_and_virtual_ips() {
    let Some(mut c) = cluster("svc-mesh") else { return };
    for h in &mut c.hosts {
        h.start_agent();
    }
    c.wait_hosts_registered(3);
    let (h1, h2, h3) = (&c.hosts[0], &c.hosts[1], &c.hosts[2]);
    h1.ok(&["network", "create", "-d", "overlay", "--subnet", "10.60.0.0/24", "front"]);

    // Three backends, on hosts 1 and 2.
    let b1 = container(h1, "b1", "front");
    let b2 = container(h1, "b2", "front");
    let b3 = container(h2, "b3", "front");
    let _servers: Vec<Background> =
        [(&b1, "b1"), (&b2, "b2"), (&b3, "b3")].iter().map(|(ns, n)| who_am_i(&c.tb, ns, n)).collect();

    let id = h1.ok(&["service", "create", "--network", "front", "-p", "8080:80", "-p", "mode=host,9090:80", "web"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    h1.ok(&["service", "add-backend", "web", "b1"]);
    h1.ok(&["service", "add-backend", "web", "b2"]);
    h2.ok(&["service", "add-backend", "web", "b3"]);
    let ls = h3.ok(&["service", "ls"]);
    assert!(ls.contains("web") && ls.contains("*:8080->80/tcp (ingress)"), "{ls}");

    // A client on the underlay, to host 3, which has no backend: every
    // backend answers, through the ingress network.
    let client = underlay_ns(&c.tb, "client", "192.0.2.50");
    let mesh: SocketAddr = "192.0.2.3:8080".parse().unwrap();
    until(Duration::from_secs(20), "host 3's published port reaching all three", || {
        (0..30).filter_map(|_| who(&client.ns, mesh)).collect::<BTreeSet<_>>().len() == 3
    });
    assert_eq!(answers(&client.ns, mesh, 60), BTreeSet::from(["b1".into(), "b2".into(), "b3".into()]));

    // Host mode: only on the hosts that have a backend, to their own.
    let on_h2: SocketAddr = "192.0.2.2:9090".parse().unwrap();
    until(Duration::from_secs(20), "host 2's host-mode port", || who(&client.ns, on_h2).is_some());
    assert_eq!(answers(&client.ns, on_h2, 20), BTreeSet::from(["b3".into()]));
    assert_eq!(who(&client.ns, "192.0.2.3:9090".parse().unwrap()), None, "host 3 has no backend");

    // Inside a container of host 3: the virtual IP, NAME and tasks.NAME.
    let inspect: serde_json::Value = serde_json::from_str(&h3.ok(&["service", "inspect", "web"])).unwrap();
    let vip = inspect[0]["vips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    let c1 = container(h3, "c1", "front");
    let to_vip: SocketAddr = format!("{vip}:80").parse().unwrap();
    assert_eq!(answers(&c1, to_vip, 40), BTreeSet::from(["b1".into(), "b2".into(), "b3".into()]));
    let dig = |name: &str| -> BTreeSet<String> {
        let out = h3.ok(&["exec", "c1", "--", "dig", "+short", "+tries=1", "+time=2", "@127.0.0.11", name]);
        out.lines().map(str::to_string).collect()
    };
    until(Duration::from_secs(10), "web resolving on host 3", || dig("web") == BTreeSet::from([vip.clone()]));
    let tasks: BTreeSet<String> = inspect[0]["backends"]
        .as_array()
        .map(|_| {
            let v: serde_json::Value = serde_json::from_str(&h3.ok(&["service", "inspect", "web"])).unwrap();
            let front = v[0]["vips"][0]["network_id"].clone();
            v[0]["backends"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|b| b["addresses"].as_array().unwrap().clone())
                .filter(|a| a["network_id"] == front)
                .map(|a| a["address"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap();
    assert_eq!(tasks.len(), 3);
    until(Duration::from_secs(10), "tasks.web on host 3", || dig("tasks.web") == tasks);

    // A backend removed: once every host has it out, no new connection
    // reaches it, and the others still answer.
    let b1_ingress = {
        let v: serde_json::Value = serde_json::from_str(&h1.ok(&["service", "inspect", "web"])).unwrap();
        let ingress = v[0]["ingress_network"].clone();
        let b = v[0]["backends"].as_array().unwrap().iter().find(|b| b["sandbox"] == "b1").unwrap().clone();
        let a = b["addresses"].as_array().unwrap().iter().find(|a| a["network_id"] == ingress).unwrap().clone();
        a["address"].as_str().unwrap().to_string()
    };
    let sboxes: Vec<NetNs> = [h1, h2, h3].iter().map(|h| ingress_sbox(h)).collect();
    assert!(sboxes.iter().all(|s| ingress_targets(s).contains(&b1_ingress)));
    h1.ok(&["service", "rm-backend", "web", "b1"]);
    let removed = std::time::Instant::now();
    for s in &sboxes {
        until(Duration::from_secs(10), "b1 out of every host's ingress", || !ingress_targets(s).contains(&b1_ingress));
    }
    // Measured, not gated (a shared 2-core machine cannot judge speed); the
    // polls themselves take a few milliseconds each.
    eprintln!("b1 out of all three hosts' ingress {:?} after rm-backend returned", removed.elapsed());
    assert_eq!(answers(&client.ns, mesh, 60), BTreeSet::from(["b2".into(), "b3".into()]));
    until(Duration::from_secs(10), "tasks.web without b1", || dig("tasks.web").len() == 2);

    // Bad requests: refused with what was wrong, nothing changed anywhere.
    let other = container(h1, "x1", "front");
    drop(other);
    h1.ok(&["network", "create", "-d", "overlay", "--subnet", "10.61.0.0/24", "back"]);
    let _x2 = container(h1, "x2", "back");
    let before = snapshot(&c);
    for (args, says) in [
        (
            &["service", "create", "--network", "front", "-p", "8080:81", "api"][..],
            "already published by service \"web\"",
        ),
        (&["service", "create", "--network", "back", "web"][..], "service \"web\" already exists"),
        (&["service", "add-backend", "web", "x2"][..], "not on network front"),
        (&["service", "create", "--network", "nowhere", "api"][..], "network \"nowhere\" not found"),
        (&["service", "create", "-p", "80", "api"][..], "PUBLISHED:TARGET"),
    ] {
        let o = h1.run(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "cnm {args:?}: {err}");
        assert_eq!(snapshot(&c), before, "cnm {args:?} changed something");
    }

    // Removing the service takes its port off every host.
    h1.ok(&["service", "rm", "web"]);
    until(Duration::from_secs(10), "host 3's port closed", || who(&client.ns, mesh).is_none());
    assert!(h2.ok(&["service", "ls"]).lines().count() == 1);
}
