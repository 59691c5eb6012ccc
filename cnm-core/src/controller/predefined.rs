//! Docker's predefined networks, there from the first command: `bridge`
//! (the default bridge, Docker's `docker0`), `host` and `none`.

use ipnet::IpNet;

use super::{net_key, Controller};
use crate::error::Result;
use crate::model::{IpamPoolConfig, NetworkConfig, Scope};
use crate::store::Store;

/// The names of the predefined networks, in `network ls` order.
pub const PREDEFINED: [&str; 3] = ["bridge", "host", "none"];

/// The default bridge's settings (dockerd's `--bip`, `-b`, `--mtu`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultBridge {
    /// The Linux bridge's name (Docker's `docker0`; `cnm0` here).
    pub name: String,
    /// The bridge's address with the subnet's prefix (dockerd's `--bip`).
    pub bip: IpNet,
    /// The MTU of the bridge and its endpoints.
    pub mtu: u32,
}

impl Default for DefaultBridge {
    /// `cnm0`, 172.17.0.1/16, MTU 1500: Docker's defaults but the name.
    fn default() -> Self {
        DefaultBridge { name: "cnm0".into(), bip: "172.17.0.1/16".parse().expect("a prefix"), mtu: 1500 }
    }
}

impl DefaultBridge {
    /// Its subnet and gateway from the first subnet of `size` bits in
    /// `base` (dockerd's `--default-address-pool` without `--bip`).
    pub fn from_address_pool(base: IpNet, size: u8) -> Option<DefaultBridge> {
        let first = base.subnets(size).ok()?.next()?;
        let gateway = first.hosts().next()?;
        let bip = IpNet::new(gateway, size).ok()?;
        Some(DefaultBridge { bip, ..DefaultBridge::default() })
    }

    /// The network's configuration, with the options `docker network
    /// inspect bridge` shows.
    fn config(&self) -> NetworkConfig {
        let mut cfg = NetworkConfig::new("bridge", "bridge");
        cfg.ipam.config = vec![IpamPoolConfig {
            subnet: Some(self.bip.trunc()),
            gateway: Some(self.bip.addr()),
            ..Default::default()
        }];
        for (k, v) in [
            ("com.docker.network.bridge.default_bridge", "true".to_string()),
            ("com.docker.network.bridge.enable_icc", "true".into()),
            ("com.docker.network.bridge.enable_ip_masquerade", "true".into()),
            ("com.docker.network.bridge.host_binding_ipv4", "0.0.0.0".into()),
            ("com.docker.network.bridge.name", self.name.clone()),
            ("com.docker.network.driver.mtu", self.mtu.to_string()),
        ] {
            cfg.options.insert(k.into(), v);
        }
        cfg
    }
}

impl Controller {
    /// Makes the predefined networks that are missing: their records and
    /// address pools (the default bridge's subnet is taken before any
    /// automatic one), not their kernel objects, which wait for a first
    /// join. Cheap when they exist: three reads.
    pub(super) fn ensure_predefined(&self, bridge: &DefaultBridge) -> Result<()> {
        let missing = |s: &dyn Store| -> Result<bool> {
            for n in PREDEFINED {
                if s.get(&net_key(n, Scope::Local))?.is_none() {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        if !missing(&*self.store)? {
            return Ok(());
        }
        let _op = self.op()?;
        for (name, cfg) in [
            ("bridge", bridge.config()),
            ("host", NetworkConfig::new("host", "host")),
            ("none", NetworkConfig::new("none", "null")),
        ] {
            if self.store.get(&net_key(name, Scope::Local))?.is_none() {
                self.create_network_as(cfg, true)?;
            }
        }
        Ok(())
    }
}
