//! Publishing a port (`docker run -p 8080:80`): a TCP server in a sandbox is
//! reached from an "outside" namespace through the host's address, and sees
//! the client's real address (DNAT, no proxy process). The host and outside
//! namespaces are made here, linked by a veth pair.
//!
//! Run as root: `cargo run -p cnm-examples --example publish-port`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cnm_bridge::BridgeDriver;
use cnm_core::{Controller, EndpointConfig, NetworkConfig, SandboxConfig, SplitStore, Store};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::{AddrFlags, Handle, LinkAdd, NetNs, VethPeer};

use cnm_examples::scratch::Result;

/// The host namespace with an uplink to an outside namespace:
/// host 198.51.100.1/24 <-> outside 198.51.100.2/24.
fn host_and_outside() -> Result<(NetNs, NetNs)> {
    let (host, outside) = (NetNs::create_anonymous()?, NetNs::create_anonymous()?);
    let h = Handle::open(&host)?;
    let up = h.link_add(&LinkAdd::veth("uplink", VethPeer::new("eth0").netns(&outside)).up())?;
    h.addr_add(up.index, "198.51.100.1/24".parse()?, AddrFlags::empty())?;
    let o = Handle::open(&outside)?;
    let eth0 = up.peer_index.ok_or("no peer index")?;
    o.link_set_up(eth0)?;
    o.addr_add(eth0, "198.51.100.2/24".parse()?, AddrFlags::empty())?;
    Ok((host, outside))
}

fn run(scratch: &Path) -> Result<String> {
    let (host, outside) = host_and_outside()?;
    let store: Arc<dyn Store> = Arc::new(SplitStore::open_state_dirs(&scratch.join("state"), &scratch.join("run"))?);
    let ctl = Controller::builder()
        .store(store.clone())
        .run_dir(scratch.join("run"))
        .host_netns(host.try_clone()?)
        .ipam(Arc::new(Ipam::new(store.clone())))
        .firewall(Arc::new(NatFirewall::new(Backend::Nftables, host.try_clone()?, store)))
        .driver(Arc::new(BridgeDriver::new()))
        .build()?;
    ctl.create_network(NetworkConfig::new("web", "bridge").subnet("172.31.1.0/24"))?;
    let sb = ctl.create_sandbox(SandboxConfig { name: "server".into(), ..Default::default() })?;
    // `-p 8080:80`; the parsed mapping accepts Docker's whole syntax
    // ([HOSTIP:][HOSTPORT[-END]:]PORT[-END][/tcp|udp|sctp]).
    let ep = ctl.connect("web", "server", EndpointConfig { ports: vec!["8080:80".parse()?], ..Default::default() })?;
    println!("published: {:?}", ep.bindings);

    // The server, inside the sandbox, tells each client its address.
    let listener = NetNs::open(&sb.netns)?.run(|| TcpListener::bind("0.0.0.0:80"))??;
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let peer = c.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let _ = c.write_all(peer.as_bytes());
        }
    });
    // The client, in the outside namespace, knows only the host's address.
    let to: SocketAddr = "198.51.100.1:8080".parse()?;
    let seen = outside.run(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })??;
    if seen != "198.51.100.2" {
        return Err(format!("the server saw {seen:?}, not the client's 198.51.100.2").into());
    }
    // Disconnecting unpublishes the port in the same operation.
    ctl.disconnect("web", "server")?;
    let after = outside.run(move || TcpStream::connect_timeout(&to, Duration::from_millis(500)).is_ok())?;
    if after {
        return Err("the port still answers after disconnect".into());
    }
    ctl.delete_sandbox("server")?;
    ctl.delete_network("web")?;
    Ok("198.51.100.1:8080 reached the server in the sandbox, which saw the client's 198.51.100.2; gone after disconnect".into())
}

fn main() -> std::process::ExitCode {
    cnm_examples::scratch::report(
        "publish-port",
        "run it as root, with nftables installed",
        cnm_examples::scratch::with_scratch("publish", run),
    )
}

#[cfg(test)]
#[test]
fn publish_port_example() {
    if cnm_netns::testing::require_root("example publish-port") {
        println!("{}", cnm_examples::scratch::with_scratch("publish", run).unwrap());
    }
}
