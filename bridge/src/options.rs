//! The bridge driver's network options, decoded from Docker's option keys.

use std::collections::BTreeMap;
use std::net::IpAddr;

use cnm_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// `com.docker.network.bridge.name`
pub const NAME: &str = "com.docker.network.bridge.name";
/// `com.docker.network.bridge.enable_icc`
pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
/// `com.docker.network.bridge.enable_ip_masquerade`
pub const ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// `com.docker.network.bridge.host_binding_ipv4`
pub const HOST_BINDING_IPV4: &str = "com.docker.network.bridge.host_binding_ipv4";
/// `com.docker.network.bridge.default_bridge`: the predefined `bridge`
/// network (see cnm-core's `ControllerBuilder::predefined_networks`).
pub const DEFAULT_BRIDGE: &str = "com.docker.network.bridge.default_bridge";
/// `com.docker.network.driver.mtu`
pub const MTU: &str = "com.docker.network.driver.mtu";
/// `cnm.bridge.multicast_snooping` (ours; Docker has no such key).
pub const MULTICAST_SNOOPING: &str = "cnm.bridge.multicast_snooping";
/// `cnm.bridge.hairpin` (ours; Docker always turns hairpin mode on).
pub const HAIRPIN: &str = "cnm.bridge.hairpin";

/// Options of a bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeNetworkOptions {
    /// Bridge name (default: `br-` and the first 12 hex digits of the id).
    pub name: Option<String>,
    /// Containers on the network may talk to each other.
    pub icc: bool,
    /// Masquerade traffic leaving the network.
    pub masquerade: bool,
    /// Default host address of published ports.
    pub host_binding_ipv4: Option<IpAddr>,
    /// MTU of the bridge and of every endpoint.
    pub mtu: Option<u32>,
    /// IGMP/MLD snooping on the bridge (default off: multicast is flooded
    /// to every port). With it on, the kernel re-arms the multicast timers
    /// of every port whenever any port comes up, so attaches get slower as
    /// the bridge fills (0.2 ms more per attach at 1000 ports here).
    pub multicast_snooping: bool,
    /// Hairpin mode on every port (default on, as Docker and CNI's bridge
    /// plugin set it): a container reaches its own published port.
    pub hairpin: bool,
    /// It is Docker's default bridge (names are not served on it).
    pub default_bridge: bool,
}

impl Default for BridgeNetworkOptions {
    fn default() -> Self {
        BridgeNetworkOptions {
            name: None,
            icc: true,
            masquerade: true,
            host_binding_ipv4: None,
            mtu: None,
            multicast_snooping: false,
            hairpin: true,
            default_bridge: false,
        }
    }
}

fn boolean(key: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::invalid(format!("option {key}"), format!("{v:?} is not true or false"))),
    }
}

/// Docker's character set for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn docker_charset(v: &str) -> bool {
    v.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && v.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

impl BridgeNetworkOptions {
    /// Decodes Docker's option keys; an unknown key is an error naming it.
    pub fn from_docker(opts: &BTreeMap<String, String>) -> Result<BridgeNetworkOptions> {
        let mut o = BridgeNetworkOptions::default();
        for (k, v) in opts {
            match k.as_str() {
                NAME => {
                    let bad = |reason: String| Error::invalid(format!("option {NAME}"), reason);
                    cnm_netns::validate_ifname("bridge name", v).map_err(|e| bad(e.to_string()))?;
                    // The name goes into firewall rules: Docker's character
                    // set only, so no quote or other syntax can get in.
                    if !docker_charset(v) {
                        return Err(bad(format!("{v:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")));
                    }
                    o.name = Some(v.clone());
                }
                ENABLE_ICC => o.icc = boolean(k, v)?,
                ENABLE_IP_MASQUERADE => o.masquerade = boolean(k, v)?,
                HOST_BINDING_IPV4 => {
                    let a: IpAddr =
                        v.parse().map_err(|_| Error::invalid(format!("option {k}"), format!("{v:?} is not an IP address")))?;
                    if !a.is_ipv4() {
                        return Err(Error::invalid(format!("option {k}"), format!("{a} is not an IPv4 address")));
                    }
                    o.host_binding_ipv4 = Some(a);
                }
                MTU => {
                    let m: u32 = v.parse().map_err(|_| Error::invalid(format!("option {k}"), format!("{v:?} is not a number")))?;
                    if !(68..=65535).contains(&m) {
                        return Err(Error::invalid(format!("option {k}"), format!("MTU {m} outside 68-65535")));
                    }
                    o.mtu = Some(m);
                }
                MULTICAST_SNOOPING => o.multicast_snooping = boolean(k, v)?,
                HAIRPIN => o.hairpin = boolean(k, v)?,
                DEFAULT_BRIDGE => o.default_bridge = boolean(k, v)?,
                other => {
                    return Err(Error::invalid(
                        format!("option {other}"),
                        format!("unknown option of the bridge driver (known: {NAME}, {ENABLE_ICC}, {ENABLE_IP_MASQUERADE}, {HOST_BINDING_IPV4}, {MTU}, {MULTICAST_SNOOPING}, {HAIRPIN}, {DEFAULT_BRIDGE})"),
                    ))
                }
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_names_outside_dockers_character_set_are_refused() {
        for bad in ["x\"accept#", "a b", "-x", "br;x", "x{y}"] {
            let opts = BTreeMap::from([(NAME.to_string(), bad.to_string())]);
            let e = BridgeNetworkOptions::from_docker(&opts).unwrap_err();
            assert!(e.to_string().contains(NAME), "{bad:?}: {e}");
        }
        let opts = BTreeMap::from([(NAME.to_string(), "docker_1.x-y".to_string())]);
        assert!(BridgeNetworkOptions::from_docker(&opts).is_ok());
    }

    #[test]
    fn docker_keys_decode_and_unknown_keys_are_named() {
        let m: BTreeMap<String, String> = [
            (NAME, "docker1"),
            (ENABLE_ICC, "false"),
            (MTU, "1400"),
            (HOST_BINDING_IPV4, "127.0.0.1"),
            (MULTICAST_SNOOPING, "1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let o = BridgeNetworkOptions::from_docker(&m).unwrap();
        assert_eq!((o.name.as_deref(), o.icc, o.masquerade, o.mtu), (Some("docker1"), false, true, Some(1400)));
        assert!(o.multicast_snooping && !BridgeNetworkOptions::default().multicast_snooping);
        for (k, v, want) in [
            ("com.docker.network.bridge.bogus", "1", "com.docker.network.bridge.bogus"),
            (MTU, "9", "MTU 9"),
            (ENABLE_ICC, "maybe", "not true or false"),
            (NAME, "0123456789abcdefg", "at most 15 bytes"),
            (HOST_BINDING_IPV4, "::1", "not an IPv4"),
        ] {
            let m: BTreeMap<String, String> = [(k.to_string(), v.to_string())].into();
            let e = BridgeNetworkOptions::from_docker(&m).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
