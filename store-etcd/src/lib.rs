#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod b64;
mod client;
mod config;
mod error;
mod http;
mod tls;
mod watch;

#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use cnm_core::store::{validate_key, LeaseId, Watch};
use cnm_core::{Expect, KvEntry, Store};
use serde_json::{json, Value};

pub use config::{Credentials, EtcdConfig, Member, TlsFiles};
pub use error::{Error, ErrorKind};

use client::Client;

/// A [`Store`] on an etcd v3 cluster.
pub struct EtcdStore {
    client: Arc<Client>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("members", &self.client.members()).field("prefix", &self.prefix()).finish()
    }
}

impl EtcdStore {
    /// Connects to `etcd://host:port[,host:port…][/prefix/]` (also
    /// `http://`; `etcds://` for TLS with the system's CAs) and checks that
    /// etcd answers. Keys go under the prefix (`/cnm/` when none is given).
    pub fn connect(url: &str) -> Result<EtcdStore, Error> {
        Self::connect_in(url, None)
    }

    /// Like [`EtcdStore::connect`], with every connection (also later
    /// reconnections and watches) made inside `netns`: the host namespace a
    /// controller works in, which need not be the caller's.
    pub fn connect_in(url: &str, netns: Option<&cnm_netns::NetNs>) -> Result<EtcdStore, Error> {
        Self::open(EtcdConfig::from_url(url)?, netns)
    }

    /// Connects as `config` says (members, TLS files, credentials), in
    /// `netns` (see [`EtcdStore::connect_in`]), and checks that etcd answers
    /// and lets this client read under the prefix (authenticating first
    /// when credentials are given).
    pub fn open(config: EtcdConfig, netns: Option<&cnm_netns::NetNs>) -> Result<EtcdStore, Error> {
        let store = EtcdStore { client: Arc::new(Client::new(config, netns)?) };
        // A read under the prefix: etcd answers, and lets this client in.
        store.range("", json!({ "count_only": true }))?;
        Ok(store)
    }

    /// The key prefix in etcd.
    pub fn prefix(&self) -> &str {
        self.client.prefix()
    }

    /// How many requests this store has sent to etcd (retries on another
    /// member included): what an operation costs in round trips.
    pub fn round_trips(&self) -> u64 {
        self.client.round_trips()
    }

    fn call(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.client.call(path, body)
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix())
    }

    fn entry(&self, kv: &Value) -> Result<KvEntry, Error> {
        let key =
            b64::decode(kv["key"].as_str().unwrap_or("")).ok_or_else(|| Error::Protocol("key is not base64".into()))?;
        let key = String::from_utf8_lossy(&key);
        let key = key.strip_prefix(self.prefix()).unwrap_or(&key).to_string();
        let value = b64::decode(kv["value"].as_str().unwrap_or(""))
            .ok_or_else(|| Error::Protocol("value is not base64".into()))?;
        Ok(KvEntry { key, value, revision: revision(&kv["mod_revision"], "kv.mod_revision")? })
    }

    fn range(&self, prefix: &str, extra: Value) -> Result<Value, Error> {
        let full = self.full(prefix);
        let mut req =
            json!({ "key": b64::encode(full.as_bytes()), "range_end": b64::encode(&range_end(full.as_bytes())) });
        if let (Some(r), Some(e)) = (req.as_object_mut(), extra.as_object()) {
            r.extend(e.clone());
        }
        self.call("/v3/kv/range", &req)
    }

    fn write(&self, key: &str, value: &[u8], expect: Expect, lease: Option<LeaseId>) -> cnm_core::Result<u64> {
        validate_key(key)?;
        let k = b64::encode(self.full(key).as_bytes());
        let mut put = json!({ "key": k, "value": b64::encode(value) });
        if let Some(l) = lease {
            put["lease"] = json!(l.0.to_string());
        }
        let compare = match expect {
            Expect::Any => {
                let v = self.call("/v3/kv/put", &put).map_err(|e| store_err("put", key, e))?;
                return revision(&v["header"]["revision"], "header.revision").map_err(|e| store_err("put", key, e));
            }
            Expect::Absent => json!({ "key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0" }),
            Expect::Revision(r) => {
                json!({ "key": k, "target": "MOD", "result": "EQUAL", "mod_revision": r.to_string() })
            }
        };
        let txn = json!({
            "compare": [compare],
            "success": [{ "request_put": put }],
            "failure": [{ "request_range": { "key": k } }],
        });
        let (v, resent) = self.client.call_resent("/v3/kv/txn", &txn).map_err(|e| store_err("put", key, e))?;
        if v["succeeded"].as_bool() == Some(true) {
            return revision(&v["header"]["revision"], "header.revision").map_err(|e| store_err("put", key, e));
        }
        // A transaction that reached etcd but whose answer was lost (its
        // member died) was sent again to another member, and then failed
        // its compare: the key holding exactly what was written (and its
        // lease) is that first send having succeeded. Writers whose claims
        // must not be confused write values of their own (cnm-ipam writes
        // a random claim into each address's key).
        let current = &v["responses"][0]["response_range"]["kvs"][0];
        let same = current["value"].as_str() == Some(b64::encode(value).as_str())
            && num(&current["lease"]) == lease.map_or(0, |l| l.0);
        if resent && same {
            return revision(&current["mod_revision"], "mod_revision").map_err(|e| store_err("put", key, e));
        }
        Err(self.condition_error(key, expect, &v))
    }

    /// The range requests of `reads`, for a transaction.
    fn range_requests(&self, reads: &[cnm_core::Read<'_>]) -> Vec<Value> {
        reads
            .iter()
            .map(|r| {
                let range = match r {
                    cnm_core::Read::Key(k) => json!({ "key": b64::encode(self.full(k).as_bytes()) }),
                    cnm_core::Read::Prefix(p) => {
                        let full = self.full(p);
                        json!({ "key": b64::encode(full.as_bytes()), "range_end": b64::encode(&range_end(full.as_bytes())) })
                    }
                };
                json!({ "request_range": range })
            })
            .collect()
    }

    /// The entries of a transaction's range answers, `n` of them.
    fn read_answers(&self, responses: &[Value], n: usize) -> cnm_core::Result<Vec<Vec<KvEntry>>> {
        if responses.len() != n {
            return Err(store_err("read", "", Error::Protocol(format!("{} answers to {n} reads", responses.len()))));
        }
        responses
            .iter()
            .map(|r| {
                let kvs = r["response_range"]["kvs"].as_array().cloned().unwrap_or_default();
                kvs.iter().map(|kv| self.entry(kv).map_err(|e| store_err("read", "", e))).collect()
            })
            .collect()
    }

    /// The error of a failed compare, from the range the failure branch read.
    fn condition_error(&self, key: &str, expect: Expect, txn: &Value) -> cnm_core::Error {
        let found = txn["responses"][0]["response_range"]["kvs"][0]["mod_revision"].clone();
        let found = (!found.is_null()).then(|| revision(&found, "mod_revision").unwrap_or(u64::MAX));
        match (expect, found) {
            (Expect::Absent, Some(_)) => cnm_core::Error::AlreadyExists { what: "key", name: key.to_string() },
            (_, None) => cnm_core::Error::NotFound { what: "key", name: key.to_string() },
            (_, Some(have)) => cnm_core::Error::conflict(
                format!("key {key:?}"),
                format!("changed concurrently (expected {expect:?}, found revision {have})"),
            ),
        }
    }
}

/// A revision the gateway must send (as a string, an int64 field): missing,
/// unparsable or not positive is a protocol error, never revision 0 (which
/// a later compare-and-swap would take for "absent").
pub(crate) fn revision(v: &Value, what: &str) -> Result<u64, Error> {
    let n = match v {
        Value::String(s) => s.parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    n.filter(|n| *n > 0).ok_or_else(|| Error::Protocol(format!("the reply's {what} is missing or not a revision: {v}")))
}

/// A JSON number that the gateway may send as a string (int64 fields); the
/// gateway leaves out fields that are zero, so missing is 0.
fn num(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The end of the range of keys starting with `prefix`: the prefix with its
/// last byte incremented (bytes 0xff carried); all keys for an empty one.
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn store_err(op: &'static str, key: &str, e: Error) -> cnm_core::Error {
    match e {
        Error::LeaseExpired(_)
        | Error::BadUrl { .. }
        | Error::TlsFiles { .. }
        | Error::Tls { .. }
        | Error::Auth { .. } => e.into(),
        Error::Unavailable { endpoints, reason } => cnm_core::Error::Unavailable {
            op: format!("store {op} {key:?}"),
            service: format!("etcd at {endpoints}"),
            reason,
        },
        Error::Connect { endpoint, source } | Error::Io { endpoint, source, .. } => cnm_core::Error::Unavailable {
            op: format!("store {op} {key:?}"),
            service: format!("etcd at {endpoint}"),
            reason: source.to_string(),
        },
        other => cnm_core::Error::store(op, key, other),
    }
}

impl Store for EtcdStore {
    fn location(&self) -> String {
        format!("etcd at {}{}", self.client.members(), self.prefix())
    }

    fn get(&self, key: &str) -> cnm_core::Result<Option<KvEntry>> {
        validate_key(key)?;
        let req = json!({ "key": b64::encode(self.full(key).as_bytes()) });
        let v = self.call("/v3/kv/range", &req).map_err(|e| store_err("get", key, e))?;
        match v["kvs"].as_array().and_then(|a| a.first()) {
            Some(kv) => Ok(Some(self.entry(kv).map_err(|e| store_err("get", key, e))?)),
            None => Ok(None),
        }
    }

    fn list(&self, prefix: &str) -> cnm_core::Result<Vec<KvEntry>> {
        let v = self.range(prefix, json!({})).map_err(|e| store_err("list", prefix, e))?;
        let kvs = v["kvs"].as_array().cloned().unwrap_or_default();
        kvs.iter().map(|kv| self.entry(kv).map_err(|e| store_err("list", prefix, e))).collect()
    }

    fn list_keys(&self, prefix: &str) -> cnm_core::Result<Vec<String>> {
        let v = self.range(prefix, json!({ "keys_only": true })).map_err(|e| store_err("list", prefix, e))?;
        let kvs = v["kvs"].as_array().cloned().unwrap_or_default();
        kvs.iter().map(|kv| self.entry(kv).map(|e| e.key).map_err(|e| store_err("list", prefix, e))).collect()
    }

    fn read_many(&self, reads: &[cnm_core::Read<'_>]) -> cnm_core::Result<Vec<Vec<KvEntry>>> {
        // One transaction of ranges: one round trip, one revision.
        let txn = json!({ "success": self.range_requests(reads) });
        let v = self.call("/v3/kv/txn", &txn).map_err(|e| store_err("read", "", e))?;
        let responses = v["responses"].as_array().cloned().unwrap_or_default();
        self.read_answers(&responses, reads.len())
    }

    fn put_while_leased(
        &self,
        key: &str,
        value: &[u8],
        lease: LeaseId,
        holder: &str,
        reads: &[cnm_core::Read<'_>],
    ) -> cnm_core::Result<Option<Vec<Vec<KvEntry>>>> {
        validate_key(key)?;
        let k = b64::encode(self.full(key).as_bytes());
        let put = json!({ "request_put": { "key": k, "value": b64::encode(value), "lease": lease.0.to_string() } });
        let mut success = vec![put];
        success.extend(self.range_requests(reads));
        let compare = json!({
            "key": b64::encode(self.full(holder).as_bytes()),
            "target": "LEASE",
            "result": "EQUAL",
            "lease": lease.0.to_string(),
        });
        let txn = json!({ "compare": [compare], "success": success });
        let v = self.call("/v3/kv/txn", &txn).map_err(|e| store_err("put", key, e))?;
        if v["succeeded"].as_bool() != Some(true) {
            return Ok(None);
        }
        let responses = v["responses"].as_array().cloned().unwrap_or_default();
        self.read_answers(responses.get(1..).unwrap_or_default(), reads.len()).map(Some)
    }

    fn count(&self, prefix: &str) -> cnm_core::Result<usize> {
        let v = self.range(prefix, json!({ "count_only": true })).map_err(|e| store_err("count", prefix, e))?;
        Ok(num(&v["count"]) as usize)
    }

    fn put(&self, key: &str, value: &[u8], expect: Expect) -> cnm_core::Result<u64> {
        self.write(key, value, expect, None)
    }

    fn put_with_lease(&self, key: &str, value: &[u8], expect: Expect, lease: LeaseId) -> cnm_core::Result<u64> {
        self.write(key, value, expect, Some(lease))
    }

    fn delete(&self, key: &str, expect: Expect) -> cnm_core::Result<()> {
        validate_key(key)?;
        let k = b64::encode(self.full(key).as_bytes());
        let compare = match expect {
            Expect::Any | Expect::Absent => {
                let v =
                    self.call("/v3/kv/deleterange", &json!({ "key": k })).map_err(|e| store_err("delete", key, e))?;
                if num(&v["deleted"]) == 0 {
                    return Err(cnm_core::Error::NotFound { what: "key", name: key.to_string() });
                }
                return Ok(());
            }
            Expect::Revision(r) => {
                json!({ "key": k, "target": "MOD", "result": "EQUAL", "mod_revision": r.to_string() })
            }
        };
        let txn = json!({
            "compare": [compare],
            "success": [{ "request_delete_range": { "key": k } }],
            "failure": [{ "request_range": { "key": k } }],
        });
        let v = self.call("/v3/kv/txn", &txn).map_err(|e| store_err("delete", key, e))?;
        if v["succeeded"].as_bool() == Some(true) {
            return Ok(());
        }
        Err(self.condition_error(key, expect, &v))
    }

    fn watch(&self, prefix: &str) -> cnm_core::Result<Box<dyn Watch>> {
        let full = self.full(prefix);
        let w = watch::EtcdWatch::start(self.client.clone(), full.as_bytes(), &range_end(full.as_bytes()))
            .map_err(|e| store_err("watch", prefix, e))?;
        Ok(Box::new(w))
    }

    fn grant_lease(&self, ttl: Duration) -> cnm_core::Result<LeaseId> {
        let secs = ttl.as_secs().max(1);
        let v = self
            .call("/v3/lease/grant", &json!({ "TTL": secs.to_string() }))
            .map_err(|e| store_err("grant_lease", "", e))?;
        let id = num(&v["ID"]);
        if id == 0 {
            return Err(store_err("grant_lease", "", Error::Protocol(format!("no lease id in {v}"))));
        }
        Ok(LeaseId(id))
    }

    fn keep_alive(&self, lease: LeaseId) -> cnm_core::Result<()> {
        let v = self
            .call("/v3/lease/keepalive", &json!({ "ID": lease.0.to_string() }))
            .map_err(|e| store_err("keep_alive", "", e))?;
        // An expired lease is answered without a TTL.
        if num(&v["result"]["TTL"]) <= 0 {
            return Err(Error::LeaseExpired(lease.0).into());
        }
        Ok(())
    }

    fn revoke_lease(&self, lease: LeaseId) -> cnm_core::Result<()> {
        match self.call("/v3/lease/revoke", &json!({ "ID": lease.0.to_string() })) {
            Ok(_) => Ok(()),
            Err(Error::Server { message, .. }) if message.contains("not found") => {
                Err(Error::LeaseExpired(lease.0).into())
            }
            Err(e) => Err(store_err("revoke_lease", "", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_end_covers_the_prefix() {
        assert_eq!(range_end(b"/cnm/a/"), b"/cnm/a0");
        assert_eq!(range_end(b"a\xff"), b"b");
        assert_eq!(range_end(b""), b"\0");
    }

    /// A one-connection fake gateway on loopback: answers the status call,
    /// then `answer` (raw HTTP) to the next request.
    fn fake_gateway(answer: &'static str) -> String {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
            for reply in [ok, answer] {
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                w.write_all(reply.as_bytes()).unwrap();
            }
        });
        format!("http://{addr}")
    }

    #[test]
    fn sizes_and_revisions_from_the_server_are_checked() {
        use cnm_core::Store;
        let cases = [
            ("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n{}", "bad Content-Length"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n{}", "bad Content-Length"),
            ("HTTP/1.1 200 OK\r\n\r\n{}", "no Content-Length"),
            ("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n", "bad chunk size"),
            ("HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"header\":{}}", "header.revision is missing"),
        ];
        for (answer, want) in cases {
            let store = EtcdStore::connect(&fake_gateway(answer)).unwrap();
            let e = store.put("k", b"{}", cnm_core::store::Expect::Any).unwrap_err();
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn bad_urls_are_refused_before_any_connection() {
        for url in ["https://x:2379", "10.0.0.1:2379", "http://no-such-host.invalid:2379"] {
            let e = EtcdStore::connect(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidParameter, "{url}: {e}");
            assert!(e.to_string().contains(url), "{e}");
        }
    }
}
