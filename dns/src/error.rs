//! The crate's one error type.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for callers that branch on the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A socket, a namespace or the redirect rule could not be set up.
    Io,
    /// The server is stopped, or no server answers on the control socket.
    Unavailable,
    /// A request on the control socket was malformed or refused.
    InvalidRequest,
}

/// Errors of the DNS server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call or a namespace operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done, e.g. `bind 127.0.0.11 in sandbox "c1"`.
        op: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A namespace operation failed.
    #[error("{op}: {source}")]
    Netns {
        /// What was being done.
        op: String,
        /// The underlying error.
        #[source]
        source: cnm_netns::Error,
    },
    /// The redirect of 127.0.0.11:53 inside a sandbox was refused.
    #[error("redirect 127.0.0.11:53 in sandbox {sandbox:?}: {reason}")]
    Redirect {
        /// The sandbox.
        sandbox: String,
        /// What nft said.
        reason: String,
    },
    /// The server is not running (stopped, or nothing listens on the
    /// control socket).
    #[error("DNS server at {at}: {reason}")]
    Unavailable {
        /// Where it was looked for.
        at: String,
        /// Why it cannot be reached.
        reason: String,
    },
    /// A control request was wrong or failed on the server's side.
    #[error("DNS control request {op:?}: {reason}")]
    InvalidRequest {
        /// The request.
        op: String,
        /// What was wrong.
        reason: String,
    },
}

impl Error {
    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } | Error::Netns { .. } | Error::Redirect { .. } => ErrorKind::Io,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::InvalidRequest { .. } => ErrorKind::InvalidRequest,
        }
    }

    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { op: op.into(), source }
    }

    pub(crate) fn netns(op: impl Into<String>, source: cnm_netns::Error) -> Error {
        Error::Netns { op: op.into(), source }
    }
}

impl From<Error> for cnm_core::Error {
    fn from(e: Error) -> cnm_core::Error {
        match e {
            Error::Unavailable { at, reason } => cnm_core::Error::Unavailable {
                op: "name server".into(),
                service: format!("DNS server at {at}"),
                reason,
            },
            other => cnm_core::Error::Kernel { op: "name server".into(), source: Box::new(other) },
        }
    }
}
