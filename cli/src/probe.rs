//! Reachability checks from Rust, so the demo needs no ping or socat: ICMP
//! echo over a raw socket, and small TCP and UDP servers that answer with
//! the address the client came from. Every socket is opened inside the
//! namespace it belongs to (and stays bound to it).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use cnm_netns::NetNs;
use nix::libc;

fn ns_err(e: cnm_netns::Error) -> io::Error {
    io::Error::other(e.to_string())
}

/// The Internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends ICMP echo requests from inside `ns` to `to` until one is answered
/// or `timeout` passes; returns the round-trip time.
pub fn ping(ns: &NetNs, to: IpAddr, timeout: Duration) -> io::Result<Duration> {
    ns.run(move || ping_here(to, timeout)).map_err(ns_err)?
}

fn ping_here(to: IpAddr, timeout: Duration) -> io::Result<Duration> {
    let (domain, proto, request, reply) = match to {
        IpAddr::V4(_) => (libc::AF_INET, libc::IPPROTO_ICMP, 8u8, 0u8),
        IpAddr::V6(_) => (libc::AF_INET6, libc::IPPROTO_ICMPV6, 128u8, 129u8),
    };
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe { libc::socket(domain, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
    // SAFETY: setsockopt reads `tv` only.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    let id = (std::process::id() & 0xffff) as u16;
    let dest = socket2_addr(SocketAddr::new(to, 0));
    let start = Instant::now();
    let mut seq = 0u16;
    while start.elapsed() < timeout {
        seq = seq.wrapping_add(1);
        let mut pkt = vec![request, 0, 0, 0];
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(b"cnm demo echo");
        if to.is_ipv4() {
            let c = checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        } // the kernel fills in the ICMPv6 checksum
        let sent = Instant::now();
        // SAFETY: the buffer and address outlive the call.
        let n = unsafe { libc::sendto(fd, pkt.as_ptr().cast(), pkt.len(), 0, dest.0.as_ptr().cast(), dest.1) };
        if n < 0 {
            let e = io::Error::last_os_error();
            // No route or neighbour yet: try again shortly.
            std::thread::sleep(Duration::from_millis(50));
            if start.elapsed() >= timeout {
                return Err(e);
            }
            continue;
        }
        while sent.elapsed() < Duration::from_millis(300) {
            let mut buf = [0u8; 1500];
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                break;
            }
            let mut b = &buf[..n as usize];
            if to.is_ipv4() {
                // Raw IPv4 sockets hand over the IP header too.
                let ihl = usize::from(b[0] & 0x0f) * 4;
                if b.len() < ihl + 8 {
                    continue;
                }
                b = &b[ihl..];
            }
            if b.len() >= 8 && b[0] == reply && b[4..6] == id.to_be_bytes() && b[6..8] == seq.to_be_bytes() {
                return Ok(sent.elapsed());
            }
        }
    }
    Err(io::Error::new(io::ErrorKind::TimedOut, format!("no echo reply from {to}")))
}

/// A sockaddr for sendto.
fn socket2_addr(a: SocketAddr) -> (Vec<u8>, libc::socklen_t) {
    match a {
        SocketAddr::V4(v4) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(v4.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in is plain data; viewing it as bytes is sound.
            let bytes = unsafe {
                std::slice::from_raw_parts((&sa as *const libc::sockaddr_in).cast::<u8>(), std::mem::size_of_val(&sa))
            };
            (bytes.to_vec(), std::mem::size_of_val(&sa) as libc::socklen_t)
        }
        SocketAddr::V6(v6) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 is plain data; viewing it as bytes is sound.
            let bytes = unsafe {
                std::slice::from_raw_parts((&sa as *const libc::sockaddr_in6).cast::<u8>(), std::mem::size_of_val(&sa))
            };
            (bytes.to_vec(), std::mem::size_of_val(&sa) as libc::socklen_t)
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

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn checksum_of_an_echo_request() {
        // Type 8, id 1, seq 1, no payload: 0xf7fd (RFC 1071 arithmetic).
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }
}
