//! A network driver of your own, plugged into the controller: `routed`
//! gives each sandbox a veth pair and a host route to its address, with no
//! bridge at all (as Calico does). The controller still does the
//! bookkeeping, IPAM, rollback and persistence; the driver only does the
//! kernel work, through cnm-netns.
//!
//! Run as root: `cargo run -p cnm-examples --example custom-driver`.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cnm_core::driver::{DriverContext, NetworkDriver};
use cnm_core::join::{JoinInfo, JoinRequest};
use cnm_core::{Controller, Endpoint, EndpointConfig, Error, Network, NetworkConfig, SandboxConfig, SplitStore, Store};
use cnm_ipam::Ipam;
use cnm_netns::{AddrFlags, Handle, LinkAdd, NetNs, Route, VethPeer};
use ipnet::IpNet;

use cnm_examples::scratch::Result;

/// The address every host end has and every sandbox routes through.
const GATEWAY: &str = "169.254.1.1";

/// Routed networking: veth pairs and host routes.
struct RoutedDriver;

impl RoutedDriver {
    fn host_end(ep: &Endpoint) -> String {
        format!("rt{}", &ep.id.as_str()[..7])
    }
}

impl NetworkDriver for RoutedDriver {
    fn name(&self) -> &str {
        "routed"
    }

    // Nothing to create per network: the routes come with the endpoints.
    fn create_network(&self, _: &DriverContext<'_>, _: &mut Network) -> cnm_core::Result<()> {
        Ok(())
    }

    fn delete_network(&self, _: &DriverContext<'_>, _: &Network) -> cnm_core::Result<()> {
        Ok(())
    }

    fn join(
        &self,
        ctx: &DriverContext<'_>,
        _: &Network,
        ep: &mut Endpoint,
        req: &JoinRequest<'_>,
    ) -> cnm_core::Result<JoinInfo> {
        let addr = ep.ipv4.ok_or_else(|| Error::invalid("ip", "the routed driver needs an IPv4 address"))?.addr();
        let gw: IpAddr = GATEWAY.parse().unwrap();
        let host = Handle::open(ctx.host).map_err(Error::from_netns("open host"))?;
        let name = Self::host_end(ep);
        // The sandbox end is created directly in the sandbox; cnm-core
        // configures it from the description this join returns.
        let veth = LinkAdd::veth(name.as_str(), VethPeer::new(req.ifname).netns(req.netns)).up();
        let link = host.link_add(&veth).map_err(Error::from_netns("link_add"))?;
        // From here on, a failure removes the veth (its peer goes with it),
        // so a failed join leaves nothing behind.
        let host_side = || -> cnm_core::Result<()> {
            host.addr_add(link.index, format!("{GATEWAY}/32").parse().unwrap(), AddrFlags::empty())
                .map_err(Error::from_netns("addr_add"))?;
            host.route_add(&Route::device(addr.into(), link.index)).map_err(Error::from_netns("route_add"))
        };
        if let Err(e) = host_side() {
            let _ = host.link_del(link.index);
            return Err(e);
        }
        // The sandbox side: a /32 address, the gateway on the link, the
        // default route through it.
        let mut info = JoinInfo::in_sandbox(ep, link.peer_index).gateway(Some(gw)).route(gw.into(), None);
        info.addresses = vec![IpNet::from(addr)];
        Ok(info)
    }

    fn leave(&self, ctx: &DriverContext<'_>, _: &Network, ep: &Endpoint, _: Option<&NetNs>) -> cnm_core::Result<()> {
        let host = Handle::open(ctx.host).map_err(Error::from_netns("open host"))?;
        match host.link_del(Self::host_end(ep).as_str()) {
            // Idempotent: gone already is fine.
            Err(e) if e.kind() == cnm_netns::ErrorKind::NotFound => Ok(()),
            other => other.map_err(Error::from_netns("link_del")),
        }
    }
}

fn run(scratch: &Path) -> Result<String> {
    let host = NetNs::create_anonymous()?;
    let store: Arc<dyn Store> = Arc::new(SplitStore::open_state_dirs(&scratch.join("state"), &scratch.join("run"))?);
    let ctl = Controller::builder()
        .store(store.clone())
        .run_dir(scratch.join("run"))
        .host_netns(host.try_clone()?)
        .ipam(Arc::new(Ipam::new(store)))
        .driver(Arc::new(RoutedDriver))
        .build()?;
    ctl.create_network(NetworkConfig::new("flat", "routed").subnet("10.200.0.0/24"))?;
    let sb = ctl.create_sandbox(SandboxConfig { name: "s1".into(), ..Default::default() })?;
    let ep = ctl.connect("flat", "s1", EndpointConfig::default())?;
    let addr = ep.ipv4.ok_or("no address")?.addr();

    // Check: the host reaches a server in the sandbox over its route.
    let listener = NetNs::open(&sb.netns)?.run(|| TcpListener::bind("0.0.0.0:9000"))??;
    std::thread::spawn(move || listener.accept().map(|_| ()));
    let to = SocketAddr::new(addr, 9000);
    host.run(move || TcpStream::connect_timeout(&to, Duration::from_secs(3)))??;
    let route = Handle::open(&host)?.route_list(None)?.into_iter().find(|r| r.dst.addr() == addr);
    route.ok_or("no host route to the sandbox")?;

    ctl.delete_sandbox("s1")?;
    ctl.delete_network("flat")?;
    Ok(format!("the host reached sandbox s1 at {addr} over a /32 route of the custom `routed` driver"))
}

fn main() -> std::process::ExitCode {
    cnm_examples::scratch::report("custom-driver", "run it as root", cnm_examples::scratch::with_scratch("driver", run))
}

#[cfg(test)]
#[test]
fn custom_driver_example() {
    if cnm_netns::testing::require_root("example custom-driver") {
        println!("{}", cnm_examples::scratch::with_scratch("driver", run).unwrap());
    }
}
