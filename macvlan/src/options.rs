//! A macvlan network's options, with Docker's keys (`-o parent=…`,
//! `-o macvlan_mode=…`).

use std::collections::BTreeMap;

use cnm_core::{Error, Result};
use cnm_netns::MacvlanMode;

/// `parent`: the host interface the containers' macvlan devices hang off
/// (`IFACE`, or `IFACE.VLAN` for an 802.1Q sub-interface).
pub const PARENT: &str = "parent";
/// `macvlan_mode`: `bridge` (the default), `private`, `vepa` or `passthru`.
pub const MODE: &str = "macvlan_mode";

/// The parent interface a network asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parent {
    /// None: an internal network, on a parent device of its own.
    Internal,
    /// An existing interface of the host.
    Interface(String),
    /// An 802.1Q sub-interface `IFACE.VLAN` of `IFACE`.
    Vlan {
        /// The interface the VLAN is on.
        interface: String,
        /// The VLAN id (1 to 4094).
        id: u16,
    },
}

impl Parent {
    /// The name of the parent device the macvlan devices hang off.
    pub fn device(&self, net_id: &str) -> String {
        match self {
            Parent::Internal => format!("dm-{}", &net_id[..12.min(net_id.len())]),
            Parent::Interface(i) => i.clone(),
            Parent::Vlan { interface, id } => format!("{interface}.{id}"),
        }
    }
}

/// Decoded options of a macvlan network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacvlanOptions {
    /// The parent.
    pub parent: Parent,
    /// The mode.
    pub mode: MacvlanMode,
}

impl MacvlanOptions {
    /// Reads Docker's option map; an unknown key or a bad value is an error
    /// naming it. `internal`: the network was created `--internal`.
    pub fn from_docker(opts: &BTreeMap<String, String>, internal: bool) -> Result<MacvlanOptions> {
        if let Some(k) = opts.keys().find(|k| ![PARENT, MODE].contains(&k.as_str())) {
            return Err(Error::invalid("option", format!("{k:?} is not a macvlan option (known: {PARENT}, {MODE})")));
        }
        let mode = match opts.get(MODE) {
            None => MacvlanMode::Bridge,
            Some(m) => m.parse().map_err(|e| Error::invalid(MODE, e))?,
        };
        let parent = match opts.get(PARENT).map(String::as_str) {
            None | Some("") => Parent::Internal,
            Some(_) if internal => {
                return Err(Error::invalid(PARENT, "an internal macvlan network has no parent (Docker's rule)"))
            }
            Some(p) => parse_parent(p)?,
        };
        Ok(MacvlanOptions { parent, mode })
    }
}

fn parse_parent(p: &str) -> Result<Parent> {
    cnm_core::model::validate_ifname(PARENT, p)?;
    match p.rsplit_once('.') {
        Some((interface, vlan)) if !interface.is_empty() && vlan.bytes().all(|b| b.is_ascii_digit()) => {
            let id = vlan
                .parse::<u16>()
                .ok()
                .filter(|v| (1..=4094).contains(v))
                .ok_or_else(|| Error::invalid(PARENT, format!("{p:?}: VLAN id {vlan} is not from 1 to 4094")))?;
            Ok(Parent::Vlan { interface: interface.to_string(), id })
        }
        _ => Ok(Parent::Interface(p.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn docker_s_keys_decode() {
        let o = MacvlanOptions::from_docker(&opts(&[("parent", "eth0")]), false).unwrap();
        assert_eq!(o, MacvlanOptions { parent: Parent::Interface("eth0".into()), mode: MacvlanMode::Bridge });
        let o = MacvlanOptions::from_docker(&opts(&[("parent", "eth0.10"), ("macvlan_mode", "private")]), false);
        assert_eq!(o.unwrap().parent, Parent::Vlan { interface: "eth0".into(), id: 10 });
        assert_eq!(MacvlanOptions::from_docker(&opts(&[]), false).unwrap().parent, Parent::Internal);
        assert_eq!(Parent::Internal.device("0123456789abcdef"), "dm-0123456789ab");
        for (kv, says) in [
            (&[("parent", "eth0.5000")][..], "VLAN id 5000"),
            (&[("macvlan_mode", "l2")][..], "not bridge, private"),
            (&[("mtu", "1400")][..], "\"mtu\" is not a macvlan option"),
            (&[("parent", "a/b")][..], "not an interface name"),
        ] {
            let e = MacvlanOptions::from_docker(&opts(kv), false).unwrap_err().to_string();
            assert!(e.contains(says), "{kv:?}: {e}");
        }
        assert!(MacvlanOptions::from_docker(&opts(&[("parent", "eth0")]), true).is_err());
    }
}
