//! Forwarding to the upstream servers: over UDP from sockets opened in
//! the host namespace, each query under a fresh random id; the next server
//! after a silent one; SERVFAIL to the client when none answered in time;
//! the query again over TCP when an answer comes back truncated.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cnm_netns::NetNs;

use crate::answer::{question_end, servfail};
use crate::error::{Error, Result};
use crate::server::Client;

/// How long one upstream server gets before the next is asked.
const TRY: Duration = Duration::from_millis(600);
/// When a client whose query no upstream answered gets SERVFAIL (its own
/// resolver gives up after 5 s).
pub(crate) const GIVE_UP: Duration = Duration::from_millis(1800);
/// Queries in flight at most; beyond, SERVFAIL at once.
const MAX_PENDING: usize = 8192;

/// A query waiting for an upstream answer.
struct Pending {
    client: Arc<Client>,
    peer: SocketAddr,
    /// The query as sent upstream (with our id).
    query: Vec<u8>,
    client_id: [u8; 2],
    /// Index of the server asked last.
    server: usize,
    started: Instant,
    sent: Instant,
    /// The client's UDP size limit.
    limit: usize,
}

/// The upstream side.
pub(crate) struct Forwarder {
    host: NetNs,
    v4: UdpSocket,
    v6: Option<UdpSocket>,
    pending: Mutex<HashMap<u16, Pending>>,
    last_expiry: Mutex<Instant>,
}

impl Forwarder {
    /// Opens the upstream sockets in `host`.
    pub fn new(host: NetNs) -> Result<Forwarder> {
        let open = |addr: &str| -> io::Result<UdpSocket> {
            let s = UdpSocket::bind(addr)?;
            s.set_nonblocking(true)?;
            Ok(s)
        };
        let (v4, v6) = host
            .run(|| (open("0.0.0.0:0"), open("[::]:0")))
            .map_err(|e| Error::netns("open the upstream sockets in the host namespace", e))?;
        let v4 = v4.map_err(|e| Error::io("bind the IPv4 upstream socket", e))?;
        Ok(Forwarder {
            host,
            v4,
            // A host without IPv6 forwards over IPv4 only.
            v6: v6.ok(),
            pending: Mutex::new(HashMap::new()),
            last_expiry: Mutex::new(Instant::now()),
        })
    }

    /// The sockets answers arrive on.
    pub fn sockets(&self) -> impl Iterator<Item = &UdpSocket> {
        std::iter::once(&self.v4).chain(self.v6.as_ref())
    }

    fn socket_for(&self, to: &SocketAddr) -> Option<&UdpSocket> {
        match to {
            SocketAddr::V4(_) => Some(&self.v4),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }

    /// Sends `msg` (a UDP query from `peer` of `client`) upstream.
    pub fn forward(&self, msg: &[u8], client: &Arc<Client>, peer: SocketAddr, limit: usize) {
        if client.upstreams.is_empty() || question_end(msg).is_none() {
            client.reply(&servfail(msg), peer);
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= MAX_PENDING {
            drop(pending);
            client.reply(&servfail(msg), peer);
            return;
        }
        let id = loop {
            let id = crate::random_u16();
            if !pending.contains_key(&id) {
                break id;
            }
        };
        let mut query = msg.to_vec();
        query[..2].copy_from_slice(&id.to_be_bytes());
        let now = Instant::now();
        let p = Pending {
            client: client.clone(),
            peer,
            query,
            client_id: [msg[0], msg[1]],
            server: 0,
            started: now,
            sent: now,
            limit,
        };
        self.send(&p);
        pending.insert(id, p);
    }

    fn send(&self, p: &Pending) {
        let to = p.client.upstreams[p.server];
        if let Some(s) = self.socket_for(&to) {
            // A full socket buffer loses the datagram: the retry covers it.
            let _ = s.send_to(&p.query, to);
        }
    }

    /// Reads every answer waiting on `sock` and passes each to its client.
    pub fn receive(&self, sock: &UdpSocket) {
        let mut buf = [0u8; 65535];
        loop {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => continue,
            };
            let msg = &buf[..n];
            if n < 12 || msg[2] & 0x80 == 0 {
                continue;
            }
            let id = u16::from_be_bytes([msg[0], msg[1]]);
            let p = {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                // Only the server asked, with the same question (an answer
                // from elsewhere, or to another question, is a spoof).
                match pending.get(&id) {
                    Some(p) if p.client.upstreams[p.server] == from && same_question(&p.query, msg) => {
                        pending.remove(&id)
                    }
                    _ => None,
                }
            };
            let Some(p) = p else { continue };
            let mut answer = msg.to_vec();
            answer[..2].copy_from_slice(&p.client_id);
            if msg[2] & 0x02 != 0 {
                self.retry_over_tcp(p, answer);
            } else {
                p.client.reply(&answer, p.peer);
            }
        }
    }

    /// A truncated answer: ask the same server over TCP, on a short-lived
    /// thread, and pass on the whole answer if it fits the client's limit
    /// (else the truncated one, and the client asks us over TCP).
    fn retry_over_tcp(&self, p: Pending, truncated: Vec<u8>) {
        let Ok(host) = self.host.try_clone() else {
            p.client.reply(&truncated, p.peer);
            return;
        };
        let left = GIVE_UP.saturating_sub(p.started.elapsed()).max(Duration::from_millis(200));
        std::thread::spawn(move || {
            let server = p.client.upstreams[p.server];
            let mut query = p.query.clone();
            query[..2].copy_from_slice(&p.client_id);
            match exchange_tcp(&host, server, &query, left) {
                Ok(whole) if whole.len() <= p.limit && whole.len() >= 12 => p.client.reply(&whole, p.peer),
                _ => p.client.reply(&truncated, p.peer),
            }
        });
    }

    /// Retries queries whose server stayed silent and fails those that
    /// waited too long; cheap to call often (runs every 20 ms at most).
    pub fn expire(&self) {
        let now = Instant::now();
        {
            let Ok(mut last) = self.last_expiry.try_lock() else { return };
            if now.duration_since(*last) < Duration::from_millis(20) {
                return;
            }
            *last = now;
        }
        let mut failed = Vec::new();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| {
            if now.duration_since(p.started) >= GIVE_UP {
                failed.push((p.client.clone(), p.peer, p.query.clone(), p.client_id));
                return false;
            }
            if now.duration_since(p.sent) >= TRY {
                p.server = (p.server + 1) % p.client.upstreams.len();
                p.sent = now;
                self.send(p);
            }
            true
        });
        drop(pending);
        for (client, peer, mut query, id) in failed {
            query[..2].copy_from_slice(&id);
            client.reply(&servfail(&query), peer);
        }
    }
}

/// Whether two messages carry the same question (names compared without
/// regard to case).
fn same_question(a: &[u8], b: &[u8]) -> bool {
    match (question_end(a), question_end(b)) {
        (Some(x), Some(y)) => a[12..x].eq_ignore_ascii_case(&b[12..y]),
        _ => false,
    }
}

/// One query over TCP to `server`, from the host namespace (the whole
/// exchange runs on a short-lived thread there).
pub(crate) fn exchange_tcp(host: &NetNs, server: SocketAddr, query: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let run = || -> io::Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut s = TcpStream::connect_timeout(&server, timeout)?;
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        s.set_write_timeout(Some(left()))?;
        let mut out = Vec::with_capacity(query.len() + 2);
        out.extend_from_slice(&(query.len() as u16).to_be_bytes());
        out.extend_from_slice(query);
        s.write_all(&out)?;
        s.set_read_timeout(Some(left()))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len)?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.set_read_timeout(Some(left()))?;
        s.read_exact(&mut answer)?;
        Ok(answer)
    };
    host.run(run).map_err(|e| io::Error::other(e.to_string()))?
}
