//! [`MacvlanDriver`]: Docker's `macvlan` driver.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use cnm_core::{DriverContext, Endpoint, Error, JoinInfo, JoinRequest, Network, NetworkDriver, Result};
use cnm_netns::{ErrorKind as NsKind, Handle, Link, LinkAdd, NetNs};

use crate::options::{MacvlanOptions, Parent, PARENT};

/// The alias marking the parent devices this driver made (an internal
/// network's, a VLAN sub-interface), followed by the network's id.
pub const MARKER: &str = "cnm-macvlan:";

/// `driver_data` key: the parent's index when the endpoint joined; another
/// index now means the parent went away and came back, taking the
/// endpoint's device with it.
const PARENT_INDEX: &str = "parent_index";
/// `driver_data` key: the device's name in the host namespace, for a
/// runtime that moves it itself.
const SRC_NAME: &str = "src_name";

/// Each container gets a macvlan device on the parent interface, made
/// directly in its namespace: its own MAC, an address of the LAN's subnet,
/// the LAN's gateway as default route. No bridge, no NAT.
pub struct MacvlanDriver {
    handle: Mutex<Option<(u64, Arc<Handle>)>>,
    fault: Option<FaultHook>,
}

/// What a fault-injection test calls before each step.
type FaultHook = Arc<dyn Fn(&str) -> Result<()> + Send + Sync>;

impl Default for MacvlanDriver {
    fn default() -> Self {
        MacvlanDriver::new()
    }
}

impl MacvlanDriver {
    /// A driver.
    pub fn new() -> MacvlanDriver {
        MacvlanDriver { handle: Mutex::new(None), fault: None }
    }

    /// A driver that calls `hook` with the name of each step before it
    /// runs (fault-injection tests).
    #[cfg(feature = "testing")]
    pub fn with_fault_hook(hook: cnm_core::testing::FaultHook) -> MacvlanDriver {
        MacvlanDriver { handle: Mutex::new(None), fault: Some(hook) }
    }

    fn step(&self, name: &str) -> Result<()> {
        match &self.fault {
            Some(h) => h(name),
            None => Ok(()),
        }
    }

    /// A netlink handle in the host namespace, kept.
    fn handle(&self, ns: &NetNs) -> Result<Arc<Handle>> {
        let ino = ns.inode().map_err(Error::from_netns("open host namespace"))?;
        let mut g = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((i, h)) = &*g {
            if *i == ino {
                return Ok(h.clone());
            }
        }
        let h = Arc::new(Handle::open(ns).map_err(Error::from_netns("open host namespace"))?);
        *g = Some((ino, h.clone()));
        Ok(h)
    }

    /// Whether this driver made `link` for `net` (its marker).
    fn made_for(link: &Link, net: &Network) -> bool {
        link.alias.as_deref().and_then(|a| a.strip_prefix(MARKER)) == Some(net.id.as_str())
    }

    /// The network's parent device as it is now.
    fn parent_link(h: &Handle, net: &Network) -> Result<Link> {
        let o = MacvlanOptions::from_docker(&net.options, net.internal)?;
        let dev = o.parent.device(net.id.as_str());
        h.link_get(dev.as_str()).map_err(|e| match e.kind() {
            NsKind::NotFound => Error::conflict(
                format!("parent interface {dev:?} of network {:?}", net.name),
                "it is gone; endpoints join again once it is back (cnm reconcile)",
            ),
            _ => Error::from_netns(format!("find parent {dev:?}"))(e),
        })
    }

    /// Makes the parent device a network asks for, when it is this
    /// driver's to make; returns whether it made one.
    fn make_parent(&self, h: &Handle, net: &Network, parent: &Parent) -> Result<bool> {
        let dev = parent.device(net.id.as_str());
        let alias = format!("{MARKER}{}", net.id);
        match parent {
            // No dummy devices on every kernel: an empty bridge is a parent
            // too, and its macvlan devices reach each other in bridge mode.
            Parent::Internal => {
                self.step("create parent")?;
                h.link_add(&LinkAdd::bridge(dev.as_str()).alias(alias).up())
                    .map_err(Error::from_netns(format!("create internal parent {dev:?}")))?;
                Ok(true)
            }
            Parent::Interface(i) => match h.link_get(i.as_str()) {
                Ok(_) => Ok(false),
                Err(e) if e.kind() == NsKind::NotFound => {
                    Err(Error::invalid(PARENT, format!("interface {i:?} not found in the host namespace")))
                }
                Err(e) => Err(Error::from_netns(format!("find parent {i:?}"))(e)),
            },
            Parent::Vlan { interface, id } => {
                // An existing sub-interface is used and left alone, as Docker does.
                if h.link_get(dev.as_str()).is_ok() {
                    return Ok(false);
                }
                let base = h.link_get(interface.as_str()).map_err(|e| match e.kind() {
                    NsKind::NotFound => Error::invalid(
                        PARENT,
                        format!("interface {interface:?} (of {dev:?}) not found in the host namespace"),
                    ),
                    _ => Error::from_netns(format!("find {interface:?}"))(e),
                })?;
                self.step("create vlan")?;
                h.link_add(&LinkAdd::vlan(dev.as_str(), base.index, *id).alias(alias).up()).map_err(|e| {
                    match e.errno() {
                        Some(95) => Error::invalid(
                            PARENT,
                            format!(
                                "{dev:?} asks for an 802.1Q sub-interface (VLAN {id} on {interface}), and this kernel \
                                 has no 802.1Q support (module 8021q): give an existing interface as parent"
                            ),
                        ),
                        _ => Error::from_netns(format!("create VLAN sub-interface {dev:?}"))(e),
                    }
                })?;
                Ok(true)
            }
        }
    }
}

fn gone_ok(r: std::result::Result<(), cnm_netns::Error>) -> std::result::Result<(), cnm_netns::Error> {
    match r {
        Err(e) if e.kind() == NsKind::NotFound => Ok(()),
        other => other,
    }
}

impl NetworkDriver for MacvlanDriver {
    fn name(&self) -> &str {
        "macvlan"
    }

    fn validate_network(&self, net: &Network) -> Result<()> {
        MacvlanOptions::from_docker(&net.options, net.internal).map(|_| ())
    }

    fn check_among(&self, net: &Network, others: &[Network]) -> Result<()> {
        let mine = MacvlanOptions::from_docker(&net.options, net.internal)?.parent;
        if mine == Parent::Internal {
            return Ok(());
        }
        let dev = mine.device(net.id.as_str());
        for other in others.iter().filter(|o| o.id != net.id) {
            let theirs = MacvlanOptions::from_docker(&other.options, other.internal).map(|o| o.parent);
            if theirs.is_ok_and(|p| p.device(other.id.as_str()) == dev) {
                return Err(Error::conflict(
                    format!("parent interface {dev:?}"),
                    format!("network {:?} is already using parent interface {dev}", other.name),
                ));
            }
        }
        Ok(())
    }

    fn create_network(&self, ctx: &DriverContext<'_>, net: &mut Network) -> Result<()> {
        let o = MacvlanOptions::from_docker(&net.options, net.internal)?;
        let h = self.handle(ctx.host)?;
        // Inspect shows the options as given, as Docker's does: what this
        // driver made is known by its marker, not recorded.
        self.make_parent(&h, net, &o.parent).map(|_| ())
    }

    fn delete_network(&self, ctx: &DriverContext<'_>, net: &Network) -> Result<()> {
        let o = MacvlanOptions::from_docker(&net.options, net.internal)?;
        let dev = o.parent.device(net.id.as_str());
        let h = self.handle(ctx.host)?;
        match h.link_get(dev.as_str()) {
            Ok(l) if Self::made_for(&l, net) => {
                self.step("delete parent")?;
                gone_ok(h.link_del(l.index)).map_err(Error::from_netns(format!("delete parent {dev:?}")))
            }
            Ok(_) => Ok(()),
            Err(e) if e.kind() == NsKind::NotFound => Ok(()),
            Err(e) => Err(Error::from_netns(format!("find parent {dev:?}"))(e)),
        }
    }

    fn create_endpoint(&self, _: &DriverContext<'_>, _: &Network, ep: &mut Endpoint) -> Result<()> {
        cnm_core::driver::assign_docker_mac(ep)?;
        Ok(())
    }

    fn join(
        &self,
        ctx: &DriverContext<'_>,
        net: &Network,
        ep: &mut Endpoint,
        req: &JoinRequest<'_>,
    ) -> Result<JoinInfo> {
        let o = MacvlanOptions::from_docker(&net.options, net.internal)?;
        let h = self.handle(ctx.host)?;
        let parent = Self::parent_link(&h, net)?;
        let src_name = format!("mv{}", &ep.id.as_str()[..8]);
        // Made directly in the sandbox, with its name and MAC, in one
        // request; for a runtime that moves it itself, in the host namespace.
        let mut add = match req.in_host {
            true => LinkAdd::macvlan(src_name.as_str(), parent.index, o.mode),
            false => LinkAdd::macvlan(req.ifname, parent.index, o.mode).netns(req.netns),
        };
        if let Some(m) = ep.mac {
            add = add.mac(m);
        }
        self.step("create macvlan")?;
        h.link_add(&add).map_err(|e| match e.kind() {
            NsKind::AlreadyExists => Error::conflict(
                format!("interface {:?} in sandbox {:?}", req.ifname, req.sandbox.name),
                "the sandbox has an interface of that name already",
            ),
            _ => {
                Error::from_netns(format!("create the macvlan device of endpoint {:?} on {:?}", ep.name, parent.name))(
                    e,
                )
            }
        })?;
        ep.driver_data.insert(PARENT_INDEX.into(), parent.index.to_string());
        let info = match req.in_host {
            true => {
                ep.driver_data.insert(SRC_NAME.into(), src_name.clone());
                JoinInfo::in_host(ep, src_name, "eth")
            }
            false => JoinInfo::in_sandbox(ep, None),
        };
        if o.parent == Parent::Internal {
            // Nothing beyond the network: no gateway, no default route.
            return Ok(info.default_route(false));
        }
        Ok(info.gateway(net.gateway_v4().map(|g| g.addr())).gateway(net.gateway_v6().map(|g| g.addr())))
    }

    fn leave(&self, ctx: &DriverContext<'_>, _: &Network, ep: &Endpoint, netns: Option<&NetNs>) -> Result<()> {
        self.step("delete macvlan")?;
        // Back in the host namespace (a runtime moved it), or still in the
        // sandbox: either way, deleted where it is.
        if let Some(src) = ep.driver_data.get(SRC_NAME) {
            let h = self.handle(ctx.host)?;
            return gone_ok(h.link_del(src.as_str())).map_err(Error::from_netns(format!("delete {src:?}")));
        }
        let (Some(ns), Some(ifname)) = (netns, ep.ifname.as_deref()) else { return Ok(()) };
        let c = match Handle::open(ns) {
            Ok(c) => c,
            // The namespace went meanwhile, and its devices with it.
            Err(e) if e.kind() == NsKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::from_netns("open the sandbox namespace")(e)),
        };
        gone_ok(c.link_del(ifname)).map_err(Error::from_netns(format!("delete {ifname:?} of endpoint {:?}", ep.name)))
    }

    fn restore_network(&self, ctx: &DriverContext<'_>, net: &Network, _: &[Endpoint]) -> Result<Vec<String>> {
        let o = MacvlanOptions::from_docker(&net.options, net.internal)?;
        let h = self.handle(ctx.host)?;
        let dev = o.parent.device(net.id.as_str());
        // Ours to make again: an internal network's parent, and a VLAN
        // sub-interface (Docker's driver makes one when it is missing).
        let ours = !matches!(o.parent, Parent::Interface(_));
        match h.link_get(dev.as_str()) {
            Ok(l) if !l.up && Self::made_for(&l, net) => {
                h.link_set_up(l.index).map_err(Error::from_netns(format!("bring {dev:?} up")))?;
                Ok(vec![format!("brought parent {dev} of network {:?} back up", net.name)])
            }
            Ok(_) => Ok(Vec::new()),
            Err(e) if e.kind() == NsKind::NotFound && ours => {
                self.make_parent(&h, net, &o.parent)?;
                Ok(vec![format!("re-created parent {dev} of network {:?}", net.name)])
            }
            Err(e) if e.kind() == NsKind::NotFound => {
                tracing::warn!(network = %net.name, parent = %dev, "macvlan parent is gone; its endpoints come back with it");
                Ok(Vec::new())
            }
            Err(e) => Err(Error::from_netns(format!("find parent {dev:?}"))(e)),
        }
    }

    fn lost_endpoints(&self, ctx: &DriverContext<'_>, net: &Network, endpoints: &[Endpoint]) -> Result<Vec<String>> {
        let h = self.handle(ctx.host)?;
        let Ok(parent) = Self::parent_link(&h, net) else { return Ok(Vec::new()) };
        let now = parent.index.to_string();
        Ok(endpoints
            .iter()
            .filter(|e| e.sandbox.is_some() && !e.driver_data.contains_key(SRC_NAME))
            .filter(|e| e.driver_data.get(PARENT_INDEX).is_some_and(|i| *i != now))
            .map(|e| e.id.to_string())
            .collect())
    }

    fn remove_leftovers(&self, ctx: &DriverContext<'_>, networks: &[Network], _: &[Endpoint]) -> Result<Vec<String>> {
        let h = self.handle(ctx.host)?;
        let nets: BTreeSet<String> = networks.iter().map(|n| n.id.to_string()).collect();
        let mut removed = Vec::new();
        for l in h.link_list().map_err(Error::from_netns("list links"))? {
            let Some(id) = l.alias.as_deref().and_then(|a| a.strip_prefix(MARKER)) else { continue };
            if !nets.contains(id) {
                gone_ok(h.link_del(l.index)).map_err(Error::from_netns(format!("delete {:?}", l.name)))?;
                removed.push(format!("removed {} left by a macvlan network that is gone", l.name));
            }
        }
        Ok(removed)
    }
}
