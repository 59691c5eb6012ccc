//! The result of `ADD`: interfaces, addresses, routes and DNS, written in
//! the configuration's version (0.3.1 and 0.4.0 tag each address with its
//! IP version; 1.0.0 and 1.1.0 do not). Also read back: a chain's
//! `prevResult` and a delegated IPAM plugin's answer.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// An interface the result names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its MAC address.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Its MTU (1.1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The container's namespace, for an interface inside it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

/// An address of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// The IP version, `4` or `6` (0.3.1 and 0.4.0 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    /// Address with prefix length.
    pub address: IpNet,
    /// The gateway of its subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// A route in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop (default: the address's gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

/// DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// Local domain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Search domains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// resolv.conf options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// A CNI result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// The version it is written in.
    pub cni_version: String,
    /// Interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    /// Routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// DNS.
    #[serde(default)]
    pub dns: Dns,
}

/// Versions whose addresses carry `version`.
fn tags_ip_version(v: &str) -> bool {
    matches!(v, "0.3.0" | "0.3.1" | "0.4.0")
}

impl CniResult {
    /// Reads a result (a `prevResult`, or a delegated plugin's answer) of
    /// any supported version.
    pub fn parse(what: &str, v: &Value) -> Result<CniResult> {
        let mut r: CniResult = serde_json::from_value(v.clone())
            .map_err(|e| Error::Decode { what: what.to_string(), reason: e.to_string() })?;
        for ip in &mut r.ips {
            ip.version = None;
        }
        Ok(r)
    }

    /// The result as `version` writes it.
    pub fn to_version(&self, version: &str) -> Value {
        let mut r = self.clone();
        r.cni_version = version.to_string();
        let tag = tags_ip_version(version);
        for ip in &mut r.ips {
            ip.version = tag.then(|| if ip.address.addr().is_ipv4() { "4" } else { "6" }.to_string());
        }
        if !matches!(version, "1.1.0") {
            for i in &mut r.interfaces {
                i.mtu = None;
            }
        }
        serde_json::to_value(&r).expect("a result serialises")
    }

    /// Adds `other`'s interfaces, addresses and routes after this one's
    /// (address indexes shifted), and its DNS where this has none.
    pub fn append(&mut self, other: CniResult) {
        let base = self.interfaces.len();
        self.interfaces.extend(other.interfaces);
        self.ips.extend(other.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + base);
            ip
        }));
        for r in other.routes {
            if !self.routes.contains(&r) {
                self.routes.push(r);
            }
        }
        if self.dns == Dns::default() {
            self.dns = other.dns;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            cni_version: "1.0.0".into(),
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: Some(1500),
                sandbox: "/run/netns/x".into(),
            }],
            ips: vec![IpConfig {
                version: None,
                interface: Some(0),
                address: "10.1.0.2/24".parse().unwrap(),
                gateway: Some("10.1.0.1".parse().unwrap()),
            }],
            routes: vec![Route { dst: "0.0.0.0/0".parse().unwrap(), gw: None }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn each_version_writes_its_own_shape() {
        let old = sample().to_version("0.3.1");
        assert_eq!(old["cniVersion"], "0.3.1");
        assert_eq!(old["ips"][0]["version"], "4");
        assert!(old["interfaces"][0].get("mtu").is_none());
        let new = sample().to_version("1.0.0");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["ips"][0]["interface"], 0);
        assert_eq!(new["interfaces"][0]["sandbox"], "/run/netns/x");
        assert_eq!(sample().to_version("1.1.0")["interfaces"][0]["mtu"], 1500);
        // What was written reads back the same.
        assert_eq!(CniResult::parse("r", &old).unwrap().ips, sample().ips);
    }

    #[test]
    fn appending_shifts_interface_indexes() {
        let mut a = sample();
        a.append(sample());
        assert_eq!(a.interfaces.len(), 2);
        assert_eq!(a.ips[1].interface, Some(1));
        assert_eq!(a.routes.len(), 1);
    }
}
