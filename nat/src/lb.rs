//! Load balancing on nftables alone (no IPVS): `table inet cnm-lb` in one
//! namespace.
//!
//! The rules never change after the table is made; every change of
//! backends is a handful of element changes in one netlink transaction,
//! whatever the number of services:
//!
//! - `vip_k` (virtual IP → K, the number of its backends) and `port_k`
//!   (protocol . port → K) give K, which picks chain `vK` or `pK` through a
//!   constant verdict map (K travels in the packet mark of the
//!   connection's first packet: nftables has no other register between
//!   rules);
//! - chain `vK` is `dnat ip to ip daddr . numgen random mod K map
//!   @vip_backends`, chain `pK` the same keyed by protocol and port into
//!   `port_backends` (which also gives the target port);
//! - so a change rewrites one service's K elements and its K, nothing else,
//!   and packets see the old set or the new one, never a mix. No verdict
//!   changes: a verdict element makes the kernel validate the whole table
//!   at commit, which with 1,000 services costs four times the change.
//!
//! Established connections keep their conntrack entry, so a change never
//! disturbs them; new ones only ever reach the current backends.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

use cnm_core::Protocol;
use cnm_netns::NetNs;
use ipnet::Ipv4Net;

use crate::error::NatError;
use crate::firewall::run_tool;
use crate::nfnl::NfSocket;
use crate::nft::{Concat, ElementChange, Field, Op};

/// The table's name (family inet).
pub const LB_TABLE: &str = "cnm-lb";

/// What one namespace's table balances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LbContent {
    /// Virtual IPs and their backends (the port is kept).
    pub vips: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>>,
    /// Ports of the namespace's own addresses and where they lead.
    pub ports: BTreeMap<(Protocol, u16), Vec<SocketAddrV4>>,
}

impl LbContent {
    /// Whether it balances nothing.
    pub fn is_empty(&self) -> bool {
        self.vips.is_empty() && self.ports.is_empty()
    }
}

/// Chains made with the table. A service with more backends has the table
/// made again with twice as many (nft 1.0.6 cannot add a rule that uses
/// the typed map to a table it did not make in the same run).
const INITIAL_CHAINS: usize = 16;

/// The load-balancing table of one namespace, with a netlink socket open
/// inside it.
pub struct LbTable {
    ns: NetNs,
    label: String,
    sock: NfSocket,
    masquerade: Option<Ipv4Net>,
    /// Backends per virtual IP and per published port, as applied.
    vips: BTreeMap<Ipv4Addr, Vec<Ipv4Addr>>,
    ports: BTreeMap<(Protocol, u16), Vec<SocketAddrV4>>,
    /// Chains `v1`..`vN` and `p1`..`pN` exist.
    chains: usize,
}

impl std::fmt::Debug for LbTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LbTable")
            .field("ns", &self.label)
            .field("vips", &self.vips)
            .field("ports", &self.ports)
            .finish()
    }
}

impl LbTable {
    /// Makes the table in `ns` anew, balancing `content`, in one
    /// transaction (`label` names the namespace in errors): a table that
    /// was there is replaced without a moment empty. `masquerade`: traffic
    /// this namespace forwards after a DNAT to this subnet leaves with this
    /// namespace's address on it (the ingress sandbox, so that backends
    /// answer through it).
    pub fn create(
        ns: &NetNs,
        label: &str,
        masquerade: Option<Ipv4Net>,
        content: LbContent,
    ) -> Result<LbTable, NatError> {
        let sock = ns.run(NfSocket::open)?.map_err(|e| NatError::Apply {
            tool: "nftables (netlink)".into(),
            namespace: label.into(),
            stderr: e.to_string(),
        })?;
        let mut t = LbTable {
            ns: ns.try_clone()?,
            label: label.to_string(),
            sock,
            masquerade,
            vips: content.vips,
            ports: content.ports,
            chains: 0,
        };
        t.rebuild(INITIAL_CHAINS)?;
        Ok(t)
    }

    /// Changes what it balances to `content`: only what differs, each in
    /// its own transaction.
    pub fn update(&mut self, content: &LbContent) -> Result<(), NatError> {
        let gone_vips: Vec<Ipv4Addr> = self.vips.keys().filter(|v| !content.vips.contains_key(v)).copied().collect();
        for v in gone_vips {
            self.set_vip(v, &[])?;
        }
        let gone_ports: Vec<(Protocol, u16)> =
            self.ports.keys().filter(|p| !content.ports.contains_key(p)).copied().collect();
        for (proto, port) in gone_ports {
            self.set_port(proto, port, &[])?;
        }
        for (v, b) in &content.vips {
            if self.vips.get(v) != Some(b) {
                self.set_vip(*v, b)?;
            }
        }
        for ((proto, port), t) in &content.ports {
            if self.ports.get(&(*proto, *port)) != Some(t) {
                self.set_port(*proto, *port, t)?;
            }
        }
        Ok(())
    }

    /// Removes the table from `ns` (nothing if it is not there).
    pub fn delete(ns: &NetNs, label: &str) -> Result<(), NatError> {
        // nft 1.0.6 has no `destroy table`: made if missing, then deleted.
        let script = format!("table inet {LB_TABLE}\ndelete table inet {LB_TABLE}\n");
        run_tool(ns, label, "nft", &["-f", "-"], &script).map(|_| ())
    }

    /// The virtual IPs it balances.
    pub fn vips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.vips.keys().copied()
    }

    /// The ports it balances.
    pub fn ports(&self) -> impl Iterator<Item = (Protocol, u16)> + '_ {
        self.ports.keys().copied()
    }

    /// Connections to `vip` (any port) go to one of `backends`, the port
    /// unchanged; none: `vip` is no longer balanced here.
    pub fn set_vip(&mut self, vip: Ipv4Addr, backends: &[Ipv4Addr]) -> Result<(), NatError> {
        let before = self.vips.get(&vip).map_or(0, Vec::len);
        self.ensure_chains(backends.len())?;
        self.apply(&vip_plan(vip, backends, before))?;
        match backends.len() {
            0 => self.vips.remove(&vip),
            _ => self.vips.insert(vip, backends.to_vec()),
        };
        Ok(())
    }

    /// Connections to `port` of this namespace's own addresses go to one of
    /// `targets`; none: the port is no longer published here.
    pub fn set_port(&mut self, protocol: Protocol, port: u16, targets: &[SocketAddrV4]) -> Result<(), NatError> {
        let before = self.ports.get(&(protocol, port)).map_or(0, Vec::len);
        self.ensure_chains(targets.len())?;
        self.apply(&port_plan(protocol, port, targets, before))?;
        match targets.len() {
            0 => self.ports.remove(&(protocol, port)),
            _ => self.ports.insert((protocol, port), targets.to_vec()),
        };
        Ok(())
    }

    /// Makes the table again, with everything it balances, when it has no
    /// chain for `k` backends yet (one `nft` transaction).
    fn ensure_chains(&mut self, k: usize) -> Result<(), NatError> {
        match k <= self.chains {
            true => Ok(()),
            false => self.rebuild(k.next_power_of_two()),
        }
    }

    /// Makes the table anew with chains for up to `chains` backends (more
    /// if what it balances needs more), and everything it balances.
    fn rebuild(&mut self, chains: usize) -> Result<(), NatError> {
        let most = self.vips.values().map(Vec::len).chain(self.ports.values().map(Vec::len)).max().unwrap_or(0);
        let chains = chains.max(most.next_power_of_two());
        let mut script = ruleset(self.masquerade, chains);
        for (vip, b) in &self.vips {
            script.extend(vip_plan(*vip, b, 0).iter().filter(|c| c.op == Op::Add).map(ElementChange::to_script));
        }
        for ((proto, port), t) in &self.ports {
            script.extend(
                port_plan(*proto, *port, t, 0).iter().filter(|c| c.op == Op::Add).map(ElementChange::to_script),
            );
        }
        run_tool(&self.ns, &self.label, "nft", &["-f", "-"], &script)?;
        self.chains = chains;
        Ok(())
    }

    fn apply(&mut self, changes: &[ElementChange]) -> Result<(), NatError> {
        let fail =
            |e: String| NatError::Apply { tool: "nftables (netlink)".into(), namespace: self.label.clone(), stderr: e };
        match self.sock.apply(changes) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(fail(refused.to_string())),
            Err(e) => {
                // A socket that timed out may still get late answers.
                let fresh = self.ns.run(NfSocket::open)?.map_err(|e| fail(format!("opening a socket: {e}")))?;
                self.sock = fresh;
                Err(fail(e.to_string()))
            }
        }
    }
}

/// The transaction that balances `vip` over `backends` instead of the
/// `before` it had.
fn vip_plan(vip: Ipv4Addr, backends: &[Ipv4Addr], before: usize) -> Vec<ElementChange> {
    let key = |i: usize| Concat(vec![Field::Addr(IpAddr::V4(vip)), Field::Index(i as u32)]);
    let values = backends.iter().map(|b| Concat(vec![Field::Addr(IpAddr::V4(*b))]));
    let k_key = Concat(vec![Field::Addr(IpAddr::V4(vip))]);
    plan("vip_k", k_key, "vip_backends", key, values, before)
}

/// The transaction that balances a port over `targets` instead of the
/// `before` it had.
fn port_plan(protocol: Protocol, port: u16, targets: &[SocketAddrV4], before: usize) -> Vec<ElementChange> {
    let key = |i: usize| Concat(vec![Field::Proto(protocol), Field::Port(port), Field::Index(i as u32)]);
    let values = targets.iter().map(|t| Concat(vec![Field::Addr(IpAddr::V4(*t.ip())), Field::Port(t.port())]));
    let k_key = Concat(vec![Field::Proto(protocol), Field::Port(port)]);
    plan("port_k", k_key, "port_backends", key, values, before)
}

/// The transaction that gives `k_key` the values `values` (indexed 0..K)
/// in `map`, replacing the `before` it had: its K goes, its old elements
/// go, the new ones come, then its new K (none when K is 0). Destroy (not
/// delete) tolerates elements already gone.
fn plan(
    counts: &'static str,
    k_key: Concat,
    map: &'static str,
    key: impl Fn(usize) -> Concat,
    values: impl Iterator<Item = Concat>,
    before: usize,
) -> Vec<ElementChange> {
    let values: Vec<Concat> = values.collect();
    let k = values.len();
    let change = |op, set, elements| ElementChange { op, table: LB_TABLE, set, elements };
    let mut out = vec![change(Op::Destroy, counts, vec![(k_key.clone(), None)])];
    let old: Vec<(Concat, Option<Concat>)> = (0..before.max(k)).map(|i| (key(i), None)).collect();
    for c in old.chunks(crate::nft::ELEMENTS_PER_MESSAGE) {
        out.push(change(Op::Destroy, map, c.to_vec()));
    }
    let new: Vec<(Concat, Option<Concat>)> = values.into_iter().enumerate().map(|(i, v)| (key(i), Some(v))).collect();
    for c in new.chunks(crate::nft::ELEMENTS_PER_MESSAGE) {
        out.push(change(Op::Add, map, c.to_vec()));
    }
    if k > 0 {
        out.push(change(Op::Add, counts, vec![(k_key, Some(Concat(vec![Field::Index(k as u32)])))]));
    }
    out
}

/// The whole table, replacing any there was, with chains for 1 to
/// `chains` backends.
pub(crate) fn ruleset(masquerade: Option<Ipv4Net>, chains: usize) -> String {
    let mut s = format!(
        "table inet {LB_TABLE}\ndelete table inet {LB_TABLE}\ntable inet {LB_TABLE} {{\n  \
         map vip_k {{ type ipv4_addr : mark; }}\n  \
         map vip_backends {{ typeof ip daddr . numgen random mod 2 : ip daddr; }}\n  \
         map port_k {{ type inet_proto . inet_service : mark; }}\n  \
         map port_backends {{ typeof meta l4proto . th dport . numgen random mod 2 : ip daddr . th dport; }}\n"
    );
    for (hook, priority) in [("prerouting", "-110"), ("output", "-110")] {
        s.push_str(&format!(
            "  chain {hook} {{ type nat hook {hook} priority {priority}; policy accept;\n    \
             meta mark set ip daddr map @vip_k goto vips\n    \
             fib daddr type local meta mark set meta l4proto . th dport map @port_k goto ports\n  }}\n"
        ));
    }
    if let Some(net) = masquerade {
        s.push_str(&format!(
            "  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n    \
             ct status dnat ip daddr {net} masquerade\n  }}\n"
        ));
    }
    let select = |c: &str| (1..=chains).map(|k| format!("{k} : goto {c}{k}")).collect::<Vec<_>>().join(", ");
    s.push_str(&format!("  chain vips {{\n    meta mark vmap {{ {} }}\n  }}\n", select("v")));
    s.push_str(&format!("  chain ports {{\n    meta mark vmap {{ {} }}\n  }}\n", select("p")));
    for k in 1..=chains {
        s.push_str(&format!(
            "  chain v{k} {{\n    dnat ip to ip daddr . numgen random mod {k} map @vip_backends\n  }}\n  \
             chain p{k} {{\n    dnat ip to meta l4proto . th dport . numgen random mod {k} map @port_backends\n  }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_replaces_one_service_s_elements_and_its_verdict() {
        let vip = Ipv4Addr::new(10, 0, 0, 5);
        let key = |i: usize| Concat(vec![Field::Addr(IpAddr::V4(vip)), Field::Index(i as u32)]);
        let values = [Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(10, 0, 0, 8)]
            .into_iter()
            .map(|b| Concat(vec![Field::Addr(IpAddr::V4(b))]));
        let kk = Concat(vec![Field::Addr(IpAddr::V4(vip))]);
        let script: String =
            plan("vip_k", kk, "vip_backends", key, values, 3).iter().map(ElementChange::to_script).collect();
        assert_eq!(
            script,
            "destroy element inet cnm-lb vip_k { 10.0.0.5 }\n\
             destroy element inet cnm-lb vip_backends { 10.0.0.5 . 0, 10.0.0.5 . 1, 10.0.0.5 . 2 }\n\
             add element inet cnm-lb vip_backends { 10.0.0.5 . 0 : 10.0.0.7, 10.0.0.5 . 1 : 10.0.0.8 }\n\
             add element inet cnm-lb vip_k { 10.0.0.5 : 2 }\n"
        );
    }
}
