//! Keeping the name server (see [`NameServer`](crate::NameServer)) in step
//! with the sandboxes.

use super::{sb_key, Controller};
use crate::error::Result;
use crate::model::{JoinState, Sandbox};
use crate::store::StoreExt;

impl Controller {
    /// Asks the name server to serve a new sandbox; whether it does.
    pub(super) fn names_attach(&self, sb: &Sandbox) -> bool {
        let Some(ns) = &self.name_server else { return false };
        match ns.attach(sb) {
            Ok(served) => served,
            Err(e) => {
                // Names are a convenience; the sandbox works without them
                // and its resolv.conf then names the upstream servers.
                tracing::warn!(sandbox = %sb.name, error = %e, "the name server cannot serve this sandbox");
                false
            }
        }
    }

    /// Tells the name server what the sandbox's joined endpoints are now.
    pub(super) fn names_changed(&self, sandbox: &str) {
        let Some(ns) = &self.name_server else { return };
        let update = || -> Result<()> {
            let Some((sb, _)) = self.store.get_json::<Sandbox>(&sb_key(sandbox))? else { return Ok(()) };
            if sb.external {
                return Ok(());
            }
            let mut eps = self.sandbox_endpoints(&sb)?;
            // The gateway bridge is plumbing, not a network of names (as
            // Docker's docker_gwbridge).
            let plumbing = self.gateway_bridge.as_ref().map(|g| g.name.as_str());
            // Nor is the default bridge: Docker's embedded DNS is for
            // user-defined networks only.
            let default_bridge = self.predefined.then_some("bridge");
            eps.retain(|e| {
                e.join_state == JoinState::Joined
                    && Some(e.network.as_str()) != plumbing
                    && Some(e.network.as_str()) != default_bridge
            });
            ns.update(&sb, &eps)
        };
        if let Err(e) = update() {
            tracing::warn!(sandbox, error = %e, "the name server missed a change of the sandbox's endpoints");
        }
    }

    /// Tells the name server the sandbox is gone.
    pub(super) fn names_detach(&self, sb: &Sandbox) {
        if let Some(ns) = &self.name_server {
            if let Err(e) = ns.detach(sb) {
                tracing::warn!(sandbox = %sb.name, error = %e, "the name server did not let go of the sandbox");
            }
        }
    }

    /// Hands every sandbox to the name server (when one starts, e.g. the
    /// agent's) and rewrites the resolv.conf of each it serves to name it.
    /// Returns how many it serves.
    pub fn serve_names(&self) -> Result<usize> {
        let _op = self.op()?;
        let mut served = 0;
        for sb in self.sandboxes()?.into_iter().filter(|s| !s.external) {
            let on = self.names_attach(&sb);
            self.names_changed(&sb.name);
            self.write_resolv_conf(&sb, on)?;
            served += usize::from(on);
        }
        Ok(served)
    }

    /// The reverse of [`Controller::serve_names`], when the name server
    /// stops: every sandbox's resolv.conf names the upstream servers again,
    /// so none points at a server that is not running.
    pub fn unserve_names(&self) -> Result<()> {
        let _op = self.op()?;
        let mut errors = Vec::new();
        for sb in self.sandboxes()?.into_iter().filter(|s| !s.external) {
            errors.extend(self.write_resolv_conf(&sb, false).err());
            self.names_detach(&sb);
        }
        crate::Error::teardown("stop serving names", errors)
    }
}
