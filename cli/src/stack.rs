//! The controller a command works with: drivers, IPAM and firewall over one
//! store in the state directories, in the host namespace the flags name.

use std::path::PathBuf;
use std::sync::Arc;

use cnm_bridge::BridgeDriver;
use cnm_core::drivers::{HostDriver, NullDriver};
use cnm_core::{Controller, Error, Result, SplitStore, Store};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::NetNs;

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
            Some(url) => match url.strip_prefix("file://") {
                Some(dir) if dir.starts_with('/') => PathBuf::from(dir),
                _ => {
                    return Err(Error::invalid(
                        "--store",
                        format!("{url:?}: only file:///ABSOLUTE/DIR is supported (etcd comes with the overlay driver)"),
                    ))
                }
            },
        };
        Ok(Paths { state, run: cli.run_dir.clone() })
    }

    /// Where a sandbox's resolv.conf and hosts file go.
    pub fn sandbox_files(&self, name: &str) -> PathBuf {
        self.run.join("files").join(name)
    }
}

/// The host namespace: `--host-netns`, or the caller's.
pub fn host_netns(cli: &Cli) -> Result<NetNs> {
    Ok(match &cli.host_netns {
        Some(p) => NetNs::open(p)?,
        None => NetNs::current()?,
    })
}

/// A controller for one command. The bridge driver runs in one-shot mode:
/// this process exits right after, so detached veths are deleted at once.
pub fn controller(cli: &Cli, paths: &Paths, host: &NetNs) -> Result<Controller> {
    let store: Arc<dyn Store> = Arc::new(SplitStore::open_state_dirs(&paths.state, &paths.run)?);
    let mut b = Controller::builder()
        .store(store.clone())
        .run_dir(&paths.run)
        .host_netns(host.try_clone()?)
        .ipam(Arc::new(Ipam::new(store.clone())))
        .driver(Arc::new(BridgeDriver::one_shot()))
        .driver(Arc::new(HostDriver))
        .driver(Arc::new(NullDriver));
    let backend = match cli.firewall {
        FirewallArg::Nftables => Some(Backend::Nftables),
        FirewallArg::Iptables => Some(Backend::Iptables),
        FirewallArg::None => None,
    };
    if let Some(backend) = backend {
        b = b.firewall(Arc::new(NatFirewall::new(backend, host.try_clone()?, store)));
    }
    b.build()
}
