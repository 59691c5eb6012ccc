//! The rtnetlink transport: one socket, requests with ACKs, dumps, extended
//! ACK messages and `NLM_F_DUMP_INTR` retries. Framing of replies is done
//! here rather than by netlink-packet-core, because that crate drops the
//! extended-ACK attributes the kernel sends with an error.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;

use netlink_packet_core::NetlinkDeserializable;

const NLMSG_HDR_LEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_OFFS: u16 = 2;
const NLMSGERR_ATTR_MISS_TYPE: u16 = 5;

/// How often a dump the kernel marked as interrupted is started again.
const DUMP_RETRIES: usize = 10;

/// What a transaction failed with, before the caller adds its context.
#[derive(Debug)]
pub(crate) enum NlError {
    /// The kernel answered with an errno and maybe an extended-ACK text.
    Kernel(Errno, Option<String>),
    /// send/recv failed.
    Io(std::io::Error),
    /// A reply could not be decoded.
    Decode(String),
}

pub(crate) type NlResult<T> = Result<T, NlError>;

/// One rtnetlink socket. Not thread-safe by itself; [`crate::Handle`] wraps it
/// in a mutex.
pub(crate) struct NlSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    send_buf: Vec<u8>,
}

impl NlSocket {
    /// Opens a socket in the calling thread's namespace; it stays bound to that
    /// namespace for life.
    pub(crate) fn open() -> std::io::Result<NlSocket> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.set_ext_ack(true)?;
        // Errors echo only the request's header, not the whole request.
        sock.set_cap_ack(true)?;
        // Lets the kernel filter dumps by the header fields we set (ifindex …).
        let _ = sock.set_netlink_get_strict_chk(true);
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(NlSocket { sock, seq: 0, buf: vec![0; 64 * 1024], send_buf: Vec::with_capacity(4096) })
    }

    /// Sends a request (a change, or a get that is not a dump) and collects
    /// whatever the kernel answers before its ACK: the object of a get, or
    /// the echo of a change made with `NLM_F_ECHO`.
    pub(crate) fn transact(&mut self, msg: RouteNetlinkMessage, flags: u16) -> NlResult<Vec<RouteNetlinkMessage>> {
        let seq = self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        self.collect(seq).map(|(msgs, _)| msgs)
    }

    /// Dumps a table, starting again when the kernel says the dump was
    /// interrupted by a concurrent change (`NLM_F_DUMP_INTR`).
    pub(crate) fn dump(&mut self, msg: RouteNetlinkMessage) -> NlResult<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_RETRIES {
            let seq = self.send(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP)?;
            let (msgs, interrupted) = self.collect(seq)?;
            if !interrupted {
                return Ok(msgs);
            }
            tracing::debug!("netlink dump interrupted by a concurrent change; retrying");
        }
        Err(NlError::Kernel(Errno::EINTR, Some(format!("dump interrupted {DUMP_RETRIES} times in a row"))))
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> NlResult<u32> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        self.send_buf.clear();
        self.send_buf.resize(packet.buffer_len(), 0);
        packet.serialize(&mut self.send_buf);
        let sent = self.sock.send(&self.send_buf, 0).map_err(NlError::Io)?;
        if sent != self.send_buf.len() {
            return Err(NlError::Io(std::io::Error::other("short netlink send")));
        }
        Ok(self.seq)
    }

    /// Reads replies to `seq` until the ACK (or, for a dump, `NLMSG_DONE`).
    /// Returns the decoded messages and whether any carried `NLM_F_DUMP_INTR`.
    fn collect(&mut self, seq: u32) -> NlResult<(Vec<RouteNetlinkMessage>, bool)> {
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let n = self.recv()?;
            if scan_datagram(&self.buf[..n], seq, &mut out, &mut interrupted)? {
                return Ok((out, interrupted));
            }
        }
    }

    /// Receives one datagram, growing the buffer when it would be truncated.
    fn recv(&mut self) -> NlResult<usize> {
        loop {
            let peek = nix::sys::socket::recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.sock),
                &mut [],
                nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_TRUNC,
            );
            match peek {
                Ok(size) if size > self.buf.len() => self.buf.resize(size.next_power_of_two(), 0),
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(NlError::Io(e.into())),
            }
            match nix::sys::socket::recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.sock),
                &mut self.buf,
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(NlError::Io(e.into())),
            }
        }
    }
}

/// Decodes the messages of one received datagram that answer `seq` into
/// `out`, noting `NLM_F_DUMP_INTR`. Returns `true` once the final ACK or
/// `NLMSG_DONE` was seen, or the kernel's error.
fn scan_datagram(
    mut buf: &[u8],
    seq: u32,
    out: &mut Vec<RouteNetlinkMessage>,
    interrupted: &mut bool,
) -> NlResult<bool> {
    while buf.len() >= NLMSG_HDR_LEN {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        let flags = u16::from_ne_bytes(buf[6..8].try_into().unwrap());
        let mseq = u32::from_ne_bytes(buf[8..12].try_into().unwrap());
        if len < NLMSG_HDR_LEN || len > buf.len() {
            return Err(NlError::Decode(format!("message length {len} out of bounds")));
        }
        let payload = &buf[NLMSG_HDR_LEN..len];
        buf = &buf[((len + 3) & !3).min(buf.len())..];
        if mseq != seq {
            // A late reply to an earlier request that failed half-way.
            continue;
        }
        if flags & NLM_F_DUMP_INTR != 0 {
            *interrupted = true;
        }
        let (code, ext) = match ty {
            NLMSG_NOOP => continue,
            NLMSG_ERROR => parse_error(payload, flags)?,
            NLMSG_DONE => parse_done(payload, flags),
            _ => {
                let mut h = NetlinkHeader::default();
                h.message_type = ty;
                h.flags = flags;
                h.sequence_number = mseq;
                h.length = len as u32;
                match RouteNetlinkMessage::deserialize(&h, payload) {
                    Ok(m) => out.push(m),
                    // Skip what this version of netlink-packet-route cannot
                    // parse rather than fail a whole dump.
                    Err(e) => tracing::debug!("skipping undecodable netlink message type {ty}: {e}"),
                }
                continue;
            }
        };
        return if code == 0 { Ok(true) } else { Err(NlError::Kernel(Errno::from_raw(-code), ext)) };
    }
    Ok(false)
}

/// Parses an `NLMSG_ERROR` payload: the errno (0 for an ACK) and the
/// extended-ACK text after the echoed request header.
fn parse_error(payload: &[u8], flags: u16) -> NlResult<(i32, Option<String>)> {
    if payload.len() < 4 + NLMSG_HDR_LEN {
        return Err(NlError::Decode("truncated error message".into()));
    }
    let code = i32::from_ne_bytes(payload[0..4].try_into().unwrap());
    if flags & NLM_F_ACK_TLVS == 0 {
        return Ok((code, None));
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDR_LEN
    } else {
        (u32::from_ne_bytes(payload[4..8].try_into().unwrap()) as usize + 3) & !3
    };
    let tlvs = payload.get(4 + echoed..).unwrap_or(&[]);
    Ok((code, parse_ext_ack(tlvs)))
}

/// Parses an `NLMSG_DONE` payload: a dump's final status and extended ACK.
fn parse_done(payload: &[u8], flags: u16) -> (i32, Option<String>) {
    let Some(code) = payload.get(0..4) else { return (0, None) };
    let code = i32::from_ne_bytes(code.try_into().unwrap());
    let ext = if flags & NLM_F_ACK_TLVS != 0 { parse_ext_ack(&payload[4..]) } else { None };
    (code, ext)
}

/// Extracts the human-readable parts of extended-ACK attributes.
fn parse_ext_ack(mut tlvs: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let ty = u16::from_ne_bytes([tlvs[2], tlvs[3]]) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            break;
        }
        let value = &tlvs[4..len];
        match ty {
            NLMSGERR_ATTR_MSG => {
                let text = value.split(|&c| c == 0).next().unwrap_or(&[]);
                parts.push(String::from_utf8_lossy(text).into_owned());
            }
            NLMSGERR_ATTR_MISS_TYPE if value.len() >= 4 => {
                parts.push(format!("missing attribute type {}", u32::from_ne_bytes(value[..4].try_into().unwrap())));
            }
            NLMSGERR_ATTR_OFFS => {}
            _ => {}
        }
        tlvs = &tlvs[((len + 3) & !3).min(tlvs.len())..];
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext_ack_message_is_extracted() {
        let mut tlv = Vec::new();
        let text = b"Unknown device type\0";
        tlv.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        tlv.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        tlv.extend_from_slice(text);
        while tlv.len() % 4 != 0 {
            tlv.push(0);
        }
        let mut payload = (-95i32).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; NLMSG_HDR_LEN]);
        payload.extend_from_slice(&tlv);
        let (code, ext) = parse_error(&payload, NLM_F_CAPPED | NLM_F_ACK_TLVS).unwrap();
        assert_eq!(code, -95);
        assert_eq!(ext.as_deref(), Some("Unknown device type"));
    }

    fn header(len: usize, ty: u16, flags: u16, seq: u32) -> Vec<u8> {
        let mut h = (len as u32).to_ne_bytes().to_vec();
        h.extend_from_slice(&ty.to_ne_bytes());
        h.extend_from_slice(&flags.to_ne_bytes());
        h.extend_from_slice(&seq.to_ne_bytes());
        h.extend_from_slice(&0u32.to_ne_bytes());
        h
    }

    #[test]
    fn interrupted_dump_is_noticed_and_stale_replies_skipped() {
        // An RTM_NEWLINK (type 16) flagged NLM_F_DUMP_INTR, a stale message
        // of another sequence number, then NLMSG_DONE.
        let link = netlink_packet_route::link::LinkMessage::default();
        let mut body = vec![0u8; netlink_packet_core::Emitable::buffer_len(&link)];
        netlink_packet_core::Emitable::emit(&link, &mut body);
        let mut dgram = header(NLMSG_HDR_LEN + body.len(), 16, NLM_F_DUMP_INTR | 2, 7);
        dgram.extend_from_slice(&body);
        dgram.extend(header(NLMSG_HDR_LEN + body.len(), 16, 2, 6));
        dgram.extend_from_slice(&body);
        dgram.extend(header(NLMSG_HDR_LEN + 4, NLMSG_DONE, 2, 7));
        dgram.extend_from_slice(&0i32.to_ne_bytes());
        let (mut out, mut intr) = (Vec::new(), false);
        assert!(scan_datagram(&dgram, 7, &mut out, &mut intr).unwrap());
        assert_eq!(out.len(), 1);
        assert!(intr);
    }

    #[test]
    fn a_dump_error_in_done_is_reported() {
        let mut dgram = header(NLMSG_HDR_LEN + 4, NLMSG_DONE, 2, 3);
        dgram.extend_from_slice(&(-(Errno::EINVAL as i32)).to_ne_bytes());
        let (mut out, mut intr) = (Vec::new(), false);
        assert!(matches!(scan_datagram(&dgram, 3, &mut out, &mut intr), Err(NlError::Kernel(Errno::EINVAL, None))));
    }

    #[test]
    fn truncated_error_is_a_decode_error() {
        assert!(matches!(parse_error(&[0, 0, 0], 0), Err(NlError::Decode(_))));
    }

    #[test]
    fn garbage_tlvs_do_not_panic() {
        for len in 0..64u8 {
            let junk: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37).wrapping_add(len)).collect();
            let _ = parse_ext_ack(&junk);
        }
    }
}
