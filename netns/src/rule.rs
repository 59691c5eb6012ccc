//! Policy routing rules (`ip rule`): which table a packet is looked up in,
//! chosen by its source. The overlay uses them so that traffic between
//! subnets leaves on the sender's subnet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;
use serde::{Deserialize, Serialize};

/// A rule: packets from `src` (all, when `None`) are looked up in `table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// Its priority (lower is consulted first; the main table's rule is 32766).
    pub priority: u32,
    /// Source prefix; `None` matches every source of `family`.
    pub src: Option<IpNet>,
    /// Address family when `src` is `None` (`true`: IPv6).
    pub v6: bool,
    /// Routing table to look up.
    pub table: u32,
}

impl Rule {
    /// `ip rule add from SRC lookup TABLE priority PRIORITY`.
    pub fn from_source(src: IpNet, table: u32, priority: u32) -> Rule {
        Rule { priority, src: Some(src.trunc()), v6: src.addr().is_ipv6(), table }
    }

    pub(crate) fn object(&self) -> String {
        match self.src {
            Some(s) => format!("rule from {s} lookup {} priority {}", self.table, self.priority),
            None => format!("rule lookup {} priority {}", self.table, self.priority),
        }
    }

    pub(crate) fn to_message(&self) -> RuleMessage {
        let mut m = RuleMessage::default();
        m.header.family = if self.v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        m.header.action = RuleAction::ToTable;
        m.header.table = if self.table < 256 { self.table as u8 } else { 0 };
        m.attributes.push(RuleAttribute::Table(self.table));
        m.attributes.push(RuleAttribute::Priority(self.priority));
        if let Some(s) = self.src {
            m.header.src_len = s.prefix_len();
            m.attributes.push(RuleAttribute::Source(s.addr()));
        }
        m
    }

    /// Decodes a lookup rule; `None` for other actions.
    pub(crate) fn from_message(m: &RuleMessage) -> Option<Rule> {
        if m.header.action != RuleAction::ToTable {
            return None;
        }
        let v6 = match m.header.family {
            AddressFamily::Inet => false,
            AddressFamily::Inet6 => true,
            _ => return None,
        };
        let mut r = Rule { priority: 0, src: None, v6, table: u32::from(m.header.table) };
        for a in &m.attributes {
            match a {
                RuleAttribute::Table(t) => r.table = *t,
                RuleAttribute::Priority(p) => r.priority = *p,
                RuleAttribute::Source(s) => r.src = IpNet::new(*s, m.header.src_len).ok(),
                _ => {}
            }
        }
        if r.src.is_none() && m.header.src_len > 0 {
            let any = if v6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
            r.src = IpNet::new(any, 0).ok();
        }
        Some(r)
    }
}
