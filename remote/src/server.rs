//! The socket side: HTTP/1.1 on a unix socket where dockerd looks for
//! plugins, one thread per connection (dockerd keeps a few open and sends
//! its calls concurrently), each call answered by the [`Plugin`].

use std::io::{BufReader, ErrorKind as IoKind};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::http;
use crate::plugin::Plugin;
use crate::protocol::ErrorResponse;

/// Where dockerd finds a plugin by name.
pub fn default_socket(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/docker/plugins/{name}.sock"))
}

/// A running plugin server; [`PluginServer::stop`] (or dropping it) closes
/// the socket and every connection.
pub struct PluginServer {
    path: PathBuf,
    listener: Arc<UnixListener>,
    stopping: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<UnixStream>>>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PluginServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginServer").field("path", &self.path).finish()
    }
}

/// Binds `path`; a socket file nobody listens on (a crashed plugin's) is
/// replaced, a live one is an error.
fn bind(path: &Path) -> Result<UnixListener> {
    let at = |what: &str| format!("{what} {}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(at("create the directory of"), e))?;
    }
    match UnixStream::connect(path) {
        Ok(_) => {
            return Err(Error::io(
                at("listen on"),
                std::io::Error::new(IoKind::AddrInUse, "another plugin listens there"),
            ))
        }
        Err(e) if e.kind() == IoKind::ConnectionRefused => {
            std::fs::remove_file(path).map_err(|e| Error::io(at("remove the stale socket"), e))?;
        }
        Err(_) => {}
    }
    UnixListener::bind(path).map_err(|e| Error::io(at("listen on"), e))
}

impl PluginServer {
    /// Serves `plugin` on the unix socket `path` (see [`default_socket`]).
    pub fn serve(plugin: Arc<Plugin>, path: impl AsRef<Path>) -> Result<PluginServer> {
        let path = path.as_ref().to_path_buf();
        let listener = Arc::new(bind(&path)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (l, s, c) = (listener.clone(), stopping.clone(), conns.clone());
        let accept = std::thread::Builder::new()
            .name("cnm-plugin".into())
            .spawn(move || accept_loop(&l, &s, &c, &plugin))
            .map_err(|e| Error::io("start the plugin server", e))?;
        tracing::info!(socket = %path.display(), "plugin listening");
        Ok(PluginServer { path, listener, stopping, conns, accept: Some(accept) })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, closes every connection and removes the socket.
    pub fn stop(&mut self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wakes the accept call (it then fails) without a timeout loop.
        let _ = nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &UnixListener, stopping: &AtomicBool, conns: &Mutex<Vec<UnixStream>>, plugin: &Arc<Plugin>) {
    loop {
        let conn = listener.accept();
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match conn {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "plugin accept");
                continue;
            }
        };
        if let Ok(c) = stream.try_clone() {
            let mut all = conns.lock().unwrap_or_else(|p| p.into_inner());
            // Closed connections' entries go as new ones come.
            all.retain(|c| c.peer_addr().is_ok() && !peer_closed(c));
            all.push(c);
        }
        let p = plugin.clone();
        let spawned = std::thread::Builder::new().name("cnm-plugin-conn".into()).spawn(move || serve_conn(stream, &p));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "plugin connection thread");
        }
    }
}

/// Whether the peer hung up (a zero-length peek without blocking).
fn peer_closed(c: &UnixStream) -> bool {
    let mut b = [0u8; 1];
    let flags = nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT;
    matches!(nix::sys::socket::recv(c.as_raw_fd(), &mut b, flags), Ok(0))
}

/// Answers calls on one connection until the peer closes it (or sends
/// what is not HTTP); then closes it (the server's list of connections
/// holds another handle).
fn serve_conn(stream: UnixStream, plugin: &Plugin) {
    let Ok(out) = stream.try_clone() else { return };
    answer_calls(stream, &out, plugin);
    let _ = out.shutdown(std::net::Shutdown::Both);
}

fn answer_calls(stream: UnixStream, mut out: &UnixStream, plugin: &Plugin) {
    let mut input = BufReader::new(stream);
    loop {
        let req = match http::read_request(&mut input) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let body = serde_json::to_vec(&ErrorResponse { err: format!("bad request: {e}") }).unwrap_or_default();
                let _ = http::write_response(&mut out, 400, &body);
                return;
            }
        };
        let started = std::time::Instant::now();
        let method = req.path.trim_start_matches('/');
        let (status, body) = if req.method != "POST" {
            (405, serde_json::to_vec(&ErrorResponse { err: format!("{} {}: only POST", req.method, req.path) }))
        } else {
            match plugin.handle(method, &req.body) {
                Ok(b) => (200, Ok(b)),
                Err(e) => {
                    tracing::warn!(method, error = %e, "plugin call failed");
                    // dockerd reads `Err` from a 200 answer, as Docker's
                    // own plugin helpers send it.
                    (200, serde_json::to_vec(&ErrorResponse { err: e.to_string() }))
                }
            }
        };
        let took_us = started.elapsed().as_micros() as u64;
        tracing::debug!(method, status, took_us, "plugin call");
        if http::write_response(&mut out, status, &body.unwrap_or_default()).is_err() {
            return;
        }
    }
}
