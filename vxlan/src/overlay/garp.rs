//! Gratuitous ARP for remote endpoints just programmed. A local container
//! that asked for one of them a moment too early has an incomplete
//! neighbour entry and would ask again only after its retransmit time (1 s);
//! the announcement completes that entry at once. Containers without an
//! entry ignore it (the kernel's `arp_accept` default).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use cnm_core::{Error, Result};
use cnm_netns::{MacAddr, NetNs};
use nix::libc;

/// One announcement: `ip` is at `mac`, sent on the bridge with index `bridge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    /// Index of the subnet's bridge in the overlay namespace.
    pub bridge: u32,
    /// The endpoint's address.
    pub ip: Ipv4Addr,
    /// Its MAC.
    pub mac: MacAddr,
}

/// The frame: broadcast ARP reply with sender and target both the endpoint
/// (what the kernel counts as gratuitous, RFC 5227 §3).
pub fn frame(a: &Announce) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&a.mac.0);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&2u16.to_be_bytes()); // reply
    f[22..28].copy_from_slice(&a.mac.0);
    f[28..32].copy_from_slice(&a.ip.octets());
    f[32..38].copy_from_slice(&a.mac.0);
    f[38..42].copy_from_slice(&a.ip.octets());
    f
}

/// Sends each announcement once, from inside `ns`.
pub fn announce(ns: &NetNs, items: &[Announce]) -> Result<()> {
    if items.is_empty() {
        return Ok(());
    }
    let items = items.to_vec();
    ns.run(move || send_all(&items))
        .map_err(|e| Error::kernel("gratuitous ARP", e))?
        .map_err(|e| Error::kernel("gratuitous ARP", e))
}

fn send_all(items: &[Announce]) -> std::io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is owned right away. Protocol
    // 0: this socket only sends.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is fresh and owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    for a in items {
        let f = frame(a);
        // SAFETY: sockaddr_ll is plain data, zeroed then filled.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = 0x0806u16.to_be();
        sa.sll_ifindex = a.bridge as i32;
        sa.sll_halen = 6;
        sa.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: the frame and the address outlive the call.
        let n = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                f.as_ptr().cast(),
                f.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_is_a_gratuitous_reply() {
        let a = Announce { bridge: 3, ip: Ipv4Addr::new(10, 1, 1, 7), mac: MacAddr([2, 0x42, 10, 1, 1, 7]) };
        let f = frame(&a);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 2]);
        // Sender and target: the same MAC and address.
        assert_eq!((&f[22..28], &f[28..32]), (&f[32..38], &f[38..42]));
        assert_eq!(&f[28..32], &[10, 1, 1, 7]);
    }
}
