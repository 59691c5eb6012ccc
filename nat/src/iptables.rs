//! Rendering the iptables backend: chains of our own (`CNM-*`), each hooked
//! from a built-in chain by one jump, rebuilt by one `iptables-restore
//! --noflush` (and `ip6tables-restore`) transaction. Built-in chains keep
//! their policies; chains we do not own are never flushed.

use std::fmt::Write;

use cnm_core::FirewallNetwork;

use crate::state::Desired;

/// Address family of one iptables run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `iptables`.
    V4,
    /// `ip6tables`.
    V6,
}

impl Family {
    /// The restore tool.
    pub fn restore(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    /// The save tool.
    pub fn save(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    fn matches(self, v4: bool) -> bool {
        (self == Family::V4) == v4
    }
}

/// The jump rules that hook our chains, per table.
pub fn jumps(f: Family) -> Vec<(&'static str, &'static str)> {
    let mut j = vec![
        ("nat", "-A PREROUTING -m addrtype --dst-type LOCAL -j CNM-DNAT"),
        ("nat", "-A OUTPUT -m addrtype --dst-type LOCAL -j CNM-DNAT"),
        ("nat", "-A POSTROUTING -j CNM-POSTROUTING"),
        ("filter", "-A FORWARD -j CNM-FORWARD"),
    ];
    if f == Family::V4 {
        j.push(("raw", "-A PREROUTING -j CNM-RAW"));
    }
    j
}

fn tag(id: &str) -> String {
    format!("-m comment --comment cnm:{id}")
}

fn subnets(n: &FirewallNetwork, f: Family) -> Vec<String> {
    n.subnets.iter().filter(|s| f.matches(s.addr().is_ipv4())).map(|s| s.to_string()).collect()
}

/// The whole of our chains for one family. `missing_jumps` are added (once;
/// the caller checked which exist).
pub fn render(d: &Desired, f: Family, missing_jumps: &[(&str, &str)]) -> String {
    let mut rules = String::new();
    let jumps_for =
        |table: &str| -> Vec<&str> { missing_jumps.iter().filter(|(t, _)| *t == table).map(|(_, r)| *r).collect() };
    if f == Family::V4 {
        let _ = writeln!(rules, "*raw\n:CNM-RAW - [0:0]\n-F CNM-RAW");
        let _ = writeln!(rules, "-A CNM-RAW -d 127.0.0.0/8 ! -i lo {} -j DROP", tag("no-127-from-outside"));
        for j in jumps_for("raw") {
            let _ = writeln!(rules, "{j}");
        }
        let _ = writeln!(rules, "COMMIT");
    }

    let _ = writeln!(rules, "*nat\n:CNM-DNAT - [0:0]\n:CNM-POSTROUTING - [0:0]\n-F CNM-DNAT\n-F CNM-POSTROUTING");
    for p in &d.ports {
        for m in p.mappings.iter().filter(|m| f.matches(m.container_ip.is_ipv4())) {
            let b = &m.binding;
            let dst = match b.host_ip {
                Some(h) if !h.is_unspecified() => format!(" -d {h}"),
                _ => String::new(),
            };
            let to = match m.container_ip {
                std::net::IpAddr::V4(a) => format!("{a}:{}", b.container_port),
                std::net::IpAddr::V6(a) => format!("[{a}]:{}", b.container_port),
            };
            let _ = writeln!(
                rules,
                "-A CNM-DNAT -p {}{dst} -m {} --dport {} {} -j DNAT --to-destination {to}",
                b.protocol,
                b.protocol,
                b.host_port,
                tag(&p.endpoint)
            );
        }
    }
    for n in &d.networks {
        let b = &n.interface;
        let t = tag(&n.id);
        for sub in subnets(n, f) {
            if n.masquerade && !n.internal {
                let _ = writeln!(rules, "-A CNM-POSTROUTING -s {sub} ! -o {b} {t} -j MASQUERADE");
            }
            let _ = writeln!(rules, "-A CNM-POSTROUTING -s {sub} -o {b} -m conntrack --ctstate DNAT {t} -j MASQUERADE");
        }
        if f == Family::V4 && !subnets(n, f).is_empty() {
            let _ = writeln!(rules, "-A CNM-POSTROUTING -s 127.0.0.0/8 -o {b} {t} -j MASQUERADE");
        }
    }
    for j in jumps_for("nat") {
        let _ = writeln!(rules, "{j}");
    }
    let _ = writeln!(rules, "COMMIT");

    let _ = writeln!(rules, "*filter\n:CNM-FORWARD - [0:0]\n-F CNM-FORWARD");
    // The same phases as the nftables backend.
    let mut phases: [Vec<String>; 6] = Default::default();
    for n in &d.networks {
        let b = &n.interface;
        let t = tag(&n.id);
        if n.internal {
            // First of all: nothing leaves or enters an internal network,
            // not even to or from another network's published port.
            phases[0].push(format!("-A CNM-FORWARD -i {b} ! -o {b} {t} -j DROP"));
            phases[0].push(format!("-A CNM-FORWARD -o {b} ! -i {b} {t} -j DROP"));
        }
        phases[1].push(format!("-A CNM-FORWARD -o {b} -m conntrack --ctstate RELATED,ESTABLISHED {t} -j ACCEPT"));
        if !n.internal {
            phases[1].push(format!("-A CNM-FORWARD -o {b} -m conntrack --ctstate DNAT {t} -j ACCEPT"));
        }
        for o in d.networks.iter().filter(|o| o.interface != n.interface) {
            phases[2].push(format!("-A CNM-FORWARD -i {b} -o {} {t} -j DROP", o.interface));
        }
        phases[3].push(format!("-A CNM-FORWARD -i {b} -o {b} {t} -j {}", if n.icc { "ACCEPT" } else { "DROP" }));
        if !n.internal {
            phases[4].push(format!("-A CNM-FORWARD -i {b} {t} -j ACCEPT"));
            for p in d.ports.iter().filter(|p| p.network == n.id) {
                let mut seen = std::collections::BTreeSet::new();
                for m in p.mappings.iter().filter(|m| f.matches(m.container_ip.is_ipv4())) {
                    if seen.insert((m.container_ip, m.binding.protocol, m.binding.container_port)) {
                        let pr = m.binding.protocol;
                        phases[5].push(format!(
                            "-A CNM-FORWARD -o {b} -d {} -p {pr} -m {pr} --dport {} {} -j ACCEPT",
                            m.container_ip,
                            m.binding.container_port,
                            tag(&p.endpoint)
                        ));
                    }
                }
            }
            phases[5].push(format!("-A CNM-FORWARD -o {b} {t} -j DROP"));
        }
    }
    for r in phases.into_iter().flatten() {
        let _ = writeln!(rules, "{r}");
    }
    for j in jumps_for("filter") {
        // First in FORWARD, ahead of other tools' rules (as DOCKER-USER is).
        let _ = writeln!(rules, "{}", j.replacen("-A FORWARD", "-I FORWARD 1", 1));
    }
    let _ = writeln!(rules, "COMMIT");
    rules
}

/// Which of our jumps `save` (the output of `iptables-save`) lacks.
pub fn missing_jumps(save: &str, f: Family) -> Vec<(&'static str, &'static str)> {
    let mut table = "";
    let mut present = Vec::new();
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t;
        } else if line.starts_with("-A ") {
            present.push((table.to_string(), line.to_string()));
        }
    }
    jumps(f).into_iter().filter(|(t, r)| !present.iter().any(|(pt, pr)| pt == t && pr == r)).collect()
}

/// The lines of `save` (the output of `iptables-save`) that are ours (our
/// chains, their rules, the jumps into them), each prefixed by its table,
/// without counters: what [`NatFirewall::repair`](crate::NatFirewall::repair)
/// compares.
pub fn own_lines(save: &str) -> String {
    let mut table = "";
    let mut out = String::new();
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t;
        } else if line.contains("CNM-") {
            // `:CNM-FORWARD - [0:0]`: the counters are not state.
            let line = line.split(" [").next().unwrap_or(line);
            let _ = writeln!(out, "{table} {line}");
        }
    }
    out
}

/// The `iptables-restore --noflush` input that removes everything of ours
/// `save` shows (the jumps into our chains, then the chains), for when
/// nothing is left to install; `None` when there is nothing of ours.
pub fn render_removal(save: &str) -> Option<String> {
    let mut tables: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            tables.push((t.to_string(), Vec::new(), Vec::new()));
        } else if let Some((_, jumps, chains)) = tables.last_mut() {
            if let Some(chain) = line.strip_prefix(":CNM-") {
                chains.push(format!("CNM-{}", chain.split(' ').next().unwrap_or_default()));
            } else if line.starts_with("-A ") && !line.starts_with("-A CNM-") && line.contains("-j CNM-") {
                jumps.push(line.replacen("-A ", "-D ", 1));
            }
        }
    }
    let mut rules = String::new();
    for (t, jumps, chains) in tables.iter().filter(|(_, j, c)| !j.is_empty() || !c.is_empty()) {
        let _ = writeln!(rules, "*{t}");
        for line in jumps.iter().cloned().chain(chains.iter().map(|c| format!("-F {c}"))) {
            let _ = writeln!(rules, "{line}");
        }
        for c in chains {
            let _ = writeln!(rules, "-X {c}");
        }
        let _ = writeln!(rules, "COMMIT");
    }
    (!rules.is_empty()).then_some(rules)
}
