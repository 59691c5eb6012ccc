//! Reachability checks from Rust, so the demo and the example programs
//! need no `ping` or `socat`: ICMP echo over a raw socket, TCP connect, and
//! small TCP and UDP servers that answer with the address the client came
//! from. Every socket is opened inside the namespace it belongs to (and
//! stays bound to it).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use cnm_netns::NetNs;
use cnm_vxlan::wire::checksum;
use nix::sys::socket::{
    recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrStorage,
};
use nix::sys::time::TimeVal;

fn ns_err(e: cnm_netns::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// How long one echo request waits for its reply before the next is sent.
const RESEND: Duration = Duration::from_millis(300);

/// Sends ICMP (or ICMPv6) echo requests from inside `ns` to `to`, a new
/// one every 300 ms, until one is answered or `timeout` passes; returns the
/// round-trip time of the answered one.
pub fn icmp_echo(ns: &NetNs, to: IpAddr, timeout: Duration) -> io::Result<Duration> {
    ns.run(move || icmp_echo_here(to, timeout)).map_err(ns_err)?
}

/// Whether a TCP connection from inside `ns` to `to` succeeds within `timeout`.
pub fn tcp_connect(ns: &NetNs, to: SocketAddr, timeout: Duration) -> io::Result<()> {
    ns.run(move || TcpStream::connect_timeout(&to, timeout).map(|_| ())).map_err(ns_err)?
}

/// The ICMP types of an echo request and reply, by family.
fn echo_types(to: IpAddr) -> (AddressFamily, SockProtocol, u8, u8) {
    match to {
        IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp, 8, 0),
        IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6, 128, 129),
    }
}

fn icmp_echo_here(to: IpAddr, timeout: Duration) -> io::Result<Duration> {
    let (family, proto, request, _) = echo_types(to);
    let sock = socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, proto)?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let dest = SockaddrStorage::from(SocketAddr::new(to, 0));
    let start = Instant::now();
    let mut seq = 0u16;
    while start.elapsed() < timeout {
        seq = seq.wrapping_add(1);
        let mut pkt = [0u8; 16];
        pkt[0] = request;
        pkt[4..6].copy_from_slice(&id.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        pkt[8..16].copy_from_slice(b"cnmprobe");
        if to.is_ipv4() {
            // The kernel fills in the ICMPv6 checksum itself; ICMPv4's is ours.
            let c = checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        }
        let sent = Instant::now();
        if let Err(e) = sendto(sock.as_raw_fd(), &pkt, &dest, MsgFlags::empty()) {
            // No route or neighbour yet: try again shortly.
            if start.elapsed() + RESEND >= timeout {
                return Err(e.into());
            }
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let wait = RESEND.min(timeout.saturating_sub(start.elapsed()));
        if await_reply(&sock, to, id, seq, sent + wait)? {
            return Ok(sent.elapsed());
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, format!("no echo reply from {to}")))
}

/// Waits until `deadline` for the reply to echo `id`/`seq` from `to`.
fn await_reply(sock: &OwnedFd, to: IpAddr, id: u16, seq: u16, deadline: Instant) -> io::Result<bool> {
    let reply = echo_types(to).3;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let tv = TimeVal::new(left.as_secs() as _, left.subsec_micros().max(1) as _);
        setsockopt(sock, sockopt::ReceiveTimeout, &tv)?;
        let (n, from) = match recvfrom::<SockaddrStorage>(sock.as_raw_fd(), &mut buf) {
            Ok(r) => r,
            Err(nix::errno::Errno::EAGAIN) => return Ok(false),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let from_ip = from.and_then(|f| {
            f.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())).or_else(|| f.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        });
        if from_ip != Some(to) {
            continue;
        }
        // Raw IPv4 sockets deliver the IP header too; ICMPv6 ones do not.
        let icmp = if to.is_ipv4() { &buf[(usize::from(buf[0] & 0x0f) * 4).min(n)..n] } else { &buf[..n] };
        if icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes() {
            return Ok(true);
        }
    }
}

/// A TCP server in `ns` on `port` that tells every client the address it
/// came from, until the process ends.
pub fn tcp_who_am_i(ns: &NetNs, port: u16) -> io::Result<()> {
    let listener = ns.run(move || TcpListener::bind(("::", port))).map_err(ns_err)??;
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            if let Ok(peer) = c.peer_addr() {
                let _ = c.write_all(canonical(peer.ip()).to_string().as_bytes());
            }
        }
    });
    Ok(())
}

/// A UDP server in `ns` on `port` that answers every datagram with the
/// address it came from.
pub fn udp_who_am_i(ns: &NetNs, port: u16) -> io::Result<()> {
    let sock = ns.run(move || UdpSocket::bind(("::", port))).map_err(ns_err)??;
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, peer)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(canonical(peer.ip()).to_string().as_bytes(), peer);
        }
    });
    Ok(())
}

/// A name server in `ns` on UDP port 53 that answers every query "no such
/// name" at once (an upstream for sandboxes whose lookups must fail fast
/// without leaving the test's namespaces).
pub fn dns_nxdomain(ns: &NetNs) -> io::Result<()> {
    let sock = ns.run(|| UdpSocket::bind(("::", 53))).map_err(ns_err)??;
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            if n < 12 {
                continue;
            }
            // The query back, as a response (QR, RD and RA) with RCODE 3.
            buf[2] = 0x80 | (buf[2] & 0x01);
            buf[3] = 0x80 | 3;
            let _ = sock.send_to(&buf[..n], peer);
        }
    });
    Ok(())
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        v4 => v4,
    }
}

/// Asks the TCP server at `to` from inside `ns`: the address it saw.
pub fn tcp_ask(ns: &NetNs, to: SocketAddr) -> io::Result<String> {
    ns.run(move || -> io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .map_err(ns_err)?
}

/// Asks the UDP server at `to` from inside `ns` (a few tries): the address
/// it saw.
pub fn udp_ask(ns: &NetNs, to: SocketAddr) -> io::Result<String> {
    ns.run(move || -> io::Result<String> {
        let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 512];
        for _ in 0..6 {
            s.send_to(b"who am i", to)?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("no UDP answer from {to}")))
    })
    .map_err(ns_err)?
}
