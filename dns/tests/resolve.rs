//! The embedded DNS server inside real sandboxes, queried with `dig` and
//! glibc's `getent`: local names only from shared networks, PTR,
//! forwarding from the host namespace to a stub upstream, TCP,
//! truncation, SERVFAIL for a silent upstream, port 53 left to the
//! container, and nothing left behind.

mod common;

use std::net::{IpAddr, TcpListener, UdpSocket};
use std::time::Duration;

use cnm_core::{DnsConfig, NetworkConfig, SandboxConfig};
use common::{rig, Client, Got, BLACKHOLE, STUB_ANSWER, UPSTREAM};

#[test]
fn names_resolve_on_shared_networks_only() {
    let Some(r) = rig("dns_names") else { return };
    let mut back = NetworkConfig::new("back", "bridge").subnet("10.78.0.0/24");
    back.options.insert("com.docker.network.bridge.name".into(), r.host.name("bk"));
    r.ctl.create_network(back).unwrap();
    let (c1, _) = r.container("c1", "front", &[]);
    let (_, ip2) = r.container("c2", "front", &["web"]);
    let (_, ip3) = r.container("c3", "front", &["web"]);
    let (_, ip4) = r.container("c4", "back", &[]);

    let resolv = std::fs::read_to_string(r.ctl.sandbox_files_dir("c1").unwrap().join("resolv.conf")).unwrap();
    assert_eq!(resolv, "nameserver 127.0.0.11\nsearch example.test\noptions ndots:0\n");

    assert_eq!(r.dig(&c1, &["c2"]), vec![ip2.to_string()]);
    assert_eq!(r.dig(&c1, &["C2.Front"]), vec![ip2.to_string()], "case-insensitive, NAME.NETWORK");
    let sb2 = r.ctl.sandbox("c2").unwrap();
    assert_eq!(r.dig(&c1, &[sb2.id.short()]), vec![ip2.to_string()], "the short id");
    let mut web = r.dig(&c1, &["web"]);
    web.sort();
    let mut want = vec![ip2.to_string(), ip3.to_string()];
    want.sort();
    assert_eq!(web, want);
    // Round robin: the first address changes between answers.
    let firsts: std::collections::BTreeSet<String> = (0..4).map(|_| r.dig(&c1, &["web"])[0].clone()).collect();
    assert_eq!(firsts.len(), 2, "{firsts:?}");
    // c4 is on "back" only: c1 never learns it (the stub says NXDOMAIN
    // for single labels), and c4 does not learn c1.
    let full = r.dig_full(&c1, &["c4"]);
    assert!(full.contains("status: NXDOMAIN"), "{full}");
    assert!(!full.contains(&ip4.to_string()));
    // PTR: SANDBOX.NETWORK.
    assert_eq!(r.dig(&c1, &["-x", &ip2.to_string()]), vec!["c2.front."]);
    // glibc's resolver, with the sandbox's files in place of /etc's (as
    // `ip netns exec` and `cnm exec` mount them).
    let files = r.ctl.sandbox_files_dir("c1").unwrap();
    let script = format!(
        "mount --bind {0}/resolv.conf /etc/resolv.conf && mount --bind {0}/hosts /etc/hosts && getent hosts c2 && getent ahostsv4 web",
        files.display()
    );
    let out = r.host.exec(&c1, "unshare", &["-m", "sh", "-c", &script]);
    assert!(out.lines().next().unwrap().starts_with(&format!("{ip2} ")), "{out}");
    assert!(out.contains(&ip3.to_string()), "{out}");
}

#[test]
fn other_names_are_forwarded_from_the_host_namespace() {
    let Some(r) = rig("dns_forward") else { return };
    let (c1, _) = r.container("c1", "front", &[]);
    assert_eq!(r.dig(&c1, &["www.example.com"]), vec![STUB_ANSWER.to_string()]);
    // Over TCP to us, and on to the stub over TCP.
    assert_eq!(r.dig(&c1, &["+tcp", "tcp.example.com"]), vec![STUB_ANSWER.to_string()]);
    assert_eq!(r.dig(&c1, &["+tcp", "c1"]).len(), 1);
    // A truncated upstream answer is asked again over TCP: dig gets all
    // 100 records (over TCP from us, after our TC answer over UDP).
    assert_eq!(r.dig(&c1, &["big.example.com"]).len(), 100);
    let tc = r.dig_full(&c1, &["+ignore", "+noedns", "big.example.com"]);
    assert!(tc.contains(" tc"), "{tc}");
    let log = r.stub.log.lock().unwrap().clone();
    assert!(log.iter().any(|(_, n)| n.starts_with("tcp:big.")), "{log:?}");
    // Every query reached the stub from the host's uplink address, never
    // from a sandbox (or from the test process's own namespace).
    assert!(!log.is_empty());
    for (src, name) in &log {
        assert_eq!(*src, "198.51.100.1".parse::<IpAddr>().unwrap(), "{name}");
    }
    assert!(!log.iter().any(|(_, n)| n.trim_end_matches('.') == "c1"), "local names never go upstream: {log:?}");
}

#[test]
fn a_silent_upstream_gets_the_client_a_servfail() {
    let Some(r) = rig("dns_silent") else { return };
    let dns = DnsConfig { servers: vec![BLACKHOLE.parse().unwrap()], ..Default::default() };
    r.ctl.create_sandbox(SandboxConfig { name: "c1".into(), dns, ..Default::default() }).unwrap();
    let (c1, _) = r.connect("c1", "front", &[]);
    // Positive control on the same path: local names answer.
    assert_eq!(r.dig(&c1, &["c1"]).len(), 1);
    // dig waits 5 s: a SERVFAIL (not a timeout) means we answered first.
    let out = r.dig_full(&c1, &["www.example.com"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    let out = r.dig_full(&c1, &["+tcp", "www.example.com"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
}

#[test]
fn port_53_stays_free_for_the_containers_own_server() {
    let Some(r) = rig("dns_port53") else { return };
    let (c1, ip1) = r.container("c1", "front", &[]);
    let (c2, _) = r.container("c2", "front", &[]);
    // The container binds port 53 on every address, UDP and TCP.
    let (own_udp, _own_tcp) =
        c1.run(|| (UdpSocket::bind("0.0.0.0:53").unwrap(), TcpListener::bind("0.0.0.0:53").unwrap())).unwrap();
    own_udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // 127.0.0.11:53 still answers, UDP and TCP.
    assert_eq!(r.dig(&c1, &["c2"]).len(), 1);
    assert_eq!(r.dig(&c1, &["+tcp", "c2"]).len(), 1);
    // And the container's own server gets what is sent to its address.
    let probe = c2.run(|| UdpSocket::bind("0.0.0.0:0").unwrap()).unwrap();
    probe.send_to(b"hello", (ip1, 53)).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = own_udp.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
}

#[test]
fn names_come_and_go_with_connect_and_disconnect() {
    let Some(r) = rig("dns_lifecycle") else { return };
    let (c1, _) = r.container("c1", "front", &[]);
    let mut client = Client::new(&c1);
    let runtime_ns = r.host.container("rt").unwrap();
    let path = runtime_ns.ns.proc_path();
    r.ctl.create_sandbox(SandboxConfig { name: "c2".into(), netns: Some(path), ..Default::default() }).unwrap();
    assert_eq!(client.query("c2"), Got::NxDomain, "not connected yet");
    let (_, ip2) = r.connect("c2", "front", &["alias2"]);
    assert_eq!(client.query("c2"), Got::Addrs(vec![ip2]));
    assert_eq!(client.query("alias2.front"), Got::Addrs(vec![ip2]));
    let tables = r.host.exec(&runtime_ns.ns, "nft", &["list", "tables"]);
    assert!(tables.contains("cnm_dns"), "{tables}");
    r.ctl.disconnect("front", "c2").unwrap();
    assert_eq!(client.query("c2"), Got::NxDomain);
    assert_eq!(client.query("alias2"), Got::NxDomain);
    r.ctl.delete_sandbox("c2").unwrap();
    // The runtime's namespace keeps nothing of ours.
    let tables = r.host.exec(&runtime_ns.ns, "nft", &["list", "tables"]);
    assert!(!tables.contains("cnm_dns"), "{tables}");
    assert_eq!(r.dns.sandboxes(), vec!["c1".to_string()]);
    assert_eq!(client.query("www.example.com"), Got::Addrs(vec![STUB_ANSWER]));
    let _ = UPSTREAM;
}

#[test]
fn ipv6_addresses_and_their_reverse_names() {
    let Some(r) = rig("dns_ipv6") else { return };
    let mut six = NetworkConfig::new("six", "bridge").subnet("10.79.0.0/24").subnet("fd00:79::/64");
    six.enable_ipv6 = true;
    six.options.insert("com.docker.network.bridge.name".into(), r.host.name("sx"));
    r.ctl.create_network(six).unwrap();
    let (c1, _) = r.container("c1", "six", &[]);
    r.ctl.create_sandbox(SandboxConfig { name: "c2".into(), ..Default::default() }).unwrap();
    let ep = r.ctl.connect("six", "c2", Default::default()).unwrap();
    let v6 = ep.ipv6.unwrap().addr().to_string();
    assert_eq!(r.dig(&c1, &["AAAA", "c2.six"]), vec![v6.clone()]);
    assert_eq!(r.dig(&c1, &["-x", &v6]), vec!["c2.six."]);
    // glibc asks for both families.
    let files = r.ctl.sandbox_files_dir("c1").unwrap();
    let script = format!("mount --bind {}/resolv.conf /etc/resolv.conf && getent ahosts c2", files.display());
    let out = r.host.exec(&c1, "unshare", &["-m", "sh", "-c", &script]);
    assert!(out.contains(&v6) && out.contains(&ep.ipv4.unwrap().addr().to_string()), "{out}");
}

/// dnsperf, a load generator nobody here wrote, gets an answer to every
/// query it sends, each NOERROR.
#[test]
fn dnsperf_gets_every_answer() {
    let Some(r) = rig("dns_dnsperf") else { return };
    let (c1, _) = r.container("c1", "front", &[]);
    for i in 0..5 {
        r.container(&format!("p{i}"), "front", &["pool"]);
    }
    let file = r.host.dir().join("queries.txt");
    let text: String =
        (0..1000).map(|i| if i % 2 == 0 { format!("p{} A\n", i % 5) } else { "pool A\n".into() }).collect();
    std::fs::write(&file, text).unwrap();
    let out = r.host.exec(
        &c1,
        "dnsperf",
        &["-s", "127.0.0.11", "-d", file.to_str().unwrap(), "-n", "3", "-c", "10", "-q", "20", "-t", "2"],
    );
    let field = |label: &str| -> String {
        out.lines().find(|l| l.trim_start().starts_with(label)).unwrap_or_else(|| panic!("{label}: {out}")).to_string()
    };
    assert!(field("Queries sent:").ends_with(" 3000"), "{out}");
    assert!(field("Queries completed:").contains(" 3000 "), "{out}");
    assert!(field("Queries lost:").contains(" 0 "), "{out}");
    assert!(field("Response codes:").contains("NOERROR 3000 (100.00%)"), "{out}");
}
