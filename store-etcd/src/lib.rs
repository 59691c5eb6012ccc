#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod b64;
mod error;
mod http;
mod watch;

#[cfg(feature = "testing")]
pub mod testing;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Mutex;
use std::time::Duration;

use cnm_core::store::{validate_key, LeaseId, Watch};
use cnm_core::{Expect, KvEntry, Store};
use serde_json::{json, Value};

pub use error::{Error, ErrorKind};

use http::Conn;

/// A [`Store`] on an etcd v3 server.
pub struct EtcdStore {
    addr: SocketAddr,
    url: String,
    prefix: String,
    conn: Mutex<Option<Conn>>,
    /// The namespace connections are made in (`None`: the caller's).
    netns: Option<cnm_netns::NetNs>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("url", &self.url).field("prefix", &self.prefix).finish()
    }
}

impl EtcdStore {
    /// Connects to `http://host:port[/prefix/]` (also written
    /// `etcd://host:port[/prefix/]`) and checks that etcd answers. Keys go
    /// under the prefix (`/cnm/` when none is given).
    pub fn connect(url: &str) -> Result<EtcdStore, Error> {
        Self::connect_in(url, None)
    }

    /// Like [`EtcdStore::connect`], with every connection (also later
    /// reconnections and watches) made inside `netns`: the host namespace a
    /// controller works in, which need not be the caller's.
    pub fn connect_in(url: &str, netns: Option<&cnm_netns::NetNs>) -> Result<EtcdStore, Error> {
        let bad = |reason: &str| Error::BadUrl { url: url.to_string(), reason: reason.to_string() };
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("etcd://"))
            .ok_or_else(|| bad("must start with http:// or etcd:// (https is not supported)"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/cnm/"),
        };
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| bad(&format!("cannot resolve {hostport:?}: {e}")))?
            .next()
            .ok_or_else(|| bad("no address"))?;
        let mut prefix = if path == "/" { "/cnm/".to_string() } else { path.to_string() };
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let netns = match netns {
            Some(ns) => Some(ns.try_clone().map_err(|e| Error::BadUrl {
                url: url.to_string(),
                reason: format!("cannot use the namespace: {e}"),
            })?),
            None => None,
        };
        let store = EtcdStore { addr, url: format!("http://{addr}"), prefix, conn: Mutex::new(None), netns };
        store.call("/v3/maintenance/status", &json!({}))?;
        Ok(store)
    }

    /// The key prefix in etcd.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// One request and its decoded answer. A kept-alive connection that the
    /// server closed is replaced once, before anything was read from it.
    fn call(&self, path: &str, body: &Value) -> Result<Value, Error> {
        let body = serde_json::to_vec(body).expect("JSON values always encode");
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 0..2 {
            let reused = guard.is_some();
            let conn = match guard.as_mut() {
                Some(c) => c,
                None => guard.insert(self.dial()?),
            };
            let result = conn.send(path, &body).and_then(|()| conn.read_head(path));
            let (status, length) = match result {
                Ok(h) => h,
                Err(e) => {
                    *guard = None;
                    if reused && attempt == 0 && e.kind() == ErrorKind::Unavailable {
                        continue;
                    }
                    return Err(e);
                }
            };
            let answer = match conn.read_body(path, length) {
                Ok(b) => b,
                Err(e) => {
                    *guard = None;
                    return Err(e);
                }
            };
            let v: Value = serde_json::from_slice(&answer)
                .map_err(|e| Error::Protocol(format!("{path}: {e}: {}", String::from_utf8_lossy(&answer))))?;
            if status != 200 || v.get("error").is_some() {
                return Err(Error::Server {
                    endpoint: self.addr.to_string(),
                    path: path.to_string(),
                    code: v.get("code").and_then(Value::as_i64).unwrap_or(i64::from(status)),
                    message: v.get("message").and_then(Value::as_str).unwrap_or("no message").to_string(),
                });
            }
            return Ok(v);
        }
        unreachable!("the loop returns on its second pass")
    }

    /// A new connection, made in the store's namespace.
    fn dial(&self) -> Result<Conn, Error> {
        match &self.netns {
            None => Conn::connect(self.addr),
            Some(ns) => ns.run(|| Conn::connect(self.addr)).map_err(|e| Error::Connect {
                endpoint: self.addr.to_string(),
                source: std::io::Error::other(e.to_string()),
            })?,
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn entry(&self, kv: &Value) -> Result<KvEntry, Error> {
        let key =
            b64::decode(kv["key"].as_str().unwrap_or("")).ok_or_else(|| Error::Protocol("key is not base64".into()))?;
        let key = String::from_utf8_lossy(&key);
        let key = key.strip_prefix(&self.prefix).unwrap_or(&key).to_string();
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
        let v = self.call("/v3/kv/txn", &txn).map_err(|e| store_err("put", key, e))?;
        if v["succeeded"].as_bool() == Some(true) {
            return revision(&v["header"]["revision"], "header.revision").map_err(|e| store_err("put", key, e));
        }
        Err(self.condition_error(key, expect, &v))
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
        Error::LeaseExpired(_) | Error::BadUrl { .. } => e.into(),
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
        format!("etcd at {}{}", self.url, self.prefix)
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
        let w = self
            .dial()
            .and_then(|conn| {
                watch::EtcdWatch::start(conn, self.prefix.clone(), full.as_bytes(), &range_end(full.as_bytes()))
            })
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
