//! What the firewall owns, recorded in the store so that any process (and
//! `reapply()` after someone flushed the ruleset) can rebuild it exactly:
//!
//! - `firewall/networks/NETWORK`: a network's rule parameters;
//! - `firewall/ports/ENDPOINT`: an endpoint's published ports, resolved;
//! - `firewall/hostports/PROTO/PORT/HOSTIP`: one claim per host port, taken
//!   with a create-only write, so two processes can never publish the same
//!   host address, port and protocol.

use std::net::IpAddr;

use cnm_core::store::{Expect, Store, StoreExt};
use cnm_core::{FirewallNetwork, PortBinding, Protocol};
use serde::{Deserialize, Serialize};

use crate::error::NatError;

/// One published port of one container address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Mapping {
    /// The host side (and the container port).
    pub binding: PortBinding,
    /// The container address traffic is sent to.
    pub container_ip: IpAddr,
}

/// An endpoint's published ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPorts {
    /// Endpoint id.
    pub endpoint: String,
    /// Network id.
    pub network: String,
    /// Its mappings.
    pub mappings: Vec<Mapping>,
}

/// Everything the firewall should have installed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Networks, sorted by id.
    pub networks: Vec<FirewallNetwork>,
    /// Published ports, sorted by endpoint.
    pub ports: Vec<EndpointPorts>,
}

impl Desired {
    /// Whether there is nothing to install.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.ports.iter().all(|p| p.mappings.is_empty())
    }

    /// Every mapping of every endpoint.
    pub fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        self.ports.iter().flat_map(|p| p.mappings.iter())
    }
}

pub(crate) fn network_key(id: &str) -> String {
    format!("firewall/networks/{id}")
}

pub(crate) fn ports_key(endpoint: &str) -> String {
    format!("firewall/ports/{endpoint}")
}

fn claim_prefix(p: Protocol, port: u16) -> String {
    format!("firewall/hostports/{p}/{port}/")
}

fn claim_key(b: &PortBinding) -> String {
    let ip = b.host_ip.map(|a| a.to_string()).unwrap_or_else(|| "any".into());
    format!("{}{ip}", claim_prefix(b.protocol, b.host_port))
}

/// Whether two host addresses of the same port and protocol collide: all
/// addresses collide with everything, an unspecified address with every
/// address of its family, and equal addresses with each other.
fn collide(a: &str, b: &str) -> bool {
    let parse = |s: &str| s.parse::<IpAddr>().ok();
    match (parse(a), parse(b)) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => x == y || ((x.is_unspecified() || y.is_unspecified()) && x.is_ipv4() == y.is_ipv4()),
    }
}

#[derive(Serialize, Deserialize)]
struct Claim {
    endpoint: String,
}

/// Loads the whole recorded state.
pub(crate) fn load(store: &dyn Store) -> Result<Desired, NatError> {
    let networks = store.list_json::<FirewallNetwork>("firewall/networks/")?.into_iter().map(|(n, _)| n).collect();
    let ports = store.list_json::<EndpointPorts>("firewall/ports/")?.into_iter().map(|(p, _)| p).collect();
    Ok(Desired { networks, ports })
}

/// Claims a host port for `endpoint`. `Ok(false)` when another endpoint has
/// it (the caller may try another port), with that endpoint's id.
pub(crate) fn claim(store: &dyn Store, b: &PortBinding, endpoint: &str) -> Result<Result<(), String>, NatError> {
    let key = claim_key(b);
    let mine = Claim { endpoint: endpoint.to_string() };
    match store.put_json(&key, &mine, Expect::Absent) {
        Ok(_) => {}
        Err(e) if e.kind() == cnm_core::ErrorKind::AlreadyExists => {
            let owner = store.get_json::<Claim>(&key)?.map(|(c, _)| c.endpoint).unwrap_or_default();
            return Ok(Err(owner));
        }
        Err(e) => return Err(e.into()),
    }
    let prefix = claim_prefix(b.protocol, b.host_port);
    let own = &key[prefix.len()..];
    for other in store.list(&prefix)? {
        let ip = &other.key[prefix.len()..];
        if ip != own && collide(ip, own) {
            let owner = serde_json::from_slice::<Claim>(&other.value).map(|c| c.endpoint).unwrap_or_default();
            release(store, b)?;
            return Ok(Err(owner));
        }
    }
    Ok(Ok(()))
}

/// Host port claims no recorded mapping holds (a publish interrupted
/// between claiming a port and recording it): their keys, for
/// [`NatFirewall::repair`](crate::NatFirewall::repair) to release.
pub(crate) fn stale_claims(store: &dyn Store) -> Result<Vec<String>, NatError> {
    let held: std::collections::BTreeSet<String> = load(store)?.mappings().map(|m| claim_key(&m.binding)).collect();
    Ok(store.list_keys("firewall/hostports/")?.into_iter().filter(|k| !held.contains(k)).collect())
}

/// Releases a claim; one already gone is fine.
pub(crate) fn release(store: &dyn Store, b: &PortBinding) -> Result<(), NatError> {
    match store.delete(&claim_key(b), Expect::Any) {
        Err(e) if e.kind() != cnm_core::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::collide;

    #[test]
    fn host_addresses_collide_like_sockets() {
        assert!(collide("any", "127.0.0.1"));
        assert!(collide("0.0.0.0", "10.0.0.1"));
        assert!(!collide("0.0.0.0", "::1"));
        assert!(collide("10.0.0.1", "10.0.0.1"));
        assert!(!collide("10.0.0.1", "10.0.0.2"));
        assert!(collide("::", "fd00::1"));
    }
}
