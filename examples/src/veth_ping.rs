//! The foundation demonstration: two fresh namespaces joined by a veth pair,
//! addressed over IPv4 and IPv6, pinging each other both ways. It touches
//! nothing outside the namespaces it creates, and those vanish with it.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use cnm_netns::{AddrFlags, Handle, LinkAdd, NetNs, VethPeer};

use cnm_cli::probe::icmp_echo;

/// One step of the demonstration, for the printed report.
#[derive(Debug, Clone)]
pub struct Step {
    /// What was done or checked.
    pub what: String,
    /// How long it took.
    pub took: Duration,
}

/// Runs the demonstration, calling `report` after each step. Fails on the
/// first step that fails, with a message that says which.
pub fn run(mut report: impl FnMut(&Step)) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut step = |what: String, start: Instant| {
        let s = Step { what, took: start.elapsed() };
        report(&s);
        steps.push(s);
    };

    let t = Instant::now();
    let left = NetNs::create_anonymous().map_err(|e| e.to_string())?;
    let right = NetNs::create_anonymous().map_err(|e| e.to_string())?;
    step("created namespaces \"left\" and \"right\"".into(), t);

    let t = Instant::now();
    let l = Handle::open(&left).map_err(|e| e.to_string())?;
    let r = Handle::open(&right).map_err(|e| e.to_string())?;
    let veth = l
        .link_add(&LinkAdd::veth("veth-left", VethPeer::new("veth-right").netns(&right)).up())
        .map_err(|e| e.to_string())?;
    // The kernel reports the peer's index (in its own namespace) with the new link.
    let peer = veth.peer_index.ok_or("the kernel did not report the veth peer's index")?;
    let veth = veth.index;
    step("created veth pair veth-left <-> veth-right, peer directly in \"right\"".into(), t);

    let t = Instant::now();
    let cfg = |h: &Handle, idx: u32, v4: &str, v6: &str| -> cnm_netns::Result<()> {
        h.link_set_up("lo")?;
        // Up first: an IPv6 address added while its link is down stays silent
        // for about a second after the link comes up (measured here).
        h.link_set_up(idx)?;
        h.addr_add(idx, v4.parse().unwrap(), AddrFlags::empty())?;
        h.addr_add(idx, v6.parse().unwrap(), AddrFlags::NODAD)
    };
    cfg(&l, veth, "10.200.0.1/24", "fd00:cafe::1/64").map_err(|e| e.to_string())?;
    cfg(&r, peer, "10.200.0.2/24", "fd00:cafe::2/64").map_err(|e| e.to_string())?;
    step("up, and addressed left 10.200.0.1/24 fd00:cafe::1/64, right 10.200.0.2/24 fd00:cafe::2/64".into(), t);

    let pings: [(&str, &NetNs, &str); 4] = [
        ("left", &left, "10.200.0.2"),
        ("right", &right, "10.200.0.1"),
        ("left", &left, "fd00:cafe::2"),
        ("right", &right, "fd00:cafe::1"),
    ];
    for (from, ns, to) in pings {
        let to: IpAddr = to.parse().unwrap();
        let t = Instant::now();
        let rtt = icmp_echo(ns, to, Duration::from_secs(3)).map_err(|e| format!("ping from {from} to {to}: {e}"))?;
        step(format!("ICMP echo from {from} to {to}: reply in {rtt:?}"), t);
    }
    Ok(steps)
}
