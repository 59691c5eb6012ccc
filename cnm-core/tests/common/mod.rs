//! Test doubles for the controller: a persisted IPAM, a fake driver whose
//! "kernel" is a set of strings (optionally mirrored into a directory, so it
//! survives a SIGKILL), and one-shot fault injection at step k.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cnm_core::driver::{Capabilities, DriverContext, NetworkDriver};
use cnm_core::ipam::{AddressRequest, IpamDriver, Pool, PoolRequest};
use cnm_core::join::{JoinInfo, JoinRequest};
use cnm_core::store::{Expect, KvEntry, LeaseId, Store, StoreExt, Watch};
use cnm_core::{Endpoint, Error, Network, Result};
use cnm_netns::NetNs;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use cnm_core::testing::Faults;

/// A store wrapper whose writes count as steps.
pub struct FaultyStore {
    pub inner: Arc<dyn Store>,
    pub faults: Arc<Faults>,
}

impl Store for FaultyStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn get(&self, key: &str) -> Result<Option<KvEntry>> {
        self.inner.get(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<KvEntry>> {
        self.inner.list(prefix)
    }
    fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<u64> {
        self.faults.step(&format!("store put {key}"))?;
        self.inner.put(key, value, expect)
    }
    fn delete(&self, key: &str, expect: Expect) -> Result<()> {
        self.faults.step(&format!("store delete {key}"))?;
        self.inner.delete(key, expect)
    }
    fn watch(&self, prefix: &str) -> Result<Box<dyn Watch>> {
        self.inner.watch(prefix)
    }
    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        self.inner.grant_lease(ttl)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct PoolState {
    subnet: IpNet,
    gateway: IpAddr,
    owner: String,
    allocated: BTreeSet<IpAddr>,
}

/// A small IPAM persisted through a store with compare-and-swap (one key per
/// pool), good enough to test the controller; cnm-ipam is the real one.
pub struct TestIpam {
    pub store: Arc<dyn Store>,
    pub faults: Arc<Faults>,
}

impl TestIpam {
    fn key(id: &str) -> String {
        format!("ipam/pools/{id}")
    }

    fn update(&self, id: &str, f: impl Fn(&mut PoolState) -> Result<()>) -> Result<()> {
        loop {
            let (mut st, rev) = self
                .store
                .get_json::<PoolState>(&Self::key(id))?
                .ok_or_else(|| Error::NotFound { what: "pool", name: id.to_string() })?;
            f(&mut st)?;
            match self.store.put_json(&Self::key(id), &st, Expect::Revision(rev)) {
                Err(e) if e.kind() == cnm_core::ErrorKind::Conflict => continue,
                other => return other.map(|_| ()),
            }
        }
    }

    /// Every (pool, address) allocated, gateways included, for comparisons.
    pub fn dump(&self) -> BTreeMap<String, (IpNet, BTreeSet<IpAddr>)> {
        self.store
            .list_json::<PoolState>("ipam/pools/")
            .unwrap()
            .into_iter()
            .map(|(mut p, _)| {
                p.allocated.insert(p.gateway);
                (p.subnet.to_string(), (p.subnet, p.allocated))
            })
            .collect()
    }
}

impl TestIpam {
    fn try_request_pool(&self, req: &PoolRequest) -> Result<Pool> {
        let taken: Vec<IpNet> =
            self.store.list_json::<PoolState>("ipam/pools/")?.into_iter().map(|(p, _)| p.subnet).collect();
        let overlaps = |s: &IpNet| taken.iter().any(|t| t.contains(&s.network()) || s.contains(&t.network()));
        let subnet = match req.subnet {
            Some(s) if overlaps(&s) => {
                return Err(Error::conflict(format!("subnet {s}"), "overlaps an allocated pool"))
            }
            Some(s) => s,
            None if req.v6 => (0..=255u16)
                .map(|i| format!("fd00:{i:x}::/64").parse::<IpNet>().unwrap())
                .find(|s| !overlaps(s))
                .ok_or_else(|| Error::Exhausted { what: "subnets".into(), reason: "test range".into() })?,
            None => (0..=255u16)
                .map(|i| format!("10.{i}.0.0/24").parse::<IpNet>().unwrap())
                .find(|s| !overlaps(s) && !req.avoid.iter().any(|a| a.contains(&s.network())))
                .ok_or_else(|| Error::Exhausted { what: "subnets".into(), reason: "test range".into() })?,
        };
        let id = subnet.to_string().replace(['/', ':'], "_");
        let gateway = match (req.gateway, subnet) {
            (Some(g), _) => g,
            (None, IpNet::V4(n)) => IpAddr::V4(n.hosts().next().unwrap()),
            (None, IpNet::V6(n)) => IpAddr::V6((u128::from(n.network()) + 1).into()),
        };
        let st = PoolState { subnet, gateway, owner: req.owner.clone(), allocated: BTreeSet::new() };
        self.store.put_json(&Self::key(&id), &st, Expect::Absent)?;
        let gateway = IpNet::new(gateway, subnet.prefix_len()).unwrap();
        Ok(Pool { id, space: req.space, subnet, ip_range: req.ip_range, gateway, owner: req.owner.clone() })
    }
}

impl IpamDriver for TestIpam {
    fn request_pool(&self, req: &PoolRequest) -> Result<Pool> {
        self.faults.step("ipam request_pool")?;
        loop {
            match self.try_request_pool(req) {
                // Another process took the same automatic subnet first: pick again.
                Err(e) if e.kind() == cnm_core::ErrorKind::AlreadyExists && req.subnet.is_none() => continue,
                other => return other,
            }
        }
    }

    fn release_pool(&self, pool_id: &str) -> Result<()> {
        self.faults.step("ipam release_pool")?;
        self.store.delete(&Self::key(pool_id), Expect::Any)
    }

    fn request_address(&self, pool_id: &str, req: AddressRequest) -> Result<IpNet> {
        self.faults.step("ipam request_address")?;
        let got = Mutex::new(None);
        self.update(pool_id, |st| {
            let hosts: Box<dyn Iterator<Item = IpAddr>> = match st.subnet {
                IpNet::V4(n) => Box::new(n.hosts().map(IpAddr::V4)),
                IpNet::V6(n) => Box::new(n.hosts().skip(1).take(1 << 16).map(IpAddr::V6)),
            };
            let addr = match req {
                AddressRequest::Exact(a) => {
                    if st.allocated.contains(&a) || a == st.gateway {
                        return Err(Error::conflict(format!("address {a}"), "in use"));
                    }
                    a
                }
                AddressRequest::Any => {
                    let mut hosts = hosts;
                    hosts.find(|a| !st.allocated.contains(a) && *a != st.gateway).ok_or_else(|| Error::Exhausted {
                        what: format!("pool {}", st.subnet),
                        reason: "no free address".into(),
                    })?
                }
            };
            st.allocated.insert(addr);
            *got.lock().unwrap() = Some(IpNet::new(addr, st.subnet.prefix_len()).unwrap());
            Ok(())
        })?;
        Ok(got.into_inner().unwrap().unwrap())
    }

    fn release_address(&self, pool_id: &str, addr: IpAddr) -> Result<()> {
        self.faults.step("ipam release_address")?;
        self.update(pool_id, |st| {
            if st.allocated.remove(&addr) {
                Ok(())
            } else {
                Err(Error::NotFound { what: "address", name: addr.to_string() })
            }
        })
    }

    fn pools(&self) -> Result<Vec<Pool>> {
        Ok(self
            .store
            .list_json::<PoolState>("ipam/pools/")?
            .into_iter()
            .map(|(p, _)| Pool {
                id: p.subnet.to_string().replace(['/', ':'], "_"),
                space: Default::default(),
                subnet: p.subnet,
                ip_range: None,
                gateway: IpNet::new(p.gateway, p.subnet.prefix_len()).unwrap(),
                owner: p.owner,
            })
            .collect())
    }

    fn addresses(&self, pool_id: &str) -> Result<Vec<IpAddr>> {
        Ok(self
            .store
            .get_json::<PoolState>(&Self::key(pool_id))?
            .map(|(p, _)| p.allocated.into_iter().collect())
            .unwrap_or_default())
    }
}

/// A driver whose kernel is a set of object names ("net:ID", "ep:ID",
/// "join:ID"), optionally mirrored as files in a directory.
pub struct FakeDriver {
    pub name: String,
    pub kernel: Mutex<BTreeSet<String>>,
    pub dir: Option<PathBuf>,
    pub faults: Arc<Faults>,
}

impl FakeDriver {
    pub fn new(name: &str, faults: Arc<Faults>, dir: Option<PathBuf>) -> FakeDriver {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).unwrap();
        }
        FakeDriver { name: name.into(), kernel: Mutex::new(BTreeSet::new()), dir, faults }
    }

    pub fn objects(&self) -> BTreeSet<String> {
        match &self.dir {
            Some(d) => {
                std::fs::read_dir(d).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            }
            None => self.kernel.lock().unwrap().clone(),
        }
    }

    fn add(&self, what: &str, obj: String) -> Result<()> {
        self.faults.step(what)?;
        if let Some(d) = &self.dir {
            std::fs::write(d.join(&obj), b"x").unwrap();
        } else {
            self.kernel.lock().unwrap().insert(obj);
        }
        Ok(())
    }

    fn remove(&self, what: &str, obj: String) -> Result<()> {
        self.faults.step(what)?;
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_file(d.join(&obj));
        } else {
            self.kernel.lock().unwrap().remove(&obj);
        }
        Ok(())
    }
}

impl NetworkDriver for FakeDriver {
    fn name(&self) -> &str {
        &self.name
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    fn validate_network(&self, net: &Network) -> Result<()> {
        for k in net.options.keys() {
            if k != "fake.mtu" {
                return Err(Error::invalid(format!("option {k}"), "unknown option"));
            }
        }
        Ok(())
    }
    fn create_network(&self, _: &DriverContext<'_>, net: &mut Network) -> Result<()> {
        self.add("driver create_network", format!("net:{}", net.id))
    }
    fn delete_network(&self, _: &DriverContext<'_>, net: &Network) -> Result<()> {
        self.remove("driver delete_network", format!("net:{}", net.id))
    }
    fn create_endpoint(&self, _: &DriverContext<'_>, _: &Network, ep: &mut Endpoint) -> Result<()> {
        if ep.mac.is_none() {
            if let Some(IpNet::V4(a)) = ep.ipv4 {
                let o = a.addr().octets();
                ep.mac = Some(cnm_netns::MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]]));
            }
        }
        self.add("driver create_endpoint", format!("ep:{}", ep.id))
    }
    fn delete_endpoint(&self, _: &DriverContext<'_>, _: &Network, ep: &Endpoint) -> Result<()> {
        self.remove("driver delete_endpoint", format!("ep:{}", ep.id))
    }
    fn join(&self, _: &DriverContext<'_>, net: &Network, ep: &mut Endpoint, j: &JoinRequest<'_>) -> Result<JoinInfo> {
        ep.driver_data.insert("ifname".into(), j.ifname.to_string());
        self.add("driver join", format!("join:{}", ep.id))?;
        // No interface (the fake has no kernel), but a gateway it may route
        // through: the controller's default-route election applies.
        let mut info = JoinInfo::no_interface()
            .gateway(net.gateway_v4().map(|g| g.addr()))
            .gateway(net.gateway_v6().map(|g| g.addr()))
            .default_route(true);
        info.addresses = [ep.ipv4, ep.ipv6].into_iter().flatten().collect();
        Ok(info)
    }
    fn leave(&self, _: &DriverContext<'_>, _: &Network, ep: &Endpoint, _: Option<&NetNs>) -> Result<()> {
        self.remove("driver leave", format!("join:{}", ep.id))
    }
    fn restore_network(&self, _: &DriverContext<'_>, net: &Network, _: &[Endpoint]) -> Result<Vec<String>> {
        let obj = format!("net:{}", net.id);
        if self.objects().contains(&obj) {
            return Ok(vec![]);
        }
        self.add("driver restore_network", obj)?;
        Ok(vec![format!("re-created network {}", net.name)])
    }
    fn remove_leftovers(&self, _: &DriverContext<'_>, nets: &[Network], eps: &[Endpoint]) -> Result<Vec<String>> {
        let mut live: BTreeSet<String> = nets.iter().map(|n| format!("net:{}", n.id)).collect();
        for e in eps {
            live.insert(format!("ep:{}", e.id));
            if e.sandbox.is_some() {
                live.insert(format!("join:{}", e.id));
            }
        }
        let mut out = vec![];
        for o in self.objects() {
            if !live.contains(&o) {
                self.remove("driver remove_leftover", o.clone())?;
                out.push(format!("removed leftover {o}"));
            }
        }
        Ok(out)
    }
}
