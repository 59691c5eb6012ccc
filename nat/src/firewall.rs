//! [`NatFirewall`]: cnm-core's `Firewall` on nftables or iptables, working in
//! the host namespace it is given.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use cnm_core::store::{Expect, Store, StoreExt};
use cnm_core::{Firewall, FirewallNetwork, PortBinding, PortRequest};
use cnm_netns::NetNs;
use serde::{Deserialize, Serialize};

use crate::error::NatError;
use crate::nfnl::NfSocket;
use crate::state::{self, Desired, EndpointPorts};
use crate::{iptables, nft, ports};

/// How long `nft`, `iptables-restore` and their `-save` may take before
/// they are killed and the operation fails.
pub const TOOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Which tool does the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `table inet cnm` (the default): network changes as one `nft -f -`
    /// transaction, published ports as element changes over a netlink
    /// socket kept open in the host namespace.
    Nftables,
    /// `CNM-*` chains, one `iptables-restore --noflush` per family per operation.
    Iptables,
}

impl std::str::FromStr for Backend {
    type Err = NatError;
    fn from_str(s: &str) -> Result<Backend, NatError> {
        match s {
            "nftables" => Ok(Backend::Nftables),
            "iptables" => Ok(Backend::Iptables),
            _ => {
                Err(NatError::Core(cnm_core::Error::invalid("firewall", format!("{s:?} is not nftables or iptables"))))
            }
        }
    }
}

/// Masquerade, published ports and isolation, recorded in a store and
/// applied as one transaction per operation inside `host`.
pub struct NatFirewall {
    backend: Backend,
    host: NetNs,
    store: Arc<dyn Store>,
    ephemeral: std::sync::OnceLock<(u16, u16)>,
    /// The nfnetlink socket for element changes, opened in `host` on first
    /// use and kept: opening and closing one costs 12–16 ms per update.
    nfnl: Mutex<Option<NfSocket>>,
    /// Held from reading the state to applying it, so that threads sharing
    /// this firewall apply one after another, each from the latest state.
    /// (Processes are serialised by the controller's operation lock.)
    serial: Mutex<()>,
}

impl NatFirewall {
    /// A firewall working in `host` (its rules, its sysctls), recording its
    /// state in `store`.
    pub fn new(backend: Backend, host: NetNs, store: Arc<dyn Store>) -> NatFirewall {
        NatFirewall {
            backend,
            host,
            store,
            ephemeral: std::sync::OnceLock::new(),
            nfnl: Mutex::new(None),
            serial: Mutex::new(()),
        }
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The recorded state.
    pub fn desired(&self) -> Result<Desired, NatError> {
        state::load(&*self.store)
    }

    /// The host's ephemeral port range (`net.ipv4.ip_local_port_range`).
    fn ephemeral(&self) -> (u16, u16) {
        *self.ephemeral.get_or_init(|| {
            self.host
                .sysctl_get("net.ipv4.ip_local_port_range")
                .ok()
                .and_then(|s| {
                    let mut it = s.split_whitespace().filter_map(|x| x.parse::<u16>().ok());
                    Some((it.next()?, it.next()?))
                })
                .filter(|(a, b)| a <= b && *a > 0)
                .unwrap_or((32768, 60999))
        })
    }

    fn serial(&self) -> std::sync::MutexGuard<'_, ()> {
        self.serial.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_in(&self, ns: &NetNs, tool: &str, args: &[&str], input: &str) -> Result<String, NatError> {
        run_tool(ns, &self.ns_name(), tool, args, input)
    }

    /// Applies element changes in one transaction over the kept-open
    /// nfnetlink socket.
    fn apply_elements(&self, changes: &[nft::ElementChange]) -> Result<(), NatError> {
        let fail =
            |e: String| NatError::Apply { tool: "nftables (netlink)".into(), namespace: self.ns_name(), stderr: e };
        let mut g = self.nfnl.lock().unwrap_or_else(|p| p.into_inner());
        let sock = match &mut *g {
            Some(s) => s,
            None => g.insert(self.host.run(NfSocket::open)?.map_err(|e| fail(format!("opening a socket: {e}")))?),
        };
        match sock.apply(changes) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(fail(refused.to_string())),
            Err(e) => {
                // A socket that timed out may still get the late answers.
                *g = None;
                Err(fail(e.to_string()))
            }
        }
    }

    fn ns_name(&self) -> String {
        self.host.path().map(|p| p.display().to_string()).unwrap_or_else(|| "the host namespace".into())
    }

    /// Rebuilds everything this firewall owns from `d`, in one transaction
    /// (one per address family for iptables).
    fn apply_all(&self, d: &Desired) -> Result<(), NatError> {
        self.apply_all_in(&self.host, d)
    }

    fn apply_all_in(&self, ns: &NetNs, d: &Desired) -> Result<(), NatError> {
        match self.backend {
            // Nothing to own: no table either.
            Backend::Nftables if d.is_empty() => {
                self.run_in(ns, "nft", &["-f", "-"], &format!("table {0}\ndelete table {0}\n", nft::TABLE)).map(|_| ())
            }
            Backend::Nftables => self.run_in(ns, "nft", &["-f", "-"], &nft::render_ruleset(d)).map(|_| ()),
            Backend::Iptables if d.is_empty() => {
                for f in [iptables::Family::V4, iptables::Family::V6] {
                    if let Some(input) = iptables::render_removal(&self.run_in(ns, f.save(), &[], "")?) {
                        self.run_in(ns, f.restore(), &["--noflush", "-w"], &input)?;
                    }
                }
                Ok(())
            }
            Backend::Iptables => {
                for f in [iptables::Family::V4, iptables::Family::V6] {
                    let save = self.run_in(ns, f.save(), &[], "")?;
                    let missing = iptables::missing_jumps(&save, f);
                    self.run_in(ns, f.restore(), &["--noflush", "-w"], &iptables::render(d, f, &missing))?;
                }
                Ok(())
            }
        }
    }

    /// What the kernel of `ns` has of ours, as the tool lists it, in a form
    /// that does not depend on handles, counters or element order.
    fn listing(&self, ns: &NetNs) -> Result<String, NatError> {
        match self.backend {
            Backend::Nftables => match self.run_in(ns, "nft", &["-j", "list", "table", nft::TABLE], "") {
                Ok(json) => Ok(nft::normalise_listing(&json)),
                // No table at all.
                Err(_) => Ok(String::new()),
            },
            Backend::Iptables => {
                let mut out = String::new();
                for f in [iptables::Family::V4, iptables::Family::V6] {
                    out += &iptables::own_lines(&self.run_in(ns, f.save(), &[], "")?);
                }
                Ok(out)
            }
        }
    }

    /// Releases host port claims no recorded mapping holds (a publish a
    /// crash interrupted), then compares the kernel's rules with what the
    /// state renders (rendered into a scratch namespace and listed by the
    /// same tool, so both sides are in the tool's own words), and rebuilds
    /// them when they differ. Returns what it repaired.
    pub fn repair(&self) -> Result<Vec<String>, NatError> {
        let _serial = self.serial();
        let d = self.desired()?;
        for n in &d.networks {
            // A bridge that is gone has no sysctl yet; the driver's repair
            // re-creates it and its rules.
            let _ = self.route_localnet(n);
        }
        let mut repairs = Vec::new();
        for key in state::stale_claims(&*self.store)? {
            match self.store.delete(&key, Expect::Any) {
                Ok(()) => repairs.push(format!("released host port claim {key}, which no published port holds")),
                Err(e) if e.kind() == cnm_core::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        let scratch = NetNs::create_anonymous()?;
        self.apply_all_in(&scratch, &d)?;
        if self.listing(&scratch)? != self.listing(&self.host)? {
            self.apply_all(&d)?;
            repairs.push(format!("rebuilt the {} rules from the state: the kernel's differed", self.name_str()));
        }
        Ok(repairs)
    }

    fn name_str(&self) -> &'static str {
        match self.backend {
            Backend::Nftables => "nftables",
            Backend::Iptables => "iptables",
        }
    }

    /// Installs a network's rules.
    pub fn add_network(&self, net: &FirewallNetwork) -> Result<(), NatError> {
        cnm_netns::validate_ifname("firewall add_network", &net.interface)?;
        // The name is written into rule text: no character of either tool's
        // syntax may get in.
        if !net.interface.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-@".contains(&c)) {
            return Err(NatError::Core(cnm_core::Error::invalid(
                "interface",
                format!("{:?}: only letters, digits, '_', '.', '-' and '@' are allowed", net.interface),
            )));
        }
        let _serial = self.serial();
        let key = state::network_key(&net.id);
        let before = self.store.get(&key)?;
        self.store.put_json(&key, net, Expect::Any)?;
        let applied = self.route_localnet(net).and_then(|_| self.apply_all(&self.desired()?));
        if let Err(e) = applied {
            // Put the record back as it was: nothing changed in the kernel.
            let _ = match before {
                Some(b) => self.store.put(&key, &b.value, Expect::Any).map(|_| ()),
                None => self.store.delete(&key, Expect::Any),
            };
            return Err(e);
        }
        Ok(())
    }

    /// Lets the host reach published ports through 127.0.0.1: packets with a
    /// loopback source may then leave through the network's bridge (where
    /// they are masqueraded).
    fn route_localnet(&self, net: &FirewallNetwork) -> Result<(), NatError> {
        if net.subnets.iter().any(|s| s.addr().is_ipv4()) && !net.internal {
            self.host.sysctl_set(&format!("net/ipv4/conf/{}/route_localnet", net.interface), "1")?;
        }
        Ok(())
    }

    /// Removes a network's rules; gone already is fine.
    pub fn remove_network(&self, id: &str) -> Result<(), NatError> {
        let _serial = self.serial();
        match self.store.delete(&state::network_key(id), Expect::Any) {
            Err(e) if e.kind() == cnm_core::ErrorKind::NotFound => return Ok(()),
            other => other?,
        }
        self.apply_all(&self.desired()?)
    }

    /// Publishes an endpoint's ports in one transaction; returns the
    /// bindings with host ports chosen. Nothing changes on any error.
    pub fn add_ports(&self, req: &PortRequest) -> Result<Vec<PortBinding>, NatError> {
        ports::validate(req)?;
        if req.ports.is_empty() {
            return Ok(Vec::new());
        }
        let _serial = self.serial();
        let mappings = ports::resolve(&*self.store, req, self.ephemeral())?;
        let release = |ms: &[state::Mapping]| {
            for m in ms {
                let _ = state::release(&*self.store, &m.binding);
            }
        };
        let checked = self.host.run(|| ports::check_host(&mappings)).map_err(NatError::from).and_then(|r| r);
        if let Err(e) = checked {
            release(&mappings);
            return Err(e);
        }
        let key = state::ports_key(&req.endpoint);
        let mut record = match self.store.get_json::<EndpointPorts>(&key)? {
            Some((r, _)) => r,
            None => {
                EndpointPorts { endpoint: req.endpoint.clone(), network: req.network.clone(), mappings: Vec::new() }
            }
        };
        let before = record.clone();
        record.mappings.extend(mappings.iter().copied());
        if let Err(e) = self.store.put_json(&key, &record, Expect::Any) {
            release(&mappings);
            return Err(e.into());
        }
        let applied = match self.backend {
            // Without the table (someone flushed the ruleset), the elements
            // cannot go in: rebuild the whole table from the state instead.
            Backend::Nftables => self
                .apply_elements(&nft::plan_add(&mappings))
                .or_else(|_| self.desired().and_then(|d| self.apply_all(&d))),
            Backend::Iptables => self.desired().and_then(|d| self.apply_all(&d)),
        };
        if let Err(e) = applied {
            release(&mappings);
            let _ = if before.mappings.is_empty() {
                self.store.delete(&key, Expect::Any)
            } else {
                self.store.put_json(&key, &before, Expect::Any).map(|_| ())
            };
            return Err(e);
        }
        self.flush_conntrack(&mappings);
        let mut out: Vec<PortBinding> = mappings.iter().map(|m| m.binding).collect();
        out.dedup();
        Ok(out)
    }

    /// Deletes the conntrack entries of the UDP host ports of `mappings`
    /// (see the `conntrack` module). A failure leaves the rules right and
    /// is logged: old flows then run out when their clients pause.
    fn flush_conntrack(&self, mappings: &[state::Mapping]) {
        // No thread into the host namespace for TCP-only requests.
        if !mappings.iter().any(|m| m.binding.protocol == cnm_core::Protocol::Udp) {
            return;
        }
        match self.host.run(|| crate::conntrack::flush_udp(mappings)) {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(entries = n, "flushed conntrack entries of published UDP ports"),
            Ok(Err(e)) => tracing::warn!("flushing conntrack entries of published UDP ports: {e}"),
            Err(e) => tracing::warn!("flushing conntrack entries of published UDP ports: {e}"),
        }
    }

    /// Removes an endpoint's published ports; none is fine.
    pub fn remove_ports(&self, endpoint: &str) -> Result<(), NatError> {
        let _serial = self.serial();
        let key = state::ports_key(endpoint);
        let Some((record, _)) = self.store.get_json::<EndpointPorts>(&key)? else { return Ok(()) };
        self.store.delete(&key, Expect::Any)?;
        for m in &record.mappings {
            state::release(&*self.store, &m.binding)?;
        }
        match self.backend {
            Backend::Nftables => {
                // A container address belongs to one endpoint (IPAM refuses
                // overlapping pools in an address space), so no other
                // endpoint's mapping needs this record's `published`
                // entries, and nothing else has to be read.
                if self.apply_elements(&nft::plan_remove(&record.mappings, &BTreeSet::new())).is_err() {
                    // Elements already gone (someone flushed the ruleset):
                    // rebuild from the state instead.
                    self.apply_all(&self.desired()?)?;
                }
            }
            Backend::Iptables => self.apply_all(&self.desired()?)?,
        }
        self.flush_conntrack(&record.mappings);
        Ok(())
    }

    /// Rebuilds everything from the recorded state.
    pub fn reapply(&self) -> Result<(), NatError> {
        let _serial = self.serial();
        let d = self.desired()?;
        for n in &d.networks {
            // A bridge that is gone (after a reboot, before the driver
            // re-creates it) has no sysctl yet; the rules are fine without.
            let _ = self.route_localnet(n);
        }
        self.apply_all(&d)
    }
}

impl Firewall for NatFirewall {
    fn name(&self) -> &str {
        self.name_str()
    }
    fn add_network(&self, net: &FirewallNetwork) -> cnm_core::Result<()> {
        Ok(NatFirewall::add_network(self, net)?)
    }
    fn remove_network(&self, id: &str) -> cnm_core::Result<()> {
        Ok(NatFirewall::remove_network(self, id)?)
    }
    fn add_ports(&self, req: &PortRequest) -> cnm_core::Result<Vec<PortBinding>> {
        Ok(NatFirewall::add_ports(self, req)?)
    }
    fn remove_ports(&self, endpoint: &str) -> cnm_core::Result<()> {
        Ok(NatFirewall::remove_ports(self, endpoint)?)
    }
    fn reapply(&self) -> cnm_core::Result<()> {
        Ok(NatFirewall::reapply(self)?)
    }
    fn repair(&self) -> cnm_core::Result<Vec<String>> {
        Ok(NatFirewall::repair(self)?)
    }
    fn network_ids(&self) -> cnm_core::Result<Vec<String>> {
        Ok(self
            .store
            .list_keys("firewall/networks/")?
            .into_iter()
            .map(|k| k["firewall/networks/".len()..].to_string())
            .collect())
    }
    fn endpoint_ids(&self) -> cnm_core::Result<Vec<String>> {
        Ok(self
            .store
            .list_keys("firewall/ports/")?
            .into_iter()
            .map(|k| k["firewall/ports/".len()..].to_string())
            .collect())
    }
}

/// Runs `tool ARGS` in `ns` (called `ns_label` in errors) with `input` on
/// its standard input, for at most [`TOOL_TIMEOUT`]; its output.
pub(crate) fn run_tool(ns: &NetNs, ns_label: &str, tool: &str, args: &[&str], input: &str) -> Result<String, NatError> {
    let mut child = ns
        .command(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => NatError::ToolMissing {
                tool: tool.into(),
                package: if tool == "nft" { "nftables" } else { "iptables" }.into(),
            },
            _ => NatError::Apply { tool: tool.into(), namespace: ns_label.to_string(), stderr: e.to_string() },
        })?;
    let apply_err = |e: String| NatError::Apply { tool: tool.into(), namespace: ns_label.to_string(), stderr: e };
    // The input is written while the output is read (a tool that answers
    // before it has read everything cannot fill a pipe and stall us),
    // and the tool gets TOOL_TIMEOUT to finish.
    let stdin = child.stdin.take();
    let input = input.to_string();
    let writer = std::thread::spawn(move || match stdin {
        Some(mut w) => w.write_all(input.as_bytes()),
        None => Ok(()),
    });
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(TOOL_TIMEOUT) {
        Ok(r) => r.map_err(|e| apply_err(e.to_string()))?,
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = rx.recv();
            return Err(apply_err(format!("no answer within {} s; killed", TOOL_TIMEOUT.as_secs())));
        }
    };
    if let Ok(Err(e)) = writer.join() {
        // A tool that exits early closes its input: its status says why.
        if out.status.success() {
            return Err(apply_err(format!("writing its input: {e}")));
        }
    }
    if !out.status.success() {
        return Err(NatError::Apply {
            tool: format!("{tool} {}", args.join(" ")),
            namespace: ns_label.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
