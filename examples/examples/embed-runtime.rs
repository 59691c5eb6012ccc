//! Embedding the controller in a container runtime: the runtime makes the
//! container's network namespace itself (as runc or crun would) and hands
//! its path to cnm, which attaches it to a network; when the container
//! stops, cnm detaches it and the runtime removes the namespace.
//!
//! The controller is long-lived and shared by the runtime's threads; every
//! call is synchronous and needs no async runtime.
//!
//! Run as root: `cargo run -p cnm-examples --example embed-runtime`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cnm_bridge::BridgeDriver;
use cnm_core::{Controller, EndpointConfig, NetworkConfig, SandboxConfig, SplitStore, Store};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::{Handle, NetNs};

use cnm_examples::scratch::Result;

/// What a runtime keeps per container.
struct Container {
    id: String,
    netns: PathBuf,
}

/// The runtime's side: create a container with its own namespace.
fn runtime_create_container(dir: &Path, id: &str) -> Result<Container> {
    let ns = NetNs::create_named(dir, id)?; // like `ip netns add`
    Ok(Container { id: id.to_string(), netns: ns.path().ok_or("named namespace without a path")?.to_path_buf() })
}

/// The network hook a runtime calls after creating the container.
fn on_container_start(ctl: &Controller, c: &Container, network: &str) -> Result<String> {
    ctl.create_sandbox(SandboxConfig { name: c.id.clone(), netns: Some(c.netns.clone()), ..Default::default() })?;
    let ep = ctl.connect(network, &c.id, EndpointConfig::default())?;
    Ok(format!("{} {}", ep.ifname.unwrap_or_default(), ep.ipv4.map(|a| a.to_string()).unwrap_or_default()))
}

/// The hook a runtime calls when the container stops: the sandbox goes,
/// with every endpoint; the namespace stays the runtime's to remove.
fn on_container_stop(ctl: &Controller, c: &Container) -> Result<()> {
    ctl.delete_sandbox(&c.id)?;
    Ok(())
}

fn run(scratch: &Path) -> Result<String> {
    let host = NetNs::create_anonymous()?;
    let store: Arc<dyn Store> = Arc::new(SplitStore::open_state_dirs(&scratch.join("state"), &scratch.join("run"))?);
    let ctl = Controller::builder()
        .store(store.clone())
        .run_dir(scratch.join("run"))
        .host_netns(host.try_clone()?)
        .ipam(Arc::new(Ipam::new(store.clone())))
        .firewall(Arc::new(NatFirewall::new(Backend::Nftables, host.try_clone()?, store)))
        .driver(Arc::new(BridgeDriver::new()))
        .build()?;
    // At runtime start-up: load the state and repair what a crash left.
    ctl.restore()?;
    ctl.reconcile()?;
    ctl.create_network(NetworkConfig::new("runtime0", "bridge").subnet("172.31.2.0/24"))?;

    let containers_dir = scratch.join("containers");
    let c = runtime_create_container(&containers_dir, "ctr1")?;
    let attached = on_container_start(&ctl, &c, "runtime0")?;
    // Check from the container's side: eth0 is up with its address.
    let inside = Handle::open(&NetNs::open(&c.netns)?)?;
    let eth0 = inside.link_get("eth0")?;
    if !eth0.up || inside.addr_list(Some(eth0.index), None)?.is_empty() {
        return Err("eth0 in the container is not up with an address".into());
    }
    on_container_stop(&ctl, &c)?;
    if inside.link_get("eth0").is_ok_and(|l| l.lower_up) {
        return Err("eth0 still carries traffic after the container stopped".into());
    }
    // The runtime removes its namespace; the network stays for the next one.
    NetNs::remove_named(&containers_dir, &c.id)?;
    let _ = NetNs::release_dir(&containers_dir);
    ctl.delete_network("runtime0")?;
    Ok(format!("container ctr1 got {attached} in its own namespace and lost it when it stopped"))
}

fn main() -> std::process::ExitCode {
    cnm_examples::scratch::report(
        "embed-runtime",
        "run it as root, with nftables installed",
        cnm_examples::scratch::with_scratch("embed", run),
    )
}

#[cfg(test)]
#[test]
fn embed_runtime_example() {
    if cnm_netns::testing::require_root("example embed-runtime") {
        println!("{}", cnm_examples::scratch::with_scratch("embed", run).unwrap());
    }
}
