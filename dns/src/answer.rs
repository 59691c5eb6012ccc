//! One query in, one decision out: an answer from the records, a
//! forward to the upstream servers, or nothing (no I/O here).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use simple_dns::rdata::{RData, A, AAAA, OPT, PTR};
use simple_dns::{
    Name, Packet, PacketFlag, Question, ResourceRecord, SimpleDnsError, CLASS, QCLASS, QTYPE, RCODE, TYPE,
};

use crate::records::Records;

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Not a local name: ask the upstream servers.
    Forward,
    /// Not a query at all (too short, a response): ignore it.
    Drop,
}

/// The TTL of local answers (Docker's).
const TTL: u32 = 600;
/// What a UDP answer may take without EDNS0 (RFC 1035).
pub(crate) const UDP_MIN: usize = 512;
/// The largest UDP answer we send whatever the client offers (the EDNS
/// size that avoids IP fragmentation, DNS flag day 2020).
const UDP_MAX: usize = 1232;

/// The size limit of an answer to `query` over UDP: 512 bytes, or the
/// client's EDNS0 size up to 1232.
pub(crate) fn udp_limit(packet: &Packet<'_>) -> usize {
    packet.opt().map_or(UDP_MIN, |o| usize::from(o.udp_packet_size).clamp(UDP_MIN, UDP_MAX))
}

/// Decides what to do with `msg` from sandbox `asker` (its id). `tcp`:
/// the answer may be as large as it needs; `turn` rotates the order of
/// several addresses (round robin).
pub(crate) fn answer(msg: &[u8], records: &Records, asker: &str, tcp: bool, turn: usize) -> Reply {
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        return Reply::Drop;
    }
    let packet =
        match Packet::parse(msg) {
            Ok(p) => p,
            // A well-formed query of a type or class this parser does not
            // know is for the upstream servers to answer.
            Err(
                SimpleDnsError::InvalidQType(_) | SimpleDnsError::InvalidQClass(_) | SimpleDnsError::InvalidClass(_),
            ) if question_end(msg).is_some() => return Reply::Forward,
            Err(_) => return Reply::Answer(header_only(msg, RCODE::FormatError)),
        };
    if (msg[2] >> 3) & 0x0f != 0 {
        return Reply::Answer(header_only(msg, RCODE::NotImplemented));
    }
    let [q] = &packet.questions[..] else { return Reply::Answer(header_only(msg, RCODE::FormatError)) };
    if q.qclass != QCLASS::CLASS(CLASS::IN) || !records.knows(asker) {
        return Reply::Forward;
    }
    let name = q.qname.to_string().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let mut reply = reply_to(&packet, q);
    let local = {
        match q.qtype {
            QTYPE::TYPE(TYPE::PTR) => match reverse_name(name).and_then(|a| records.reverse(asker, a)) {
                Some(target) => match Name::new(target) {
                    Ok(target) => {
                        let rdata = RData::PTR(PTR(target.into_owned()));
                        reply.answers.push(ResourceRecord::new(q.qname.clone(), CLASS::IN, TTL, rdata));
                        true
                    }
                    Err(_) => false,
                },
                None => false,
            },
            qtype => match records.lookup(asker, name) {
                Some(found) => {
                    let want = |t: TYPE| qtype == QTYPE::TYPE(t) || qtype == QTYPE::ANY;
                    if want(TYPE::A) {
                        for a in rotated(&found.v4, turn) {
                            reply.answers.push(ResourceRecord::new(q.qname.clone(), CLASS::IN, TTL, a4(*a)));
                        }
                    }
                    if want(TYPE::AAAA) {
                        for a in rotated(&found.v6, turn) {
                            reply.answers.push(ResourceRecord::new(q.qname.clone(), CLASS::IN, TTL, a6(*a)));
                        }
                    }
                    // A local name without records of this type: no data,
                    // and nothing to ask upstream.
                    true
                }
                None => false,
            },
        }
    };
    if !local {
        return Reply::Forward;
    }
    let limit = if tcp { usize::from(u16::MAX) } else { udp_limit(&packet) };
    match encode_within(&mut reply, limit) {
        Some(bytes) => Reply::Answer(bytes),
        None => Reply::Answer(header_only(msg, RCODE::ServerFailure)),
    }
}

fn a4(a: Ipv4Addr) -> RData<'static> {
    RData::A(A { address: u32::from(a) })
}

fn a6(a: Ipv6Addr) -> RData<'static> {
    RData::AAAA(AAAA { address: u128::from(a) })
}

/// `list` starting at `turn % len`.
fn rotated<T>(list: &[T], turn: usize) -> impl Iterator<Item = &T> {
    let k = if list.is_empty() { 0 } else { turn % list.len() };
    list[k..].iter().chain(&list[..k])
}

/// The reply skeleton: same id, RD copied, RA set, the question, and an
/// OPT record when the query had one.
fn reply_to<'a>(query: &Packet<'_>, q: &Question<'a>) -> Packet<'a> {
    let mut reply = Packet::new_reply(query.id());
    let mut flags = PacketFlag::RECURSION_AVAILABLE;
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        flags |= PacketFlag::RECURSION_DESIRED;
    }
    reply.set_flags(flags);
    reply.questions.push(q.clone());
    if query.opt().is_some() {
        *reply.opt_mut() = Some(OPT { opt_codes: Vec::new(), udp_packet_size: UDP_MAX as u16, version: 0 });
    }
    reply
}

/// Encodes `reply`; when it exceeds `limit`, drops answers until it fits
/// and sets TC (the client then asks again over TCP).
fn encode_within(reply: &mut Packet<'_>, limit: usize) -> Option<Vec<u8>> {
    loop {
        let bytes = reply.build_bytes_vec_compressed().ok()?;
        if bytes.len() <= limit {
            return Some(bytes);
        }
        reply.set_flags(PacketFlag::TRUNCATION);
        // Dropping the additional section first, then answers from the end.
        if reply.answers.pop().is_none() && reply.opt_mut().take().is_none() {
            return None;
        }
    }
}

/// A reply of the header alone (FORMERR, NOTIMP, SERVFAIL …) to a query
/// of at least 12 bytes: its id, opcode and RD, no records.
pub(crate) fn header_only(msg: &[u8], rcode: RCODE) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[..2].copy_from_slice(&msg[..2]);
    out[2] = 0x80 | (msg[2] & 0x79);
    out[3] = 0x80 | (rcode as u8 & 0x0f);
    out
}

/// A SERVFAIL that repeats the query's question (what a resolver whose
/// upstream stayed silent answers).
pub(crate) fn servfail(msg: &[u8]) -> Vec<u8> {
    let Some(end) = question_end(msg) else { return header_only(msg, RCODE::ServerFailure) };
    let mut out = header_only(msg, RCODE::ServerFailure);
    out[5] = 1;
    out.extend_from_slice(&msg[12..end]);
    out
}

/// Where the (first and only) question of `msg` ends, when the header says
/// one question and its name is well formed (no compression in a question).
pub(crate) fn question_end(msg: &[u8]) -> Option<usize> {
    if msg.len() < 12 || msg[4..6] != [0, 1] {
        return None;
    }
    let mut at = 12;
    loop {
        let len = usize::from(*msg.get(at)?);
        if len & 0xc0 != 0 {
            return None;
        }
        at += 1 + len;
        if len == 0 {
            break;
        }
    }
    (at + 4 <= msg.len() && at - 12 <= 255).then_some(at + 4)
}

/// The address of a reverse name (`4.3.2.1.in-addr.arpa`, or 32 nibbles
/// under `ip6.arpa`).
fn reverse_name(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let parts: Vec<&str> = v4.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        for (i, p) in parts.iter().rev().enumerate() {
            if p.is_empty() || p.len() > 3 || (p.len() > 1 && p.starts_with('0')) {
                return None;
            }
            octets[i] = p.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = v6.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut value: u128 = 0;
    for n in nibbles.iter().rev() {
        let [c] = n.as_bytes() else { return None };
        value = (value << 4) | u128::from((*c as char).to_digit(16)?);
    }
    Some(IpAddr::V6(Ipv6Addr::from(value)))
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::support as tests_support;
