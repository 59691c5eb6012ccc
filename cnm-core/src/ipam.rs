//! The IPAM trait: subnets for networks, addresses for endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Which set of default pools a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AddressSpace {
    /// This host's networks (bridge).
    #[default]
    Local,
    /// Networks shared by every host (overlay).
    Global,
}

/// A request for a subnet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRequest {
    /// Address space.
    pub space: AddressSpace,
    /// An explicit subnet, or `None` for the next free one.
    pub subnet: Option<IpNet>,
    /// Hand out addresses only from this range.
    pub ip_range: Option<IpNet>,
    /// Addresses reserved by name.
    pub aux: BTreeMap<String, IpAddr>,
    /// The gateway to reserve; `None` reserves the subnet's first address.
    pub gateway: Option<IpAddr>,
    /// IPv6 instead of IPv4 (for automatic subnets).
    pub v6: bool,
    /// Prefixes an automatic subnet must not overlap (the host's routes).
    pub avoid: Vec<IpNet>,
    /// Who asks (a network id), recorded with the pool.
    pub owner: String,
}

/// A subnet IPAM gave out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    /// Id to name it in later calls.
    pub id: String,
    /// The subnet.
    pub subnet: IpNet,
    /// The range addresses come from.
    pub ip_range: Option<IpNet>,
    /// The reserved gateway, with the subnet's prefix length.
    pub gateway: IpNet,
    /// Who asked for it.
    pub owner: String,
}

/// A request for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressRequest {
    /// The next free one.
    Any,
    /// Exactly this one.
    Exact(IpAddr),
}

/// IP address management. Implementations persist what they give out, so a
/// crash never hands the same address out twice. A pool's network address,
/// IPv4 broadcast address, gateway and auxiliary addresses are reserved with
/// the pool and never handed out; they go when the pool goes.
pub trait IpamDriver: Send + Sync {
    /// Reserves a subnet.
    fn request_pool(&self, req: &PoolRequest) -> Result<Pool>;
    /// Releases a subnet and every address in it.
    fn release_pool(&self, pool_id: &str) -> Result<()>;
    /// Reserves an address of a pool; returns it with the pool's prefix length.
    fn request_address(&self, pool_id: &str, req: AddressRequest) -> Result<IpNet>;
    /// Releases an address; one that is not allocated is an error.
    fn release_address(&self, pool_id: &str, addr: IpAddr) -> Result<()>;
    /// Every pool given out.
    fn pools(&self) -> Result<Vec<Pool>>;
    /// Every address of a pool handed out by `request_address` (reserved
    /// addresses are not listed).
    fn addresses(&self, pool_id: &str) -> Result<Vec<IpAddr>>;
    /// Releases every allocated address not in `live` and returns what it
    /// freed. Addresses of global pools (ids starting `global-`) are shared
    /// by a cluster and must be left alone: `live` lists one host's only.
    fn gc(&self, live: &BTreeSet<(String, IpAddr)>) -> Result<Vec<(String, IpAddr)>> {
        let mut freed = Vec::new();
        for p in self.pools()? {
            for a in self.addresses(&p.id)? {
                if !live.contains(&(p.id.clone(), a)) {
                    self.release_address(&p.id, a)?;
                    freed.push((p.id.clone(), a));
                }
            }
        }
        Ok(freed)
    }
}
