//! The crate's one error type.

use std::fmt;

use nix::errno::Errno;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, for callers that branch on the cause rather than the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object (link, address, route, namespace …) does not exist.
    NotFound,
    /// An object with that name or key already exists.
    AlreadyExists,
    /// The request was malformed; rejected by validation or by the kernel.
    InvalidArgument,
    /// The caller lacks the privilege (usually `CAP_NET_ADMIN` or `CAP_SYS_ADMIN`).
    PermissionDenied,
    /// Any other error the kernel reported.
    Kernel,
    /// A system call outside netlink failed (opening a namespace, mounting …).
    Io,
    /// The kernel sent a reply this crate could not decode.
    Protocol,
    /// A closure run inside a namespace panicked.
    Panicked,
    /// An external program run inside a namespace failed.
    Command,
}

/// Text the kernel attached to an error through extended ACK, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelMessage(pub Option<String>);

impl fmt::Display for KernelMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(m) if !m.is_empty() => write!(f, " ({m})"),
            _ => Ok(()),
        }
    }
}

/// Errors of `cnm-netns`. Every variant names the operation (named after
/// iproute2: `link_add`, `addr_add` …) and the object it was applied to, for
/// example `link_add veth "vethab12": File exists`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{op} {object}: {}{message}", describe(*errno))]
    NotFound {
        /// Operation, e.g. `link_del`.
        op: &'static str,
        /// Object, e.g. `link "br0"`.
        object: String,
        /// The errno the kernel returned (`libc::ENOENT` …).
        errno: i32,
        /// Extended ACK text from the kernel.
        message: KernelMessage,
    },
    /// The object already exists.
    #[error("{op} {object}: {}{message}", describe(*errno))]
    AlreadyExists {
        /// Operation.
        op: &'static str,
        /// Object.
        object: String,
        /// The errno the kernel returned (`libc::ENOENT` …).
        errno: i32,
        /// Extended ACK text from the kernel.
        message: KernelMessage,
    },
    /// Input rejected before any system call was made.
    #[error("{op} {object}: {reason}")]
    Invalid {
        /// Operation.
        op: &'static str,
        /// Object.
        object: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The kernel rejected the request as invalid (`EINVAL`, `ERANGE` …).
    #[error("{op} {object}: {}{message}", describe(*errno))]
    KernelInvalid {
        /// Operation.
        op: &'static str,
        /// Object.
        object: String,
        /// The errno the kernel returned (`libc::ENOENT` …).
        errno: i32,
        /// Extended ACK text from the kernel.
        message: KernelMessage,
    },
    /// `EPERM` or `EACCES`.
    #[error("{op} {object}: {}{message}", describe(*errno))]
    PermissionDenied {
        /// Operation.
        op: &'static str,
        /// Object.
        object: String,
        /// The errno the kernel returned (`libc::ENOENT` …).
        errno: i32,
        /// Extended ACK text from the kernel.
        message: KernelMessage,
    },
    /// Any other kernel error.
    #[error("{op} {object}: {}{message}", describe(*errno))]
    Kernel {
        /// Operation.
        op: &'static str,
        /// Object.
        object: String,
        /// The errno the kernel returned (`libc::ENOENT` …).
        errno: i32,
        /// Extended ACK text from the kernel.
        message: KernelMessage,
    },
    /// A system call outside netlink failed.
    #[error("{op} {object}: {source}")]
    Io {
        /// Operation.
        op: &'static str,
        /// Object (a path, a namespace …).
        object: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel's reply could not be decoded.
    #[error("{op} {object}: malformed netlink reply: {reason}")]
    Protocol {
        /// Operation.
        op: &'static str,
        /// Object.
        object: String,
        /// What was malformed.
        reason: String,
    },
    /// A closure run with [`NetNs::run`](crate::NetNs::run) panicked.
    #[error("run in namespace {namespace}: the closure panicked: {message}")]
    Panicked {
        /// The namespace the closure ran in.
        namespace: String,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// An external program run inside a namespace failed.
    #[error("{program} in namespace {namespace}: {status}: {stderr}")]
    Command {
        /// Program and arguments.
        program: String,
        /// The namespace it ran in.
        namespace: String,
        /// How it ended.
        status: String,
        /// What it printed on standard error.
        stderr: String,
    },
}

/// The C library's text for an errno.
fn describe(errno: i32) -> &'static str {
    Errno::from_raw(errno).desc()
}

impl Error {
    /// The cause, for callers that branch on it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Invalid { .. } | Error::KernelInvalid { .. } => ErrorKind::InvalidArgument,
            Error::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Error::Kernel { .. } => ErrorKind::Kernel,
            Error::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                _ => ErrorKind::Io,
            },
            Error::Protocol { .. } => ErrorKind::Protocol,
            Error::Panicked { .. } => ErrorKind::Panicked,
            Error::Command { .. } => ErrorKind::Command,
        }
    }

    /// The errno behind a kernel or system-call error, if there is one, as
    /// the raw number (`libc::EEXIST` …; no third-party type, so that a
    /// version change of the errno crate we use changes nothing for you).
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::NotFound { errno, .. }
            | Error::AlreadyExists { errno, .. }
            | Error::KernelInvalid { errno, .. }
            | Error::PermissionDenied { errno, .. }
            | Error::Kernel { errno, .. } => Some(*errno),
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Builds the variant that fits a kernel errno.
    #[cfg_attr(not(feature = "rtnetlink"), allow(dead_code))]
    pub(crate) fn from_errno(
        op: &'static str,
        object: impl Into<String>,
        errno: Errno,
        message: Option<String>,
    ) -> Error {
        let object = object.into();
        let message = KernelMessage(message);
        let code = errno;
        let errno = code as i32;
        match code {
            Errno::ENOENT | Errno::ENODEV | Errno::ESRCH | Errno::EADDRNOTAVAIL => {
                Error::NotFound { op, object, errno, message }
            }
            Errno::EEXIST | Errno::EADDRINUSE => Error::AlreadyExists { op, object, errno, message },
            Errno::EINVAL | Errno::ERANGE | Errno::EOPNOTSUPP | Errno::EAFNOSUPPORT | Errno::E2BIG => {
                Error::KernelInvalid { op, object, errno, message }
            }
            Errno::EPERM | Errno::EACCES => Error::PermissionDenied { op, object, errno, message },
            _ => Error::Kernel { op, object, errno, message },
        }
    }

    /// Wraps an I/O error with its context.
    pub(crate) fn io(op: &'static str, object: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { op, object: object.into(), source }
    }

    /// An input rejected before any system call.
    pub(crate) fn invalid(op: &'static str, object: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Invalid { op, object: object.into(), reason: reason.into() }
    }
}
