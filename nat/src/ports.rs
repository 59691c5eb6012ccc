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

/// The most host ports one request may publish: each is a claim in the
/// store and an element in the kernel, and a request is one transaction.
pub const MAX_HOST_PORTS: usize = 10_000;

/// Checks every mapping of a request before anything is claimed or changed.
pub(crate) fn validate(req: &PortRequest) -> Result<(), NatError> {
    let total: usize = req.ports.iter().map(|m| m.container_port.len() as usize).sum();
    if total > MAX_HOST_PORTS {
        let all = req.ports.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
        return Err(NatError::InvalidMapping {
            mapping: all,
            reason: format!("{total} ports in one request; at most {MAX_HOST_PORTS} are published at once"),
        });
    }
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
                let port = h.start as u32 + i;
                // Two mappings of one request that would take the same host
                // socket (the same address, or one on all addresses).
                let clash = seen.iter().find(|(p, ip, n): &&(_, Option<IpAddr>, u32)| {
                    *p == m.protocol && *n == port && host_ips_collide(*ip, m.host_ip)
                });
                if let Some((_, other, _)) = clash {
                    let on = |ip: &Option<IpAddr>| ip.map(|a| a.to_string()).unwrap_or_else(|| "all addresses".into());
                    return Err(invalid(
                        m,
                        format!(
                            "host port {port}/{} is given twice in this request (on {} and on {})",
                            m.protocol,
                            on(other),
                            on(&m.host_ip)
                        ),
                    ));
                }
                seen.insert((m.protocol, m.host_ip, port));
            }
        }
    }
    Ok(())
}

/// Whether two host addresses of one port would take the same socket: all
/// addresses take every one, an unspecified address every one of its family.
fn host_ips_collide(a: Option<IpAddr>, b: Option<IpAddr>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(x), Some(y)) => x == y || ((x.is_unspecified() || y.is_unspecified()) && x.is_ipv4() == y.is_ipv4()),
    }
}

/// Checks, inside the host namespace (the calling thread must be in it),
/// that the host could bind every published TCP and UDP port itself: a port
/// a host service uses is refused (publishing it would take its traffic
/// over, from outside and from the host's own 127.0.0.1), and so is a host
/// address the host does not have.
pub(crate) fn check_host(mappings: &[Mapping]) -> Result<(), NatError> {
    use nix::sys::socket::{bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    let mut seen = BTreeSet::new();
    for m in mappings {
        let b = m.binding;
        let ty = match b.protocol {
            cnm_core::Protocol::Tcp => SockType::Stream,
            cnm_core::Protocol::Udp => SockType::Datagram,
            cnm_core::Protocol::Sctp => continue,
        };
        let ip = b.host_ip.unwrap_or(match m.container_ip {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        });
        if !seen.insert((b.protocol, ip, b.host_port)) {
            continue;
        }
        let family = if ip.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        let fail = |e: nix::errno::Errno| NatError::Core(cnm_core::Error::kernel("check host port", e));
        let fd = socket(family, ty, SockFlag::SOCK_CLOEXEC, None).map_err(fail)?;
        if ty == SockType::Stream {
            // A port in TIME_WAIT is free to take; one with a listener is not.
            setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(fail)?;
        }
        if ip.is_ipv6() {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(fail)?;
        }
        let addr = SockaddrStorage::from(std::net::SocketAddr::new(ip, b.host_port));
        match bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => {}
            Err(nix::errno::Errno::EADDRINUSE) => {
                return Err(NatError::HostPortInUse { binding: b, reason: "a host service uses it".into() })
            }
            Err(nix::errno::Errno::EADDRNOTAVAIL) => {
                return Err(NatError::InvalidMapping {
                    mapping: format!("{ip}:{}/{}", b.host_port, b.protocol),
                    reason: format!("{ip} is not an address of the host"),
                })
            }
            Err(e) => return Err(fail(e)),
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
