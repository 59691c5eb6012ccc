//! [`RemoteIpam`]: any Docker IPAM plugin as a cnm IPAM driver, for
//! networks that name it (`ipam.driver`, `--ipam-driver`). A pool comes
//! with its gateway and auxiliary addresses requested the way dockerd
//! requests them.

use std::net::IpAddr;
use std::sync::Mutex;

use cnm_core::{AddressRequest, AddressSpace, IpamDriver, Pool, PoolRequest};
use ipnet::IpNet;
use serde_json::{json, Value};

use crate::client::PluginClient;
use crate::error::{Error, Result};
use crate::protocol::{ADDRESS_TYPE, GATEWAY_TYPE};

/// A Docker IPAM plugin as a cnm IPAM driver. Activated at its first use.
#[derive(Debug)]
pub struct RemoteIpam {
    client: PluginClient,
    /// The plugin's (local, global) default address spaces.
    spaces: Mutex<Option<(String, String)>>,
}

fn core<T>(r: Result<T>) -> cnm_core::Result<T> {
    r.map_err(cnm_core::Error::from)
}

impl RemoteIpam {
    /// An IPAM calling the plugin `client` reaches.
    pub fn new(client: PluginClient) -> RemoteIpam {
        RemoteIpam { client, spaces: Mutex::new(None) }
    }

    /// The plugin named `name`, found as dockerd finds it.
    pub fn discover(name: &str) -> Result<RemoteIpam> {
        Ok(RemoteIpam::new(PluginClient::discover(name)?))
    }

    fn spaces(&self) -> Result<(String, String)> {
        let mut spaces = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = spaces.clone() {
            return Ok(s);
        }
        self.client.activate("IpamDriver")?;
        let v = self.client.call("IpamDriver.GetDefaultAddressSpaces", &Value::Null)?;
        let get = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        let s = (get("LocalDefaultAddressSpace"), get("GlobalDefaultAddressSpace"));
        *spaces = Some(s.clone());
        Ok(s)
    }

    fn bad(&self, method: &str, err: String) -> Error {
        Error::Plugin { plugin: self.client.name().into(), method: method.into(), err }
    }

    /// `RequestAddress`; `gateway`: dockerd's gateway request.
    fn address(&self, pool: &str, want: Option<IpAddr>, gateway: bool) -> Result<IpNet> {
        let m = "IpamDriver.RequestAddress";
        let options = if gateway { json!({ADDRESS_TYPE: GATEWAY_TYPE}) } else { Value::Null };
        let want = want.map(|a| a.to_string()).unwrap_or_default();
        let v = self.client.call(m, &json!({"PoolID": pool, "Address": want, "Options": options}))?;
        let a = v["Address"].as_str().unwrap_or_default();
        a.parse().map_err(|_| self.bad(m, format!("Address {a:?} is not an address with prefix")))
    }

    fn release(&self, pool: &str, addr: IpAddr) -> Result<()> {
        self.client.call("IpamDriver.ReleaseAddress", &json!({"PoolID": pool, "Address": addr.to_string()})).map(|_| ())
    }

    fn request_pool_inner(&self, req: &PoolRequest) -> Result<Pool> {
        let m = "IpamDriver.RequestPool";
        let (local, global) = self.spaces()?;
        let space = if req.space == AddressSpace::Global { global } else { local };
        let text = |n: Option<IpNet>| n.map(|n| n.to_string()).unwrap_or_default();
        let body = json!({"AddressSpace": space, "Pool": text(req.subnet), "SubPool": text(req.ip_range),
                          "Options": {}, "V6": req.v6});
        let v = self.client.call(m, &body)?;
        let id = v["PoolID"].as_str().unwrap_or_default().to_string();
        let subnet: IpNet =
            v["Pool"].as_str().unwrap_or_default().parse().map_err(|_| self.bad(m, format!("Pool {}", v["Pool"])))?;
        // The gateway, then the reserved addresses, as dockerd asks; a
        // refusal gives back what was taken.
        let mut taken = Vec::new();
        let mut reserve = || -> Result<IpNet> {
            let gateway = self.address(&id, req.gateway, true)?;
            for a in req.aux.values() {
                taken.push(self.address(&id, Some(*a), false)?.addr());
            }
            Ok(gateway)
        };
        match reserve() {
            Ok(gateway) => {
                Ok(Pool { id, space: req.space, subnet, ip_range: req.ip_range, gateway, owner: req.owner.clone() })
            }
            Err(e) => {
                for a in taken {
                    let _ = self.release(&id, a);
                }
                let _ = self.client.call("IpamDriver.ReleasePool", &json!({"PoolID": id}));
                Err(e)
            }
        }
    }
}

impl IpamDriver for RemoteIpam {
    fn request_pool(&self, req: &PoolRequest) -> cnm_core::Result<Pool> {
        core(self.request_pool_inner(req))
    }

    /// `ReleasePool`: the plugin lets go of the pool with its addresses.
    fn release_pool(&self, pool_id: &str) -> cnm_core::Result<()> {
        core(self.client.call("IpamDriver.ReleasePool", &json!({"PoolID": pool_id}))).map(|_| ())
    }

    fn request_address(&self, pool_id: &str, req: AddressRequest) -> cnm_core::Result<IpNet> {
        let want = match req {
            AddressRequest::Exact(a) => Some(a),
            AddressRequest::Any => None,
        };
        core(self.spaces().and_then(|_| self.address(pool_id, want, false)))
    }

    fn release_address(&self, pool_id: &str, addr: IpAddr) -> cnm_core::Result<()> {
        core(self.release(pool_id, addr))
    }

    /// The plugin keeps its own books; cnm's reconcile does not audit them.
    fn pools(&self) -> cnm_core::Result<Vec<Pool>> {
        Ok(Vec::new())
    }

    /// See [`RemoteIpam::pools`].
    fn addresses(&self, _: &str) -> cnm_core::Result<Vec<IpAddr>> {
        Ok(Vec::new())
    }
}
