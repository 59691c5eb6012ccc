//! The embedded default store: a directory of human-readable JSON files.
//!
//! Each key is one file (`networks/tn` → `DIR/networks/tn.json`) holding
//! `{"key", "revision", "value"}`. Writes are atomic (temporary file, fsync,
//! rename, fsync of the directory) and made under an exclusive `flock` on
//! `DIR/.lock`, which makes compare-and-swap safe between threads and
//! processes. Reads take no lock: a rename is atomic, so a reader sees the
//! old file or the new one, never half of one. A key's file that does not
//! parse is an error naming the file; in a listing it is skipped with a
//! warning naming the file, so one stray file cannot stop every command.
//! Deleting a key removes the directories it leaves empty.

use std::fs::{self, File};
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
        crate::files::create_dir(dir).map_err(|e| Error::store("open", dir.display().to_string(), e))?;
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
        lock_file(&self.dir.join(".lock"), FlockArg::LockExclusive)
    }

    fn read_path(&self, path: &Path, key: &str) -> Result<Option<KvEntry>> {
        match self.read_bytes(path)? {
            Some(bytes) => parse_entry(&bytes, key)
                .map(Some)
                .map_err(|reason| Error::store("read", path.display().to_string(), reason)),
            None => Ok(None),
        }
    }

    fn read_bytes(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        use std::io::Read;
        let mut bytes = Vec::new();
        match crate::files::open_nofollow(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
            Ok(_) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                Err(Error::store("read", path.display().to_string(), "a symbolic link, which is not followed"))
            }
            Err(e) => Err(Error::store("read", path.display().to_string(), e)),
        }
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        crate::files::write_atomic(path, bytes, crate::files::PRIVATE_FILE, self.durable)
            .map_err(|e| Error::store("write", path.display().to_string(), e))?;
        if self.durable {
            sync_dir(path.parent().expect("a key file has a parent"))?;
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
                let Ok(kind) = e.file_type() else { continue };
                if kind.is_symlink() {
                    // Never followed: a link could lead anywhere, or loop.
                    tracing::warn!(file = %p.display(), "skipping a symbolic link in the state directory");
                    continue;
                }
                if kind.is_dir() {
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

    /// Removes `dir` and its parents up to the store's directory while they
    /// are empty.
    fn remove_empty_dirs(&self, dir: &Path) {
        let mut d = dir;
        while d != self.dir && d.starts_with(&self.dir) && fs::remove_dir(d).is_ok() {
            let Some(p) = d.parent() else { break };
            d = p;
        }
    }

    /// Removes temporary files left by processes that died mid-write.
    fn remove_stale_temporaries(&self) {
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                let name = e.file_name().to_string_lossy().into_owned();
                // The entry's own type: a link to a directory is not walked.
                let Ok(kind) = e.file_type() else { continue };
                if kind.is_dir() {
                    stack.push(p);
                } else if let Some(rest) = name.strip_prefix(".tmp-").filter(|_| kind.is_file()) {
                    let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
                    if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                        let _ = fs::remove_file(&p);
                    }
                }
            }
        }
    }
}

/// Decodes a key's file; the error says what is wrong with it.
fn parse_entry(bytes: &[u8], key: &str) -> std::result::Result<KvEntry, String> {
    let entry: FileEntry = serde_json::from_slice(bytes).map_err(|e| format!("corrupt state file: {e}"))?;
    if entry.key != key {
        return Err(format!("file holds key {:?}, expected {key:?}", entry.key));
    }
    let value = serde_json::to_vec(&entry.value).map_err(|e| e.to_string())?;
    Ok(KvEntry { key: entry.key, value, revision: entry.revision })
}

/// Takes a `flock` on `path` (created if needed). A lock file may be
/// removed by whoever holds it (once nothing is left, nothing of cnm stays
/// behind), so after the lock is granted the path must still name the file
/// that was locked; if it does not, the lock is on a removed file and the
/// whole thing is tried again.
pub(crate) fn lock_file(path: &Path, arg: FlockArg) -> Result<Flock<File>> {
    use std::os::unix::fs::MetadataExt;
    let err = |e: std::io::Error| Error::store("lock", path.display().to_string(), e);
    loop {
        let open = || crate::files::open_lock(path);
        let f = match open() {
            // Its directory went with the rest of an empty state.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                crate::files::create_dir(path.parent().unwrap_or(Path::new("/"))).map_err(err)?;
                open().map_err(err)?
            }
            other => other.map_err(err)?,
        };
        let locked = Flock::lock(f, arg).map_err(|(_, e)| err(e.into()))?;
        let held = locked.metadata().map_err(err)?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => return Ok(locked),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err(e)),
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
            let Some(bytes) = self.read_bytes(&path)? else { continue };
            match parse_entry(&bytes, &key) {
                Ok(entry) => out.push(entry),
                // Not one of ours (a stray or torn file): skip it, say so.
                Err(reason) => {
                    tracing::warn!(file = %path.display(), "skipping a state file that is not a record: {reason}")
                }
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
        let parent = path.parent().expect("a key file has a parent");
        if self.durable {
            sync_dir(parent)?;
        }
        // Under the lock, so no write is between creating a directory and
        // renaming its file into it.
        self.remove_empty_dirs(parent);
        Ok(())
    }

    fn tidy(&self) -> Result<()> {
        // Only when the store holds nothing; the lock file goes last, while
        // held (see `lock_file`).
        let lock = self.lock()?;
        if !self.files_under("")?.is_empty() {
            return Ok(());
        }
        let mut dirs = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                    dirs.push(e.path());
                }
            }
        }
        // Deepest first; a directory holding anything else stays.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = fs::remove_dir(d);
        }
        let _ = fs::remove_file(self.dir.join(".lock"));
        drop(lock);
        let _ = fs::remove_dir(&self.dir);
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
    fn files_are_readable_json_and_garbage_is_named_or_skipped() {
        let d = tmpdir("garbage");
        let s = FileStore::open(&d).unwrap();
        s.put("networks/tn", br#"{"Name":"tn"}"#, Expect::Absent).unwrap();
        let text = fs::read_to_string(d.join("networks/tn.json")).unwrap();
        assert!(text.contains("\"Name\": \"tn\""), "{text}");
        fs::write(d.join("networks/torn.json"), b"{\"key\": \"networks/to").unwrap();
        // A single read names the file; a listing skips it and goes on.
        let e = s.get("networks/torn").unwrap_err();
        assert!(e.to_string().contains("networks/torn.json"), "{e}");
        assert!(e.to_string().contains("corrupt"), "{e}");
        let keys: Vec<String> = s.list("networks/").unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["networks/tn"]);
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
