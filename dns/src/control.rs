//! The control socket: how processes that change sandboxes (the `cnm`
//! tool's commands) reach the server running in another (the agent).
//! One JSON request per connection, one JSON answer; the socket is the
//! server's own file in a root-only directory.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cnm_core::{Endpoint, NameServer, Sandbox};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::server::DnsServer;

/// A request on the control socket.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Request {
    Attach { sandbox: Box<Sandbox> },
    Update { sandbox: Box<Sandbox>, endpoints: Vec<Endpoint> },
    Detach { sandbox: Box<Sandbox> },
}

/// Its answer.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Answer {
    #[serde(default)]
    served: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// How long a client waits for the server.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A served control socket; dropping it stops serving and removes it.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlSocket {
    /// Serves `server` on a unix socket at `path` (replacing a stale one).
    pub fn serve(server: Arc<DnsServer>, path: impl AsRef<Path>) -> Result<ControlSocket> {
        let path = path.as_ref().to_path_buf();
        if UnixStream::connect(&path).is_ok() {
            return Err(Error::InvalidRequest {
                op: "serve".into(),
                reason: format!("another DNS server answers on {} already", path.display()),
            });
        }
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|e| Error::io(format!("bind {}", path.display()), e))?;
        listener.set_nonblocking(true).map_err(|e| Error::io("set_nonblocking", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cnm-dns-control".into())
            .spawn(move || accept_loop(&server, &listener, &flag))
            .map_err(|e| Error::io("spawn the control thread", e))?;
        Ok(ControlSocket { path, stop, thread: Some(thread) })
    }

    /// Stops serving and removes the socket (new requests find no server).
    pub fn close(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.shut();
    }
}

fn accept_loop(server: &DnsServer, listener: &UnixListener, stop: &AtomicBool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    while !stop.load(Ordering::SeqCst) {
        // Woken at once by a connection; every 100 ms to see `stop`.
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if let Err(e) = poll(&mut fds, PollTimeout::from(100u16)) {
            if e != nix::errno::Errno::EINTR {
                tracing::warn!(error = %e, "control socket poll failed");
            }
            continue;
        }
        loop {
            match listener.accept() {
                Ok((s, _)) => handle(server, s),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    break;
                }
            }
        }
    }
}

/// One request, answered on the same connection.
fn handle(server: &DnsServer, s: UnixStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let mut line = String::new();
    let mut reader = BufReader::new(&s);
    let answer = match reader
        .read_line(&mut line)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_str::<Request>(&line).map_err(|e| format!("malformed request: {e}")))
    {
        Err(e) => Answer { served: false, error: Some(e) },
        Ok(req) => {
            let res = match req {
                Request::Attach { sandbox } => server.attach_sandbox(&sandbox),
                Request::Update { sandbox, endpoints } => {
                    server.update_sandbox(&sandbox, &endpoints);
                    Ok(true)
                }
                Request::Detach { sandbox } => server.detach_sandbox(&sandbox).map(|()| true),
            };
            match res {
                Ok(served) => Answer { served, error: None },
                Err(e) => Answer { served: false, error: Some(e.to_string()) },
            }
        }
    };
    let mut out = serde_json::to_vec(&answer).unwrap_or_default();
    out.push(b'\n');
    let _ = (&s).write_all(&out);
}

/// A [`NameServer`] that passes every call to the server behind a control
/// socket. No server there (nothing listens): a sandbox is not served,
/// and there are no names to update.
#[derive(Debug, Clone)]
pub struct ControlClient {
    path: PathBuf,
}

impl ControlClient {
    /// A client of the control socket at `path`.
    pub fn new(path: impl AsRef<Path>) -> ControlClient {
        ControlClient { path: path.as_ref().to_path_buf() }
    }

    /// Whether a server answers on the socket now.
    pub fn is_serving(&self) -> bool {
        UnixStream::connect(&self.path).is_ok()
    }

    /// Sends one request; `None` when no server listens.
    fn call(&self, req: &Request) -> Result<Option<bool>> {
        let op = match req {
            Request::Attach { .. } => "attach",
            Request::Update { .. } => "update",
            Request::Detach { .. } => "detach",
        };
        let s = match UnixStream::connect(&self.path) {
            Ok(s) => s,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
                return Ok(None)
            }
            Err(e) => return Err(Error::io(format!("connect {}", self.path.display()), e)),
        };
        let unavailable = |reason: String| Error::Unavailable { at: self.path.display().to_string(), reason };
        s.set_read_timeout(Some(TIMEOUT)).map_err(|e| unavailable(e.to_string()))?;
        let mut line = serde_json::to_vec(req).map_err(|e| unavailable(e.to_string()))?;
        line.push(b'\n');
        (&s).write_all(&line).map_err(|e| unavailable(e.to_string()))?;
        let mut reply = String::new();
        BufReader::new(&s).read_line(&mut reply).map_err(|e| unavailable(e.to_string()))?;
        let a: Answer = serde_json::from_str(&reply).map_err(|e| unavailable(format!("bad answer: {e}")))?;
        match a.error {
            Some(reason) => Err(Error::InvalidRequest { op: op.into(), reason }),
            None => Ok(Some(a.served)),
        }
    }
}

impl NameServer for ControlClient {
    fn attach(&self, sandbox: &Sandbox) -> cnm_core::Result<bool> {
        Ok(self.call(&Request::Attach { sandbox: Box::new(sandbox.clone()) })?.unwrap_or(false))
    }

    fn update(&self, sandbox: &Sandbox, endpoints: &[Endpoint]) -> cnm_core::Result<()> {
        self.call(&Request::Update { sandbox: Box::new(sandbox.clone()), endpoints: endpoints.to_vec() })?;
        Ok(())
    }

    fn detach(&self, sandbox: &Sandbox) -> cnm_core::Result<()> {
        self.call(&Request::Detach { sandbox: Box::new(sandbox.clone()) })?;
        Ok(())
    }
}
