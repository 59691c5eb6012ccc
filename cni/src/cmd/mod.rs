//! The commands: `ADD`, `DEL`, `CHECK`, `VERSION`, `STATUS` and `GC`, each
//! from the configuration and the environment to the JSON a runtime reads.

mod add;
mod check;
mod del;

use cnm_core::Controller;
use cnm_netns::NetNs;
use serde_json::{json, Value};

use crate::config::{NetConf, SUPPORTED_VERSIONS};
use crate::env::{CniEnv, Command};
use crate::error::Result;

/// The host namespace a call works in, and how it gets rid of veths.
pub struct Host {
    ns: NetNs,
    park: bool,
    bridges: std::cell::RefCell<Vec<std::sync::Arc<cnm_bridge::BridgeDriver>>>,
}

impl Host {
    /// The caller's namespace. `park`: leaves park veths for
    /// [`cnm_bridge::delete_parked`] instead of deleting each (see
    /// [`cnm_bridge::BridgeDriver::parking`]).
    pub fn current(park: bool) -> Result<Host> {
        Ok(Host::new(NetNs::current()?, park))
    }

    /// Another namespace as the host (an embedder's, a test's).
    pub fn new(ns: NetNs, park: bool) -> Host {
        Host { ns, park, bridges: Default::default() }
    }

    /// Whether a leave of this call parked a veth that is not deleted yet.
    pub fn parked(&self) -> bool {
        self.bridges.borrow().iter().any(|b| b.parked())
    }

    fn controller(&self, conf: &NetConf) -> Result<Controller> {
        let bridge = std::sync::Arc::new(match self.park {
            true => cnm_bridge::BridgeDriver::parking(),
            false => cnm_bridge::BridgeDriver::one_shot(),
        });
        self.bridges.borrow_mut().push(bridge.clone());
        crate::stack::controller_with(conf, &self.ns, bridge)
    }
}

/// cnm's sandbox for a container.
pub fn sandbox_name(container_id: &str) -> String {
    format!("cni-{container_id}")
}

/// cnm's endpoint for a container's interface on a network: the container
/// id and the interface name (its characters outside cnm's name set as
/// `_`).
pub fn endpoint_name(container_id: &str, ifname: &str) -> String {
    let ifname: String =
        ifname.chars().map(|c| if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' }).collect();
    format!("{container_id}-{ifname}")
}

/// Runs one call: `stdin` is the network configuration. The JSON to print,
/// if any. Veths go at once.
pub fn run(env: &CniEnv, stdin: &[u8]) -> Result<Option<Value>> {
    run_in(env, stdin, &Host::current(false)?)
}

/// [`run`] in `host`.
pub fn run_in(env: &CniEnv, stdin: &[u8], host: &Host) -> Result<Option<Value>> {
    if env.command == Command::Version {
        return Ok(Some(version(stdin)));
    }
    let conf = NetConf::parse(stdin)?;
    conf.validate()?;
    match env.command {
        Command::Add => add::add(env, &conf, stdin, host).map(Some),
        Command::Del => del::del(env, &conf, stdin, host).map(|_| None),
        Command::Check => check::check(env, &conf, stdin, host).map(|_| None),
        Command::Status => check::status(&conf, host).map(|_| None),
        Command::Gc => del::gc(&conf, host).map(|_| None),
        Command::Version => unreachable!("answered above"),
    }
}

/// `VERSION`: the versions spoken, in the version asked for (the latest
/// when none or an unknown one is asked).
fn version(stdin: &[u8]) -> Value {
    let asked = serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(String::from))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| SUPPORTED_VERSIONS.last().unwrap().to_string());
    json!({"cniVersion": asked, "supportedVersions": SUPPORTED_VERSIONS})
}
