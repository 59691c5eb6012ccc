//! Only the cluster's hosts may send VXLAN to this host. A VXLAN device
//! takes a frame from any source address (with learning off the FDB is not
//! asked), so anyone who reaches UDP 4789 could put frames on an overlay
//! (Docker's CVE-2023-28840/28841/28842 are of this family). The agent keeps
//! `table inet cnm_vxlan` in the host namespace: a set of the live hosts'
//! underlay addresses and an input rule that drops VXLAN from any other
//! source. The table is replaced whole in one `nft -f` transaction, only
//! when the set changed.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::net::IpAddr;

use cnm_core::{Error, Result};
use cnm_netns::NetNs;

/// The table this filter owns.
pub const TABLE: &str = "inet cnm_vxlan";

/// The ruleset allowing VXLAN on `port` only from `vteps`.
pub fn render(port: u16, vteps: &BTreeSet<IpAddr>) -> String {
    let list = |v4: bool| -> String {
        let e: Vec<String> = vteps.iter().filter(|a| a.is_ipv4() == v4).map(|a| a.to_string()).collect();
        if e.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }}", e.join(", "))
        }
    };
    let mut rules = String::new();
    let _ = writeln!(rules, "table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{");
    let _ = writeln!(rules, "  set vteps4 {{ type ipv4_addr;{} }}", list(true));
    let _ = writeln!(rules, "  set vteps6 {{ type ipv6_addr;{} }}", list(false));
    let _ = writeln!(rules, "  chain input {{ type filter hook input priority filter - 10; policy accept;");
    let _ = writeln!(
        rules,
        "    ip saddr != @vteps4 udp dport {port} drop comment \"cnm: VXLAN only from the cluster's hosts\""
    );
    let _ = writeln!(
        rules,
        "    ip6 saddr != @vteps6 udp dport {port} drop comment \"cnm: VXLAN only from the cluster's hosts\""
    );
    let _ = writeln!(rules, "  }}\n}}");
    rules
}

/// Replaces the filter in `host` (one transaction).
pub fn apply(host: &NetNs, port: u16, vteps: &BTreeSet<IpAddr>) -> Result<()> {
    nft(host, &render(port, vteps))
}

/// Removes the filter from `host`; none is fine.
pub fn remove(host: &NetNs) -> Result<()> {
    nft(host, &format!("table {TABLE}\ndelete table {TABLE}\n"))
}

fn nft(host: &NetNs, script: &str) -> Result<()> {
    host.exec_with_input("nft", ["-f", "-"], Some(script))
        .map(|_| ())
        .map_err(|e| Error::Internal(format!("nft -f (the VXLAN source filter): {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ruleset_lists_each_family_in_its_set() {
        let v = ["192.0.2.1", "192.0.2.3", "2001:db8::3"].iter().map(|a| a.parse().unwrap()).collect();
        let s = super::render(4789, &v);
        assert!(s.contains("set vteps4 { type ipv4_addr; elements = { 192.0.2.1, 192.0.2.3 } }"), "{s}");
        assert!(s.contains("set vteps6 { type ipv6_addr; elements = { 2001:db8::3 } }"), "{s}");
        assert!(s.contains("ip saddr != @vteps4 udp dport 4789 drop"), "{s}");
        let empty = super::render(4789, &Default::default());
        assert!(empty.contains("set vteps4 { type ipv4_addr; }"), "{empty}");
    }
}
