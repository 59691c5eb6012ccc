//! containerd's `ctr run --cni` on cnm through `cnm-cni`: a private
//! containerd in a namespace the test creates, ctr in a mount namespace
//! where its fixed CNI paths are the test's. The container gets an address
//! of the network and reaches its gateway; its end sends DEL, which leaves
//! nothing behind. The setup follows `../shared/clients/ctr-cni.sh`.

use cnm_cni::testing::{plugin_dir, Containerd};
use cnm_netns::testing::TestHost;
use serde_json::json;

mod common;

#[test]
fn ctr_runs_a_container_on_cnm() {
    let Some(host) = TestHost::new("cni_ctr") else { return };
    let dir = std::env::temp_dir().join(format!("cnm-ctr-{}-{}", std::process::id(), host.prefix()));
    let plugins = plugin_dir(&dir, &common::cnm_cni());
    let net = format!("cnm{}", host.prefix());
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": net,
        "plugins": [{"type": "cnm", "subnet": "10.97.30.0/24", "bridge": host.name("br"),
                     "dataDir": dir.join("cnm"), "runDir": dir.join("cnm-run")}]
    });
    let containerd = Containerd::start(&host.ns, &dir, &plugins, &conflist, host.prefix());
    containerd.import_busybox();

    let script = "ip -4 -o addr show eth0; ping -c1 -W5 10.97.30.1 >/dev/null && echo ping-gw-ok";
    let id = format!("c{}", host.prefix());
    let out = containerd.ctr_cni(&["run", "--rm", "--cni", "localhost/bb:latest", &id, "sh", "-c", script]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ctr run: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("inet 10.97.30."), "{text}");
    assert!(text.contains("ping-gw-ok"), "{text}");

    // ctr's DEL went through cnm: no endpoint, no sandbox, no veth.
    let ctl = common::controller_over(&host, &net, &dir.join("cnm"), &dir.join("cnm-run"));
    assert_eq!(ctl.network(&net).unwrap().name, net);
    assert!(ctl.endpoints(Some(&net)).unwrap().is_empty());
    assert!(ctl.sandboxes().unwrap().is_empty());
    common::settle(&host);
    let links = host.exec(&host.ns, "ip", &["-o", "link", "show", "type", "veth"]);
    assert!(links.trim().is_empty(), "veths left: {links}");
}
