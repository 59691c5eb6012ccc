//! The controller one call works with: cnm's drivers, IPAM and firewall over
//! the store in the configuration's directories, in the caller's (the
//! runtime's) host namespace. It is the `cnm` tool's stack: the tool, given
//! `--state-dir DATADIR --run-dir RUNDIR`, sees what runtimes made.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;

use cnm_bridge::BridgeDriver;
use cnm_core::drivers::{HostDriver, NullDriver};
use cnm_core::{Controller, SplitStore, Store};
use cnm_dns::ControlClient;
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::NetNs;
use cnm_vxlan::overlay::{OverlayConfig, OverlayDriver};

use crate::config::NetConf;
use crate::error::{Error, Result};

/// A store error at startup: etcd unreachable is worth a retry (11).
fn store_error(e: cnm_core::Error) -> Error {
    match e.kind() {
        cnm_core::ErrorKind::Unavailable => Error::TryAgain(e.to_string()),
        _ => Error::Cnm(e),
    }
}

/// The address this host reaches `url`'s host from (no packet is sent: a
/// UDP socket's connect only picks the route), in `host`.
fn source_address(host: &NetNs, url: &str) -> Result<IpAddr> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', ',']).next().unwrap_or_default();
    let target: SocketAddr = authority.parse().map_err(|_| {
        Error::config("advertiseAddr", format!("give one: {authority:?} in the store URL is not IP:PORT"))
    })?;
    let picked = host.run(|| -> std::io::Result<IpAddr> {
        let bind = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = UdpSocket::bind(bind)?;
        s.connect(target)?;
        Ok(s.local_addr()?.ip())
    });
    match picked {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(Error::config("advertiseAddr", format!("no route to the store {target}: {e}"))),
        Err(e) => Err(Error::Cnm(e.into())),
    }
}

/// The store `conf` names: cnm's state directories, and etcd for what
/// the hosts of a cluster share.
fn store(conf: &NetConf, host: &NetNs) -> Result<Arc<dyn Store>> {
    let local: Arc<dyn Store> =
        Arc::new(SplitStore::open_state_dirs(&conf.data_dir(), &conf.run_dir()).map_err(store_error)?);
    Ok(match conf.etcd()? {
        Some(config) => {
            let etcd = cnm_store_etcd::EtcdStore::open(config, Some(host)).map_err(|e| store_error(e.into()))?;
            Arc::new(SplitStore::cluster(local, Arc::new(etcd)))
        }
        None => local,
    })
}

/// The overlay driver of an overlay configuration (`None` for a bridge):
/// this host's name, its underlay address (`advertiseAddr`, or the address
/// it reaches the store from) and its node id. The host's `cnm agent`
/// (given the same directories, store and address) keeps its lease and
/// programs the other hosts' endpoints; embedders run
/// `cnm_vxlan::overlay::Agent` on this driver instead.
pub fn overlay_driver(conf: &NetConf, host: &NetNs) -> Result<Option<Arc<OverlayDriver>>> {
    overlay_on(conf, host, &store(conf, host)?)
}

fn overlay_on(conf: &NetConf, host: &NetNs, store: &Arc<dyn Store>) -> Result<Option<Arc<OverlayDriver>>> {
    let (Some(url), "overlay") = (&conf.store, conf.driver()) else { return Ok(None) };
    let addr = match conf.advertise_addr {
        Some(a) => a,
        None => source_address(host, url)?,
    };
    let name = conf.host_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
    });
    let id = cnm_vxlan::overlay::node_id(&conf.data_dir())?;
    let cfg = OverlayConfig::new(name, addr, conf.run_dir().join("overlay")).with_node_id(id);
    Ok(Some(Arc::new(OverlayDriver::new(cfg, store.clone())?)))
}

/// A controller for `conf`, working in `host`; leaves delete veths at once.
pub fn controller(conf: &NetConf, host: &NetNs) -> Result<Controller> {
    controller_with(conf, host, Arc::new(BridgeDriver::one_shot()))
}

/// [`controller`] with `bridge` as its bridge driver.
pub fn controller_with(conf: &NetConf, host: &NetNs, bridge: Arc<BridgeDriver>) -> Result<Controller> {
    let run = conf.run_dir();
    let store = store(conf, host)?;
    let mut b = Controller::builder()
        .store(store.clone())
        .run_dir(&run)
        .sandbox_files(run.join("files"))
        .claim_host_netns()
        .name_server(Arc::new(ControlClient::new(run.join("dns.sock"))))
        .host_netns(host.try_clone()?)
        .ipam(Arc::new(Ipam::new(store.clone())))
        .driver(bridge)
        .driver(Arc::new(HostDriver))
        .driver(Arc::new(NullDriver));
    let backend = match conf.firewall.as_deref() {
        None | Some("nftables") => Some(Backend::Nftables),
        Some("iptables") => Some(Backend::Iptables),
        _ => None,
    };
    if let Some(backend) = backend {
        b = b.firewall(Arc::new(NatFirewall::new(backend, host.try_clone()?, store.clone())));
    }
    if let Some(d) = overlay_on(conf, host, &store)? {
        b = b.driver(d).gateway_bridge(cnm_vxlan::overlay::gateway_bridge());
    }
    Ok(b.build()?)
}
