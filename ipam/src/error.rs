//! The crate's one error type.

use std::net::IpAddr;

use cnm_core::AddressSpace;
use ipnet::IpNet;

/// Errors of cnm-ipam. Each names the input that was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpamError {
    /// An explicit subnet overlaps a pool already allocated in the same space.
    #[error("subnet {subnet} overlaps pool {existing} ({pool})")]
    PoolOverlap {
        /// The requested subnet.
        subnet: IpNet,
        /// The allocated subnet it overlaps.
        existing: IpNet,
        /// That pool's id.
        pool: String,
    },
    /// No default pool has a free subnet left.
    #[error("no available {family} subnet in the {space:?} address space (default pools exhausted or overlapping the host's routes)")]
    NoAvailablePool {
        /// The address space.
        space: AddressSpace,
        /// `IPv4` or `IPv6`.
        family: &'static str,
    },
    /// The pool has no free address left.
    #[error("no available address in pool {pool} ({range})")]
    NoAvailableAddress {
        /// Pool id.
        pool: String,
        /// The range addresses come from.
        range: IpNet,
    },
    /// The requested address is taken.
    #[error("address {address} of pool {pool} is in use: {reason}")]
    AddressInUse {
        /// The address.
        address: IpAddr,
        /// Pool id.
        pool: String,
        /// `allocated`, or what reserves it (`the gateway` …).
        reason: String,
    },
    /// The requested address is outside the pool (or its ip-range).
    #[error("address {address} is outside {range} of pool {pool}")]
    AddressOutOfRange {
        /// The address.
        address: IpAddr,
        /// Pool id.
        pool: String,
        /// The subnet or ip-range it should be in.
        range: IpNet,
    },
    /// Release of an address that is not allocated.
    #[error("address {address} is not allocated in pool {pool}")]
    NotAllocated {
        /// The address.
        address: IpAddr,
        /// Pool id.
        pool: String,
    },
    /// No such pool.
    #[error("pool {pool} not found")]
    PoolNotFound {
        /// Pool id.
        pool: String,
    },
    /// The pool request itself is wrong.
    #[error("invalid pool: {field}: {reason}")]
    InvalidPool {
        /// What was wrong: `subnet 10.1.1.5/24`, `gateway 10.2.0.1` …
        field: String,
        /// Why.
        reason: String,
    },
    /// Compare-and-swap kept losing against other writers.
    #[error("pool {pool}: gave up after {retries} concurrent updates")]
    Conflict {
        /// Pool id (or the space record).
        pool: String,
        /// How many attempts were made.
        retries: usize,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] cnm_core::Error),
}

impl IpamError {
    /// The cnm-core error kind this maps to.
    pub fn kind(&self) -> cnm_core::ErrorKind {
        use cnm_core::ErrorKind as K;
        match self {
            IpamError::PoolOverlap { .. } | IpamError::AddressInUse { .. } | IpamError::Conflict { .. } => K::Conflict,
            IpamError::NoAvailablePool { .. } | IpamError::NoAvailableAddress { .. } => K::Exhausted,
            IpamError::AddressOutOfRange { .. } | IpamError::InvalidPool { .. } => K::InvalidParameter,
            IpamError::NotAllocated { .. } | IpamError::PoolNotFound { .. } => K::NotFound,
            IpamError::Store(e) => e.kind(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> IpamError {
        IpamError::InvalidPool { field: field.into(), reason: reason.into() }
    }
}

impl From<IpamError> for cnm_core::Error {
    fn from(e: IpamError) -> cnm_core::Error {
        use cnm_core::Error as E;
        let text = e.to_string();
        match e {
            IpamError::Store(inner) => inner,
            IpamError::PoolOverlap { subnet, .. } => E::conflict(format!("subnet {subnet}"), text),
            IpamError::AddressInUse { address, .. } => E::conflict(format!("address {address}"), text),
            IpamError::Conflict { pool, .. } => E::conflict(format!("pool {pool}"), text),
            IpamError::NoAvailablePool { .. } => E::Exhausted { what: "subnets".into(), reason: text },
            IpamError::NoAvailableAddress { pool, .. } => {
                E::Exhausted { what: format!("addresses of pool {pool}"), reason: text }
            }
            IpamError::AddressOutOfRange { .. } => E::invalid("address", text),
            IpamError::InvalidPool { field, reason } => E::invalid(field, reason),
            IpamError::NotAllocated { address, .. } => E::NotFound { what: "address", name: address.to_string() },
            IpamError::PoolNotFound { pool } => E::NotFound { what: "pool", name: pool },
        }
    }
}
