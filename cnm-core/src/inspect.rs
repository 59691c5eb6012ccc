//! `docker network inspect` output: the same keys, spelling and value formats.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::controller::Controller;
use crate::error::Result;
use crate::model::{IpamPoolConfig, Network};
use crate::time::Timestamp;

/// One network, shaped exactly like an element of `docker network inspect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInspect {
    /// Name.
    pub name: String,
    /// Full id.
    pub id: String,
    /// Creation time, RFC 3339 with nanoseconds.
    pub created: Timestamp,
    /// `local` or `global`.
    pub scope: String,
    /// Driver name.
    pub driver: String,
    /// IPv6 on.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// IPAM settings.
    #[serde(rename = "IPAM")]
    pub ipam: IpamInspect,
    /// Internal network.
    pub internal: bool,
    /// Attachable.
    pub attachable: bool,
    /// Swarm ingress network (always false).
    pub ingress: bool,
    /// Config-from network (always empty).
    pub config_from: ConfigFrom,
    /// Config-only network (always false).
    pub config_only: bool,
    /// Joined sandboxes by sandbox id.
    pub containers: BTreeMap<String, ContainerInspect>,
    /// Driver options, as requested plus what the driver reports.
    pub options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Hosts of a global network.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub peers: Option<Vec<Peer>>,
}

/// `IPAM` of inspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamInspect {
    /// IPAM driver.
    pub driver: String,
    /// IPAM options.
    pub options: BTreeMap<String, String>,
    /// Subnets: as requested, or as chosen (with their gateway) when automatic.
    pub config: Vec<IpamPoolConfig>,
}

/// `ConfigFrom` of inspect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigFrom {
    /// Always empty.
    pub network: String,
}

/// A joined sandbox in inspect's `Containers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    /// Sandbox name.
    pub name: String,
    /// Endpoint id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// MAC address, or empty.
    pub mac_address: String,
    /// IPv4 address with prefix length, or empty.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// IPv6 address with prefix length, or empty.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// A host of a global network in inspect's `Peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Peer {
    /// Host name.
    pub name: String,
    /// Underlay address.
    #[serde(rename = "IP")]
    pub ip: String,
}

impl Controller {
    /// `docker network inspect` of one network.
    pub fn inspect_network(&self, key: &str) -> Result<NetworkInspect> {
        let net = self.network(key)?;
        self.inspect(&net)
    }

    fn inspect(&self, net: &Network) -> Result<NetworkInspect> {
        let sandboxes = self.sandboxes()?;
        let mut containers = BTreeMap::new();
        for ep in self.endpoints(Some(net.id.as_str()))? {
            let Some(sb_id) = &ep.sandbox else { continue };
            let name = sandboxes.iter().find(|s| &s.id == sb_id).map(|s| s.name.clone()).unwrap_or_default();
            containers.insert(
                sb_id.to_string(),
                ContainerInspect {
                    name,
                    endpoint_id: ep.id.to_string(),
                    mac_address: ep.mac.map(|m| m.to_string()).unwrap_or_default(),
                    ipv4_address: ep.ipv4.map(|a| a.to_string()).unwrap_or_default(),
                    ipv6_address: ep.ipv6.map(|a| a.to_string()).unwrap_or_default(),
                },
            );
        }
        let config = net
            .pools
            .iter()
            .map(|p| {
                let requested = net.ipam.config.iter().find(|c| c.subnet == Some(p.subnet));
                match (p.requested, requested) {
                    (true, Some(c)) => c.clone(),
                    _ => IpamPoolConfig {
                        subnet: Some(p.subnet),
                        gateway: p.gateway.map(|g| g.addr()),
                        ip_range: p.ip_range,
                        ..Default::default()
                    },
                }
            })
            .collect();
        let mut options = net.options.clone();
        options.extend(net.driver_options.clone());
        let peers = self.driver(&net.driver)?.peers(&self.ctx(), net)?;
        Ok(NetworkInspect {
            name: net.name.clone(),
            id: net.id.to_string(),
            created: net.created,
            scope: net.scope.to_string(),
            driver: net.driver.clone(),
            enable_ipv6: net.enable_ipv6,
            ipam: IpamInspect { driver: net.ipam.driver.clone(), options: net.ipam.options.clone(), config },
            internal: net.internal,
            attachable: net.attachable,
            ingress: false,
            config_from: ConfigFrom::default(),
            config_only: false,
            containers,
            options,
            labels: net.labels.clone(),
            peers,
        })
    }
}
