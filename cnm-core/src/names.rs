//! The hook through which a name server (an embedded DNS server such as
//! `cnm-dns`) follows the sandboxes: the controller tells it when a sandbox
//! appears, when its endpoints change and when it goes, inside the
//! operation, so that a name is resolvable as soon as `connect` returns and
//! gone when `disconnect` returns.

use crate::error::Result;
use crate::model::{Endpoint, Sandbox};

/// The address every sandbox's embedded name server answers on, as in
/// Docker.
pub const EMBEDDED_DNS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 11);

/// A name server that serves sandboxes (see
/// [`ControllerBuilder::name_server`](crate::ControllerBuilder::name_server)).
///
/// Calls come from inside controller operations, under the operation lock:
/// they must not call back into the controller's operations.
pub trait NameServer: Send + Sync {
    /// Starts answering at [`EMBEDDED_DNS`] inside the sandbox's namespace.
    /// `Ok(true)`: it answers there now, and the sandbox's resolv.conf
    /// names it; `Ok(false)`: it does not serve this sandbox (a sandbox in
    /// the host's namespace, a server that is not running), and the
    /// resolv.conf names the upstream servers instead.
    fn attach(&self, sandbox: &Sandbox) -> Result<bool>;

    /// The sandbox's joined endpoints are now `endpoints` (names, aliases
    /// and addresses, per network). Called after every join and leave.
    fn update(&self, sandbox: &Sandbox, endpoints: &[Endpoint]) -> Result<()>;

    /// Stops serving the sandbox and forgets its names. Idempotent.
    fn detach(&self, sandbox: &Sandbox) -> Result<()>;
}

/// The names an endpoint answers to in DNS, lower case: its sandbox's
/// name (the container's), the sandbox's short id, the endpoint's aliases,
/// and the endpoint's own name when the runtime chose it (not a generated
/// `ep-…`). Every name server and every record of another host uses this
/// one rule.
pub fn endpoint_names(sandbox: &Sandbox, ep: &Endpoint) -> Vec<String> {
    let mut names = vec![sandbox.name.to_ascii_lowercase(), sandbox.id.short().to_ascii_lowercase()];
    names.extend(ep.aliases.iter().map(|a| a.to_ascii_lowercase()));
    if ep.name != format!("ep-{}", ep.id.short()) {
        names.push(ep.name.to_ascii_lowercase());
    }
    names.sort();
    names.dedup();
    names
}
