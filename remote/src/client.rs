//! The client side: finding a Docker plugin by name, as dockerd does, and
//! calling it. One connection per call (plugin calls are few and small), a
//! 30 s limit on each, so a hung plugin fails the operation instead of
//! hanging it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};

/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where dockerd looks for plugins, in its order: sockets, then spec files.
const SOCKET_DIRS: [&str; 1] = ["/run/docker/plugins"];
const SPEC_DIRS: [&str; 2] = ["/etc/docker/plugins", "/usr/lib/docker/plugins"];

/// A Docker plugin reached over its unix socket.
#[derive(Debug, Clone)]
pub struct PluginClient {
    name: String,
    socket: PathBuf,
}

/// The socket a spec file names (`unix:///path`, or a JSON spec with an
/// `Addr`).
fn spec_socket(path: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let addr = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str::<Value>(&text).ok()?.get("Addr")?.as_str()?.to_string()
    } else {
        text.trim().to_string()
    };
    addr.strip_prefix("unix://").map(PathBuf::from)
}

impl PluginClient {
    /// A client for the plugin listening on `socket`.
    pub fn new(name: impl Into<String>, socket: impl Into<PathBuf>) -> PluginClient {
        PluginClient { name: name.into(), socket: socket.into() }
    }

    /// Finds plugin `name` as dockerd does: `/run/docker/plugins/NAME.sock`,
    /// else a spec file `NAME.spec` or `NAME.json` in `/etc/docker/plugins`
    /// or `/usr/lib/docker/plugins` naming a unix socket.
    pub fn discover(name: &str) -> Result<PluginClient> {
        Self::discover_in(name, &SOCKET_DIRS.map(Path::new), &SPEC_DIRS.map(Path::new))
    }

    /// [`PluginClient::discover`] in other directories.
    pub fn discover_in(name: &str, socket_dirs: &[&Path], spec_dirs: &[&Path]) -> Result<PluginClient> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::invalid("discover", format!("{name:?} is not a plugin name")));
        }
        for d in socket_dirs {
            let s = d.join(format!("{name}.sock"));
            if s.exists() {
                return Ok(PluginClient::new(name, s));
            }
        }
        for d in spec_dirs {
            for ext in ["spec", "json"] {
                if let Some(s) = spec_socket(&d.join(format!("{name}.{ext}"))) {
                    return Ok(PluginClient::new(name, s));
                }
            }
        }
        Err(Error::NotFound { plugin: name.to_string() })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `Plugin.Activate`: fails unless the plugin implements `what`
    /// (`NetworkDriver`, `IpamDriver`).
    pub fn activate(&self, what: &str) -> Result<()> {
        let v = self.call("Plugin.Activate", &Value::Null)?;
        let implements = v.get("Implements").and_then(Value::as_array).cloned().unwrap_or_default();
        if !implements.iter().any(|i| i == what) {
            return Err(Error::invalid(
                "Plugin.Activate",
                format!("plugin {:?} implements {implements:?}, not {what}", self.name),
            ));
        }
        Ok(())
    }

    /// Calls `method` with `body`; the answer, or the plugin's `Err` as an
    /// error naming the plugin and the method.
    pub fn call(&self, method: &str, body: &impl serde::Serialize) -> Result<Value> {
        let at = |what: &str| format!("{what} plugin {:?} at {} ({method})", self.name, self.socket.display());
        let body = serde_json::to_vec(body).map_err(|e| Error::invalid(method, e.to_string()))?;
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| Error::io(at("connect to"), e))?;
        stream
            .set_read_timeout(Some(CALL_TIMEOUT))
            .and_then(|_| stream.set_write_timeout(Some(CALL_TIMEOUT)))
            .map_err(|e| Error::io(at("set timeouts for"), e))?;
        let head = format!(
            "POST /{method} HTTP/1.1\r\nHost: plugin\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut msg = head.into_bytes();
        msg.extend_from_slice(&body);
        stream.write_all(&msg).map_err(|e| Error::io(at("write to"), e))?;
        let (status, answer) = crate::http::read_response(&mut BufReader::new(stream) as &mut dyn BufRead)
            .map_err(|e| Error::io(at("read from"), e))?;
        let v: Value = if answer.iter().all(u8::is_ascii_whitespace) {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(&answer).map_err(|e| Error::Plugin {
                plugin: self.name.clone(),
                method: method.to_string(),
                err: format!("answer is not JSON ({e}): {}", String::from_utf8_lossy(&answer)),
            })?
        };
        let err = v.get("Err").and_then(Value::as_str).filter(|e| !e.is_empty());
        if let Some(err) = err {
            return Err(Error::Plugin { plugin: self.name.clone(), method: method.to_string(), err: err.to_string() });
        }
        if status != 200 {
            return Err(Error::Plugin {
                plugin: self.name.clone(),
                method: method.to_string(),
                err: format!("HTTP status {status}"),
            });
        }
        Ok(v)
    }
}
