//! A prefix watch: one long-lived streaming request to `/v3/watch`, whose
//! chunked answer carries one JSON message per change batch. When its
//! member goes away, it resumes on another from the revision after the last
//! one it delivered: no event is missed or seen twice. When that revision
//! was compacted meanwhile, it fails, and its user lists everything again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_core::store::{Watch, WatchEvent};
use cnm_core::KvEntry;
use serde_json::{json, Value};

use crate::client::{Client, OP_DEADLINE};
use crate::error::Error;
use crate::http::Conn;
use crate::{b64, num};

const PATH: &str = "/v3/watch";

/// A running watch.
pub struct EtcdWatch {
    client: Arc<Client>,
    conn: Conn,
    key: Vec<u8>,
    range_end: Vec<u8>,
    pending: VecDeque<WatchEvent>,
    /// Every change up to this revision has been queued.
    seen: u64,
}

impl EtcdWatch {
    /// Starts watching keys in `[key, range_end)` from now on.
    pub fn start(client: Arc<Client>, key: &[u8], range_end: &[u8]) -> Result<EtcdWatch, Error> {
        let conn = client.connect_any(Instant::now() + OP_DEADLINE)?;
        let mut w = EtcdWatch {
            client,
            conn,
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            pending: VecDeque::new(),
            seen: 0,
        };
        if let Err(e) = w.create(None) {
            w.client.forget_expired_token(&e);
            return Err(e);
        }
        Ok(w)
    }

    /// Sends the create request (from `start_revision`, or from now) and
    /// waits for etcd to confirm it.
    fn create(&mut self, start_revision: Option<u64>) -> Result<(), Error> {
        let mut req = json!({ "key": b64::encode(&self.key), "range_end": b64::encode(&self.range_end) });
        if let Some(r) = start_revision {
            req["start_revision"] = json!(r.to_string());
        }
        let body = serde_json::to_vec(&json!({ "create_request": req })).expect("JSON values always encode");
        self.conn.send(PATH, &body, self.client.token().as_deref())?;
        let (status, length) = self.conn.read_head(PATH)?;
        if status != 200 || length.is_some() {
            let body = self.conn.read_body(PATH, length).unwrap_or_default();
            return Err(Error::Protocol(format!("watch refused ({status}): {}", String::from_utf8_lossy(&body))));
        }
        // The first message confirms the watch; changes after it follow.
        let deadline = Instant::now() + crate::http::REQUEST_TIMEOUT;
        loop {
            let msg = self.read_message()?;
            if msg["result"]["created"].as_bool() == Some(true) {
                let at = num(&msg["result"]["header"]["revision"]).max(0) as u64;
                // From now on: everything up to the current revision is
                // what the user lists; resumed: everything before the start.
                self.seen = start_revision.map_or(at, |r| r.saturating_sub(1));
                return Ok(());
            }
            self.queue(&msg)?;
            if Instant::now() > deadline {
                return Err(Error::Protocol("watch was never confirmed".into()));
            }
        }
    }

    fn read_message(&mut self) -> Result<Value, Error> {
        let chunk = self.conn.read_chunk(PATH)?.ok_or_else(|| Error::Io {
            endpoint: self.conn.member().to_string(),
            path: PATH.into(),
            source: std::io::ErrorKind::UnexpectedEof.into(),
        })?;
        let v: Value = serde_json::from_slice(&chunk)
            .map_err(|e| Error::Protocol(format!("watch message: {e}: {}", String::from_utf8_lossy(&chunk))))?;
        if let Some(err) = v.get("error") {
            return Err(Error::Server {
                endpoint: self.conn.member().to_string(),
                path: PATH.into(),
                code: num(&err["grpc_code"]),
                message: err["message"].as_str().unwrap_or("watch failed").to_string(),
            });
        }
        if v["result"]["canceled"].as_bool() == Some(true) {
            let compacted = num(&v["result"]["compact_revision"]);
            let reason = v["result"]["cancel_reason"].as_str().unwrap_or("no reason").to_string();
            return Err(match compacted {
                0 => Error::Protocol(format!("etcd cancelled the watch: {reason}")),
                c => Error::Protocol(format!(
                    "the watch's revision {} was compacted (now {c}): list everything again",
                    self.seen + 1
                )),
            });
        }
        Ok(v)
    }

    fn queue(&mut self, msg: &Value) -> Result<(), Error> {
        let prefix = self.client.prefix().to_string();
        for ev in msg["result"]["events"].as_array().into_iter().flatten() {
            let kv = &ev["kv"];
            let key = b64::decode(kv["key"].as_str().unwrap_or(""))
                .ok_or_else(|| Error::Protocol("watch key is not base64".into()))?;
            let key = String::from_utf8_lossy(&key);
            let key = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
            let rev = crate::revision(&kv["mod_revision"], "kv.mod_revision")?;
            // A resumed watch may start inside a revision already delivered.
            if rev <= self.seen {
                continue;
            }
            if ev["type"].as_str() == Some("DELETE") {
                self.pending.push_back(WatchEvent::Delete { key });
            } else {
                let value = b64::decode(kv["value"].as_str().unwrap_or(""))
                    .ok_or_else(|| Error::Protocol("watch value is not base64".into()))?;
                self.pending.push_back(WatchEvent::Put(KvEntry { key, value, revision: rev }));
            }
        }
        // A message holds whole revisions: the last event's is done.
        if let Some(last) = msg["result"]["events"].as_array().and_then(|e| e.last()) {
            self.seen = self.seen.max(num(&last["kv"]["mod_revision"]).max(0) as u64);
        }
        Ok(())
    }

    /// After the member went away: the same watch on another, from the
    /// revision after the last one delivered.
    fn resume(&mut self) -> Result<(), Error> {
        tracing::debug!(member = %self.conn.member(), from = self.seen + 1, "etcd watch resuming");
        self.conn = self.client.connect_any(Instant::now() + OP_DEADLINE)?;
        let created = self.create(Some(self.seen + 1));
        if let Err(e) = &created {
            self.client.forget_expired_token(e);
        }
        created
    }

    /// Waits for the next message and queues its events; `false` on
    /// timeout.
    fn receive(&mut self, left: Duration) -> Result<bool, Error> {
        if !self.conn.wait_readable(left)? {
            return Ok(false);
        }
        let msg = self.read_message()?;
        self.queue(&msg)?;
        Ok(true)
    }
}

impl Watch for EtcdWatch {
    fn next(&mut self, timeout: Duration) -> cnm_core::Result<Option<WatchEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(Some(ev));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.receive(left) {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                Err(e @ (Error::Io { .. } | Error::Connect { .. })) => {
                    tracing::debug!(error = %e, "etcd watch lost its member");
                    self.resume().map_err(|r| crate::store_err("watch", "", r))?;
                }
                Err(e) => return Err(crate::store_err("watch", "", e)),
            }
            if self.pending.is_empty() && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}
