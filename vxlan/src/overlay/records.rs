//! What the overlay keeps in the store, and where.
//!
//! Shared by every host (etcd; the `global/` prefix):
//! - `global/overlay/vni/<vni>`: which network and subnet own a VXLAN id;
//!   created with compare-and-swap, so two hosts never take the same one.
//! - `global/overlay/hosts/<node-id>`: a host's name, VTEP address and lease,
//!   written by its agent under that lease.
//! - `global/overlay/peers/<network-id>/<node-id>/<endpoint-id>`: where an
//!   endpoint lives (IP, MAC, VTEP), under its host's lease, so a dead
//!   host's endpoints vanish when the lease expires.
//!
//! On the host only (volatile, like the veths it describes):
//! - `overlay/peers/<network-id>/<endpoint-id>`: this host's own peer
//!   records, which its agent writes again under a new lease after a
//!   restart or an expired lease.

use std::net::IpAddr;

use cnm_core::store::LeaseId;
use cnm_core::{Error, Expect, Result, Store, StoreExt};
use cnm_netns::MacAddr;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The first VXLAN id handed out (Docker starts above 4096 too, leaving the
/// 802.1Q VLAN range alone).
pub const FIRST_VNI: u32 = 4097;
/// The last valid VXLAN id (24 bits).
pub const LAST_VNI: u32 = (1 << 24) - 1;

/// A host taking part in overlays, under `hosts/<node id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Its name (a label).
    pub name: String,
    /// Its VTEP (underlay) address.
    pub addr: IpAddr,
    /// The lease its records live under.
    pub lease: i64,
}

/// Where one endpoint lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The endpoint id.
    pub endpoint: String,
    /// Its address with the subnet's prefix length.
    pub ip: IpNet,
    /// Its MAC.
    pub mac: MacAddr,
    /// The node id of the host it is on.
    pub host: String,
    /// That host's name (a label).
    #[serde(default)]
    pub host_name: String,
    /// That host's VTEP address.
    pub vtep: IpAddr,
    /// The network's name (for `NAME.NETWORK` in DNS).
    #[serde(default)]
    pub network_name: String,
    /// The endpoint's sandbox (its container's name; its PTR name is
    /// `SANDBOX.NETWORK`).
    #[serde(default)]
    pub sandbox: String,
    /// The names it answers to in DNS on every host
    /// ([`cnm_core::names::endpoint_names`]).
    #[serde(default)]
    pub names: Vec<String>,
}

/// Who owns a VXLAN id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VniRecord {
    /// The network id.
    pub network: String,
    /// The subnet carried on it.
    pub subnet: IpNet,
}

/// `global/overlay/hosts/`.
pub const HOSTS: &str = "global/overlay/hosts/";
/// `global/overlay/peers/`.
pub const PEERS: &str = "global/overlay/peers/";
/// `global/overlay/vni/`.
pub const VNIS: &str = "global/overlay/vni/";
/// `overlay/peers/` (host-local).
pub const LOCAL_PEERS: &str = "overlay/peers/";

/// The key of a host record.
pub fn host_key(host: &str) -> String {
    format!("{HOSTS}{host}")
}

/// The shared key of a peer.
pub fn peer_key(network: &str, host: &str, endpoint: &str) -> String {
    format!("{PEERS}{network}/{host}/{endpoint}")
}

/// The host-local key of one of this host's peers.
pub fn local_peer_key(network: &str, endpoint: &str) -> String {
    format!("{LOCAL_PEERS}{network}/{endpoint}")
}

/// The network id a shared peer key belongs to.
pub fn network_of_peer_key(key: &str) -> Option<&str> {
    key.strip_prefix(PEERS)?.split('/').next()
}

/// Where this host's agent notes its current lease, host-local: a join
/// then publishes its endpoint in one transaction that holds only while the
/// host's record is on that lease.
pub const LOCAL_LEASE: &str = "overlay/host-lease";

/// The lease this host's agent last noted, if any.
pub fn noted_lease(store: &dyn Store) -> Result<Option<LeaseId>> {
    Ok(store.get_json::<i64>(LOCAL_LEASE)?.map(|(l, _)| LeaseId(l)))
}

/// The prefix of a network's peers.
pub fn peers_prefix(network: &str) -> String {
    format!("{PEERS}{network}/")
}

/// Peer records from entries.
pub fn decode_peers(entries: &[cnm_core::KvEntry]) -> Result<Vec<PeerRecord>> {
    entries
        .iter()
        .map(|e| serde_json::from_slice(&e.value).map_err(|err| Error::Internal(format!("record {}: {err}", e.key))))
        .collect()
}

/// This host's live lease (or an error saying the agent is not running)
/// and the peers of `network`, in one read (one etcd round trip).
pub fn host_lease_and_peers(
    store: &dyn Store,
    host: &str,
    addr: IpAddr,
    network: &str,
) -> Result<(LeaseId, Vec<PeerRecord>)> {
    let (hk, pp) = (host_key(host), peers_prefix(network));
    let mut got = store.read_many(&[cnm_core::Read::Key(&hk), cnm_core::Read::Prefix(&pp)])?.into_iter();
    let decode = |e: &cnm_core::KvEntry| -> Result<serde_json::Value> {
        serde_json::from_slice(&e.value).map_err(|err| Error::Internal(format!("record {}: {err}", e.key)))
    };
    let record = match got.next().unwrap_or_default().first() {
        Some(e) => {
            Some(serde_json::from_value::<HostRecord>(decode(e)?).map_err(|err| Error::Internal(err.to_string()))?)
        }
        None => None,
    };
    let lease = lease_of(store, host, addr, record)?;
    Ok((lease, decode_peers(&got.next().unwrap_or_default())?))
}

/// The lease of this host's record, if it is this host's.
fn lease_of(store: &dyn Store, host: &str, addr: IpAddr, record: Option<HostRecord>) -> Result<LeaseId> {
    match record {
        Some(h) if h.addr == addr => Ok(LeaseId(h.lease)),
        Some(h) => Err(clone_refused(host, &h)),
        None => Err(Error::Forbidden {
            what: format!("overlay endpoints on host {host:?}"),
            reason: format!(
                "no live host record in {}: start `cnm agent` on this host (it keeps the host's lease alive)",
                store.location()
            ),
        }),
    }
}

/// The error for a second live host with the node id `node` (a clone).
pub fn clone_refused(node: &str, other: &HostRecord) -> Error {
    Error::conflict(
        format!("overlay node id {node}"),
        format!(
            "host {:?} at {} has it and is alive; a copied machine or state directory needs an id of its own \
             (delete its node-id file)",
            other.name, other.addr
        ),
    )
}

/// Every peer of `network`, all hosts.
pub fn peers(store: &dyn Store, network: &str) -> Result<Vec<PeerRecord>> {
    Ok(store.list_json::<PeerRecord>(&format!("{PEERS}{network}/"))?.into_iter().map(|(p, _)| p).collect())
}

/// Takes one free VXLAN id for `subnet` of `network`: `wanted` exactly, or
/// the lowest free one from [`FIRST_VNI`].
pub fn allocate_vni(store: &dyn Store, network: &str, subnet: IpNet, wanted: Option<u32>) -> Result<u32> {
    let rec = VniRecord { network: network.to_string(), subnet };
    let bytes = serde_json::to_vec(&rec).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(v) = wanted {
        return match store.put(&format!("{VNIS}{v}"), &bytes, Expect::Absent) {
            Ok(_) => Ok(v),
            Err(e) if e.kind() == cnm_core::ErrorKind::AlreadyExists => {
                Err(Error::conflict(format!("VXLAN id {v}"), "already used by another overlay network"))
            }
            Err(e) => Err(e),
        };
    }
    let taken: std::collections::BTreeSet<u32> =
        store.list_keys(VNIS)?.iter().filter_map(|k| k[VNIS.len()..].parse().ok()).collect();
    let mut v = FIRST_VNI;
    while v <= LAST_VNI {
        if !taken.contains(&v) {
            match store.put(&format!("{VNIS}{v}"), &bytes, Expect::Absent) {
                Ok(_) => return Ok(v),
                // Another host took it a moment ago: try the next.
                Err(e) if e.kind() == cnm_core::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        v += 1;
    }
    Err(Error::Exhausted { what: "VXLAN ids".into(), reason: format!("all of {FIRST_VNI}..={LAST_VNI} are taken") })
}

/// Gives a VXLAN id back (only if `network` owns it).
pub fn release_vni(store: &dyn Store, network: &str, vni: u32) -> Result<()> {
    let key = format!("{VNIS}{vni}");
    match store.get_json::<VniRecord>(&key)? {
        Some((r, rev)) if r.network == network => match store.delete(&key, Expect::Revision(rev)) {
            Err(e) if e.kind() == cnm_core::ErrorKind::NotFound => Ok(()),
            other => other,
        },
        _ => Ok(()),
    }
}
