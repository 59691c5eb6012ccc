//! `CHECK` and `STATUS`.

use cnm_netns::{Handle, NetNs};
use ipnet::IpNet;

use super::{endpoint_name, sandbox_name, Host};
use crate::config::NetConf;
use crate::delegate;
use crate::env::CniEnv;
use crate::error::{Error, Result};
use crate::result::CniResult;

/// `CHECK`: the endpoint is joined to the container's sandbox, its
/// interface is in the namespace with its MAC and addresses, and the
/// previous result names those addresses.
pub(super) fn check(env: &CniEnv, conf: &NetConf, stdin: &[u8], host: &Host) -> Result<()> {
    if conf.cni_version.starts_with("0.3") {
        return Err(Error::IncompatibleVersion {
            version: conf.cni_version.clone(),
            supported: "0.4.0 and later for CHECK".into(),
        });
    }
    let prev = match &conf.prev_result {
        Some(p) => CniResult::parse("prevResult", p)?,
        None => return Err(Error::config("prevResult", "CHECK needs the result of ADD")),
    };
    if let Some(t) = conf.ipam_type()? {
        delegate::run(&t, "CHECK", env, stdin)?;
    }
    let ctl = host.controller(conf)?;
    let failed = |what: String| Error::CheckFailed(what);
    let ep = ctl
        .endpoint(&conf.name, &endpoint_name(&env.container_id, &env.ifname))
        .map_err(|e| failed(format!("container {:?} on network {:?}: {e}", env.container_id, conf.name)))?;
    let sb = ctl.sandbox(&sandbox_name(&env.container_id)).map_err(|e| failed(e.to_string()))?;
    if ep.sandbox.as_ref() != Some(&sb.id) {
        return Err(failed(format!("endpoint {:?} is not joined to the container", ep.name)));
    }
    let netns = env.netns.as_deref().expect("checked for CHECK");
    let ns = NetNs::open(netns).map_err(|e| failed(format!("namespace {}: {e}", netns.display())))?;
    let h = Handle::open(&ns).map_err(|e| failed(format!("namespace {}: {e}", netns.display())))?;
    let link = h.link_get(env.ifname.as_str()).map_err(|e| failed(format!("interface {:?}: {e}", env.ifname)))?;
    if ep.mac.is_some() && link.mac != ep.mac {
        return Err(failed(format!("interface {:?} has MAC {:?}, not {:?}", env.ifname, link.mac, ep.mac)));
    }
    let have: Vec<IpNet> = h
        .addr_list(Some(link.index), None)
        .map_err(|e| failed(e.to_string()))?
        .into_iter()
        .map(|a| a.address)
        .collect();
    for a in [ep.ipv4, ep.ipv6].into_iter().flatten() {
        if !have.iter().any(|h| h.addr() == a.addr()) {
            return Err(failed(format!("interface {:?} lacks {a}", env.ifname)));
        }
        if !prev.ips.iter().any(|p| p.address.addr() == a.addr()) {
            return Err(failed(format!("prevResult lacks {a}")));
        }
    }
    Ok(())
}

/// `STATUS`: ready when the store (and etcd, for an overlay) answers.
pub(super) fn status(conf: &NetConf, host: &Host) -> Result<()> {
    let ctl = host.controller(conf).map_err(|e| Error::NotAvailable(e.to_string()))?;
    ctl.networks().map_err(|e| Error::NotAvailable(e.to_string()))?;
    Ok(())
}
