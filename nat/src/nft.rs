//! Rendering the nftables ruleset. Everything lives in `table inet cnm`,
//! which this crate owns and nothing else touches; published ports are
//! elements of maps and sets, so adding or removing them is an element
//! change whose cost does not depend on how many exist.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

use cnm_core::{FirewallNetwork, Protocol};

use crate::state::{Desired, Mapping};

/// The table this crate owns.
pub const TABLE: &str = "inet cnm";
/// [`TABLE`]'s name alone (its family is inet).
pub const TABLE_NAME: &str = "cnm";

fn quoted(name: &str) -> String {
    // Interface names are validated (no quotes, no whitespace); quote anyway.
    format!("\"{name}\"")
}

fn elements<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<&str> = items.collect();
    if v.is_empty() {
        String::new()
    } else {
        format!(" elements = {{ {} }}", v.join(", "))
    }
}

/// The forward rules of all networks, in phases: every network's rules of one
/// phase come before any rule of the next, so that e.g. isolation between two
/// networks is decided before either network's "accept".
fn forward_rules(all: &[FirewallNetwork]) -> Vec<String> {
    let mut phases: [Vec<String>; 6] = Default::default();
    for n in all {
        let b = quoted(&n.interface);
        let tag = format!("comment \"cnm:{}\"", n.id);
        if n.internal {
            // First of all: nothing leaves or enters an internal network,
            // not even to or from another network's published port.
            phases[0].push(format!("iifname {b} oifname != {b} drop {tag}"));
            phases[0].push(format!("oifname {b} iifname != {b} drop {tag}"));
        }
        phases[1].push(format!("oifname {b} ct state established,related accept {tag}"));
        if !n.internal {
            // Published ports are public: DNAT'ed traffic gets in from anywhere.
            phases[1].push(format!("oifname {b} ct status dnat accept {tag}"));
        }
        if all.iter().any(|o| o.interface != n.interface) {
            phases[2].push(format!("iifname {b} oifname @bridges oifname != {b} drop {tag}"));
        }
        phases[3].push(format!("iifname {b} oifname {b} {} {tag}", if n.icc { "accept" } else { "drop" }));
        if !n.internal {
            phases[4].push(format!("iifname {b} accept {tag}"));
            // From outside, straight to a container: only to a published port.
            phases[5].push(format!("oifname {b} ip daddr . meta l4proto . th dport @published4 accept {tag}"));
            phases[5].push(format!("oifname {b} ip6 daddr . meta l4proto . th dport @published6 accept {tag}"));
            phases[5].push(format!("oifname {b} drop {tag}"));
        }
    }
    phases.into_iter().flatten().collect()
}

/// The source-NAT rules of one network.
fn postrouting_rules(n: &FirewallNetwork) -> Vec<String> {
    let b = quoted(&n.interface);
    let tag = format!("comment \"cnm:{}\"", n.id);
    let mut post = Vec::new();
    for s in &n.subnets {
        let fam = if s.addr().is_ipv4() { "ip" } else { "ip6" };
        if n.masquerade && !n.internal {
            post.push(format!("{fam} saddr {s} oifname != {b} masquerade {tag}"));
        }
        // Hairpin: a container reaching a published port of its own network
        // through a host address; the reply must come back through the host.
        post.push(format!("oifname {b} {fam} saddr {s} ct status dnat masquerade {tag}"));
    }
    if n.subnets.iter().any(|s| s.addr().is_ipv4()) {
        // The host reaching a published port through 127.0.0.1.
        post.push(format!("oifname {b} ip saddr 127.0.0.0/8 masquerade {tag}"));
    }
    post
}

/// The whole table, as one transaction that replaces whatever was there.
pub fn render_ruleset(d: &Desired) -> String {
    let mut dnat: [BTreeSet<String>; 4] = Default::default();
    let mut published: [BTreeSet<String>; 2] = Default::default();
    for m in d.mappings() {
        let ((map, k, v), (set, e)) = element_fields(m);
        let i = ["dnat4_any", "dnat4_ip", "dnat6_any", "dnat6_ip"].iter().position(|x| *x == map).unwrap();
        dnat[i].insert(format!("{k} : {v}"));
        published[usize::from(set == "published6")].insert(e.to_string());
    }
    let bridges: BTreeSet<String> = d.networks.iter().map(|n| quoted(&n.interface)).collect();
    let mut rules = String::new();
    // Create-then-delete makes the delete valid whether or not the table
    // exists; the new table replaces it in the same transaction.
    let _ = writeln!(rules, "table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{");
    let types = [
        ("dnat4_any", "inet_proto . inet_service : ipv4_addr . inet_service"),
        ("dnat4_ip", "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service"),
        ("dnat6_any", "inet_proto . inet_service : ipv6_addr . inet_service"),
        ("dnat6_ip", "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service"),
    ];
    for (i, (name, ty)) in types.iter().enumerate() {
        let _ = writeln!(rules, "  map {name} {{ type {ty};{} }}", elements(dnat[i].iter().map(String::as_str)));
    }
    for (i, (name, ty)) in [
        ("published4", "ipv4_addr . inet_proto . inet_service"),
        ("published6", "ipv6_addr . inet_proto . inet_service"),
    ]
    .iter()
    .enumerate()
    {
        let _ = writeln!(rules, "  set {name} {{ type {ty};{} }}", elements(published[i].iter().map(String::as_str)));
    }
    let _ = writeln!(rules, "  set bridges {{ type ifname;{} }}", elements(bridges.iter().map(String::as_str)));
    let _ = writeln!(
        rules,
        "  chain raw_prerouting {{ type filter hook prerouting priority raw; policy accept;\n    \
         iifname != \"lo\" ip daddr 127.0.0.0/8 drop comment \"cnm: no 127/8 from outside (CVE-2020-8558)\"\n  }}"
    );
    let _ = writeln!(
        rules,
        "  chain nat_prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n    \
         fib daddr type local jump published\n  }}"
    );
    // nft 1.0.6 rejects `priority dstnat` in an output chain.
    let _ = writeln!(
        rules,
        "  chain nat_output {{ type nat hook output priority -100; policy accept;\n    \
         fib daddr type local jump published\n  }}"
    );
    let _ = writeln!(
        rules,
        "  chain published {{\n    \
         dnat ip addr . port to ip daddr . meta l4proto . th dport map @dnat4_ip\n    \
         dnat ip addr . port to meta l4proto . th dport map @dnat4_any\n    \
         dnat ip6 addr . port to ip6 daddr . meta l4proto . th dport map @dnat6_ip\n    \
         dnat ip6 addr . port to meta l4proto . th dport map @dnat6_any\n  }}"
    );
    let post: Vec<String> = d.networks.iter().flat_map(postrouting_rules).collect();
    let fwd = forward_rules(&d.networks);
    let _ = writeln!(rules, "  chain nat_postrouting {{ type nat hook postrouting priority srcnat; policy accept;");
    for r in post {
        let _ = writeln!(rules, "    {r}");
    }
    let _ = writeln!(rules, "  }}\n  chain forward {{ type filter hook forward priority filter; policy accept;");
    for r in fwd {
        let _ = writeln!(rules, "    {r}");
    }
    let _ = writeln!(rules, "  }}\n}}");
    rules
}

/// One field of a set or map element, as nftables concatenates them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `ipv4_addr` or `ipv6_addr`.
    Addr(IpAddr),
    /// `inet_proto`.
    Proto(Protocol),
    /// `inet_service`.
    Port(u16),
    /// A `numgen` value or a packet mark (host byte order, as the kernel
    /// keeps both).
    Index(u32),
}

impl Field {
    /// The field as the kernel stores it in a concatenation: network byte
    /// order, each field padded with zeros to a multiple of 4 bytes (one
    /// 32-bit register).
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Field::Addr(IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
            Field::Addr(IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
            Field::Proto(p) => out.extend_from_slice(&[proto_number(*p), 0, 0, 0]),
            Field::Port(n) => {
                out.extend_from_slice(&n.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
            }
            Field::Index(n) => out.extend_from_slice(&n.to_ne_bytes()),
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Addr(a) => a.fmt(f),
            Field::Proto(p) => p.fmt(f),
            Field::Port(n) => n.fmt(f),
            Field::Index(n) => n.fmt(f),
        }
    }
}

/// The IP protocol number.
fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// A concatenation of fields: an element's key, or a map element's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concat(pub Vec<Field>);

impl Concat {
    /// The bytes the kernel compares.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 8);
        for f in &self.0 {
            f.encode(&mut out);
        }
        out
    }
}

impl std::fmt::Display for Concat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, x) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" . ")?;
            }
            x.fmt(f)?;
        }
        Ok(())
    }
}

/// What an [`ElementChange`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Adds elements (an identical one already there is no error).
    Add,
    /// Deletes elements, which must be there.
    Delete,
    /// Deletes elements if they are there (`NFT_MSG_DESTROYSETELEM`,
    /// Linux 6.3 and later).
    Destroy,
}

/// Element additions to, or deletions from, one set or map of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementChange {
    /// Add, delete or destroy.
    pub op: Op,
    /// The table (family inet).
    pub table: &'static str,
    /// The set or map.
    pub set: &'static str,
    /// Keys, with their values for a map (additions only).
    pub elements: Vec<(Concat, Option<Concat>)>,
}

impl ElementChange {
    /// The change as `nft -f` input.
    pub fn to_script(&self) -> String {
        let els: Vec<String> = self
            .elements
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k} : {v}"),
                None => k.to_string(),
            })
            .collect();
        let verb = match self.op {
            Op::Add => "add",
            Op::Delete => "delete",
            Op::Destroy => "destroy",
        };
        format!("{verb} element inet {} {} {{ {} }}\n", self.table, self.set, els.join(", "))
    }
}

/// A mapping's DNAT map element (map, key, value) and its `published` set
/// key, as fields.
fn element_fields(m: &Mapping) -> ((&'static str, Concat, Concat), (&'static str, Concat)) {
    let v4 = m.container_ip.is_ipv4();
    let b = &m.binding;
    let value = Concat(vec![Field::Addr(m.container_ip), Field::Port(b.container_port)]);
    let dnat = match b.host_ip {
        Some(h) if !h.is_unspecified() => (
            if v4 { "dnat4_ip" } else { "dnat6_ip" },
            Concat(vec![Field::Addr(h), Field::Proto(b.protocol), Field::Port(b.host_port)]),
            value,
        ),
        _ => (
            if v4 { "dnat4_any" } else { "dnat6_any" },
            Concat(vec![Field::Proto(b.protocol), Field::Port(b.host_port)]),
            value,
        ),
    };
    let set = if v4 { "published4" } else { "published6" };
    let published = Concat(vec![Field::Addr(m.container_ip), Field::Proto(b.protocol), Field::Port(b.container_port)]);
    (dnat, (set, published))
}

/// Groups elements by set, without duplicate keys.
fn group(add: bool, items: impl Iterator<Item = (&'static str, Concat, Option<Concat>)>) -> Vec<ElementChange> {
    let mut groups: std::collections::BTreeMap<&'static str, Vec<(Concat, Option<Concat>)>> = Default::default();
    for (set, k, v) in items {
        let g = groups.entry(set).or_default();
        if !g.iter().any(|(x, _)| *x == k) {
            g.push((k, v));
        }
    }
    // One message per ELEMENTS_PER_MESSAGE elements, all in one transaction:
    // a netlink attribute's length is 16 bits, so one list of every element
    // of a large range would not fit.
    groups
        .into_iter()
        .flat_map(|(set, elements)| {
            elements
                .chunks(ELEMENTS_PER_MESSAGE)
                .map(|c| ElementChange {
                    op: if add { Op::Add } else { Op::Delete },
                    table: TABLE_NAME,
                    set,
                    elements: c.to_vec(),
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Elements per netlink message: each takes at most about 80 bytes of the
/// 65,535 an attribute can hold.
pub const ELEMENTS_PER_MESSAGE: usize = 256;

/// The element additions that publish `mappings`, one change per map or set.
pub fn plan_add(mappings: &[Mapping]) -> Vec<ElementChange> {
    group(
        true,
        mappings.iter().flat_map(|m| {
            let ((map, k, v), (set, e)) = element_fields(m);
            [(map, k, Some(v)), (set, e, None)]
        }),
    )
}

/// The element deletions that unpublish `mappings`; `still_published` are
/// the container address/port entries other mappings still need.
pub fn plan_remove(mappings: &[Mapping], still_published: &BTreeSet<(IpAddr, Protocol, u16)>) -> Vec<ElementChange> {
    group(
        false,
        mappings.iter().flat_map(|m| {
            let ((map, k, _), (set, e)) = element_fields(m);
            let keep = still_published.contains(&(m.container_ip, m.binding.protocol, m.binding.container_port));
            std::iter::once((map, k, None)).chain((!keep).then_some((set, e, None)))
        }),
    )
}

#[cfg(any(test, feature = "testing"))]
/// [`plan_add`] as `nft -f` input.
pub fn render_add(mappings: &[Mapping]) -> String {
    plan_add(mappings).iter().map(ElementChange::to_script).collect()
}

#[cfg(any(test, feature = "testing"))]
/// [`plan_remove`] as `nft -f` input.
pub fn render_remove(mappings: &[Mapping], still_published: &BTreeSet<(IpAddr, Protocol, u16)>) -> String {
    plan_remove(mappings, still_published).iter().map(ElementChange::to_script).collect()
}

/// `nft -j list table …` output in a form that does not depend on rule
/// handles or on the order the kernel lists set elements in: what
/// [`NatFirewall::repair`](crate::NatFirewall::repair) compares.
pub fn normalise_listing(json: &str) -> String {
    fn scrub(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                m.remove("handle");
                m.values_mut().for_each(scrub);
                if let Some(serde_json::Value::Array(elems)) = m.get_mut("elem") {
                    elems.sort_by_key(|e| e.to_string());
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(scrub),
            _ => {}
        }
    }
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(json) else { return json.to_string() };
    let items: Vec<String> = match v.get_mut("nftables").and_then(|x| x.as_array_mut()) {
        Some(items) => items
            .iter_mut()
            .filter(|i| i.get("metainfo").is_none())
            .map(|i| {
                scrub(i);
                i.to_string()
            })
            .collect(),
        None => return json.to_string(),
    };
    items.join("\n")
}
