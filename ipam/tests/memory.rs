//! Memory stays proportional to what is allocated, never to the prefix:
//! a million addresses in a /8, an IPv6 /48 and an IPv6 /0. Alone in its
//! test binary, with a counting allocator, so the figures are this test's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cnm_core::store::MemStore;
use cnm_core::{AddressRequest, PoolRequest};
use cnm_ipam::Ipam;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static A: Counting = Counting;

fn rss_kib() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).unwrap().parse().unwrap()
}

#[test]
fn a_million_addresses_cost_the_same_in_a_slash_8_an_ipv6_slash_48_and_slash_0() {
    const N: usize = 1_000_000;
    let mut per_alloc = Vec::new();
    for subnet in ["10.0.0.0/8", "fd00:1:2::/48", "::/0"] {
        let ipam = Ipam::new(Arc::new(MemStore::new()));
        let p =
            ipam.allocate_pool(&PoolRequest { subnet: Some(subnet.parse().unwrap()), ..Default::default() }).unwrap();
        let base = LIVE.load(Ordering::Relaxed);
        let mut addrs = Vec::with_capacity(N);
        let list = LIVE.load(Ordering::Relaxed) - base;
        for _ in 0..N {
            addrs.push(ipam.allocate_address(&p.id, AddressRequest::Any).unwrap().addr());
        }
        let full = LIVE.load(Ordering::Relaxed) - base - list;
        // Every other one released: the worst case for runs of addresses.
        for a in addrs.iter().step_by(2) {
            ipam.free_address(&p.id, *a).unwrap();
        }
        let half = LIVE.load(Ordering::Relaxed) - base - list;
        for a in addrs.iter().skip(1).step_by(2) {
            ipam.free_address(&p.id, *a).unwrap();
        }
        let empty = LIVE.load(Ordering::Relaxed) - base - list;
        println!(
            "{subnet}: {N} allocated: {} MiB ({} B each); {} left in {} runs: {} MiB; all released: {} KiB; RSS {} MiB",
            full >> 20,
            full / N,
            N / 2,
            N / 2,
            half >> 20,
            empty >> 10,
            rss_kib() >> 10
        );
        assert!(ipam.allocated(&p.id).unwrap().is_empty());
        assert!(full / N < 300, "{subnet}: {} bytes per allocation", full / N);
        assert!(half < full, "{subnet}: releasing half must free memory");
        assert!(empty < 64 << 10, "{subnet}: {empty} bytes left after releasing everything");
        per_alloc.push(full / N);
    }
    // The prefix size does not matter: a /0 costs what a /8 costs.
    let (min, max) = (per_alloc.iter().min().unwrap(), per_alloc.iter().max().unwrap());
    assert!(max - min <= 64, "bytes per allocation differ with the prefix: {per_alloc:?}");
}
