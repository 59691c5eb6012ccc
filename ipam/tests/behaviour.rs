//! IPAM behaviour through its public API: defaults, pools, addresses,
//! every typed error, random sequences against a model, and memory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use cnm_core::store::{Expect, KvEntry, MemStore, Store};
use cnm_core::{AddressRequest, AddressSpace, IpamDriver, PoolRequest};
use cnm_ipam::{Ipam, IpamError, IpamOptions};
use ipnet::IpNet;

fn ipam() -> Ipam {
    Ipam::new(Arc::new(MemStore::new()))
}

fn explicit(subnet: &str) -> PoolRequest {
    PoolRequest { subnet: Some(subnet.parse().unwrap()), ..Default::default() }
}

#[test]
fn default_pools_give_thousands_of_local_networks_and_skip_host_routes() {
    let i = ipam();
    let avoid: Vec<IpNet> = vec!["172.17.0.0/16".parse().unwrap(), "172.18.3.0/24".parse().unwrap()];
    let req = PoolRequest { avoid, ..Default::default() };
    let first: Vec<String> = (0..4).map(|_| i.allocate_pool(&req).unwrap().subnet.to_string()).collect();
    assert_eq!(first, vec!["172.18.0.0/24", "172.18.1.0/24", "172.18.2.0/24", "172.18.4.0/24"]);
    let mut n = 4;
    while i.allocate_pool(&req).is_ok() {
        n += 1;
    }
    // 15 /16s of 256 /24s (less 172.17/16 and one /24) plus 192.168/16's 256.
    assert_eq!(n, 14 * 256 - 1 + 256);
    let e = i.allocate_pool(&req).unwrap_err();
    assert!(matches!(e, IpamError::NoAvailablePool { .. }), "{e}");
    assert_eq!(e.kind(), cnm_core::ErrorKind::Exhausted);
    assert!(e.to_string().starts_with("no available IPv4 subnet in the Local address space"), "{e}");
    // The global space is separate and draws from 10.0.0.0/8.
    let nested = Ipam::new(Arc::new(MemStore::new()));
    nested.allocate_pool(&explicit("172.18.0.0/24")).unwrap();
    let wide = PoolRequest { avoid: vec!["172.16.0.0/12".parse().unwrap()], ..Default::default() };
    assert_eq!(nested.allocate_pool(&wide).unwrap().subnet.to_string(), "192.168.0.0/24");
    let g = i.allocate_pool(&PoolRequest { space: AddressSpace::Global, ..Default::default() }).unwrap();
    assert_eq!(g.subnet.to_string(), "10.0.0.0/24");
}

#[test]
fn ipv6_pools_come_from_one_persisted_ula() {
    let store: Arc<dyn Store> = Arc::new(MemStore::new());
    let a = Ipam::new(store.clone());
    let p1 = a.allocate_pool(&PoolRequest { v6: true, ..Default::default() }).unwrap();
    let p2 = a.allocate_pool(&PoolRequest { v6: true, ..Default::default() }).unwrap();
    let ula = a.ula_prefix().unwrap();
    assert_eq!(ula.prefix_len(), 48);
    assert_eq!(ula.addr().octets()[0], 0xfd);
    assert!(IpNet::V6(ula).contains(&p1.subnet) && IpNet::V6(ula).contains(&p2.subnet));
    assert_eq!((p1.subnet.prefix_len(), p2.subnet.prefix_len()), (64, 64));
    assert_ne!(p1.subnet, p2.subnet);
    // Another process on the same state sees the same ULA.
    assert_eq!(Ipam::new(store).ula_prefix().unwrap(), ula);
    let addr = a.allocate_address(&p1.id, AddressRequest::Any).unwrap();
    assert_eq!(
        u128::from(match addr.addr() {
            IpAddr::V6(v) => v,
            _ => unreachable!(),
        }) & 0xffff,
        2
    );
}

#[test]
fn every_error_is_typed_and_names_the_input() {
    let i = ipam();
    let p = i.allocate_pool(&explicit("10.1.1.0/24")).unwrap();

    let e = i.allocate_pool(&explicit("10.1.0.0/16")).unwrap_err();
    assert!(matches!(e, IpamError::PoolOverlap { .. }));
    assert_eq!(e.to_string(), "subnet 10.1.0.0/16 overlaps pool 10.1.1.0/24 (local-10.1.1.0-24)");

    let e = i.allocate_address(&p.id, AddressRequest::Exact("10.1.1.1".parse().unwrap())).unwrap_err();
    assert_eq!(e.to_string(), "address 10.1.1.1 of pool local-10.1.1.0-24 is in use: it is the gateway");
    i.allocate_address(&p.id, AddressRequest::Exact("10.1.1.9".parse().unwrap())).unwrap();
    let e = i.allocate_address(&p.id, AddressRequest::Exact("10.1.1.9".parse().unwrap())).unwrap_err();
    assert!(matches!(e, IpamError::AddressInUse { .. }));
    assert_eq!(e.to_string(), "address 10.1.1.9 of pool local-10.1.1.0-24 is in use: already allocated");
    let e = i.allocate_address(&p.id, AddressRequest::Exact("10.1.1.255".parse().unwrap())).unwrap_err();
    assert!(e.to_string().ends_with("it is the broadcast address"), "{e}");

    let e = i.allocate_address(&p.id, AddressRequest::Exact("10.1.2.9".parse().unwrap())).unwrap_err();
    assert!(matches!(e, IpamError::AddressOutOfRange { .. }));
    assert_eq!(e.to_string(), "address 10.1.2.9 is outside 10.1.1.0/24 of pool local-10.1.1.0-24");

    let e = i.free_address(&p.id, "10.1.1.77".parse().unwrap()).unwrap_err();
    assert!(matches!(e, IpamError::NotAllocated { .. }));
    assert_eq!(e.to_string(), "address 10.1.1.77 is not allocated in pool local-10.1.1.0-24");
    assert_eq!(e.kind(), cnm_core::ErrorKind::NotFound);

    let tiny = i.allocate_pool(&explicit("10.9.9.0/30")).unwrap();
    i.allocate_address(&tiny.id, AddressRequest::Any).unwrap();
    let e = i.allocate_address(&tiny.id, AddressRequest::Any).unwrap_err();
    assert!(matches!(e, IpamError::NoAvailableAddress { .. }));
    assert_eq!(e.to_string(), "no available address in pool local-10.9.9.0-30 (10.9.9.0/30)");

    let bad: Vec<(PoolRequest, &str)> = vec![
        (explicit("10.2.0.1/24"), "invalid pool: subnet 10.2.0.1/24: host bits set (did you mean 10.2.0.0/24?)"),
        (
            explicit("10.2.0.0/31"),
            "invalid pool: subnet 10.2.0.0/31: an IPv4 /31 or /32 leaves no room for a gateway and an address",
        ),
        (
            PoolRequest { gateway: Some("10.3.0.1".parse().unwrap()), ..explicit("10.2.0.0/24") },
            "invalid pool: gateway 10.3.0.1: not a usable address of the subnet 10.2.0.0/24",
        ),
        (
            PoolRequest { ip_range: Some("10.2.1.0/25".parse().unwrap()), ..explicit("10.2.0.0/24") },
            "invalid pool: ip-range 10.2.1.0/25: outside the subnet 10.2.0.0/24",
        ),
        (
            PoolRequest {
                aux: BTreeMap::from([("r".to_string(), "10.4.0.1".parse().unwrap())]),
                ..explicit("10.2.0.0/24")
            },
            "invalid pool: aux-address r=10.4.0.1: not a usable address of the subnet 10.2.0.0/24",
        ),
    ];
    for (req, msg) in bad {
        let e = i.allocate_pool(&req).unwrap_err();
        assert!(matches!(e, IpamError::InvalidPool { .. }), "{e}");
        assert_eq!(e.to_string(), msg);
    }
    let e = i.free_pool("local-10.200.0.0-24").unwrap_err();
    assert!(matches!(e, IpamError::PoolNotFound { .. }));

    // Compare-and-swap that always loses ends in a Conflict, not a loop.
    struct Losing(MemStore);
    impl Store for Losing {
        fn location(&self) -> String {
            "losing".into()
        }
        fn get(&self, k: &str) -> cnm_core::Result<Option<KvEntry>> {
            self.0.get(k)
        }
        fn list(&self, p: &str) -> cnm_core::Result<Vec<KvEntry>> {
            self.0.list(p)
        }
        fn put(&self, k: &str, v: &[u8], e: Expect) -> cnm_core::Result<u64> {
            // Every address claim finds the address just taken by someone else.
            if k.starts_with("leases/") {
                return Err(cnm_core::Error::AlreadyExists { what: "key", name: k.into() });
            }
            self.0.put(k, v, e)
        }
        fn delete(&self, k: &str, e: Expect) -> cnm_core::Result<()> {
            self.0.delete(k, e)
        }
    }
    let l = Ipam::new(Arc::new(Losing(MemStore::new())));
    let p = l.allocate_pool(&explicit("10.0.0.0/8")).unwrap();
    let e = l.allocate_address(&p.id, AddressRequest::Any).unwrap_err();
    assert!(matches!(e, IpamError::Conflict { .. }), "{e}");
    assert_eq!(e.to_string(), "pool local-10.0.0.0-8: gave up after 10000 concurrent updates");
    // Through the cnm-core trait the kinds carry over.
    let core: cnm_core::Error = IpamDriver::request_pool(&i, &explicit("10.1.1.0/24")).unwrap_err();
    assert_eq!(core.kind(), cnm_core::ErrorKind::Conflict);
}

#[test]
fn random_requests_and_releases_against_a_model() {
    let mut seed: u64 = 0x2545f4914f6cdd1d;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for serial in [false, true] {
        let i = Ipam::with_options(Arc::new(MemStore::new()), IpamOptions { serial, ..Default::default() });
        let req = PoolRequest {
            ip_range: Some("10.7.0.64/26".parse().unwrap()),
            aux: BTreeMap::from([
                ("a".to_string(), "10.7.0.70".parse().unwrap()),
                ("b".to_string(), "10.7.0.100".parse().unwrap()),
            ]),
            gateway: Some("10.7.0.65".parse().unwrap()),
            ..explicit("10.7.0.0/24")
        };
        let p = i.allocate_pool(&req).unwrap();
        let never: BTreeSet<IpAddr> = ["10.7.0.0", "10.7.0.255", "10.7.0.65", "10.7.0.70", "10.7.0.100"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut model: BTreeSet<IpAddr> = BTreeSet::new();
        for step in 0..5000 {
            match rnd(4) {
                0 | 1 => match i.allocate_address(&p.id, AddressRequest::Any) {
                    Ok(a) => {
                        let a = a.addr();
                        assert!(!never.contains(&a), "step {step}: handed out reserved {a}");
                        assert!(req.ip_range.unwrap().contains(&a), "step {step}: {a} outside the range");
                        assert!(model.insert(a), "step {step}: {a} handed out twice");
                    }
                    // 64 in the range less 3 reserved.
                    Err(IpamError::NoAvailableAddress { .. }) => assert_eq!(model.len(), 61),
                    Err(e) => panic!("{e}"),
                },
                2 if !model.is_empty() => {
                    let a = *model.iter().nth(rnd(model.len() as u64) as usize).unwrap();
                    i.free_address(&p.id, a).unwrap();
                    model.remove(&a);
                }
                _ => {
                    let a: IpAddr = format!("10.7.0.{}", 64 + rnd(64)).parse().unwrap();
                    match i.allocate_address(&p.id, AddressRequest::Exact(a)) {
                        Ok(got) => assert!(model.insert(got.addr()), "step {step}: exact {a} given twice"),
                        Err(IpamError::AddressInUse { .. }) => assert!(model.contains(&a) || never.contains(&a)),
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            let held: BTreeSet<IpAddr> = i.allocated(&p.id).unwrap().into_iter().collect();
            assert_eq!(held, model, "step {step}: IPAM and model disagree");
        }
    }
}
