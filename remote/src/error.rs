//! The crate's one error type.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for callers that branch on the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The socket could not be set up or used.
    Io,
    /// A request was malformed or named something that does not exist.
    InvalidRequest,
    /// The controller refused or failed the operation.
    Controller(cnm_core::ErrorKind),
}

/// Errors of the plugin server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed.
    #[error("{op}: {source}")]
    Io {
        /// What was being done, e.g. `listen on /run/docker/plugins/cnm.sock`.
        op: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A request that cannot be served as sent.
    #[error("{method}: {reason}")]
    InvalidRequest {
        /// The protocol method, e.g. `NetworkDriver.CreateEndpoint`.
        method: String,
        /// What was wrong, naming the field.
        reason: String,
    },
    /// What the controller said.
    #[error("{method}: {source}")]
    Controller {
        /// The protocol method.
        method: String,
        /// The controller's error.
        #[source]
        source: cnm_core::Error,
    },
}

impl Error {
    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } => ErrorKind::Io,
            Error::InvalidRequest { .. } => ErrorKind::InvalidRequest,
            Error::Controller { source, .. } => ErrorKind::Controller(source.kind()),
        }
    }

    pub(crate) fn io(op: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { op: op.into(), source }
    }

    pub(crate) fn invalid(method: &str, reason: impl Into<String>) -> Error {
        Error::InvalidRequest { method: method.to_string(), reason: reason.into() }
    }

    /// Wraps a controller error with the method it failed.
    pub(crate) fn controller(method: &str) -> impl Fn(cnm_core::Error) -> Error + '_ {
        move |source| Error::Controller { method: method.to_string(), source }
    }
}
