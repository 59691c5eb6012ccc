//! The crate's one error type.

use cnm_core::PortBinding;

/// Errors of cnm-nat.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatError {
    /// A host address/port/protocol is already published.
    #[error("port {}/{} on {} is already published by endpoint {owner}", binding.host_port, binding.protocol, binding.host_ip.map(|a| a.to_string()).unwrap_or_else(|| "all addresses".into()))]
    PortInUse {
        /// The binding asked for.
        binding: PortBinding,
        /// The endpoint that has it.
        owner: String,
    },
    /// No free port in the ephemeral range.
    #[error("no free host port for {0} in the ephemeral range")]
    NoFreePort(String),
    /// The host itself uses the port (a service listens on it), as
    /// Docker's proxy finds when its bind fails.
    #[error("port {}/{} on {} is in use on the host: {reason}", binding.host_port, binding.protocol, binding.host_ip.map(|a| a.to_string()).unwrap_or_else(|| "all addresses".into()))]
    HostPortInUse {
        /// The binding asked for.
        binding: PortBinding,
        /// What the host said.
        reason: String,
    },
    /// A port mapping is wrong.
    #[error("invalid port mapping {mapping}: {reason}")]
    InvalidMapping {
        /// The mapping, as Docker writes it.
        mapping: String,
        /// Why.
        reason: String,
    },
    /// `nft` or `iptables-restore` refused the transaction (nothing changed).
    #[error("{tool} in {namespace}: {stderr}")]
    Apply {
        /// The tool.
        tool: String,
        /// The host namespace.
        namespace: String,
        /// What it said.
        stderr: String,
    },
    /// The firewall tool is not installed.
    #[error("{tool} not found: install Debian's {package} package")]
    ToolMissing {
        /// The command.
        tool: String,
        /// The Debian package that has it.
        package: String,
    },
    /// A store or namespace error.
    #[error(transparent)]
    Core(#[from] cnm_core::Error),
}

impl NatError {
    /// The cnm-core error kind this maps to.
    pub fn kind(&self) -> cnm_core::ErrorKind {
        use cnm_core::ErrorKind as K;
        match self {
            NatError::PortInUse { .. } | NatError::HostPortInUse { .. } => K::Conflict,
            NatError::NoFreePort(_) => K::Exhausted,
            NatError::InvalidMapping { .. } => K::InvalidParameter,
            NatError::Apply { .. } | NatError::ToolMissing { .. } => K::Kernel,
            NatError::Core(e) => e.kind(),
        }
    }
}

impl From<NatError> for cnm_core::Error {
    fn from(e: NatError) -> cnm_core::Error {
        let text = e.to_string();
        match e {
            NatError::Core(inner) => inner,
            NatError::PortInUse { binding, .. } | NatError::HostPortInUse { binding, .. } => {
                cnm_core::Error::conflict(format!("port {}/{}", binding.host_port, binding.protocol), text)
            }
            NatError::NoFreePort(_) => cnm_core::Error::Exhausted { what: "host ports".into(), reason: text },
            NatError::InvalidMapping { mapping, reason } => {
                cnm_core::Error::invalid(format!("port mapping {mapping}"), reason)
            }
            other => cnm_core::Error::kernel("firewall", other),
        }
    }
}

impl From<cnm_netns::Error> for NatError {
    fn from(e: cnm_netns::Error) -> NatError {
        NatError::Core(e.into())
    }
}
