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
}

impl Error {
    /// The kind, for callers that branch on it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadUrl { .. } => ErrorKind::InvalidParameter,
            Error::Connect { .. } | Error::Io { .. } => ErrorKind::Unavailable,
            Error::Server { .. } | Error::Protocol(_) => ErrorKind::Server,
            Error::LeaseExpired(_) => ErrorKind::LeaseExpired,
        }
    }
}

impl From<Error> for cnm_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::BadUrl { url, reason } => cnm_core::Error::invalid(format!("etcd endpoint {url:?}"), reason),
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
