//! What can go wrong talking to etcd.

use std::io;

/// An error of the etcd store. It becomes a [`cnm_core::Error::Store`] at
/// the [`Store`](cnm_core::Store) boundary, keeping its text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint URL is not `http://host:port[/prefix]`.
    #[error("etcd endpoint {url:?}: {reason}")]
    BadUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made.
    #[error("cannot connect to etcd at {endpoint}: {source}")]
    Connect {
        /// host:port.
        endpoint: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The connection failed during a request.
    #[error("etcd at {endpoint}: {path}: {source}")]
    Io {
        /// host:port.
        endpoint: String,
        /// The API path.
        path: String,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// etcd answered with an error.
    #[error("etcd at {endpoint}: {path}: {message} (code {code})")]
    Server {
        /// host:port.
        endpoint: String,
        /// The API path.
        path: String,
        /// etcd's gRPC status code.
        code: i64,
        /// etcd's message.
        message: String,
    },
    /// An answer that is not what the API documents.
    #[error("unexpected answer from etcd: {0}")]
    Protocol(String),
    /// A lease that expired or was revoked.
    #[error("etcd lease {0:x} has expired")]
    LeaseExpired(i64),
    /// A TLS file that cannot be used.
    #[error("etcd TLS: {what}: {reason}")]
    TlsFiles {
        /// Which file, and its path.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS handshake failed: a member whose certificate the CA did not
    /// sign, or a member that refused the client certificate (or its
    /// absence).
    #[error("etcd at {endpoint}: TLS handshake failed: {reason}")]
    Tls {
        /// host:port.
        endpoint: String,
        /// Why, and what to check.
        reason: String,
    },
    /// etcd's authentication refused the credentials, or wants some.
    #[error("etcd at {endpoint}: authentication: {reason}")]
    Auth {
        /// host:port.
        endpoint: String,
        /// etcd's message, and what to check.
        reason: String,
    },
    /// No member answered in time.
    #[error("etcd unavailable (tried {endpoints}): {reason}")]
    Unavailable {
        /// The members tried, comma-separated.
        endpoints: String,
        /// The last failure of each.
        reason: String,
    },
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad configuration.
    InvalidParameter,
    /// etcd could not be reached (retry later).
    Unavailable,
    /// etcd refused the request.
    Server,
    /// The lease is gone.
    LeaseExpired,
    /// TLS or authentication refused this client.
    Denied,
}

impl Error {
    /// The kind, for callers that branch on it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadUrl { .. } | Error::TlsFiles { .. } => ErrorKind::InvalidParameter,
            Error::Connect { .. } | Error::Io { .. } | Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Tls { .. } | Error::Auth { .. } => ErrorKind::Denied,
            Error::Server { .. } | Error::Protocol(_) => ErrorKind::Server,
            Error::LeaseExpired(_) => ErrorKind::LeaseExpired,
        }
    }
}

impl From<Error> for cnm_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::BadUrl { url, reason } => cnm_core::Error::invalid(format!("etcd endpoint {url:?}"), reason),
            Error::TlsFiles { what, reason } => cnm_core::Error::invalid(format!("etcd TLS {what}"), reason),
            Error::Tls { endpoint, reason } => {
                cnm_core::Error::Forbidden { what: format!("TLS to etcd at {endpoint}"), reason }
            }
            Error::Auth { endpoint, reason } => {
                cnm_core::Error::Forbidden { what: format!("authentication to etcd at {endpoint}"), reason }
            }
            Error::Unavailable { endpoints, reason } => {
                cnm_core::Error::Unavailable { op: "request".into(), service: format!("etcd at {endpoints}"), reason }
            }
            Error::LeaseExpired(id) => cnm_core::Error::NotFound { what: "lease", name: format!("{id:x}") },
            Error::Connect { endpoint, source } => cnm_core::Error::Unavailable {
                op: "connect".into(),
                service: format!("etcd at {endpoint}"),
                reason: source.to_string(),
            },
            Error::Io { endpoint, path, source } => cnm_core::Error::Unavailable {
                op: path,
                service: format!("etcd at {endpoint}"),
                reason: source.to_string(),
            },
            other => cnm_core::Error::store("etcd", "", other),
        }
    }
}
