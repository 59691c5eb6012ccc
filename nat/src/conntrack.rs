//! Flushing conntrack entries of a published port, over ctnetlink, as
//! Docker and netavark do: a UDP "flow" to a host port keeps its NAT
//! decision for as long as packets keep coming, so without a flush a port
//! moved to another container would keep feeding the old one (and a port
//! published while a client was already sending would never be DNAT'ed).
//! TCP needs none: a connection to a removed container ends with it.
//!
//! The table is dumped and each entry whose original destination is the
//! host port (and the host address, when one was given) is deleted by its
//! original tuple, copied from the dump as the kernel wrote it.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::state::Mapping;

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_DST_PORT: u16 = 3;

const TIMEOUT: Duration = Duration::from_secs(5);

/// One entry's original destination, and the raw attributes that name it.
struct Entry {
    proto: u8,
    dst: Option<IpAddr>,
    dst_port: Option<u16>,
    /// `CTA_TUPLE_ORIG` (and `CTA_ZONE` when present), as dumped.
    key: Vec<u8>,
}

/// Deletes the conntrack entries of the UDP host ports of `mappings`. Must
/// run inside the host namespace. Returns how many were deleted.
pub(crate) fn flush_udp(mappings: &[Mapping]) -> io::Result<usize> {
    let ports: Vec<(Option<IpAddr>, u16, bool)> = mappings
        .iter()
        .filter(|m| m.binding.protocol == cnm_core::Protocol::Udp)
        .map(|m| (m.binding.host_ip.filter(|a| !a.is_unspecified()), m.binding.host_port, m.container_ip.is_ipv4()))
        .collect();
    if ports.is_empty() {
        return Ok(0);
    }
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    let tv = nix::sys::time::TimeVal::new(TIMEOUT.as_secs() as i64, 0);
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)?;
    let mut deleted = 0;
    for family in [nix::libc::AF_INET as u8, nix::libc::AF_INET6 as u8] {
        let v4 = family == nix::libc::AF_INET as u8;
        let wanted: Vec<_> = ports.iter().filter(|p| p.2 == v4).collect();
        if wanted.is_empty() {
            continue;
        }
        for e in dump(&mut sock, family)? {
            let hit = e.proto == 17
                && wanted.iter().any(|(ip, port, _)| e.dst_port == Some(*port) && ip.is_none_or(|a| e.dst == Some(a)));
            if hit && delete(&mut sock, family, &e.key)? {
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

fn header(out: &mut Vec<u8>, ty: u16, flags: u16, family: u8) {
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | ty).to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0, 0, 0]);
}

fn finish(out: &mut [u8]) {
    let len = out.len() as u32;
    out[..4].copy_from_slice(&len.to_ne_bytes());
}

/// Every entry of one family.
fn dump(sock: &mut Socket, family: u8) -> io::Result<Vec<Entry>> {
    let mut msg = Vec::new();
    header(&mut msg, IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, family);
    finish(&mut msg);
    sock.send(&msg, 0)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        let mut off = 0;
        while off + NLMSG_HDRLEN <= n {
            let b = &buf[off..n];
            let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
            if len < NLMSG_HDRLEN || len > b.len() {
                break;
            }
            let ty = u16::from_ne_bytes(b[4..6].try_into().unwrap());
            match ty {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let err = i32::from_ne_bytes(b[16..20].try_into().unwrap());
                    if err != 0 {
                        return Err(io::Error::from_raw_os_error(-err));
                    }
                }
                _ if len >= NLMSG_HDRLEN + 4 => out.extend(entry(&b[NLMSG_HDRLEN + 4..len])),
                _ => {}
            }
            off += (len + 3) & !3;
        }
    }
}

/// Deletes one entry by its original tuple; `false` when it was gone.
fn delete(sock: &mut Socket, family: u8, key: &[u8]) -> io::Result<bool> {
    let mut msg = Vec::new();
    header(&mut msg, IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK, family);
    msg.extend_from_slice(key);
    finish(&mut msg);
    sock.send(&msg, 0)?;
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut &mut buf[..], 0)?;
    if n >= NLMSG_HDRLEN + 4 && u16::from_ne_bytes(buf[4..6].try_into().unwrap()) == NLMSG_ERROR {
        return match -i32::from_ne_bytes(buf[16..20].try_into().unwrap()) {
            0 => Ok(true),
            nix::libc::ENOENT => Ok(false),
            errno => Err(io::Error::from_raw_os_error(errno)),
        };
    }
    Ok(true)
}

/// The attributes of `b`: (type without flags, payload, the whole attribute).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        if len < 4 || len > b.len() {
            return None;
        }
        let ty = u16::from_ne_bytes([b[2], b[3]]) & NLA_TYPE_MASK;
        let (whole, payload) = (&b[..len], &b[4..len]);
        b = &b[((len + 3) & !3).min(b.len())..];
        Some((ty, payload, whole))
    })
}

/// Decodes one `IPCTNL_MSG_CT_NEW` message's attributes.
fn entry(b: &[u8]) -> Option<Entry> {
    let mut e = Entry { proto: 0, dst: None, dst_port: None, key: Vec::new() };
    let mut found = false;
    for (ty, payload, whole) in attrs(b) {
        match ty {
            CTA_TUPLE_ORIG => {
                found = true;
                e.key.extend_from_slice(whole);
                e.key.resize((e.key.len() + 3) & !3, 0);
                for (t, p, _) in attrs(payload) {
                    match t {
                        CTA_TUPLE_IP => {
                            for (a, v, _) in attrs(p) {
                                e.dst = match (a, v.len()) {
                                    (CTA_IP_V4_DST, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
                                    (CTA_IP_V6_DST, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
                                    _ => e.dst,
                                };
                            }
                        }
                        CTA_TUPLE_PROTO => {
                            for (a, v, _) in attrs(p) {
                                match (a, v.len()) {
                                    (CTA_PROTO_NUM, 1) => e.proto = v[0],
                                    (CTA_PROTO_DST_PORT, 2) => e.dst_port = Some(u16::from_be_bytes([v[0], v[1]])),
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            CTA_ZONE => {
                e.key.extend_from_slice(whole);
                e.key.resize((e.key.len() + 3) & !3, 0);
            }
            _ => {}
        }
    }
    found.then_some(e)
}
