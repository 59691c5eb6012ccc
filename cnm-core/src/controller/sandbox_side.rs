//! Programs the sandbox side of an endpoint from its driver's [`JoinInfo`],
//! once, for every driver: move and rename the interface when the driver
//! left it in the host namespace, MAC, MTU, sysctls, up, addresses, static
//! routes, the default route (and its handover when endpoints leave), the
//! hosts file. One undo stack; a test hook before every step.

use cnm_netns::{AddrFlags, ErrorKind as NsKind, Handle, NetNs, Route};

use super::Controller;
use crate::error::{Error, Result};
use crate::join::{sysctl_key, Interface, JoinInfo};
use crate::model::{Endpoint, Network, Sandbox};
use crate::undo::Undo;

/// What a join asks of the sandbox side.
pub(super) struct Program<'a> {
    pub sandbox: &'a Sandbox,
    pub netns: &'a NetNs,
    /// The endpoint, with its final interface name in `ifname`.
    pub endpoint: &'a Endpoint,
    pub info: &'a JoinInfo,
    /// Whether it gets the default route now.
    pub default_route: bool,
    /// The sandbox's other joined endpoints (for the hosts file).
    pub others: &'a [Endpoint],
}

/// Treats "already gone" as done.
fn gone_ok(r: std::result::Result<(), cnm_netns::Error>) -> std::result::Result<(), cnm_netns::Error> {
    match r {
        Err(e) if e.kind() == NsKind::NotFound => Ok(()),
        other => other,
    }
}

/// An error of a step on `ep`'s interface, naming both.
fn step_error(ep: &Endpoint, what: &str) -> impl FnOnce(cnm_netns::Error) -> Error {
    Error::from_netns(format!("{what} of endpoint {:?}", ep.name))
}

impl Controller {
    /// Calls the test hook (see `ControllerBuilder::fault_hook`).
    pub(super) fn step(&self, name: &str) -> Result<()> {
        match &self.fault {
            Some(hook) => hook(name),
            None => Ok(()),
        }
    }

    /// The name the interface gets: for a `dst_prefix` other than the
    /// controller's own `eth`, the prefix and the lowest number no other
    /// endpoint of the sandbox uses; otherwise `wanted`.
    pub(super) fn sandbox_ifname(info: &JoinInfo, wanted: &str, others: &[Endpoint]) -> String {
        match &info.interface {
            Some(Interface::InHost { dst_prefix, .. }) if dst_prefix != "eth" => (0..)
                .map(|n| format!("{dst_prefix}{n}"))
                .find(|n| !others.iter().any(|m| m.ifname.as_deref() == Some(n.as_str())))
                .expect("some number is free"),
            _ => wanted.to_string(),
        }
    }

    /// Programs the sandbox; on failure undoes its own steps (the driver's
    /// undo then removes the link).
    pub(super) fn program_sandbox(&self, p: &Program<'_>) -> Result<()> {
        self.step("open sandbox namespace")?;
        let open = || -> std::result::Result<Handle, cnm_netns::Error> {
            // Without an interface (host, null) the sandbox may be the
            // caller's own namespace: no thread into it needed.
            if p.info.interface.is_none() && p.netns.same_as(&NetNs::current()?)? {
                return Handle::new();
            }
            Handle::open(p.netns)
        };
        let c = open().map_err(step_error(p.endpoint, "open the sandbox namespace"))?;
        let mut undo = Undo::new();
        match self.program_steps(p, &c, &mut undo) {
            Ok(()) => {
                undo.commit();
                Ok(())
            }
            Err(e) => undo.fail(e),
        }
    }

    fn program_steps<'u>(&'u self, p: &'u Program<'u>, c: &'u Handle, undo: &mut Undo<'u>) -> Result<()> {
        let ep = p.endpoint;
        let Some(interface) = &p.info.interface else {
            // Loopback only (null), or the host's own (host): up unless it is.
            self.step("loopback up")?;
            if !c.link_get("lo").map_err(step_error(ep, "find loopback"))?.up {
                c.link_set_up("lo").map_err(step_error(ep, "loopback up"))?;
            }
            return Ok(());
        };
        self.step("loopback up")?;
        c.link_set_up("lo").map_err(step_error(ep, "loopback up"))?;
        let ifname = ep
            .ifname
            .as_deref()
            .ok_or_else(|| Error::Internal(format!("endpoint {:?} has no interface name", ep.name)))?;
        let index = match interface {
            Interface::InSandbox { index: Some(i) } if *i != 0 => *i,
            Interface::InSandbox { .. } => {
                self.step("find interface")?;
                c.link_get(ifname).map_err(step_error(ep, "find interface"))?.index
            }
            Interface::InHost { src_name, .. } => self.move_in(p, c, src_name, undo)?,
        };
        self.configure(p, c, index, ifname)?;
        if self.sandbox_files.is_some() {
            self.step("hosts file")?;
            let mut all = p.others.to_vec();
            all.push(ep.clone());
            self.write_hosts(p.sandbox, &all)?;
            undo.push("hosts file", move || self.write_hosts(p.sandbox, p.others));
        }
        Ok(())
    }

    /// Moves a host-namespace interface into the sandbox and gives it its
    /// final name, MAC and MTU; registers moving it back. Returns its index.
    fn move_in<'u>(&'u self, p: &'u Program<'u>, c: &'u Handle, src: &'u str, undo: &mut Undo<'u>) -> Result<u32> {
        let ep = p.endpoint;
        let ifname = ep.ifname.as_deref().unwrap_or(src);
        self.step("open host namespace")?;
        let host = Handle::open(&self.host).map_err(step_error(ep, "open the host namespace"))?;
        self.step("move interface")?;
        host.link_set_netns(src, p.netns).map_err(|e| match e.kind() {
            NsKind::NotFound => Error::invalid(
                format!("join info of endpoint {:?}", ep.name),
                format!("the driver named interface {src:?}, which the host namespace does not have"),
            ),
            _ => step_error(ep, &format!("move {src:?} into the sandbox"))(e),
        })?;
        let index = c.link_get(src).map_err(step_error(ep, "find the moved interface"))?.index;
        undo.push("move interface back", move || self.move_out(c, index, src));
        self.step("rename interface")?;
        c.link_set_name(index, ifname).map_err(|e| match e.kind() {
            NsKind::AlreadyExists => Error::conflict(
                format!("interface {ifname:?} in sandbox {:?}", p.sandbox.name),
                "the sandbox has an interface of that name already",
            ),
            _ => step_error(ep, "rename")(e),
        })?;
        if let Some(mac) = p.info.mac {
            self.step("MAC address")?;
            c.link_set_mac(index, mac).map_err(step_error(ep, "set MAC"))?;
        }
        if let Some(mtu) = p.info.mtu {
            self.step("MTU")?;
            c.link_set_mtu(index, mtu).map_err(step_error(ep, "set MTU"))?;
        }
        Ok(index)
    }

    /// Puts a moved interface back into the host namespace under its source
    /// name, for its driver to delete (Docker's runtime does the same).
    fn move_out(&self, c: &Handle, index: u32, src: &str) -> Result<()> {
        let k = |what: &str| Error::from_netns(format!("{what} {src:?} back to the host namespace"));
        gone_ok(c.link_set_down(index)).map_err(k("take down"))?;
        gone_ok(c.link_set_name(index, src)).map_err(k("rename"))?;
        gone_ok(c.link_set_netns(index, &self.host)).map_err(k("move"))
    }

    /// Sysctls, up, addresses, routes. Everything here lives on the link:
    /// it goes when the link goes.
    fn configure(&self, p: &Program<'_>, c: &Handle, index: u32, ifname: &str) -> Result<()> {
        let (ep, info) = (p.endpoint, p.info);
        let k = |what: &str| step_error(ep, what);
        if !info.addresses.iter().any(|a| a.addr().is_ipv6()) {
            // Docker's rule: no IPv6 on an IPv4-only network's interface
            // (and no duplicate-address detection work for the kernel).
            self.step("no IPv6 link-local")?;
            c.link_set_addrgenmode_none(index).map_err(k("addrgenmode none"))?;
        }
        for (key, value) in &info.sysctls {
            self.step("sysctl")?;
            let key = sysctl_key(key, ifname).map_err(|reason| Error::invalid("sysctl", reason))?;
            p.netns.sysctl_set(&key, value).map_err(k(&format!("sysctl {key}")))?;
        }
        // Up before the addresses: an IPv6 address added to a down link
        // stays silent for a second after the link comes up.
        self.step("interface up")?;
        c.link_set_up(index).map_err(k("interface up"))?;
        for a in &info.addresses {
            let flags = if a.addr().is_ipv6() { AddrFlags::NODAD } else { AddrFlags::empty() };
            self.step("address")?;
            c.addr_add(index, *a, flags).map_err(k(&format!("address {a}")))?;
        }
        for r in &info.static_routes {
            self.step("static route")?;
            let route = match r.next_hop {
                Some(hop) => Route { gateway: Some(hop), ..Route::new(r.destination) },
                None => Route::device(r.destination, index),
            };
            c.route_replace(&route).map_err(k(&format!("route to {}", r.destination)))?;
        }
        if p.default_route {
            for gw in info.usable_gateways() {
                self.step("default route")?;
                c.route_replace(&Route::default_via(gw)).map_err(k(&format!("default route via {gw}")))?;
            }
        }
        Ok(())
    }

    /// Undoes the sandbox side at leave, best effort: a moved interface
    /// goes back to the host namespace (its driver deletes it), the hosts
    /// file loses its addresses. `netns` is `None` when the sandbox's
    /// namespace is gone (the kernel destroyed what was in it).
    pub(super) fn unprogram_sandbox(
        &self,
        ep: &Endpoint,
        netns: Option<&NetNs>,
        sb: Option<&Sandbox>,
        remaining: &[Endpoint],
    ) -> Vec<Error> {
        let mut errors = Vec::new();
        let info = ep.join_info.as_ref();
        if let (Some(Interface::InHost { src_name, .. }), Some(ns), Some(ifname)) =
            (info.and_then(|i| i.interface.as_ref()), netns, ep.ifname.as_deref())
        {
            let moved = self.step("move interface back").and_then(|()| {
                let c = Handle::open(ns).map_err(step_error(ep, "open the sandbox namespace"))?;
                match c.link_get(ifname) {
                    Ok(l) => self.move_out(&c, l.index, src_name),
                    Err(e) if e.kind() == NsKind::NotFound => Ok(()),
                    Err(e) => Err(step_error(ep, "find interface")(e)),
                }
            });
            errors.extend(moved.err());
        }
        if let (Some(sb), true) = (sb, self.sandbox_files.is_some()) {
            errors.extend(self.step("hosts file").and_then(|()| self.write_hosts(sb, remaining)).err());
        }
        errors
    }

    /// Gives the endpoint's interface the sandbox's default route, or takes
    /// it away (the handover when the endpoint that had it leaves).
    pub(super) fn set_default_route(&self, net: &Network, ep: &Endpoint, netns: &NetNs, on: bool) -> Result<()> {
        let info = ep.join_info.clone().unwrap_or_else(|| Self::assumed_join_info(net, ep));
        if info.interface.is_none() || !info.default_route {
            return Ok(());
        }
        let c = Handle::open(netns).map_err(step_error(ep, "open the sandbox namespace"))?;
        for gw in info.usable_gateways() {
            let r = Route::default_via(gw);
            let res = if on { c.route_replace(&r) } else { gone_ok(c.route_del(&r)) };
            res.map_err(step_error(ep, &format!("default route via {gw}")))?;
        }
        Ok(())
    }

    /// Whether a joined endpoint's description lets it provide the default
    /// route.
    pub(super) fn may_route_default(net: &Network, ep: &Endpoint) -> bool {
        let info = ep.join_info.clone().unwrap_or_else(|| Self::assumed_join_info(net, ep));
        info.default_route && info.usable_gateways().next().is_some()
    }

    /// What an endpoint joined before join descriptions were recorded has:
    /// its addresses and its network's gateways.
    fn assumed_join_info(net: &Network, ep: &Endpoint) -> JoinInfo {
        JoinInfo::in_sandbox(ep, None)
            .gateway(net.gateway_v4().map(|g| g.addr()))
            .gateway(net.gateway_v6().map(|g| g.addr()))
    }
}
