//! The key-value store the controller and IPAM persist through, shaped so
//! that etcd's v3 API fits it: get, list by prefix, put and delete with
//! compare-and-swap on a revision, and optionally prefix watches and keys
//! that expire with their owner's lease.

mod file;
mod mem;
mod split;

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub(crate) use file::lock_file;
pub use file::FileStore;
pub use mem::MemStore;
pub use split::SplitStore;

use crate::error::{Error, Result};

/// One stored value with the revision it was last written at. Revisions
/// only grow: a key deleted and written again never gets an old one back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// The key, e.g. `networks/tn`.
    pub key: String,
    /// The value (JSON in every store of this workspace).
    pub value: Vec<u8>,
    /// Revision of the last write.
    pub revision: u64,
}

/// The condition a write is made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Unconditionally.
    Any,
    /// Only if the key does not exist (creation).
    Absent,
    /// Only if the key exists at exactly this revision.
    Revision(u64),
}

/// Identifies a lease; keys written with it vanish when it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub i64);

/// A change seen by a [`Watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or changed.
    Put(KvEntry),
    /// A key was deleted (or expired with its lease).
    Delete {
        /// The key.
        key: String,
    },
}

/// A stream of changes under a prefix.
pub trait Watch: Send {
    /// The next change, waiting up to `timeout`; `None` when nothing changed.
    fn next(&mut self, timeout: Duration) -> Result<Option<WatchEvent>>;
}

/// One read of [`Store::read_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read<'a> {
    /// The entry at a key (none or one).
    Key(&'a str),
    /// Every entry under a prefix, sorted by key.
    Prefix(&'a str),
}

/// A key-value store with compare-and-swap. Implementations must be safe to
/// share between threads; [`FileStore`] is also safe between processes.
pub trait Store: Send + Sync {
    /// Where the store lives, for messages (a directory, an etcd endpoint).
    fn location(&self) -> String;

    /// The entry at `key`, if any.
    fn get(&self, key: &str) -> Result<Option<KvEntry>>;

    /// Every entry whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<KvEntry>>;

    /// The keys under `prefix`, sorted (cheaper than [`Store::list`] where a
    /// store can skip reading values).
    fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.list(prefix)?.into_iter().map(|e| e.key).collect())
    }

    /// Several reads at once, their entries in order. A store that can
    /// (etcd) answers them in one round trip, from one revision; by default
    /// they are read one by one.
    fn read_many(&self, reads: &[Read<'_>]) -> Result<Vec<Vec<KvEntry>>> {
        read_each(self, reads)
    }

    /// How many keys are under `prefix` (a store may count without
    /// copying keys).
    fn count(&self, prefix: &str) -> Result<usize> {
        Ok(self.list_keys(prefix)?.len())
    }

    /// Writes `value` at `key` if `expect` holds and returns the new revision.
    /// A failed condition gives [`Error::AlreadyExists`] (for
    /// [`Expect::Absent`]) or [`Error::Conflict`], and changes nothing.
    fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<u64>;

    /// Deletes `key` if `expect` holds. A missing key gives [`Error::NotFound`].
    fn delete(&self, key: &str, expect: Expect) -> Result<()>;

    /// Removes what the store keeps beside its records (lock files, empty
    /// directories) when it holds no record at all, so that once everything
    /// is deleted nothing of it remains. Optional; a no-op by default.
    fn tidy(&self) -> Result<()> {
        Ok(())
    }

    /// Watches every key under `prefix`. Optional.
    fn watch(&self, prefix: &str) -> Result<Box<dyn Watch>> {
        Err(unsupported(self, "watch", prefix))
    }

    /// Grants a lease that expires `ttl` after its last keep-alive. Optional.
    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let _ = ttl;
        Err(unsupported(self, "grant_lease", ""))
    }

    /// Renews a lease.
    fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let _ = lease;
        Err(unsupported(self, "keep_alive", ""))
    }

    /// Ends a lease now, deleting its keys.
    fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        let _ = lease;
        Err(unsupported(self, "revoke_lease", ""))
    }

    /// Writes `value` at `key` under `lease`, only while `holder` is bound
    /// to that same lease, and reads `reads` in the same step (etcd: one
    /// transaction). `Some` with the reads' entries when written; `None`
    /// when not: `holder` is not on that lease (any more), or the store
    /// cannot tell (the default), and the caller takes the longer way.
    fn put_while_leased(
        &self,
        key: &str,
        value: &[u8],
        lease: LeaseId,
        holder: &str,
        reads: &[Read<'_>],
    ) -> Result<Option<Vec<Vec<KvEntry>>>> {
        let _ = (key, value, lease, holder, reads);
        Ok(None)
    }

    /// Like [`Store::put`], with the key bound to `lease`.
    fn put_with_lease(&self, key: &str, value: &[u8], expect: Expect, lease: LeaseId) -> Result<u64> {
        let _ = (value, expect, lease);
        Err(unsupported(self, "put_with_lease", key))
    }
}

/// [`Store::read_many`] one read at a time.
pub fn read_each<S: Store + ?Sized>(s: &S, reads: &[Read<'_>]) -> Result<Vec<Vec<KvEntry>>> {
    reads
        .iter()
        .map(|r| match r {
            Read::Key(k) => Ok(s.get(k)?.into_iter().collect()),
            Read::Prefix(p) => s.list(p),
        })
        .collect()
}

fn unsupported<S: Store + ?Sized>(s: &S, op: &'static str, key: &str) -> Error {
    Error::Forbidden {
        what: format!("store {op} {key:?}"),
        reason: format!("not supported by the store at {}", s.location()),
    }
}

/// The error of a failed write condition.
pub(crate) fn condition_failed(key: &str, expect: Expect, found: Option<u64>) -> Error {
    match (expect, found) {
        (Expect::Absent, Some(_)) => Error::AlreadyExists { what: "key", name: key.to_string() },
        (_, None) => Error::NotFound { what: "key", name: key.to_string() },
        (Expect::Revision(want), Some(have)) => Error::conflict(
            format!("key {key:?}"),
            format!("changed concurrently (expected revision {want}, found {have})"),
        ),
        (Expect::Any, Some(_)) => Error::Internal("condition Any cannot fail".into()),
    }
}

/// Whether a write condition holds for the current revision.
pub(crate) fn condition_holds(expect: Expect, current: Option<u64>) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Absent => current.is_none(),
        Expect::Revision(r) => current == Some(r),
    }
}

/// Typed JSON helpers over any [`Store`].
pub trait StoreExt: Store {
    /// Reads and decodes `key`.
    fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>> {
        match self.get(key)? {
            None => Ok(None),
            Some(e) => Ok(Some((decode(&e)?, e.revision))),
        }
    }

    /// Reads and decodes every entry under `prefix`.
    fn list_json<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<(T, u64)>> {
        self.list(prefix)?.iter().map(|e| Ok((decode(e)?, e.revision))).collect()
    }

    /// Encodes and writes `value` at `key` under `expect`.
    fn put_json<T: Serialize>(&self, key: &str, value: &T, expect: Expect) -> Result<u64> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::store("encode", key, e))?;
        self.put(key, &bytes, expect)
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

fn decode<T: DeserializeOwned>(e: &KvEntry) -> Result<T> {
    serde_json::from_slice(&e.value).map_err(|err| Error::store("decode", &e.key, err))
}

/// Checks a key: `/`-separated segments of letters, digits and `._:@=+-`,
/// none empty or starting with a dot. Keys map onto file names in
/// [`FileStore`], so this is what keeps a key from escaping its directory.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg.bytes().all(|c| c.is_ascii_alphanumeric() || b"._:@=+-".contains(&c))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("store key", format!("{key:?} is not a valid key")))
    }
}

#[cfg(any(test, feature = "testing"))]
pub mod conformance {
    //! The behaviour every store must show, for the tests of each
    //! implementation (this workspace's and third parties'; feature
    //! `testing`). It panics on
    //! the first difference and leaves keys under `a/` and `ab` behind.
    use super::*;

    /// Checks create/compare-and-swap/list/count/delete semantics on a store
    /// with no keys under `a` yet.
    pub fn run(s: &dyn Store) {
        assert!(s.get("a/b").unwrap().is_none());
        let r1 = s.put("a/b", b"{\"v\":1}", Expect::Absent).unwrap();
        let e = s.put("a/b", b"{\"v\":2}", Expect::Absent).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::AlreadyExists, "{e}");
        let r2 = s.put("a/b", b"{\"v\":2}", Expect::Revision(r1)).unwrap();
        assert!(r2 > r1);
        let stale = s.put("a/b", b"{\"v\":3}", Expect::Revision(r1)).unwrap_err();
        assert_eq!(stale.kind(), crate::ErrorKind::Conflict, "{stale}");
        assert_eq!(s.get("a/b").unwrap().unwrap().value, b"{\"v\":2}");
        s.put("a/c", b"{}", Expect::Any).unwrap();
        s.put("a/d/e", b"{}", Expect::Any).unwrap();
        s.put("ab", b"{}", Expect::Any).unwrap();
        let keys: Vec<String> = s.list("a/").unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["a/b", "a/c", "a/d/e"]);
        assert_eq!(s.list_keys("a/").unwrap(), keys);
        assert_eq!((s.count("a/").unwrap(), s.count("a/d/").unwrap(), s.count("zz/").unwrap()), (3, 1, 0));
        assert_eq!(s.list("a/d/").unwrap().len(), 1);
        assert_eq!(s.list("zz/").unwrap().len(), 0);
        let wrong = s.delete("a/b", Expect::Revision(r1)).unwrap_err();
        assert_eq!(wrong.kind(), crate::ErrorKind::Conflict);
        s.delete("a/b", Expect::Revision(r2)).unwrap();
        assert_eq!(s.delete("a/b", Expect::Any).unwrap_err().kind(), crate::ErrorKind::NotFound);
        // Re-created keys never reuse a revision.
        let r3 = s.put("a/b", b"{}", Expect::Absent).unwrap();
        assert!(r3 > r2);
        assert_eq!(s.put("../x", b"{}", Expect::Any).unwrap_err().kind(), crate::ErrorKind::InvalidParameter);
    }
}
