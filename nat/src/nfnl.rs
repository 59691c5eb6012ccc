//! Element changes over an nfnetlink socket kept open in the host namespace:
//! one batch (a transaction) per operation, instead of an `nft` process
//! that spends most of its time starting and tearing its socket down.
//! Framing and error parsing are cnm-netns's ([`cnm_netns::nlmsg`]).
//! Only set and map elements of our own table are changed this way; whole
//! rulesets still go through `nft -f`, whose syntax checking is worth its
//! cost there.

use std::io;
use std::time::Duration;

use cnm_netns::nlmsg;
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::nft::{ElementChange, Op};

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_DESTROYSETELEM: u16 = 30;
const NFPROTO_INET: u8 = 1;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;

/// How long to wait for the kernel's answer before giving up.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The kernel refused a batch; nothing of it was applied.
#[derive(Debug)]
pub(crate) struct Refused {
    /// The errno.
    pub errno: i32,
    /// Which change, and the kernel's extended-ACK text if it sent one.
    pub context: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.context, io::Error::from_raw_os_error(self.errno))
    }
}

/// A netfilter netlink socket, bound to the namespace it was opened in.
pub(crate) struct NfSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NfSocket {
    /// Opens the socket in the calling thread's namespace.
    pub(crate) fn open() -> io::Result<NfSocket> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.set_ext_ack(true)?;
        sock.set_cap_ack(true)?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let tv = nix::sys::time::TimeVal::new(TIMEOUT.as_secs() as i64, 0);
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)?;
        // A whole transaction goes in one send: room for the largest request
        // (MAX_HOST_PORTS mappings), beyond the default limit if allowed.
        let room = 16 << 20;
        if nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::SndBufForce, &room).is_err() {
            let _ = nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::SndBuf, &room);
        }
        Ok(NfSocket { sock, seq: 0, buf: vec![0; 64 * 1024] })
    }

    /// Applies `changes` as one transaction: all of them or none.
    pub(crate) fn apply(&mut self, changes: &[ElementChange]) -> io::Result<Result<(), Refused>> {
        if changes.is_empty() {
            return Ok(Ok(()));
        }
        let first = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(512);
        let mut seq = first;
        batch_marker(&mut msg, NFNL_MSG_BATCH_BEGIN, seq);
        for c in changes {
            seq = seq.wrapping_add(1);
            element_message(&mut msg, c, seq);
        }
        seq = seq.wrapping_add(1);
        batch_marker(&mut msg, NFNL_MSG_BATCH_END, seq);
        self.seq = seq;
        self.sock.send(&msg, 0)?;

        // One answer (ACK or error) per change; errors are reported after
        // the whole batch was looked at, and the batch then aborted.
        let mut pending = changes.len();
        let mut refused: Option<Refused> = None;
        while pending > 0 {
            let n = self.sock.recv(&mut &mut self.buf[..], 0)?;
            let mut rest = &self.buf[..n];
            // A malformed datagram ends the scan of this one; what is still
            // pending times out.
            while let Ok(Some((h, payload, next))) = nlmsg::next_message(rest) {
                rest = next;
                // Answers to an earlier, timed-out batch are not ours.
                if h.seq.wrapping_sub(first) > seq.wrapping_sub(first) {
                    continue;
                }
                if h.kind == nlmsg::NLMSG_DONE {
                    pending = 0;
                    continue;
                }
                if h.kind != nlmsg::NLMSG_ERROR {
                    continue;
                }
                let Ok((err, text)) = nlmsg::error_status(payload, h.flags) else { continue };
                if h.seq != first && h.seq != seq {
                    pending = pending.saturating_sub(1);
                }
                if err != 0 && h.seq == first {
                    // The batch as a whole was refused (or its commit
                    // failed): no further answers are owed.
                    pending = 0;
                }
                if err != 0 && refused.is_none() {
                    refused = Some(Self::refusal(changes, h.seq.wrapping_sub(first), -err, text));
                }
            }
        }
        Ok(refused.map_or(Ok(()), Err))
    }

    /// What the kernel refused: the `index`-th message of the batch (the
    /// changes start at 1), with its extended-ACK text.
    fn refusal(changes: &[ElementChange], index: u32, errno: i32, text: Option<String>) -> Refused {
        let mut context = match (index as usize).checked_sub(1).and_then(|i| changes.get(i)) {
            Some(c) => format!("{:?} element inet {} {}", c.op, c.table, c.set).to_lowercase(),
            None => "nftables transaction".to_string(),
        };
        if let Some(text) = text {
            context = format!("{context} ({text})");
        }
        Refused { errno, context }
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_ne_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_ne_bytes());
}

/// Starts a message; returns where its length goes.
fn begin(out: &mut Vec<u8>, ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> usize {
    let at = out.len();
    put_u32(out, 0);
    put_u16(out, ty);
    put_u16(out, flags);
    put_u32(out, seq);
    put_u32(out, 0);
    // struct nfgenmsg: family, version, resource id (big endian).
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    at
}

fn finish(out: &mut [u8], at: usize) {
    let len = (out.len() - at) as u32;
    out[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

fn batch_marker(out: &mut Vec<u8>, ty: u16, seq: u32) {
    let at = begin(out, ty, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES);
    finish(out, at);
}

/// Appends an attribute, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    // Callers keep attributes small (see nft::ELEMENTS_PER_MESSAGE).
    assert!(payload.len() <= usize::from(u16::MAX) - 4, "netlink attribute of {} bytes", payload.len());
    put_u16(out, (4 + payload.len()) as u16);
    put_u16(out, ty);
    out.extend_from_slice(payload);
    out.resize((out.len() + 3) & !3, 0);
}

/// Starts a nested attribute; returns where its length goes.
fn nest(out: &mut Vec<u8>, ty: u16) -> usize {
    let at = out.len();
    put_u16(out, 0);
    put_u16(out, ty | NLA_F_NESTED);
    at
}

fn end_nest(out: &mut [u8], at: usize) {
    let len = u16::try_from(out.len() - at).expect("nested attributes are kept under 64 KiB");
    out[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` for one set.
fn element_message(out: &mut Vec<u8>, c: &ElementChange, seq: u32) {
    let (msg, flags) = match c.op {
        Op::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
        Op::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
        Op::Destroy => (NFT_MSG_DESTROYSETELEM, NLM_F_REQUEST | NLM_F_ACK),
    };
    let at = begin(out, (NFNL_SUBSYS_NFTABLES << 8) | msg, flags, seq, NFPROTO_INET, 0);
    attr(out, NFTA_SET_ELEM_LIST_TABLE, &cstr(c.table));
    attr(out, NFTA_SET_ELEM_LIST_SET, &cstr(c.set));
    let list = nest(out, NFTA_SET_ELEM_LIST_ELEMENTS);
    for (key, value) in &c.elements {
        let el = nest(out, NFTA_LIST_ELEM);
        let k = nest(out, NFTA_SET_ELEM_KEY);
        attr(out, NFTA_DATA_VALUE, &key.to_bytes());
        end_nest(out, k);
        if let (Op::Add, Some(v)) = (c.op, value) {
            let d = nest(out, NFTA_SET_ELEM_DATA);
            attr(out, NFTA_DATA_VALUE, &v.to_bytes());
            end_nest(out, d);
        }
        end_nest(out, el);
    }
    end_nest(out, list);
    finish(out, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::{Concat, Field};

    #[test]
    fn a_batch_has_begin_changes_and_end_with_consistent_lengths() {
        let c = ElementChange {
            op: Op::Add,
            table: "cnm",
            set: "dnat4_any",
            elements: vec![(
                Concat(vec![Field::Proto(cnm_core::Protocol::Tcp), Field::Port(8080)]),
                Some(Concat(vec![Field::Addr("172.18.0.2".parse().unwrap()), Field::Port(80)])),
            )],
        };
        let mut out = Vec::new();
        batch_marker(&mut out, NFNL_MSG_BATCH_BEGIN, 1);
        element_message(&mut out, &c, 2);
        batch_marker(&mut out, NFNL_MSG_BATCH_END, 3);
        let mut off = 0;
        let mut types = Vec::new();
        while off < out.len() {
            let len = u32::from_ne_bytes(out[off..off + 4].try_into().unwrap()) as usize;
            types.push(u16::from_ne_bytes(out[off + 4..off + 6].try_into().unwrap()));
            assert_eq!(len % 4, 0);
            off += len;
        }
        assert_eq!(off, out.len());
        assert_eq!(types, vec![0x10, 0x0a0c, 0x11]);
        // The key: TCP padded to 4 bytes, port 8080 big endian padded to 4.
        let key = [6u8, 0, 0, 0, 0x1f, 0x90, 0, 0];
        assert!(out.windows(8).any(|w| w == key));
        // The value: 172.18.0.2, port 80.
        let value = [172u8, 18, 0, 2, 0, 80, 0, 0];
        assert!(out.windows(8).any(|w| w == value));
    }
}
