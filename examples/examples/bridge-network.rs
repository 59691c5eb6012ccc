//! A bridge network with two sandboxes that talk to each other, through the
//! library API: a controller with the bridge driver, the IPAM and the
//! nftables firewall, working inside a "host" namespace this program
//! creates (so the machine's own network is never touched).
//!
//! Run as root: `cargo run -p cnm-examples --example bridge-network`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cnm_bridge::BridgeDriver;
use cnm_core::{Controller, EndpointConfig, NetworkConfig, SandboxConfig, SplitStore, Store};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::NetNs;

use cnm_examples::scratch::Result;

fn run(scratch: &Path) -> Result<String> {
    // The namespace the controller treats as "the host". A real host would
    // use NetNs::current() (the default).
    let host = NetNs::create_anonymous()?;
    // Configuration and run-time state in one store; IPAM and the firewall
    // share it, so any process reading the same directories sees it all.
    let store: Arc<dyn Store> = Arc::new(SplitStore::open_state_dirs(&scratch.join("state"), &scratch.join("run"))?);
    let ctl = Controller::builder()
        .store(store.clone())
        .run_dir(scratch.join("run"))
        .host_netns(host.try_clone()?)
        .ipam(Arc::new(Ipam::new(store.clone())))
        .firewall(Arc::new(NatFirewall::new(Backend::Nftables, host.try_clone()?, store)))
        .driver(Arc::new(BridgeDriver::new()))
        .build()?;

    // `docker network create --subnet 172.31.0.0/24 net1`
    ctl.create_network(NetworkConfig::new("net1", "bridge").subnet("172.31.0.0/24"))?;
    // Two sandboxes; without a namespace path the controller makes named
    // namespaces under its run directory.
    let mut addrs = Vec::new();
    let mut namespaces = Vec::new();
    for name in ["a", "b"] {
        let sb = ctl.create_sandbox(SandboxConfig { name: name.into(), ..Default::default() })?;
        // `docker network connect net1 a`: an endpoint with an address from
        // IPAM, a veth pair whose eth0 end is created inside the sandbox.
        let ep = ctl.connect("net1", name, EndpointConfig::default())?;
        addrs.push(ep.ipv4.ok_or("no address")?.addr());
        namespaces.push(NetNs::open(&sb.netns)?);
    }

    // Check: a TCP server in b answers a client in a, over the bridge.
    // Sockets belong to the namespace they were created in, so each is made
    // inside its sandbox with NetNs::run.
    let listener = namespaces[1].run(|| TcpListener::bind("0.0.0.0:7"))??;
    let server = std::thread::spawn(move || -> std::io::Result<String> {
        let (mut c, peer) = listener.accept()?;
        c.write_all(b"hello")?;
        Ok(peer.ip().to_string())
    });
    let to = SocketAddr::new(addrs[1], 7);
    let got = namespaces[0].run(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf)
    })??;
    let seen = server.join().map_err(|_| "server thread panicked")??;
    if got != "hello" || seen != addrs[0].to_string() {
        return Err(format!("unexpected exchange: got {got:?}, server saw {seen}").into());
    }

    // Tear down: sandboxes (their endpoints go with them), then the network.
    ctl.delete_sandbox("a")?;
    ctl.delete_sandbox("b")?;
    ctl.delete_network("net1")?;
    Ok(format!("sandbox a ({}) talked to sandbox b ({}) over bridge network net1", addrs[0], addrs[1]))
}

fn main() -> std::process::ExitCode {
    cnm_examples::scratch::report(
        "bridge-network",
        "run it as root, with nftables installed",
        cnm_examples::scratch::with_scratch("bridge", run),
    )
}

#[cfg(test)]
#[test]
fn bridge_network_example() {
    if cnm_netns::testing::require_root("example bridge-network") {
        println!("{}", cnm_examples::scratch::with_scratch("bridge", run).unwrap());
    }
}
