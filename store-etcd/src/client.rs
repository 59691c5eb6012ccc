//! The connection side of the store: the members, tried in turn until one
//! answers within the operation's deadline; TLS; etcd's authentication,
//! with the token taken again when it expires; a count of round trips.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::config::EtcdConfig;
use crate::error::{Error, ErrorKind};
use crate::http::{Conn, REQUEST_TIMEOUT};

/// How long one operation may try the members before it fails as
/// unavailable: a leader election (about a second) fits, a dead cluster
/// is said within a few seconds.
pub const OP_DEADLINE: Duration = Duration::from_secs(5);

/// The pause after every member failed once, before the next round.
const ROUND_PAUSE: Duration = Duration::from_millis(200);

pub(crate) struct Client {
    config: EtcdConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    netns: Option<cnm_netns::NetNs>,
    /// The member requests go to first.
    current: AtomicUsize,
    conn: Mutex<Option<Conn>>,
    token: Mutex<Option<String>>,
    round_trips: AtomicU64,
}

/// An answer etcd gives while it cannot serve (no leader yet, overloaded):
/// another member, or the same a moment later, may.
fn transient(e: &Error) -> bool {
    match e {
        Error::Connect { .. } | Error::Io { .. } => true,
        Error::Server { code, message, .. } => {
            *code == 14
                || ["no leader", "leader changed", "timed out", "too many requests", "not capable"]
                    .iter()
                    .any(|m| message.contains(m))
        }
        _ => false,
    }
}

/// etcd's answers about credentials, as this crate's errors.
fn auth_error(e: Error) -> Error {
    match e {
        Error::Server { endpoint, message, .. }
            if message.contains("authentication failed")
                || message.contains("permission denied")
                || message.contains("user name is empty") =>
        {
            let hint = if message.contains("user name is empty") {
                " (etcd's authentication is on: give a user and password)"
            } else {
                ""
            };
            Error::Auth { endpoint, reason: format!("{message}{hint}") }
        }
        other => other,
    }
}

fn token_expired(e: &Error) -> bool {
    matches!(e, Error::Server { message, .. } if message.contains("invalid auth token"))
}

impl Client {
    pub(crate) fn new(config: EtcdConfig, netns: Option<&cnm_netns::NetNs>) -> Result<Client, Error> {
        let tls = config.tls.as_ref().map(crate::tls::client_config).transpose()?;
        let netns = match netns {
            Some(ns) => Some(ns.try_clone().map_err(|e| Error::BadUrl {
                url: config.members_text(),
                reason: format!("cannot use the namespace: {e}"),
            })?),
            None => None,
        };
        Ok(Client {
            config,
            tls,
            netns,
            current: AtomicUsize::new(0),
            conn: Mutex::new(None),
            token: Mutex::new(None),
            round_trips: AtomicU64::new(0),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.config.prefix
    }

    pub(crate) fn members(&self) -> String {
        self.config.members_text()
    }

    pub(crate) fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Drops the auth token when `e` says it expired, so that the next
    /// connection takes a new one (a watch, which has no retry of its own).
    pub(crate) fn forget_expired_token(&self, e: &Error) {
        if token_expired(e) {
            *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// The auth token, if etcd's authentication gave one.
    pub(crate) fn token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A new connection to member `i`, made in the store's namespace.
    fn dial(&self, i: usize) -> Result<Conn, Error> {
        let m = &self.config.members[i];
        match &self.netns {
            None => Conn::connect(m, self.tls.as_ref()),
            Some(ns) => ns.run(|| Conn::connect(m, self.tls.as_ref())).map_err(|e| Error::Connect {
                endpoint: m.to_string(),
                source: std::io::Error::other(e.to_string()),
            })?,
        }
    }

    /// One request on `conn` and its decoded answer.
    fn exchange(&self, conn: &mut Conn, path: &str, body: &[u8], token: Option<&str>) -> Result<Value, Error> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        conn.send(path, body, token)?;
        Self::answer(conn, path)
    }

    /// The answer to a request sent on `conn`.
    fn answer(conn: &mut Conn, path: &str) -> Result<Value, Error> {
        let (status, length) = conn.read_head(path)?;
        let answer = conn.read_body(path, length)?;
        let v: Value = serde_json::from_slice(&answer)
            .map_err(|e| Error::Protocol(format!("{path}: {e}: {}", String::from_utf8_lossy(&answer))))?;
        if status != 200 || v.get("error").is_some() {
            return Err(Error::Server {
                endpoint: conn.member().to_string(),
                path: path.to_string(),
                code: v.get("code").and_then(Value::as_i64).unwrap_or(i64::from(status)),
                message: v.get("message").and_then(Value::as_str).unwrap_or("no message").to_string(),
            });
        }
        Ok(v)
    }

    /// Takes a token with the credentials, when there are some and no
    /// token yet. etcd without authentication needs none.
    fn authenticate(&self, conn: &mut Conn) -> Result<(), Error> {
        let Some(c) = &self.config.credentials else { return Ok(()) };
        if self.token().is_some() {
            return Ok(());
        }
        let body = serde_json::to_vec(&json!({ "name": c.user, "password": c.password })).expect("JSON encodes");
        match self.exchange(conn, "/v3/auth/authenticate", &body, None) {
            Ok(v) => {
                let token = v["token"].as_str().unwrap_or_default().to_string();
                *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(token).filter(|t| !t.is_empty());
                Ok(())
            }
            Err(Error::Server { message, .. }) if message.contains("authentication is not enabled") => Ok(()),
            Err(e) => Err(auth_error(e)),
        }
    }

    /// A connection (authenticated) to the first member that takes one,
    /// from the current member on, within `deadline`; for watches.
    pub(crate) fn connect_any(&self, deadline: Instant) -> Result<Conn, Error> {
        let mut failures = Vec::new();
        let n = self.config.members.len();
        for round in 0.. {
            for k in 0..n {
                let i = (self.current.load(Ordering::Relaxed) + k) % n;
                match self.dial(i).and_then(|mut c| self.authenticate(&mut c).map(|()| c)) {
                    Ok(c) => return Ok(c),
                    Err(e) if transient(&e) => failures.push(e.to_string()),
                    Err(e) => return Err(e),
                }
            }
            if Instant::now() + ROUND_PAUSE >= deadline || round > 1000 {
                break;
            }
            std::thread::sleep(ROUND_PAUSE);
        }
        Err(Error::Unavailable { endpoints: self.members(), reason: failures.join("; ") })
    }

    /// One request, to the current member or, when it cannot answer, the
    /// next ones in turn until [`OP_DEADLINE`]; its decoded answer.
    pub(crate) fn call(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.call_resent(path, body).map(|(v, _)| v)
    }

    /// [`Client::call`], and whether the request may have reached etcd more
    /// than once: sent, then its answer lost with its member, then sent to
    /// another.
    pub(crate) fn call_resent(&self, path: &str, body: &Value) -> Result<(Value, bool), Error> {
        tracing::trace!(path, "etcd request");
        let body = serde_json::to_vec(body).expect("JSON values always encode");
        let mut sent_before = false;
        let deadline = Instant::now() + OP_DEADLINE;
        let n = self.config.members.len();
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut failures: Vec<String> = Vec::new();
        let mut reauthenticated = false;
        let mut failed_in_round = 0;
        loop {
            let i = self.current.load(Ordering::Relaxed);
            let reused = guard.is_some();
            let mut sent = false;
            let result = (|| {
                if guard.is_none() {
                    let mut c = self.dial(i)?;
                    self.authenticate(&mut c)?;
                    *guard = Some(c);
                }
                let conn = guard.as_mut().expect("connected above");
                conn.set_read_timeout(REQUEST_TIMEOUT.min(deadline.saturating_duration_since(Instant::now())));
                self.round_trips.fetch_add(1, Ordering::Relaxed);
                conn.send(path, &body, self.token().as_deref())?;
                sent = true;
                Self::answer(conn, path)
            })();
            let e = match result {
                Ok(v) => return Ok((v, sent_before)),
                Err(e) => e,
            };
            // Only a lost answer can mean etcd did it; an answer is no doubt.
            sent_before |= sent && !matches!(e, Error::Server { .. });
            if token_expired(&e) && self.config.credentials.is_some() && !reauthenticated {
                reauthenticated = true;
                *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
                *guard = None;
                continue;
            }
            if !transient(&e) {
                return Err(auth_error(e));
            }
            *guard = None;
            // A kept-alive connection the member closed meanwhile is no
            // sign of trouble: the same member, once more, at once.
            if reused && e.kind() == ErrorKind::Unavailable && matches!(e, Error::Io { .. }) && failed_in_round == 0 {
                failed_in_round = 1;
                continue;
            }
            tracing::debug!(member = %self.config.members[i], error = %e, "etcd member failed; trying the next");
            failures.retain(|f| !f.starts_with(&self.config.members[i].to_string()));
            failures.push(format!("{}: {e}", self.config.members[i]));
            self.current.store((i + 1) % n, Ordering::Relaxed);
            failed_in_round += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Unavailable { endpoints: self.members(), reason: failures.join("; ") });
            }
            if failed_in_round >= n {
                failed_in_round = 0;
                std::thread::sleep(ROUND_PAUSE.min(left));
            }
        }
    }
}
