//! The firewall trait: per-network rules and published ports.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{PortBinding, PortMapping};

/// What the firewall needs to know of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallNetwork {
    /// Network id.
    pub id: String,
    /// The interface (bridge) its endpoints hang off.
    pub interface: String,
    /// Its subnets.
    pub subnets: Vec<IpNet>,
    /// No traffic in or out beyond the network.
    pub internal: bool,
    /// Masquerade traffic leaving the network.
    pub masquerade: bool,
    /// Endpoints on the network may talk to each other.
    pub icc: bool,
}

/// A set of published ports of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRequest {
    /// Endpoint id.
    pub endpoint: String,
    /// Network id.
    pub network: String,
    /// Container addresses (IPv4 and/or IPv6).
    pub addresses: Vec<IpAddr>,
    /// Requested mappings.
    pub ports: Vec<PortMapping>,
}

/// A firewall backend. Each call is one atomic transaction: it applies
/// completely or not at all. Removing what is already gone is not an error.
pub trait Firewall: Send + Sync {
    /// Backend name (`nftables`, `iptables`, `none`).
    fn name(&self) -> &str;
    /// Installs a network's rules (masquerade, forwarding, isolation …).
    fn add_network(&self, net: &FirewallNetwork) -> Result<()>;
    /// Removes a network's rules.
    fn remove_network(&self, network_id: &str) -> Result<()>;
    /// Publishes ports; returns the bindings with host ports chosen. A port
    /// already published gives a conflict and changes nothing.
    fn add_ports(&self, req: &PortRequest) -> Result<Vec<PortBinding>>;
    /// Removes an endpoint's published ports.
    fn remove_ports(&self, endpoint_id: &str) -> Result<()>;
    /// Rebuilds everything this firewall owns from its recorded state.
    fn reapply(&self) -> Result<()>;
    /// Rebuilds what differs between the kernel and the recorded state (a
    /// flushed ruleset, a deleted rule or element); returns one line per
    /// repair, none when the kernel matched. The default rebuilds always
    /// and reports nothing.
    fn repair(&self) -> Result<Vec<String>> {
        self.reapply().map(|()| Vec::new())
    }
    /// Ids of the networks it has rules for (so reconcile can drop stale ones).
    fn network_ids(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// Ids of the endpoints it has published ports for.
    fn endpoint_ids(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// No firewall work at all, for embedders that manage their own.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFirewall;

impl Firewall for NoFirewall {
    fn name(&self) -> &str {
        "none"
    }
    fn add_network(&self, _: &FirewallNetwork) -> Result<()> {
        Ok(())
    }
    fn remove_network(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn add_ports(&self, req: &PortRequest) -> Result<Vec<PortBinding>> {
        // Without a firewall nothing is published; report what was asked for
        // with the host port equal to the container port when none was given.
        Ok(req
            .ports
            .iter()
            .flat_map(|m| {
                (0..m.container_port.len()).map(move |i| PortBinding {
                    protocol: m.protocol,
                    host_ip: m.host_ip,
                    host_port: m.host_port.map(|h| h.start).unwrap_or(m.container_port.start) + i as u16,
                    container_port: m.container_port.start + i as u16,
                })
            })
            .collect())
    }
    fn remove_ports(&self, _: &str) -> Result<()> {
        Ok(())
    }
    fn reapply(&self) -> Result<()> {
        Ok(())
    }
}
