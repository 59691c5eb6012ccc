//! A sandbox's side of the server: a UDP socket and a TCP listener on
//! random ports of 127.0.0.11, opened inside the sandbox's namespace (a
//! socket stays in the namespace it was made in), and the nftables rules
//! there that redirect 127.0.0.11:53 to them. Port 53 itself stays free
//! for a DNS server the container runs on its own (Docker does the same).

use std::net::{SocketAddr, TcpListener, UdpSocket};

use cnm_core::EMBEDDED_DNS;
use cnm_netns::NetNs;

use crate::error::{Error, Result};

/// The nftables table of the redirect inside each sandbox.
pub(crate) const TABLE: &str = "cnm_dns";

/// The sockets that serve one sandbox.
pub(crate) struct Sockets {
    pub udp: UdpSocket,
    pub tcp: TcpListener,
}

/// Opens the sockets inside `netns` and redirects 127.0.0.11:53 to them.
pub(crate) fn open(netns: &NetNs, sandbox: &str) -> Result<Sockets> {
    let at = |what: &str| format!("{what} in sandbox {sandbox:?}");
    netns.loopback_up().map_err(|e| Error::netns(at("bring loopback up"), e))?;
    let bind = || -> std::io::Result<Sockets> {
        let addr = SocketAddr::from((EMBEDDED_DNS, 0));
        let udp = UdpSocket::bind(addr)?;
        let tcp = TcpListener::bind(addr)?;
        udp.set_nonblocking(true)?;
        tcp.set_nonblocking(true)?;
        Ok(Sockets { udp, tcp })
    };
    let sockets = netns
        .run(bind)
        .map_err(|e| Error::netns(at("open sockets"), e))?
        .map_err(|e| Error::io(at("bind 127.0.0.11"), e))?;
    let port = |a: std::io::Result<SocketAddr>| a.map(|a| a.port()).map_err(|e| Error::io(at("local port"), e));
    let (udp, tcp) = (port(sockets.udp.local_addr())?, port(sockets.tcp.local_addr())?);
    nft(netns, sandbox, &redirect_script(udp, tcp))?;
    Ok(sockets)
}

/// Removes the redirect (the sockets close when dropped). A namespace
/// that is gone took the rule with it.
pub(crate) fn close(netns: &NetNs, sandbox: &str) -> Result<()> {
    nft(netns, sandbox, &format!("table ip {TABLE}\ndelete table ip {TABLE}\n"))
}

/// The rules: replace the table whole, in one transaction.
///
/// The ports are rewritten statelessly, on every packet, in both
/// directions, and the packets skip conntrack: a DNAT rule (Docker's way)
/// costs a conntrack lookup and NAT on every query and every answer, and
/// measured 12-15% fewer answered queries per second on the 2-core bench
/// machine (dnsperf from inside the sandbox: about 122,000 with DNAT,
/// 140,000 without). Only our sockets send from 127.0.0.11 on these
/// ports (they hold them), and loopback traffic never leaves the
/// namespace, so no state is needed to know which packets to rewrite.
fn redirect_script(udp: u16, tcp: u16) -> String {
    let dns = EMBEDDED_DNS;
    format!(
        "table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority raw; policy accept;\n\
         \t\tip daddr {dns} udp dport 53 notrack udp dport set {udp}\n\
         \t\tip saddr {dns} udp sport {udp} notrack udp sport set 53\n\
         \t\tip daddr {dns} tcp dport 53 notrack tcp dport set {tcp}\n\
         \t\tip saddr {dns} tcp sport {tcp} notrack tcp sport set 53\n\
         \t}}\n\
         }}\n"
    )
}

/// Runs `nft -f -` inside `netns`.
fn nft(netns: &NetNs, sandbox: &str, script: &str) -> Result<()> {
    netns
        .exec_with_input("nft", ["-f", "-"], Some(script))
        .map(|_| ())
        .map_err(|e| Error::Redirect { sandbox: sandbox.to_string(), reason: e.to_string() })
}
