//! The network-driver trait. Drivers do the kernel work; the controller does
//! the bookkeeping, the ordering and the rollback.

use cnm_netns::NetNs;
use ipnet::IpNet;

use crate::error::Result;
use crate::firewall::Firewall;
use crate::inspect::Peer;
use crate::join::{JoinInfo, JoinRequest};
use crate::model::{Endpoint, Network, Scope};

/// What every driver call gets: the host namespace the controller works in,
/// and the firewall.
pub struct DriverContext<'a> {
    /// The "host" network namespace (bridges, rules and sysctls go there).
    pub host: &'a NetNs,
    /// The firewall backend.
    pub firewall: &'a dyn Firewall,
}

/// What a driver is and needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Local or global networks.
    pub scope: Scope,
    /// Whether networks get subnets and endpoints get addresses from IPAM.
    pub needs_addresses: bool,
    /// Whether a sandbox on such a network can be on no other network
    /// (`host` and `null`).
    pub exclusive: bool,
    /// The most endpoints a network can have (a Linux bridge takes 1024
    /// ports); the controller refuses one more before the kernel is asked.
    pub max_endpoints: Option<usize>,
    /// Whether sandboxes on such a network (unless it is internal) reach the
    /// outside through the host's gateway bridge network, as Docker's
    /// overlay does through `docker_gwbridge`, rather than through the
    /// network itself (see
    /// [`ControllerBuilder::gateway_bridge`](crate::ControllerBuilder::gateway_bridge)).
    pub gateway_bridge: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            scope: Scope::Local,
            needs_addresses: true,
            exclusive: false,
            max_endpoints: None,
            gateway_bridge: false,
        }
    }
}

/// A network driver. Every method is synchronous; every removal is
/// idempotent (removing what is gone is not an error).
pub trait NetworkDriver: Send + Sync {
    /// The name networks refer to it by.
    fn name(&self) -> &str;

    /// What it is and needs.
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    /// Checks a network's options before anything is touched (unknown option
    /// keys are an error naming the key).
    fn validate_network(&self, net: &Network) -> Result<()> {
        let _ = net;
        Ok(())
    }

    /// Checks a new network against this driver's existing ones (`others`),
    /// before anything is touched: e.g. macvlan refuses a second network
    /// on the same parent interface, as Docker does.
    fn check_among(&self, net: &Network, others: &[Network]) -> Result<()> {
        let _ = (net, others);
        Ok(())
    }

    /// Prefixes an automatic subnet must not overlap (the bridge driver
    /// returns the host namespace's routes).
    fn avoid_subnets(&self, ctx: &DriverContext<'_>) -> Result<Vec<IpNet>> {
        let _ = ctx;
        Ok(Vec::new())
    }

    /// The hosts a global network spans, for inspect's `Peers`.
    fn peers(&self, ctx: &DriverContext<'_>, net: &Network) -> Result<Option<Vec<Peer>>> {
        let _ = (ctx, net);
        Ok(None)
    }

    /// Creates the network's kernel objects and rules. May record what it
    /// wants shown in inspect in `net.driver_options`.
    fn create_network(&self, ctx: &DriverContext<'_>, net: &mut Network) -> Result<()>;

    /// Removes them.
    fn delete_network(&self, ctx: &DriverContext<'_>, net: &Network) -> Result<()>;

    /// Prepares an endpoint (e.g. picks its MAC). No kernel object needs to
    /// exist before `join`.
    fn create_endpoint(&self, ctx: &DriverContext<'_>, net: &Network, ep: &mut Endpoint) -> Result<()> {
        let _ = (ctx, net, ep);
        Ok(())
    }

    /// Releases what `create_endpoint` prepared.
    fn delete_endpoint(&self, ctx: &DriverContext<'_>, net: &Network, ep: &Endpoint) -> Result<()> {
        let _ = (ctx, net, ep);
        Ok(())
    }

    /// Creates the endpoint's link and describes the sandbox side: where
    /// the interface is (created directly in the sandbox under
    /// `req.ifname`, the fast path, or left in the host namespace to be
    /// moved), its MAC, MTU, addresses, gateways, static routes, whether it
    /// may provide the default route, per-interface sysctls. cnm-core then
    /// programs the sandbox from that description; a driver never
    /// configures anything inside a sandbox itself. May record data in
    /// `ep.driver_data` and published ports in `ep.bindings`. When the
    /// sandbox side fails, the controller calls [`NetworkDriver::leave`].
    fn join(
        &self,
        ctx: &DriverContext<'_>,
        net: &Network,
        ep: &mut Endpoint,
        req: &JoinRequest<'_>,
    ) -> Result<JoinInfo>;

    /// Publishes a joined endpoint's ports (Docker's
    /// `ProgramExternalConnectivity`) where the join left that for later:
    /// a join to an [external](crate::SandboxConfig::external) sandbox
    /// publishes nothing until the runtime asks. Records the result in
    /// `ep.bindings`. Idempotent.
    fn program_external(&self, ctx: &DriverContext<'_>, net: &Network, ep: &mut Endpoint) -> Result<()> {
        let _ = (ctx, net, ep);
        Ok(())
    }

    /// Withdraws what [`NetworkDriver::program_external`] published
    /// (Docker's `RevokeExternalConnectivity`); `ep.bindings` is cleared by
    /// the controller. Idempotent.
    fn revoke_external(&self, ctx: &DriverContext<'_>, net: &Network, ep: &Endpoint) -> Result<()> {
        let _ = (ctx, net, ep);
        Ok(())
    }

    /// Takes the endpoint's link away (a moved interface is back in the
    /// host namespace under its source name by then). `netns` is `None`
    /// when the sandbox's namespace is already gone.
    fn leave(&self, ctx: &DriverContext<'_>, net: &Network, ep: &Endpoint, netns: Option<&NetNs>) -> Result<()>;

    /// Repairs what the kernel lost or someone changed for a network the
    /// state says exists (after a reboot, or by hand): re-creates its
    /// objects, and puts its joined `endpoints` back in place; returns one
    /// line per repair, none when all was well.
    fn restore_network(&self, ctx: &DriverContext<'_>, net: &Network, endpoints: &[Endpoint]) -> Result<Vec<String>> {
        let _ = (ctx, net, endpoints);
        Ok(Vec::new())
    }

    /// The joined endpoints (ids) whose interface the kernel took away with
    /// something else (macvlan: its parent went away and came back): after
    /// [`NetworkDriver::restore_network`], reconcile joins them again, and
    /// programs their sandbox side from the new [`JoinInfo`].
    fn lost_endpoints(&self, ctx: &DriverContext<'_>, net: &Network, endpoints: &[Endpoint]) -> Result<Vec<String>> {
        let _ = (ctx, net, endpoints);
        Ok(Vec::new())
    }

    /// Removes kernel objects carrying this driver's markers that belong to
    /// none of `networks` / `endpoints` (leftovers of a crash); returns what
    /// it removed.
    fn remove_leftovers(
        &self,
        ctx: &DriverContext<'_>,
        networks: &[Network],
        endpoints: &[Endpoint],
    ) -> Result<Vec<String>> {
        let _ = (ctx, networks, endpoints);
        Ok(Vec::new())
    }
}

/// The host-side veth name of an endpoint: `veth` and 10 hex digits of its
/// id (15 bytes with the `c` of a peer left in the host namespace). Seven
/// digits, as Docker has, collide about once in 500 runs of a thousand
/// endpoints on one host (the birthday bound over 16^7), and a collision
/// fails a join.
pub fn veth_name(ep: &Endpoint) -> String {
    format!("veth{}", &ep.id.as_str()[..10])
}

/// Gives `ep` Docker's MAC when it has none yet: `02:42` and its IPv4
/// address, or a random local one for an IPv6-only endpoint (the rule of
/// Docker's bridge, overlay and macvlan drivers).
pub fn assign_docker_mac(ep: &mut Endpoint) -> Result<()> {
    if ep.mac.is_none() {
        let v4 = ep.ipv4.and_then(|a| match a {
            IpNet::V4(v4) => Some(v4.addr()),
            IpNet::V6(_) => None,
        });
        ep.mac = Some(cnm_netns::MacAddr::for_endpoint(v4)?);
    }
    Ok(())
}
