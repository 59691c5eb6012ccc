//! One pool: its definition (subnet, range, gateway, reserved addresses) and
//! its leases, with the pure allocation logic. No I/O here.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use cnm_core::{AddressRequest, AddressSpace};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::IpamError;
use crate::ranges::RangeSet;

/// An address as an integer (IPv4 in the low 32 bits).
pub(crate) fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

/// Back from an integer, in the family of `like`.
pub(crate) fn from_u128(x: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(x))
    } else {
        IpAddr::V4(Ipv4Addr::from(x as u32))
    }
}

/// First and last address of a prefix, as integers. Works for /0 too.
pub(crate) fn bounds(n: &IpNet) -> (u128, u128) {
    let bits: u32 = if n.addr().is_ipv4() { 32 } else { 128 };
    let host_bits = bits - n.prefix_len() as u32;
    let mask = if host_bits >= 128 { u128::MAX } else { (1u128 << host_bits) - 1 };
    let lo = to_u128(n.network());
    (lo, lo | mask)
}

/// Whether two prefixes share an address.
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.addr().is_ipv4() == b.addr().is_ipv4() && (a.contains(&b.network()) || b.contains(&a.network()))
}

/// A pool as allocated: immutable once created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolDef {
    /// Id, e.g. `local-172.18.0.0-24`.
    pub id: String,
    /// Address space.
    pub space: AddressSpace,
    /// The subnet.
    pub subnet: IpNet,
    /// Where addresses come from, if narrower than the subnet.
    pub ip_range: Option<IpNet>,
    /// The gateway (reserved).
    pub gateway: IpAddr,
    /// Reserved by name.
    pub aux: BTreeMap<String, IpAddr>,
    /// Who asked for it.
    pub owner: String,
}

impl PoolDef {
    /// The id a subnet gets in a space: unique, since pools of one space
    /// never overlap.
    pub fn id_for(space: AddressSpace, subnet: &IpNet) -> String {
        let s = match space {
            AddressSpace::Local => "local",
            AddressSpace::Global => "global",
        };
        format!("{s}-{}-{}", subnet.network(), subnet.prefix_len())
    }

    pub(crate) fn v6(&self) -> bool {
        self.subnet.addr().is_ipv6()
    }

    /// The range addresses are handed out from.
    pub fn range(&self) -> IpNet {
        self.ip_range.unwrap_or(self.subnet)
    }

    /// Why an address is reserved, if it is: the network address, the IPv4
    /// broadcast address, the gateway, or an auxiliary address.
    pub fn reserved_reason(&self, x: u128) -> Option<String> {
        let (lo, hi) = bounds(&self.subnet);
        if x == lo {
            return Some("the network address".into());
        }
        if !self.v6() && x == hi {
            return Some("the broadcast address".into());
        }
        if x == to_u128(self.gateway) {
            return Some("the gateway".into());
        }
        self.aux.iter().find(|(_, a)| to_u128(**a) == x).map(|(n, _)| format!("auxiliary address {n:?}"))
    }
}

/// The allocated addresses of a pool (reserved ones are not in here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases {
    /// Allocated addresses.
    pub allocated: RangeSet,
    /// The last address handed out (for serial allocation).
    pub last: Option<u128>,
}

impl Leases {
    /// Chooses an address of `def` for `req` without taking it.
    pub fn pick(&self, def: &PoolDef, req: AddressRequest, serial: bool) -> Result<u128, IpamError> {
        let v6 = def.v6();
        match req {
            AddressRequest::Exact(a) => {
                let range = def.range();
                if a.is_ipv6() != v6 || !range.contains(&a) {
                    return Err(IpamError::AddressOutOfRange { address: a, pool: def.id.clone(), range });
                }
                let x = to_u128(a);
                if let Some(reason) = def.reserved_reason(x) {
                    return Err(IpamError::AddressInUse {
                        address: a,
                        pool: def.id.clone(),
                        reason: format!("it is {reason}"),
                    });
                }
                if self.allocated.contains(x) {
                    return Err(IpamError::AddressInUse {
                        address: a,
                        pool: def.id.clone(),
                        reason: "already allocated".into(),
                    });
                }
                Ok(x)
            }
            AddressRequest::Any => {
                let (lo, hi) = bounds(&def.range());
                let start = match (serial, self.last) {
                    (true, Some(l)) if l >= lo && l < hi => l + 1,
                    _ => lo,
                };
                self.find_free(def, start, hi)
                    .or_else(|| if start > lo { self.find_free(def, lo, start - 1) } else { None })
                    .ok_or_else(|| IpamError::NoAvailableAddress { pool: def.id.clone(), range: def.range() })
            }
        }
    }

    /// Hands out an address of `def` (pick and take).
    pub fn allocate(&mut self, def: &PoolDef, req: AddressRequest, serial: bool) -> Result<IpAddr, IpamError> {
        let x = self.pick(def, req, serial)?;
        self.allocated.insert(x);
        self.last = Some(x);
        Ok(from_u128(x, def.v6()))
    }

    /// The first address in `[from, hi]` neither allocated nor reserved.
    fn find_free(&self, def: &PoolDef, mut from: u128, hi: u128) -> Option<u128> {
        loop {
            let x = self.allocated.first_free(from, hi)?;
            if def.reserved_reason(x).is_none() {
                return Some(x);
            }
            // At most a handful of reserved addresses: skip and go on.
            from = x.checked_add(1)?;
        }
    }

    /// Releases an address; one that is not allocated is an error.
    pub fn release(&mut self, def: &PoolDef, a: IpAddr) -> Result<(), IpamError> {
        if a.is_ipv6() != def.v6() || !self.allocated.remove(to_u128(a)) {
            return Err(IpamError::NotAllocated { address: a, pool: def.id.clone() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(subnet: &str, range: Option<&str>, gw: &str) -> PoolDef {
        let subnet: IpNet = subnet.parse().unwrap();
        PoolDef {
            id: PoolDef::id_for(AddressSpace::Local, &subnet),
            space: AddressSpace::Local,
            subnet,
            ip_range: range.map(|r| r.parse().unwrap()),
            gateway: gw.parse().unwrap(),
            aux: [("dns".to_string(), "10.0.0.5".parse().unwrap())].into(),
            owner: "t".into(),
        }
    }

    #[test]
    fn never_hands_out_network_broadcast_gateway_or_aux() {
        let d = def("10.0.0.0/29", None, "10.0.0.1");
        let mut l = Leases::default();
        let mut got = Vec::new();
        while let Ok(a) = l.allocate(&d, AddressRequest::Any, false) {
            got.push(a.to_string());
        }
        assert_eq!(got, vec!["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.6"]);
        let e = l.allocate(&d, AddressRequest::Any, false).unwrap_err();
        assert!(matches!(e, IpamError::NoAvailableAddress { .. }), "{e}");
    }

    #[test]
    fn serial_mode_does_not_reuse_a_just_freed_address() {
        let d = def("10.0.0.0/24", None, "10.0.0.1");
        let mut l = Leases::default();
        let a = l.allocate(&d, AddressRequest::Any, true).unwrap();
        let b = l.allocate(&d, AddressRequest::Any, true).unwrap();
        l.release(&d, a).unwrap();
        let c = l.allocate(&d, AddressRequest::Any, true).unwrap();
        assert_eq!(
            (a.to_string(), b.to_string(), c.to_string()),
            ("10.0.0.2".into(), "10.0.0.3".into(), "10.0.0.4".into())
        );
        // Sequential mode reuses the lowest.
        let mut l2 = Leases::default();
        let a = l2.allocate(&d, AddressRequest::Any, false).unwrap();
        l2.allocate(&d, AddressRequest::Any, false).unwrap();
        l2.release(&d, a).unwrap();
        assert_eq!(l2.allocate(&d, AddressRequest::Any, false).unwrap(), a);
    }

    #[test]
    fn ip_range_limits_automatic_and_exact_requests() {
        let d = def("10.0.0.0/16", Some("10.0.1.0/30"), "10.0.0.1");
        let mut l = Leases::default();
        assert_eq!(l.allocate(&d, AddressRequest::Any, false).unwrap().to_string(), "10.0.1.0");
        let e = l.allocate(&d, AddressRequest::Exact("10.0.2.7".parse().unwrap()), false).unwrap_err();
        assert_eq!(e.to_string(), "address 10.0.2.7 is outside 10.0.1.0/30 of pool local-10.0.0.0-16");
    }

    #[test]
    fn ipv6_slash_zero_works() {
        let subnet: IpNet = "::/0".parse().unwrap();
        let d = PoolDef {
            id: "x".into(),
            space: AddressSpace::Local,
            subnet,
            ip_range: None,
            gateway: "::1".parse().unwrap(),
            aux: BTreeMap::new(),
            owner: "t".into(),
        };
        let mut l = Leases::default();
        assert_eq!(l.allocate(&d, AddressRequest::Any, false).unwrap().to_string(), "::2");
        let top = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap();
        assert_eq!(l.allocate(&d, AddressRequest::Exact(top), false).unwrap(), top);
        assert_eq!(bounds(&subnet), (0, u128::MAX));
    }
}
