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
    /// The address space it belongs to: a global pool is the cluster's.
    #[serde(default)]
    pub space: AddressSpace,
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
    /// Releases every allocated address of a local pool not in `live` and
    /// returns what it freed. Addresses of global pools are shared by a
    /// cluster and are left alone: `live` lists one host's only.
    fn gc(&self, live: &BTreeSet<(String, IpAddr)>) -> Result<Vec<(String, IpAddr)>> {
        let mut freed = Vec::new();
        for p in self.pools()?.into_iter().filter(|p| p.space == AddressSpace::Local) {
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Two pools, one per space, each with one address nobody uses.
    struct TwoPools(Mutex<Vec<(String, IpAddr)>>);

    impl IpamDriver for TwoPools {
        fn request_pool(&self, _: &PoolRequest) -> Result<Pool> {
            unimplemented!()
        }
        fn release_pool(&self, _: &str) -> Result<()> {
            unimplemented!()
        }
        fn request_address(&self, _: &str, _: AddressRequest) -> Result<IpNet> {
            unimplemented!()
        }
        fn release_address(&self, pool_id: &str, addr: IpAddr) -> Result<()> {
            self.0.lock().unwrap().retain(|(p, a)| !(p == pool_id && *a == addr));
            Ok(())
        }
        fn pools(&self) -> Result<Vec<Pool>> {
            let pool = |id: &str, space, subnet: &str, gw: &str| Pool {
                id: id.into(),
                space,
                subnet: subnet.parse().unwrap(),
                ip_range: None,
                gateway: gw.parse().unwrap(),
                owner: "n".into(),
            };
            Ok(vec![
                pool("l", AddressSpace::Local, "10.0.0.0/24", "10.0.0.1/24"),
                // An id that does not say "global": the space does.
                pool("g", AddressSpace::Global, "10.1.0.0/24", "10.1.0.1/24"),
            ])
        }
        fn addresses(&self, pool_id: &str) -> Result<Vec<IpAddr>> {
            Ok(self.0.lock().unwrap().iter().filter(|(p, _)| p == pool_id).map(|(_, a)| *a).collect())
        }
    }

    #[test]
    fn the_default_gc_never_releases_addresses_of_a_global_pool() {
        let ipam = TwoPools(Mutex::new(vec![
            ("l".into(), "10.0.0.2".parse().unwrap()),
            ("g".into(), "10.1.0.2".parse().unwrap()),
        ]));
        let freed = ipam.gc(&BTreeSet::new()).unwrap();
        assert_eq!(freed, vec![("l".to_string(), "10.0.0.2".parse().unwrap())]);
        assert_eq!(ipam.addresses("g").unwrap(), vec!["10.1.0.2".parse::<IpAddr>().unwrap()]);
    }
}
