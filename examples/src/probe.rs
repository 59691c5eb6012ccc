//! Reachability checks done in Rust inside a namespace: ICMP echo over a raw
//! socket and TCP connect. The demonstrations use these, so they need no
//! `ping` or `socat` on the machine.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use cnm_netns::NetNs;
use nix::sys::socket::{
    recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrStorage,
};
use nix::sys::time::TimeVal;

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;

/// Sends one ICMP (or ICMPv6) echo request from inside `ns` to `dst` and
/// waits up to `timeout` for the matching reply; returns the round-trip time.
pub fn icmp_echo(ns: &NetNs, dst: IpAddr, timeout: Duration) -> io::Result<Duration> {
    ns.run(move || icmp_echo_here(dst, timeout)).map_err(io::Error::other)?
}

/// Whether a TCP connection from inside `ns` to `dst` succeeds within `timeout`.
pub fn tcp_connect(ns: &NetNs, dst: SocketAddr, timeout: Duration) -> io::Result<()> {
    ns.run(move || TcpStream::connect_timeout(&dst, timeout).map(|_| ())).map_err(io::Error::other)?
}

fn icmp_echo_here(dst: IpAddr, timeout: Duration) -> io::Result<Duration> {
    let (family, proto, request, reply) = match dst {
        IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp, ECHO_REQUEST_V4, ECHO_REPLY_V4),
        IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6, ECHO_REQUEST_V6, ECHO_REPLY_V6),
    };
    let sock = socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, proto)?;
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let seq: u16 = 1;
    let mut pkt = [0u8; 16];
    pkt[0] = request;
    pkt[4..6].copy_from_slice(&id.to_be_bytes());
    pkt[6..8].copy_from_slice(&seq.to_be_bytes());
    pkt[8..16].copy_from_slice(b"cnmprobe");
    if dst.is_ipv4() {
        // The kernel fills in the ICMPv6 checksum itself; ICMPv4's is ours.
        let c = checksum(&pkt);
        pkt[2..4].copy_from_slice(&c.to_be_bytes());
    }
    let to = SockaddrStorage::from(SocketAddr::new(dst, 0));
    let start = Instant::now();
    sendto(sock.as_raw_fd(), &pkt, &to, MsgFlags::empty())?;
    let mut buf = [0u8; 1500];
    loop {
        let left = timeout.checked_sub(start.elapsed()).filter(|d| !d.is_zero()).ok_or_else(timed_out)?;
        let tv = TimeVal::new(left.as_secs() as _, left.subsec_micros() as _);
        setsockopt(&sock, sockopt::ReceiveTimeout, &tv)?;
        let (n, from) = match recvfrom::<SockaddrStorage>(sock.as_raw_fd(), &mut buf) {
            Ok(r) => r,
            Err(nix::errno::Errno::EAGAIN) => return Err(timed_out()),
            Err(e) => return Err(e.into()),
        };
        let from_ip = from.and_then(|f| {
            f.as_sockaddr_in().map(|a| IpAddr::V4(a.ip())).or_else(|| f.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        });
        if from_ip != Some(dst) {
            continue;
        }
        // Raw IPv4 sockets deliver the IP header too; ICMPv6 ones do not.
        let icmp = if dst.is_ipv4() {
            let ihl = ((buf[0] & 0x0f) as usize) * 4;
            &buf[ihl.min(n)..n]
        } else {
            &buf[..n]
        };
        if icmp.len() >= 8 && icmp[0] == reply && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes() {
            return Ok(start.elapsed());
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "no echo reply")
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word =
            if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from_be_bytes([chunk[0], 0]) };
        sum += word as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2 before complement.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
    }
}
