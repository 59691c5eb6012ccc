//! `host`: the sandbox uses the host's network namespace as it is: no
//! interface, no address. A sandbox on the host network can join no other.

use cnm_netns::NetNs;

use crate::driver::{Capabilities, DriverContext, NetworkDriver};
use crate::error::{Error, Result};
use crate::join::{JoinInfo, JoinRequest};
use crate::model::{Endpoint, Network};

/// Docker's `host` network driver.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostDriver;

impl NetworkDriver for HostDriver {
    fn name(&self) -> &str {
        "host"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { needs_addresses: false, exclusive: true, ..Default::default() }
    }

    fn validate_network(&self, net: &Network) -> Result<()> {
        no_options(net)
    }

    fn create_network(&self, _: &DriverContext<'_>, _: &mut Network) -> Result<()> {
        Ok(())
    }

    fn delete_network(&self, _: &DriverContext<'_>, _: &Network) -> Result<()> {
        Ok(())
    }

    fn join(&self, ctx: &DriverContext<'_>, _: &Network, _: &mut Endpoint, join: &JoinRequest<'_>) -> Result<JoinInfo> {
        // The sandbox must *be* the host namespace: the runtime passes the
        // host's namespace path for a host-mode container.
        if !join.netns.same_as(ctx.host)? {
            return Err(Error::Forbidden {
                what: format!("join sandbox {:?} to a host network", join.sandbox.name),
                reason: format!("its namespace {} is not the host namespace", join.sandbox.netns.display()),
            });
        }
        Ok(JoinInfo::no_interface())
    }

    fn leave(&self, _: &DriverContext<'_>, _: &Network, _: &Endpoint, _: Option<&NetNs>) -> Result<()> {
        Ok(())
    }
}

/// `host` and `null` networks take no driver options.
pub(crate) fn no_options(net: &Network) -> Result<()> {
    match net.options.keys().next() {
        Some(k) => Err(Error::invalid(format!("option {k}"), format!("the {} driver takes no options", net.driver))),
        None => Ok(()),
    }
}
