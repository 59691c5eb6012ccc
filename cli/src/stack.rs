//! The controller a command works with: drivers, IPAM and firewall over one
//! store in the state directories, in the host namespace the flags name.

use std::path::PathBuf;
use std::sync::Arc;

use cnm_bridge::BridgeDriver;
use cnm_core::drivers::{HostDriver, NullDriver};
use cnm_core::etc::system_host_name;
use cnm_core::{Controller, Error, NameServer, Result, SplitStore, Store};
use cnm_dns::ControlClient;
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::NetNs;
use cnm_vxlan::overlay::{OverlayConfig, OverlayDriver};

use crate::args::{Cli, FirewallArg};

/// Where things live, from the global flags.
#[derive(Debug, Clone)]
pub struct Paths {
    /// Durable state.
    pub state: PathBuf,
    /// Run directory (tmpfs).
    pub run: PathBuf,
}

impl Paths {
    /// From the flags: `--store file://DIR` overrides `--state-dir`.
    pub fn from_cli(cli: &Cli) -> Result<Paths> {
        let state = match &cli.store {
            None => cli.state_dir.clone(),
            Some(url) if etcd_url(url) => cli.state_dir.clone(),
            Some(url) => match url.strip_prefix("file://") {
                Some(dir) if dir.starts_with('/') => PathBuf::from(dir),
                _ => {
                    return Err(Error::invalid(
                        "--store",
                        format!("{url:?}: use file:///ABSOLUTE/DIR or etcd://HOST:PORT[/PREFIX/]"),
                    ))
                }
            },
        };
        Ok(Paths { state, run: cli.run_dir.clone() })
    }

    /// The control socket of the agent's DNS server.
    pub fn dns_socket(&self) -> PathBuf {
        self.run.join("dns.sock")
    }

    /// Where a sandbox's resolv.conf and hosts file go.
    pub fn sandbox_files(&self, name: &str) -> PathBuf {
        self.run.join("files").join(name)
    }
}

fn etcd_url(url: &str) -> bool {
    ["etcd://", "http://", "etcds://", "https://"].iter().any(|s| url.starts_with(s))
}

/// The environment variable that holds the etcd user's password.
pub const PASSWORD_ENV: &str = "CNM_STORE_PASSWORD";

/// etcd as the flags describe it: the URL's members and prefix, TLS files,
/// and credentials (the password from CNM_STORE_PASSWORD or a file).
fn etcd_config(cli: &Cli, url: &str) -> Result<cnm_store_etcd::EtcdConfig> {
    let mut cfg = cnm_store_etcd::EtcdConfig::from_url(url).map_err(|e| Error::invalid("--store", e.to_string()))?;
    if cli.store_ca.is_some() || cli.store_cert.is_some() {
        cfg = cfg.tls(cnm_store_etcd::TlsFiles {
            ca: cli.store_ca.clone(),
            cert: cli.store_cert.clone(),
            key: cli.store_key.clone(),
        });
    }
    if let Some(user) = &cli.store_user {
        let password = match &cli.store_password_file {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| Error::invalid("--store-password-file", format!("{}: {e}", f.display())))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            None => std::env::var(PASSWORD_ENV).map_err(|_| {
                Error::invalid("--store-user", format!("no password: set {PASSWORD_ENV} or --store-password-file"))
            })?,
        };
        cfg = cfg.credentials(user.clone(), password);
    }
    Ok(cfg)
}

use cnm_vxlan::overlay::gateway_bridge;

/// The host namespace: `--host-netns`, or the caller's.
pub fn host_netns(cli: &Cli) -> Result<NetNs> {
    Ok(match &cli.host_netns {
        Some(p) => NetNs::open(p)?,
        None => NetNs::current()?,
    })
}

/// A controller for one command, and the overlay driver when it is on. The
/// bridge driver runs in one-shot mode: this process exits right after, so
/// detached veths are deleted at once. `names`: the name server (the
/// agent's own DNS server); by default, a client of the agent's control
/// socket, which serves sandboxes only while an agent runs.
/// The bridge driver: long-running commands (the agent, the plugin) batch
/// the deletion of detached veths (one RCU wait per batch, not per veth,
/// off the caller's path); a one-shot command deletes them before it exits.
fn bridge_driver(cli: &Cli) -> BridgeDriver {
    match cli.cmd {
        crate::args::Cmd::Agent { .. } | crate::args::Cmd::Plugin { .. } => BridgeDriver::new(),
        _ => BridgeDriver::one_shot(),
    }
}

pub fn controller(
    cli: &Cli,
    paths: &Paths,
    host: &NetNs,
    names: Option<Arc<dyn NameServer>>,
) -> Result<(Controller, Option<Arc<OverlayDriver>>)> {
    let local: Arc<dyn Store> = Arc::new(SplitStore::open_state_dirs(&paths.state, &paths.run)?);
    let store: Arc<dyn Store> = match cli.store.as_deref() {
        Some(url) if etcd_url(url) => {
            let etcd =
                cnm_store_etcd::EtcdStore::open(etcd_config(cli, url)?, Some(host)).map_err(|e| match e.into() {
                    Error::Unavailable { service, reason, .. } => {
                        Error::Unavailable { op: "--store".into(), service, reason }
                    }
                    other => other,
                })?;
            Arc::new(SplitStore::cluster(local, Arc::new(etcd)))
        }
        _ => local,
    };
    let overlay = match cli.advertise_addr {
        None => None,
        Some(_) if !cli.store.as_deref().is_some_and(etcd_url) => {
            return Err(Error::invalid("--advertise-addr", "the overlay driver needs --store etcd://HOST:PORT"))
        }
        Some(addr) => {
            let name = cli.host_name.clone().unwrap_or_else(system_host_name);
            let id = cnm_vxlan::overlay::node_id(&paths.state)?;
            let cfg = OverlayConfig::new(name, addr, paths.run.join("overlay")).with_node_id(id);
            Some(Arc::new(OverlayDriver::new(cfg, store.clone())?))
        }
    };
    // Backends are told apart by host: the overlay's node id (unique even
    // where hosts share a name), else the host name.
    let node = match &overlay {
        Some(o) => o.config().node().to_string(),
        None => cli.host_name.clone().unwrap_or_else(system_host_name),
    };
    let mut b = Controller::builder()
        .node(node)
        .store(store.clone())
        .run_dir(&paths.run)
        .sandbox_files(paths.run.join("files"))
        .claim_host_netns()
        .name_server(names.unwrap_or_else(|| Arc::new(ControlClient::new(paths.dns_socket()))))
        .host_netns(host.try_clone()?)
        .ipam(Arc::new(ipam(cli, store.clone())))
        .driver(Arc::new(bridge_driver(cli)))
        .driver(Arc::new(cnm_macvlan::MacvlanDriver::new()))
        .driver(Arc::new(HostDriver))
        .driver(Arc::new(NullDriver));
    if !cli.no_predefined {
        b = b.predefined_networks(default_bridge(cli)?);
    }
    let backend = match cli.firewall {
        FirewallArg::Nftables => Some(Backend::Nftables),
        FirewallArg::Iptables => Some(Backend::Iptables),
        FirewallArg::None => None,
    };
    if let Some(backend) = backend {
        b = b.firewall(Arc::new(NatFirewall::new(backend, host.try_clone()?, store.clone())));
    }
    if let Some(o) = &overlay {
        b = b.driver(o.clone()).gateway_bridge(gateway_bridge());
    }
    for d in plugin_drivers(cli, &*store, overlay.is_some())? {
        b = b.driver(d);
    }
    for (name, ipam) in plugin_ipams(cli, &*store)? {
        b = b.ipam_driver(name, ipam);
    }
    Ok((b.build()?, overlay))
}

/// The IPAM, with dockerd's `--default-address-pool` as its local pools.
fn ipam(cli: &Cli, store: Arc<dyn Store>) -> Ipam {
    if cli.default_address_pool.is_empty() {
        return Ipam::new(store);
    }
    let local = cli.default_address_pool.iter().map(|p| cnm_ipam::DefaultPool { base: p.base, size: p.size }).collect();
    Ipam::with_options(store, cnm_ipam::IpamOptions { local, ..Default::default() })
}

/// The default bridge: `--default-bridge`, with `--bip`, else the first
/// subnet of the first `--default-address-pool`, else Docker's 172.17.0.1/16.
fn default_bridge(cli: &Cli) -> Result<cnm_core::DefaultBridge> {
    let mut b = match (cli.bip, cli.default_address_pool.first()) {
        (Some(bip), _) => {
            if bip.addr() == bip.network() || bip.prefix_len() >= bip.max_prefix_len() - 1 {
                return Err(Error::invalid(
                    "--bip",
                    format!("{bip}: give the bridge's address with the prefix, as 172.17.0.1/16"),
                ));
            }
            cnm_core::DefaultBridge { bip, ..Default::default() }
        }
        (None, Some(p)) => cnm_core::DefaultBridge::from_address_pool(p.base, p.size).ok_or_else(|| {
            Error::invalid("--default-address-pool", format!("no subnet of {} in {}", p.size, p.base))
        })?,
        (None, None) => cnm_core::DefaultBridge::default(),
    };
    cnm_core::model::validate_ifname("--default-bridge", &cli.default_bridge)?;
    b.name = cli.default_bridge.clone();
    Ok(b)
}

/// Docker network plugins as drivers: the one `network create -d NAME`
/// names, and those of the networks already made with one. A plugin that
/// cannot be found is an error only for the network being created; the
/// others report it when they are used.
fn plugin_drivers(cli: &Cli, store: &dyn Store, overlay: bool) -> Result<Vec<Arc<dyn cnm_core::NetworkDriver>>> {
    let builtin = |d: &str| matches!(d, "bridge" | "macvlan" | "host" | "null") || (overlay && d == "overlay");
    let mut names = std::collections::BTreeSet::new();
    for prefix in ["networks/", "global/networks/"] {
        for e in store.list(prefix).unwrap_or_default() {
            let net: Option<serde_json::Value> = serde_json::from_slice(&e.value).ok();
            if let Some(d) = net.as_ref().and_then(|n| n["driver"].as_str()).filter(|d| !builtin(d)) {
                names.insert(d.to_string());
            }
        }
    }
    let mut drivers: Vec<Arc<dyn cnm_core::NetworkDriver>> = Vec::new();
    if let crate::args::Cmd::Network(crate::args::NetworkCmd::Create(c)) = &cli.cmd {
        if !builtin(&c.driver) && !names.contains(&c.driver) {
            if c.driver == "overlay" {
                return Err(Error::invalid(
                    "--driver",
                    "the overlay driver needs --store etcd://HOST:PORT and --advertise-addr",
                ));
            }
            let d = cnm_remote::RemoteDriver::discover(&c.driver)
                .map_err(|e| Error::invalid("--driver", format!("{:?} is no built-in driver, and {e}", c.driver)))?;
            drivers.push(Arc::new(d));
        }
    }
    for n in names {
        if let Ok(d) = cnm_remote::RemoteDriver::discover(&n) {
            drivers.push(Arc::new(d));
        }
    }
    Ok(drivers)
}

/// Docker IPAM plugins: the one `network create --ipam-driver NAME` names,
/// and those of the networks already made with one.
fn plugin_ipams(cli: &Cli, store: &dyn Store) -> Result<Vec<(String, Arc<dyn cnm_core::IpamDriver>)>> {
    let mut names = std::collections::BTreeSet::new();
    for prefix in ["networks/", "global/networks/"] {
        for e in store.list(prefix).unwrap_or_default() {
            let net: Option<serde_json::Value> = serde_json::from_slice(&e.value).ok();
            if let Some(d) = net.as_ref().and_then(|n| n["ipam"]["Driver"].as_str()).filter(|d| *d != "default") {
                names.insert(d.to_string());
            }
        }
    }
    let mut ipams: Vec<(String, Arc<dyn cnm_core::IpamDriver>)> = Vec::new();
    if let crate::args::Cmd::Network(crate::args::NetworkCmd::Create(c)) = &cli.cmd {
        if c.ipam_driver != "default" && !names.contains(&c.ipam_driver) {
            let i = cnm_remote::RemoteIpam::discover(&c.ipam_driver).map_err(|e| {
                Error::invalid("--ipam-driver", format!("{:?} is not the default IPAM, and {e}", c.ipam_driver))
            })?;
            ipams.push((c.ipam_driver.clone(), Arc::new(i)));
        }
    }
    for n in names {
        if let Ok(i) = cnm_remote::RemoteIpam::discover(&n) {
            ipams.push((n, Arc::new(i)));
        }
    }
    Ok(ipams)
}
