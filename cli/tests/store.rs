//! The tool on a production-shaped etcd: three members serving TLS with
//! client certificates (`etcds://h1,h2,h3`, `--store-ca`, `--store-cert`,
//! `--store-key`); what it makes there is in etcd, reachable through any
//! member; bad credentials are one clear line, with nothing made.

use std::net::IpAddr;

use cnm_core::Store;
use cnm_netns::testing::TestHost;
use cnm_netns::LinkAdd;
use cnm_store_etcd::testing::EtcdCluster;
use cnm_store_etcd::EtcdStore;

#[test]
fn the_tool_uses_a_tls_etcd_cluster_and_refuses_bad_credentials() {
    let Some(tb) = TestHost::new("cli_etcd_tls") else { return };
    tb.handle.link_add(&LinkAdd::bridge("ul0").up()).unwrap();
    let host = tb.on_bridge("ul0", "h1", "192.0.2.1").unwrap();
    let ips: Vec<IpAddr> = (11..=13).map(|i| format!("192.0.2.{i}").parse().unwrap()).collect();
    let members: Vec<_> =
        ips.iter().enumerate().map(|(i, ip)| tb.on_bridge("ul0", &format!("e{i}"), &ip.to_string()).unwrap()).collect();
    let refs: Vec<&cnm_netns::NetNs> = members.iter().map(|m| &m.ns).collect();
    let mut cluster = EtcdCluster::start(&refs, &ips, tb.dir().join("etcd"));
    let dir = tb.dir().join("cnm");
    let url = cluster.url();
    let cnm = |extra: &[&str], args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cnm"));
        c.arg("--state-dir").arg(dir.join("state")).arg("--run-dir").arg(dir.join("run"));
        c.arg("--host-netns").arg(host.ns.proc_path());
        c.args(["--store", &url, "--advertise-addr", "192.0.2.1", "--host-name", "h1"]).args(extra).args(args);
        c.output().unwrap()
    };
    let ca = cluster.pki.ca.display().to_string();
    let (cert, key) = (cluster.client.0.display().to_string(), cluster.client.1.display().to_string());
    let tls = ["--store-ca", ca.as_str(), "--store-cert", cert.as_str(), "--store-key", key.as_str()];

    let o = cnm(&tls, &["network", "create", "-d", "overlay", "--subnet", "10.74.0.0/24", "ov"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // In etcd, through any member: the first one dies, the tool goes on.
    cluster.kill(0);
    let o = cnm(&tls, &["network", "ls"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("ov"), "{o:?}");
    let store = EtcdStore::open(cluster.config(), Some(&host.ns)).unwrap();
    assert!(store.list_keys("global/networks/").unwrap().iter().any(|k| k.ends_with("/ov")));

    // Without the client certificate, or with a password but no user's
    // password given: one line naming the problem, exit 1, nothing made.
    let o = cnm(&["--store-ca", &ca], &["network", "create", "-d", "overlay", "--subnet", "10.74.1.0/24", "ov2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.starts_with("cnm: error:") && err.contains("client certificate") && err.lines().count() == 1, "{err}");
    let o = cnm(&[&tls[..], &["--store-user", "root"]].concat(), &["network", "ls"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("CNM_STORE_PASSWORD"), "{err}");
    assert!(!store.list_keys("global/networks/").unwrap().iter().any(|k| k.ends_with("/ov2")));

    let o = cnm(&tls, &["network", "rm", "ov"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
