//! Services: a name, the networks it is on with a virtual IP on each, the
//! ports it publishes, and the backends (replicas) the runtime gives it.
//! cnm records them ([`Controller::create_service`](crate::Controller)
//! and the rest); a data plane (`cnm_nat::ServicePlane`) turns the records
//! into load balancing on every host.

use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::model::{validate_name, Protocol};
use crate::time::Timestamp;

/// The network every host's ingress port reaches backends through
/// (Docker's `ingress`): an overlay network, made by the first service that
/// publishes a port in ingress mode.
pub const INGRESS_NETWORK: &str = "ingress";

/// Where services are stored: shared by every host of a cluster.
pub const SERVICES_PREFIX: &str = "global/services/";

/// How a port is published (Docker's `--publish mode=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// On every host that runs the agent, reaching backends anywhere
    /// through the ingress network (the routing mesh; Docker's default).
    #[default]
    Ingress,
    /// Only on the hosts that have a backend, reaching that host's
    /// backends.
    Host,
}

/// A published port of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServicePort {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: Protocol,
    /// The port on the hosts.
    pub published: u16,
    /// The port on the backends.
    pub target: u16,
    /// Ingress or host.
    pub mode: PublishMode,
}

impl FromStr for ServicePort {
    type Err = Error;
    /// `[mode=ingress|host,]PUBLISHED:TARGET[/PROTO]` (the tool's `-p`).
    fn from_str(s: &str) -> Result<ServicePort> {
        let bad = |why: &str| Error::invalid("--publish", format!("{s:?}: {why}"));
        let (mode, rest) = match s.split_once(',') {
            Some((m, rest)) => match m.strip_prefix("mode=") {
                Some("ingress") => (PublishMode::Ingress, rest),
                Some("host") => (PublishMode::Host, rest),
                _ => return Err(bad("the part before ',' must be mode=ingress or mode=host")),
            },
            None => (PublishMode::Ingress, s),
        };
        let (ports, protocol) = match rest.split_once('/') {
            Some((p, proto)) => (p, proto.parse::<Protocol>().map_err(|_| bad("the protocol is tcp, udp or sctp"))?),
            None => (rest, Protocol::Tcp),
        };
        let (published, target) = ports.split_once(':').ok_or_else(|| bad("expected PUBLISHED:TARGET"))?;
        let port = |p: &str, what: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad(&format!("{what} port {p:?} is not a number from 1 to 65535"))),
        };
        Ok(ServicePort { protocol, published: port(published, "published")?, target: port(target, "target")?, mode })
    }
}

impl std::fmt::Display for ServicePort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.mode {
            PublishMode::Ingress => "ingress",
            PublishMode::Host => "host",
        };
        write!(f, "mode={mode},{}:{}/{}", self.published, self.target, self.protocol)
    }
}

/// What a service is made of (`cnm service create`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Its name: the DNS name of its virtual IPs (`tasks.NAME`: its
    /// backends).
    pub name: String,
    /// The networks it is on (names or ids); it gets a virtual IP on each.
    pub networks: Vec<String>,
    /// The ports it publishes.
    pub ports: Vec<ServicePort>,
}

impl ServiceConfig {
    /// Checks the name, and that no port is published twice.
    pub fn validate(&self) -> Result<()> {
        validate_name("service name", &self.name)?;
        if self.name.starts_with("tasks.") {
            return Err(Error::invalid(
                "service name",
                format!("{:?}: tasks.NAME is the name of NAME's backends", self.name),
            ));
        }
        if self.networks.is_empty() && self.ports.is_empty() {
            return Err(Error::invalid(
                "service",
                format!("{:?} has neither a network nor a published port", self.name),
            ));
        }
        for (i, p) in self.ports.iter().enumerate() {
            if self.ports[..i].iter().any(|q| q.protocol == p.protocol && q.published == p.published) {
                return Err(Error::invalid("--publish", format!("{}/{} is published twice", p.published, p.protocol)));
            }
        }
        for (i, n) in self.networks.iter().enumerate() {
            if self.networks[..i].contains(n) {
                return Err(Error::invalid("--network", format!("{n:?} is named twice")));
            }
        }
        Ok(())
    }
}

/// A service's virtual IP on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceVip {
    /// The network's id.
    pub network_id: Id,
    /// Its name.
    pub network: String,
    /// The IPAM pool the address came from.
    pub pool_id: String,
    /// The address, with the subnet's prefix length.
    pub address: IpNet,
}

/// One address of a backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendAddress {
    /// The network's id.
    pub network_id: Id,
    /// The backend's address there.
    pub address: IpAddr,
}

/// A backend (replica) of a service: a sandbox, on one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBackend {
    /// The sandbox's name (unique on its host).
    pub sandbox: String,
    /// Its id.
    pub sandbox_id: Id,
    /// The host it runs on ([`ControllerBuilder::node`](crate::ControllerBuilder::node)).
    pub host: String,
    /// Its addresses on the service's networks, and on the ingress network
    /// when the service publishes a port in ingress mode.
    pub addresses: Vec<BackendAddress>,
    /// Its address on a network of its own host (a bridge network), which
    /// host-mode ports lead to.
    pub local_address: Option<IpAddr>,
    /// The endpoint that [`Controller::add_backend`](crate::Controller)
    /// connected to the ingress network for it (and that goes with it).
    pub ingress_endpoint: Option<String>,
}

impl ServiceBackend {
    /// Its address on network `network_id`.
    pub fn address_on(&self, network_id: &str) -> Option<IpAddr> {
        self.addresses.iter().find(|a| a.network_id.as_str() == network_id).map(|a| a.address)
    }
}

/// A service as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Its id.
    pub id: Id,
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created: Timestamp,
    /// Its virtual IP on each of its networks.
    pub vips: Vec<ServiceVip>,
    /// Its published ports.
    pub ports: Vec<ServicePort>,
    /// The ingress network's id, when a port is published in ingress mode.
    pub ingress_network: Option<Id>,
    /// Its backends, in the order they were added.
    pub backends: Vec<ServiceBackend>,
}

impl Service {
    /// Whether a port is published in ingress mode.
    pub fn has_ingress(&self) -> bool {
        self.ports.iter().any(|p| p.mode == PublishMode::Ingress)
    }

    /// The backend whose sandbox is `sandbox` on host `host`.
    pub fn backend(&self, host: &str, sandbox: &str) -> Option<&ServiceBackend> {
        self.backends.iter().find(|b| b.host == host && b.sandbox == sandbox)
    }
}

/// The store key of service `name`.
pub fn service_key(name: &str) -> String {
    format!("{SERVICES_PREFIX}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_flags_parse_as_docker_writes_them() {
        let p: ServicePort = "8080:80".parse().unwrap();
        assert_eq!(p, ServicePort { protocol: Protocol::Tcp, published: 8080, target: 80, mode: PublishMode::Ingress });
        let p: ServicePort = "mode=host,53:5353/udp".parse().unwrap();
        assert_eq!(p, ServicePort { protocol: Protocol::Udp, published: 53, target: 5353, mode: PublishMode::Host });
        assert_eq!(p.to_string().parse::<ServicePort>().unwrap(), p);
        for bad in ["80", "mode=bridge,80:80", "0:80", "80:70000", "80:80/icmp", "a:b"] {
            let e = bad.parse::<ServicePort>().unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidParameter, "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn a_config_publishing_a_port_twice_is_refused() {
        let mut c = ServiceConfig { name: "web".into(), networks: vec!["front".into()], ports: vec![] };
        c.validate().unwrap();
        c.ports = vec!["80:80".parse().unwrap(), "mode=host,80:81".parse().unwrap()];
        assert!(c.validate().unwrap_err().to_string().contains("80/tcp is published twice"));
        c.ports.pop();
        c.name = "tasks.web".into();
        assert!(c.validate().is_err());
    }
}
