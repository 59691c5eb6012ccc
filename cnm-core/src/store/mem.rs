//! An in-memory store, for tests and for embedders that keep no state.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{condition_failed, condition_holds, validate_key, Expect, KvEntry, LeaseId, Store, Watch, WatchEvent};
use crate::error::{Error, Result};

#[derive(Default)]
struct Inner {
    data: BTreeMap<String, (Vec<u8>, u64, Option<LeaseId>)>,
    revision: u64,
    leases: HashMap<i64, (Duration, Instant)>,
    next_lease: i64,
    watchers: Vec<(String, Sender<WatchEvent>)>,
}

impl Inner {
    /// Sends the event built by `ev` to every watcher of a prefix of `key`;
    /// nothing is built when nobody watches.
    fn notify(&mut self, key: &str, ev: impl FnOnce() -> WatchEvent) {
        if !self.watchers.iter().any(|(p, _)| key.starts_with(p.as_str())) {
            return;
        }
        let ev = ev();
        self.watchers.retain(|(p, tx)| !key.starts_with(p.as_str()) || tx.send(ev.clone()).is_ok());
    }

    /// Drops expired leases and their keys.
    fn expire(&mut self) {
        if self.leases.is_empty() {
            return;
        }
        let now = Instant::now();
        let dead: Vec<i64> = self.leases.iter().filter(|(_, (_, d))| *d <= now).map(|(id, _)| *id).collect();
        for id in dead {
            self.revoke(id);
        }
    }

    fn revoke(&mut self, id: i64) {
        self.leases.remove(&id);
        let keys: Vec<String> =
            self.data.iter().filter(|(_, v)| v.2 == Some(LeaseId(id))).map(|(k, _)| k.clone()).collect();
        for k in keys {
            self.data.remove(&k);
            self.revision += 1;
            self.notify(&k, || WatchEvent::Delete { key: k.clone() });
        }
    }

    fn put(&mut self, key: &str, value: &[u8], expect: Expect, lease: Option<LeaseId>) -> Result<u64> {
        validate_key(key)?;
        self.expire();
        if let Some(l) = lease {
            if !self.leases.contains_key(&l.0) {
                return Err(Error::NotFound { what: "lease", name: l.0.to_string() });
            }
        }
        // One traversal of the map for the check and the write.
        let entry = self.data.entry(key.to_string());
        let current = match &entry {
            std::collections::btree_map::Entry::Occupied(o) => Some(o.get().1),
            std::collections::btree_map::Entry::Vacant(_) => None,
        };
        if !condition_holds(expect, current) {
            return Err(condition_failed(key, expect, current));
        }
        self.revision += 1;
        let rev = self.revision;
        let value_owned = (value.to_vec(), rev, lease);
        match entry {
            std::collections::btree_map::Entry::Occupied(mut o) => {
                o.insert(value_owned);
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(value_owned);
            }
        }
        self.notify(key, || WatchEvent::Put(KvEntry { key: key.to_string(), value: value.to_vec(), revision: rev }));
        Ok(rev)
    }
}

/// A [`Store`] in memory, with prefix watches and leases. Revisions come from
/// one counter, as in etcd.
#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemStore {
    fn location(&self) -> String {
        "memory".into()
    }

    fn get(&self, key: &str) -> Result<Option<KvEntry>> {
        let mut g = self.lock();
        g.expire();
        Ok(g.data.get(key).map(|(v, r, _)| KvEntry { key: key.to_string(), value: v.clone(), revision: *r }))
    }

    fn list(&self, prefix: &str) -> Result<Vec<KvEntry>> {
        let mut g = self.lock();
        g.expire();
        Ok(g.data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (v, r, _))| KvEntry { key: k.clone(), value: v.clone(), revision: *r })
            .collect())
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        let mut g = self.lock();
        g.expire();
        Ok(g.data
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn count(&self, prefix: &str) -> Result<usize> {
        let mut g = self.lock();
        g.expire();
        Ok(g.data
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .count())
    }

    fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<u64> {
        self.lock().put(key, value, expect, None)
    }

    fn delete(&self, key: &str, expect: Expect) -> Result<()> {
        let mut g = self.lock();
        g.expire();
        let current = g.data.get(key).map(|v| v.1);
        if current.is_none() || !condition_holds(expect, current) || expect == Expect::Absent {
            return Err(condition_failed(key, expect, current));
        }
        g.data.remove(key);
        g.revision += 1;
        g.notify(key, || WatchEvent::Delete { key: key.to_string() });
        Ok(())
    }

    fn watch(&self, prefix: &str) -> Result<Box<dyn Watch>> {
        let (tx, rx) = channel();
        self.lock().watchers.push((prefix.to_string(), tx));
        Ok(Box::new(MemWatch { rx }))
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let mut g = self.lock();
        g.next_lease += 1;
        let id = g.next_lease;
        g.leases.insert(id, (ttl, Instant::now() + ttl));
        Ok(LeaseId(id))
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let mut g = self.lock();
        g.expire();
        match g.leases.get_mut(&lease.0) {
            Some((ttl, deadline)) => {
                *deadline = Instant::now() + *ttl;
                Ok(())
            }
            None => Err(Error::NotFound { what: "lease", name: lease.0.to_string() }),
        }
    }

    fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.lock().revoke(lease.0);
        Ok(())
    }

    fn put_with_lease(&self, key: &str, value: &[u8], expect: Expect, lease: LeaseId) -> Result<u64> {
        self.lock().put(key, value, expect, Some(lease))
    }
}

struct MemWatch {
    rx: Receiver<WatchEvent>,
}

impl Watch for MemWatch {
    fn next(&mut self, timeout: Duration) -> Result<Option<WatchEvent>> {
        match self.rx.recv_timeout(timeout) {
            Ok(ev) => Ok(Some(ev)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Internal("watch ended".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conformance() {
        super::super::conformance::run(&MemStore::new());
    }

    #[test]
    fn watch_and_lease_expiry() {
        let s = MemStore::new();
        let mut w = s.watch("peers/").unwrap();
        let lease = s.grant_lease(Duration::from_millis(100)).unwrap();
        s.put_with_lease("peers/h1", b"{}", Expect::Absent, lease).unwrap();
        s.put("other/x", b"{}", Expect::Any).unwrap();
        assert!(matches!(w.next(Duration::from_millis(50)).unwrap(), Some(WatchEvent::Put(e)) if e.key == "peers/h1"));
        s.keep_alive(lease).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get("peers/h1").unwrap().is_some(), "kept alive");
        std::thread::sleep(Duration::from_millis(120));
        assert!(s.get("peers/h1").unwrap().is_none(), "expired with its lease");
        assert!(
            matches!(w.next(Duration::from_millis(50)).unwrap(), Some(WatchEvent::Delete { key }) if key == "peers/h1")
        );
        assert_eq!(s.keep_alive(lease).unwrap_err().kind(), crate::ErrorKind::NotFound);
    }
}
