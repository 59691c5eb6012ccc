//! `cnm demo`: the README's main demonstration. Everything happens inside
//! namespaces this process creates (a host namespace and an "outside" one
//! routed to it) and a scratch directory it removes, also on Ctrl-C;
//! nothing of the machine's own network changes. Each step prints what it
//! did, what it checked and how long it took; the exit status says whether
//! every check passed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cnm_bridge::BridgeDriver;
use cnm_core::drivers::{HostDriver, NullDriver};
use cnm_core::{Controller, EndpointConfig, Error, NetworkConfig, Result, SandboxConfig, SplitStore, Store};
use cnm_dns::{DnsServer, ServerConfig};
use cnm_ipam::Ipam;
use cnm_nat::{Backend, NatFirewall};
use cnm_netns::{AddrFlags, Handle, LinkAdd, NetNs, VethPeer};

use crate::args::{Cli, FirewallArg};
use cnm_cli::probe;

const HOST_IP: &str = "198.51.100.1";
const OUTSIDE_IP: &str = "198.51.100.2";

/// Held while a step runs; the Ctrl-C watcher takes it before cleaning
/// up, so no step creates anything after the cleanup.
static BUSY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Prints steps and counts failures.
struct Steps {
    failed: usize,
    passed: usize,
}

impl Steps {
    /// Runs one step: `f` returns what it did and checked, or why it failed.
    fn step(&mut self, f: impl FnOnce() -> std::result::Result<String, String>) -> bool {
        let _busy = BUSY.lock().unwrap_or_else(|p| p.into_inner());
        let t = Instant::now();
        let r = f();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match r {
            Ok(what) => {
                self.passed += 1;
                println!("  [ok]   {ms:>7.1} ms  {what}");
                true
            }
            Err(why) => {
                self.failed += 1;
                println!("  [FAIL] {ms:>7.1} ms  {why}");
                false
            }
        }
    }
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Whether `tool` is on the PATH (or in an sbin directory root has).
fn have(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path.split(':').chain(["/usr/sbin", "/sbin"]).any(|d| Path::new(d).join(tool).is_file());
    found
}

/// Detaches every mount under `dir` and removes it.
fn remove_scratch(dir: &Path) {
    NetNs::unmount_all_below(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// Cleans up and exits on SIGINT/SIGTERM: the namespaces this process made
/// die with it; the scratch directory's mounts must be removed by hand.
fn cleanup_on_signal(dir: PathBuf) -> Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    // Every thread started from now on inherits the blocked mask, so only
    // this watcher ever sees the signal.
    set.thread_block().map_err(|e| Error::invalid("demo", format!("blocking signals: {e}")))?;
    std::thread::spawn(move || {
        if let Ok(sig) = set.wait() {
            // Never released: the process ends here.
            let _busy = BUSY.lock().unwrap_or_else(|p| p.into_inner());
            remove_scratch(&dir);
            eprintln!("cnm demo: {sig:?}: stopped; everything it made is gone");
            std::process::exit(130);
        }
    });
    Ok(())
}

/// Runs the demonstration; `Ok(true)` when every check passed.
pub fn run(cli: &Cli) -> Result<bool> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(Error::Forbidden {
            what: "cnm demo".into(),
            reason: "it creates network namespaces: run it as root".into(),
        });
    }
    let backend = match cli.firewall {
        FirewallArg::Nftables if !have("nft") => {
            return Err(Error::invalid(
                "--firewall nftables",
                "nft not found: install it with `apt-get install nftables`",
            ))
        }
        FirewallArg::Iptables if !have("iptables-restore") => {
            return Err(Error::invalid(
                "--firewall iptables",
                "iptables-restore not found: install it with `apt-get install iptables`",
            ))
        }
        FirewallArg::Nftables => Some(Backend::Nftables),
        FirewallArg::Iptables => Some(Backend::Iptables),
        FirewallArg::None => None,
    };
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let dir = base.join(format!("cnm-demo-{}", std::process::id()));
    cleanup_on_signal(dir.clone())?;
    println!("cnm demo: everything below happens in namespaces this process creates; nothing of this machine's own network changes.");
    let mut st = Steps { failed: 0, passed: 0 };
    let result = demo(&mut st, &dir, backend);
    let _busy = BUSY.lock().unwrap_or_else(|p| p.into_inner());
    remove_scratch(&dir);
    if let Err(e) = result {
        st.failed += 1;
        println!("  [FAIL] stopped: {e}");
    }
    if st.failed == 0 {
        println!("cnm demo: all {} checks passed; everything it made is gone.", st.passed);
    } else {
        println!("cnm demo: {} of {} checks failed; everything it made is gone.", st.failed, st.failed + st.passed);
    }
    Ok(st.failed == 0)
}

fn controller(dir: &Path, host: &NetNs, backend: Option<Backend>) -> Result<(Controller, Arc<DnsServer>)> {
    let (state, run) = (dir.join("state"), dir.join("run"));
    let store: Arc<dyn Store> = Arc::new(SplitStore::open_state_dirs(&state, &run)?);
    // The sandboxes' upstream name server is in the outside namespace
    // (nothing answers there): no query can reach this machine's resolvers.
    let resolv = dir.join("host-resolv.conf");
    std::fs::write(&resolv, format!("nameserver {OUTSIDE_IP}\n"))
        .map_err(|e| Error::invalid("demo", format!("{}: {e}", resolv.display())))?;
    let dns = DnsServer::start(ServerConfig::new(host.try_clone()?).host_resolv_conf(&resolv))?;
    let mut b = Controller::builder()
        .store(store.clone())
        .run_dir(&run)
        .sandbox_files(run.join("files"))
        .host_resolv_conf(&resolv)
        .name_server(dns.clone())
        .host_netns(host.try_clone()?)
        .predefined_networks(cnm_core::DefaultBridge::default())
        .ipam(Arc::new(Ipam::new(store.clone())))
        .driver(Arc::new(BridgeDriver::new()))
        .driver(Arc::new(HostDriver))
        .driver(Arc::new(NullDriver));
    if let Some(backend) = backend {
        b = b.firewall(Arc::new(NatFirewall::new(backend, host.try_clone()?, store)));
    }
    Ok((b.build()?, dns))
}

fn demo(st: &mut Steps, dir: &Path, backend: Option<Backend>) -> Result<()> {
    // The host and outside namespaces, and the link between them.
    let host = NetNs::create_anonymous()?;
    let outside = NetNs::create_anonymous()?;
    let ok = st.step(|| {
        let h = Handle::open(&host).map_err(s)?;
        let up = h.link_add(&LinkAdd::veth("uplink", VethPeer::new("eth0").netns(&outside)).up()).map_err(s)?;
        h.addr_add(up.index, format!("{HOST_IP}/24").parse().unwrap(), AddrFlags::empty()).map_err(s)?;
        let o = Handle::open(&outside).map_err(s)?;
        let eth0 = up.peer_index.filter(|i| *i != 0).ok_or("no peer index")?;
        o.link_set_up("lo").map_err(s)?;
        o.link_set_up(eth0).map_err(s)?;
        o.addr_add(eth0, format!("{OUTSIDE_IP}/24").parse().unwrap(), AddrFlags::empty()).map_err(s)?;
        probe::icmp_echo(&outside, HOST_IP.parse().unwrap(), Duration::from_secs(3)).map_err(s)?;
        Ok(format!(
            "a host namespace and an outside namespace linked to it ({HOST_IP} <-> {OUTSIDE_IP}); they ping each other"
        ))
    });
    if !ok {
        return Err(Error::invalid("demo", "the test host could not be set up"));
    }
    let (ctl, _dns) = controller(dir, &host, backend)?;
    // The sandboxes' upstream name server: "no such name", at once.
    probe::dns_nxdomain(&outside).map_err(|e| Error::invalid("demo", e.to_string()))?;

    let mut bridge = String::new();
    st.step(|| {
        let net = ctl.create_network(NetworkConfig::new("demo", "bridge").subnet("172.30.0.0/24")).map_err(s)?;
        bridge = format!("br-{}", net.id.short());
        let l = Handle::open(&host).map_err(s)?.link_get(bridge.as_str()).map_err(s)?;
        if !l.up {
            return Err(format!("bridge {bridge} is down"));
        }
        Ok(format!("network \"demo\" (bridge 172.30.0.0/24): bridge {bridge} is up with gateway 172.30.0.1"))
    });

    let mut sandboxes: Vec<(String, NetNs, String)> = Vec::new();
    for (name, ports) in [("c1", vec!["8080:80", "5353:53/udp"]), ("c2", vec![])] {
        st.step(|| {
            let sb = ctl.create_sandbox(SandboxConfig { name: name.into(), ..Default::default() }).map_err(s)?;
            let cfg =
                EndpointConfig { ports: ports.iter().map(|p| p.parse().unwrap()).collect(), ..Default::default() };
            let ep = ctl.connect("demo", name, cfg).map_err(s)?;
            let ns = NetNs::open(&sb.netns).map_err(s)?;
            let ip = ep.ipv4.ok_or("no IPv4 address")?;
            let published: Vec<String> =
                ep.bindings.iter().map(|b| format!("{}->{}/{}", b.host_port, b.container_port, b.protocol)).collect();
            let mac = ep.mac.map(|m| m.to_string()).unwrap_or_default();
            sandboxes.push((name.to_string(), ns, ip.addr().to_string()));
            Ok(format!(
                "sandbox {name} connected: eth0 {ip} mac {mac}{}",
                if published.is_empty() { String::new() } else { format!(", published {}", published.join(" ")) }
            ))
        });
    }
    if sandboxes.len() == 2 {
        let (c1, c2) = (&sandboxes[0], &sandboxes[1]);
        for (from, to) in [(c1, c2), (c2, c1)] {
            st.step(|| {
                let rtt = probe::icmp_echo(&from.1, to.2.parse().unwrap(), Duration::from_secs(3))
                    .map_err(|e| format!("{} -> {}: {e}", from.0, to.0))?;
                Ok(format!(
                    "{} pings {} ({}) over the bridge: reply in {:.2} ms",
                    from.0,
                    to.0,
                    to.2,
                    rtt.as_secs_f64() * 1e3
                ))
            });
        }
        st.step(|| {
            let files = ctl.sandbox_files_dir(&c1.0);
            let out = cnm_cli::exec::command(&c1.1, files.as_deref(), "getent")
                .args(["hosts", &c2.0])
                .output()
                .map_err(|e| format!("getent: {e}"))?;
            let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !line.starts_with(&format!("{} ", c2.2)) {
                return Err(format!("getent hosts {} in {} said {line:?}, not {}", c2.0, c1.0, c2.2));
            }
            Ok(format!(
                "{} finds {} by name: `cnm exec {} -- getent hosts {}` says \"{line}\" (embedded DNS at 127.0.0.11)",
                c1.0, c2.0, c1.0, c2.0
            ))
        });
        if backend.is_some() {
            probe::tcp_who_am_i(&outside, 7000).map_err(|e| Error::invalid("demo", e.to_string()))?;
            st.step(|| {
                let seen = probe::tcp_ask(&c1.1, SocketAddr::new(OUTSIDE_IP.parse().unwrap(), 7000)).map_err(s)?;
                if seen != HOST_IP {
                    return Err(format!("the outside saw {seen:?}, not the host's {HOST_IP}"));
                }
                Ok(format!(
                    "c1 reaches a TCP server in the outside namespace, which sees the host's {HOST_IP} (masquerade)"
                ))
            });
            probe::tcp_who_am_i(&c1.1, 80).map_err(|e| Error::invalid("demo", e.to_string()))?;
            probe::udp_who_am_i(&c1.1, 53).map_err(|e| Error::invalid("demo", e.to_string()))?;
            st.step(|| {
                let seen = probe::tcp_ask(&outside, SocketAddr::new(HOST_IP.parse().unwrap(), 8080)).map_err(s)?;
                if seen != OUTSIDE_IP {
                    return Err(format!("the server in c1 saw {seen:?}, not the client's {OUTSIDE_IP}"));
                }
                Ok(format!("published TCP port {HOST_IP}:8080 -> c1:80 answers a client in the outside namespace; the server sees the client's real address {OUTSIDE_IP}"))
            });
            st.step(|| {
                let seen = probe::udp_ask(&outside, SocketAddr::new(HOST_IP.parse().unwrap(), 5353)).map_err(s)?;
                if seen != OUTSIDE_IP {
                    return Err(format!("the server in c1 saw {seen:?}, not the client's {OUTSIDE_IP}"));
                }
                Ok(format!("published UDP port {HOST_IP}:5353 -> c1:53 answers too, from {OUTSIDE_IP}"))
            });
        } else {
            println!("  [skip]            masquerade and published ports: --firewall none installs no rules");
        }
    }

    predefined(st, &ctl, &host)?;

    // IPAM and inspect.
    st.step(|| {
        let inspect = ctl.inspect_network("demo").map_err(s)?;
        let v = serde_json::to_value(&inspect).map_err(s)?;
        let cfg = &v["IPAM"]["Config"][0];
        let containers = v["Containers"].as_object().ok_or("no Containers")?;
        let gw = ctl.network("demo").map_err(s)?.gateway_v4().map(|g| g.to_string());
        if containers.len() != 2 || cfg["Subnet"] != "172.30.0.0/24" || gw.as_deref() != Some("172.30.0.1/24") {
            return Err(format!("unexpected inspect output (gateway {gw:?}): {v}"));
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&v)
                .map_err(s)?
                .lines()
                .map(|l| format!("           {l}\n"))
                .collect::<String>()
        );
        Ok("IPAM gave 172.30.0.0/24 with gateway .1 and two addresses; `network inspect` (above) has Docker's shape"
            .into())
    });

    // Leave, then tear everything down.
    if let Some((_, c2, _)) = sandboxes.get(1) {
        st.step(|| {
            ctl.disconnect("demo", "c2").map_err(s)?;
            let h = Handle::open(c2).map_err(s)?;
            if h.link_list().map_err(s)?.iter().any(|l| l.name == "eth0" && l.lower_up) {
                return Err("c2's eth0 still has a carrier after disconnect".into());
            }
            // The driver deletes detached veths in batches, within a second.
            let t = Instant::now();
            while h.link_list().map_err(s)?.len() > 1 {
                if t.elapsed() > Duration::from_secs(1) {
                    return Err("c2's eth0 still exists after 1 s".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(format!(
                "disconnect c2: its eth0 lost its carrier at once and was deleted {:.0} ms later; loopback stays",
                t.elapsed().as_secs_f64() * 1e3
            ))
        });
    }
    st.step(|| {
        for sb in ["c1", "c2", "d1", "d2", "h1", "n1"] {
            ctl.delete_sandbox(sb).map_err(s)?;
        }
        ctl.delete_network("demo").map_err(s)?;
        let refused = ctl.delete_network("bridge").map_err(|e| e.to_string()).err().unwrap_or_default();
        if !refused.contains("bridge is a pre-defined network and cannot be removed") {
            return Err(format!("removing the predefined bridge was not refused as Docker refuses it: {refused:?}"));
        }
        drop(ctl);
        let left: Vec<String> =
            Handle::open(&host).map_err(s)?.link_list().map_err(s)?.into_iter().map(|l| l.name).collect();
        if left != ["lo", "uplink", "cnm0"] {
            return Err(format!("links left in the host namespace: {left:?}"));
        }
        Ok("removed sandboxes and network demo (`network rm bridge` is refused, as Docker refuses it): the host \
            namespace has lo, uplink and cnm0, kept like docker0"
            .into())
    });
    Ok(())
}

/// Docker's predefined networks, as a first `docker run` meets them:
/// `bridge`, `host` and `none` exist without being created.
fn predefined(st: &mut Steps, ctl: &Controller, host: &NetNs) -> Result<()> {
    st.step(|| {
        let names: Vec<String> =
            ctl.networks().map_err(s)?.into_iter().map(|n| format!("{} ({})", n.name, n.driver)).collect();
        let want = ["bridge (bridge)", "demo (bridge)", "host (host)", "none (null)"];
        if names != want {
            return Err(format!("network ls has {names:?}, not {want:?}"));
        }
        Ok("predefined networks: bridge, host and none exist without being created (Docker's `network ls`)".into())
    });
    let mut on_bridge: Vec<(NetNs, String)> = Vec::new();
    for name in ["d1", "d2"] {
        st.step(|| {
            let sb = ctl.create_sandbox(SandboxConfig { name: name.into(), ..Default::default() }).map_err(s)?;
            let ep = ctl.connect("bridge", name, EndpointConfig::default()).map_err(s)?;
            let ip = ep.ipv4.ok_or("no IPv4 address")?.addr().to_string();
            on_bridge.push((NetNs::open(&sb.netns).map_err(s)?, ip.clone()));
            Ok(format!("sandbox {name} on the default bridge (cnm0, 172.17.0.0/16), as `docker run` puts it: {ip}"))
        });
    }
    if on_bridge.len() == 2 {
        st.step(|| {
            probe::icmp_echo(&on_bridge[0].0, on_bridge[1].1.parse().unwrap(), Duration::from_secs(3)).map_err(s)?;
            let out = cnm_cli::exec::command(&on_bridge[0].0, ctl.sandbox_files_dir("d1").as_deref(), "getent")
                .args(["hosts", "d2"])
                .output()
                .map_err(|e| format!("getent: {e}"))?;
            if out.status.success() {
                return Err(format!("d1 resolves d2 on the default bridge: {}", String::from_utf8_lossy(&out.stdout)));
            }
            Ok("d1 pings d2 by address; it cannot resolve d2 by name: no names on the default bridge, as in Docker"
                .into())
        });
        st.step(|| {
            let v = serde_json::to_value(ctl.inspect_network("bridge").map_err(s)?).map_err(s)?;
            let containers = v["Containers"].as_object().ok_or("no Containers")?;
            let mut lines = Vec::new();
            for c in containers.values() {
                for k in ["Name", "EndpointID", "MacAddress", "IPv4Address"] {
                    if c[k].as_str().is_none_or(str::is_empty) {
                        return Err(format!("inspect bridge: a container without {k}: {c}"));
                    }
                }
                lines.push(format!("{} {} {}", c["Name"], c["MacAddress"], c["IPv4Address"]));
            }
            lines.sort();
            if containers.len() != 2 || v["Options"]["com.docker.network.bridge.default_bridge"] != "true" {
                return Err(format!("unexpected `network inspect bridge`: {v}"));
            }
            Ok(format!("`network inspect bridge` lists both containers: {}", lines.join(", ")))
        });
    }
    st.step(|| {
        let hostns_path = host.proc_path();
        let sb = SandboxConfig { name: "h1".into(), netns: Some(hostns_path.clone()), ..Default::default() };
        ctl.create_sandbox(sb).map_err(s)?;
        ctl.connect("host", "h1", EndpointConfig::default()).map_err(s)?;
        // A server started in h1 listens in the host's own namespace.
        probe::tcp_who_am_i(&NetNs::open(&hostns_path).map_err(s)?, 9090).map_err(s)?;
        let seen = probe::tcp_ask(host, SocketAddr::new(HOST_IP.parse().unwrap(), 9090)).map_err(s)?;
        Ok(format!("host mode: a server in sandbox h1 on port 9090 answers the host at {HOST_IP}:9090 (it saw {seen})"))
    });
    st.step(|| {
        let sb = ctl.create_sandbox(SandboxConfig { name: "n1".into(), ..Default::default() }).map_err(s)?;
        ctl.connect("none", "n1", EndpointConfig::default()).map_err(s)?;
        let ns = NetNs::open(&sb.netns).map_err(s)?;
        let names: Vec<String> =
            Handle::open(&ns).map_err(s)?.link_list().map_err(s)?.iter().map(|l| l.name.clone()).collect();
        if names != ["lo"] {
            return Err(format!("n1 has {names:?}, not just lo"));
        }
        // The same address answers d1 (on the default bridge), not n1.
        let gw: std::net::IpAddr = HOST_IP.parse().unwrap();
        if let Some((d1, _)) = on_bridge.first() {
            probe::icmp_echo(d1, gw, Duration::from_secs(3)).map_err(|e| format!("d1 -> {gw}: {e}"))?;
        }
        if probe::icmp_echo(&ns, gw, Duration::from_secs(1)).is_ok() {
            return Err(format!("n1 reached {gw}"));
        }
        Ok(format!("none mode: sandbox n1 has loopback only and reaches nothing ({gw} answers d1, not n1)"))
    });
    Ok(())
}
