//! A worker's cache of encoded answers: the same query (all but its id)
//! from the same sandbox gets the same bytes, with its own id and the
//! addresses rotated for round robin. Every change of the records clears
//! it (a generation number), so it never answers with a name that is gone.
//! It exists because parsing and encoding took a third of the server's
//! time under `dnsperf` (see docs/dns.md).

use std::collections::HashMap;

use crate::answer::{answer, question_end, Reply};
use crate::records::Records;

/// Entries at most; a full cache starts over.
const CAPACITY: usize = 4096;

/// One cached answer.
struct Entry {
    /// The sandbox and the query without its id, to tell collisions apart.
    key: Vec<u8>,
    bytes: Vec<u8>,
    /// Where the answer records are, when they can be rotated: offset,
    /// length of each (all equal), count.
    rotate: Option<(usize, usize, usize)>,
}

/// A worker's cache.
#[derive(Default)]
pub(crate) struct Cache {
    generation: u64,
    map: HashMap<u64, Entry>,
}

/// FNV-1a over the sandbox id, the transport and the query without id.
fn hash(asker: &str, tcp: bool, rest: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in asker.as_bytes().iter().chain([&u8::from(tcp)]).chain(rest) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn key(asker: &str, tcp: bool, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(asker.len() + 1 + rest.len());
    k.extend_from_slice(asker.as_bytes());
    k.push(u8::from(tcp));
    k.extend_from_slice(rest);
    k
}

/// Where the answer records of an encoded reply are, if they all have the
/// same length and a compressed owner name (so rotating them is moving
/// fixed-size chunks).
fn layout(bytes: &[u8]) -> Option<(usize, usize, usize)> {
    let count = usize::from(u16::from_be_bytes([*bytes.get(6)?, *bytes.get(7)?]));
    if count < 2 {
        return None;
    }
    let start = question_end(bytes)?;
    let mut len = None;
    let mut at = start;
    for _ in 0..count {
        if bytes.get(at..at + 2)? != [0xc0, 0x0c] {
            return None;
        }
        let rdlen = usize::from(u16::from_be_bytes([*bytes.get(at + 10)?, *bytes.get(at + 11)?]));
        let this = 12 + rdlen;
        if *len.get_or_insert(this) != this || at + this > bytes.len() {
            return None;
        }
        at += this;
    }
    Some((start, len?, count))
}

impl Cache {
    /// [`answer`], through the cache.
    pub fn answer(&mut self, msg: &[u8], records: &Records, asker: &str, tcp: bool, turn: usize) -> Reply {
        if msg.len() < 12 {
            return answer(msg, records, asker, tcp, turn);
        }
        if self.generation != records.generation() {
            self.map.clear();
            self.generation = records.generation();
        }
        let rest = &msg[2..];
        let h = hash(asker, tcp, rest);
        if let Some(e) = self.map.get(&h) {
            if e.key.len() == asker.len() + 1 + rest.len()
                && e.key[..asker.len()] == *asker.as_bytes()
                && e.key[asker.len()] == u8::from(tcp)
                && e.key[asker.len() + 1..] == *rest
            {
                let mut out = e.bytes.clone();
                out[..2].copy_from_slice(&msg[..2]);
                if let Some((start, len, count)) = e.rotate {
                    out[start..start + len * count].rotate_left(len * (turn % count));
                }
                return Reply::Answer(out);
            }
        }
        let reply = answer(msg, records, asker, tcp, turn);
        // A truncated answer holds a rotated subset: not cached (rare, and
        // the client asks again over TCP anyway).
        match &reply {
            Reply::Answer(bytes) if bytes[2] & 0x02 == 0 => self.insert(h, key(asker, tcp, rest), bytes, turn),
            _ => {}
        }
        reply
    }

    fn insert(&mut self, h: u64, key: Vec<u8>, bytes: &[u8], turn: usize) {
        if self.map.len() >= CAPACITY {
            self.map.clear();
        }
        let mut bytes = bytes.to_vec();
        let rotate = layout(&bytes);
        // Stored in turn-0 order: undo this answer's rotation.
        if let Some((start, len, count)) = rotate {
            bytes[start..start + len * count].rotate_right(len * (turn % count));
        }
        self.map.insert(h, Entry { key, bytes, rotate });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::tests_support::{endpoint, query, sandbox};

    #[test]
    fn cached_answers_rotate_and_follow_every_change() {
        let mut r = Records::default();
        let asker = sandbox("c1");
        r.update(&asker, &[endpoint("10.0.0.1", None, &[])]);
        let (c2, c3) = (sandbox("c2"), sandbox("c3"));
        r.update(&c2, &[endpoint("10.0.0.2", None, &["web"])]);
        r.update(&c3, &[endpoint("10.0.0.3", None, &["web"])]);
        let mut cache = Cache::default();
        let q = query("web", simple_dns::TYPE::A, None);
        let direct: Vec<Reply> = (0..4).map(|t| answer(&q, &r, asker.id.as_str(), false, t)).collect();
        for (t, want) in direct.iter().enumerate() {
            // The first call fills the cache, the others hit it.
            assert_eq!(&cache.answer(&q, &r, asker.id.as_str(), false, t), want, "turn {t}");
        }
        let mut other_id = q.clone();
        other_id[..2].copy_from_slice(&[0xab, 0xcd]);
        let Reply::Answer(b) = cache.answer(&other_id, &r, asker.id.as_str(), false, 0) else { panic!() };
        assert_eq!(b[..2], [0xab, 0xcd]);
        // c3 leaves: the cached two-address answer is not used again.
        r.remove(c3.id.as_str());
        assert_eq!(cache.answer(&q, &r, asker.id.as_str(), false, 1), answer(&q, &r, asker.id.as_str(), false, 1));
        // Another sandbox does not get c1's cached answer.
        assert_eq!(cache.answer(&q, &r, "stranger", false, 0), Reply::Forward);
    }
}
