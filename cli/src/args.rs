//! The command line, as clap types.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

/// Docker's network model on the command line: bridge, host and none
/// networks, sandboxes (network namespaces), published ports.
#[derive(Debug, Parser)]
#[command(
    name = "cnm",
    version,
    propagate_version = true,
    after_help = "Example:\n  \
    cnm network create --subnet 172.30.0.0/24 web\n  \
    cnm sandbox create c1\n  \
    cnm connect -p 8080:80 web c1\n  \
    cnm exec c1 -- ip addr"
)]
pub struct Cli {
    /// Durable state (networks, pools).
    #[arg(long, global = true, value_name = "DIR", default_value = "/var/lib/cnm")]
    pub state_dir: PathBuf,
    /// State that lives as long as the kernel objects (endpoints, sandboxes,
    /// leases, firewall), named namespaces and the operation lock; tmpfs.
    #[arg(long, global = true, value_name = "DIR", default_value = "/run/cnm")]
    pub run_dir: PathBuf,
    /// Work inside this namespace as if it were the host (bridges, rules,
    /// sysctls there); default: the caller's.
    #[arg(long, global = true, value_name = "PATH")]
    pub host_netns: Option<PathBuf>,
    /// Firewall backend.
    #[arg(long, global = true, value_enum, default_value_t = FirewallArg::Nftables)]
    pub firewall: FirewallArg,
    /// The default bridge's address and prefix (dockerd's `--bip`), used
    /// when the predefined `bridge` network is first made.
    #[arg(long, global = true, value_name = "CIDR")]
    pub bip: Option<IpNet>,
    /// The local automatic pools, `base=CIDR,size=N` (dockerd's
    /// `--default-address-pool`, repeatable); without --bip the default
    /// bridge takes the first subnet of the first.
    #[arg(long, global = true, value_name = "base=CIDR,size=N")]
    pub default_address_pool: Vec<AddressPool>,
    /// The default bridge's Linux bridge.
    #[arg(long, global = true, value_name = "NAME", default_value = "cnm0")]
    pub default_bridge: String,
    /// No predefined networks (`bridge`, `host`, `none`) are made: for a
    /// state another program owns (the CNI plugin's).
    #[arg(long, global = true)]
    pub no_predefined: bool,
    /// Where the durable state lives, as a URL: `file:///var/lib/cnm`
    /// overrides --state-dir; `etcd://HOST:2379[,HOST:2379…][/PREFIX/]`
    /// (`etcds://` for TLS) keeps what all hosts of a cluster share (overlay
    /// networks, global pools) in etcd and the rest in the state
    /// directories.
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,
    /// The CA that signed etcd's certificates (PEM), for `etcds://`
    /// (default: the system's CAs).
    #[arg(long, global = true, value_name = "FILE")]
    pub store_ca: Option<PathBuf>,
    /// A client certificate for etcd (PEM), with --store-key.
    #[arg(long, global = true, value_name = "FILE", requires = "store_key")]
    pub store_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, global = true, value_name = "FILE", requires = "store_cert")]
    pub store_key: Option<PathBuf>,
    /// etcd user; the password comes from CNM_STORE_PASSWORD or
    /// --store-password-file, never from the command line.
    #[arg(long, global = true, value_name = "NAME")]
    pub store_user: Option<String>,
    /// A file holding the etcd user's password (its first line).
    #[arg(long, global = true, value_name = "FILE", requires = "store_user")]
    pub store_password_file: Option<PathBuf>,
    /// This host's name in the cluster (overlay `Peers`); default: the
    /// system's host name.
    #[arg(long, global = true, value_name = "NAME")]
    pub host_name: Option<String>,
    /// This host's underlay (VTEP) address, which other hosts reach; turns
    /// the overlay driver on (needs an etcd store).
    #[arg(long, global = true, value_name = "IP")]
    pub advertise_addr: Option<IpAddr>,
    /// Log what happens (-v: info, -vv: debug, -vvv: trace) on stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// `base=CIDR,size=N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPool {
    /// The range subnets are taken from.
    pub base: IpNet,
    /// Their prefix length.
    pub size: u8,
}

impl std::str::FromStr for AddressPool {
    type Err = String;
    fn from_str(s: &str) -> Result<AddressPool, String> {
        let (mut base, mut size) = (None, None);
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("base", v)) => base = Some(v.parse::<IpNet>().map_err(|e| format!("base {v:?}: {e}"))?),
                Some(("size", v)) => size = Some(v.parse::<u8>().map_err(|e| format!("size {v:?}: {e}"))?),
                _ => return Err(format!("{part:?}: expected base=CIDR,size=N")),
            }
        }
        match (base, size) {
            (Some(base), Some(size)) if size >= base.prefix_len() && size <= base.max_prefix_len() => {
                Ok(AddressPool { base: base.trunc(), size })
            }
            (Some(base), Some(size)) => Err(format!("size {size} does not fit in {base}")),
            _ => Err("expected base=CIDR,size=N".into()),
        }
    }
}

/// Firewall backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirewallArg {
    /// `table inet cnm`.
    Nftables,
    /// `CNM-*` chains through iptables-restore.
    Iptables,
    /// No rules at all (no NAT, no published ports).
    None,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Create, list, inspect and remove networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Create, list, inspect and remove sandboxes (network namespaces).
    #[command(subcommand)]
    Sandbox(SandboxCmd),
    /// Create, list, inspect and remove services (virtual IPs, DNS names,
    /// published ports) and add or remove their backends.
    #[command(subcommand)]
    Service(ServiceCmd),
    /// Connect a sandbox to a network (create an endpoint and join it).
    #[command(after_help = "Example:\n  cnm connect --ip 172.30.0.10 -p 8080:80 -p 53:53/udp web c1")]
    Connect(ConnectArgs),
    /// Disconnect a sandbox from a network (leave and delete its endpoint).
    #[command(after_help = "Example:\n  cnm disconnect web c1")]
    Disconnect {
        /// Network name or id.
        network: String,
        /// Sandbox name or id.
        sandbox: String,
    },
    /// Run a command inside a sandbox's network namespace, with the
    /// sandbox's resolv.conf and hosts file as /etc's.
    #[command(after_help = "Example:\n  cnm exec c1 -- ping -c1 172.30.0.1")]
    Exec {
        /// Sandbox name or id.
        sandbox: String,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Repair the state against the kernel; prints what it fixed.
    #[command(after_help = "Example:\n  cnm reconcile")]
    Reconcile,
    /// The long-running per-host agent: reconciles at start and then every
    /// interval until SIGINT or SIGTERM; runs the embedded DNS server (names
    /// at 127.0.0.11 in every sandbox); with the overlay driver on, it also
    /// keeps this host's lease alive and programs other hosts' endpoints.
    #[command(after_help = "Example:\n  cnm --store etcd://10.0.0.1:2379 --advertise-addr 10.0.0.2 agent")]
    Agent {
        /// Seconds between reconciliations.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// Seconds this host's overlay endpoints outlive the agent.
        #[arg(long, default_value_t = 10)]
        lease_ttl: u64,
        /// No embedded DNS server (sandboxes then get the upstream name
        /// servers in their resolv.conf).
        #[arg(long)]
        no_dns: bool,
        /// Worker threads of the DNS server (default: one per CPU).
        #[arg(long, value_name = "N")]
        dns_workers: Option<usize>,
    },
    /// Serves Docker's remote network and IPAM plugin protocols for dockerd
    /// (`docker network create -d cnm`, `--ipam-driver cnm`) until SIGINT
    /// or SIGTERM; dockerd's networks and containers become cnm's.
    #[command(
        after_help = "Example:\n  cnm plugin\n  docker network create -d cnm --subnet 10.1.3.0/24 web\n\nAcross hosts (dockerd with --cluster-store):\n  cnm --store etcd://10.0.0.5:2379 --advertise-addr 10.0.0.1 plugin"
    )]
    Plugin {
        /// The plugin's name: dockerd's `-d NAME` and `--ipam-driver NAME`.
        #[arg(long, default_value = "cnm")]
        name: String,
        /// The socket to listen on (default: /run/docker/plugins/NAME.sock,
        /// where dockerd looks).
        #[arg(long, value_name = "PATH")]
        socket: Option<std::path::PathBuf>,
        /// Seconds this host's overlay endpoints outlive the plugin (with
        /// `--store etcd://…` and `--advertise-addr`, where dockerd's
        /// networks are overlays of global scope).
        #[arg(long, default_value_t = 10)]
        lease_ttl: u64,
    },
    /// The README's main demonstration, inside namespaces it creates.
    #[command(after_help = "Example:\n  cnm demo\n  cnm demo --firewall iptables")]
    Demo,
    /// Print a shell completion script.
    #[command(after_help = "Example:\n  cnm completions bash > /etc/bash_completion.d/cnm")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// `cnm service …`
#[derive(Debug, Subcommand)]
pub enum ServiceCmd {
    /// Create a service: a virtual IP on each network, `NAME` and
    /// `tasks.NAME` in DNS there, and its published ports.
    #[command(after_help = "Example:\n  cnm service create --network front -p 8080:80 -p mode=host,9090:90 web")]
    Create {
        /// A network the service is on (repeatable).
        #[arg(long = "network", value_name = "NET")]
        networks: Vec<String>,
        /// A published port: `[mode=ingress|host,]PUBLISHED:TARGET[/PROTO]`
        /// (ingress, Docker's routing mesh, by default).
        #[arg(short = 'p', long = "publish", value_name = "PORT")]
        ports: Vec<cnm_core::ServicePort>,
        /// The service's name.
        name: String,
    },
    /// List services.
    #[command(after_help = "Example:\n  cnm service ls")]
    Ls,
    /// Show services as JSON.
    #[command(after_help = "Example:\n  cnm service inspect web")]
    Inspect {
        /// Service names or ids.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Remove services.
    #[command(after_help = "Example:\n  cnm service rm web")]
    Rm {
        /// Service names or ids.
        #[arg(required = true)]
        services: Vec<String>,
    },
    /// Make a sandbox of this host a backend of a service.
    #[command(name = "add-backend", after_help = "Example:\n  cnm service add-backend web c1")]
    AddBackend {
        /// Service name or id.
        service: String,
        /// Sandbox name or id.
        sandbox: String,
    },
    /// Remove a sandbox of this host from a service's backends.
    #[command(name = "rm-backend", after_help = "Example:\n  cnm service rm-backend web c1")]
    RmBackend {
        /// Service name or id.
        service: String,
        /// Sandbox name or id.
        sandbox: String,
    },
}

/// `cnm network …`
#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    #[command(after_help = "Example:\n  cnm network create --subnet 172.30.0.0/24 --gateway 172.30.0.1 web\n  \
        cnm network create --ipv6 --subnet 10.5.0.0/24 --subnet fd00:5::/64 dual\n  \
        cnm network create -d host host")]
    Create(NetworkCreate),
    /// List networks.
    #[command(alias = "list", after_help = "Example:\n  cnm network ls --format json")]
    Ls {
        /// Print the ids only.
        #[arg(short, long)]
        quiet: bool,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show networks as `docker network inspect` does (a JSON array).
    #[command(after_help = "Example:\n  cnm network inspect web")]
    Inspect {
        /// Network names or ids.
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks (refused while endpoints are connected).
    #[command(alias = "remove", after_help = "Example:\n  cnm network rm web")]
    Rm {
        /// Network names or ids.
        #[arg(required = true)]
        networks: Vec<String>,
    },
}

/// Output formats of `ls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Docker's columns.
    Table,
    /// One JSON object per line.
    Json,
}

/// `cnm network create`
#[derive(Debug, Args)]
pub struct NetworkCreate {
    /// Driver: bridge, host, null, overlay, or the name of a Docker network
    /// plugin (found as dockerd finds it: /run/docker/plugins/NAME.sock or
    /// a spec file in /etc/docker/plugins).
    #[arg(short, long, default_value = "bridge")]
    pub driver: String,
    /// Subnet in CIDR form; repeat for several (one per family at most for bridge).
    #[arg(long, value_name = "CIDR")]
    pub subnet: Vec<IpNet>,
    /// Allocate container addresses from this range of a subnet.
    #[arg(long, value_name = "CIDR")]
    pub ip_range: Vec<IpNet>,
    /// Gateway of a subnet.
    #[arg(long, value_name = "IP")]
    pub gateway: Vec<IpAddr>,
    /// An address of a subnet that is never handed out.
    #[arg(long, value_name = "NAME=IP")]
    pub aux_address: Vec<String>,
    /// No traffic in or out beyond the network itself.
    #[arg(long)]
    pub internal: bool,
    /// Give endpoints IPv6 addresses too.
    #[arg(long)]
    pub ipv6: bool,
    /// Standalone sandboxes may attach (overlay).
    #[arg(long)]
    pub attachable: bool,
    /// A driver option (`com.docker.network.bridge.name=br0` …).
    #[arg(short, long = "opt", value_name = "KEY=VALUE")]
    pub opt: Vec<String>,
    /// A label.
    #[arg(long, value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// The IPAM driver: `default` (cnm-ipam), or the name of a Docker IPAM
    /// plugin.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub ipam_driver: String,
    /// The network's name.
    pub name: String,
}

/// `cnm sandbox …`
#[derive(Debug, Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox: a named namespace under the run directory (its path
    /// is printed), or a namespace the caller made (`--netns`).
    #[command(
        after_help = "Example:\n  cnm sandbox create --hostname web1 --dns 10.0.0.2 --dns-search example.com c1\n  \
        cnm sandbox create --netns /run/netns/ctr1 ctr1"
    )]
    Create(SandboxCreate),
    /// List sandboxes.
    #[command(alias = "list", after_help = "Example:\n  cnm sandbox ls")]
    Ls,
    /// Show a sandbox, its endpoints and its resolv.conf and hosts files, as JSON.
    #[command(after_help = "Example:\n  cnm sandbox inspect c1")]
    Inspect {
        /// Sandbox name or id.
        sandbox: String,
    },
    /// Remove a sandbox: leaves every network, removes its namespace if cnm made it.
    #[command(alias = "remove", after_help = "Example:\n  cnm sandbox rm c1")]
    Rm {
        /// Sandbox name or id.
        sandbox: String,
    },
}

/// `cnm sandbox create`
#[derive(Debug, Args)]
pub struct SandboxCreate {
    /// Use this existing network namespace (a runtime's, or the host's for host mode).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// Host name (written into the sandbox's hosts file).
    #[arg(long)]
    pub hostname: Option<String>,
    /// A name server for the sandbox's resolv.conf.
    #[arg(long, value_name = "IP")]
    pub dns: Vec<IpAddr>,
    /// A search domain for the sandbox's resolv.conf.
    #[arg(long, value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// A resolv.conf option (`ndots:2` …).
    #[arg(long, value_name = "OPT")]
    pub dns_option: Vec<String>,
    /// Connect it to this network in the same command (repeatable, like
    /// `docker run --network`): `bridge` (what `docker run` does by
    /// default), `none` (loopback only), `host` (the host's namespace), or
    /// any network.
    #[arg(long = "network", alias = "net", value_name = "NAME")]
    pub networks: Vec<String>,
    /// The sandbox's name.
    pub name: String,
}

/// `cnm connect`
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// A static IPv4 address.
    #[arg(long, value_name = "IP")]
    pub ip: Option<IpAddr>,
    /// A static IPv6 address.
    #[arg(long, value_name = "IP")]
    pub ip6: Option<IpAddr>,
    /// A static MAC address.
    #[arg(long, value_name = "MAC")]
    pub mac: Option<cnm_netns::MacAddr>,
    /// The interface's name in the sandbox (default: the first free ethN).
    #[arg(long, value_name = "NAME")]
    pub ifname: Option<String>,
    /// A DNS alias of the endpoint.
    #[arg(long, value_name = "NAME")]
    pub alias: Vec<String>,
    /// Publish a port: `[HOSTIP:][HOSTPORT[-END]:]PORT[-END][/tcp|udp|sctp]`.
    #[arg(short, long, value_name = "MAPPING")]
    pub publish: Vec<cnm_core::PortMapping>,
    /// Network name or id.
    pub network: String,
    /// Sandbox name or id.
    pub sandbox: String,
}
