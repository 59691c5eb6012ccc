//! The commands other than `demo`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cnm_core::{
    Controller, DnsConfig, Endpoint, EndpointConfig, Error, IpamPoolConfig, NetworkConfig, Result, SandboxConfig,
};
use cnm_netns::NetNs;
use serde_json::json;

use crate::args::{Cli, Cmd, ConnectArgs, Format, NetworkCmd, NetworkCreate, SandboxCmd, SandboxCreate, ServiceCmd};
use crate::stack::{self, Paths};

/// Runs a command; the process's exit status.
pub fn run(cli: &Cli) -> Result<i32> {
    let paths = Paths::from_cli(cli)?;
    let host = stack::host_netns(cli)?;
    if matches!(cli.cmd, Cmd::Agent { .. }) {
        limit_arenas();
    }
    // The agent answers names itself (unless told not to).
    let dns = match &cli.cmd {
        Cmd::Agent { no_dns: false, .. } => {
            Some(cnm_dns::DnsServer::start(cnm_dns::ServerConfig::new(host.try_clone()?))?)
        }
        _ => None,
    };
    let names = dns.clone().map(|d| d as Arc<dyn cnm_core::NameServer>);
    let (ctl, overlay) = stack::controller(cli, &paths, &host, names)?;
    let ctl = Arc::new(ctl);
    match &cli.cmd {
        Cmd::Network(n) => network(&ctl, n),
        Cmd::Sandbox(s) => sandbox(&ctl, &paths, s, cli.host_netns.as_deref()),
        Cmd::Service(s) => service(&ctl, s),
        Cmd::Connect(c) => connect(&ctl, c),
        Cmd::Disconnect { network, sandbox } => {
            ctl.disconnect(network, sandbox)?;
            Ok(0)
        }
        Cmd::Exec { sandbox, command } => {
            let sb = ctl.sandbox(sandbox)?;
            let ns = NetNs::open(&sb.netns)?;
            let files = ctl.sandbox_files_dir(&sb.name);
            let status = cnm_cli::exec::command(&ns, files.as_deref(), &command[0])
                .args(&command[1..])
                .status()
                .map_err(|e| Error::invalid("exec", format!("{}: {e}", command[0])))?;
            Ok(status.code().unwrap_or(1))
        }
        Cmd::Reconcile => {
            ctl.restore()?;
            let mut repairs = ctl.reconcile()?.repairs;
            tidy_files(&ctl, &paths, &mut repairs);
            if repairs.is_empty() {
                println!("nothing to repair");
            }
            for r in repairs {
                println!("{r}");
            }
            Ok(0)
        }
        Cmd::Agent { interval, lease_ttl, .. } => {
            agent(&ctl, &paths, overlay.as_ref(), dns.as_ref(), *interval, *lease_ttl)
        }
        Cmd::Plugin { name, socket, lease_ttl } => plugin(&ctl, overlay.as_ref(), name, socket.as_deref(), *lease_ttl),
        Cmd::Demo | Cmd::Completions { .. } => unreachable!("handled in main"),
    }
}

/// `KEY=VALUE` into its parts.
fn key_value(flag: &str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::invalid(flag, format!("{s:?} is not KEY=VALUE"))),
    }
}

/// The network configuration the flags describe: ranges, gateways and
/// auxiliary addresses go to the subnet that contains them.
pub fn network_config(c: &NetworkCreate) -> Result<NetworkConfig> {
    let mut cfg = NetworkConfig::new(&c.name, &c.driver);
    cfg.internal = c.internal;
    cfg.attachable = c.attachable;
    cfg.enable_ipv6 = c.ipv6;
    cfg.ipam.driver = c.ipam_driver.clone();
    for s in &c.subnet {
        if s.addr().is_ipv6() && !c.ipv6 {
            return Err(Error::invalid("--subnet", format!("{s} is an IPv6 subnet: add --ipv6")));
        }
        cfg.ipam.config.push(IpamPoolConfig { subnet: Some(*s), ..Default::default() });
    }
    let pool_of = |cfg: &mut NetworkConfig, flag: &str, a: IpAddr| -> Result<usize> {
        cfg.ipam
            .config
            .iter()
            .position(|p| p.subnet.is_some_and(|s| s.contains(&a)))
            .ok_or_else(|| Error::invalid(flag, format!("{a} is in no --subnet")))
    };
    for r in &c.ip_range {
        let i = pool_of(&mut cfg, "--ip-range", r.addr())?;
        if let Some(first) = cfg.ipam.config[i].ip_range {
            return Err(Error::invalid(
                "--ip-range",
                format!(
                    "{r}: subnet {} has --ip-range {first} already (one per subnet)",
                    cfg.ipam.config[i].subnet.unwrap()
                ),
            ));
        }
        cfg.ipam.config[i].ip_range = Some(*r);
    }
    for g in &c.gateway {
        let i = pool_of(&mut cfg, "--gateway", *g)?;
        if cfg.ipam.config[i].gateway.is_some() {
            return Err(Error::invalid(
                "--gateway",
                format!("a second gateway for subnet {}", cfg.ipam.config[i].subnet.unwrap()),
            ));
        }
        cfg.ipam.config[i].gateway = Some(*g);
    }
    for a in &c.aux_address {
        let (name, ip) = key_value("--aux-address", a)?;
        let ip: IpAddr =
            ip.parse().map_err(|_| Error::invalid("--aux-address", format!("{ip:?} is not an IP address")))?;
        let i = pool_of(&mut cfg, "--aux-address", ip)?;
        if cfg.ipam.config[i].auxiliary_addresses.insert(name.clone(), ip).is_some() {
            return Err(Error::invalid("--aux-address", format!("{name:?} is given twice")));
        }
    }
    for o in &c.opt {
        let (k, v) = key_value("--opt", o)?;
        cfg.options.insert(k, v);
    }
    for l in &c.label {
        let (k, v) = key_value("--label", l)?;
        cfg.labels.insert(k, v);
    }
    Ok(cfg)
}

/// Docker-style columns: each as wide as its widest cell, three spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut row = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                row.push_str(c);
            } else {
                row.push_str(&format!("{c:<width$}", width = w[i] + 3));
            }
        }
        row.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn network(ctl: &Controller, cmd: &NetworkCmd) -> Result<i32> {
    match cmd {
        NetworkCmd::Create(c) => {
            let net = ctl.create_network(network_config(c)?)?;
            println!("{}", net.id);
            Ok(0)
        }
        NetworkCmd::Ls { quiet, format } => {
            let mut nets = ctl.networks()?;
            nets.sort_by(|a, b| a.name.cmp(&b.name));
            if *quiet {
                for n in &nets {
                    println!("{}", n.id.short());
                }
                return Ok(0);
            }
            match format {
                Format::Table => {
                    let rows: Vec<Vec<String>> = nets
                        .iter()
                        .map(|n| vec![n.id.short().to_string(), n.name.clone(), n.driver.clone(), n.scope.to_string()])
                        .collect();
                    print!("{}", table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows));
                }
                Format::Json => {
                    for n in &nets {
                        let v = json!({
                            "ID": n.id.short(), "Name": n.name, "Driver": n.driver, "Scope": n.scope.to_string(),
                            "IPv6": n.enable_ipv6.to_string(), "Internal": n.internal.to_string(),
                            "Labels": n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                        });
                        println!("{v}");
                    }
                }
            }
            Ok(0)
        }
        NetworkCmd::Inspect { networks } => {
            let all = networks.iter().map(|n| ctl.inspect_network(n)).collect::<Result<Vec<_>>>()?;
            println!("{}", serde_json::to_string_pretty(&all).expect("inspect output serializes"));
            Ok(0)
        }
        NetworkCmd::Rm { networks } => {
            let mut failed = false;
            for n in networks {
                match ctl.delete_network(n) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("cnm: error: {e}");
                        failed = true;
                    }
                }
            }
            Ok(i32::from(failed))
        }
    }
}

fn sandbox_config(c: &SandboxCreate) -> SandboxConfig {
    SandboxConfig {
        name: c.name.clone(),
        netns: c.netns.clone(),
        hostname: c.hostname.clone(),
        external: false,
        dns: DnsConfig { servers: c.dns.clone(), search: c.dns_search.clone(), options: c.dns_option.clone() },
    }
}

/// `sandbox create [--network NAME]…`: the sandbox, connected to each
/// network in turn (`host`: the sandbox is the host's namespace, as
/// `docker run --network host`); a failure leaves no sandbox behind.
fn create_sandbox(
    ctl: &Controller,
    c: &SandboxCreate,
    host_netns: Option<&std::path::Path>,
) -> Result<cnm_core::Sandbox> {
    let mut cfg = sandbox_config(c);
    let host_mode = c.networks.iter().any(|n| ctl.network(n).is_ok_and(|net| net.driver == "host"));
    if host_mode {
        if c.networks.len() > 1 {
            return Err(Error::invalid("--network", "a host-mode sandbox is on no other network"));
        }
        if c.netns.is_some() {
            return Err(Error::invalid("--netns", "--network host gives the host's namespace; leave --netns out"));
        }
        // The host namespace by a path that outlives this process.
        cfg.netns = Some(host_netns.map(std::path::Path::to_path_buf).unwrap_or_else(|| "/proc/1/ns/net".into()));
    }
    for n in &c.networks {
        ctl.network(n)?;
    }
    let sb = ctl.create_sandbox(cfg)?;
    for n in &c.networks {
        if let Err(e) = ctl.connect(n, &sb.name, EndpointConfig::default()) {
            return match ctl.delete_sandbox(&sb.name) {
                Ok(()) => Err(e),
                Err(rb) => Err(Error::RollbackFailed { source: Box::new(e), rollback: Box::new(rb) }),
            };
        }
        if let Err(e) = cnm_cli::services::program_sandbox(ctl, &sb.name) {
            eprintln!("cnm: warning: services in {}: {e} (the agent tries again)", sb.name);
        }
    }
    ctl.sandbox(&sb.name)
}

/// The endpoints joined to a sandbox, in join order.
fn sandbox_endpoints(ctl: &Controller, sb: &cnm_core::Sandbox) -> Result<Vec<Endpoint>> {
    let all = ctl.endpoints(None)?;
    Ok(sb.endpoints.iter().filter_map(|r| all.iter().find(|e| e.id == r.id).cloned()).collect())
}

fn sandbox(ctl: &Controller, paths: &Paths, cmd: &SandboxCmd, host_netns: Option<&std::path::Path>) -> Result<i32> {
    match cmd {
        SandboxCmd::Create(c) => {
            // The controller writes its resolv.conf and hosts file.
            let sb = create_sandbox(ctl, c, host_netns)?;
            println!("{}", sb.netns.display());
            Ok(0)
        }
        SandboxCmd::Ls => {
            let all = ctl.endpoints(None)?;
            let rows: Vec<Vec<String>> = ctl
                .sandboxes()?
                .iter()
                .map(|s| {
                    let nets: Vec<String> = s
                        .endpoints
                        .iter()
                        .filter_map(|r| all.iter().find(|e| e.id == r.id).map(|e| e.network.clone()))
                        .collect();
                    vec![s.name.clone(), s.id.short().to_string(), s.netns.display().to_string(), nets.join(",")]
                })
                .collect();
            print!("{}", table(&["NAME", "SANDBOX ID", "NETNS", "NETWORKS"], &rows));
            Ok(0)
        }
        SandboxCmd::Inspect { sandbox } => {
            let sb = ctl.sandbox(sandbox)?;
            let files = paths.sandbox_files(&sb.name);
            let eps: Vec<_> = sandbox_endpoints(ctl, &sb)?
                .iter()
                .map(|e| {
                    json!({
                        "Network": e.network, "EndpointID": e.id, "Interface": e.ifname,
                        "MacAddress": e.mac.map(|m| m.to_string()).unwrap_or_default(),
                        "IPv4Address": e.ipv4.map(|a| a.to_string()).unwrap_or_default(),
                        "IPv6Address": e.ipv6.map(|a| a.to_string()).unwrap_or_default(),
                        "Gateway": e.gateway, "Aliases": e.aliases,
                        "Ports": e.bindings.iter().map(|b| json!({
                            "HostIp": b.host_ip.map(|a| a.to_string()).unwrap_or_else(|| "0.0.0.0".into()),
                            "HostPort": b.host_port.to_string(),
                            "ContainerPort": format!("{}/{}", b.container_port, b.protocol),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let v = json!({
                "Name": sb.name, "Id": sb.id, "NetNs": sb.netns, "Hostname": sb.hostname,
                "Dns": { "Servers": sb.dns.servers, "Search": sb.dns.search, "Options": sb.dns.options },
                "Endpoints": eps,
                "ResolvConfPath": files.join("resolv.conf"), "HostsPath": files.join("hosts"),
            });
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
            Ok(0)
        }
        SandboxCmd::Rm { sandbox } => {
            let sb = ctl.sandbox(sandbox)?;
            ctl.delete_sandbox(&sb.name)?;
            tidy_files(ctl, paths, &mut Vec::new());
            println!("{}", sb.name);
            Ok(0)
        }
    }
}

/// Removes the resolv.conf and hosts files of sandboxes the state no longer
/// has (removed, or whose creation was interrupted), then the files
/// directory and the run directory once they are empty (the controller
/// removes the rest of an empty state's run directory itself).
fn tidy_files(ctl: &Controller, paths: &Paths, repairs: &mut Vec<String>) {
    let files = paths.run.join("files");
    let Ok(live) = ctl.sandboxes() else { return };
    for e in std::fs::read_dir(&files).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !live.iter().any(|s| s.name == name) && std::fs::remove_dir_all(e.path()).is_ok() {
            repairs.push(format!("removed the files of sandbox {name:?}, which no longer exists"));
        }
    }
    let _ = std::fs::remove_dir(&files);
    let _ = std::fs::remove_dir(&paths.run);
}

fn connect(ctl: &Controller, c: &ConnectArgs) -> Result<i32> {
    let cfg = EndpointConfig {
        name: None,
        ipv4: c.ip,
        ipv6: c.ip6,
        mac: c.mac,
        aliases: c.alias.clone(),
        ports: c.publish.clone(),
        ifname: c.ifname.clone(),
    };
    let ep = ctl.connect(&c.network, &c.sandbox, cfg)?;
    // The virtual IPs of the services on that network, at once.
    if let Err(e) = cnm_cli::services::program_sandbox(ctl, &c.sandbox) {
        eprintln!("cnm: warning: services in {}: {e} (the agent tries again)", c.sandbox);
    }
    let mut line = format!("{} {}", c.sandbox, ep.ifname.as_deref().unwrap_or("-"));
    for a in [ep.ipv4, ep.ipv6].into_iter().flatten() {
        line.push_str(&format!(" {a}"));
    }
    if let Some(m) = ep.mac {
        line.push_str(&format!(" {m}"));
    }
    for b in &ep.bindings {
        let host = b.host_ip.map(|a| a.to_string()).unwrap_or_else(|| "0.0.0.0".into());
        line.push_str(&format!(" {host}:{}->{}/{}", b.host_port, b.container_port, b.protocol));
    }
    println!("{line}");
    Ok(0)
}

/// `cnm service …`. A change is programmed on this host at once (the
/// agents of every host follow it through the store).
fn service(ctl: &Controller, cmd: &ServiceCmd) -> Result<i32> {
    let apply = |ctl: &Controller| {
        let plane = cnm_nat::ServicePlane::new(ctl.host_netns().try_clone()?);
        cnm_cli::services::sync_host(ctl, &plane, false).map(|_| ())
    };
    match cmd {
        ServiceCmd::Create { networks, ports, name } => {
            let cfg = cnm_core::ServiceConfig { name: name.clone(), networks: networks.clone(), ports: ports.clone() };
            let svc = ctl.create_service(cfg)?;
            apply(ctl)?;
            println!("{}", svc.id);
        }
        ServiceCmd::Ls => {
            let rows: Vec<Vec<String>> = ctl
                .services()?
                .iter()
                .map(|s| {
                    let ports: Vec<String> = s
                        .ports
                        .iter()
                        .map(|p| {
                            format!("*:{}->{}/{} ({:?})", p.published, p.target, p.protocol, p.mode).to_lowercase()
                        })
                        .collect();
                    vec![s.id.short().to_string(), s.name.clone(), s.backends.len().to_string(), ports.join(", ")]
                })
                .collect();
            print!("{}", table(&["ID", "NAME", "BACKENDS", "PORTS"], &rows));
        }
        ServiceCmd::Inspect { services } => {
            let all = services.iter().map(|s| ctl.service(s)).collect::<Result<Vec<_>>>()?;
            println!("{}", serde_json::to_string_pretty(&all).expect("services serialize"));
        }
        ServiceCmd::Rm { services } => {
            for s in services {
                ctl.delete_service(s)?;
                println!("{s}");
            }
            apply(ctl)?;
        }
        ServiceCmd::AddBackend { service, sandbox } => {
            ctl.add_backend(service, sandbox)?;
            apply(ctl)?;
        }
        ServiceCmd::RmBackend { service, sandbox } => {
            ctl.remove_backend(service, sandbox)?;
            apply(ctl)?;
        }
    }
    Ok(0)
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Two malloc arenas for the agent's threads instead of glibc's eight per
/// CPU: its DNS workers, control thread and short-lived namespace threads
/// otherwise each keep an arena's worth of memory resident.
fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes an allocator setting; called before the
    // agent starts its threads.
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
    }
}

/// Returns the heap a reconciliation used (netlink dumps, every record of
/// the state) to the system: the agent lives long, and glibc keeps freed
/// memory otherwise (measured: 5 MB more resident after one reconcile of
/// 1000 endpoints, gone with this).
fn give_back_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it
    // has no preconditions.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

extern "C" fn on_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn stop_on_signals(what: &str) -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(SigHandler::Handler(on_signal), SaFlags::empty(), SigSet::empty());
    for s in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(s, &act) }.map_err(|e| Error::invalid(what, format!("signal handler: {e}")))?;
    }
    Ok(())
}

/// `cnm plugin`: Docker's plugin protocols until SIGINT or SIGTERM.
fn plugin(
    ctl: &Arc<Controller>,
    overlay: Option<&Arc<cnm_vxlan::overlay::OverlayDriver>>,
    name: &str,
    socket: Option<&std::path::Path>,
    lease_ttl: u64,
) -> Result<i32> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(Error::invalid("--name", format!("{name:?}: letters, digits, dot, dash and underscore only")));
    }
    stop_on_signals("plugin")?;
    ctl.restore()?;
    // With a cluster store and an overlay, dockerd's networks are overlays
    // of global scope (dockerd with --cluster-store shares them).
    let driver = if overlay.is_some() { "overlay" } else { "bridge" };
    let cfg = cnm_remote::PluginConfig { name: name.to_string(), driver: driver.into() };
    let overlay_thread = overlay.map(|d| overlay_agent(ctl, d, None, lease_ttl));
    let path = socket.map(|p| p.to_path_buf()).unwrap_or_else(|| cnm_remote::default_socket(name));
    let plugin = Arc::new(cnm_remote::Plugin::new(ctl.clone(), cfg));
    let mut server =
        cnm_remote::PluginServer::serve(plugin, &path).map_err(|e| Error::invalid("plugin", e.to_string()))?;
    println!("cnm plugin: {name} at {}; SIGINT or SIGTERM stops it", path.display());
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();
    if let Some(t) = overlay_thread {
        let _ = t.join();
    }
    // Whoever started it may have stopped reading.
    let _ = writeln!(std::io::stdout(), "cnm plugin: stopped");
    Ok(0)
}

/// The overlay's agent (its lease, and other hosts' peers as they arrive
/// through the cluster store's watch), on a thread until STOP.
fn overlay_agent(
    ctl: &Controller,
    d: &Arc<cnm_vxlan::overlay::OverlayDriver>,
    dns: Option<&Arc<cnm_dns::DnsServer>>,
    lease_ttl: u64,
) -> std::thread::JoinHandle<()> {
    let opts = cnm_vxlan::overlay::AgentOptions { ttl: Duration::from_secs(lease_ttl.max(1)), ..Default::default() };
    let mut agent = cnm_vxlan::overlay::Agent::new(d.clone(), opts);
    match ctl.host_netns().try_clone() {
        Ok(host) => agent = agent.with_vtep_filter(host),
        Err(e) => eprintln!("cnm: warning: no VXLAN source filter: {e}"),
    }
    // Other hosts' overlay endpoints resolve here too, as their
    // records arrive through the watch.
    if let Some(dns) = dns {
        let dns = dns.clone();
        agent = agent.with_peers_hook(Arc::new(move |r: &cnm_vxlan::overlay::RemoteNames| {
            let names: Vec<cnm_dns::RemoteName> = r
                .endpoints
                .iter()
                .map(|e| {
                    let ptr = format!("{}.{}", e.sandbox, r.network_name);
                    cnm_dns::RemoteName::new(e.names.clone(), e.address, ptr)
                })
                .collect();
            dns.set_remote(&r.network_id, &r.network_name, &names);
        }));
    }
    println!("cnm: overlay host {:?} at {}", d.config().host_name, d.config().advertise_addr);
    std::thread::spawn(move || agent.run(&STOP))
}

fn agent(
    ctl: &Arc<Controller>,
    paths: &Paths,
    overlay: Option<&Arc<cnm_vxlan::overlay::OverlayDriver>>,
    dns: Option<&Arc<cnm_dns::DnsServer>>,
    interval: u64,
    lease_ttl: u64,
) -> Result<i32> {
    stop_on_signals("agent")?;
    ctl.restore()?;
    // The DNS server: the control socket first (commands that create
    // sandboxes from now on get 127.0.0.11), then every existing sandbox.
    let control = match dns {
        Some(d) => {
            let c = cnm_dns::ControlSocket::serve(d.clone(), paths.dns_socket())?;
            let served = ctl.serve_names()?;
            println!("cnm agent: DNS at 127.0.0.11 in {served} sandboxes");
            Some(c)
        }
        None => None,
    };
    let overlay_thread = overlay.map(|d| overlay_agent(ctl, d, dns, lease_ttl));
    let names = dns.map(|d| {
        let d = d.clone();
        Arc::new(move |old: Option<&cnm_core::Service>, new: Option<&cnm_core::Service>| match (old, new) {
            (_, Some(s)) => d.set_service(s),
            (Some(s), None) => d.remove_service(s.id.as_str()),
            (None, None) => {}
        }) as cnm_cli::services::NamesHook
    });
    let services_thread = cnm_cli::services::agent(ctl.clone(), names, &STOP);
    println!("cnm agent: reconciling every {interval} s; SIGINT or SIGTERM stops it");
    let mut counters: BTreeMap<&str, usize> = BTreeMap::new();
    while !STOP.load(Ordering::SeqCst) {
        match ctl.reconcile() {
            Ok(r) => {
                for line in &r.repairs {
                    println!("{line}");
                }
                *counters.entry("repairs").or_default() += r.repairs.len();
            }
            Err(e) => eprintln!("cnm: error: reconcile: {e}"),
        }
        give_back_memory();
        for _ in 0..interval * 10 {
            if STOP.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    if let Some(t) = overlay_thread {
        let _ = t.join();
    }
    let _ = services_thread.join();
    // No resolv.conf may name a server that is gone: the control socket
    // closes first (new sandboxes get the upstream servers), then every
    // sandbox's resolv.conf names its upstream servers again.
    if let Some(c) = control {
        c.close();
        if let Err(e) = ctl.unserve_names() {
            eprintln!("cnm: error: {e}");
        }
    }
    if let Some(d) = dns {
        d.stop();
    }
    println!("cnm agent: stopped after {} repairs", counters.get("repairs").copied().unwrap_or(0));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn create(args: &[&str]) -> Result<NetworkConfig> {
        let cli = Cli::try_parse_from(["cnm", "network", "create"].iter().chain(args)).unwrap();
        match cli.cmd {
            Cmd::Network(NetworkCmd::Create(c)) => network_config(&c),
            _ => unreachable!(),
        }
    }

    #[test]
    fn flags_map_to_the_subnet_that_contains_them() {
        let c = create(&[
            "--subnet",
            "10.1.0.0/16",
            "--subnet",
            "10.2.0.0/24",
            "--gateway",
            "10.2.0.254",
            "--ip-range",
            "10.1.5.0/24",
            "--aux-address",
            "router=10.1.0.2",
            "-o",
            "com.docker.network.bridge.name=br0",
            "--label",
            "team=a",
            "n",
        ])
        .unwrap();
        assert_eq!(c.ipam.config[0].ip_range, Some("10.1.5.0/24".parse().unwrap()));
        assert_eq!(c.ipam.config[1].gateway, Some("10.2.0.254".parse().unwrap()));
        assert_eq!(c.ipam.config[0].auxiliary_addresses["router"], "10.1.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(c.options["com.docker.network.bridge.name"], "br0");
        assert_eq!(c.labels["team"], "a");
    }

    #[test]
    fn misplaced_flags_are_named() {
        for (args, want) in [
            (vec!["--subnet", "10.1.0.0/24", "--gateway", "10.9.0.1", "n"], "--gateway: 10.9.0.1 is in no --subnet"),
            (vec!["--subnet", "fd00::/64", "n"], "add --ipv6"),
            (vec!["-o", "novalue", "n"], "\"novalue\" is not KEY=VALUE"),
            (vec!["--subnet", "10.1.0.0/24", "--aux-address", "x=10.1.0.300", "n"], "not an IP address"),
        ] {
            let e = create(&args).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn columns_are_padded_like_docker() {
        let t = table(&["NETWORK ID", "NAME"], &[vec!["0123456789ab".into(), "web".into()]]);
        assert_eq!(t, "NETWORK ID     NAME\n0123456789ab   web\n");
    }
}
