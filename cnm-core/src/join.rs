//! The contract between a driver's join and the sandbox side: the driver
//! gets a [`JoinRequest`], creates its link and answers with a [`JoinInfo`]
//! describing the sandbox side; cnm-core programs the sandbox from it (see
//! [`NetworkDriver::join`](crate::NetworkDriver::join)). The split is
//! libnetwork's: drivers describe, the sandbox code programs, once, for
//! every driver (bridge, overlay, remote plugins, macvlan, CNI).

use std::net::IpAddr;

use cnm_netns::{MacAddr, NetNs};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Endpoint, Sandbox};

/// What a driver gets to join an endpoint to a sandbox.
pub struct JoinRequest<'a> {
    /// The sandbox.
    pub sandbox: &'a Sandbox,
    /// Its network namespace, open: a driver that creates the interface
    /// directly in the sandbox (the fast path) creates it here.
    pub netns: &'a NetNs,
    /// The name the interface gets inside the sandbox (`eth0` …): a link
    /// created in the sandbox is created under this name.
    pub ifname: &'a str,
    /// The runtime moves and programs the interface itself (an
    /// [external](crate::SandboxConfig::external) sandbox): the driver must
    /// leave it in the host namespace ([`Interface::InHost`]); `netns` is
    /// then the host namespace.
    pub in_host: bool,
}

/// Where the endpoint's interface is when the driver's join returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Interface {
    /// Created directly in the sandbox under [`JoinRequest::ifname`], with
    /// the [`JoinInfo`]'s MAC and MTU given at creation (one request, no
    /// move, no rename: the fast path).
    InSandbox {
        /// Its index in the sandbox, when the creation reported it (saves a
        /// lookup).
        #[serde(skip)]
        index: Option<u32>,
    },
    /// Left in the host namespace under `src_name`; cnm-core moves it into
    /// the sandbox, names it `dst_prefix` and the lowest free number, and
    /// sets its MAC and MTU (Docker's remote `Join` answer: `SrcName`,
    /// `DstPrefix`). At leave it goes back to the host namespace under
    /// `src_name`, for the driver to delete.
    InHost {
        /// Its name in the host namespace.
        src_name: String,
        /// The prefix of its name in the sandbox (`eth`).
        dst_prefix: String,
    },
}

/// A route the sandbox gets through this endpoint's interface (Docker's
/// `StaticRoutes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticRoute {
    /// The destination prefix.
    pub destination: IpNet,
    /// The next hop; `None`: the destination is directly on the link.
    pub next_hop: Option<IpAddr>,
}

/// The sandbox side of a joined endpoint, as its driver describes it. It is
/// kept in the endpoint's record: the default-route handover and reconcile
/// use it after the join.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct JoinInfo {
    /// The interface; `None` for drivers without one (`host`, `null`): the
    /// sandbox gets only its loopback up.
    pub interface: Option<Interface>,
    /// Its MAC address.
    pub mac: Option<MacAddr>,
    /// Its MTU.
    pub mtu: Option<u32>,
    /// Its addresses, with prefix length.
    pub addresses: Vec<IpNet>,
    /// The IPv4 gateway: the next hop of the default route.
    pub gateway_v4: Option<IpAddr>,
    /// The IPv6 gateway.
    pub gateway_v6: Option<IpAddr>,
    /// Routes through the interface besides the subnets' own.
    pub static_routes: Vec<StaticRoute>,
    /// Whether this endpoint may provide the sandbox's default route (the
    /// inverse of Docker's `DisableGatewayService`); the controller gives
    /// it to one endpoint of the sandbox at a time.
    pub default_route: bool,
    /// Per-interface sysctls, as Docker's
    /// `com.docker.network.endpoint.sysctls` names them: the key with
    /// `IFNAME` where the interface's name goes
    /// (`net.ipv4.conf.IFNAME.forwarding`).
    pub sysctls: Vec<(String, String)>,
}

impl JoinInfo {
    /// No interface (`host`, `null`).
    pub fn no_interface() -> JoinInfo {
        JoinInfo::default()
    }

    /// An interface the driver created in the sandbox (the fast path),
    /// with the endpoint's MAC and addresses; it may provide the default
    /// route.
    pub fn in_sandbox(ep: &Endpoint, index: Option<u32>) -> JoinInfo {
        JoinInfo { interface: Some(Interface::InSandbox { index }), ..JoinInfo::for_endpoint(ep) }
    }

    /// An interface the driver left in the host namespace as `src_name`, to
    /// be moved and named `dst_prefix` and a number, with the endpoint's
    /// MAC and addresses; it may provide the default route.
    pub fn in_host(ep: &Endpoint, src_name: impl Into<String>, dst_prefix: impl Into<String>) -> JoinInfo {
        let interface = Interface::InHost { src_name: src_name.into(), dst_prefix: dst_prefix.into() };
        JoinInfo { interface: Some(interface), ..JoinInfo::for_endpoint(ep) }
    }

    fn for_endpoint(ep: &Endpoint) -> JoinInfo {
        JoinInfo {
            mac: ep.mac,
            addresses: [ep.ipv4, ep.ipv6].into_iter().flatten().collect(),
            default_route: true,
            ..JoinInfo::default()
        }
    }

    /// With this MTU.
    pub fn mtu(mut self, mtu: Option<u32>) -> Self {
        self.mtu = mtu;
        self
    }

    /// With this gateway (of its address family); `None` changes nothing.
    pub fn gateway(mut self, gw: Option<IpAddr>) -> Self {
        match gw {
            Some(g @ IpAddr::V4(_)) => self.gateway_v4 = Some(g),
            Some(g @ IpAddr::V6(_)) => self.gateway_v6 = Some(g),
            None => {}
        }
        self
    }

    /// With a static route.
    pub fn route(mut self, destination: IpNet, next_hop: Option<IpAddr>) -> Self {
        self.static_routes.push(StaticRoute { destination, next_hop });
        self
    }

    /// Whether it may provide the default route.
    pub fn default_route(mut self, may: bool) -> Self {
        self.default_route = may;
        self
    }

    /// With a per-interface sysctl (`net.ipv6.conf.IFNAME.accept_ra`, `0`).
    pub fn sysctl(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.sysctls.push((key.into(), value.into()));
        self
    }

    /// The gateways whose family the interface has an address of.
    pub fn usable_gateways(&self) -> impl Iterator<Item = IpAddr> + '_ {
        [self.gateway_v4, self.gateway_v6]
            .into_iter()
            .flatten()
            .filter(|g| self.addresses.iter().any(|a| a.addr().is_ipv4() == g.is_ipv4()))
    }

    /// Checks the description before anything in the sandbox is touched:
    /// names, prefixes, MTU, sysctl keys and values, next hops.
    pub fn validate(&self, endpoint: &str) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Error::invalid(format!("join info of endpoint {endpoint:?}: {field}"), reason)
        };
        if let Some(Interface::InHost { src_name, dst_prefix }) = &self.interface {
            cnm_netns::validate_ifname("join", src_name).map_err(|e| bad("source name", e.to_string()))?;
            // Room for the number that follows the prefix.
            let ok = !dst_prefix.is_empty()
                && dst_prefix.len() <= cnm_netns::IFNAME_MAX - 3
                && dst_prefix.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(bad("destination prefix", format!("{dst_prefix:?} is not an interface name prefix")));
            }
        }
        if let Some(m) = self.mtu {
            if !(68..=65535).contains(&m) {
                return Err(bad("mtu", format!("{m} is not an MTU (68 to 65535)")));
            }
        }
        for (gw, v6) in [(self.gateway_v4, false), (self.gateway_v6, true)] {
            if gw.is_some_and(|g| g.is_ipv6() != v6 || g.is_unspecified() || g.is_multicast()) {
                return Err(bad(
                    "gateway",
                    format!("{} is not a unicast IPv{} gateway", gw.unwrap(), if v6 { 6 } else { 4 }),
                ));
            }
        }
        for r in &self.static_routes {
            if r.next_hop.is_some_and(|h| h.is_ipv4() != r.destination.addr().is_ipv4()) {
                return Err(bad(
                    "static route",
                    format!("next hop {:?} is not of {}'s family", r.next_hop, r.destination),
                ));
            }
        }
        for (key, value) in &self.sysctls {
            sysctl_key(key, "eth0").map_err(|reason| bad("sysctl", reason))?;
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("sysctl", format!("{value:?} is not a sysctl value of {key}")));
            }
        }
        Ok(())
    }
}

/// The sysctl key for interface `ifname`: `net.ipv4.conf.IFNAME.x` (or
/// `ipv6`, `neigh`) with the name in place of `IFNAME`. Anything else is
/// refused: an endpoint sets only its own interface's switches.
pub(crate) fn sysctl_key(key: &str, ifname: &str) -> std::result::Result<String, String> {
    let rest = ["net.ipv4.conf.IFNAME.", "net.ipv6.conf.IFNAME.", "net.ipv4.neigh.IFNAME.", "net.ipv6.neigh.IFNAME."]
        .iter()
        .find_map(|p| key.strip_prefix(p).map(|r| (&p[..p.len() - "IFNAME.".len()], r)));
    match rest {
        Some((head, leaf)) if !leaf.is_empty() && leaf.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
            Ok(format!("{head}{ifname}.{leaf}"))
        }
        _ => Err(format!("{key:?} is not a per-interface sysctl (net.ipv4.conf.IFNAME.KEY, net.ipv6.conf.IFNAME.KEY)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_keys_are_per_interface_only() {
        assert_eq!(sysctl_key("net.ipv4.conf.IFNAME.forwarding", "eth1").unwrap(), "net.ipv4.conf.eth1.forwarding");
        assert_eq!(sysctl_key("net.ipv6.conf.IFNAME.accept_ra", "eth0").unwrap(), "net.ipv6.conf.eth0.accept_ra");
        for bad in [
            "net.ipv4.ip_forward",
            "net.ipv4.conf.all.forwarding",
            "net.ipv4.conf.IFNAME.",
            "net.ipv4.conf.IFNAME.a/../b",
        ] {
            assert!(sysctl_key(bad, "eth0").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_description_is_refused_before_anything_is_touched() {
        let mut info = JoinInfo {
            interface: Some(Interface::InHost { src_name: "tmp0".into(), dst_prefix: "e th".into() }),
            ..Default::default()
        };
        assert!(info.validate("e1").unwrap_err().to_string().contains("destination prefix"));
        info.interface = Some(Interface::InHost { src_name: "tmp0".into(), dst_prefix: "eth".into() });
        info.mtu = Some(10);
        assert!(info.validate("e1").unwrap_err().to_string().contains("mtu"));
        info.mtu = Some(1500);
        info.gateway_v4 = Some("fd00::1".parse().unwrap());
        assert!(info.validate("e1").unwrap_err().to_string().contains("gateway"));
        info.gateway_v4 = None;
        info.sysctls.push(("net.ipv4.ip_forward".into(), "1".into()));
        assert!(info.validate("e1").unwrap_err().to_string().contains("per-interface"));
        info.sysctls = vec![("net.ipv4.conf.IFNAME.rp_filter".into(), "2".into())];
        info.validate("e1").unwrap();
    }
}
