//! The etcd store against a real etcd (Debian's etcd-server) running in a
//! namespace this test makes.

use std::time::{Duration, Instant};

use cnm_core::store::{conformance, WatchEvent};
use cnm_core::{ErrorKind, Expect, Store};
use cnm_netns::testing::TestHost;
use cnm_store_etcd::testing::EtcdServer;
use cnm_store_etcd::EtcdStore;

fn with_etcd(test: &str, body: impl FnOnce(&str) + Send) {
    let Some(host) = TestHost::new(test) else { return };
    let etcd = EtcdServer::start(&host.ns, "127.0.0.1".parse().unwrap(), host.dir().join("etcd"));
    let url = etcd.url.clone();
    host.ns.run(|| body(&url)).unwrap();
}

#[test]
fn behaves_like_every_other_store() {
    with_etcd("etcd_conformance", |url| {
        let s = EtcdStore::connect(&format!("{url}/t1/")).unwrap();
        conformance::run(&s);
        // The prefix isolates: another prefix sees none of it.
        let other = EtcdStore::connect(&format!("{url}/t2/")).unwrap();
        assert!(other.list("").unwrap().is_empty());
        assert_eq!(s.count("").unwrap(), s.list("").unwrap().len());
        assert!(s.location().contains("/t1/"), "{}", s.location());
    });
}

#[test]
fn leases_expire_and_watches_see_every_change() {
    with_etcd("etcd_lease_watch", |url| {
        let s = EtcdStore::connect(url).unwrap();
        let mut w = s.watch("peers/").unwrap();
        let lease = s.grant_lease(Duration::from_secs(1)).unwrap();
        s.put_with_lease("peers/h1/a", b"{\"ip\":1}", Expect::Absent, lease).unwrap();
        s.put("peers/h2/b", b"{}", Expect::Any).unwrap();
        s.put("other/x", b"{}", Expect::Any).unwrap();
        s.delete("peers/h2/b", Expect::Any).unwrap();
        let mut seen = Vec::new();
        while let Some(ev) = w.next(Duration::from_millis(500)).unwrap() {
            seen.push(ev);
        }
        let keys: Vec<String> = seen
            .iter()
            .map(|e| match e {
                WatchEvent::Put(kv) => format!("put {}", kv.key),
                WatchEvent::Delete { key } => format!("del {key}"),
            })
            .collect();
        assert_eq!(keys, ["put peers/h1/a", "put peers/h2/b", "del peers/h2/b"]);
        // Kept alive, the key stays past its TTL …
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(400));
            s.keep_alive(lease).unwrap();
        }
        assert!(s.get("peers/h1/a").unwrap().is_some());
        // … and without keep-alives it goes, with a watch event.
        let t = Instant::now();
        let ev = loop {
            if let Some(ev) = w.next(Duration::from_secs(1)).unwrap() {
                break ev;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "lease never expired");
        };
        assert_eq!(ev, WatchEvent::Delete { key: "peers/h1/a".into() });
        assert!(s.get("peers/h1/a").unwrap().is_none());
        let e = s.keep_alive(lease).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        // Revoking ends a lease at once.
        let l2 = s.grant_lease(Duration::from_secs(60)).unwrap();
        s.put_with_lease("peers/h3/c", b"{}", Expect::Any, l2).unwrap();
        s.revoke_lease(l2).unwrap();
        assert!(s.get("peers/h3/c").unwrap().is_none());
    });
}

#[test]
fn a_lost_etcd_is_a_clear_error_naming_its_address() {
    let Some(host) = TestHost::new("etcd_lost") else { return };
    let mut etcd = EtcdServer::start(&host.ns, "127.0.0.1".parse().unwrap(), host.dir().join("etcd"));
    let url = etcd.url.clone();
    let s = host.ns.run(|| EtcdStore::connect(&url).unwrap()).unwrap();
    host.ns.run(|| s.put("k", b"{}", Expect::Any).unwrap()).unwrap();
    etcd.kill();
    let e = host.ns.run(|| s.get("k").unwrap_err()).unwrap();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("127.0.0.1:2379"), "{e}");
    let e = host.ns.run(|| EtcdStore::connect(&url).unwrap_err()).unwrap();
    assert!(e.to_string().contains("cannot connect to etcd at 127.0.0.1:2379"), "{e}");
}

#[test]
fn a_watch_resumes_after_a_restart_and_fails_when_its_revision_was_compacted() {
    let Some(host) = TestHost::new("etcd_watch_resume") else { return };
    let mut etcd = EtcdServer::start(&host.ns, "127.0.0.1".parse().unwrap(), host.dir().join("etcd"));
    let url = etcd.url.clone();
    let s = host.ns.run(|| EtcdStore::connect(&url).unwrap()).unwrap();
    let key_of = |e: WatchEvent| match e {
        WatchEvent::Put(kv) => kv.key,
        WatchEvent::Delete { key } => format!("-{key}"),
    };

    // Resumed across a restart of etcd: the changes made meanwhile are seen
    // once each, nothing twice.
    let mut w = host.ns.run(|| s.watch("w/").unwrap()).unwrap();
    host.ns.run(|| s.put("w/1", b"1", Expect::Any).unwrap()).unwrap();
    assert_eq!(key_of(w.next(Duration::from_secs(5)).unwrap().unwrap()), "w/1");
    host.ns.run(|| s.put("w/2", b"2", Expect::Any).unwrap()).unwrap();
    etcd.kill();
    etcd.restart();
    host.ns.run(|| s.put("w/3", b"3", Expect::Any).unwrap()).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 2 {
        assert!(Instant::now() < deadline, "the watch stopped at {seen:?}");
        if let Some(e) = host.ns.run(|| w.next(Duration::from_millis(500)).unwrap()).unwrap() {
            seen.push(key_of(e));
        }
    }
    assert_eq!(seen, ["w/2", "w/3"]);
    assert_eq!(host.ns.run(|| w.next(Duration::from_millis(300)).unwrap()).unwrap(), None);

    // Its next revision compacted while it was away (etcd restarted, the
    // watch not yet back): it fails, saying to list everything again (the
    // overlay agent then resynchronises).
    etcd.kill();
    etcd.restart();
    host.ns.run(|| s.put("w/4", b"4", Expect::Any).unwrap()).unwrap();
    let rev = host.ns.run(|| s.put("w/5", b"5", Expect::Any).unwrap()).unwrap();
    let body = format!("{{\"revision\":\"{rev}\"}}");
    host.exec(&host.ns, "curl", &["-s", "-X", "POST", "-d", &body, "http://127.0.0.1:2379/v3/kv/compaction"]);
    let e = loop {
        match host.ns.run(|| w.next(Duration::from_millis(500))).unwrap() {
            Err(e) => break e,
            Ok(Some(ev)) => panic!("an event from a compacted history: {ev:?}"),
            Ok(None) => assert!(Instant::now() < deadline + Duration::from_secs(20), "the watch never failed"),
        }
    };
    assert!(e.to_string().contains("compacted") && e.to_string().contains("list everything again"), "{e}");
    let keys: Vec<String> = host.ns.run(|| s.list_keys("w/").unwrap()).unwrap();
    assert_eq!(keys, ["w/1", "w/2", "w/3", "w/4", "w/5"]);
}
