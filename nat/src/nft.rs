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

fn q(s: &str) -> String {
    // Interface names are validated (no quotes, no whitespace); quote anyway.
    format!("\"{s}\"")
}

/// Which map a mapping's DNAT entry goes to, and the entry.
fn dnat_element(m: &Mapping) -> (&'static str, String, String) {
    let v4 = m.container_ip.is_ipv4();
    let b = &m.binding;
    let value = format!("{} . {}", m.container_ip, b.container_port);
    match b.host_ip {
        Some(h) if !h.is_unspecified() => {
            (if v4 { "dnat4_ip" } else { "dnat6_ip" }, format!("{h} . {} . {}", b.protocol, b.host_port), value)
        }
        _ => (if v4 { "dnat4_any" } else { "dnat6_any" }, format!("{} . {}", b.protocol, b.host_port), value),
    }
}

/// The `published` set entry: which container address/port direct-routed
/// traffic may reach.
fn published_element(m: &Mapping) -> (&'static str, String) {
    let set = if m.container_ip.is_ipv4() { "published4" } else { "published6" };
    (set, format!("{} . {} . {}", m.container_ip, m.binding.protocol, m.binding.container_port))
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
        let b = q(&n.interface);
        let tag = format!("comment \"cnm:{}\"", n.id);
        phases[0].push(format!("oifname {b} ct state established,related accept {tag}"));
        if !n.internal {
            // Published ports are public: DNAT'ed traffic gets in from anywhere.
            phases[1].push(format!("oifname {b} ct status dnat accept {tag}"));
        }
        if all.iter().any(|o| o.interface != n.interface) {
            phases[2].push(format!("iifname {b} oifname @bridges oifname != {b} drop {tag}"));
        }
        phases[3].push(format!("iifname {b} oifname {b} {} {tag}", if n.icc { "accept" } else { "drop" }));
        if n.internal {
            phases[4].push(format!("iifname {b} drop {tag}"));
            phases[4].push(format!("oifname {b} drop {tag}"));
        } else {
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
    let b = q(&n.interface);
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
        let (map, k, v) = dnat_element(m);
        let i = ["dnat4_any", "dnat4_ip", "dnat6_any", "dnat6_ip"].iter().position(|x| *x == map).unwrap();
        dnat[i].insert(format!("{k} : {v}"));
        let (set, e) = published_element(m);
        published[usize::from(set == "published6")].insert(e);
    }
    let bridges: BTreeSet<String> = d.networks.iter().map(|n| q(&n.interface)).collect();
    let mut s = String::new();
    // Create-then-delete makes the delete valid whether or not the table
    // exists; the new table replaces it in the same transaction.
    let _ = writeln!(s, "table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{");
    let types = [
        ("dnat4_any", "inet_proto . inet_service : ipv4_addr . inet_service"),
        ("dnat4_ip", "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service"),
        ("dnat6_any", "inet_proto . inet_service : ipv6_addr . inet_service"),
        ("dnat6_ip", "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service"),
    ];
    for (i, (name, ty)) in types.iter().enumerate() {
        let _ = writeln!(s, "  map {name} {{ type {ty};{} }}", elements(dnat[i].iter().map(String::as_str)));
    }
    for (i, (name, ty)) in [
        ("published4", "ipv4_addr . inet_proto . inet_service"),
        ("published6", "ipv6_addr . inet_proto . inet_service"),
    ]
    .iter()
    .enumerate()
    {
        let _ = writeln!(s, "  set {name} {{ type {ty};{} }}", elements(published[i].iter().map(String::as_str)));
    }
    let _ = writeln!(s, "  set bridges {{ type ifname;{} }}", elements(bridges.iter().map(String::as_str)));
    let _ = writeln!(
        s,
        "  chain raw_prerouting {{ type filter hook prerouting priority raw; policy accept;\n    \
         iifname != \"lo\" ip daddr 127.0.0.0/8 drop comment \"cnm: no 127/8 from outside (CVE-2020-8558)\"\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain nat_prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n    \
         fib daddr type local jump published\n  }}"
    );
    // nft 1.0.6 rejects `priority dstnat` in an output chain.
    let _ = writeln!(
        s,
        "  chain nat_output {{ type nat hook output priority -100; policy accept;\n    \
         fib daddr type local jump published\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain published {{\n    \
         dnat ip addr . port to ip daddr . meta l4proto . th dport map @dnat4_ip\n    \
         dnat ip addr . port to meta l4proto . th dport map @dnat4_any\n    \
         dnat ip6 addr . port to ip6 daddr . meta l4proto . th dport map @dnat6_ip\n    \
         dnat ip6 addr . port to meta l4proto . th dport map @dnat6_any\n  }}"
    );
    let post: Vec<String> = d.networks.iter().flat_map(postrouting_rules).collect();
    let fwd = forward_rules(&d.networks);
    let _ = writeln!(s, "  chain nat_postrouting {{ type nat hook postrouting priority srcnat; policy accept;");
    for r in post {
        let _ = writeln!(s, "    {r}");
    }
    let _ = writeln!(s, "  }}\n  chain forward {{ type filter hook forward priority filter; policy accept;");
    for r in fwd {
        let _ = writeln!(s, "    {r}");
    }
    let _ = writeln!(s, "  }}\n}}");
    s
}

/// Adds mappings: element additions only, one command per map or set.
pub fn render_add(mappings: &[Mapping]) -> String {
    let mut groups: std::collections::BTreeMap<&'static str, Vec<String>> = Default::default();
    for m in mappings {
        let (map, k, v) = dnat_element(m);
        groups.entry(map).or_default().push(format!("{k} : {v}"));
        let (set, e) = published_element(m);
        let g = groups.entry(set).or_default();
        if !g.contains(&e) {
            g.push(e);
        }
    }
    groups.into_iter().map(|(name, els)| format!("add element {TABLE} {name} {{ {} }}\n", els.join(", "))).collect()
}

/// Removes mappings: element deletions only, one command per map or set.
/// `still_published` are the container address/port entries other mappings
/// still need.
pub fn render_remove(mappings: &[Mapping], still_published: &BTreeSet<(IpAddr, Protocol, u16)>) -> String {
    let mut groups: std::collections::BTreeMap<&'static str, Vec<String>> = Default::default();
    for m in mappings {
        let (map, k, _) = dnat_element(m);
        let g = groups.entry(map).or_default();
        if !g.contains(&k) {
            g.push(k);
        }
        let key = (m.container_ip, m.binding.protocol, m.binding.container_port);
        let (set, e) = published_element(m);
        if !still_published.contains(&key) {
            let g = groups.entry(set).or_default();
            if !g.contains(&e) {
                g.push(e);
            }
        }
    }
    groups.into_iter().map(|(name, els)| format!("delete element {TABLE} {name} {{ {} }}\n", els.join(", "))).collect()
}
