//! The model: networks, endpoints, sandboxes, and the typed requests that
//! create them. Requests validate themselves before anything is touched.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use cnm_netns::MacAddr;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::time::Timestamp;

/// Where a network is known: on this host only, or across hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// This host only (bridge, host, null).
    #[default]
    Local,
    /// Every host sharing the store (overlay).
    Global,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Local => "local",
            Scope::Global => "global",
        })
    }
}

/// Life-cycle state of a stored object. Anything but `Ready` found by
/// `reconcile()` is the trace of an operation that did not finish, and is
/// rolled back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Being created.
    #[default]
    Creating,
    /// Complete.
    Ready,
    /// Being deleted.
    Deleting,
}

/// One subnet requested for a network (Docker's `IPAM.Config[]` entry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default, deny_unknown_fields)]
pub struct IpamPoolConfig {
    /// The subnet; `None` asks IPAM for the next free one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subnet: Option<IpNet>,
    /// Hand out addresses only from this range inside the subnet.
    #[serde(rename = "IPRange", skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNet>,
    /// The gateway address (default: the first address of the subnet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Addresses reserved by name, never handed out.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub auxiliary_addresses: BTreeMap<String, IpAddr>,
}

/// IPAM settings of a network (Docker's `IPAM`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IpamConfig {
    /// IPAM driver name (`default`).
    pub driver: String,
    /// IPAM driver options.
    pub options: BTreeMap<String, String>,
    /// Requested subnets.
    pub config: Vec<IpamPoolConfig>,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig { driver: "default".into(), options: BTreeMap::new(), config: Vec::new() }
    }
}

/// What IPAM gave a network for one subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolAssignment {
    /// IPAM's pool id.
    pub pool_id: String,
    /// The subnet.
    pub subnet: IpNet,
    /// The gateway, with the subnet's prefix length (`10.1.1.1/24`).
    pub gateway: Option<IpNet>,
    /// The range addresses come from, when narrower than the subnet.
    pub ip_range: Option<IpNet>,
    /// Reserved addresses.
    pub aux: BTreeMap<String, IpAddr>,
    /// Whether the subnet was requested explicitly (shown in inspect as
    /// requested) or chosen by IPAM.
    pub requested: bool,
}

/// A request to create a network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// Unique name.
    pub name: String,
    /// Driver name (`bridge`, `host`, `null`, `overlay` …).
    pub driver: String,
    /// IPAM settings.
    pub ipam: IpamConfig,
    /// No traffic in or out beyond the network itself.
    pub internal: bool,
    /// Standalone sandboxes may attach (overlay).
    pub attachable: bool,
    /// Give endpoints IPv6 addresses too.
    pub enable_ipv6: bool,
    /// Driver options, Docker's keys (`com.docker.network.bridge.name` …);
    /// each driver decodes them into its typed options and rejects unknown keys.
    pub options: BTreeMap<String, String>,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Subnets given to [`NetworkConfig::subnet`] that do not parse, with
    /// the index they would have had: reported by `validate`.
    #[serde(skip)]
    bad_subnets: Vec<(usize, String)>,
}

impl NetworkConfig {
    /// A request for network `name` with driver `driver` and defaults otherwise.
    pub fn new(name: impl Into<String>, driver: impl Into<String>) -> Self {
        NetworkConfig { name: name.into(), driver: driver.into(), ..Default::default() }
    }

    /// Adds a subnet. One that does not parse is reported by
    /// [`NetworkConfig::validate`] (which every operation calls), naming it.
    pub fn subnet(mut self, subnet: &str) -> Self {
        match subnet.parse() {
            Ok(net) => self.ipam.config.push(IpamPoolConfig { subnet: Some(net), ..Default::default() }),
            Err(_) => self.bad_subnets.push((self.ipam.config.len(), subnet.to_string())),
        }
        self
    }

    /// Checks names, subnets, gateways, ranges and auxiliary addresses.
    pub fn validate(&self) -> Result<()> {
        validate_name("network name", &self.name)?;
        if let Some((i, bad)) = self.bad_subnets.first() {
            return Err(Error::invalid(
                format!("ipam.config[{i}].subnet"),
                format!("{bad:?} is not a subnet (CIDR notation, e.g. 10.1.0.0/24)"),
            ));
        }
        if self.driver.is_empty() {
            return Err(Error::invalid("driver", "empty driver name"));
        }
        if self.ipam.driver.is_empty() {
            return Err(Error::invalid("ipam.driver", "empty IPAM driver name"));
        }
        for (i, p) in self.ipam.config.iter().enumerate() {
            let f = |x: &str| format!("ipam.config[{i}].{x}");
            let Some(subnet) = p.subnet else {
                if p.ip_range.is_some() || p.gateway.is_some() || !p.auxiliary_addresses.is_empty() {
                    return Err(Error::invalid(f("subnet"), "ip-range, gateway and aux-address need a subnet"));
                }
                continue;
            };
            if subnet.addr() != subnet.network() {
                return Err(Error::invalid(
                    f("subnet"),
                    format!("{subnet} has host bits set (did you mean {}?)", subnet.trunc()),
                ));
            }
            if subnet.addr().is_ipv6() && !self.enable_ipv6 {
                return Err(Error::invalid(
                    f("subnet"),
                    format!("{subnet} is IPv6 but IPv6 is not enabled on the network"),
                ));
            }
            let too_small = match subnet {
                IpNet::V4(v4) => v4.prefix_len() > 30,
                IpNet::V6(v6) => v6.prefix_len() > 126,
            };
            if too_small {
                return Err(Error::invalid(f("subnet"), format!("{subnet} has no room for a gateway and an address")));
            }
            if let Some((reserved, what)) = reserved_overlap(&subnet) {
                return Err(Error::invalid(
                    f("subnet"),
                    format!("{subnet} overlaps {reserved} ({what}), which cannot be a container network"),
                ));
            }
            if let Some(r) = p.ip_range {
                if r.addr() != r.network() {
                    return Err(Error::invalid(f("ip_range"), format!("{r} has host bits set")));
                }
                if !subnet.contains(&r) {
                    return Err(Error::invalid(f("ip_range"), format!("{r} is outside the subnet {subnet}")));
                }
            }
            if let Some(g) = p.gateway {
                if !subnet.contains(&g) || g == subnet.network() || broadcast(&subnet) == Some(g) {
                    return Err(Error::invalid(f("gateway"), format!("{g} is not a usable address of {subnet}")));
                }
            }
            for (name, a) in &p.auxiliary_addresses {
                if !subnet.contains(a) {
                    return Err(Error::invalid(
                        f(&format!("aux_address {name}")),
                        format!("{a} is outside the subnet {subnet}"),
                    ));
                }
                if p.gateway == Some(*a) {
                    return Err(Error::invalid(f(&format!("aux_address {name}")), format!("{a} is the gateway")));
                }
            }
            for earlier in &self.ipam.config[..i] {
                if let Some(other) = earlier.subnet {
                    if other.contains(&subnet.network()) || subnet.contains(&other.network()) {
                        return Err(Error::invalid(
                            f("subnet"),
                            format!("{subnet} overlaps {other} of the same network"),
                        ));
                    }
                }
            }
        }
        for k in self.options.keys() {
            if k.is_empty() {
                return Err(Error::invalid("option", "empty option key"));
            }
        }
        Ok(())
    }
}

/// Address ranges no container network may overlap, with what they are.
const RESERVED: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\""),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "the unspecified address"),
    ("::1/128", "loopback"),
    ("::ffff:0:0/96", "IPv4-mapped"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// The reserved range `subnet` overlaps, if any.
fn reserved_overlap(subnet: &IpNet) -> Option<(IpNet, &'static str)> {
    RESERVED.iter().map(|(r, what)| (r.parse::<IpNet>().expect("valid reserved range"), *what)).find(|(r, _)| {
        r.addr().is_ipv4() == subnet.addr().is_ipv4()
            && (r.contains(&subnet.network()) || subnet.contains(&r.network()))
    })
}

/// The IPv4 broadcast address of a subnet.
pub(crate) fn broadcast(n: &IpNet) -> Option<IpAddr> {
    match n {
        IpNet::V4(v4) => Some(IpAddr::V4(v4.broadcast())),
        IpNet::V6(_) => None,
    }
}

/// Docker's rule for object names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 128 bytes.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("{name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (at most 128 bytes)")))
    }
}

/// A network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Id.
    pub id: Id,
    /// Unique name.
    pub name: String,
    /// Driver name.
    pub driver: String,
    /// Local or global.
    pub scope: Scope,
    /// When it was created.
    pub created: Timestamp,
    /// IPv6 on.
    pub enable_ipv6: bool,
    /// No traffic beyond the network.
    pub internal: bool,
    /// Standalone sandboxes may attach.
    pub attachable: bool,
    /// IPAM settings as requested.
    pub ipam: IpamConfig,
    /// What IPAM gave, one entry per subnet.
    pub pools: Vec<PoolAssignment>,
    /// Driver options as requested.
    pub options: BTreeMap<String, String>,
    /// Options the driver reports back (shown in inspect), e.g. the overlay's
    /// `com.docker.network.driver.overlay.vxlanid_list`.
    pub driver_options: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Life-cycle state.
    pub state: State,
    /// One of the networks that exist from the start (`bridge`, `host`,
    /// `none`, see
    /// [`ControllerBuilder::predefined_networks`](crate::ControllerBuilder::predefined_networks)):
    /// it cannot be removed.
    #[serde(default)]
    pub predefined: bool,
    /// Its driver's kernel objects are made at its first join, not at its
    /// creation (the default bridge, whose Linux bridge appears when the
    /// first sandbox joins it); `false` once they are.
    #[serde(default)]
    pub kernel_pending: bool,
}

impl Network {
    /// The IPv4 gateway, if the network has one.
    pub fn gateway_v4(&self) -> Option<IpNet> {
        self.pools.iter().filter_map(|p| p.gateway).find(|g| g.addr().is_ipv4())
    }

    /// The IPv6 gateway, if the network has one.
    pub fn gateway_v6(&self) -> Option<IpNet> {
        self.pools.iter().filter_map(|p| p.gateway).find(|g| g.addr().is_ipv6())
    }
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

impl FromStr for Protocol {
    type Err = Error;
    fn from_str(s: &str) -> Result<Protocol> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            _ => Err(Error::invalid("port protocol", format!("{s:?} is not tcp, udp or sctp"))),
        }
    }
}

/// An inclusive range of ports; a single port has `start == end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port.
    pub end: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(p: u16) -> PortRange {
        PortRange { start: p, end: p }
    }

    /// How many ports.
    pub fn len(&self) -> u32 {
        (self.end as u32).saturating_sub(self.start as u32) + 1
    }

    /// Never empty (kept for clippy's `len` convention).
    pub fn is_empty(&self) -> bool {
        false
    }

    fn parse(s: &str, field: &str) -> Result<PortRange> {
        let port = |p: &str| -> Result<u16> {
            let n: u32 = p.parse().map_err(|_| Error::invalid(field, format!("{p:?} is not a port number")))?;
            if n == 0 || n > 65535 {
                return Err(Error::invalid(field, format!("port {n} is outside 1-65535")));
            }
            Ok(n as u16)
        };
        let r = match s.split_once('-') {
            Some((a, b)) => PortRange { start: port(a)?, end: port(b)? },
            None => PortRange::single(port(s)?),
        };
        if r.end < r.start {
            return Err(Error::invalid(field, format!("range {s} ends before it starts")));
        }
        Ok(r)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

/// A published port (range): Docker's `-p [HOSTIP:][HOSTPORT[-END]:]PORT[-END][/PROTO]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortMapping {
    /// Protocol.
    pub protocol: Protocol,
    /// Host address to bind; `None` for every address.
    pub host_ip: Option<IpAddr>,
    /// Host port(s); `None` asks for a free port from the ephemeral range.
    pub host_port: Option<PortRange>,
    /// Container port(s).
    pub container_port: PortRange,
}

impl PortMapping {
    /// Checks ports and that host and container ranges have the same length.
    pub fn validate(&self) -> Result<()> {
        let field = format!("port mapping {self}");
        for r in [Some(self.container_port), self.host_port].into_iter().flatten() {
            if r.start == 0 || r.end < r.start {
                return Err(Error::invalid(&field, format!("bad port range {r}")));
            }
        }
        if let Some(h) = self.host_port {
            if h.len() != self.container_port.len() {
                return Err(Error::invalid(
                    &field,
                    format!("host range {h} and container range {} differ in length", self.container_port),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:")?,
            Some(a) => write!(f, "{a}:")?,
            None => {}
        }
        if let Some(h) = self.host_port {
            write!(f, "{h}:")?;
        } else if self.host_ip.is_some() {
            f.write_str(":")?;
        }
        write!(f, "{}/{}", self.container_port, self.protocol)
    }
}

impl FromStr for PortMapping {
    type Err = Error;
    /// Parses Docker's `-p` syntax: `80`, `8080:80`, `127.0.0.1:8080:80/udp`,
    /// `[::1]:8080:80`, `8000-8010:80-90`, `127.0.0.1::80`.
    fn from_str(s: &str) -> Result<PortMapping> {
        let field = format!("port mapping {s:?}");
        let (spec, proto) = match s.rsplit_once('/') {
            Some((a, p)) => (a, p.parse::<Protocol>()?),
            None => (s, Protocol::Tcp),
        };
        // Split off a host IP: bracketed IPv6, or IPv4 when three parts remain.
        let (host_ip, rest) = if let Some(r) = spec.strip_prefix('[') {
            let (ip, rest) =
                r.split_once("]:").ok_or_else(|| Error::invalid(&field, "unterminated [IPv6] host address"))?;
            let ip: IpAddr = ip.parse().map_err(|_| Error::invalid(&field, format!("{ip:?} is not an IP address")))?;
            (Some(ip), rest)
        } else if spec.matches(':').count() == 2 {
            let (ip, rest) = spec.split_once(':').unwrap();
            let ip: IpAddr = ip.parse().map_err(|_| Error::invalid(&field, format!("{ip:?} is not an IP address")))?;
            (Some(ip), rest)
        } else {
            (None, spec)
        };
        let (host, container) = match rest.rsplit_once(':') {
            Some((h, c)) => (if h.is_empty() { None } else { Some(PortRange::parse(h, &field)?) }, c),
            None => (None, rest),
        };
        let m = PortMapping {
            protocol: proto,
            host_ip,
            host_port: host,
            container_port: PortRange::parse(container, &field)?,
        };
        m.validate()?;
        Ok(m)
    }
}

/// A published port as resolved (host port chosen), per container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortBinding {
    /// Protocol.
    pub protocol: Protocol,
    /// Host address; `None` for every address.
    pub host_ip: Option<IpAddr>,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
}

/// A request to create an endpoint on a network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointConfig {
    /// Name, unique in its network (default: generated).
    pub name: Option<String>,
    /// A static IPv4 address.
    pub ipv4: Option<IpAddr>,
    /// A static IPv6 address.
    pub ipv6: Option<IpAddr>,
    /// A static MAC address.
    pub mac: Option<MacAddr>,
    /// DNS aliases.
    pub aliases: Vec<String>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// The interface's name in the sandbox (CNI's `CNI_IFNAME`); by default
    /// the first `ethN` no other endpoint of the sandbox uses.
    pub ifname: Option<String>,
}

/// Checks a Linux interface name: 1 to 15 bytes, no `/`, `:` or white
/// space, not `.` or `..`.
pub fn validate_ifname(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && name.bytes().all(|c| c.is_ascii_graphic() && c != b'/' && c != b':');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, format!("{name:?} is not an interface name (1 to 15 bytes, no '/', ':' or space)")))
    }
}

impl EndpointConfig {
    /// Checks names, address families, the MAC and the port mappings.
    pub fn validate(&self) -> Result<()> {
        if let Some(n) = &self.name {
            validate_name("endpoint name", n)?;
        }
        if self.ipv4.is_some_and(|a| !a.is_ipv4()) {
            return Err(Error::invalid("ip", format!("{} is not an IPv4 address", self.ipv4.unwrap())));
        }
        if self.ipv6.is_some_and(|a| !a.is_ipv6()) {
            return Err(Error::invalid("ip6", format!("{} is not an IPv6 address", self.ipv6.unwrap())));
        }
        if let Some(m) = self.mac {
            if m.is_multicast() || m.0 == [0; 6] {
                return Err(Error::invalid("mac", format!("{m} is not a unicast address")));
            }
        }
        for a in &self.aliases {
            validate_name("alias", a)?;
        }
        if let Some(n) = &self.ifname {
            validate_ifname("ifname", n)?;
        }
        for (i, p) in self.ports.iter().enumerate() {
            p.validate()?;
            if self.ports[..i].contains(p) {
                return Err(Error::invalid(format!("port mapping {p}"), "given twice"));
            }
        }
        Ok(())
    }
}

/// Where an endpoint stands with its sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JoinState {
    /// In no sandbox.
    #[default]
    Detached,
    /// Being joined.
    Joining,
    /// Joined.
    Joined,
    /// Leaving.
    Leaving,
}

/// An endpoint: an interface of a sandbox on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Id.
    pub id: Id,
    /// Name, unique in its network.
    pub name: String,
    /// The network's id.
    pub network_id: Id,
    /// The network's name.
    pub network: String,
    /// MAC address of the sandbox-side interface.
    pub mac: Option<MacAddr>,
    /// IPv4 address with prefix length.
    pub ipv4: Option<IpNet>,
    /// IPv6 address with prefix length.
    pub ipv6: Option<IpNet>,
    /// IPAM pool of the IPv4 address.
    pub ipv4_pool: Option<String>,
    /// IPAM pool of the IPv6 address.
    pub ipv6_pool: Option<String>,
    /// Published ports as requested.
    pub ports: Vec<PortMapping>,
    /// Published ports as bound (host ports chosen).
    pub bindings: Vec<PortBinding>,
    /// DNS aliases.
    pub aliases: Vec<String>,
    /// The sandbox it is joined to.
    pub sandbox: Option<Id>,
    /// Interface name inside the sandbox (`eth0` …).
    pub ifname: Option<String>,
    /// The interface name asked for at creation
    /// ([`EndpointConfig::ifname`]), which every join uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_ifname: Option<String>,
    /// Whether it provides the sandbox's default route.
    pub gateway: bool,
    /// Join progress.
    pub join_state: JoinState,
    /// Driver data (e.g. the host-side veth name).
    pub driver_data: BTreeMap<String, String>,
    /// The sandbox side as the driver described it at join (while joined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_info: Option<crate::join::JoinInfo>,
    /// Life-cycle state.
    pub state: State,
}

/// DNS settings of a sandbox (what `docker run --dns …` writes to resolv.conf).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<IpAddr>,
    /// Search domains.
    pub search: Vec<String>,
    /// resolv.conf options.
    pub options: Vec<String>,
}

impl DnsConfig {
    /// Checks what goes into resolv.conf line by line: a search domain or an
    /// option is one word of printable ASCII (no whitespace, no newline
    /// that would start a line of its own, such as another `nameserver`).
    pub fn validate(&self) -> Result<()> {
        for (field, values) in [("dns-search", &self.search), ("dns-option", &self.options)] {
            for v in values.iter() {
                let ok = !v.is_empty()
                    && v.len() <= 253
                    && v.bytes().all(|c| c.is_ascii_graphic() && c != b'#' && c != b';');
                if !ok {
                    return Err(Error::invalid(
                        field,
                        format!("{v:?} must be one word of printable characters (no space, newline, '#' or ';'), at most 253 bytes"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Where a sandbox's endpoint is recorded: enough to read it directly.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointRef {
    /// Endpoint id.
    pub id: Id,
    /// Its network's id.
    pub network_id: Id,
    /// Its name (unique in the network).
    pub name: String,
}

/// A request to create a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Unique name (the container's name or id).
    pub name: String,
    /// The network namespace the runtime made; `None` makes a named one
    /// under the controller's run directory.
    pub netns: Option<PathBuf>,
    /// Host name.
    pub hostname: Option<String>,
    /// DNS settings.
    pub dns: DnsConfig,
    /// The runtime programs the sandbox side itself, as dockerd does for a
    /// remote network plugin: a join leaves the endpoint's interface in the
    /// host namespace and answers with its [`JoinInfo`](crate::JoinInfo)
    /// (name, gateway, routes); cnm-core never enters the namespace, writes
    /// no resolv.conf or hosts file and serves no names there. Needs
    /// `netns`, which need not exist yet (dockerd binds it when the
    /// container starts, after the join); reconcile leaves such a sandbox
    /// to the runtime.
    pub external: bool,
}

/// A sandbox: a network namespace and the endpoints joined to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    /// Id.
    pub id: Id,
    /// Unique name.
    pub name: String,
    /// Path of its network namespace.
    pub netns: PathBuf,
    /// Whether the controller created the namespace (and so removes it).
    pub owns_netns: bool,
    /// Host name.
    pub hostname: Option<String>,
    /// DNS settings.
    pub dns: DnsConfig,
    /// Joined endpoints, in join order (which decides the gateway).
    pub endpoints: Vec<EndpointRef>,
    /// When it was created.
    pub created: Timestamp,
    /// Life-cycle state.
    pub state: State,
    /// The runtime programs the sandbox side (see [`SandboxConfig::external`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub external: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings_parse_like_docker() {
        let m: PortMapping = "127.0.0.1:8080:80/udp".parse().unwrap();
        assert_eq!(m.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(m.host_port, Some(PortRange::single(8080)));
        assert_eq!(m.container_port, PortRange::single(80));
        assert_eq!(m.protocol, Protocol::Udp);
        let r: PortMapping = "8000-8010:80-90".parse().unwrap();
        assert_eq!(r.host_port.unwrap().len(), 11);
        let v6: PortMapping = "[::1]:8080:80".parse().unwrap();
        assert_eq!(v6.host_ip, Some("::1".parse().unwrap()));
        let any: PortMapping = "127.0.0.1::80".parse().unwrap();
        assert_eq!(any.host_port, None);
        assert_eq!("80".parse::<PortMapping>().unwrap().host_port, None);
        for bad in ["0:80", "8080:70000", "8000-8010:80-85", "90-80:90-80", "80/icmp", "x:80:80", "[::1:80"] {
            let e = bad.parse::<PortMapping>().unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidParameter, "{bad}: {e}");
        }
        assert_eq!(m.to_string(), "127.0.0.1:8080:80/udp");
    }

    #[test]
    fn network_config_validation_names_the_field() {
        let ok = NetworkConfig::new("tn", "bridge").subnet("10.1.1.0/24");
        ok.validate().unwrap();
        let cases: Vec<(NetworkConfig, &str)> = vec![
            (NetworkConfig::new("", "bridge"), "network name"),
            (NetworkConfig::new("bad name", "bridge"), "network name"),
            (NetworkConfig::new("tn", "bridge").subnet("10.1.1.5/24"), "host bits"),
            (NetworkConfig::new("tn", "bridge").subnet("10.1.1.0/31"), "no room"),
            (NetworkConfig::new("tn", "bridge").subnet("10.1.0.0/16").subnet("10.1.1.0/24"), "overlaps"),
            (NetworkConfig::new("tn", "bridge").subnet("fd00::/64"), "IPv6 is not enabled"),
            (NetworkConfig::new("tn", "bridge").subnet("bad"), "\"bad\" is not a subnet"),
            (NetworkConfig::new("tn", "bridge").subnet("127.0.0.0/8"), "loopback"),
            (NetworkConfig::new("tn", "bridge").subnet("0.0.0.0/0"), "this network"),
            (NetworkConfig::new("tn", "bridge").subnet("0.0.0.0/8"), "this network"),
            (NetworkConfig::new("tn", "bridge").subnet("224.1.0.0/16"), "multicast"),
            (NetworkConfig::new("tn", "bridge").subnet("255.255.255.0/24"), "broadcast"),
            (NetworkConfig::new("tn", "bridge").subnet("169.254.0.0/24"), "link-local"),
        ];
        let v6 = |s: &str| {
            let mut c = NetworkConfig::new("tn", "bridge").subnet(s);
            c.enable_ipv6 = true;
            c
        };
        let cases: Vec<(NetworkConfig, &str)> = cases
            .into_iter()
            .chain([
                (v6("::/0"), "the unspecified address"),
                (v6("ff00::/8"), "multicast"),
                (v6("fe80::/64"), "link-local"),
                (v6("::ffff:0:0/96"), "IPv4-mapped"),
                (v6("fd00::/127"), "no room"),
                (v6("fd00::/128"), "no room"),
            ])
            .collect();
        v6("fd00:1::/64").validate().unwrap();
        for (c, want) in cases {
            let e = c.validate().unwrap_err();
            assert!(e.to_string().contains(want), "{e} should mention {want}");
        }
        let mut gw = NetworkConfig::new("tn", "bridge").subnet("10.1.1.0/24");
        gw.ipam.config[0].gateway = Some("10.2.0.1".parse().unwrap());
        let e = gw.validate().unwrap_err();
        assert!(e.to_string().contains("ipam.config[0].gateway") && e.to_string().contains("10.2.0.1"), "{e}");
        let mut aux = NetworkConfig::new("tn", "bridge").subnet("10.1.1.0/24");
        aux.ipam.config[0].gateway = Some("10.1.1.1".parse().unwrap());
        aux.ipam.config[0].auxiliary_addresses.insert("router".into(), "10.1.1.1".parse().unwrap());
        assert!(aux.validate().unwrap_err().to_string().contains("is the gateway"));
        let mut range = NetworkConfig::new("tn", "bridge").subnet("10.1.1.0/24");
        range.ipam.config[0].ip_range = Some("10.1.2.0/25".parse().unwrap());
        assert!(range.validate().unwrap_err().to_string().contains("outside the subnet"));
    }
}
