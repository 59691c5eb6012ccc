//! Services: create, list, inspect, remove; add and remove backends.
//!
//! A service record is shared by every host (under
//! [`SERVICES_PREFIX`](crate::service::SERVICES_PREFIX)), so it is changed
//! by compare-and-swap on its revision, not under this host's operation
//! lock; the ingress endpoint a backend needs is connected (and
//! disconnected) through [`Controller::connect`] before (after) the record
//! changes, so no record ever names a backend that cannot be reached.

use std::net::IpAddr;

use super::{gone_ok, Controller};
use crate::error::{Error, ErrorKind, Result};
use crate::ipam::AddressRequest;
use crate::model::{EndpointConfig, Network, NetworkConfig, Sandbox, Scope, State};
use crate::service::{
    service_key, BackendAddress, PublishMode, Service, ServiceBackend, ServiceConfig, ServiceVip, INGRESS_NETWORK,
    SERVICES_PREFIX,
};
use crate::store::{Expect, StoreExt};
use crate::undo::Undo;
use crate::Id;

/// How often a change to a service record is tried again when another
/// host changed the record in between.
const CAS_TRIES: usize = 20;

impl Controller {
    /// Creates a service: a virtual IP on each of its networks (from the
    /// network's IPAM) and its published ports. The first service with a
    /// port in ingress mode creates the [`INGRESS_NETWORK`] (an overlay).
    /// Refused, with nothing left behind, when the name is taken, a network
    /// is unknown or has no IPv4 subnet, or a port is already published by
    /// another service.
    pub fn create_service(&self, cfg: ServiceConfig) -> Result<Service> {
        cfg.validate()?;
        if self.store.get(&service_key(&cfg.name))?.is_some() {
            return Err(Error::AlreadyExists { what: "service", name: cfg.name.clone() });
        }
        let mut nets = Vec::with_capacity(cfg.networks.len());
        for key in &cfg.networks {
            let net = self.network(key)?;
            if net.name == INGRESS_NETWORK {
                return Err(Error::invalid("--network", "the ingress network is for published ports only"));
            }
            let pool = net.pools.iter().find(|p| p.subnet.addr().is_ipv4()).ok_or_else(|| {
                Error::invalid("--network", format!("network {:?} has no IPv4 subnet for a virtual IP", net.name))
            })?;
            nets.push((pool.pool_id.clone(), net));
        }
        self.check_ports_free(&cfg, None)?;
        let ingress = match cfg.ports.iter().any(|p| p.mode == PublishMode::Ingress) {
            true => Some(self.ingress_network()?.id),
            false => None,
        };

        let mut undo = Undo::new();
        let mut vips = Vec::with_capacity(nets.len());
        for (pool_id, net) in &nets {
            let ipam = self.ipam(&net.ipam.driver)?;
            let address = match ipam.request_address(pool_id, AddressRequest::Any) {
                Ok(a) => a,
                Err(e) => return undo.fail(e),
            };
            let (p, a) = (pool_id.clone(), address.addr());
            undo.push(format!("release {address}"), move || gone_ok(ipam.release_address(&p, a)));
            vips.push(ServiceVip {
                network_id: net.id.clone(),
                network: net.name.clone(),
                pool_id: pool_id.clone(),
                address,
            });
        }
        let svc = Service {
            id: match Id::random() {
                Ok(id) => id,
                Err(e) => return undo.fail(e),
            },
            name: cfg.name.clone(),
            created: crate::time::Timestamp::now(),
            vips,
            ports: cfg.ports.clone(),
            ingress_network: ingress,
            backends: Vec::new(),
        };
        if let Err(e) = self.store.put_json(&service_key(&svc.name), &svc, Expect::Absent) {
            let e = match e.kind() {
                ErrorKind::AlreadyExists => Error::AlreadyExists { what: "service", name: svc.name.clone() },
                _ => e,
            };
            return undo.fail(e);
        }
        // A service created at the same moment on another host may have
        // taken one of the ports: the later one gives way.
        if let Err(e) = self.check_ports_free(&cfg, Some(&svc)) {
            let key = service_key(&svc.name);
            undo.push("delete the service record", move || super::delete_record(&*self.store, &key));
            return undo.fail(e);
        }
        undo.commit();
        tracing::info!(service = %svc.name, "service created");
        Ok(svc)
    }

    /// Refuses ports another service publishes (`me`: this service's own
    /// record, already written; the older of two claims wins).
    fn check_ports_free(&self, cfg: &ServiceConfig, me: Option<&Service>) -> Result<()> {
        for other in self.services()? {
            if me.is_some_and(|m| m.id == other.id || (m.created, &m.id) < (other.created, &other.id)) {
                continue;
            }
            for p in &cfg.ports {
                if other.ports.iter().any(|q| q.protocol == p.protocol && q.published == p.published) {
                    return Err(Error::conflict(
                        format!("port {}/{}", p.published, p.protocol),
                        format!("already published by service {:?}", other.name),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The ingress network, created (an overlay) if there is none yet.
    fn ingress_network(&self) -> Result<Network> {
        match self.network(INGRESS_NETWORK) {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            other => return other,
        }
        if !self.drivers.contains_key("overlay") {
            return Err(Error::invalid(
                "--publish",
                "mode=ingress needs the overlay driver (a cluster store and --advertise-addr); publish with mode=host",
            ));
        }
        match self.create_network(NetworkConfig::new(INGRESS_NETWORK, "overlay")) {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => self.network(INGRESS_NETWORK),
            other => other,
        }
    }

    /// Every service, sorted by name.
    pub fn services(&self) -> Result<Vec<Service>> {
        let mut all: Vec<Service> = self.store.list_json(SERVICES_PREFIX)?.into_iter().map(|(s, _)| s).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The service named `key`, or whose id is or starts with `key`.
    pub fn service(&self, key: &str) -> Result<Service> {
        self.find_service(key).map(|(s, _)| s)
    }

    fn find_service(&self, key: &str) -> Result<(Service, u64)> {
        self.find("service", SERVICES_PREFIX, key, |s: &Service| &s.name, |s| &s.id)
    }

    /// Removes a service: its record first (so no host sends a new
    /// connection to it), then this host's ingress endpoints of its
    /// backends and its virtual IPs. Other hosts' agents disconnect their
    /// own backends' ingress endpoints when they see it gone.
    pub fn delete_service(&self, key: &str) -> Result<()> {
        let (svc, rev) = self.find_service(key)?;
        self.store.delete(&service_key(&svc.name), Expect::Revision(rev))?;
        let mut errors = Vec::new();
        for b in svc.backends.iter().filter(|b| b.host == self.node) {
            errors.extend(self.drop_ingress_endpoint(b).err());
        }
        for vip in &svc.vips {
            match self.network(vip.network_id.as_str()).and_then(|n| self.ipam(&n.ipam.driver).cloned()) {
                Ok(ipam) => errors.extend(gone_ok(ipam.release_address(&vip.pool_id, vip.address.addr())).err()),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => errors.push(e),
            }
        }
        tracing::info!(service = %svc.name, "service removed");
        Error::teardown(format!("remove service {:?}", svc.name), errors)
    }

    /// Makes sandbox `sandbox` (of this host) a backend of `service`. The
    /// sandbox must be on every network of the service; for a port in
    /// ingress mode it is connected to the ingress network (unless it is
    /// already); for a port in host mode it needs an address on a network
    /// of this host (a bridge network, or the gateway bridge).
    pub fn add_backend(&self, service: &str, sandbox: &str) -> Result<Service> {
        let svc = self.service(service)?;
        let sb = self.sandbox(sandbox)?;
        if svc.backend(&self.node, &sb.name).is_some() {
            return Err(Error::AlreadyExists {
                what: "backend",
                name: format!("{} of service {:?}", sb.name, svc.name),
            });
        }
        let mut backend = self.describe_backend(&svc, &sb)?;
        let mut undo = Undo::new();
        if let Some(ingress) = &svc.ingress_network {
            match self.ingress_address(ingress, &sb) {
                Ok((address, created)) => {
                    backend.addresses.push(BackendAddress { network_id: ingress.clone(), address });
                    if created.is_some() {
                        backend.ingress_endpoint = created;
                        let name = sb.name.clone();
                        undo.push("disconnect from the ingress network", move || {
                            gone_ok(self.disconnect(INGRESS_NETWORK, &name))
                        });
                    }
                }
                Err(e) => return undo.fail(e),
            }
        }
        let (node, sandbox_name) = (self.node.clone(), sb.name.clone());
        let changed = self.change_service(&svc.name, |s| {
            if s.backend(&node, &sandbox_name).is_some() {
                return Err(Error::AlreadyExists {
                    what: "backend",
                    name: format!("{sandbox_name} of service {:?}", s.name),
                });
            }
            s.backends.push(backend.clone());
            Ok(())
        });
        match changed {
            Ok(s) => {
                undo.commit();
                tracing::info!(service = %s.name, sandbox = %sb.name, "backend added");
                Ok(s)
            }
            Err(e) => undo.fail(e),
        }
    }

    /// The backend record of `sb` for `svc`: its addresses on the service's
    /// networks (it must be on each) and on a network of this host.
    fn describe_backend(&self, svc: &Service, sb: &Sandbox) -> Result<ServiceBackend> {
        let endpoints = self.sandbox_endpoints(sb)?;
        let mut addresses = Vec::with_capacity(svc.vips.len());
        let missing: Vec<&str> = svc
            .vips
            .iter()
            .filter(|v| !endpoints.iter().any(|e| e.network_id == v.network_id))
            .map(|v| v.network.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Error::invalid(
                "backend",
                format!(
                    "sandbox {:?} is not on network {} of service {:?}: connect it first",
                    sb.name,
                    missing.join(", "),
                    svc.name
                ),
            ));
        }
        for v in &svc.vips {
            let ep = endpoints.iter().find(|e| e.network_id == v.network_id).expect("checked above");
            let address = ep.ipv4.map(|a| a.addr()).ok_or_else(|| {
                Error::invalid(
                    "backend",
                    format!("sandbox {:?} has no IPv4 address on network {:?}", sb.name, v.network),
                )
            })?;
            addresses.push(BackendAddress { network_id: v.network_id.clone(), address });
        }
        let mut local_address = None;
        for ep in &endpoints {
            let local = self.network_of(ep).map(|n| n.scope == Scope::Local).unwrap_or(false);
            if local && ep.state == State::Ready {
                local_address = local_address.or(ep.ipv4.map(|a| a.addr()));
            }
        }
        if local_address.is_none() && svc.ports.iter().any(|p| p.mode == PublishMode::Host) {
            return Err(Error::invalid(
                "backend",
                format!("sandbox {:?} has no address on a network of this host, which mode=host ports need", sb.name),
            ));
        }
        Ok(ServiceBackend {
            sandbox: sb.name.clone(),
            sandbox_id: sb.id.clone(),
            host: self.node.clone(),
            addresses,
            local_address,
            ingress_endpoint: None,
        })
    }

    /// The sandbox's address on the ingress network, connecting it there if
    /// it is not yet (then also the new endpoint's name).
    fn ingress_address(&self, ingress: &Id, sb: &Sandbox) -> Result<(IpAddr, Option<String>)> {
        let existing = self.sandbox_endpoints(sb)?.into_iter().find(|e| &e.network_id == ingress);
        let (ep, created) = match existing {
            Some(ep) => (ep, false),
            None => (self.connect(ingress.as_str(), &sb.name, EndpointConfig::default())?, true),
        };
        let created = created.then(|| ep.name.clone());
        let address = ep.ipv4.map(|a| a.addr());
        match address {
            Some(a) => Ok((a, created)),
            None => Err(Error::Internal(format!("the ingress endpoint of {:?} has no IPv4 address", sb.name))),
        }
    }

    /// Removes sandbox `sandbox` (of this host) from `service`'s backends:
    /// the record first, so no new connection reaches it, then its ingress
    /// endpoint if it was connected for the service and no other service
    /// uses it.
    pub fn remove_backend(&self, service: &str, sandbox: &str) -> Result<Service> {
        let svc = self.service(service)?;
        let node = self.node.clone();
        let name = match self.sandbox(sandbox) {
            Ok(sb) => sb.name,
            Err(e) if e.kind() == ErrorKind::NotFound => sandbox.to_string(),
            Err(e) => return Err(e),
        };
        let mut removed = None;
        let svc = self.change_service(&svc.name, |s| {
            let i = s.backends.iter().position(|b| b.host == node && b.sandbox == name).ok_or_else(|| {
                Error::NotFound { what: "backend", name: format!("{name} of service {:?} on host {node:?}", s.name) }
            })?;
            removed = Some(s.backends.remove(i));
            Ok(())
        })?;
        if let Some(b) = removed {
            self.drop_ingress_endpoint(&b)?;
        }
        tracing::info!(service = %svc.name, sandbox = %name, "backend removed");
        Ok(svc)
    }

    /// Disconnects a removed backend's ingress endpoint, unless another
    /// service still has it as a backend.
    fn drop_ingress_endpoint(&self, b: &ServiceBackend) -> Result<()> {
        if b.ingress_endpoint.is_none() {
            return Ok(());
        }
        let still_used = self.services()?.iter().any(|s| s.has_ingress() && s.backend(&b.host, &b.sandbox).is_some());
        if still_used {
            return Ok(());
        }
        gone_ok(self.disconnect(INGRESS_NETWORK, &b.sandbox))
    }

    /// Reads, changes and writes back a service record, again when another
    /// host wrote it in between.
    fn change_service(&self, name: &str, mut f: impl FnMut(&mut Service) -> Result<()>) -> Result<Service> {
        for _ in 0..CAS_TRIES {
            let (mut svc, rev) = self.find_service(name)?;
            f(&mut svc)?;
            match self.store.put_json(&service_key(&svc.name), &svc, Expect::Revision(rev)) {
                Ok(_) => return Ok(svc),
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(format!("service {name:?}"), "changed concurrently too often; try again"))
    }
}
