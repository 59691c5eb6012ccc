//! What runtimes make through `cnm-cni` is the `cnm` tool's too: given the
//! plugin's `dataDir` and `runDir` as `--state-dir` and `--run-dir`, `cnm
//! network ls`, `network inspect` and `sandbox ls` show the network and the
//! container, and show them gone after `DEL`.

use cnm_cni::cmd::{run_in, Host};
use cnm_cni::{CniEnv, Command};
use cnm_netns::testing::TestHost;
use serde_json::{json, Value};

mod common;
use common::cnm_ok;

fn cni(host: &TestHost, command: Command, netns: &str, conf: &Value) -> Option<Value> {
    let env = CniEnv {
        command,
        container_id: "c1".into(),
        netns: Some(netns.into()),
        ifname: "eth0".into(),
        args: vec![("K8S_POD_NAME".into(), "web".into())],
        path: vec!["/usr/lib/cni".into()],
    };
    let h = Host::new(host.ns.try_clone().unwrap(), false);
    run_in(&env, conf.to_string().as_bytes(), &h).unwrap()
}

#[test]
fn the_tool_shows_what_runtimes_made_through_cni() {
    let Some(host) = TestHost::new("cli_cni") else { return };
    let dir = host.dir().to_path_buf();
    host.named_container("c1").unwrap();
    let netns = dir.join("c1").display().to_string();
    let conf = json!({"cniVersion": "1.0.0", "name": "cninet", "type": "cnm", "subnet": "10.73.0.0/24",
        "bridge": host.name("br"), "dataDir": dir.join("state"), "runDir": dir.join("run")});
    let r = cni(&host, Command::Add, &netns, &conf).unwrap();
    let address = r["ips"][0]["address"].as_str().unwrap().to_string();

    let ls = cnm_ok(&host, &dir, &["--no-predefined", "network", "ls"]);
    assert!(ls.lines().any(|l| l.contains("cninet") && l.contains("bridge")), "{ls}");
    let inspect: Value =
        serde_json::from_str(&cnm_ok(&host, &dir, &["--no-predefined", "network", "inspect", "cninet"])).unwrap();
    let containers = inspect[0]["Containers"].as_object().unwrap();
    assert_eq!(containers.len(), 1, "{inspect}");
    let c = containers.values().next().unwrap();
    assert_eq!(c["Name"], "cni-c1");
    assert_eq!(c["IPv4Address"], address.as_str());
    assert!(cnm_ok(&host, &dir, &["--no-predefined", "sandbox", "ls"]).contains("cni-c1"));

    cni(&host, Command::Del, &netns, &conf);
    let inspect: Value =
        serde_json::from_str(&cnm_ok(&host, &dir, &["--no-predefined", "network", "inspect", "cninet"])).unwrap();
    assert!(inspect[0]["Containers"].as_object().unwrap().is_empty(), "{inspect}");
    assert!(!cnm_ok(&host, &dir, &["--no-predefined", "sandbox", "ls"]).contains("cni-c1"));
    // The network stays, as a CNI network does, until the tool removes it.
    cnm_ok(&host, &dir, &["--no-predefined", "network", "rm", "cninet"]);
}
