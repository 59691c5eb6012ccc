//! A store that keeps some prefixes in one store and the rest in another.
//! Two uses: on one host, what lives exactly as long as kernel objects
//! (endpoints, sandboxes, address leases) on tmpfs under /run, so a reboot
//! clears it together with what the kernel lost and writes cost no disk
//! flush, and configuration (networks, pools) under /var/lib; in a cluster,
//! what every host shares (global networks, global pools) in etcd and the
//! rest on the host.

use std::sync::Arc;
use std::time::Duration;

use super::{Expect, KvEntry, LeaseId, Store, Watch};
use crate::error::Result;

/// Routes keys by prefix between a durable and a volatile store.
pub struct SplitStore {
    durable: Arc<dyn Store>,
    volatile: Arc<dyn Store>,
    volatile_prefixes: Vec<String>,
    /// Whether leases live in the second store (the shared one).
    leases_in_volatile: bool,
}

impl SplitStore {
    /// Keys starting with one of `volatile_prefixes` go to `volatile`, all
    /// others to `durable`.
    pub fn new(durable: Arc<dyn Store>, volatile: Arc<dyn Store>, volatile_prefixes: Vec<String>) -> SplitStore {
        SplitStore { durable, volatile, volatile_prefixes, leases_in_volatile: false }
    }

    /// A cluster member's store: the keys every host shares
    /// ([`GLOBAL_PREFIXES`](crate::controller::GLOBAL_PREFIXES)), and leases
    /// and watches on them, go to `shared` (etcd); everything else stays in
    /// `host` (typically [`SplitStore::open_state_dirs`]).
    pub fn cluster(host: Arc<dyn Store>, shared: Arc<dyn Store>) -> SplitStore {
        let prefixes = crate::controller::GLOBAL_PREFIXES.iter().map(|s| s.to_string()).collect();
        SplitStore { durable: host, volatile: shared, volatile_prefixes: prefixes, leases_in_volatile: true }
    }

    fn lease_store(&self) -> &dyn Store {
        if self.leases_in_volatile {
            &*self.volatile
        } else {
            &*self.durable
        }
    }

    /// The controller's standard layout: configuration in `state_dir`
    /// (durable, e.g. `/var/lib/cnm`), and under `run_dir/state` (tmpfs, e.g.
    /// `/run/cnm`) everything that lives as long as kernel objects
    /// ([`VOLATILE_PREFIXES`](crate::controller::VOLATILE_PREFIXES)). Share
    /// the result between the controller, IPAM and firewall.
    pub fn open_state_dirs(state_dir: &std::path::Path, run_dir: &std::path::Path) -> Result<SplitStore> {
        let durable = Arc::new(super::FileStore::open(state_dir)?);
        let volatile = Arc::new(super::FileStore::open_volatile(run_dir.join("state"))?);
        let prefixes = crate::controller::VOLATILE_PREFIXES.iter().map(|s| s.to_string()).collect();
        Ok(SplitStore::new(durable, volatile, prefixes))
    }

    fn route(&self, key: &str) -> &dyn Store {
        if self.volatile_prefixes.iter().any(|p| key.starts_with(p.as_str())) {
            &*self.volatile
        } else {
            &*self.durable
        }
    }
}

impl Store for SplitStore {
    fn location(&self) -> String {
        format!("{} + {}", self.durable.location(), self.volatile.location())
    }

    fn get(&self, key: &str) -> Result<Option<KvEntry>> {
        self.route(key).get(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<KvEntry>> {
        // A prefix that is itself under a volatile prefix lives there alone;
        // a shorter one may span both stores.
        if self.volatile_prefixes.iter().any(|p| prefix.starts_with(p.as_str())) {
            return self.volatile.list(prefix);
        }
        let mut out = self.durable.list(prefix)?;
        if self.volatile_prefixes.iter().any(|p| p.starts_with(prefix)) {
            out.extend(
                self.volatile
                    .list(prefix)?
                    .into_iter()
                    .filter(|e| self.volatile_prefixes.iter().any(|p| e.key.starts_with(p.as_str()))),
            );
            out.sort_by(|a, b| a.key.cmp(&b.key));
        }
        Ok(out)
    }

    fn read_many(&self, reads: &[super::Read<'_>]) -> Result<Vec<Vec<KvEntry>>> {
        // All on one side: that side reads them (etcd, in one round trip).
        let side = |r: &super::Read<'_>| match r {
            super::Read::Key(k) => Some(self.volatile_prefixes.iter().any(|p| k.starts_with(p.as_str()))),
            super::Read::Prefix(k) if self.volatile_prefixes.iter().any(|p| k.starts_with(p.as_str())) => Some(true),
            super::Read::Prefix(k) if self.volatile_prefixes.iter().any(|p| p.starts_with(k)) => None,
            super::Read::Prefix(_) => Some(false),
        };
        let sides: Vec<Option<bool>> = reads.iter().map(side).collect();
        match sides.first() {
            Some(Some(first)) if sides.iter().all(|s| *s == Some(*first)) => {
                if *first {
                    self.volatile.read_many(reads)
                } else {
                    self.durable.read_many(reads)
                }
            }
            _ => super::read_each(self, reads),
        }
    }

    fn put_while_leased(
        &self,
        key: &str,
        value: &[u8],
        lease: LeaseId,
        holder: &str,
        reads: &[super::Read<'_>],
    ) -> Result<Option<Vec<Vec<KvEntry>>>> {
        // Only where every key lives in the store that holds the leases.
        let volatile = |k: &str| self.volatile_prefixes.iter().any(|p| k.starts_with(p.as_str()));
        let leased_side = self.leases_in_volatile;
        let all = [key, holder].into_iter().chain(reads.iter().map(|r| match r {
            super::Read::Key(k) | super::Read::Prefix(k) => *k,
        }));
        let same = all.into_iter().all(|k| volatile(k) == leased_side);
        match same {
            true => self.lease_store().put_while_leased(key, value, lease, holder, reads),
            false => Ok(None),
        }
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        if self.volatile_prefixes.iter().any(|p| prefix.starts_with(p.as_str())) {
            return self.volatile.list_keys(prefix);
        }
        Ok(self.list(prefix)?.into_iter().map(|e| e.key).collect())
    }

    fn count(&self, prefix: &str) -> Result<usize> {
        if self.volatile_prefixes.iter().any(|p| prefix.starts_with(p.as_str())) {
            return self.volatile.count(prefix);
        }
        Ok(self.list_keys(prefix)?.len())
    }

    fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<u64> {
        self.route(key).put(key, value, expect)
    }

    fn delete(&self, key: &str, expect: Expect) -> Result<()> {
        self.route(key).delete(key, expect)
    }

    fn tidy(&self) -> Result<()> {
        let errors: Vec<_> = [self.durable.tidy().err(), self.volatile.tidy().err()].into_iter().flatten().collect();
        crate::Error::teardown("tidy the store", errors)
    }

    fn watch(&self, prefix: &str) -> Result<Box<dyn Watch>> {
        self.route(prefix).watch(prefix)
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.lease_store().grant_lease(ttl)
    }

    fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        self.lease_store().keep_alive(lease)
    }

    fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.lease_store().revoke_lease(lease)
    }

    fn put_with_lease(&self, key: &str, value: &[u8], expect: Expect, lease: LeaseId) -> Result<u64> {
        self.route(key).put_with_lease(key, value, expect, lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    #[test]
    fn routes_by_prefix_and_merges_listings() {
        let durable = Arc::new(MemStore::new());
        let volatile = Arc::new(MemStore::new());
        let s = SplitStore::new(durable.clone(), volatile.clone(), vec!["endpoints/".into()]);
        super::super::conformance::run(&s);
        s.put("networks/a", b"{}", Expect::Any).unwrap();
        s.put("endpoints/x/e", b"{}", Expect::Any).unwrap();
        assert!(durable.get("networks/a").unwrap().is_some());
        assert!(volatile.get("endpoints/x/e").unwrap().is_some());
        assert!(durable.get("endpoints/x/e").unwrap().is_none());
        let all: Vec<String> = s.list("").unwrap().into_iter().map(|e| e.key).filter(|k| !k.starts_with("a")).collect();
        assert_eq!(all, vec!["endpoints/x/e", "networks/a"]);
    }
}
