//! A prefix watch: one long-lived streaming request to `/v3/watch`, whose
//! chunked answer carries one JSON message per change batch.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cnm_core::store::{Watch, WatchEvent};
use cnm_core::KvEntry;
use serde_json::{json, Value};

use crate::error::Error;
use crate::http::Conn;
use crate::{b64, num};

const PATH: &str = "/v3/watch";

/// A running watch.
pub struct EtcdWatch {
    conn: Conn,
    prefix: String,
    pending: VecDeque<WatchEvent>,
    endpoint: String,
}

impl EtcdWatch {
    /// Starts watching keys in `[key, range_end)` from now on.
    pub fn start(mut conn: Conn, prefix: String, key: &[u8], range_end: &[u8]) -> Result<EtcdWatch, Error> {
        let addr = conn.addr();
        let req = json!({ "create_request": { "key": b64::encode(key), "range_end": b64::encode(range_end) } });
        conn.send(PATH, &serde_json::to_vec(&req).expect("JSON values always encode"))?;
        let (status, length) = conn.read_head(PATH)?;
        if status != 200 || length.is_some() {
            let body = conn.read_body(PATH, length).unwrap_or_default();
            return Err(Error::Protocol(format!("watch refused ({status}): {}", String::from_utf8_lossy(&body))));
        }
        let mut w = EtcdWatch { conn, prefix, pending: VecDeque::new(), endpoint: addr.to_string() };
        // The first message confirms the watch exists; changes after it are
        // delivered.
        let deadline = Instant::now() + crate::http::REQUEST_TIMEOUT;
        loop {
            let msg = w.read_message()?;
            if msg["result"]["created"].as_bool() == Some(true) {
                break;
            }
            w.queue(&msg)?;
            if Instant::now() > deadline {
                return Err(Error::Protocol("watch was never confirmed".into()));
            }
        }
        Ok(w)
    }

    fn read_message(&mut self) -> Result<Value, Error> {
        let chunk = self.conn.read_chunk(PATH)?.ok_or_else(|| Error::Io {
            endpoint: self.endpoint.clone(),
            path: PATH.into(),
            source: std::io::ErrorKind::UnexpectedEof.into(),
        })?;
        let v: Value = serde_json::from_slice(&chunk)
            .map_err(|e| Error::Protocol(format!("watch message: {e}: {}", String::from_utf8_lossy(&chunk))))?;
        if let Some(err) = v.get("error") {
            return Err(Error::Server {
                endpoint: self.endpoint.clone(),
                path: PATH.into(),
                code: num(&err["grpc_code"]),
                message: err["message"].as_str().unwrap_or("watch failed").to_string(),
            });
        }
        if v["result"]["canceled"].as_bool() == Some(true) {
            let reason = v["result"]["cancel_reason"].as_str().unwrap_or("no reason").to_string();
            return Err(Error::Protocol(format!("etcd cancelled the watch: {reason}")));
        }
        Ok(v)
    }

    fn queue(&mut self, msg: &Value) -> Result<(), Error> {
        for ev in msg["result"]["events"].as_array().into_iter().flatten() {
            let kv = &ev["kv"];
            let key = b64::decode(kv["key"].as_str().unwrap_or(""))
                .ok_or_else(|| Error::Protocol("watch key is not base64".into()))?;
            let key = String::from_utf8_lossy(&key);
            let key = key.strip_prefix(&self.prefix).unwrap_or(&key).to_string();
            if ev["type"].as_str() == Some("DELETE") {
                self.pending.push_back(WatchEvent::Delete { key });
            } else {
                let value = b64::decode(kv["value"].as_str().unwrap_or(""))
                    .ok_or_else(|| Error::Protocol("watch value is not base64".into()))?;
                self.pending.push_back(WatchEvent::Put(KvEntry {
                    key,
                    value,
                    revision: crate::revision(&kv["mod_revision"], "kv.mod_revision")?,
                }));
            }
        }
        Ok(())
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
            let ready = self.conn.wait_readable(left).map_err(|e| crate::store_err("watch", "", e))?;
            if !ready {
                return Ok(None);
            }
            let msg = self.read_message().map_err(|e| crate::store_err("watch", "", e))?;
            self.queue(&msg).map_err(|e| crate::store_err("watch", "", e))?;
            if self.pending.is_empty() && Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }
}
