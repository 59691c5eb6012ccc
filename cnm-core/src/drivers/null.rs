//! `null` (Docker's `none`): the sandbox gets loopback only, up.

use cnm_netns::NetNs;

use crate::driver::{Capabilities, DriverContext, NetworkDriver};
use crate::error::Result;
use crate::join::{JoinInfo, JoinRequest};
use crate::model::{Endpoint, Network};

/// Docker's `none` network driver.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullDriver;

impl NetworkDriver for NullDriver {
    fn name(&self) -> &str {
        "null"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { needs_addresses: false, exclusive: true, ..Default::default() }
    }

    fn validate_network(&self, net: &Network) -> Result<()> {
        super::host::no_options(net)
    }

    fn create_network(&self, _: &DriverContext<'_>, _: &mut Network) -> Result<()> {
        Ok(())
    }

    fn delete_network(&self, _: &DriverContext<'_>, _: &Network) -> Result<()> {
        Ok(())
    }

    fn join(&self, _: &DriverContext<'_>, _: &Network, _: &mut Endpoint, _: &JoinRequest<'_>) -> Result<JoinInfo> {
        // Loopback only: the sandbox side brings it up.
        Ok(JoinInfo::no_interface())
    }

    fn leave(&self, _: &DriverContext<'_>, _: &Network, _: &Endpoint, _: Option<&NetNs>) -> Result<()> {
        // Loopback stays up: it belongs to the sandbox, not to the network.
        Ok(())
    }
}
