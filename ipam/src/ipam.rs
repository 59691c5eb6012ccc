//! [`Ipam`]: pools and addresses persisted through a cnm-core [`Store`] with
//! compare-and-swap, so processes (and hosts sharing a global store) never
//! hand out the same subnet or address twice.
//!
//! Store layout:
//! - `ipam/config`: the IPv6 ULA /48 chosen once per state directory;
//! - `ipam/spaces/{local,global}`: every pool of an address space (one record,
//!   so overlap checks and claims are one compare-and-swap);
//! - `leases/POOL/ADDRESS`: one key per allocated address, claimed with a
//!   create-only write, so an allocation costs one small write whatever the
//!   pool's size or fragmentation, and two writers can never both win one
//!   address (on the volatile side of a split store: leases go with the
//!   endpoints at a reboot).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use cnm_core::store::{Expect, Store, StoreExt};
use cnm_core::{AddressRequest, AddressSpace, IpamDriver, Pool, PoolRequest};
use ipnet::{IpNet, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::error::IpamError;
use crate::pool::{bounds, from_u128, overlaps, to_u128, Leases, PoolDef};
use crate::ranges::RangeSet;

/// How often a compare-and-swap is retried before giving up.
const CAS_RETRIES: usize = 10_000;

/// A default pool: subnets of `size` carved out of `base` (Docker's
/// `default-address-pools` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultPool {
    /// The prefix subnets are carved out of.
    pub base: IpNet,
    /// The prefix length of each subnet.
    pub size: u8,
}

/// IPAM settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IpamOptions {
    /// Default pools of the local space, in order.
    pub local: Vec<DefaultPool>,
    /// Default pools of the global space, in order.
    pub global: Vec<DefaultPool>,
    /// Prefix length of automatic IPv6 subnets carved from the ULA /48.
    pub v6_size: u8,
    /// Docker's "serial" mode: hand out addresses round-robin from the last
    /// one given, so a just-freed address is not reused at once.
    pub serial: bool,
}

impl Default for IpamOptions {
    /// Local: /24s of 172.17.0.0/16 … 172.31.0.0/16, then of 192.168.0.0/16
    /// (4096 networks); global: /24s of 10.0.0.0/8; IPv6: /64s of a ULA /48.
    fn default() -> Self {
        let mut local: Vec<DefaultPool> =
            (17..=31).map(|b| DefaultPool { base: format!("172.{b}.0.0/16").parse().unwrap(), size: 24 }).collect();
        local.push(DefaultPool { base: "192.168.0.0/16".parse().unwrap(), size: 24 });
        IpamOptions {
            local,
            global: vec![DefaultPool { base: "10.0.0.0/8".parse().unwrap(), size: 24 }],
            v6_size: 64,
            serial: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SpaceRecord {
    pools: BTreeMap<String, PoolDef>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConfigRecord {
    ula: Ipv6Net,
}

/// What this process knows of a pool: its definition (immutable) and the
/// addresses it has seen taken. The store is the truth; a claim that finds an
/// address taken teaches the cache, and an exhausted cache is reloaded once
/// before giving up.
struct Cached {
    def: PoolDef,
    leases: Leases,
}

/// IP address management over a [`Store`].
pub struct Ipam {
    store: Arc<dyn Store>,
    options: IpamOptions,
    ula: Mutex<Option<Ipv6Net>>,
    cache: Mutex<HashMap<String, Cached>>,
    /// The space records as last read, by revision: a record with thousands
    /// of pools is decoded again only when another writer changed it.
    spaces: Mutex<HashMap<&'static str, (u64, SpaceRecord)>>,
}

fn space_key(space: AddressSpace) -> &'static str {
    match space {
        AddressSpace::Local => "ipam/spaces/local",
        AddressSpace::Global => "ipam/spaces/global",
    }
}

fn lease_prefix(pool: &str) -> String {
    format!("leases/{pool}/")
}

fn lease_key(pool: &str, addr: IpAddr) -> String {
    format!("leases/{pool}/{addr}")
}

fn space_of(pool: &str) -> Result<AddressSpace, IpamError> {
    if pool.starts_with("local-") {
        Ok(AddressSpace::Local)
    } else if pool.starts_with("global-") {
        Ok(AddressSpace::Global)
    } else {
        Err(IpamError::PoolNotFound { pool: pool.to_string() })
    }
}

impl Ipam {
    /// An IPAM with the default pools.
    pub fn new(store: Arc<dyn Store>) -> Ipam {
        Ipam::with_options(store, IpamOptions::default())
    }

    /// An IPAM with the given settings.
    pub fn with_options(store: Arc<dyn Store>, options: IpamOptions) -> Ipam {
        Ipam {
            store,
            options,
            ula: Mutex::new(None),
            cache: Mutex::new(HashMap::new()),
            spaces: Mutex::new(HashMap::new()),
        }
    }

    /// The IPv6 ULA /48 of this state directory, chosen at random the first
    /// time it is needed and persisted.
    pub fn ula_prefix(&self) -> Result<Ipv6Net, IpamError> {
        let mut g = self.ula.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = *g {
            return Ok(u);
        }
        let u = loop {
            if let Some((c, _)) = self.store.get_json::<ConfigRecord>("ipam/config")? {
                break c.ula;
            }
            let mut r = [0u8; 5];
            cnm_core::random::fill(&mut r)?;
            // fdXX:XXXX:XXXX::/48 with a 40-bit random global id (RFC 4193).
            let mut o = [0u8; 16];
            o[0] = 0xfd;
            o[1..6].copy_from_slice(&r);
            let ula = Ipv6Net::new(Ipv6Addr::from(o), 48).unwrap();
            match self.store.put_json("ipam/config", &ConfigRecord { ula }, Expect::Absent) {
                Ok(_) => break ula,
                // Another process chose first: use its choice.
                Err(e) if e.kind() == cnm_core::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e.into()),
            }
        };
        *g = Some(u);
        Ok(u)
    }

    // ----- pools ----------------------------------------------------------

    /// Reserves a subnet: the requested one, or the next free one of the
    /// space's default pools that overlaps neither an allocated pool nor
    /// `req.avoid`. Reserves its network, broadcast, gateway and auxiliary
    /// addresses.
    pub fn allocate_pool(&self, req: &PoolRequest) -> Result<Pool, IpamError> {
        if let Some(s) = req.subnet {
            validate_request(&s, req)?;
        }
        let key = space_key(req.space);
        for _ in 0..CAS_RETRIES {
            let (mut rec, rev) = self.space(key)?;
            let subnet = match req.subnet {
                Some(s) => {
                    if let Some(p) = rec.pools.values().find(|p| overlaps(&p.subnet, &s)) {
                        return Err(IpamError::PoolOverlap { subnet: s, existing: p.subnet, pool: p.id.clone() });
                    }
                    s
                }
                None => self.next_free_subnet(&rec, req)?,
            };
            let gateway = match req.gateway {
                Some(g) => g,
                None => from_u128(bounds(&subnet).0 + 1, subnet.addr().is_ipv6()),
            };
            let def = PoolDef {
                id: PoolDef::id_for(req.space, &subnet),
                space: req.space,
                subnet,
                ip_range: req.ip_range,
                gateway,
                aux: req.aux.clone(),
                owner: req.owner.clone(),
            };
            rec.pools.insert(def.id.clone(), def.clone());
            let expect = rev.map(Expect::Revision).unwrap_or(Expect::Absent);
            match self.store.put_json(key, &rec, expect) {
                Ok(new_rev) => {
                    self.spaces.lock().unwrap_or_else(|p| p.into_inner()).insert(key, (new_rev, rec));
                }
                Err(e) if matches!(e.kind(), cnm_core::ErrorKind::Conflict | cnm_core::ErrorKind::AlreadyExists) => {
                    continue
                }
                Err(e) => return Err(e.into()),
            }
            // Leases an earlier pool of the same subnet left behind (a crash
            // in its release) must not shadow addresses of this one.
            self.delete_leases(&def.id)?;
            self.cache_put(Cached { def: def.clone(), leases: Leases::default() });
            tracing::debug!(pool = %def.id, "pool allocated");
            return Ok(pool_of(&def));
        }
        Err(IpamError::Conflict { pool: key.to_string(), retries: CAS_RETRIES })
    }

    /// The space record and its revision (`None`: not written yet).
    fn space(&self, key: &'static str) -> Result<(SpaceRecord, Option<u64>), IpamError> {
        let Some(entry) = self.store.get(key)? else { return Ok((SpaceRecord::default(), None)) };
        let mut cache = self.spaces.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((rev, rec)) = cache.get(key) {
            if *rev == entry.revision {
                return Ok((rec.clone(), Some(*rev)));
            }
        }
        let rec: SpaceRecord =
            serde_json::from_slice(&entry.value).map_err(|e| cnm_core::Error::store("decode", key, e))?;
        cache.insert(key, (entry.revision, rec.clone()));
        Ok((rec, Some(entry.revision)))
    }

    fn next_free_subnet(&self, rec: &SpaceRecord, req: &PoolRequest) -> Result<IpNet, IpamError> {
        let family = if req.v6 { "IPv6" } else { "IPv4" };
        let defaults: Vec<DefaultPool> = if req.v6 {
            vec![DefaultPool { base: IpNet::V6(self.ula_prefix()?), size: self.options.v6_size }]
        } else {
            match req.space {
                AddressSpace::Local => self.options.local.clone(),
                AddressSpace::Global => self.options.global.clone(),
            }
        };
        // Everything in the way, merged into disjoint runs of addresses, so a
        // candidate is checked in O(log n) and a whole taken block is
        // skipped in one step.
        let mut spans: Vec<(u128, u128)> = rec
            .pools
            .values()
            .map(|p| p.subnet)
            .chain(req.avoid.iter().copied())
            .filter(|n| n.addr().is_ipv6() == req.v6)
            .map(|n| bounds(&n))
            .collect();
        spans.sort_unstable();
        let mut taken: BTreeMap<u128, u128> = BTreeMap::new();
        let mut current: Option<(u128, u128)> = None;
        for (s, e) in spans {
            current = match current {
                Some((cs, ce)) if s <= ce.saturating_add(1) => Some((cs, ce.max(e))),
                Some(run) => {
                    taken.insert(run.0, run.1);
                    Some((s, e))
                }
                None => Some((s, e)),
            };
        }
        if let Some((cs, ce)) = current {
            taken.insert(cs, ce);
        }
        let blocking = |s: u128, e: u128| -> Option<u128> {
            // The furthest end among runs that intersect [s, e].
            let before = taken.range(..=s).next_back().filter(|(_, end)| **end >= s).map(|(_, end)| *end);
            let inside = taken.range(s..=e).map(|(_, end)| *end).max();
            before.into_iter().chain(inside).max()
        };
        for d in defaults {
            let bits: u8 = if d.base.addr().is_ipv4() { 32 } else { 128 };
            if d.size < d.base.prefix_len() || d.size > bits {
                return Err(IpamError::invalid(
                    format!("default pool {} size {}", d.base, d.size),
                    "size outside the base prefix",
                ));
            }
            let (lo, hi) = bounds(&d.base);
            let host_bits = (bits - d.size) as u32;
            let span: u128 = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
            let mut start = lo;
            loop {
                let end = start.saturating_add(span);
                match blocking(start, end) {
                    None => return Ok(IpNet::new(from_u128(start, req.v6), d.size).unwrap()),
                    // Jump past the block in the way, to the next boundary of
                    // the subnet size.
                    Some(block_end) => {
                        let step = span.saturating_add(1);
                        let next = block_end.checked_add(1).map(|n| n.div_ceil(step).saturating_mul(step));
                        match next {
                            Some(n) if n > start && n <= hi => start = n,
                            _ => break,
                        }
                    }
                }
            }
        }
        Err(IpamError::NoAvailablePool { space: req.space, family })
    }

    /// Releases a pool and every address in it.
    pub fn free_pool(&self, pool: &str) -> Result<(), IpamError> {
        let space = space_of(pool)?;
        let key = space_key(space);
        for _ in 0..CAS_RETRIES {
            let Some((mut rec, rev)) = self.store.get_json::<SpaceRecord>(key)? else {
                return Err(IpamError::PoolNotFound { pool: pool.to_string() });
            };
            if rec.pools.remove(pool).is_none() {
                return Err(IpamError::PoolNotFound { pool: pool.to_string() });
            }
            // The last pool takes the space's record with it: an empty
            // state leaves nothing behind.
            let written = if rec.pools.is_empty() {
                self.store.delete(key, Expect::Revision(rev))
            } else {
                self.store.put_json(key, &rec, Expect::Revision(rev)).map(|_| ())
            };
            match written {
                Ok(()) => {
                    self.cache.lock().unwrap_or_else(|p| p.into_inner()).remove(pool);
                    return self.delete_leases(pool);
                }
                Err(e) if e.kind() == cnm_core::ErrorKind::Conflict => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Conflict { pool: pool.to_string(), retries: CAS_RETRIES })
    }

    /// Every pool of both spaces.
    pub fn list_pools(&self) -> Result<Vec<PoolDef>, IpamError> {
        let mut out = Vec::new();
        for s in [AddressSpace::Local, AddressSpace::Global] {
            if let Some((rec, _)) = self.store.get_json::<SpaceRecord>(space_key(s))? {
                out.extend(rec.pools.into_values());
            }
        }
        Ok(out)
    }

    // ----- addresses ------------------------------------------------------

    fn cache_put(&self, c: Cached) {
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(c.def.id.clone(), c);
    }

    /// Deletes every lease key of a pool.
    fn delete_leases(&self, pool: &str) -> Result<(), IpamError> {
        for e in self.store.list(&lease_prefix(pool))? {
            match self.store.delete(&e.key, Expect::Any) {
                Err(err) if err.kind() != cnm_core::ErrorKind::NotFound => return Err(err.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads a pool's definition and its leases from the store.
    fn load(&self, pool: &str) -> Result<Cached, IpamError> {
        let space = space_of(pool)?;
        let def = self
            .store
            .get_json::<SpaceRecord>(space_key(space))?
            .and_then(|(mut r, _)| r.pools.remove(pool))
            .ok_or_else(|| IpamError::PoolNotFound { pool: pool.to_string() })?;
        let mut allocated = RangeSet::new();
        let prefix = lease_prefix(pool);
        for e in self.store.list(&prefix)? {
            if let Ok(a) = e.key[prefix.len()..].parse::<IpAddr>() {
                allocated.insert(to_u128(a));
            }
        }
        Ok(Cached { def, leases: Leases { allocated, last: None } })
    }

    /// Hands out an address of a pool: the next free one, or exactly the
    /// requested one. Returned with the pool's prefix length.
    pub fn allocate_address(&self, pool: &str, req: AddressRequest) -> Result<IpNet, IpamError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.contains_key(pool) {
            let c = self.load(pool)?;
            cache.insert(pool.to_string(), c);
        }
        let mut reloaded = false;
        for _ in 0..CAS_RETRIES {
            let c = cache.get_mut(pool).expect("cached above");
            let x = match c.leases.pick(&c.def, req, self.options.serial) {
                Ok(x) => x,
                // Other processes may have released addresses since this
                // cache was filled: look once more before giving up.
                Err(IpamError::NoAvailableAddress { .. }) if !reloaded => {
                    reloaded = true;
                    let fresh = self.load(pool)?;
                    cache.insert(pool.to_string(), fresh);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let v6 = c.def.v6();
            let addr = from_u128(x, v6);
            // A claim of its own (random): a create that etcd applied but
            // whose answer was lost is then told from another's (the store
            // takes exactly its own value for its own success).
            let mut claim = [0u8; 8];
            cnm_core::random::fill(&mut claim).map_err(IpamError::Store)?;
            let value = format!("{{\"claim\":\"{}\"}}", claim.iter().map(|b| format!("{b:02x}")).collect::<String>());
            match self.store.put(&lease_key(pool, addr), value.as_bytes(), Expect::Absent) {
                Ok(_) => {
                    c.leases.allocated.insert(x);
                    c.leases.last = Some(x);
                    return Ok(IpNet::new(addr, c.def.subnet.prefix_len()).unwrap());
                }
                Err(e) if e.kind() == cnm_core::ErrorKind::AlreadyExists => {
                    // Another process took it: remember, and pick again.
                    c.leases.allocated.insert(x);
                    if let AddressRequest::Exact(_) = req {
                        return Err(IpamError::AddressInUse {
                            address: addr,
                            pool: pool.to_string(),
                            reason: "already allocated".into(),
                        });
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::Conflict { pool: pool.to_string(), retries: CAS_RETRIES })
    }

    /// Releases an address; one that is not allocated is an error.
    pub fn free_address(&self, pool: &str, addr: IpAddr) -> Result<(), IpamError> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if !cache.contains_key(pool) {
            let c = self.load(pool)?;
            cache.insert(pool.to_string(), c);
        }
        let c = cache.get_mut(pool).expect("cached above");
        if addr.is_ipv6() != c.def.v6() || !c.def.subnet.contains(&addr) {
            return Err(IpamError::NotAllocated { address: addr, pool: pool.to_string() });
        }
        match self.store.delete(&lease_key(pool, addr), Expect::Any) {
            Ok(()) => {
                c.leases.allocated.remove(to_u128(addr));
                Ok(())
            }
            Err(e) if e.kind() == cnm_core::ErrorKind::NotFound => {
                c.leases.allocated.remove(to_u128(addr));
                Err(IpamError::NotAllocated { address: addr, pool: pool.to_string() })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The allocated addresses of a pool, as the store has them.
    pub fn allocated(&self, pool: &str) -> Result<Vec<IpAddr>, IpamError> {
        let c = self.load(pool)?;
        let v6 = c.def.v6();
        Ok(c.leases.allocated.iter().map(|x| from_u128(x, v6)).collect())
    }

    /// Releases every allocated address of the local address space not in
    /// `live`, and leases of local pools that no longer exist; returns what
    /// it freed. Global pools are shared by every host of a cluster, and no
    /// host alone knows which of their addresses are live, so their leases
    /// are never collected here.
    pub fn collect_garbage(&self, live: &BTreeSet<(String, IpAddr)>) -> Result<Vec<(String, IpAddr)>, IpamError> {
        let pools: BTreeSet<String> = self.list_pools()?.into_iter().map(|p| p.id).collect();
        let mut freed = Vec::new();
        for e in self.store.list("leases/local-")? {
            let mut parts = e.key.splitn(3, '/').skip(1);
            let (Some(pool), Some(addr)) = (parts.next(), parts.next()) else { continue };
            let Ok(addr) = addr.parse::<IpAddr>() else { continue };
            if pools.contains(pool) && live.contains(&(pool.to_string(), addr)) {
                continue;
            }
            match self.store.delete(&e.key, Expect::Revision(e.revision)) {
                Ok(()) => freed.push((pool.to_string(), addr)),
                // Changed or gone meanwhile: not ours to judge this time.
                Err(err) if matches!(err.kind(), cnm_core::ErrorKind::NotFound | cnm_core::ErrorKind::Conflict) => {}
                Err(err) => return Err(err.into()),
            }
        }
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
        Ok(freed)
    }
}

/// Checks an explicit pool request.
fn validate_request(s: &IpNet, req: &PoolRequest) -> Result<(), IpamError> {
    if s.addr() != s.network() {
        return Err(IpamError::invalid(format!("subnet {s}"), format!("host bits set (did you mean {}?)", s.trunc())));
    }
    if s.addr().is_ipv4() && s.prefix_len() > 30 {
        return Err(IpamError::invalid(
            format!("subnet {s}"),
            "an IPv4 /31 or /32 leaves no room for a gateway and an address",
        ));
    }
    if let Some(r) = req.ip_range {
        if r.addr() != r.network() {
            return Err(IpamError::invalid(format!("ip-range {r}"), "host bits set"));
        }
        if !overlaps(s, &r) || r.prefix_len() < s.prefix_len() {
            return Err(IpamError::invalid(format!("ip-range {r}"), format!("outside the subnet {s}")));
        }
    }
    let (lo, hi) = bounds(s);
    let v4 = s.addr().is_ipv4();
    let usable = |a: &IpAddr| a.is_ipv4() == v4 && s.contains(a) && to_u128(*a) != lo && !(v4 && to_u128(*a) == hi);
    if let Some(g) = req.gateway {
        if !usable(&g) {
            return Err(IpamError::invalid(format!("gateway {g}"), format!("not a usable address of the subnet {s}")));
        }
    }
    for (name, a) in &req.aux {
        if !usable(a) {
            return Err(IpamError::invalid(
                format!("aux-address {name}={a}"),
                format!("not a usable address of the subnet {s}"),
            ));
        }
    }
    Ok(())
}

fn pool_of(def: &PoolDef) -> Pool {
    Pool {
        id: def.id.clone(),
        space: def.space,
        subnet: def.subnet,
        ip_range: def.ip_range,
        gateway: IpNet::new(def.gateway, def.subnet.prefix_len()).unwrap(),
        owner: def.owner.clone(),
    }
}

impl IpamDriver for Ipam {
    fn request_pool(&self, req: &PoolRequest) -> cnm_core::Result<Pool> {
        Ok(self.allocate_pool(req)?)
    }

    fn release_pool(&self, pool_id: &str) -> cnm_core::Result<()> {
        Ok(self.free_pool(pool_id)?)
    }

    fn request_address(&self, pool_id: &str, req: AddressRequest) -> cnm_core::Result<IpNet> {
        Ok(self.allocate_address(pool_id, req)?)
    }

    fn release_address(&self, pool_id: &str, addr: IpAddr) -> cnm_core::Result<()> {
        Ok(self.free_address(pool_id, addr)?)
    }

    fn pools(&self) -> cnm_core::Result<Vec<Pool>> {
        Ok(self.list_pools()?.iter().map(pool_of).collect())
    }

    fn addresses(&self, pool_id: &str) -> cnm_core::Result<Vec<IpAddr>> {
        Ok(self.allocated(pool_id)?)
    }

    fn gc(&self, live: &BTreeSet<(String, IpAddr)>) -> cnm_core::Result<Vec<(String, IpAddr)>> {
        Ok(self.collect_garbage(live)?)
    }
}
