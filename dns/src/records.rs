//! The names each sandbox may resolve: per network, the names of the
//! joined endpoints and their addresses, and the reverse (PTR) names.
//! Updated per sandbox, so a change never makes another name disappear.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use cnm_core::{Endpoint, Sandbox};

/// One endpoint's addresses under one name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Addr {
    /// The sandbox (id) that owns it.
    owner: Arc<str>,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

/// What one network resolves.
#[derive(Debug, Default)]
struct NetTable {
    /// The network's name, lower case (for `NAME.NETWORK`).
    name: String,
    by_name: HashMap<String, Vec<Addr>>,
    /// Address -> `SANDBOX.NETWORK`, with its owner.
    by_addr: HashMap<IpAddr, (Arc<str>, String)>,
}

/// What one owner publishes on one network.
struct Entry {
    net_id: Arc<str>,
    net_name: String,
    names: Vec<String>,
    addrs: Vec<IpAddr>,
    /// The reverse name of `addrs` (none: they keep their own).
    ptr: Option<String>,
}

/// What a sandbox contributed and may see.
#[derive(Debug, Default)]
struct Member {
    /// (network id, names) it published.
    published: Vec<(Arc<str>, Vec<String>)>,
}

/// Addresses found for a name; empty lists: the name exists, without an
/// address of that family.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

/// Every sandbox's names, per network.
#[derive(Debug, Default)]
pub(crate) struct Records {
    nets: HashMap<Arc<str>, NetTable>,
    members: HashMap<Arc<str>, Member>,
    /// Grows at every change (what answer caches check).
    generation: u64,
}

impl Records {
    /// Replaces what `sb` publishes with its `endpoints` (the joined ones).
    pub fn update(&mut self, sb: &Sandbox, endpoints: &[Endpoint]) {
        let entries = endpoints
            .iter()
            .map(|ep| Entry {
                net_id: Arc::from(ep.network_id.as_str()),
                net_name: ep.network.clone(),
                names: cnm_core::names::endpoint_names(sb, ep),
                addrs: [ep.ipv4, ep.ipv6].into_iter().flatten().map(|a| a.addr()).collect(),
                ptr: Some(format!("{}.{}", sb.name, ep.network)),
            })
            .collect();
        self.publish(Arc::from(sb.id.as_str()), entries);
    }

    /// Replaces the endpoints other hosts have on network `net_id` (one
    /// owner per network, replaced whole).
    pub fn set_remote(&mut self, net_id: &str, net_name: &str, remote: &[crate::RemoteName]) {
        let entries = remote
            .iter()
            .map(|r| Entry {
                net_id: Arc::from(net_id),
                net_name: net_name.to_string(),
                names: r.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
                addrs: vec![r.address],
                ptr: Some(r.ptr.clone()),
            })
            .collect();
        self.publish(Arc::from(format!("remote/{net_id}").as_str()), entries);
    }

    /// Replaces a service's names: on each of its networks, `NAME` (and
    /// `NAME.NETWORK`) is its virtual IP, whose reverse name is
    /// `NAME.NETWORK`, and `tasks.NAME` every backend's address there.
    pub fn set_service(&mut self, svc: &cnm_core::Service) {
        let name = svc.name.to_ascii_lowercase();
        let mut entries = Vec::new();
        for vip in &svc.vips {
            let net_id: Arc<str> = Arc::from(vip.network_id.as_str());
            entries.push(Entry {
                net_id: net_id.clone(),
                net_name: vip.network.clone(),
                names: vec![name.clone()],
                addrs: vec![vip.address.addr()],
                ptr: Some(format!("{}.{}", svc.name, vip.network)),
            });
            for b in svc.backends.iter().filter_map(|b| b.address_on(&net_id)) {
                entries.push(Entry {
                    net_id: net_id.clone(),
                    net_name: vip.network.clone(),
                    names: vec![format!("tasks.{name}")],
                    addrs: vec![b],
                    ptr: None,
                });
            }
        }
        self.publish(Arc::from(format!("service/{}", svc.id).as_str()), entries);
    }

    /// Forgets a service's names (by id).
    pub fn remove_service(&mut self, id: &str) {
        self.remove(&format!("service/{id}"));
    }

    /// Replaces everything `owner` publishes.
    fn publish(&mut self, owner: Arc<str>, entries: Vec<Entry>) {
        self.generation += 1;
        self.remove(&owner);
        let mut member = Member::default();
        for e in entries {
            let table = self.nets.entry(e.net_id.clone()).or_default();
            table.name = e.net_name.to_ascii_lowercase();
            let mut addr = Addr { owner: owner.clone(), v4: None, v6: None };
            for a in &e.addrs {
                match a {
                    IpAddr::V4(v4) => addr.v4 = Some(*v4),
                    IpAddr::V6(v6) => addr.v6 = Some(*v6),
                }
            }
            for n in &e.names {
                table.by_name.entry(n.clone()).or_default().push(addr.clone());
            }
            if let Some(ptr) = &e.ptr {
                for a in &e.addrs {
                    table.by_addr.insert(*a, (owner.clone(), ptr.clone()));
                }
            }
            member.published.push((e.net_id, e.names));
        }
        self.members.insert(owner, member);
    }

    /// Forgets a sandbox (by id).
    pub fn remove(&mut self, owner: &str) {
        self.generation += 1;
        let Some(member) = self.members.remove(owner) else { return };
        for (net_id, names) in member.published {
            let Some(table) = self.nets.get_mut(&net_id) else { continue };
            for n in names {
                if let Some(list) = table.by_name.get_mut(&n) {
                    list.retain(|a| &*a.owner != owner);
                    if list.is_empty() {
                        table.by_name.remove(&n);
                    }
                }
            }
            table.by_addr.retain(|_, (o, _)| &**o != owner);
            if table.by_name.is_empty() {
                self.nets.remove(&net_id);
            }
        }
    }

    /// The networks `asker` (a sandbox id) is on.
    fn visible<'a>(&'a self, asker: &str) -> impl Iterator<Item = &'a NetTable> + 'a {
        let nets: &[(Arc<str>, Vec<String>)] = self.members.get(asker).map(|m| &m.published[..]).unwrap_or(&[]);
        nets.iter().filter_map(|(id, _)| self.nets.get(id))
    }

    /// The number of changes so far.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether `asker` is on any network (else nothing is local to it).
    pub fn knows(&self, asker: &str) -> bool {
        self.members.get(asker).is_some_and(|m| !m.published.is_empty())
    }

    /// The addresses of `name` (lower case, no final dot) on the networks
    /// `asker` is on: `NAME`, or `NAME.NETWORK` for one of them.
    pub fn lookup(&self, asker: &str, name: &str) -> Option<Found> {
        let mut found: Option<Found> = None;
        for table in self.visible(asker) {
            let key = match name.strip_suffix(table.name.as_str()).and_then(|n| n.strip_suffix('.')) {
                Some(short) => short,
                None => name,
            };
            let Some(list) = table.by_name.get(key) else { continue };
            let f = found.get_or_insert_with(Found::default);
            for a in list {
                if let Some(v4) = a.v4.filter(|v| !f.v4.contains(v)) {
                    f.v4.push(v4);
                }
                if let Some(v6) = a.v6.filter(|v| !f.v6.contains(v)) {
                    f.v6.push(v6);
                }
            }
        }
        found
    }

    /// The PTR name of `addr` on the networks `asker` is on.
    pub fn reverse(&self, asker: &str, addr: IpAddr) -> Option<&str> {
        self.visible(asker).find_map(|t| t.by_addr.get(&addr).map(|(_, n)| n.as_str()))
    }

    /// How many sandboxes publish names.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::answer::tests_support::{endpoint_on, sandbox};

    fn endpoint(net: &str, ip: &str, aliases: &[&str]) -> Endpoint {
        endpoint_on(net, ip, None, aliases)
    }

    #[test]
    fn names_are_seen_only_from_shared_networks() {
        let mut r = Records::default();
        let (a, b, c) = (sandbox("a"), sandbox("B"), sandbox("c"));
        r.update(&a, &[endpoint("front", "10.0.0.2", &[])]);
        r.update(&b, &[endpoint("front", "10.0.0.3", &["web"]), endpoint("back", "10.1.0.3", &[])]);
        r.update(&c, &[endpoint("back", "10.1.0.4", &["web"])]);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(r.lookup(a.id.as_str(), "b").unwrap().v4, vec![ip("10.0.0.3")]);
        assert_eq!(r.lookup(a.id.as_str(), "web").unwrap().v4, vec![ip("10.0.0.3")]);
        assert_eq!(r.lookup(a.id.as_str(), "b.front").unwrap().v4, vec![ip("10.0.0.3")]);
        assert!(r.lookup(a.id.as_str(), "c").is_none(), "c is on no network a is on");
        assert!(r.lookup(a.id.as_str(), "b.back").is_none());
        let web = r.lookup(b.id.as_str(), "web").unwrap().v4;
        assert_eq!(web.len(), 2, "{web:?}");
        assert_eq!(r.reverse(a.id.as_str(), "10.0.0.3".parse().unwrap()), Some("B.front"));
        assert_eq!(r.reverse(a.id.as_str(), "10.1.0.4".parse().unwrap()), None);
        assert_eq!(r.lookup(a.id.as_str(), b.id.short()).unwrap().v4, vec![ip("10.0.0.3")]);
        // b leaves "front": a no longer sees it, c still does on "back".
        r.update(&b, &[endpoint("back", "10.1.0.3", &[])]);
        assert!(r.lookup(a.id.as_str(), "b").is_none());
        assert_eq!(r.lookup(c.id.as_str(), "b").unwrap().v4, vec![ip("10.1.0.3")]);
        r.remove(b.id.as_str());
        r.remove(b.id.as_str());
        assert!(r.lookup(c.id.as_str(), "b").is_none());
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn other_hosts_names_are_replaced_per_network() {
        let mut r = Records::default();
        let a = sandbox("a");
        let ep = endpoint("front", "10.0.0.2", &[]);
        let net = ep.network_id.to_string();
        r.update(&a, &[ep]);
        let far = |name: &str, ip: &str| {
            crate::RemoteName::new(vec![name.into()], ip.parse().unwrap(), format!("{name}.front"))
        };
        r.set_remote(&net, "front", &[far("x", "10.0.0.9"), far("y", "10.0.0.10")]);
        assert_eq!(r.lookup(a.id.as_str(), "x.front").unwrap().v4, vec!["10.0.0.9".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(r.reverse(a.id.as_str(), "10.0.0.10".parse().unwrap()), Some("y.front"));
        r.set_remote(&net, "front", &[far("y", "10.0.0.10")]);
        assert!(r.lookup(a.id.as_str(), "x").is_none(), "x left its host");
        assert!(r.lookup(a.id.as_str(), "y").is_some());
        r.set_remote("other", "other", &[far("z", "10.9.0.1")]);
        assert!(r.lookup(a.id.as_str(), "z").is_none(), "a is not on that network");
    }

    #[test]
    fn a_service_answers_with_its_virtual_ip_and_tasks_with_its_backends() {
        let mut r = Records::default();
        let (a, b) = (sandbox("a"), sandbox("b"));
        let ep = endpoint("front", "10.0.0.2", &[]);
        let net = ep.network_id.clone();
        r.update(&a, &[ep]);
        r.update(&b, &[endpoint("back", "10.1.0.2", &[])]);
        let backend = |sb: &str, ip: &str| cnm_core::ServiceBackend {
            sandbox: sb.into(),
            sandbox_id: cnm_core::Id::random().unwrap(),
            host: "h1".into(),
            addresses: vec![cnm_core::BackendAddress { network_id: net.clone(), address: ip.parse().unwrap() }],
            local_address: None,
            ingress_endpoint: None,
        };
        let mut svc = cnm_core::Service {
            id: cnm_core::Id::random().unwrap(),
            name: "Web".into(),
            created: cnm_core::Timestamp::now(),
            vips: vec![cnm_core::ServiceVip {
                network_id: net.clone(),
                network: "front".into(),
                pool_id: "p".into(),
                address: "10.0.0.100/24".parse().unwrap(),
            }],
            ports: Vec::new(),
            ingress_network: None,
            backends: vec![backend("x", "10.0.0.7"), backend("y", "10.0.0.8")],
        };
        r.set_service(&svc);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let asker = a.id.as_str();
        assert_eq!(r.lookup(asker, "web").unwrap().v4, vec![ip("10.0.0.100")]);
        assert_eq!(r.lookup(asker, "web.front").unwrap().v4, vec![ip("10.0.0.100")]);
        assert_eq!(r.lookup(asker, "tasks.web").unwrap().v4, vec![ip("10.0.0.7"), ip("10.0.0.8")]);
        assert_eq!(r.reverse(asker, "10.0.0.100".parse().unwrap()), Some("Web.front"));
        assert!(r.lookup(b.id.as_str(), "web").is_none(), "b is not on the service's network");
        svc.backends.remove(0);
        r.set_service(&svc);
        assert_eq!(r.lookup(asker, "tasks.web").unwrap().v4, vec![ip("10.0.0.8")]);
        r.remove_service(svc.id.as_str());
        assert!(r.lookup(asker, "web").is_none() && r.lookup(asker, "tasks.web").is_none());
        assert!(r.lookup(asker, "a").is_some(), "the sandboxes' own names stay");
    }
}
