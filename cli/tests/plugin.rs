//! `cnm network create -d NAME` with NAME a Docker network plugin that is
//! not built in: found as dockerd finds it (/run/docker/plugins/NAME.sock),
//! here a small plugin of cnm-remote's testing helpers. The link the plugin
//! leaves in the host namespace is moved into the sandbox and programmed by
//! cnm-core. (Another cnm cannot be the plugin here: two cnm instances
//! refuse to manage one host namespace.)

mod common;

use cnm_netns::testing::TestHost;
use cnm_remote::testing::TestPlugin;
use common::{cnm_command, cnm_ok};

/// Removes the plugin's socket at the end.
struct Socket(std::path::PathBuf);

impl Drop for Socket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn cnm_uses_a_docker_plugin_found_by_name() {
    let Some(host) = TestHost::new("cli_remote") else { return };
    let name = format!("cnm{}", host.prefix());
    let socket = Socket(cnm_remote::default_socket(&name));
    std::fs::create_dir_all(socket.0.parent().unwrap()).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&socket.0).unwrap();
    let plugin = TestPlugin::start(listener, host.ns.try_clone().unwrap());
    let me = host.dir().join("client");

    let o = cnm_command(&host, &me).args(["network", "create", "-d", "nosuchplugin", "x"]).output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("nosuchplugin") && e.contains("not found"), "{e}");

    cnm_ok(&host, &me, &["network", "create", "-d", &name, "--subnet", "10.1.5.0/24", "web"]);
    assert!(cnm_ok(&host, &me, &["network", "ls"]).contains(&name), "the network's driver is the plugin");
    cnm_ok(&host, &me, &["sandbox", "create", "c1"]);
    cnm_ok(&host, &me, &["connect", "--ip", "10.1.5.11", "web", "c1"]);
    // Another command (another controller) finds the plugin again from
    // the network's record.
    let addr = cnm_ok(&host, &me, &["exec", "c1", "--", "ip", "-o", "-4", "addr", "show", "net0"]);
    assert!(addr.contains("10.1.5.11/24"), "{addr}");
    let routes = cnm_ok(&host, &me, &["exec", "c1", "--", "ip", "route"]);
    assert!(routes.contains("10.99.0.0/16 via 10.1.5.1 dev net0"), "{routes}");
    cnm_ok(&host, &me, &["disconnect", "web", "c1"]);
    cnm_ok(&host, &me, &["sandbox", "rm", "c1"]);
    cnm_ok(&host, &me, &["network", "rm", "web"]);
    let calls = plugin.calls();
    // Each command activates the plugin once, as dockerd does after a start.
    assert_eq!(calls.last().map(String::as_str), Some("NetworkDriver.DeleteNetwork"), "{calls:?}");
    for m in ["NetworkDriver.Join", "NetworkDriver.Leave", "NetworkDriver.DeleteEndpoint"] {
        assert_eq!(calls.iter().filter(|c| *c == m).count(), 1, "{m} once: {calls:?}");
    }
    assert!(!host.exec(&host.ns, "ip", &["-o", "link"]).contains("tp"), "the plugin's links are gone");
}
