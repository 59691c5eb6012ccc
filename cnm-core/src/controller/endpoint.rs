//! Endpoints: creating, deleting, joining to and leaving sandboxes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cnm_netns::NetNs;
use ipnet::IpNet;

use super::sandbox_side::Program;
use super::{delete_record, ep_key, gone_ok, sb_key, Controller};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::ipam::AddressRequest;
use crate::join::{Interface, JoinInfo, JoinRequest};
use crate::model::{Endpoint, EndpointConfig, EndpointRef, JoinState, Network, Sandbox, State};
use crate::store::{Expect, StoreExt};
use crate::undo::Undo;

/// How often a compare-and-swap update of a shared record is retried.
const CAS_RETRIES: usize = 100;

impl Controller {
    /// Creates an endpoint on a network: reserves its name, gets its
    /// addresses from IPAM and lets the driver prepare it.
    pub fn create_endpoint(&self, network: &str, cfg: EndpointConfig) -> Result<Endpoint> {
        cfg.validate()?;
        let _op = self.op()?;
        self.create_endpoint_locked(network, cfg, State::Ready)
    }

    /// `done`: the state the endpoint is left in. `connect` leaves it
    /// `Creating` until its join is through, so that a crash anywhere in
    /// between is rolled back as a whole by reconcile.
    fn create_endpoint_locked(&self, network: &str, cfg: EndpointConfig, done: State) -> Result<Endpoint> {
        let (net, _) = self.find_network(network)?;
        self.create_endpoint_on(&net, cfg, done)
    }

    /// [`Controller::create_endpoint`] on a network already read.
    fn create_endpoint_on(&self, net: &Network, cfg: EndpointConfig, done: State) -> Result<Endpoint> {
        let net = net.clone();
        if net.state != State::Ready {
            return Err(Error::conflict(format!("network {:?}", net.name), "it is being created or deleted"));
        }
        let driver = self.driver(&net.driver)?.clone();
        let caps = driver.capabilities();
        if !caps.needs_addresses && (cfg.ipv4.is_some() || cfg.ipv6.is_some()) {
            return Err(Error::invalid("ip", format!("the {} driver gives endpoints no addresses", net.driver)));
        }
        if cfg.ipv6.is_some() && !net.enable_ipv6 {
            return Err(Error::invalid("ip6", format!("network {:?} has IPv6 disabled", net.name)));
        }
        if net.internal && !cfg.ports.is_empty() {
            return Err(Error::invalid(
                "ports",
                format!("network {:?} is internal: nothing on it can be reached from outside", net.name),
            ));
        }
        if let Some(mac) = cfg.mac {
            let taken = self.store.list_json::<Endpoint>(&format!("endpoints/{}/", net.id))?;
            if let Some((other, _)) = taken.iter().find(|(e, _)| e.mac == Some(mac)) {
                return Err(Error::invalid(
                    "mac",
                    format!("{mac} is the MAC of endpoint {:?} on network {:?} already", other.name, net.name),
                ));
            }
        }
        if let Some(max) = caps.max_endpoints {
            let n = self.store.count(&format!("endpoints/{}/", net.id))?;
            if n >= max {
                return Err(Error::Exhausted {
                    what: format!("endpoints of network {:?}", net.name),
                    reason: format!("a {} network takes at most {max} endpoints", net.driver),
                });
            }
        }
        let id = Id::random()?;
        let mut ep = Endpoint {
            name: cfg.name.clone().unwrap_or_else(|| format!("ep-{}", id.short())),
            id,
            network_id: net.id.clone(),
            network: net.name.clone(),
            mac: cfg.mac,
            ipv4: None,
            ipv6: None,
            ipv4_pool: None,
            ipv6_pool: None,
            ports: cfg.ports.clone(),
            bindings: Vec::new(),
            aliases: cfg.aliases.clone(),
            sandbox: None,
            ifname: None,
            requested_ifname: cfg.ifname.clone(),
            gateway: false,
            join_state: JoinState::Detached,
            driver_data: BTreeMap::new(),
            join_info: None,
            state: State::Creating,
        };
        let pools = if caps.needs_addresses {
            let v4 = pick_pool(&net, false, cfg.ipv4)?;
            let v6 = if net.enable_ipv6 { pick_pool(&net, true, cfg.ipv6)? } else { None };
            [(v4, cfg.ipv4), (v6, cfg.ipv6)]
        } else {
            [(None, None), (None, None)]
        };

        let key = ep_key(&ep);
        let mut rev = self.store.put_json(&key, &ep, Expect::Absent).map_err(|e| match e.kind() {
            crate::ErrorKind::AlreadyExists => Error::AlreadyExists { what: "endpoint", name: ep.name.clone() },
            _ => e,
        })?;
        let mut undo = Undo::new();
        undo.push("delete endpoint record", || delete_record(&*self.store, &key));

        for (pool, want) in pools {
            let Some(pool) = pool else { continue };
            let ipam = self.ipam(&net.ipam.driver)?;
            let req = want.map(AddressRequest::Exact).unwrap_or(AddressRequest::Any);
            let addr = match ipam.request_address(&pool, req) {
                Ok(a) => a,
                Err(e) => return undo.fail(e),
            };
            let (p, a) = (pool.clone(), addr.addr());
            undo.push(format!("release {addr}"), move || gone_ok(ipam.release_address(&p, a)));
            if addr.addr().is_ipv4() {
                (ep.ipv4, ep.ipv4_pool) = (Some(addr), Some(pool));
            } else {
                (ep.ipv6, ep.ipv6_pool) = (Some(addr), Some(pool));
            }
        }
        if ep.ipv4.is_some() || ep.ipv6.is_some() {
            rev = match self.store.put_json(&key, &ep, Expect::Revision(rev)) {
                Ok(r) => r,
                Err(e) => return undo.fail(e),
            };
        }

        if let Err(e) = driver.create_endpoint(&self.ctx(), &net, &mut ep) {
            return undo.fail(e);
        }
        let (d, n, created) = (driver.clone(), net.clone(), ep.clone());
        undo.push("driver delete_endpoint", move || d.delete_endpoint(&self.ctx(), &n, &created));

        ep.state = done;
        if let Err(e) = self.store.put_json(&key, &ep, Expect::Revision(rev)) {
            return undo.fail(e);
        }
        undo.commit();
        Ok(ep)
    }

    /// Deletes an endpoint; refused while it is joined to a sandbox.
    pub fn delete_endpoint(&self, network: &str, endpoint: &str) -> Result<()> {
        let _op = self.op()?;
        let (net, _) = self.find_network(network)?;
        let (ep, _) = self.find_endpoint(&net, endpoint)?;
        if ep.sandbox.is_some() {
            return Err(Error::conflict(format!("endpoint {:?}", ep.name), "it is joined to a sandbox; leave first"));
        }
        self.delete_detached(&net, &ep.name)
    }

    /// Removes everything of a detached endpoint, best effort; the record
    /// goes only when all else worked.
    pub(super) fn teardown_endpoint(&self, net: &Network, ep: &Endpoint) -> Result<()> {
        let mut errors = Vec::new();
        match self.driver(&net.driver) {
            Ok(d) => errors.extend(d.delete_endpoint(&self.ctx(), net, ep).err()),
            Err(e) => errors.push(e),
        }
        for (pool, addr) in [(&ep.ipv4_pool, ep.ipv4), (&ep.ipv6_pool, ep.ipv6)] {
            if let (Some(pool), Some(addr)) = (pool, addr) {
                match self.ipam(&net.ipam.driver) {
                    Ok(ipam) => errors.extend(gone_ok(ipam.release_address(pool, addr.addr())).err()),
                    Err(e) => errors.push(e),
                }
            }
        }
        if errors.is_empty() {
            delete_record(&*self.store, &ep_key(ep))?;
        }
        Error::teardown(format!("delete endpoint {:?}", ep.name), errors)
    }

    /// Joins an endpoint to a sandbox: the driver puts its interface into the
    /// sandbox's namespace. The first endpoint of a non-internal network
    /// provides the default route.
    pub fn join(&self, network: &str, endpoint: &str, sandbox: &str) -> Result<Endpoint> {
        let _op = self.op()?;
        self.join_locked(network, endpoint, sandbox, false)
    }

    /// `connecting`: the endpoint was just made by `connect` (and is still
    /// `Creating`); the join makes it `Ready`.
    fn join_locked(&self, network: &str, endpoint: &str, sandbox: &str, connecting: bool) -> Result<Endpoint> {
        let (net, _) = self.find_network(network)?;
        self.join_on(net, endpoint, sandbox, connecting)
    }

    /// The join on a network already read (a connect reads it once: for a
    /// global network, that is one etcd round trip less).
    fn join_on(&self, mut net: Network, endpoint: &str, sandbox: &str, connecting: bool) -> Result<Endpoint> {
        self.make_pending_kernel(&mut net)?;
        let (mut ep, rev) = self.find_endpoint(&net, endpoint)?;
        let (sb, _) = self.find_sandbox(sandbox)?;
        let expected = if connecting { State::Creating } else { State::Ready };
        if ep.state != expected {
            return Err(Error::conflict(format!("endpoint {:?}", ep.name), "it is being created or deleted"));
        }
        if let Some(other) = &ep.sandbox {
            return Err(Error::conflict(
                format!("endpoint {:?}", ep.name),
                format!("already joined to sandbox {}", other.short()),
            ));
        }
        let driver = self.driver(&net.driver)?.clone();
        let members = self.sandbox_endpoints(&sb)?;
        if members.iter().any(|m| m.network_id == net.id) {
            return Err(Error::conflict(
                format!("sandbox {:?}", sb.name),
                format!("already connected to network {:?}", net.name),
            ));
        }
        let exclusive_member = members.iter().find(|m| {
            self.network_of(m)
                .ok()
                .and_then(|n| self.driver(&n.driver).ok().map(|d| d.capabilities().exclusive))
                .unwrap_or(false)
        });
        if let Some(m) = exclusive_member {
            return Err(Error::Forbidden {
                what: format!("connect sandbox {:?} to network {:?}", sb.name, net.name),
                reason: format!("it is on network {:?}, which allows no other network", m.network),
            });
        }
        if driver.capabilities().exclusive && !members.is_empty() {
            return Err(Error::Forbidden {
                what: format!("connect sandbox {:?} to network {:?}", sb.name, net.name),
                reason: format!("a {} network must be a sandbox's only network", net.driver),
            });
        }
        // An external sandbox's namespace is the runtime's business: the
        // driver works in the host namespace only.
        let netns = if sb.external { self.host_netns().try_clone()? } else { NetNs::open(&sb.netns)? };
        let ifname = match &ep.requested_ifname {
            Some(n) if members.iter().any(|m| m.ifname.as_deref() == Some(n.as_str())) => {
                return Err(Error::Conflict {
                    what: format!("interface {n:?} in sandbox {:?}", sb.name),
                    reason: "another endpoint of the sandbox has that name".into(),
                })
            }
            Some(n) => n.clone(),
            None => next_ifname(&members),
        };
        let gateway = self.provides_gateway(&net) && !members.iter().any(|m| m.gateway);
        let before = ep.clone();
        ep.sandbox = Some(sb.id.clone());
        ep.ifname = Some(ifname.clone());
        ep.gateway = gateway;
        ep.join_state = JoinState::Joining;
        let key = ep_key(&ep);
        let rev = self.store.put_json(&key, &ep, Expect::Revision(rev))?;
        let mut undo = Undo::new();
        undo.push("restore endpoint record", || self.store.put_json(&key, &before, Expect::Any).map(|_| ()));

        let member = EndpointRef { id: ep.id.clone(), network_id: net.id.clone(), name: ep.name.clone() };
        if let Err(e) = self.update_sandbox(&sb.name, |s| s.endpoints.push(member.clone())) {
            return undo.fail(e);
        }
        let (sb_name, id) = (sb.name.clone(), ep.id.clone());
        undo.push("remove endpoint from sandbox", move || {
            self.update_sandbox(&sb_name, |s| s.endpoints.retain(|x| x.id != id))
        });

        let req = JoinRequest { sandbox: &sb, netns: &netns, ifname: &ifname, in_host: sb.external };
        let info = match driver.join(&self.ctx(), &net, &mut ep, &req) {
            Ok(info) => info,
            Err(e) => return undo.fail(e),
        };
        let (d, n, joined, ns) = (driver.clone(), net.clone(), ep.clone(), &netns);
        undo.push("driver leave", move || d.leave(&self.ctx(), &n, &joined, Some(ns)));
        if let Err(e) = info.validate(&ep.name) {
            return undo.fail(e);
        }
        if sb.external && matches!(info.interface, Some(Interface::InSandbox { .. })) {
            return undo.fail(Error::Forbidden {
                what: format!("join endpoint {:?} to external sandbox {:?}", ep.name, sb.name),
                reason: format!("the {} driver cannot leave the interface for the runtime to move", net.driver),
            });
        }
        ep.ifname = match ep.requested_ifname.is_some() {
            true => Some(ifname.clone()),
            false => Some(Self::sandbox_ifname(&info, &ifname, &members)),
        };
        ep.gateway = gateway && info.default_route && info.usable_gateways().next().is_some();
        if sb.external {
            return self.commit_external_join(ep, info, &key, rev, undo);
        }
        let program = Program {
            sandbox: &sb,
            netns: &netns,
            endpoint: &ep,
            info: &info,
            default_route: ep.gateway,
            others: &members,
        };
        if let Err(e) = self.program_sandbox(&program) {
            return undo.fail(e);
        }
        // A later failure undoes the sandbox side before the driver's leave.
        ep.join_info = Some(info);
        let (programmed, remaining) = (ep.clone(), &members);
        let sb_ref = &sb;
        undo.push("undo the sandbox side", move || {
            Error::teardown(
                "undo the sandbox side",
                self.unprogram_sandbox(&programmed, Some(ns), Some(sb_ref), remaining),
            )
        });

        ep.join_state = JoinState::Joined;
        ep.state = State::Ready;
        if let Err(e) = self.store.put_json(&key, &ep, Expect::Revision(rev)) {
            return undo.fail(e);
        }
        if self.uses_gateway_bridge(&net) {
            if let Err(e) = self.attach_gateway_bridge(&sb) {
                return undo.fail(e);
            }
        }
        undo.commit();
        self.names_changed(&sb.name);
        tracing::info!(endpoint = %ep.name, sandbox = %sb.name, network = %net.name, "joined");
        Ok(ep)
    }

    /// The end of a join to an external sandbox: the runtime programs the
    /// sandbox side from the recorded join info.
    fn commit_external_join(
        &self,
        mut ep: Endpoint,
        info: JoinInfo,
        key: &str,
        rev: u64,
        undo: Undo<'_>,
    ) -> Result<Endpoint> {
        ep.join_info = Some(info);
        ep.join_state = JoinState::Joined;
        ep.state = State::Ready;
        if let Err(e) = self.store.put_json(key, &ep, Expect::Revision(rev)) {
            return undo.fail(e);
        }
        undo.commit();
        tracing::info!(endpoint = %ep.name, "joined to an external sandbox");
        Ok(ep)
    }

    /// Publishes a joined endpoint's ports where its join left that to the
    /// runtime (Docker's `ProgramExternalConnectivity`, for an external
    /// sandbox); a no-op where the join published them. Returns the
    /// endpoint with its bindings.
    pub fn program_external_connectivity(&self, network: &str, endpoint: &str) -> Result<Endpoint> {
        let _op = self.op()?;
        let (net, _) = self.find_network(network)?;
        let (mut ep, rev) = self.find_endpoint(&net, endpoint)?;
        if ep.sandbox.is_none() || ep.join_state != JoinState::Joined {
            return Err(Error::conflict(format!("endpoint {:?}", ep.name), "it is not joined to a sandbox"));
        }
        self.driver(&net.driver)?.program_external(&self.ctx(), &net, &mut ep)?;
        if let Err(e) = self.store.put_json(&ep_key(&ep), &ep, Expect::Revision(rev)) {
            let _ = self.driver(&net.driver)?.revoke_external(&self.ctx(), &net, &ep);
            return Err(e);
        }
        Ok(ep)
    }

    /// Withdraws a joined endpoint's published ports (Docker's
    /// `RevokeExternalConnectivity`); [`Controller::program_external_connectivity`]
    /// brings them back. Idempotent.
    pub fn revoke_external_connectivity(&self, network: &str, endpoint: &str) -> Result<()> {
        let _op = self.op()?;
        let (net, _) = self.find_network(network)?;
        let (mut ep, rev) = self.find_endpoint(&net, endpoint)?;
        self.driver(&net.driver)?.revoke_external(&self.ctx(), &net, &ep)?;
        if !ep.bindings.is_empty() {
            ep.bindings.clear();
            self.store.put_json(&ep_key(&ep), &ep, Expect::Revision(rev))?;
        }
        Ok(())
    }

    /// Takes an endpoint out of its sandbox, best effort. When it provided
    /// the default route, the next endpoint (in join order) takes over.
    pub fn leave(&self, network: &str, endpoint: &str) -> Result<()> {
        let _op = self.op()?;
        let (net, _) = self.find_network(network)?;
        let (ep, rev) = self.find_endpoint(&net, endpoint)?;
        self.leave_locked(&net, ep, rev, None)
    }

    /// `sandbox`: the endpoint's sandbox when the caller has it (saves
    /// reading every sandbox record to find it by id).
    pub(super) fn leave_locked(
        &self,
        net: &Network,
        mut ep: Endpoint,
        rev: u64,
        sandbox: Option<&Sandbox>,
    ) -> Result<()> {
        let Some(sb_id) = ep.sandbox.clone() else {
            return Err(Error::conflict(format!("endpoint {:?}", ep.name), "it is not joined to a sandbox"));
        };
        let sb = match sandbox.filter(|s| s.id == sb_id) {
            Some(s) => Some(s.clone()),
            None => self.sandboxes()?.into_iter().find(|s| s.id == sb_id),
        };
        ep.join_state = JoinState::Leaving;
        let key = ep_key(&ep);
        let rev = self.store.put_json(&key, &ep, Expect::Revision(rev))?;
        let external = sb.as_ref().is_some_and(|s| s.external);
        let netns = sb.as_ref().filter(|s| !s.external).and_then(|s| NetNs::open(&s.netns).ok());
        let mut errors = Vec::new();
        // The sandbox side first: a moved interface goes back to the host
        // namespace, where the driver's leave finds it.
        let remaining = match &sb {
            Some(s) => self.sandbox_endpoints(s)?.into_iter().filter(|m| m.id != ep.id).collect(),
            None => Vec::new(),
        };
        if !external {
            errors.extend(self.unprogram_sandbox(&ep, netns.as_ref(), sb.as_ref(), &remaining));
        }
        match self.driver(&net.driver) {
            Ok(d) => errors.extend(d.leave(&self.ctx(), net, &ep, netns.as_ref()).err()),
            Err(e) => errors.push(e),
        }
        if let Some(sb) = &sb {
            let id = ep.id.clone();
            errors.extend(self.update_sandbox(&sb.name, |s| s.endpoints.retain(|x| x.id != id)).err());
        }
        let was_gateway = ep.gateway;
        ep.sandbox = None;
        ep.ifname = None;
        ep.gateway = false;
        ep.bindings.clear();
        ep.join_info = None;
        ep.join_state = JoinState::Detached;
        errors.extend(self.store.put_json(&key, &ep, Expect::Revision(rev)).err());
        if let (true, false, Some(sb)) = (self.uses_gateway_bridge(net), external, &sb) {
            errors.extend(self.detach_gateway_bridge(&sb.name).err());
        }
        if let Some(sb) = &sb {
            self.names_changed(&sb.name);
        }
        if let (true, Some(sb), Some(ns)) = (was_gateway, sb, netns.as_ref()) {
            errors.extend(self.elect_gateway(&sb.name, ns).err());
        }
        Error::teardown(format!("leave endpoint {:?}", ep.name), errors)
    }

    /// Gives the default route to the first endpoint (in join order) of the
    /// sandbox whose network can provide one.
    fn elect_gateway(&self, sandbox: &str, netns: &NetNs) -> Result<()> {
        let (sb, _) = self.find_sandbox(sandbox)?;
        let members = self.sandbox_endpoints(&sb)?;
        if members.iter().any(|m| m.gateway) {
            return Ok(());
        }
        // An endpoint whose join a crash interrupted may have no address
        // yet: a route through it would be refused.
        for m in members.into_iter().filter(|m| m.join_state == JoinState::Joined) {
            let net = self.network_of(&m)?;
            if !self.provides_gateway(&net) || !Self::may_route_default(&net, &m) {
                continue;
            }
            let (mut m, rev) = self.find_endpoint(&net, &m.name)?;
            self.set_default_route(&net, &m, netns, true)?;
            m.gateway = true;
            self.store.put_json(&ep_key(&m), &m, Expect::Revision(rev))?;
            return Ok(());
        }
        Ok(())
    }

    /// Creates an endpoint and joins it (`docker network connect`); a failed
    /// join deletes the endpoint again.
    pub fn connect(&self, network: &str, sandbox: &str, cfg: EndpointConfig) -> Result<Endpoint> {
        cfg.validate()?;
        let _op = self.op()?;
        let (net, _) = self.find_network(network)?;
        let ep = self.create_endpoint_on(&net, cfg, State::Creating)?;
        match self.join_on(net, &ep.name, sandbox, true) {
            Ok(ep) => Ok(ep),
            Err(e) => {
                let net = self.network_of(&ep)?;
                match self.delete_detached(&net, &ep.name) {
                    Ok(()) => Err(e),
                    Err(rb) => Err(Error::RollbackFailed { source: Box::new(e), rollback: Box::new(rb) }),
                }
            }
        }
    }

    /// Leaves and deletes the sandbox's endpoint on a network (`docker
    /// network disconnect`).
    pub fn disconnect(&self, network: &str, sandbox: &str) -> Result<()> {
        let _op = self.op()?;
        let (net, _) = self.find_network(network)?;
        let (sb, _) = self.find_sandbox(sandbox)?;
        let ep = self.sandbox_endpoints(&sb)?.into_iter().find(|e| e.network_id == net.id).ok_or_else(|| {
            Error::NotFound { what: "endpoint", name: format!("of sandbox {:?} on network {:?}", sb.name, net.name) }
        })?;
        // The intent to delete goes first: a failure from here on is
        // finished by a retry or by reconcile.
        let (mut ep, rev) = self.find_endpoint(&net, &ep.name)?;
        ep.state = State::Deleting;
        let rev = self.store.put_json(&ep_key(&ep), &ep, Expect::Revision(rev))?;
        self.leave_locked(&net, ep.clone(), rev, Some(&sb))?;
        self.delete_detached(&net, &ep.name)
    }

    /// The endpoints joined to a sandbox, in join order.
    pub(super) fn sandbox_endpoints(&self, sb: &Sandbox) -> Result<Vec<Endpoint>> {
        let mut out = Vec::with_capacity(sb.endpoints.len());
        for m in &sb.endpoints {
            if let Some((e, _)) = self.store.get_json::<Endpoint>(&format!("endpoints/{}/{}", m.network_id, m.name))? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The network an endpoint belongs to, by id (a network of the same
    /// name may have been deleted and created again since).
    pub(super) fn network_of(&self, ep: &Endpoint) -> Result<Network> {
        for scope in [crate::model::Scope::Local, crate::model::Scope::Global] {
            if let Some((n, _)) = self.store.get_json::<Network>(&super::net_key(&ep.network, scope))? {
                if n.id == ep.network_id {
                    return Ok(n);
                }
            }
        }
        self.networks()?
            .into_iter()
            .find(|n| n.id == ep.network_id)
            .ok_or_else(|| Error::NotFound { what: "network", name: ep.network_id.to_string() })
    }

    /// Deletes an endpoint that is (or was just made) detached: records the
    /// intent first, so a failure or crash is finished by reconcile.
    pub(super) fn delete_detached(&self, net: &Network, ep_name: &str) -> Result<()> {
        let (mut ep, rev) = self.find_endpoint(net, ep_name)?;
        if ep.state != State::Deleting {
            ep.state = State::Deleting;
            self.store.put_json(&ep_key(&ep), &ep, Expect::Revision(rev))?;
        }
        self.teardown_endpoint(net, &ep)
    }

    /// Read-modify-write of a sandbox record with compare-and-swap, retried
    /// when another thread or process changed it in between.
    pub(super) fn update_sandbox(&self, name: &str, f: impl Fn(&mut Sandbox)) -> Result<()> {
        let key = sb_key(name);
        for _ in 0..CAS_RETRIES {
            let Some((mut sb, rev)) = self.store.get_json::<Sandbox>(&key)? else {
                return Err(Error::NotFound { what: "sandbox", name: name.to_string() });
            };
            f(&mut sb);
            match self.store.put_json(&key, &sb, Expect::Revision(rev)) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == crate::ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(format!("sandbox {name:?}"), "changed concurrently too often"))
    }
}

/// Whether endpoints of this network can provide a default route.
impl Controller {
    fn provides_gateway(&self, net: &Network) -> bool {
        !net.internal && !self.uses_gateway_bridge(net)
    }

    /// Whether sandboxes on `net` reach the outside through the gateway
    /// bridge network.
    fn uses_gateway_bridge(&self, net: &Network) -> bool {
        self.gateway_bridge.is_some()
            && !net.internal
            && self.driver(&net.driver).is_ok_and(|d| d.capabilities().gateway_bridge)
    }

    /// Gives the sandbox an endpoint on the gateway bridge network (made
    /// first if need be), unless it has one.
    fn attach_gateway_bridge(&self, sb: &Sandbox) -> Result<()> {
        let cfg = self.gateway_bridge.clone().expect("checked by uses_gateway_bridge");
        let (sb, _) = self.find_sandbox(&sb.name)?;
        // Several processes may get here at once: one creates the network,
        // the others wait for it to be ready.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let net = loop {
            let found = match self.find_network(&cfg.name) {
                Ok((n, _)) => n,
                Err(e) if e.kind() == crate::ErrorKind::NotFound => match self.create_network_locked(cfg.clone()) {
                    Ok(n) => n,
                    Err(e) if e.kind() == crate::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(e),
                },
                Err(e) => return Err(e),
            };
            if found.state == State::Ready {
                break found;
            }
            if std::time::Instant::now() > deadline {
                return Err(Error::conflict(
                    format!("network {:?}", cfg.name),
                    "another process never finished creating it",
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        if sb.endpoints.iter().any(|m| m.network_id == net.id) {
            return Ok(());
        }
        let name = format!("gateway_{}", sb.id.short());
        let cfg = EndpointConfig { name: Some(name), ..Default::default() };
        let ep = self.create_endpoint_locked(&net.name, cfg, State::Creating)?;
        if let Err(e) = self.join_locked(&net.name, &ep.name, &sb.name, true) {
            return match self.delete_detached(&net, &ep.name) {
                Ok(()) => Err(e),
                Err(rb) => Err(Error::RollbackFailed { source: Box::new(e), rollback: Box::new(rb) }),
            };
        }
        Ok(())
    }

    /// Takes the sandbox's gateway bridge endpoint away once none of its
    /// networks needs it.
    fn detach_gateway_bridge(&self, sb_name: &str) -> Result<()> {
        let Some(cfg) = &self.gateway_bridge else { return Ok(()) };
        let (sb, _) = self.find_sandbox(sb_name)?;
        let members = self.sandbox_endpoints(&sb)?;
        let mut gw = None;
        for m in &members {
            let net = self.network_of(m)?;
            if net.name == cfg.name {
                gw = Some((net, m.clone()));
            } else if self.uses_gateway_bridge(&net) {
                return Ok(());
            }
        }
        let Some((net, ep)) = gw else { return Ok(()) };
        let (mut ep, rev) = self.find_endpoint(&net, &ep.name)?;
        ep.state = State::Deleting;
        let rev = self.store.put_json(&ep_key(&ep), &ep, Expect::Revision(rev))?;
        self.leave_locked(&net, ep.clone(), rev, Some(&sb))?;
        self.delete_detached(&net, &ep.name)
    }
}

/// The lowest `ethN` not used by the sandbox's endpoints.
fn next_ifname(members: &[Endpoint]) -> String {
    (0..)
        .map(|n| format!("eth{n}"))
        .find(|n| !members.iter().any(|m| m.ifname.as_deref() == Some(n.as_str())))
        .expect("some ethN is free")
}

/// The pool an address comes from: the one containing the requested
/// address, or the network's first of the family.
fn pick_pool(net: &Network, v6: bool, want: Option<IpAddr>) -> Result<Option<String>> {
    let of_family = |s: &IpNet| s.addr().is_ipv6() == v6;
    match want {
        Some(a) => net.pools.iter().find(|p| p.subnet.contains(&a)).map(|p| Some(p.pool_id.clone())).ok_or_else(|| {
            Error::invalid(if v6 { "ip6" } else { "ip" }, format!("{a} is in no subnet of network {:?}", net.name))
        }),
        None => Ok(net.pools.iter().find(|p| of_family(&p.subnet)).map(|p| p.pool_id.clone())),
    }
}
