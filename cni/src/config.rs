//! The network configuration a runtime sends on stdin (`"type": "cnm"`),
//! and what it asks of cnm: a network, and per container the capability
//! arguments (`runtimeConfig`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use cnm_core::{IpamPoolConfig, NetworkConfig, PortMapping, PortRange, Protocol};
use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// The CNI versions whose configurations and results this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Where cnm keeps its state by default: shared with the `cnm` tool given
/// `--state-dir /var/lib/cni/cnm --run-dir /run/cni/cnm`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/cnm";
/// The run directory (tmpfs) by default.
pub const DEFAULT_RUN_DIR: &str = "/run/cni/cnm";

/// One value or a list of them (`"subnet": "10.1.0.0/24"` or a list).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single value.
    One(T),
    /// Several.
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    fn to_vec(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// The configuration of one plugin of a network (all keys but the
/// specification's optional).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NetConf {
    /// The configuration's CNI version; results are written in it.
    pub cni_version: String,
    /// The network's name: the cnm network's name.
    pub name: String,
    /// `cnm`.
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// `bridge` (default) or `overlay`.
    pub driver: Option<String>,
    /// Subnets (without one, cnm-ipam's automatic pools).
    pub subnet: Option<OneOrMany<IpNet>>,
    /// Gateways, each in one of the subnets.
    pub gateway: Option<OneOrMany<IpAddr>>,
    /// Ranges containers' addresses come from, each in one of the subnets.
    pub ip_range: Option<OneOrMany<IpNet>>,
    /// The Linux bridge's name.
    pub bridge: Option<String>,
    /// MTU of the bridge and of every container interface.
    pub mtu: Option<u32>,
    /// Masquerade traffic leaving the network (default true).
    pub ip_masq: Option<bool>,
    /// Hairpin mode on the bridge ports (default true).
    pub hairpin: Option<bool>,
    /// No traffic to or from outside the network.
    pub internal: bool,
    /// Containers on the network may talk to each other (default true).
    pub icc: Option<bool>,
    /// Driver options, as `cnm network create -o KEY=VALUE` takes them.
    pub options: BTreeMap<String, String>,
    /// cnm's state directory.
    pub data_dir: Option<PathBuf>,
    /// cnm's run directory.
    pub run_dir: Option<PathBuf>,
    /// A cluster store (`etcd://HOST:PORT[,HOST:PORT…][/PREFIX/]`, or
    /// `etcds://` for TLS), for overlays.
    pub store: Option<String>,
    /// The CA that signed etcd's certificates (PEM).
    #[serde(rename = "storeCA")]
    pub store_ca: Option<PathBuf>,
    /// A client certificate for etcd (PEM), with `storeKey`.
    pub store_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub store_key: Option<PathBuf>,
    /// An etcd user; its password is the first line of `storePasswordFile`.
    pub store_user: Option<String>,
    /// The file holding the etcd user's password.
    pub store_password_file: Option<PathBuf>,
    /// This host's underlay address for overlays (default: the address it
    /// reaches the store from).
    pub advertise_addr: Option<IpAddr>,
    /// This host's name for overlays (default: the system's).
    pub host_name: Option<String>,
    /// `nftables` (default), `iptables` or `none`.
    pub firewall: Option<String>,
    /// A delegated IPAM plugin (`{"type": "host-local", …}`).
    pub ipam: Option<Value>,
    /// DNS settings for the container's resolv.conf and the result.
    pub dns: Option<DnsConf>,
    /// Capability arguments from the runtime.
    pub runtime_config: Option<Value>,
    /// The previous plugin's result, in a chain.
    pub prev_result: Option<Value>,
    /// GC's valid attachments (`cni.dev/valid-attachments`).
    #[serde(rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// The specification's `dns` dictionary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DnsConf {
    /// Name servers.
    pub nameservers: Vec<IpAddr>,
    /// Local domain (a first search domain).
    pub domain: String,
    /// Search domains.
    pub search: Vec<String>,
    /// resolv.conf options.
    pub options: Vec<String>,
}

impl DnsConf {
    /// As cnm's DNS settings of a sandbox.
    pub fn to_cnm(&self) -> cnm_core::DnsConfig {
        let mut search: Vec<String> = Some(self.domain.clone()).filter(|d| !d.is_empty()).into_iter().collect();
        search.extend(self.search.iter().filter(|s| **s != self.domain).cloned());
        cnm_core::DnsConfig { servers: self.nameservers.clone(), search, options: self.options.clone() }
    }
}

/// One attachment a runtime still uses (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// The container.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// Its interface.
    pub ifname: String,
}

/// The bridge options cnm names, from the configuration's own keys.
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
const ENABLE_MASQ: &str = "com.docker.network.bridge.enable_ip_masquerade";
const MTU: &str = "com.docker.network.driver.mtu";
const HAIRPIN: &str = "cnm.bridge.hairpin";

impl NetConf {
    /// Parses stdin: malformed JSON is a decoding failure (6), a value of
    /// the wrong type an invalid configuration (7).
    pub fn parse(bytes: &[u8]) -> Result<NetConf> {
        let conf: NetConf = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => Error::config("configuration", e.to_string()),
            _ => Error::Decode { what: "the network configuration".into(), reason: e.to_string() },
        })?;
        if conf.cni_version.is_empty() {
            return Err(Error::config("cniVersion", "missing"));
        }
        Ok(conf)
    }

    /// Checks the version and the keys every command needs.
    pub fn validate(&self) -> Result<()> {
        if !SUPPORTED_VERSIONS.contains(&self.cni_version.as_str()) {
            return Err(Error::IncompatibleVersion {
                version: self.cni_version.clone(),
                supported: SUPPORTED_VERSIONS.join(", "),
            });
        }
        cnm_core::model::validate_name("name", &self.name).map_err(|e| Error::config("name", e.to_string()))?;
        match self.driver() {
            "bridge" | "overlay" => {}
            other => return Err(Error::config("driver", format!("{other:?} is not bridge or overlay"))),
        }
        if self.driver() == "overlay" && self.store.is_none() {
            return Err(Error::config("store", "an overlay needs a cluster store (etcd://HOST:PORT)"));
        }
        self.etcd()?;
        if let Some(f) = &self.firewall {
            if !["nftables", "iptables", "none"].contains(&f.as_str()) {
                return Err(Error::config("firewall", format!("{f:?} is not nftables, iptables or none")));
            }
        }
        if self.ipam.is_some() && self.subnet.is_some() {
            return Err(Error::config("subnet", "give subnets to the ipam plugin, not both"));
        }
        if let Some(d) = &self.dns {
            d.to_cnm().validate().map_err(|e| Error::config("dns", e.to_string()))?;
        }
        self.network_config(&[])?;
        Ok(())
    }

    /// The cnm driver.
    pub fn driver(&self) -> &str {
        self.driver.as_deref().unwrap_or("bridge")
    }

    /// The delegated IPAM plugin's type, if any.
    pub fn ipam_type(&self) -> Result<Option<String>> {
        let Some(ipam) = &self.ipam else { return Ok(None) };
        match ipam.get("type").and_then(Value::as_str) {
            Some(t) if !t.is_empty() && !t.contains('/') => Ok(Some(t.to_string())),
            _ => Err(Error::config("ipam.type", "missing, or not a plugin name")),
        }
    }

    /// The cnm network this configuration describes. `delegated`: the
    /// subnets and gateways a delegated IPAM plugin gave (they replace the
    /// configuration's).
    pub fn network_config(&self, delegated: &[(IpNet, Option<IpAddr>)]) -> Result<NetworkConfig> {
        let mut cfg = NetworkConfig::new(self.name.clone(), self.driver());
        cfg.internal = self.internal;
        cfg.options = self.options.clone();
        let mut set = |key: &str, value: Option<String>, field: &str| -> Result<()> {
            let Some(v) = value else { return Ok(()) };
            if cfg.options.get(key).is_some_and(|o| *o != v) {
                return Err(Error::config(field, format!("contradicts options.{key}")));
            }
            cfg.options.insert(key.into(), v);
            Ok(())
        };
        if self.driver() == "bridge" {
            set(BRIDGE_NAME, self.bridge.clone(), "bridge")?;
            set(ENABLE_ICC, self.icc.map(|b| b.to_string()), "icc")?;
            set(ENABLE_MASQ, self.ip_masq.map(|b| b.to_string()), "ipMasq")?;
            set(HAIRPIN, self.hairpin.map(|b| b.to_string()), "hairpin")?;
        } else if self.bridge.is_some() || self.ip_masq.is_some() || self.hairpin.is_some() || self.icc.is_some() {
            return Err(Error::config("driver", "bridge, ipMasq, hairpin and icc are bridge keys"));
        }
        set(MTU, self.mtu.map(|m| m.to_string()), "mtu")?;
        cfg.ipam.config = match delegated.is_empty() {
            true => self.pools()?,
            false => delegated
                .iter()
                .map(|(subnet, gateway)| IpamPoolConfig {
                    subnet: Some(*subnet),
                    gateway: *gateway,
                    ..Default::default()
                })
                .collect(),
        };
        cfg.enable_ipv6 = cfg.ipam.config.iter().any(|p| p.subnet.is_some_and(|s| s.addr().is_ipv6()));
        cfg.validate().map_err(|e| Error::config("configuration", e.to_string()))?;
        Ok(cfg)
    }

    /// `subnet`, `gateway` and `ipRange` as cnm's pools: each gateway and
    /// range goes to the subnet that contains it.
    fn pools(&self) -> Result<Vec<IpamPoolConfig>> {
        let subnets = self.subnet.as_ref().map(OneOrMany::to_vec).unwrap_or_default();
        let mut pools: Vec<IpamPoolConfig> =
            subnets.iter().map(|s| IpamPoolConfig { subnet: Some(s.trunc()), ..Default::default() }).collect();
        let home = |pools: &mut Vec<IpamPoolConfig>, field: &str, a: IpAddr| -> Result<usize> {
            pools
                .iter()
                .position(|p| p.subnet.is_some_and(|s| s.contains(&a)))
                .ok_or_else(|| Error::config(field, format!("{a} is in no subnet")))
        };
        for g in self.gateway.as_ref().map(OneOrMany::to_vec).unwrap_or_default() {
            let i = home(&mut pools, "gateway", g)?;
            pools[i].gateway = Some(g);
        }
        for r in self.ip_range.as_ref().map(OneOrMany::to_vec).unwrap_or_default() {
            let i = home(&mut pools, "ipRange", r.addr())?;
            pools[i].ip_range = Some(r.trunc());
        }
        Ok(pools)
    }

    /// How to reach the cluster store, if there is one.
    pub fn etcd(&self) -> Result<Option<cnm_store_etcd::EtcdConfig>> {
        let Some(url) = &self.store else { return Ok(None) };
        let mut c = cnm_store_etcd::EtcdConfig::from_url(url).map_err(|e| Error::config("store", e.to_string()))?;
        if self.store_ca.is_some() || self.store_cert.is_some() || self.store_key.is_some() {
            c = c.tls(cnm_store_etcd::TlsFiles {
                ca: self.store_ca.clone(),
                cert: self.store_cert.clone(),
                key: self.store_key.clone(),
            });
        }
        if let Some(user) = &self.store_user {
            let file = self.store_password_file.as_ref().ok_or_else(|| {
                Error::config("storeUser", "needs storePasswordFile (no password in the configuration)")
            })?;
            let text = std::fs::read_to_string(file)
                .map_err(|e| Error::config("storePasswordFile", format!("{}: {e}", file.display())))?;
            c = c.credentials(user.clone(), text.lines().next().unwrap_or_default());
        }
        Ok(Some(c))
    }

    /// The state directory.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| DEFAULT_DATA_DIR.into())
    }

    /// The run directory.
    pub fn run_dir(&self) -> PathBuf {
        self.run_dir.clone().unwrap_or_else(|| DEFAULT_RUN_DIR.into())
    }

    /// The capability arguments (`runtimeConfig`), read case-insensitively.
    pub fn runtime(&self) -> Result<RuntimeArgs> {
        match &self.runtime_config {
            None | Some(Value::Null) => Ok(RuntimeArgs::default()),
            Some(rc @ Value::Object(_)) => RuntimeArgs::parse(rc, &self.name),
            Some(_) => Err(Error::config("runtimeConfig", "not an object")),
        }
    }
}

/// What the runtime asks for one container (the `portMappings`, `ips`,
/// `mac` and `aliases` capabilities).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeArgs {
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Static addresses.
    pub ips: Vec<IpAddr>,
    /// A static MAC address.
    pub mac: Option<cnm_netns::MacAddr>,
    /// DNS names.
    pub aliases: Vec<String>,
}

/// A key of a JSON object, found as Go's JSON decoder finds it: the exact
/// spelling first, then any other case.
fn get_ci<'a>(obj: &'a Value, key: &str) -> Option<&'a Value> {
    let o = obj.as_object()?;
    o.get(key).or_else(|| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}

impl RuntimeArgs {
    fn parse(rc: &Value, network: &str) -> Result<RuntimeArgs> {
        let mut out = RuntimeArgs::default();
        let field = |f: &str| format!("runtimeConfig.{f}");
        if let Some(list) = get_ci(rc, "portMappings").filter(|v| !v.is_null()) {
            let list = list.as_array().ok_or_else(|| Error::config(field("portMappings"), "not a list"))?;
            for (i, m) in list.iter().enumerate() {
                out.ports.push(port_mapping(&field(&format!("portMappings[{i}]")), m)?);
            }
        }
        if let Some(list) = get_ci(rc, "ips").filter(|v| !v.is_null()) {
            let list = list.as_array().ok_or_else(|| Error::config(field("ips"), "not a list"))?;
            for (i, v) in list.iter().enumerate() {
                let s = v.as_str().unwrap_or_default();
                let a = s.parse::<IpNet>().map(|n| n.addr()).or_else(|_| s.parse::<IpAddr>());
                out.ips
                    .push(a.map_err(|_| Error::config(field(&format!("ips[{i}]")), format!("{v} is not an address")))?);
            }
        }
        if let Some(v) = get_ci(rc, "mac").filter(|v| !v.is_null()) {
            let s = v.as_str().unwrap_or_default();
            out.mac = Some(s.parse().map_err(|_| Error::config(field("mac"), format!("{v} is not a MAC address")))?);
        }
        if let Some(v) = get_ci(rc, "aliases").filter(|v| !v.is_null()) {
            // A list, or (as Podman sends it) a list per network name.
            let list = match v {
                Value::Object(per_network) => per_network.get(network).and_then(Value::as_array),
                other => Some(other.as_array().ok_or_else(|| Error::config(field("aliases"), "not a list"))?),
            };
            for v in list.into_iter().flatten() {
                let a = v.as_str().ok_or_else(|| Error::config(field("aliases"), format!("{v} is not a name")))?;
                out.aliases.push(a.to_string());
            }
        }
        Ok(out)
    }
}

/// One `portMappings` entry: `hostPort`, `containerPort`, `protocol`
/// (default tcp), `hostIP` (empty: every address).
fn port_mapping(field: &str, m: &Value) -> Result<PortMapping> {
    let port = |key: &str| -> Result<Option<u16>> {
        match get_ci(m, key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0) {
                Some(p) => Ok(Some(p)),
                None => Err(Error::config(format!("{field}.{key}"), format!("{v} is not a port"))),
            },
        }
    };
    let container = port("containerPort")?.ok_or_else(|| Error::config(field, "no containerPort"))?;
    let host = port("hostPort")?;
    let protocol = match get_ci(m, "protocol").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some("sctp") => Protocol::Sctp,
        Some(other) => {
            return Err(Error::config(format!("{field}.protocol"), format!("{other:?} is not tcp, udp or sctp")))
        }
    };
    let host_ip = match get_ci(m, "hostIP").and_then(Value::as_str) {
        None | Some("") => None,
        Some(s) => {
            Some(s.parse().map_err(|_| Error::config(format!("{field}.hostIP"), format!("{s:?} is not an address")))?)
        }
    };
    let mapping = PortMapping {
        protocol,
        host_ip,
        host_port: host.map(PortRange::single),
        container_port: PortRange::single(container),
    };
    mapping.validate().map_err(|e| Error::config(field, e.to_string()))?;
    Ok(mapping)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_cnm_options_and_pools() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n1","type":"cnm","subnet":["10.1.0.0/24","fd00:1::/64"],
                "gateway":"10.1.0.254","ipRange":"10.1.0.128/25","bridge":"cni-n1","mtu":1400,
                "ipMasq":false,"icc":false,"hairpin":false,"internal":true,"unknownKey":1}"#,
        )
        .unwrap();
        c.validate().unwrap();
        let n = c.network_config(&[]).unwrap();
        assert_eq!(n.ipam.config[0].gateway, Some("10.1.0.254".parse().unwrap()));
        assert_eq!(n.ipam.config[0].ip_range, Some("10.1.0.128/25".parse().unwrap()));
        assert!(n.enable_ipv6 && n.internal);
        assert_eq!(n.options[BRIDGE_NAME], "cni-n1");
        assert_eq!(n.options[ENABLE_MASQ], "false");
        assert_eq!(n.options[HAIRPIN], "false");
        assert_eq!(n.options[MTU], "1400");
    }

    #[test]
    fn bad_configurations_are_named() {
        for (conf, code, want) in [
            (r#"{"cniVersion":"1.0.0","name":"n""#, 6, "decoding"),
            (r#"{"cniVersion":"9.9.9","name":"n","type":"cnm"}"#, 1, "9.9.9"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"cnm","mtu":"x"}"#, 7, "configuration"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"cnm","subnet":"10.1.0.0/24","gateway":"10.2.0.1"}"#,
                7,
                "gateway",
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"cnm","driver":"ipvlan"}"#, 7, "driver"),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"cnm","driver":"overlay"}"#, 7, "store"),
            (r#"{"cniVersion":"1.0.0","name":"bad name","type":"cnm"}"#, 7, "name"),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"cnm","store":"etcd://127.0.0.1:2379","storeUser":"u"}"#,
                7,
                "storePasswordFile",
            ),
            (r#"{"cniVersion":"1.0.0","name":"n","type":"cnm","store":"ftp://x"}"#, 7, "store"),
        ] {
            let e = NetConf::parse(conf.as_bytes()).and_then(|c| c.validate()).unwrap_err();
            assert_eq!(e.code(), code, "{conf}: {e}");
            assert!(e.to_string().contains(want), "{e} should name {want}");
        }
    }

    #[test]
    fn runtime_config_keys_are_case_insensitive() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"cnm","runtimeConfig":{
                "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},
                                {"HostPort":5353,"ContainerPort":53,"Protocol":"UDP","HostIP":"127.0.0.1"}],
                "IPs":["10.1.0.5/24"],"mac":"02:00:00:00:00:07","aliases":{"n":["web"],"other":["x"]}}}"#,
        )
        .unwrap();
        let r = c.runtime().unwrap();
        assert_eq!(r.ports.len(), 2);
        assert_eq!(r.ports[1].protocol, Protocol::Udp);
        assert_eq!(r.ports[1].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(r.ports[1].host_port, Some(PortRange::single(5353)));
        assert_eq!(r.ips, vec!["10.1.0.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(r.aliases, ["web"]);
        let bad = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"cnm","runtimeConfig":{"portMappings":[{"hostPort":70000,"containerPort":80}]}}"#,
        )
        .unwrap();
        let e = bad.runtime().unwrap_err();
        assert!(e.to_string().contains("portMappings[0].hostPort"), "{e}");
    }
}
