//! DNS over TCP from a sandbox: length-prefixed queries on one connection,
//! answered in order; forwarded ones go upstream over TCP too.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use cnm_netns::NetNs;

use crate::answer::{answer, servfail, Reply};
use crate::forward::{exchange_tcp, GIVE_UP};
use crate::records::Records;
use crate::server::Client;

/// How long an idle connection stays open.
const IDLE: Duration = Duration::from_secs(10);

/// What a connection needs of the server.
pub(crate) struct Ctx<'a> {
    pub records: &'a RwLock<Records>,
    pub host: &'a NetNs,
    pub turn: &'a AtomicUsize,
}

/// Serves one connection until the client closes it, goes idle or sends
/// something that is not DNS.
pub(crate) fn serve(ctx: &Ctx<'_>, client: &Client, mut s: TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(IDLE));
    let _ = s.set_write_timeout(Some(IDLE));
    while let Ok(msg) = read_message(&mut s) {
        let turn = ctx.turn.fetch_add(1, Ordering::Relaxed);
        let reply = answer(&msg, &ctx.records.read().unwrap_or_else(|p| p.into_inner()), &client.sandbox, true, turn);
        let out = match reply {
            Reply::Answer(bytes) => bytes,
            Reply::Forward => forward(ctx.host, client, &msg),
            Reply::Drop => return,
        };
        let mut framed = (out.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        if s.write_all(&framed).is_err() {
            return;
        }
    }
}

fn read_message(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut msg)?;
    Ok(msg)
}

/// Asks the upstream servers in turn until one answers or time is up.
fn forward(host: &NetNs, client: &Client, msg: &[u8]) -> Vec<u8> {
    let started = Instant::now();
    for server in &client.upstreams {
        let left = GIVE_UP.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        if let Ok(a) = exchange_tcp(host, *server, msg, left) {
            if a.len() >= 12 && a[..2] == msg[..2] {
                return a;
            }
        }
    }
    servfail(msg)
}
