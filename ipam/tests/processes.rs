//! Several OS processes sharing one state directory, and processes killed
//! with SIGKILL while allocating: no address is ever handed out twice.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use cnm_core::driver::{DriverContext, NetworkDriver};
use cnm_core::join::{JoinInfo, JoinRequest};
use cnm_core::store::{FileStore, SplitStore, Store};
use cnm_core::{
    AddressRequest, Controller, Endpoint, EndpointConfig, Network, NetworkConfig, PoolRequest, SandboxConfig,
};
use cnm_ipam::Ipam;

/// Removes the test's directory when dropped, also after a panic.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmpdir(tag: &str) -> (PathBuf, Cleanup) {
    let d = std::env::temp_dir().join(format!("cnm-ipam-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    (d.clone(), Cleanup(d))
}

fn store(dir: &Path) -> Arc<dyn Store> {
    let durable: Arc<dyn Store> = Arc::new(FileStore::open(dir.join("lib")).unwrap());
    let volatile: Arc<dyn Store> = Arc::new(FileStore::open_volatile(dir.join("run")).unwrap());
    Arc::new(SplitStore::new(durable, volatile, cnm_core::VOLATILE_PREFIXES.iter().map(|s| s.to_string()).collect()))
}

/// A driver that needs addresses but touches no kernel.
struct Addresses;

impl NetworkDriver for Addresses {
    fn name(&self) -> &str {
        "addresses"
    }
    fn create_network(&self, _: &DriverContext<'_>, _: &mut Network) -> cnm_core::Result<()> {
        Ok(())
    }
    fn delete_network(&self, _: &DriverContext<'_>, _: &Network) -> cnm_core::Result<()> {
        Ok(())
    }
    fn join(
        &self,
        _: &DriverContext<'_>,
        _: &Network,
        _: &mut Endpoint,
        _: &JoinRequest<'_>,
    ) -> cnm_core::Result<JoinInfo> {
        Ok(JoinInfo::no_interface())
    }
    fn leave(
        &self,
        _: &DriverContext<'_>,
        _: &Network,
        _: &Endpoint,
        _: Option<&cnm_netns::NetNs>,
    ) -> cnm_core::Result<()> {
        Ok(())
    }
}

fn controller(dir: &Path) -> Controller {
    let s = store(dir);
    Controller::builder()
        .store(s.clone())
        .ipam(Arc::new(Ipam::new(s)))
        .driver(Arc::new(Addresses))
        .run_dir(dir.join("ops"))
        .build()
        .unwrap()
}

fn child(mode: &str, dir: &Path, name: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", "child_entry", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CNM_CHILD", mode)
        .env("CNM_DIR", dir)
        .env("CNM_NAME", name)
        // The parent's namespace, by a path that outlives the child.
        .env("CNM_NETNS", cnm_netns::testing::own_netns_path())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .stdout(Stdio::piped());
    c
}

fn wait_for_go(dir: &Path) {
    cnm_netns::testing::ready_then_wait_for_go(dir);
}

/// Not a test: the body of the child processes the tests below start.
#[test]
#[ignore = "helper: run as a child process by the other tests in this file"]
fn child_entry() {
    let (Ok(mode), Ok(dir), Ok(name)) =
        (std::env::var("CNM_CHILD"), std::env::var("CNM_DIR"), std::env::var("CNM_NAME"))
    else {
        return;
    };
    let dir = PathBuf::from(dir);
    let out = std::io::stdout();
    match mode.as_str() {
        "allocate" => {
            let ipam = Ipam::new(store(&dir));
            wait_for_go(&dir);
            for _ in 0..1000 {
                match ipam.allocate_address(&name, AddressRequest::Any) {
                    Ok(a) => writeln!(out.lock(), "ADDR {}", a.addr()).unwrap(),
                    Err(e) => writeln!(out.lock(), "ERR {e}").unwrap(),
                }
            }
        }
        "allocate-forever" => {
            let ipam = Ipam::new(store(&dir));
            loop {
                let a = ipam.allocate_address(&name, AddressRequest::Any).unwrap();
                // Printed only once the allocation is in the store.
                writeln!(out.lock(), "ADDR {}", a.addr()).unwrap();
                out.lock().flush().unwrap();
            }
        }
        "connect" => {
            let ctl = controller(&dir);
            wait_for_go(&dir);
            let netns =
                std::env::var_os("CNM_NETNS").map(PathBuf::from).unwrap_or_else(cnm_netns::testing::own_netns_path);
            let sb = SandboxConfig { name: name.clone(), netns: Some(netns), ..Default::default() };
            match ctl.create_sandbox(sb).and_then(|_| ctl.connect("shared", &name, EndpointConfig::default())) {
                Ok(ep) => writeln!(out.lock(), "ADDR {}", ep.ipv4.unwrap().addr()).unwrap(),
                Err(e) => writeln!(out.lock(), "ERR {e}").unwrap(),
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// The `ADDR` lines of a child's output (the harness prefixes the first
/// with "test child_entry ... ").
fn addresses(text: &str) -> (Vec<IpAddr>, Vec<String>) {
    let mut addrs = Vec::new();
    let mut errors = Vec::new();
    for line in text.lines() {
        if let Some(i) = line.find("ADDR ") {
            addrs.push(line[i + 5..].trim().parse().unwrap());
        } else if let Some(i) = line.find("ERR ") {
            errors.push(line[i..].to_string());
        }
    }
    (addrs, errors)
}

fn race(dir: &Path, mode: &str, names: &[String]) -> Vec<String> {
    let kids: Vec<_> = names.iter().map(|n| child(mode, dir, n).spawn().unwrap()).collect();
    cnm_netns::testing::release_when_ready(dir, kids.len());
    kids.into_iter().map(|c| String::from_utf8_lossy(&c.wait_with_output().unwrap().stdout).into_owned()).collect()
}

#[test]
fn eight_processes_allocate_8000_distinct_addresses_from_one_pool() {
    let (dir, _cleanup) = tmpdir("eight");
    let pool = Ipam::new(store(&dir))
        .allocate_pool(&PoolRequest { subnet: Some("10.20.0.0/16".parse().unwrap()), ..Default::default() })
        .unwrap();
    let outputs = race(&dir, "allocate", &vec![pool.id.clone(); 8]);
    let mut all = BTreeSet::new();
    for text in &outputs {
        let (addrs, errors) = addresses(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(addrs.len(), 1000);
        for a in addrs {
            assert!(all.insert(a), "{a} handed out twice");
        }
    }
    assert_eq!(all.len(), 8000);
    let held: BTreeSet<IpAddr> = Ipam::new(store(&dir)).allocated(&pool.id).unwrap().into_iter().collect();
    assert_eq!(held, all, "the store holds exactly what was handed out");
}

#[test]
fn sigkill_while_allocating_never_hands_an_address_out_twice() {
    let (dir, _cleanup) = tmpdir("crash");
    let pool = Ipam::new(store(&dir))
        .allocate_pool(&PoolRequest { subnet: Some("10.30.0.0/16".parse().unwrap()), ..Default::default() })
        .unwrap();
    let mut seen = BTreeSet::new();
    let mut rng: u64 = std::process::id() as u64 * 2654435761;
    for round in 0..60 {
        let mut c = child("allocate-forever", &dir, &pool.id).spawn().unwrap();
        let mut reader = BufReader::new(c.stdout.take().unwrap());
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        // Kill after a random number of completed allocations, mid-flight.
        let wanted = 1 + (rng >> 33) % 40;
        let mut got = Vec::new();
        let mut line = String::new();
        while (got.len() as u64) < wanted && reader.read_line(&mut line).unwrap() > 0 {
            got.extend(addresses(&line).0);
            line.clear();
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
        got.extend(addresses(&rest).0);
        c.wait().unwrap();
        // The state loads, holds everything that was reported, and nothing
        // reported was reported before.
        let held: BTreeSet<IpAddr> = Ipam::new(store(&dir)).allocated(&pool.id).unwrap().into_iter().collect();
        for a in got {
            assert!(seen.insert(a), "round {round}: {a} handed out twice");
            assert!(held.contains(&a), "round {round}: {a} was reported but is not in the state");
        }
        assert!(held.len() >= seen.len());
    }
    println!("60 kills, {} addresses handed out, none twice", seen.len());
}

#[test]
fn sixteen_processes_connecting_through_the_controller_get_distinct_addresses() {
    let (dir, _cleanup) = tmpdir("connect");
    controller(&dir).create_network(NetworkConfig::new("shared", "addresses")).unwrap();
    let names: Vec<String> = (0..16).map(|i| format!("c{i}")).collect();
    let outputs = race(&dir, "connect", &names);
    let mut all = BTreeSet::new();
    for text in &outputs {
        let (addrs, errors) = addresses(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(addrs.len(), 1, "{text}");
        assert!(all.insert(addrs[0]), "{} given twice", addrs[0]);
    }
    let ctl = controller(&dir);
    assert_eq!(ctl.endpoints(Some("shared")).unwrap().len(), 16);
    let net = ctl.network("shared").unwrap();
    assert_eq!(net.pools[0].subnet.to_string(), "172.17.0.0/24");
    assert!(all.iter().all(|a| net.pools[0].subnet.contains(a) && *a != net.pools[0].gateway.unwrap().addr()));
    // Nothing to repair: no leaked address, no half-done endpoint.
    assert_eq!(ctl.reconcile().unwrap().repairs, Vec::<String>::new());
}
