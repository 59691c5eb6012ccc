use simple_dns::{Packet, Question, CLASS, QTYPE, TYPE};

use super::*;
use crate::records::Records;
use support::{endpoint, query, sandbox};

/// Records and queries for the tests of this crate.
pub(crate) mod support {
    use super::*;

    pub(crate) fn sandbox(name: &str) -> cnm_core::Sandbox {
        cnm_core::Sandbox {
            id: cnm_core::Id::random().unwrap(),
            name: name.into(),
            netns: "/run/x".into(),
            owns_netns: true,
            hostname: None,
            dns: Default::default(),
            endpoints: vec![],
            created: cnm_core::Timestamp::now(),
            state: cnm_core::State::Ready,
            external: false,
        }
    }

    pub(crate) fn endpoint(ip: &str, ip6: Option<&str>, aliases: &[&str]) -> cnm_core::Endpoint {
        endpoint_on("front", ip, ip6, aliases)
    }

    /// An endpoint on network `net` (its id made from the name's length).
    pub(crate) fn endpoint_on(net: &str, ip: &str, ip6: Option<&str>, aliases: &[&str]) -> cnm_core::Endpoint {
        let id = cnm_core::Id::random().unwrap();
        cnm_core::Endpoint {
            name: format!("ep-{}", id.short()),
            id,
            network_id: format!("{:0>64}", net.len()).parse().unwrap(),
            network: net.into(),
            mac: None,
            ipv4: Some(format!("{ip}/24").parse().unwrap()),
            ipv6: ip6.map(|a| format!("{a}/64").parse().unwrap()),
            ipv4_pool: None,
            ipv6_pool: None,
            ports: vec![],
            bindings: vec![],
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            sandbox: None,
            ifname: None,
            requested_ifname: None,
            gateway: false,
            join_state: cnm_core::JoinState::Joined,
            driver_data: Default::default(),
            join_info: None,
            state: cnm_core::State::Ready,
        }
    }

    pub(crate) fn query(name: &str, qtype: TYPE, edns: Option<u16>) -> Vec<u8> {
        let mut p = Packet::new_query(0x1234);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(Name::new_unchecked(name), QTYPE::TYPE(qtype), CLASS::IN.into(), false));
        if let Some(size) = edns {
            *p.opt_mut() = Some(OPT { opt_codes: vec![], udp_packet_size: size, version: 0 });
        }
        p.build_bytes_vec().unwrap()
    }
}

/// Records where `asker` shares network "front" with c2 (two addresses
/// under alias "web" with c3) and 60 sandboxes under alias "many".
fn setup() -> (Records, String) {
    let mut r = Records::default();
    let asker = sandbox("c1");
    r.update(&asker, &[endpoint("10.0.0.1", None, &[])]);
    r.update(&sandbox("c2"), &[endpoint("10.0.0.2", Some("fd00::2"), &["web"])]);
    r.update(&sandbox("c3"), &[endpoint("10.0.0.3", None, &["web"])]);
    for i in 0..60 {
        r.update(&sandbox(&format!("m{i}")), &[endpoint(&format!("10.0.1.{i}"), None, &["many"])]);
    }
    (r, asker.id.to_string())
}

fn parsed(reply: &Reply) -> Packet<'_> {
    match reply {
        Reply::Answer(b) => Packet::parse(b).unwrap(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn local_names_are_answered_in_turn() {
    let (r, asker) = setup();
    let a = answer(&query("C2", TYPE::A, None), &r, &asker, false, 0);
    let p = parsed(&a);
    assert_eq!(p.id(), 0x1234);
    assert!(p.has_flags(PacketFlag::RESPONSE | PacketFlag::RECURSION_DESIRED));
    assert_eq!(p.answers.len(), 1);
    assert_eq!(p.answers[0].rdata, RData::A(A { address: u32::from(Ipv4Addr::new(10, 0, 0, 2)) }));
    let firsts: Vec<RData<'_>> = (0..2)
        .map(|turn| {
            let reply = answer(&query("web.front", TYPE::A, None), &r, &asker, false, turn);
            let p = parsed(&reply);
            assert_eq!(p.answers.len(), 2);
            p.answers[0].rdata.clone().into_owned()
        })
        .collect();
    assert_ne!(firsts[0], firsts[1], "round robin changes the first address");
    let v6 = answer(&query("c2", TYPE::AAAA, None), &r, &asker, false, 0);
    assert_eq!(parsed(&v6).answers.len(), 1);
    // c3 has no IPv6 address: no data, and no forward.
    let none = answer(&query("c3", TYPE::AAAA, None), &r, &asker, false, 0);
    assert_eq!(parsed(&none).answers.len(), 0);
    assert_eq!(parsed(&none).rcode(), RCODE::NoError);
}

#[test]
fn reverse_names_and_forwarding() {
    let (r, asker) = setup();
    let ptr = answer(&query("2.0.0.10.in-addr.arpa", TYPE::PTR, None), &r, &asker, false, 0);
    let p = parsed(&ptr);
    assert_eq!(p.answers.len(), 1);
    assert_eq!(p.answers[0].rdata, RData::PTR(PTR(Name::new_unchecked("c2.front"))));
    let v6 = "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
    assert_eq!(parsed(&answer(&query(v6, TYPE::PTR, None), &r, &asker, false, 0)).answers.len(), 1);
    for q in [
        query("example.com", TYPE::A, None),
        query("9.9.9.9.in-addr.arpa", TYPE::PTR, None),
        query("c2.other", TYPE::A, None),
    ] {
        assert_eq!(answer(&q, &r, &asker, false, 0), Reply::Forward);
    }
    // A sandbox on no network resolves nothing locally.
    assert_eq!(answer(&query("c2", TYPE::A, None), &r, "nobody", false, 0), Reply::Forward);
}

#[test]
fn large_answers_are_truncated_over_udp_only() {
    let (r, asker) = setup();
    let udp_reply = answer(&query("many", TYPE::A, None), &r, &asker, false, 0);
    let udp = parsed(&udp_reply);
    assert!(udp.has_flags(PacketFlag::TRUNCATION));
    assert!(udp.answers.len() < 60);
    let Reply::Answer(bytes) = answer(&query("many", TYPE::A, None), &r, &asker, false, 0) else { panic!() };
    assert!(bytes.len() <= 512);
    let edns = answer(&query("many", TYPE::A, Some(4096)), &r, &asker, false, 0);
    let Reply::Answer(bytes) = &edns else { panic!() };
    assert!(bytes.len() <= 1232 && parsed(&edns).answers.len() == 60, "60 A records fit 1232 bytes");
    let tcp_reply = answer(&query("many", TYPE::A, None), &r, &asker, true, 0);
    let tcp = parsed(&tcp_reply);
    assert!(!tcp.has_flags(PacketFlag::TRUNCATION));
    assert_eq!(tcp.answers.len(), 60);
}

#[test]
fn malformed_queries_get_formerr_or_nothing() {
    let (r, asker) = setup();
    assert_eq!(answer(b"short", &r, &asker, false, 0), Reply::Drop);
    let mut response = query("c2", TYPE::A, None);
    response[2] |= 0x80;
    assert_eq!(answer(&response, &r, &asker, false, 0), Reply::Drop, "a response is never answered");
    let mut cut = query("c2", TYPE::A, None);
    cut.truncate(15);
    let cut_reply = answer(&cut, &r, &asker, false, 0);
    let p = parsed(&cut_reply);
    assert_eq!((p.id(), p.rcode()), (0x1234, RCODE::FormatError));
    let servfail = servfail(&query("example.com", TYPE::A, None));
    let p = Packet::parse(&servfail).unwrap();
    assert_eq!((p.rcode(), p.questions.len()), (RCODE::ServerFailure, 1));
}

/// The query path never panics, whatever arrives: random bytes, and
/// valid queries with random bytes changed, cut or appended; the answer
/// cache answers exactly as the query path does.
#[test]
fn fuzz_the_query_path() {
    let (r, asker) = setup();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let seeds = [
        query("c2", TYPE::A, None),
        query("web.front", TYPE::AAAA, Some(4096)),
        query("2.0.0.10.in-addr.arpa", TYPE::PTR, None),
        query("many", TYPE::A, None),
    ];
    let mut cache = crate::cache::Cache::default();
    for i in 0..200_000 {
        let mut msg = if i % 4 == 0 {
            (0..next() % 80).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            seeds[(next() % seeds.len() as u64) as usize].clone()
        };
        for _ in 0..(next() % 4) {
            if msg.is_empty() {
                break;
            }
            let at = (next() as usize) % msg.len();
            match next() % 3 {
                0 => msg[at] = next() as u8,
                1 => msg.truncate(at),
                _ => msg.push(next() as u8),
            }
        }
        let tcp = next() % 2 == 0;
        // The cache gives exactly what the query path gives.
        assert_eq!(cache.answer(&msg, &r, &asker, tcp, i), answer(&msg, &r, &asker, tcp, i));
        if let Reply::Answer(bytes) = answer(&msg, &r, &asker, tcp, i) {
            assert!(bytes.len() >= 12);
            assert_eq!(bytes[..2], msg[..2], "the answer keeps the query's id");
        }
        let _ = question_end(&msg);
        if msg.len() >= 12 {
            let _ = servfail(&msg);
        }
    }
}
