//! Checking a port request and turning it into mappings with host ports
//! chosen and claimed.

use std::collections::BTreeSet;
use std::net::IpAddr;

use cnm_core::store::Store;
use cnm_core::{PortBinding, PortMapping, PortRequest};

use crate::error::NatError;
use crate::state::{self, Mapping};

fn invalid(m: &PortMapping, reason: impl Into<String>) -> NatError {
    NatError::InvalidMapping { mapping: m.to_string(), reason: reason.into() }
}

/// Checks every mapping of a request before anything is claimed or changed.
pub(crate) fn validate(req: &PortRequest) -> Result<(), NatError> {
    let has_v4 = req.addresses.iter().any(|a| a.is_ipv4());
    let has_v6 = req.addresses.iter().any(|a| a.is_ipv6());
    let mut seen = BTreeSet::new();
    for m in &req.ports {
        m.validate().map_err(|e| invalid(m, e.to_string()))?;
        match m.host_ip {
            Some(IpAddr::V4(_)) if !has_v4 => {
                return Err(invalid(m, "the host IP is IPv4 but the container has no IPv4 address"))
            }
            Some(IpAddr::V6(_)) if !has_v6 => {
                return Err(invalid(m, "the host IP is IPv6 but the container has no IPv6 address"))
            }
            Some(IpAddr::V6(a)) if a.is_loopback() => {
                return Err(invalid(m, "::1 cannot be forwarded to a container (IPv6 has no route_localnet)"))
            }
            _ => {}
        }
        if !has_v4 && !has_v6 {
            return Err(invalid(m, "the container has no address"));
        }
        if let Some(h) = m.host_port {
            for i in 0..h.len() {
                let key = (m.protocol, m.host_ip, h.start as u32 + i);
                if !seen.insert(key) {
                    return Err(invalid(
                        m,
                        format!("host port {}/{} is given twice in this request", key.2, m.protocol),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Chooses and claims host ports for a validated request. On any failure
/// every claim made so far is released.
pub(crate) fn resolve(store: &dyn Store, req: &PortRequest, ephemeral: (u16, u16)) -> Result<Vec<Mapping>, NatError> {
    let mut claimed: Vec<PortBinding> = Vec::new();
    let result = resolve_inner(store, req, ephemeral, &mut claimed);
    if result.is_err() {
        for b in &claimed {
            let _ = state::release(store, b);
        }
    }
    result
}

fn resolve_inner(
    store: &dyn Store,
    req: &PortRequest,
    ephemeral: (u16, u16),
    claimed: &mut Vec<PortBinding>,
) -> Result<Vec<Mapping>, NatError> {
    let mut out = Vec::new();
    // Where to start looking for a free ephemeral port: spread by endpoint so
    // concurrent requests rarely race for the same one.
    let span = (ephemeral.1 - ephemeral.0) as u32 + 1;
    let mut next = req.endpoint.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32)) % span;
    for m in &req.ports {
        for i in 0..m.container_port.len() {
            let container_port = m.container_port.start + i as u16;
            let binding = match m.host_port {
                Some(h) => {
                    let b = PortBinding {
                        protocol: m.protocol,
                        host_ip: m.host_ip,
                        host_port: h.start + i as u16,
                        container_port,
                    };
                    if let Err(owner) = state::claim(store, &b, &req.endpoint)? {
                        return Err(NatError::PortInUse { binding: b, owner });
                    }
                    b
                }
                None => {
                    let mut found = None;
                    for _ in 0..span {
                        let port = ephemeral.0 + (next % span) as u16;
                        next = next.wrapping_add(1);
                        let b =
                            PortBinding { protocol: m.protocol, host_ip: m.host_ip, host_port: port, container_port };
                        if state::claim(store, &b, &req.endpoint)?.is_ok() {
                            found = Some(b);
                            break;
                        }
                    }
                    found.ok_or_else(|| NatError::NoFreePort(m.to_string()))?
                }
            };
            claimed.push(binding);
            for a in &req.addresses {
                let family_ok = match binding.host_ip {
                    None => true,
                    Some(h) => h.is_ipv4() == a.is_ipv4(),
                };
                if family_ok {
                    out.push(Mapping { binding, container_ip: *a });
                }
            }
        }
    }
    Ok(out)
}
