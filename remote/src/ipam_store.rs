//! The IPAM protocol's own corner of the store: what dockerd asks of the
//! `IpamDriver` side lives under a prefix of cnm's store, apart from the
//! pools and addresses of cnm's networks. cnm's reconcile releases pools
//! that no cnm network uses and addresses that no cnm endpoint holds; a
//! pool dockerd holds for its own bridge network (`--ipam-driver cnm`
//! without `-d cnm`) is neither, and must survive it.

use std::sync::Arc;

use cnm_core::store::{Expect, KvEntry, Store};
use cnm_core::GLOBAL_PREFIXES;

/// A store that keeps every key under `prefix` of another; the global
/// address space's keys under `global/` and `prefix`, so that a cluster
/// store ([`SplitStore::cluster`](cnm_core::store::SplitStore::cluster))
/// shares them between the hosts, as dockerd's global-scope networks need.
pub(crate) struct Prefixed {
    inner: Arc<dyn Store>,
    prefix: String,
    global_prefix: String,
}

/// Whether cnm-ipam's `key` (or the keys under it) belong to the global
/// address space.
fn is_global(key: &str) -> bool {
    GLOBAL_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Whether a listing of `prefix` may hold keys of the global space.
fn covers_global(prefix: &str) -> bool {
    GLOBAL_PREFIXES.iter().any(|p| p.starts_with(prefix))
}

impl Prefixed {
    pub(crate) fn new(inner: Arc<dyn Store>, prefix: &str) -> Prefixed {
        Prefixed { inner, prefix: prefix.to_string(), global_prefix: format!("global/{prefix}") }
    }

    fn key(&self, key: &str) -> String {
        match is_global(key) {
            true => format!("{}{key}", self.global_prefix),
            false => format!("{}{key}", self.prefix),
        }
    }

    fn strip(&self, mut e: KvEntry) -> KvEntry {
        let k = e.key.strip_prefix(&self.global_prefix).or_else(|| e.key.strip_prefix(&self.prefix));
        e.key = k.unwrap_or(&e.key).to_string();
        e
    }
}

impl Store for Prefixed {
    fn location(&self) -> String {
        format!("{} ({})", self.inner.location(), self.prefix)
    }

    fn get(&self, key: &str) -> cnm_core::Result<Option<KvEntry>> {
        Ok(self.inner.get(&self.key(key))?.map(|e| self.strip(e)))
    }

    fn list(&self, prefix: &str) -> cnm_core::Result<Vec<KvEntry>> {
        let mut out = self.inner.list(&self.key(prefix))?;
        if !is_global(prefix) && covers_global(prefix) {
            out.extend(self.inner.list(&format!("{}{prefix}", self.global_prefix))?);
        }
        let mut out: Vec<KvEntry> = out.into_iter().map(|e| self.strip(e)).collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn put(&self, key: &str, value: &[u8], expect: Expect) -> cnm_core::Result<u64> {
        self.inner.put(&self.key(key), value, expect)
    }

    fn delete(&self, key: &str, expect: Expect) -> cnm_core::Result<()> {
        self.inner.delete(&self.key(key), expect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cnm_core::store::MemStore;

    #[test]
    fn the_global_space_goes_where_a_cluster_store_shares_it() {
        let mem: Arc<dyn Store> = Arc::new(MemStore::new());
        let p = Prefixed::new(mem.clone(), "ipam-plugin/");
        p.put("ipam/spaces/global/pools/a", b"1", Expect::Absent).unwrap();
        p.put("ipam/spaces/local/pools/b", b"2", Expect::Absent).unwrap();
        p.put("leases/global-x", b"3", Expect::Absent).unwrap();
        let raw: Vec<String> = mem.list("").unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(
            raw,
            [
                "global/ipam-plugin/ipam/spaces/global/pools/a",
                "global/ipam-plugin/leases/global-x",
                "ipam-plugin/ipam/spaces/local/pools/b"
            ]
        );
        let keys = |prefix: &str| -> Vec<String> { p.list(prefix).unwrap().into_iter().map(|e| e.key).collect() };
        assert_eq!(keys("ipam/"), ["ipam/spaces/global/pools/a", "ipam/spaces/local/pools/b"]);
        assert_eq!(keys("ipam/spaces/global"), ["ipam/spaces/global/pools/a"]);
        assert_eq!(keys("leases/"), ["leases/global-x"]);
        assert_eq!(p.get("leases/global-x").unwrap().unwrap().value, b"3");
        p.delete("ipam/spaces/global/pools/a", Expect::Any).unwrap();
        assert_eq!(keys(""), ["ipam/spaces/local/pools/b", "leases/global-x"]);
    }
}
