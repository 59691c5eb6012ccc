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

use crate::nlmsg;

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
    while let Some((h, payload, rest)) = nlmsg::next_message(buf).map_err(NlError::Decode)? {
        buf = rest;
        if h.seq != seq {
            // A late reply to an earlier request that failed half-way.
            continue;
        }
        if h.flags & NLM_F_DUMP_INTR != 0 {
            *interrupted = true;
        }
        let (code, ext) = match h.kind {
            nlmsg::NLMSG_NOOP => continue,
            nlmsg::NLMSG_ERROR => nlmsg::error_status(payload, h.flags).map_err(NlError::Decode)?,
            nlmsg::NLMSG_DONE => nlmsg::done_status(payload, h.flags),
            kind => {
                let mut header = NetlinkHeader::default();
                header.message_type = kind;
                header.flags = h.flags;
                header.sequence_number = h.seq;
                header.length = h.len as u32;
                match RouteNetlinkMessage::deserialize(&header, payload) {
                    Ok(m) => out.push(m),
                    // Skip what this version of netlink-packet-route cannot
                    // parse rather than fail a whole dump.
                    Err(e) => tracing::debug!("skipping undecodable netlink message type {kind}: {e}"),
                }
                continue;
            }
        };
        return if code == 0 { Ok(true) } else { Err(NlError::Kernel(Errno::from_raw(-code), ext)) };
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nlmsg::HEADER_LEN as NLMSG_HDR_LEN;

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
        dgram.extend(header(NLMSG_HDR_LEN + 4, nlmsg::NLMSG_DONE, 2, 7));
        dgram.extend_from_slice(&0i32.to_ne_bytes());
        let (mut out, mut intr) = (Vec::new(), false);
        assert!(scan_datagram(&dgram, 7, &mut out, &mut intr).unwrap());
        assert_eq!(out.len(), 1);
        assert!(intr);
    }

    #[test]
    fn a_dump_error_in_done_is_reported() {
        let mut dgram = header(NLMSG_HDR_LEN + 4, nlmsg::NLMSG_DONE, 2, 3);
        dgram.extend_from_slice(&(-(Errno::EINVAL as i32)).to_ne_bytes());
        let (mut out, mut intr) = (Vec::new(), false);
        assert!(matches!(scan_datagram(&dgram, 3, &mut out, &mut intr), Err(NlError::Kernel(Errno::EINVAL, None))));
    }
}
