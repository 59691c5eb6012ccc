//! Netlink message framing and error parsing, written once for every
//! netlink socket of the workspace (rtnetlink here, nfnetlink in cnm-nat):
//! splitting a datagram into messages, and reading an `NLMSG_ERROR` or
//! `NLMSG_DONE` status with the kernel's extended-ACK text. Bytes in,
//! values out; no I/O.

/// Length of `struct nlmsghdr`.
pub const HEADER_LEN: usize = 16;
/// Message type: nothing.
pub const NLMSG_NOOP: u16 = 1;
/// Message type: an error, or an ACK (errno 0).
pub const NLMSG_ERROR: u16 = 2;
/// Message type: the end of a dump or of a batch.
pub const NLMSG_DONE: u16 = 3;
/// Flag: the dump was interrupted by a concurrent change.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// Flag on an error: only the request's header is echoed.
pub const NLM_F_CAPPED: u16 = 0x100;
/// Flag on an error: extended-ACK attributes follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSGERR_ATTR_MISS_TYPE: u16 = 5;

/// A message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the whole message, header included.
    pub len: usize,
    /// Message type.
    pub kind: u16,
    /// Flags.
    pub flags: u16,
    /// Sequence number.
    pub seq: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A message split off the front of a datagram: its header, its payload,
/// and what follows it (aligned).
pub type Split<'a> = (Header, &'a [u8], &'a [u8]);

/// The first message of `buf`. `Ok(None)` when `buf` holds no more whole
/// header; an error when the header's length is out of bounds.
pub fn next_message(buf: &[u8]) -> Result<Option<Split<'_>>, String> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let h = Header { len: u32_at(buf, 0) as usize, kind: u16_at(buf, 4), flags: u16_at(buf, 6), seq: u32_at(buf, 8) };
    if h.len < HEADER_LEN || h.len > buf.len() {
        return Err(format!("netlink message length {} out of bounds ({} bytes left)", h.len, buf.len()));
    }
    let rest = &buf[((h.len + 3) & !3).min(buf.len())..];
    Ok(Some((h, &buf[HEADER_LEN..h.len], rest)))
}

/// An `NLMSG_ERROR` payload: the (negative) errno, 0 for an ACK, and the
/// extended-ACK text after the echoed request.
pub fn error_status(payload: &[u8], flags: u16) -> Result<(i32, Option<String>), String> {
    if payload.len() < 4 + HEADER_LEN {
        return Err("truncated netlink error message".into());
    }
    let code = u32_at(payload, 0) as i32;
    if flags & NLM_F_ACK_TLVS == 0 {
        return Ok((code, None));
    }
    let echoed = if flags & NLM_F_CAPPED != 0 { HEADER_LEN } else { (u32_at(payload, 4) as usize + 3) & !3 };
    Ok((code, ext_ack(payload.get(4 + echoed..).unwrap_or(&[]))))
}

/// An `NLMSG_DONE` payload: a dump's final status and extended ACK.
pub fn done_status(payload: &[u8], flags: u16) -> (i32, Option<String>) {
    if payload.len() < 4 {
        return (0, None);
    }
    let ext = if flags & NLM_F_ACK_TLVS != 0 { ext_ack(&payload[4..]) } else { None };
    (u32_at(payload, 0) as i32, ext)
}

/// The human-readable parts of extended-ACK attributes.
pub fn ext_ack(mut tlvs: &[u8]) -> Option<String> {
    let mut parts = Vec::new();
    while tlvs.len() >= 4 {
        let len = usize::from(u16_at(tlvs, 0));
        let kind = u16_at(tlvs, 2) & 0x3fff;
        if len < 4 || len > tlvs.len() {
            break;
        }
        let value = &tlvs[4..len];
        match kind {
            NLMSGERR_ATTR_MSG => {
                let text = value.split(|&c| c == 0).next().unwrap_or(&[]);
                parts.push(String::from_utf8_lossy(text).into_owned());
            }
            NLMSGERR_ATTR_MISS_TYPE if value.len() >= 4 => {
                parts.push(format!("missing attribute type {}", u32_at(value, 0)));
            }
            _ => {}
        }
        tlvs = &tlvs[((len + 3) & !3).min(tlvs.len())..];
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut t = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        t.extend_from_slice(&kind.to_ne_bytes());
        t.extend_from_slice(value);
        t.resize((t.len() + 3) & !3, 0);
        t
    }

    #[test]
    fn ext_ack_message_is_extracted_after_a_capped_echo() {
        let mut payload = (-95i32).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; HEADER_LEN]);
        payload.extend(tlv(NLMSGERR_ATTR_MSG, b"Unknown device type\0"));
        let (code, ext) = error_status(&payload, NLM_F_CAPPED | NLM_F_ACK_TLVS).unwrap();
        assert_eq!((code, ext.as_deref()), (-95, Some("Unknown device type")));
        assert_eq!(error_status(&payload, 0).unwrap(), (-95, None));
    }

    #[test]
    fn truncated_or_out_of_bounds_input_is_an_error_not_a_panic() {
        assert!(error_status(&[0, 0, 0], 0).is_err());
        let mut h = 100u32.to_ne_bytes().to_vec();
        h.extend_from_slice(&[0u8; 12]);
        assert!(next_message(&h).is_err());
        assert_eq!(next_message(&h[..8]).unwrap(), None);
        for len in 0..64u8 {
            let junk: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37).wrapping_add(len)).collect();
            let _ = ext_ack(&junk);
            let _ = done_status(&junk, NLM_F_ACK_TLVS);
        }
    }

    #[test]
    fn messages_follow_each_other_aligned() {
        let mut d = Vec::new();
        for (kind, body) in [(16u16, &b"abcde"[..]), (NLMSG_DONE, &[0u8; 4][..])] {
            d.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_ne_bytes());
            d.extend_from_slice(&kind.to_ne_bytes());
            d.extend_from_slice(&0u16.to_ne_bytes());
            d.extend_from_slice(&7u32.to_ne_bytes());
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(body);
            d.resize((d.len() + 3) & !3, 0);
        }
        let (h, payload, rest) = next_message(&d).unwrap().unwrap();
        assert_eq!((h.kind, h.seq, payload), (16, 7, &b"abcde"[..]));
        let (h, _, rest) = next_message(rest).unwrap().unwrap();
        assert_eq!(h.kind, NLMSG_DONE);
        assert!(rest.is_empty());
    }
}
