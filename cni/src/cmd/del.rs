//! `DEL` and `GC`: attachments go, with sandboxes left empty; what is
//! already gone is success.

use cnm_core::ErrorKind as CoreKind;

use super::{endpoint_name, sandbox_name, Host};
use crate::config::NetConf;
use crate::delegate;
use crate::env::{CniEnv, Command};
use crate::error::{Error, Result};

/// `DEL`: the endpoint goes, and the sandbox with its last endpoint; what
/// is already gone (the namespace, the interface, the container, an `ADD`
/// that never ran) is success. A delegated IPAM plugin gets its `DEL`
/// whatever cnm had.
pub(super) fn del(env: &CniEnv, conf: &NetConf, stdin: &[u8], host: &Host) -> Result<()> {
    let detached = host.controller(conf).and_then(|ctl| detach(&ctl, env, conf));
    let released = match conf.ipam_type()? {
        Some(t) => delegate::run(&t, "DEL", env, stdin).map(|_| ()),
        None => Ok(()),
    };
    detached.and(released)
}

fn detach(ctl: &cnm_core::Controller, env: &CniEnv, conf: &NetConf) -> Result<()> {
    let gone = |e: &cnm_core::Error| e.kind() == CoreKind::NotFound;
    let ep = match ctl.endpoint(&conf.name, &endpoint_name(&env.container_id, &env.ifname)) {
        Ok(ep) => ep,
        Err(e) if gone(&e) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let sb_name = sandbox_name(&env.container_id);
    match ctl.disconnect(&conf.name, &sb_name) {
        Err(e) if gone(&e) => match ctl.delete_endpoint(&conf.name, &ep.name) {
            Err(e) if !gone(&e) => return Err(e.into()),
            _ => {}
        },
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    match ctl.sandbox(&sb_name) {
        Ok(sb) if sb.endpoints.is_empty() => match ctl.delete_sandbox(&sb_name) {
            Err(e) if !gone(&e) => Err(e.into()),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// `GC`: every attachment to this network that the runtime no longer lists
/// (`cni.dev/valid-attachments`) goes, with sandboxes left empty.
pub(super) fn gc(conf: &NetConf, host: &Host) -> Result<()> {
    let valid = conf.valid_attachments.clone().unwrap_or_default();
    let ctl = host.controller(conf)?;
    let eps = match ctl.endpoints(Some(&conf.name)) {
        Ok(e) => e,
        Err(e) if e.kind() == CoreKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut errors = Vec::new();
    for ep in eps {
        let ifname = ep.requested_ifname.clone().unwrap_or_default();
        let Some(cid) = ep.name.strip_suffix(&format!("-{ifname}")) else { continue };
        if ep.requested_ifname.is_none() || valid.iter().any(|a| a.container_id == cid && a.ifname == ifname) {
            continue;
        }
        let env = CniEnv {
            command: Command::Del,
            container_id: cid.to_string(),
            netns: None,
            ifname,
            args: Vec::new(),
            path: Vec::new(),
        };
        if let Err(e) = detach(&ctl, &env, conf) {
            errors.push(e.to_string());
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(Error::Cnm(cnm_core::Error::Internal(format!("GC: {}", errors.join("; "))))),
    }
}
