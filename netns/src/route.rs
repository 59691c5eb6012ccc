//! Routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope as NlScope,
    RouteType,
};
use netlink_packet_route::AddressFamily;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The main routing table.
pub const TABLE_MAIN: u32 = 254;

/// Scope of a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RouteScope {
    /// Reaches beyond this link (through a gateway).
    Universe,
    /// Directly attached to the link.
    Link,
    /// A local address of this host.
    Host,
    /// Any other scope value.
    Other(u8),
}

/// A route, both what to add and what a listing returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination; `0.0.0.0/0` or `::/0` for a default route.
    pub dst: IpNet,
    /// Next hop.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Treat the gateway as directly reachable on `oif` even if no subnet says so.
    pub onlink: bool,
    /// Routing table (default: main).
    pub table: u32,
    /// Metric (priority); lower wins.
    pub metric: Option<u32>,
    /// Preferred source address.
    pub pref_src: Option<IpAddr>,
    /// Scope; `None` derives it as iproute2 does: link for a route without a
    /// gateway, universe otherwise.
    pub scope: Option<RouteScope>,
}

impl Route {
    /// A route to `dst` with nothing else set.
    pub fn new(dst: IpNet) -> Route {
        Route {
            dst,
            gateway: None,
            oif: None,
            onlink: false,
            table: TABLE_MAIN,
            metric: None,
            pref_src: None,
            scope: None,
        }
    }

    /// The default route of `gateway`'s address family via `gateway`.
    pub fn default_via(gateway: IpAddr) -> Route {
        let dst = match gateway {
            IpAddr::V4(_) => IpNet::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0).unwrap(),
            IpAddr::V6(_) => IpNet::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).unwrap(),
        };
        Route { gateway: Some(gateway), ..Route::new(dst) }
    }

    /// A device route: `dst` directly reachable on `oif`.
    pub fn device(dst: IpNet, oif: u32) -> Route {
        Route { oif: Some(oif), ..Route::new(dst) }
    }

    /// Sets the output interface.
    pub fn oif(mut self, oif: u32) -> Route {
        self.oif = Some(oif);
        self
    }

    /// Marks the gateway on-link.
    pub fn onlink(mut self) -> Route {
        self.onlink = true;
        self
    }

    /// Sets the metric.
    pub fn metric(mut self, metric: u32) -> Route {
        self.metric = Some(metric);
        self
    }

    /// Whether this is a default route.
    pub fn is_default(&self) -> bool {
        self.dst.prefix_len() == 0
    }

    /// `route 0.0.0.0/0 via 10.0.0.1`, for error messages.
    pub(crate) fn object(&self) -> String {
        let mut s = format!("route {}", self.dst);
        if let Some(g) = self.gateway {
            s.push_str(&format!(" via {g}"));
        }
        if let Some(o) = self.oif {
            s.push_str(&format!(" dev {o}"));
        }
        s
    }

    pub(crate) fn validate(&self, op: &'static str) -> Result<()> {
        if self.dst.addr() != self.dst.network() {
            return Err(Error::invalid(op, self.object(), "destination has host bits set"));
        }
        if let Some(g) = self.gateway {
            if g.is_ipv4() != self.dst.addr().is_ipv4() {
                return Err(Error::invalid(op, self.object(), "gateway and destination of different address families"));
            }
        }
        if let Some(s) = self.pref_src {
            if s.is_ipv4() != self.dst.addr().is_ipv4() {
                return Err(Error::invalid(op, self.object(), "source and destination of different address families"));
            }
        }
        if self.gateway.is_none() && self.oif.is_none() {
            return Err(Error::invalid(op, self.object(), "a route needs a gateway or an output interface"));
        }
        Ok(())
    }

    /// The `RTM_NEWROUTE`/`RTM_DELROUTE` body.
    pub(crate) fn to_message(&self) -> RouteMessage {
        let mut m = RouteMessage::default();
        let v4 = self.dst.addr().is_ipv4();
        m.header.address_family = if v4 { AddressFamily::Inet } else { AddressFamily::Inet6 };
        m.header.destination_prefix_length = self.dst.prefix_len();
        m.header.protocol = RouteProtocol::Static;
        m.header.kind = RouteType::Unicast;
        let scope = self.scope.unwrap_or(if self.gateway.is_none() { RouteScope::Link } else { RouteScope::Universe });
        m.header.scope = match scope {
            RouteScope::Universe => NlScope::Universe,
            RouteScope::Link => NlScope::Link,
            RouteScope::Host => NlScope::Host,
            RouteScope::Other(v) => NlScope::Other(v),
        };
        if self.table < 256 {
            m.header.table = self.table as u8;
        } else {
            m.header.table = RouteHeader::RT_TABLE_UNSPEC;
        }
        m.attributes.push(RouteAttribute::Table(self.table));
        if self.onlink {
            m.header.flags |= RouteFlags::Onlink;
        }
        if self.dst.prefix_len() > 0 {
            m.attributes.push(RouteAttribute::Destination(RouteAddress::from(self.dst.addr())));
        }
        if let Some(g) = self.gateway {
            m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(g)));
        }
        if let Some(o) = self.oif {
            m.attributes.push(RouteAttribute::Oif(o));
        }
        if let Some(p) = self.metric {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        if let Some(s) = self.pref_src {
            m.attributes.push(RouteAttribute::PrefSource(RouteAddress::from(s)));
        }
        m
    }

    /// Decodes an `RTM_NEWROUTE` message; `None` for multicast, cloned and
    /// other routes a listing of unicast routes should not show.
    pub(crate) fn from_message(m: &RouteMessage) -> Option<Route> {
        if m.header.kind != RouteType::Unicast || m.header.flags.contains(RouteFlags::Cloned) {
            return None;
        }
        let v4 = match m.header.address_family {
            AddressFamily::Inet => true,
            AddressFamily::Inet6 => false,
            _ => return None,
        };
        let unspecified = if v4 { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) };
        let mut r = Route::new(IpNet::new(unspecified, 0).ok()?);
        r.table = m.header.table as u32;
        r.onlink = m.header.flags.contains(RouteFlags::Onlink);
        r.scope = Some(match m.header.scope {
            NlScope::Universe => RouteScope::Universe,
            NlScope::Link => RouteScope::Link,
            NlScope::Host => RouteScope::Host,
            other => RouteScope::Other(u8::from(other)),
        });
        let ip = |a: &RouteAddress| match a {
            RouteAddress::Inet(x) => Some(IpAddr::V4(*x)),
            RouteAddress::Inet6(x) => Some(IpAddr::V6(*x)),
            _ => None,
        };
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(d) => {
                    r.dst = IpNet::new(ip(d)?, m.header.destination_prefix_length).ok()?;
                }
                RouteAttribute::Gateway(g) => r.gateway = ip(g),
                RouteAttribute::Oif(o) => r.oif = Some(*o),
                RouteAttribute::Priority(p) => r.metric = Some(*p),
                RouteAttribute::PrefSource(s) => r.pref_src = ip(s),
                RouteAttribute::Table(t) => r.table = *t,
                _ => {}
            }
        }
        Some(r)
    }
}
