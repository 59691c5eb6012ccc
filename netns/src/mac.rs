//! Ethernet MAC addresses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet MAC address, printed and parsed as `02:42:0a:01:01:02`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Whether the locally-administered bit is set and the multicast bit clear,
    /// i.e. an address a program may make up for its own interfaces.
    pub fn is_local_unicast(&self) -> bool {
        self.0[0] & 0x02 != 0 && self.0[0] & 0x01 == 0
    }

    /// Whether the multicast (group) bit is set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// The address as bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Parses from a byte slice of exactly six bytes.
    pub fn from_slice(b: &[u8]) -> Option<MacAddr> {
        <[u8; 6]>::try_from(b).ok().map(MacAddr)
    }

    /// Docker's MAC for an endpoint: `02:42` followed by its IPv4 address
    /// (10.1.1.2 gives 02:42:0a:01:01:02).
    pub fn docker(ip: std::net::Ipv4Addr) -> MacAddr {
        let o = ip.octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }

    /// A random locally administered unicast address (from the kernel's
    /// `getrandom`); never all zeros.
    pub fn random_local() -> crate::Result<MacAddr> {
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).map_err(|e| {
            crate::Error::io(
                "getrandom",
                "a random MAC",
                std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(nix::libc::EIO)),
            )
        })?;
        b[0] = (b[0] & 0xfc) | 0x02;
        Ok(MacAddr(b))
    }

    /// Docker's rule for an endpoint with `ipv4` (if any): [`MacAddr::docker`],
    /// or a random local address for an IPv6-only one.
    pub fn for_endpoint(ipv4: Option<std::net::Ipv4Addr>) -> crate::Result<MacAddr> {
        match ipv4 {
            Some(a) => Ok(MacAddr::docker(a)),
            None => MacAddr::random_local(),
        }
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

/// The error of parsing a [`MacAddr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets separated by ':'")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;
    fn from_str(s: &str) -> Result<MacAddr, ParseMacError> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_rule_and_random_local_addresses() {
        // The reference inspect output: 10.1.1.7 has 02:42:0a:01:01:07.
        assert_eq!(MacAddr::docker("10.1.1.7".parse().unwrap()).to_string(), "02:42:0a:01:01:07");
        assert_eq!(
            MacAddr::for_endpoint(Some("172.17.0.2".parse().unwrap())).unwrap().to_string(),
            "02:42:ac:11:00:02"
        );
        let (a, b) = (MacAddr::for_endpoint(None).unwrap(), MacAddr::random_local().unwrap());
        assert!(a.is_local_unicast() && b.is_local_unicast());
        assert_ne!(a, b);
    }

    #[test]
    fn round_trip() {
        let m: MacAddr = "02:42:0a:01:01:02".parse().unwrap();
        assert_eq!(m.0, [2, 0x42, 10, 1, 1, 2]);
        assert_eq!(m.to_string(), "02:42:0a:01:01:02");
        assert!(m.is_local_unicast());
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "02:42:0a:01:01", "02:42:0a:01:01:02:03", "g2:42:0a:01:01:02", "002:42:0a:01:01:02"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
