//! The IPAM protocol's own corner of the store: what dockerd asks of the
//! `IpamDriver` side lives under a prefix of cnm's store, apart from the
//! pools and addresses of cnm's networks. cnm's reconcile releases pools
//! that no cnm network uses and addresses that no cnm endpoint holds; a
//! pool dockerd holds for its own bridge network (`--ipam-driver cnm`
//! without `-d cnm`) is neither, and must survive it.

use std::sync::Arc;

use cnm_core::store::{Expect, KvEntry, Store};

/// A store that keeps every key under `prefix` of another.
pub(crate) struct Prefixed {
    inner: Arc<dyn Store>,
    prefix: String,
}

impl Prefixed {
    pub(crate) fn new(inner: Arc<dyn Store>, prefix: &str) -> Prefixed {
        Prefixed { inner, prefix: prefix.to_string() }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn strip(&self, mut e: KvEntry) -> KvEntry {
        e.key = e.key.strip_prefix(&self.prefix).unwrap_or(&e.key).to_string();
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
        Ok(self.inner.list(&self.key(prefix))?.into_iter().map(|e| self.strip(e)).collect())
    }

    fn put(&self, key: &str, value: &[u8], expect: Expect) -> cnm_core::Result<u64> {
        self.inner.put(&self.key(key), value, expect)
    }

    fn delete(&self, key: &str, expect: Expect) -> cnm_core::Result<()> {
        self.inner.delete(&self.key(key), expect)
    }
}
