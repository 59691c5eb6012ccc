//! The crate's one error type.

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for callers that branch on the cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No such network, endpoint, sandbox, pool, address or key.
    NotFound,
    /// The name (or key) is taken.
    AlreadyExists,
    /// The request itself is wrong.
    InvalidParameter,
    /// The request clashes with the current state (in use, changed concurrently).
    Conflict,
    /// Nothing left to give (subnets, addresses, ports, bridge ports).
    Exhausted,
    /// Not allowed in this situation (e.g. a host-mode sandbox joining another network).
    Forbidden,
    /// The kernel refused.
    Kernel,
    /// A bug or an unexpected condition (corrupt state, I/O failure).
    Internal,
    /// A service the operation needs (a remote store) cannot be reached
    /// now; the same request may work later.
    Unavailable,
}

/// Errors of cnm-core and of the drivers, IPAM, stores and firewalls that
/// plug into it. Every message names what was wrong and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No such object.
    #[error("{what} {name:?} not found")]
    NotFound {
        /// Kind of object: `network`, `endpoint`, `sandbox` …
        what: &'static str,
        /// The name, id or prefix that was looked up.
        name: String,
    },
    /// The name is taken.
    #[error("{what} {name:?} already exists")]
    AlreadyExists {
        /// Kind of object.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A prefix matched several objects.
    #[error("{what} prefix {prefix:?} is ambiguous: it matches {matches} objects")]
    Ambiguous {
        /// Kind of object.
        what: &'static str,
        /// The prefix.
        prefix: String,
        /// How many objects it matched.
        matches: usize,
    },
    /// A parameter was wrong.
    #[error("invalid {field}: {reason}")]
    InvalidParameter {
        /// Which parameter, e.g. `ipam.config[0].gateway` or `option com.docker.network.driver.mtu`.
        field: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The request clashes with the current state.
    #[error("{what}: {reason}")]
    Conflict {
        /// The object in conflict.
        what: String,
        /// Why.
        reason: String,
    },
    /// A resource is exhausted.
    #[error("{what} exhausted: {reason}")]
    Exhausted {
        /// The resource.
        what: String,
        /// Details.
        reason: String,
    },
    /// Not allowed.
    #[error("{what}: {reason}")]
    Forbidden {
        /// The operation or object.
        what: String,
        /// Why it is not allowed.
        reason: String,
    },
    /// The kernel (or a kernel tool) refused an operation.
    #[error("{op}: {source}")]
    Kernel {
        /// The operation, e.g. `bridge create_network "br-0123456789ab"`.
        op: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A store failed or holds something unreadable.
    #[error("store {op} {key:?}: {reason}")]
    Store {
        /// The store operation.
        op: &'static str,
        /// The key or file involved.
        key: String,
        /// What went wrong.
        reason: String,
    },
    /// A remote service (the etcd store) cannot be reached.
    #[error("{op}: {service} is unreachable: {reason}")]
    Unavailable {
        /// What was being done.
        op: String,
        /// The service and its address, e.g. `etcd at 10.0.0.1:2379`.
        service: String,
        /// The socket error.
        reason: String,
    },
    /// Anything else unexpected.
    #[error("internal error: {0}")]
    Internal(String),
    /// A best-effort teardown (or rollback) met errors; all are kept.
    #[error("{op}: {} error(s): {}", errors.len(), join(errors))]
    Teardown {
        /// What was being torn down.
        op: String,
        /// Every error met on the way.
        errors: Vec<Error>,
    },
    /// An operation failed, and undoing what it had done failed too.
    #[error("{source}; rollback also failed: {rollback}")]
    RollbackFailed {
        /// The original error.
        source: Box<Error>,
        /// The errors met while undoing.
        rollback: Box<Error>,
    },
}

fn join(errors: &[Error]) -> String {
    errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ")
}

impl Error {
    /// The cause, for callers that branch on it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Ambiguous { .. } | Error::InvalidParameter { .. } => ErrorKind::InvalidParameter,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::Exhausted { .. } => ErrorKind::Exhausted,
            Error::Forbidden { .. } => ErrorKind::Forbidden,
            Error::Kernel { .. } => ErrorKind::Kernel,
            Error::Store { .. } | Error::Internal(_) => ErrorKind::Internal,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Teardown { errors, .. } => errors.first().map(Error::kind).unwrap_or(ErrorKind::Internal),
            Error::RollbackFailed { source, .. } => source.kind(),
        }
    }

    /// An invalid parameter.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidParameter { field: field.into(), reason: reason.into() }
    }

    /// A kernel error with the operation that met it.
    pub fn kernel(op: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Kernel { op: op.into(), source: Box::new(source) }
    }

    /// A conflict.
    pub fn conflict(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Conflict { what: what.into(), reason: reason.into() }
    }

    /// A store error.
    pub fn store(op: &'static str, key: impl Into<String>, reason: impl std::fmt::Display) -> Error {
        Error::Store { op, key: key.into(), reason: reason.to_string() }
    }

    /// Collects a teardown's errors: `Ok` when there were none.
    pub fn teardown(op: impl Into<String>, errors: Vec<Error>) -> Result<()> {
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown { op: op.into(), errors })
        }
    }
}

impl Error {
    /// The one mapping of a cnm-netns error: a request cnm-netns refused
    /// before asking the kernel (a bad interface name) is an invalid
    /// parameter; anything the kernel refused is a kernel error of `op`.
    pub fn from_netns(op: impl Into<String>) -> impl FnOnce(cnm_netns::Error) -> Error {
        let op = op.into();
        move |e| match (e.kind(), e.errno()) {
            (cnm_netns::ErrorKind::InvalidArgument, None) => Error::invalid("interface", e.to_string()),
            _ => Error::kernel(op, e),
        }
    }
}

impl From<cnm_netns::Error> for Error {
    fn from(e: cnm_netns::Error) -> Error {
        Error::from_netns("netns")(e)
    }
}
