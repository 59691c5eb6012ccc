//! Golden files of the rendered nftables script and iptables-restore input
//! for a table of cases; no root needed. `UPDATE_GOLDEN=1` rewrites them.

use cnm_core::{FirewallNetwork, PortBinding, Protocol};
use cnm_nat::iptables::{self, Family};
use cnm_nat::{nft, Desired, EndpointPorts, Mapping};

fn net(id: &str, br: &str, subnets: &[&str], f: impl FnOnce(&mut FirewallNetwork)) -> FirewallNetwork {
    let mut n = FirewallNetwork {
        id: id.into(),
        interface: br.into(),
        subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
        internal: false,
        masquerade: true,
        icc: true,
    };
    f(&mut n);
    n
}

fn mapping(proto: Protocol, host_ip: Option<&str>, host: u16, ctr: u16, ip: &str) -> Mapping {
    Mapping {
        binding: PortBinding {
            protocol: proto,
            host_ip: host_ip.map(|h| h.parse().unwrap()),
            host_port: host,
            container_port: ctr,
        },
        container_ip: ip.parse().unwrap(),
    }
}

fn cases() -> Vec<(&'static str, Desired)> {
    let plain = net("n1", "br-plain", &["172.18.0.0/24"], |_| {});
    let ports = |m: Vec<Mapping>| vec![EndpointPorts { endpoint: "e1".into(), network: "n1".into(), mappings: m }];
    vec![
        ("empty", Desired::default()),
        ("plain", Desired { networks: vec![plain.clone()], ports: vec![] }),
        (
            "internal",
            Desired { networks: vec![net("n1", "br-int", &["172.19.0.0/24"], |n| n.internal = true)], ports: vec![] },
        ),
        (
            "icc-off",
            Desired { networks: vec![net("n1", "br-icc", &["172.20.0.0/24"], |n| n.icc = false)], ports: vec![] },
        ),
        (
            "masquerade-off",
            Desired {
                networks: vec![net("n1", "br-nomasq", &["172.21.0.0/24"], |n| n.masquerade = false)],
                ports: vec![],
            },
        ),
        (
            "two-networks",
            Desired { networks: vec![plain.clone(), net("n2", "br-other", &["172.22.0.0/24"], |_| {})], ports: vec![] },
        ),
        (
            "ipv6",
            Desired {
                networks: vec![net("n1", "br-v6", &["172.23.0.0/24", "fd00:23::/64"], |_| {})],
                ports: ports(vec![
                    mapping(Protocol::Tcp, None, 8080, 80, "172.23.0.2"),
                    mapping(Protocol::Tcp, None, 8080, 80, "fd00:23::2"),
                ]),
            },
        ),
        (
            "range",
            Desired {
                networks: vec![plain.clone()],
                ports: ports((0..3).map(|i| mapping(Protocol::Udp, None, 8000 + i, 90 + i, "172.18.0.2")).collect()),
            },
        ),
        (
            "host-ip",
            Desired {
                networks: vec![plain.clone()],
                ports: ports(vec![mapping(Protocol::Sctp, Some("192.0.2.10"), 9000, 9000, "172.18.0.2")]),
            },
        ),
        (
            "localhost",
            Desired {
                networks: vec![plain],
                ports: ports(vec![mapping(Protocol::Tcp, Some("127.0.0.1"), 5432, 5432, "172.18.0.2")]),
            },
        ),
    ]
}

fn check(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var("UPDATE_GOLDEN").is_ok() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(got, want, "{name} differs from its golden file");
}

#[test]
fn rendered_rules_match_the_golden_files() {
    for (name, d) in cases() {
        check(&format!("{name}.nft"), &nft::render_ruleset(&d));
        let all = iptables::jumps(Family::V4);
        check(&format!("{name}.iptables"), &iptables::render(&d, Family::V4, &all));
        check(&format!("{name}.ip6tables"), &iptables::render(&d, Family::V6, &iptables::jumps(Family::V6)));
    }
}

#[test]
fn element_changes_touch_only_elements() {
    let m = vec![
        mapping(Protocol::Tcp, None, 8080, 80, "172.18.0.2"),
        mapping(Protocol::Tcp, Some("127.0.0.1"), 9090, 80, "172.18.0.2"),
    ];
    let add = nft::render_add(&m);
    assert_eq!(
        add,
        "add element inet cnm dnat4_any { tcp . 8080 : 172.18.0.2 . 80 }\n\
         add element inet cnm dnat4_ip { 127.0.0.1 . tcp . 9090 : 172.18.0.2 . 80 }\n\
         add element inet cnm published4 { 172.18.0.2 . tcp . 80 }\n"
    );
    let del = nft::render_remove(&m, &Default::default());
    assert_eq!(
        del,
        "delete element inet cnm dnat4_any { tcp . 8080 }\n\
         delete element inet cnm dnat4_ip { 127.0.0.1 . tcp . 9090 }\n\
         delete element inet cnm published4 { 172.18.0.2 . tcp . 80 }\n"
    );
    assert!(!add.contains("rule") && !del.contains("rule") && !del.contains("flush"));
}

#[test]
fn missing_jumps_are_found_in_iptables_save_output() {
    let save = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m addrtype --dst-type LOCAL -j CNM-DNAT\nCOMMIT\n*filter\n-A FORWARD -j CNM-FORWARD\nCOMMIT\n";
    let missing = iptables::missing_jumps(save, Family::V4);
    assert_eq!(
        missing,
        vec![
            ("nat", "-A OUTPUT -m addrtype --dst-type LOCAL -j CNM-DNAT"),
            ("nat", "-A POSTROUTING -j CNM-POSTROUTING"),
            ("raw", "-A PREROUTING -j CNM-RAW")
        ]
    );
}

#[test]
fn golden_files_are_accepted_by_nft_and_iptables_restore() {
    let Some(host) = cnm_netns::testing::TestHost::new("golden_files_accepted") else { return };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (name, _) in cases() {
        let p = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
        host.exec(&host.ns, "nft", &["-c", "-f", &p("nft")]);
        for (tool, ext) in [("iptables-restore", "iptables"), ("ip6tables-restore", "ip6tables")] {
            // --test parses and checks the whole input without committing it.
            host.exec(&host.ns, tool, &["--noflush", "--test", &p(ext)]);
        }
    }
}
