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
    /// No plugin of that name was found.
    NotFound,
    /// A plugin answered with an error.
    Plugin,
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
    /// No socket or spec file names the plugin.
    #[error("plugin {plugin:?} not found (no /run/docker/plugins/{plugin}.sock, no spec file in /etc/docker/plugins or /usr/lib/docker/plugins)")]
    NotFound {
        /// The plugin's name.
        plugin: String,
    },
    /// A plugin's `Err` answer (or an answer that was not JSON).
    #[error("plugin {plugin:?} {method}: {err}")]
    Plugin {
        /// The plugin's name.
        plugin: String,
        /// The protocol method.
        method: String,
        /// What it said.
        err: String,
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
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Plugin { .. } => ErrorKind::Plugin,
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

/// For the driver and IPAM traits: a plugin that cannot be reached is
/// unavailable; anything it refused keeps its words.
impl From<Error> for cnm_core::Error {
    fn from(e: Error) -> cnm_core::Error {
        match e {
            Error::NotFound { plugin } => cnm_core::Error::NotFound { what: "plugin", name: plugin },
            Error::Io { op, source } => {
                cnm_core::Error::Unavailable { op, service: "the plugin".into(), reason: source.to_string() }
            }
            Error::Controller { source, .. } => source,
            other => cnm_core::Error::Kernel { op: "remote plugin".into(), source: Box::new(other) },
        }
    }
}
