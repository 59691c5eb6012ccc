//! No failure window: while 100 other sandboxes connect and disconnect,
//! a poller inside c1 asks for c2 every millisecond and never fails; each
//! churned name resolves as soon as `connect` returns and is gone when
//! `disconnect` returns.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cnm_core::SandboxConfig;
use common::{rig, Client, Got};

#[test]
fn lookups_never_fail_while_others_come_and_go() {
    let Some(r) = rig("dns_churn") else { return };
    let (c1, _) = r.container("c1", "front", &[]);
    let (_, ip2) = r.container("c2", "front", &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let mut poller = Client::new(&c1);
    // Positive control before the churn starts.
    assert_eq!(poller.query("c2"), Got::Addrs(vec![ip2]));
    let flag = stop.clone();
    let polling = std::thread::spawn(move || {
        let (mut asked, mut failures) = (0usize, Vec::new());
        while !flag.load(Ordering::SeqCst) {
            let got = poller.query("c2");
            if got != Got::Addrs(vec![ip2]) {
                failures.push(got);
            }
            asked += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        (asked, failures)
    });
    let mut watcher = Client::new(&c1);
    for i in 0..100 {
        let name = format!("churn{i}");
        r.ctl.create_sandbox(SandboxConfig { name: name.clone(), ..Default::default() }).unwrap();
        let (_, ip) = r.connect(&name, "front", &[]);
        assert_eq!(watcher.query(&name), Got::Addrs(vec![ip]), "{name} right after connect");
        r.ctl.disconnect("front", &name).unwrap();
        assert_eq!(watcher.query(&name), Got::NxDomain, "{name} right after disconnect");
        r.ctl.delete_sandbox(&name).unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let (asked, failures) = polling.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {asked} lookups failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(asked >= 100, "the poller asked {asked} times");
    eprintln!("{asked} lookups during the churn, none failed");
    assert_eq!(r.dns.sandboxes(), vec!["c1".to_string(), "c2".to_string()]);
}
