//! Creating and deleting networks.

use std::collections::BTreeMap;

use ipnet::IpNet;

use super::{delete_record, gone_ok, net_key, Controller};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::ipam::{AddressSpace, PoolRequest};
use crate::model::{Network, NetworkConfig, PoolAssignment, Scope, State};
use crate::store::{Expect, StoreExt};
use crate::time::Timestamp;
use crate::undo::Undo;

impl Controller {
    /// Creates a network: validates the request, reserves its name, gets its
    /// subnets and gateways from IPAM, and has the driver create it. On any
    /// failure everything done so far is undone.
    pub fn create_network(&self, cfg: NetworkConfig) -> Result<Network> {
        let _op = self.op()?;
        self.create_network_locked(cfg)
    }

    pub(super) fn create_network_locked(&self, cfg: NetworkConfig) -> Result<Network> {
        self.create_network_as(cfg, false)
    }

    /// Creates a network; `predefined`: one of those that exist from the
    /// start, whose kernel objects wait for its first join.
    pub(super) fn create_network_as(&self, cfg: NetworkConfig, predefined: bool) -> Result<Network> {
        cfg.validate()?;
        let driver = self.driver(&cfg.driver)?.clone();
        let caps = driver.capabilities();
        if caps.needs_addresses {
            self.ipam(&cfg.ipam.driver)?;
        }
        let mut net = Network {
            id: Id::random()?,
            name: cfg.name.clone(),
            driver: cfg.driver.clone(),
            scope: caps.scope,
            created: Timestamp::now(),
            enable_ipv6: cfg.enable_ipv6,
            internal: cfg.internal,
            attachable: cfg.attachable,
            ipam: cfg.ipam.clone(),
            pools: Vec::new(),
            options: cfg.options.clone(),
            driver_options: BTreeMap::new(),
            labels: cfg.labels.clone(),
            state: State::Creating,
            predefined,
            kernel_pending: predefined && caps.needs_addresses,
        };
        driver.validate_network(&net)?;
        // Its own scope only (a local driver's check costs no cluster read).
        let prefix = match net.scope {
            Scope::Local => "networks/",
            Scope::Global => super::GLOBAL_NETWORKS,
        };
        let same_driver: Vec<Network> = self
            .store
            .list_json::<Network>(prefix)?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.driver == net.driver)
            .collect();
        driver.check_among(&net, &same_driver)?;
        if !caps.needs_addresses && !cfg.ipam.config.is_empty() {
            return Err(Error::invalid("ipam.config", format!("the {} driver takes no subnets", cfg.driver)));
        }
        let requests = if caps.needs_addresses { self.pool_requests(&cfg, &net, &*driver)? } else { Vec::new() };

        // A name is unique across both scopes.
        let other_scope = match net.scope {
            Scope::Local => Scope::Global,
            Scope::Global => Scope::Local,
        };
        if self.store.get(&net_key(&net.name, other_scope))?.is_some() {
            return Err(Error::AlreadyExists { what: "network", name: net.name.clone() });
        }
        let key = net_key(&net.name, net.scope);
        let mut rev = self.store.put_json(&key, &net, Expect::Absent).map_err(|e| match e.kind() {
            crate::ErrorKind::AlreadyExists => Error::AlreadyExists { what: "network", name: net.name.clone() },
            _ => e,
        })?;
        let mut undo = Undo::new();
        undo.push("delete network record", || delete_record(&*self.store, &key));

        for (req, requested) in requests {
            let ipam = self.ipam(&net.ipam.driver)?;
            let pool = match ipam.request_pool(&req) {
                Ok(p) => p,
                Err(e) => return undo.fail(e),
            };
            let pool_id = pool.id.clone();
            undo.push(format!("release pool {}", pool.subnet), move || gone_ok(ipam.release_pool(&pool_id)));
            net.pools.push(PoolAssignment {
                pool_id: pool.id,
                subnet: pool.subnet,
                gateway: Some(pool.gateway),
                ip_range: pool.ip_range,
                aux: req.aux,
                requested,
            });
        }
        if !net.pools.is_empty() {
            // Recorded before the driver runs, so a crash from here on leaves
            // enough to release the pools.
            rev = match self.store.put_json(&key, &net, Expect::Revision(rev)) {
                Ok(r) => r,
                Err(e) => return undo.fail(e),
            };
        }

        if !net.kernel_pending {
            let ctx = self.ctx();
            if let Err(e) = driver.create_network(&ctx, &mut net) {
                return undo.fail(e);
            }
            let created = net.clone();
            let d = driver.clone();
            undo.push(format!("{} delete_network {}", d.name(), created.name), move || {
                d.delete_network(&self.ctx(), &created)
            });
        }

        net.state = State::Ready;
        if let Err(e) = self.store.put_json(&key, &net, Expect::Revision(rev)) {
            return undo.fail(e);
        }
        undo.commit();
        tracing::info!(network = %net.name, id = %net.id.short(), driver = %net.driver, "network created");
        Ok(net)
    }

    /// The IPAM requests for a network: one per configured subnet, plus an
    /// automatic IPv4 subnet when none was given and an automatic IPv6 one
    /// when IPv6 is on and none was given.
    fn pool_requests(
        &self,
        cfg: &NetworkConfig,
        net: &Network,
        driver: &dyn crate::driver::NetworkDriver,
    ) -> Result<Vec<(PoolRequest, bool)>> {
        let space = match net.scope {
            Scope::Local => AddressSpace::Local,
            Scope::Global => AddressSpace::Global,
        };
        let avoid = driver.avoid_subnets(&self.ctx())?;
        let base =
            |v6: bool| PoolRequest { space, v6, avoid: avoid.clone(), owner: net.id.to_string(), ..Default::default() };
        let mut out = Vec::new();
        for p in &cfg.ipam.config {
            let mut r = base(p.subnet.is_some_and(|s| s.addr().is_ipv6()));
            r.subnet = p.subnet;
            r.ip_range = p.ip_range;
            r.aux = p.auxiliary_addresses.clone();
            r.gateway = p.gateway;
            out.push((r, true));
        }
        let has = |v6: bool| cfg.ipam.config.iter().any(|p| p.subnet.is_some_and(|s: IpNet| s.addr().is_ipv6() == v6));
        let auto_v4 = cfg.ipam.config.iter().filter(|p| p.subnet.is_none()).count();
        if !has(false) && auto_v4 == 0 {
            out.push((base(false), false));
        }
        if cfg.enable_ipv6 && !has(true) {
            out.push((base(true), false));
        }
        Ok(out)
    }

    /// Deletes a network; refused while it has endpoints.
    pub fn delete_network(&self, key: &str) -> Result<()> {
        let _op = self.op()?;
        let (mut net, rev) = self.find_network(key)?;
        if net.predefined {
            return Err(Error::Forbidden {
                what: format!("remove network {:?}", net.name),
                reason: format!("{} is a pre-defined network and cannot be removed", net.name),
            });
        }
        let eps = self.store.list(&format!("endpoints/{}/", net.id))?;
        if !eps.is_empty() {
            return Err(Error::conflict(
                format!("network {:?}", net.name),
                format!("it has {} endpoint(s); disconnect them first", eps.len()),
            ));
        }
        net.state = State::Deleting;
        self.store.put_json(&net_key(&net.name, net.scope), &net, Expect::Revision(rev))?;
        self.teardown_network(&net)?;
        tracing::info!(network = %net.name, "network deleted");
        self.tidy_if_empty();
        Ok(())
    }

    /// Removes everything of a network, best effort: the driver's objects,
    /// the gateways and pools, and (only when all that worked) the record.
    pub(super) fn teardown_network(&self, net: &Network) -> Result<()> {
        let mut errors = Vec::new();
        match self.driver(&net.driver) {
            Ok(_) if net.kernel_pending => {}
            Ok(d) => {
                if let Err(e) = d.delete_network(&self.ctx(), net) {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e),
        }
        if !net.pools.is_empty() {
            let ipam = self.ipam(&net.ipam.driver)?;
            for p in &net.pools {
                // The pool takes its gateway and reserved addresses with it.
                if let Err(e) = gone_ok(ipam.release_pool(&p.pool_id)) {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            delete_record(&*self.store, &net_key(&net.name, net.scope))?;
        }
        Error::teardown(format!("delete network {:?}", net.name), errors)
    }

    /// Makes a network's kernel objects at its first join (see
    /// [`Network::kernel_pending`]); the record says so once they exist.
    pub(super) fn make_pending_kernel(&self, net: &mut Network) -> Result<()> {
        if !net.kernel_pending {
            return Ok(());
        }
        let driver = self.driver(&net.driver)?.clone();
        let key = net_key(&net.name, net.scope);
        let (_, rev) = self.find_network(&net.name)?;
        driver.create_network(&self.ctx(), net)?;
        net.kernel_pending = false;
        if let Err(e) = self.store.put_json(&key, &*net, Expect::Revision(rev)) {
            net.kernel_pending = true;
            let _ = driver.delete_network(&self.ctx(), net);
            return Err(e);
        }
        tracing::info!(network = %net.name, "network's kernel objects made at its first join");
        Ok(())
    }
}
