//! cnm-store-etcd against a three-member etcd cluster (Debian's
//! etcd-server) serving TLS that requires client certificates, each member
//! in a namespace the test makes, and against etcd's user authentication:
//! requests and watches move to another member when theirs dies, without
//! losing or repeating an event; a wrong CA, a missing client certificate
//! or a bad password is a clear error; an expired token is taken again.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cnm_core::store::{conformance, WatchEvent};
use cnm_core::{ErrorKind, Expect, Store};
use cnm_netns::testing::{TestHost, TestNs};
use cnm_netns::LinkAdd;
use cnm_store_etcd::testing::{EtcdCluster, EtcdServer, Pki};
use cnm_store_etcd::{EtcdConfig, EtcdStore, TlsFiles};

/// The test host, a client namespace and three members on a bridge.
fn cluster(test: &str) -> Option<(TestHost, TestNs, Vec<TestNs>, EtcdCluster)> {
    let tb = TestHost::new(test)?;
    tb.handle.link_add(&LinkAdd::bridge("ul0").up()).unwrap();
    let client = tb.on_bridge("ul0", "client", "192.0.2.1").unwrap();
    let ips: Vec<IpAddr> = (11..=13).map(|i| format!("192.0.2.{i}").parse().unwrap()).collect();
    let members: Vec<TestNs> =
        ips.iter().enumerate().map(|(i, ip)| tb.on_bridge("ul0", &format!("e{i}"), &ip.to_string()).unwrap()).collect();
    let refs: Vec<&cnm_netns::NetNs> = members.iter().map(|m| &m.ns).collect();
    let c = EtcdCluster::start(&refs, &ips, tb.dir().join("etcd"));
    Some((tb, client, members, c))
}

fn key_of(e: &WatchEvent) -> String {
    match e {
        WatchEvent::Put(kv) => kv.key.clone(),
        WatchEvent::Delete { key } => format!("-{key}"),
    }
}

#[test]
fn a_tls_cluster_serves_through_any_live_member() {
    let Some((_tb, client, _members, mut cluster)) = cluster("etcd_tls_cluster") else { return };
    let store = EtcdStore::open(cluster.config(), Some(&client.ns)).unwrap();
    conformance::run(&store);

    // A watch and writes; the member in use dies halfway; every change is
    // seen once, in order.
    let mut w = store.watch("w/").unwrap();
    for i in 0..10 {
        store.put(&format!("w/{i:02}"), b"1", Expect::Absent).unwrap();
    }
    cluster.kill(0);
    for i in 10..20 {
        store.put(&format!("w/{i:02}"), b"1", Expect::Absent).unwrap();
    }
    store.delete("w/00", Expect::Any).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 21 {
        assert!(Instant::now() < deadline, "the watch stopped at {seen:?}");
        if let Some(ev) = w.next(Duration::from_millis(500)).unwrap() {
            seen.push(key_of(&ev));
        }
    }
    let mut want: Vec<String> = (0..20).map(|i| format!("w/{i:02}")).collect();
    want.push("-w/00".into());
    assert_eq!(seen, want);
    assert_eq!(w.next(Duration::from_millis(300)).unwrap(), None, "nothing seen twice");
    assert_eq!(store.count("w/").unwrap(), 19);

    // One transaction per write; a compare that fails is the caller's.
    let before = store.round_trips();
    store.put("once", b"mine", Expect::Absent).unwrap();
    assert_eq!(store.round_trips() - before, 1, "one transaction per write");
    assert_eq!(store.put("once", b"mine", Expect::Absent).unwrap_err().kind(), ErrorKind::AlreadyExists);
}

#[test]
fn a_wrong_ca_or_a_missing_client_certificate_is_refused_clearly() {
    let Some((tb, client, _members, cluster)) = cluster("etcd_tls_refused") else { return };
    let store = EtcdStore::open(cluster.config(), Some(&client.ns)).unwrap();
    store.put("canary", b"1", Expect::Any).unwrap();
    let keys = store.list_keys("").unwrap();

    let other = Pki::new(tb.dir().join("other-pki"), "other-ca");
    let mut wrong_ca = cluster.config();
    wrong_ca.tls.as_mut().unwrap().ca = Some(other.ca.clone());
    let e = EtcdStore::open(wrong_ca, Some(&client.ns)).unwrap_err();
    assert_eq!(e.kind(), cnm_store_etcd::ErrorKind::Denied, "{e}");
    assert!(e.to_string().contains("TLS handshake failed") && e.to_string().contains("CA"), "{e}");

    let mut no_cert = cluster.config();
    no_cert.tls = Some(TlsFiles { ca: Some(cluster.pki.ca.clone()), cert: None, key: None });
    let e = EtcdStore::open(no_cert, Some(&client.ns)).unwrap_err();
    assert_eq!(e.kind(), cnm_store_etcd::ErrorKind::Denied, "{e}");
    assert!(e.to_string().contains("client certificate"), "{e}");

    let mut half = cluster.config();
    half.tls.as_mut().unwrap().key = None;
    let e = EtcdStore::open(half, Some(&client.ns)).unwrap_err();
    assert_eq!(e.kind(), cnm_store_etcd::ErrorKind::InvalidParameter, "{e}");

    // Nothing was written by the refused clients.
    assert_eq!(store.list_keys("").unwrap(), keys);
}

/// `curl` against the plain etcd at 127.0.0.1:2379 in `host`.
fn curl(host: &TestHost, path: &str, body: &str, token: Option<&str>) -> serde_json::Value {
    let url = format!("http://127.0.0.1:2379{path}");
    let auth = token.map(|t| format!("Authorization: {t}")).unwrap_or_else(|| "X-None: 1".into());
    let out = host.exec(&host.ns, "curl", &["-s", "-H", &auth, "-X", "POST", "-d", body, &url]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
}

#[test]
fn passwords_are_checked_and_an_expired_token_is_taken_again() {
    let Some(host) = TestHost::new("etcd_auth") else { return };
    let etcd = EtcdServer::start_with(
        &host.ns,
        "127.0.0.1".parse().unwrap(),
        host.dir().join("etcd"),
        &["--auth-token-ttl", "2"],
    );
    // etcd's authentication on, with a root user.
    curl(&host, "/v3/auth/user/add", r#"{"name":"root","password":"s3cret"}"#, None);
    curl(&host, "/v3/auth/user/grant", r#"{"user":"root","role":"root"}"#, None);
    curl(&host, "/v3/auth/enable", "{}", None);
    let config = EtcdConfig::from_url(&etcd.url).unwrap();

    let e = host.ns.run(|| EtcdStore::open(config.clone(), None).map(|_| ()).unwrap_err()).unwrap();
    assert_eq!(e.kind(), cnm_store_etcd::ErrorKind::Denied, "{e}");
    assert!(e.to_string().contains("give a user and password"), "{e}");
    let bad = config.clone().credentials("root", "wrong");
    let e = host.ns.run(|| EtcdStore::open(bad, None).map(|_| ()).unwrap_err()).unwrap();
    assert_eq!(e.kind(), cnm_store_etcd::ErrorKind::Denied, "{e}");
    assert!(e.to_string().contains("authentication failed"), "{e}");

    let store = host.ns.run(|| EtcdStore::open(config.clone().credentials("root", "s3cret"), None).unwrap()).unwrap();
    host.ns.run(|| store.put("k", b"1", Expect::Any).unwrap()).unwrap();

    // A token taken after the store's last use expires no earlier than the
    // store's: once it is seen expired, the store's is too, and the store
    // takes a new one (one refused request, one authentication, the request
    // again). A token's 2 s start again at each use, so it is tried only
    // after more than that.
    let t = curl(&host, "/v3/auth/authenticate", r#"{"name":"root","password":"s3cret"}"#, None);
    let token = t["token"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        std::thread::sleep(Duration::from_millis(2500));
        let r = curl(&host, "/v3/kv/range", r#"{"key":"L2NubS9r"}"#, Some(&token));
        if r["error"].as_str().is_some_and(|m| m.contains("invalid auth token")) {
            break;
        }
        assert!(Instant::now() < deadline, "the token never expired: {r}");
    }
    let before = store.round_trips();
    let got = host.ns.run(|| store.get("k").unwrap()).unwrap();
    assert_eq!(got.unwrap().value, b"1");
    assert_eq!(store.round_trips() - before, 3, "refused, authenticate, again");
}
