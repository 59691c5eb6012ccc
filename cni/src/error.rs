//! The plugin's errors, each with the CNI error code a runtime gets.

use serde::Serialize;

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong, with the CNI code it is reported under
/// ([`Error::code`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration's `cniVersion` is not one this plugin speaks (1).
    #[error("incompatible CNI version {version:?} (supported: {supported})")]
    IncompatibleVersion {
        /// The version asked for.
        version: String,
        /// Those spoken, comma-separated.
        supported: String,
    },
    /// An environment variable is missing or wrong (4).
    #[error("{name}: {reason}")]
    InvalidEnvironment {
        /// The variable (`CNI_COMMAND` …).
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The configuration is not JSON, or not of the expected shape (6).
    #[error("decoding {what}: {reason}")]
    Decode {
        /// What was decoded (`the network configuration` …).
        what: String,
        /// The decoder's message.
        reason: String,
    },
    /// A configuration value, capability argument or CNI argument is
    /// invalid (7).
    #[error("invalid network configuration: {field}: {reason}")]
    InvalidConfig {
        /// The key (`subnet`, `runtimeConfig.portMappings[0]` …).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A transient condition: a busy or unreachable store (11).
    #[error("try again later: {0}")]
    TryAgain(String),
    /// The plugin cannot serve now (`STATUS`, 50).
    #[error("not available: {0}")]
    NotAvailable(String),
    /// The delegated IPAM plugin failed; its code and message are passed on.
    #[error("IPAM plugin {plugin:?}: {msg}")]
    Delegate {
        /// The IPAM plugin's type.
        plugin: String,
        /// Its code.
        code: u32,
        /// Its message.
        msg: String,
        /// Its details.
        details: String,
    },
    /// `CHECK` found the container's network not as `ADD` left it (100).
    #[error("check failed: {0}")]
    CheckFailed(String),
    /// cnm refused or failed the operation (address in use, no such
    /// object, a kernel error …); see [`cnm_core::Error::kind`].
    #[error(transparent)]
    Cnm(#[from] cnm_core::Error),
}

/// The kind of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// [`Error::IncompatibleVersion`].
    IncompatibleVersion,
    /// [`Error::InvalidEnvironment`].
    InvalidEnvironment,
    /// [`Error::Decode`].
    Decode,
    /// [`Error::InvalidConfig`].
    InvalidConfig,
    /// [`Error::TryAgain`].
    TryAgain,
    /// [`Error::NotAvailable`].
    NotAvailable,
    /// [`Error::Delegate`].
    Delegate,
    /// [`Error::CheckFailed`].
    CheckFailed,
    /// [`Error::Cnm`].
    Cnm,
}

impl Error {
    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::IncompatibleVersion { .. } => ErrorKind::IncompatibleVersion,
            Error::InvalidEnvironment { .. } => ErrorKind::InvalidEnvironment,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::InvalidConfig { .. } => ErrorKind::InvalidConfig,
            Error::TryAgain(_) => ErrorKind::TryAgain,
            Error::NotAvailable(_) => ErrorKind::NotAvailable,
            Error::Delegate { .. } => ErrorKind::Delegate,
            Error::CheckFailed(_) => ErrorKind::CheckFailed,
            Error::Cnm(_) => ErrorKind::Cnm,
        }
    }

    /// The CNI error code: the specification's (1 incompatible version, 4
    /// invalid environment, 6 decoding failure, 7 invalid configuration,
    /// 11 try again later, 50 not available), the delegate's own, or ours
    /// from 100 up (100 check failed, 101 a conflict such as an address in
    /// use, 102 exhausted, 103 not found, 110 any other failure).
    pub fn code(&self) -> u32 {
        use cnm_core::ErrorKind as K;
        match self {
            Error::IncompatibleVersion { .. } => 1,
            Error::InvalidEnvironment { .. } => 4,
            Error::Decode { .. } => 6,
            Error::InvalidConfig { .. } => 7,
            Error::TryAgain(_) => 11,
            Error::NotAvailable(_) => 50,
            Error::Delegate { code, .. } => *code,
            Error::CheckFailed(_) => 100,
            Error::Cnm(e) => match e.kind() {
                K::InvalidParameter => 7,
                K::Unavailable => 11,
                K::AlreadyExists | K::Conflict => 101,
                K::Exhausted => 102,
                K::NotFound => 103,
                _ => 110,
            },
        }
    }

    pub(crate) fn env(name: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidEnvironment { name, reason: reason.into() }
    }

    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidConfig { field: field.into(), reason: reason.into() }
    }

    /// The error as the specification's JSON object.
    pub fn to_cni(&self, cni_version: &str) -> CniError {
        let details = match self {
            Error::Delegate { details, .. } => details.clone(),
            Error::Cnm(e) => format!("{:?}", e.kind()),
            _ => String::new(),
        };
        CniError { cni_version: cni_version.to_string(), code: self.code(), msg: self.to_string(), details }
    }
}

/// The error a plugin prints on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniError {
    /// The version of the configuration (or the latest).
    pub cni_version: String,
    /// The code.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// More, possibly empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl From<cnm_netns::Error> for Error {
    fn from(e: cnm_netns::Error) -> Error {
        Error::Cnm(e.into())
    }
}
