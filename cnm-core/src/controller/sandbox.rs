//! Sandboxes: a network namespace and the endpoints joined to it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use cnm_netns::NetNs;

use super::{delete_record, sb_key, Controller};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::model::{validate_name, Sandbox, SandboxConfig, State};
use crate::store::{Expect, StoreExt};
use crate::time::Timestamp;

/// A sandbox's namespace path as it is stored: absolute and canonical (a
/// relative path would mean another file once a command runs from another
/// directory). A path through `/proc/self`, `/proc/thread-self` or this
/// process's own `/proc/PID` is refused: it names whatever namespace the
/// reading process is in at the time, which would move the endpoint's
/// interface and default route into the caller's own namespace.
fn canonical_netns_path(p: &std::path::Path) -> Result<PathBuf> {
    let bad = |why: &str| Error::invalid("netns", format!("{}: {why}", p.display()));
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map_err(|e| bad(&e.to_string()))?.join(p)
    };
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Err(bad("not a path to a namespace file"));
    };
    // The directory is resolved; the last component stays as it is (a
    // `/proc/PID/ns/net` is a magic link whose target is no path).
    let parent = std::fs::canonicalize(parent).map_err(|e| bad(&e.to_string()))?;
    // `/proc/PID/ns/…` of this very process (what `/proc/self` resolves
    // to); a descriptor it holds (`/proc/PID/fd/N`) is one fixed namespace.
    let pid = format!("/proc/{}", std::process::id());
    let own = parent.starts_with(&pid) && parent.components().any(|c| c.as_os_str() == "ns");
    let via_self = p.starts_with("/proc/self") || p.starts_with("/proc/thread-self");
    if own || via_self {
        return Err(bad("a path through /proc/self or /proc/thread-self names the caller's own namespace; give the runtime's path (/run/netns/NAME, /proc/PID/ns/net)"));
    }
    Ok(parent.join(name))
}

impl Controller {
    /// The directory named sandbox namespaces are created in.
    pub(super) fn netns_dir(&self) -> Option<PathBuf> {
        self.run_dir.as_ref().map(|d| d.join("netns"))
    }

    /// Creates a sandbox for the namespace the runtime made, or, without one,
    /// a named namespace under the run directory.
    pub fn create_sandbox(&self, cfg: SandboxConfig) -> Result<Sandbox> {
        validate_name("sandbox name", &cfg.name)?;
        if let Some(h) = &cfg.hostname {
            validate_name("hostname", h)?;
        }
        cfg.dns.validate()?;
        if cfg.external && cfg.netns.is_none() {
            return Err(Error::invalid("netns", "an external sandbox is the runtime's namespace: give its path"));
        }
        let mut cfg = cfg;
        // dockerd binds the namespace at its sandbox key only when the
        // container starts, after the join: an external sandbox's path is
        // taken as given.
        if let (true, Some(p)) = (cfg.external, &cfg.netns) {
            if !p.is_absolute() {
                return Err(Error::invalid("netns", format!("{}: not an absolute path", p.display())));
            }
        } else if let Some(p) = &cfg.netns {
            let p = canonical_netns_path(p)?;
            // The runtime's namespace must exist and be one.
            NetNs::open(&p).map_err(|e| Error::invalid("netns", e.to_string()))?;
            cfg.netns = Some(p);
        }
        let _op = self.op()?;
        let id = Id::random()?;
        let (netns, owns) = match &cfg.netns {
            Some(p) => (p.clone(), false),
            None => {
                let dir = self.netns_dir().ok_or_else(|| {
                    Error::invalid(
                        "netns",
                        "no namespace given and the controller has no run directory to create one in",
                    )
                })?;
                NetNs::create_named(&dir, id.short())?;
                (dir.join(id.short()), true)
            }
        };
        let sb = Sandbox {
            id,
            name: cfg.name.clone(),
            netns,
            owns_netns: owns,
            hostname: cfg.hostname,
            dns: cfg.dns,
            endpoints: Vec::new(),
            created: Timestamp::now(),
            state: State::Ready,
            external: cfg.external,
        };
        let stored = self.store.put_json(&sb_key(&sb.name), &sb, Expect::Absent).and_then(|_| {
            if sb.external {
                return Ok(());
            }
            let served = self.names_attach(&sb);
            self.write_sandbox_files(&sb, served).inspect_err(|_| {
                self.names_detach(&sb);
                let _ = delete_record(&*self.store, &sb_key(&sb.name));
                self.remove_sandbox_files(&sb.name);
            })
        });
        if let Err(e) = stored {
            if owns {
                if let Some(dir) = self.netns_dir() {
                    let _ = NetNs::remove_named(&dir, sb.id.short());
                }
            }
            return Err(match e.kind() {
                crate::ErrorKind::AlreadyExists => Error::AlreadyExists { what: "sandbox", name: sb.name },
                _ => e,
            });
        }
        Ok(sb)
    }

    /// Deletes a sandbox: leaves every network (deleting its endpoints, as
    /// Docker does when a container goes), then removes the namespace if the
    /// controller made it. Best effort: every error is reported.
    pub fn delete_sandbox(&self, key: &str) -> Result<()> {
        let _op = self.op()?;
        let (sb, _) = self.find_sandbox(key)?;
        self.teardown_sandbox(&sb)?;
        self.tidy_if_empty();
        Ok(())
    }

    pub(super) fn teardown_sandbox(&self, sb: &Sandbox) -> Result<()> {
        let mut errors = Vec::new();
        // The sandbox record as it is now, not as the caller read it.
        let members = self.store.get_json::<Sandbox>(&sb_key(&sb.name))?.map(|(s, _)| s.endpoints).unwrap_or_default();
        for m in members {
            // A network cannot be deleted while it has endpoints, so a
            // missing one means the endpoint is gone too.
            let Some(net) = self.networks()?.into_iter().find(|n| n.id == m.network_id) else { continue };
            // Record the intent to delete first, so that whatever a failure
            // leaves is finished by a retry or by reconcile. Then leave and
            // delete, both best effort.
            let marked = self.find_endpoint(&net, &m.name).and_then(|(mut ep, rev)| {
                ep.state = State::Deleting;
                let rev = self.store.put_json(&super::ep_key(&ep), &ep, Expect::Revision(rev))?;
                Ok((ep, rev))
            });
            let (ep, rev) = match marked {
                Ok(x) => x,
                // Gone already (an earlier attempt deleted it).
                Err(e) if e.kind() == crate::ErrorKind::NotFound => continue,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            errors.extend(self.leave_locked(&net, ep.clone(), rev, Some(sb)).err());
            errors.extend(self.delete_detached(&net, &ep.name).err());
        }
        if sb.owns_netns {
            if let Some(dir) = self.netns_dir() {
                errors.extend(NetNs::remove_named(&dir, sb.id.short()).err().map(Error::from));
            }
        }
        if errors.is_empty() && !sb.external {
            self.names_detach(sb);
        }
        if errors.is_empty() {
            delete_record(&*self.store, &sb_key(&sb.name))?;
            self.remove_sandbox_files(&sb.name);
        }
        Error::teardown(format!("delete sandbox {:?}", sb.name), errors)
    }

    /// Where a sandbox's resolv.conf and hosts file are (with
    /// [`ControllerBuilder::sandbox_files`](crate::ControllerBuilder::sandbox_files)).
    pub fn sandbox_files_dir(&self, sandbox: &str) -> Option<PathBuf> {
        self.sandbox_files.as_ref().map(|d| d.join(sandbox))
    }

    /// Writes a sandbox's resolv.conf and (empty of endpoints) hosts file;
    /// `embedded`: the name server serves the sandbox.
    fn write_sandbox_files(&self, sb: &Sandbox, embedded: bool) -> Result<()> {
        self.write_resolv_conf(sb, embedded)?;
        let Some(dir) = self.sandbox_files_dir(&sb.name) else { return Ok(()) };
        write_shared(&dir.join("hosts"), &crate::etc::hosts(sb, &[]))
    }

    /// Writes a sandbox's resolv.conf (see [`crate::etc::resolv_conf`]).
    pub(super) fn write_resolv_conf(&self, sb: &Sandbox, embedded: bool) -> Result<()> {
        let Some(dir) = self.sandbox_files_dir(&sb.name) else { return Ok(()) };
        let host_resolv = std::fs::read_to_string(&self.host_resolv_conf).unwrap_or_default();
        write_shared(&dir.join("resolv.conf"), &crate::etc::resolv_conf(sb, &host_resolv, embedded))
    }

    /// Rewrites a sandbox's hosts file for these endpoints.
    pub(super) fn write_hosts(&self, sb: &Sandbox, endpoints: &[crate::model::Endpoint]) -> Result<()> {
        if sb.external {
            return Ok(());
        }
        let Some(dir) = self.sandbox_files_dir(&sb.name) else { return Ok(()) };
        write_shared(&dir.join("hosts"), &crate::etc::hosts(sb, endpoints))
    }

    fn remove_sandbox_files(&self, name: &str) {
        if let Some(dir) = self.sandbox_files_dir(name) {
            for f in ["resolv.conf", "hosts"] {
                let _ = std::fs::remove_file(dir.join(f));
            }
            let _ = std::fs::remove_dir(&dir);
            if let Some(top) = &self.sandbox_files {
                let _ = std::fs::remove_dir(top);
            }
        }
    }

    /// Removes every sandbox whose name or id is not in `live` (the
    /// runtime's containers); returns the names removed.
    pub fn gc(&self, live: &BTreeSet<String>) -> Result<Vec<String>> {
        let _op = self.op()?;
        let mut removed = Vec::new();
        let mut errors = Vec::new();
        for sb in self.sandboxes()? {
            if live.contains(&sb.name) || live.contains(sb.id.as_str()) {
                continue;
            }
            match self.teardown_sandbox(&sb) {
                Ok(()) => removed.push(sb.name),
                Err(e) => errors.push(e),
            }
        }
        Error::teardown("gc", errors)?;
        self.tidy_if_empty();
        Ok(removed)
    }
}

/// Replaced, never written through (a link planted there is replaced, its
/// target untouched); readable by the container.
fn write_shared(path: &std::path::Path, text: &str) -> Result<()> {
    crate::files::write_atomic(path, text.as_bytes(), crate::files::SHARED_FILE, false)
        .map_err(|e| Error::store("write", path.display().to_string(), e))
}
