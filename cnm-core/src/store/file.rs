//! The embedded default store: a directory of human-readable JSON files.
//!
//! Each key is one file (`networks/tn` → `DIR/networks/tn.json`) holding
//! `{"key", "revision", "value"}`. Writes are atomic (temporary file, fsync,
//! rename, fsync of the directory) and made under an exclusive `flock` on
//! `DIR/.lock`, which makes compare-and-swap safe between threads and
//! processes. Reads take no lock: a rename is atomic, so a reader sees the
//! old file or the new one, never half of one. A file that does not parse is
//! reported with its path, never skipped.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{condition_failed, condition_holds, validate_key, Expect, KvEntry, Store};
use crate::error::{Error, Result};

/// A [`Store`] in a directory; safe to share between processes.
#[derive(Debug, Clone)]
pub struct FileStore {
    dir: PathBuf,
    durable: bool,
}

#[derive(Serialize, Deserialize)]
struct FileEntry {
    key: String,
    revision: u64,
    value: serde_json::Value,
}

impl FileStore {
    /// A store in `dir` (created if needed) whose writes survive power loss
    /// (fsync of file and directory). For configuration under `/var/lib`.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore> {
        FileStore::open_with(dir.as_ref(), true)
    }

    /// A store in `dir` whose writes are atomic but not flushed to disk: for
    /// state on tmpfs under `/run` that lives only as long as the kernel
    /// objects it describes.
    pub fn open_volatile(dir: impl AsRef<Path>) -> Result<FileStore> {
        FileStore::open_with(dir.as_ref(), false)
    }

    fn open_with(dir: &Path, durable: bool) -> Result<FileStore> {
        fs::create_dir_all(dir).map_err(|e| Error::store("open", dir.display().to_string(), e))?;
        let s = FileStore { dir: dir.to_path_buf(), durable };
        s.remove_stale_temporaries();
        Ok(s)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn lock(&self) -> Result<Flock<File>> {
        let path = self.dir.join(".lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::store("lock", path.display().to_string(), e))?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::store("lock", path.display().to_string(), e))
    }

    fn read_path(&self, path: &Path, key: &str) -> Result<Option<KvEntry>> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::store("read", path.display().to_string(), e)),
        };
        let entry: FileEntry = serde_json::from_slice(&bytes)
            .map_err(|e| Error::store("read", path.display().to_string(), format!("corrupt state file: {e}")))?;
        if entry.key != key {
            return Err(Error::store(
                "read",
                path.display().to_string(),
                format!("file holds key {:?}, expected {key:?}", entry.key),
            ));
        }
        let value =
            serde_json::to_vec(&entry.value).map_err(|e| Error::store("read", path.display().to_string(), e))?;
        Ok(Some(KvEntry { key: entry.key, value, revision: entry.revision }))
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let parent = path.parent().expect("a key file has a parent");
        fs::create_dir_all(parent).map_err(|e| Error::store("write", parent.display().to_string(), e))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("x");
        let tmp = parent.join(format!(".tmp-{}-{name}", std::process::id()));
        let werr = |e: std::io::Error| Error::store("write", tmp.display().to_string(), e);
        let mut f = File::create(&tmp).map_err(werr)?;
        f.write_all(bytes).map_err(werr)?;
        if self.durable {
            f.sync_all().map_err(werr)?;
        }
        drop(f);
        fs::rename(&tmp, path).map_err(|e| Error::store("write", path.display().to_string(), e))?;
        if self.durable {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// The keys starting with `prefix` and their files, sorted by key. Walks
    /// only the directory the prefix points into.
    fn files_under(&self, prefix: &str) -> Result<Vec<(String, PathBuf)>> {
        let base = match prefix.rfind('/') {
            Some(i) => self.dir.join(&prefix[..i]),
            None => self.dir.clone(),
        };
        let mut out = Vec::new();
        let mut stack = vec![base];
        while let Some(d) = stack.pop() {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::store("list", d.display().to_string(), e)),
            };
            for e in rd {
                let e = e.map_err(|e| Error::store("list", d.display().to_string(), e))?;
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(p);
                    continue;
                }
                let key = p.strip_prefix(&self.dir).ok().and_then(|r| r.to_str()).and_then(|r| r.strip_suffix(".json"));
                if let Some(key) = key.filter(|k| k.starts_with(prefix)).map(str::to_string) {
                    out.push((key, p));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes temporary files left by processes that died mid-write.
    fn remove_stale_temporaries(&self) {
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some(rest) = name.strip_prefix(".tmp-") {
                    let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                    if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                        let _ = fs::remove_file(&p);
                    }
                }
            }
        }
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::store("sync", dir.display().to_string(), e))
}

/// A revision larger than `current`: the wall clock in nanoseconds, so a key
/// deleted and created again does not get an old revision back.
fn next_revision(current: Option<u64>) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    now.max(current.unwrap_or(0) + 1)
}

impl Store for FileStore {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn get(&self, key: &str) -> Result<Option<KvEntry>> {
        validate_key(key)?;
        self.read_path(&self.path_of(key), key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<KvEntry>> {
        let mut out = Vec::new();
        for (key, path) in self.files_under(prefix)? {
            if let Some(entry) = self.read_path(&path, &key)? {
                out.push(entry);
            }
        }
        Ok(out)
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>> {
        // Directory entries only: no file is opened.
        Ok(self.files_under(prefix)?.into_iter().map(|(k, _)| k).collect())
    }

    fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<u64> {
        validate_key(key)?;
        let value: serde_json::Value = serde_json::from_slice(value).map_err(|e| {
            Error::invalid(format!("value of {key:?}"), format!("FileStore keeps JSON values only: {e}"))
        })?;
        let path = self.path_of(key);
        let _lock = self.lock()?;
        let current = self.read_path(&path, key)?.map(|e| e.revision);
        if !condition_holds(expect, current) {
            return Err(condition_failed(key, expect, current));
        }
        let revision = next_revision(current);
        let entry = FileEntry { key: key.to_string(), revision, value };
        let bytes = serde_json::to_vec_pretty(&entry).map_err(|e| Error::store("encode", key, e))?;
        self.write_atomic(&path, &bytes)?;
        Ok(revision)
    }

    fn delete(&self, key: &str, expect: Expect) -> Result<()> {
        validate_key(key)?;
        let path = self.path_of(key);
        let _lock = self.lock()?;
        let current = self.read_path(&path, key)?.map(|e| e.revision);
        if current.is_none() || expect == Expect::Absent || !condition_holds(expect, current) {
            return Err(condition_failed(key, expect, current));
        }
        fs::remove_file(&path).map_err(|e| Error::store("delete", path.display().to_string(), e))?;
        if self.durable {
            sync_dir(path.parent().expect("a key file has a parent"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("cnm-filestore-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn conformance_durable_and_volatile() {
        let d = tmpdir("conf");
        super::super::conformance::run(&FileStore::open(d.join("a")).unwrap());
        super::super::conformance::run(&FileStore::open_volatile(d.join("b")).unwrap());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn files_are_readable_json_and_garbage_is_reported_with_its_path() {
        let d = tmpdir("garbage");
        let s = FileStore::open(&d).unwrap();
        s.put("networks/tn", br#"{"Name":"tn"}"#, Expect::Absent).unwrap();
        let text = fs::read_to_string(d.join("networks/tn.json")).unwrap();
        assert!(text.contains("\"Name\": \"tn\""), "{text}");
        fs::write(d.join("networks/torn.json"), b"{\"key\": \"networks/to").unwrap();
        let e = s.list("networks/").unwrap_err();
        assert!(e.to_string().contains("networks/torn.json"), "{e}");
        assert!(e.to_string().contains("corrupt"), "{e}");
        assert_eq!(s.put("x", b"not json", Expect::Any).unwrap_err().kind(), crate::ErrorKind::InvalidParameter);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        let d = tmpdir("tmp");
        fs::create_dir_all(d.join("n")).unwrap();
        // pid 0x7fffffff does not exist; our own pid does.
        fs::write(d.join("n/.tmp-2147483647-x.json"), b"{").unwrap();
        fs::write(d.join(format!("n/.tmp-{}-y.json", std::process::id())), b"{").unwrap();
        let s = FileStore::open(&d).unwrap();
        assert!(!d.join("n/.tmp-2147483647-x.json").exists());
        assert!(d.join(format!("n/.tmp-{}-y.json", std::process::id())).exists());
        assert!(s.list("n/").unwrap().is_empty());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn threads_contending_on_one_key_never_lose_an_update() {
        let d = tmpdir("cas");
        let s = FileStore::open_volatile(&d).unwrap();
        s.put("counter", b"0", Expect::Absent).unwrap();
        std::thread::scope(|sc| {
            for _ in 0..4 {
                sc.spawn(|| {
                    for _ in 0..25 {
                        loop {
                            let e = s.get("counter").unwrap().unwrap();
                            let n: u64 = serde_json::from_slice(&e.value).unwrap();
                            if s.put("counter", (n + 1).to_string().as_bytes(), Expect::Revision(e.revision)).is_ok() {
                                break;
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(s.get("counter").unwrap().unwrap().value, b"100");
        fs::remove_dir_all(&d).unwrap();
    }
}
