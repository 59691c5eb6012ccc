//! The `IpamDriver` side: dockerd's pool and address requests, served by
//! cnm-ipam over its own corner of cnm's store (see [`crate::ipam_store`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use cnm_core::{AddressRequest, AddressSpace, Controller, ErrorKind as CoreKind, IpamDriver, Pool, PoolRequest, Store};
use cnm_ipam::Ipam;
use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::ipam_store::Prefixed;
use crate::protocol::*;

/// Where the IPAM side's records live in cnm's store.
pub(crate) const STORE_PREFIX: &str = "ipam-plugin/";

pub(crate) struct IpamSide {
    ipam: Ipam,
    local_space: String,
    global_space: String,
}

fn ipam_error(m: &str) -> impl Fn(cnm_core::Error) -> Error + '_ {
    Error::controller(m)
}

impl IpamSide {
    pub(crate) fn new(store: Arc<dyn Store>, name: &str) -> IpamSide {
        IpamSide {
            ipam: Ipam::new(Arc::new(Prefixed::new(store, STORE_PREFIX))),
            local_space: format!("{name}-local"),
            global_space: format!("{name}-global"),
        }
    }

    pub(crate) fn handle(&self, ctl: &Controller, m: &str, body: &[u8]) -> Result<Vec<u8>> {
        match m {
            "IpamDriver.GetCapabilities" => {
                Ok(encode(IpamCapabilitiesResponse { requires_mac_address: false, requires_request_replay: false }))
            }
            "IpamDriver.GetDefaultAddressSpaces" => Ok(encode(AddressSpacesResponse {
                local_default_address_space: self.local_space.clone(),
                global_default_address_space: self.global_space.clone(),
            })),
            "IpamDriver.RequestPool" => self.request_pool(ctl, m, decode(m, body)?),
            "IpamDriver.ReleasePool" => {
                let req: PoolIdRequest = decode(m, body)?;
                match self.ipam.release_pool(&req.pool_id) {
                    Err(e) if e.kind() != CoreKind::NotFound => Err(ipam_error(m)(e)),
                    _ => Ok(b"{}".to_vec()),
                }
            }
            "IpamDriver.RequestAddress" => self.request_address(m, decode(m, body)?),
            "IpamDriver.ReleaseAddress" => self.release_address(m, decode(m, body)?),
            other => Err(Error::invalid(other, "no such method")),
        }
    }

    fn space(&self, m: &str, s: &str) -> Result<AddressSpace> {
        match s {
            s if s == self.local_space || s.is_empty() => Ok(AddressSpace::Local),
            s if s == self.global_space => Ok(AddressSpace::Global),
            s => Err(Error::invalid(
                m,
                format!("AddressSpace {s:?} is not one of ours ({}, {})", self.local_space, self.global_space),
            )),
        }
    }

    fn request_pool(&self, ctl: &Controller, m: &str, req: RequestPoolRequest) -> Result<Vec<u8>> {
        let space = self.space(m, &req.address_space)?;
        let prefix = |f: &str, s: &str| -> Result<Option<IpNet>> {
            if s.is_empty() {
                return Ok(None);
            }
            s.parse::<IpNet>()
                .map(|n| Some(n.trunc()))
                .map_err(|_| Error::invalid(m, format!("{f}: {s:?} is not a subnet")))
        };
        let subnet = prefix("Pool", &req.pool)?;
        let ip_range = prefix("SubPool", &req.sub_pool)?;
        if ip_range.is_some() && subnet.is_none() {
            return Err(Error::invalid(m, "SubPool needs a Pool"));
        }
        // An automatic subnet stays clear of cnm's own networks (their
        // pools are in cnm's IPAM, not in this one).
        let avoid =
            ctl.networks().map_err(ipam_error(m))?.iter().flat_map(|n| n.pools.iter().map(|p| p.subnet)).collect();
        let request =
            PoolRequest { space, subnet, ip_range, v6: req.v6, avoid, owner: "dockerd".into(), ..Default::default() };
        let pool = self.ipam.request_pool(&request).map_err(ipam_error(m))?;
        Ok(encode(RequestPoolResponse { pool_id: pool.id, pool: pool.subnet.to_string(), data: BTreeMap::new() }))
    }

    fn pool(&self, m: &str, id: &str) -> Result<Pool> {
        let pools = self.ipam.pools().map_err(ipam_error(m))?;
        pools.into_iter().find(|p| p.id == id).ok_or_else(|| Error::invalid(m, format!("no pool {id:?}")))
    }

    fn request_address(&self, m: &str, req: RequestAddressRequest) -> Result<Vec<u8>> {
        let pool = self.pool(m, &req.pool_id)?;
        let want = if req.address.is_empty() {
            None
        } else {
            Some(req.address.parse::<IpAddr>().map_err(|_| Error::invalid(m, format!("Address {:?}", req.address)))?)
        };
        let gateway_request = req.options.as_ref().and_then(|o| o.get(ADDRESS_TYPE)).is_some_and(|t| t == GATEWAY_TYPE);
        // The pool reserved its gateway when it was made: a gateway request
        // for it (or for any address) gets it.
        let address = if gateway_request && want.is_none_or(|a| a == pool.gateway.addr()) {
            pool.gateway
        } else {
            let req = want.map(AddressRequest::Exact).unwrap_or(AddressRequest::Any);
            self.ipam.request_address(&pool.id, req).map_err(ipam_error(m))?
        };
        Ok(encode(RequestAddressResponse { address: address.to_string(), data: BTreeMap::new() }))
    }

    fn release_address(&self, m: &str, req: ReleaseAddressRequest) -> Result<Vec<u8>> {
        let addr: IpAddr = req.address.parse().map_err(|_| Error::invalid(m, format!("Address {:?}", req.address)))?;
        let pool = match self.pool(m, &req.pool_id) {
            Ok(p) => p,
            // Released with its pool already.
            Err(_) => return Ok(b"{}".to_vec()),
        };
        if addr == pool.gateway.addr() {
            return Ok(b"{}".to_vec());
        }
        match self.ipam.release_address(&pool.id, addr) {
            Err(e) if e.kind() != CoreKind::NotFound => Err(ipam_error(m)(e)),
            _ => Ok(b"{}".to_vec()),
        }
    }
}
