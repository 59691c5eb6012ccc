//! Benchmark: IPAM allocations and releases per second, with an in-memory
//! store and with the file store, on a /16 filled to 99% and on an IPv6 /64,
//! and the cost of one allocation at 1%, 50% and 99% full.
//!
//! `cargo run --release -p cnm-examples --example bench-ipam [-- RUNS]`

use std::sync::Arc;
use std::time::Instant;

use cnm_core::store::{FileStore, MemStore, Store};
use cnm_core::{AddressRequest, PoolRequest};
use cnm_ipam::Ipam;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

struct Run {
    alloc_per_s: f64,
    release_per_s: f64,
    /// Nanoseconds per allocation around 1%, 50% and 99% full.
    at: [f64; 3],
}

/// Takes `fill` addresses with `alloc`, timing everything (and windows at
/// 1%, 50% and 99% full), then gives them back with `release`.
fn measure<A: Copy>(fill: usize, mut alloc: impl FnMut() -> A, mut release: impl FnMut(A)) -> Run {
    let marks = [fill / 100, fill / 2, fill * 99 / 100];
    let window = (fill / 100).clamp(1, 500);
    let mut at = [0f64; 3];
    let mut addrs = Vec::with_capacity(fill);
    let t = Instant::now();
    let mut w = Instant::now();
    for n in 0..fill {
        for (i, m) in marks.iter().enumerate() {
            if n == *m {
                w = Instant::now();
            }
            if n == m + window {
                at[i] = w.elapsed().as_nanos() as f64 / window as f64;
            }
        }
        addrs.push(alloc());
    }
    let taken = t.elapsed();
    if at[2] == 0.0 {
        at[2] = w.elapsed().as_nanos() as f64 / (fill - marks[2]).max(1) as f64;
    }
    let t = Instant::now();
    for a in addrs {
        release(a);
    }
    let released = t.elapsed();
    Run { alloc_per_s: fill as f64 / taken.as_secs_f64(), release_per_s: fill as f64 / released.as_secs_f64(), at }
}

/// Through an `Ipam` on `store`.
fn run(store: Arc<dyn Store>, subnet: &str, fill: usize) -> Run {
    let ipam = Ipam::new(store);
    let p = ipam.allocate_pool(&PoolRequest { subnet: Some(subnet.parse().unwrap()), ..Default::default() }).unwrap();
    measure(
        fill,
        || ipam.allocate_address(&p.id, AddressRequest::Any).unwrap().addr(),
        |a| ipam.free_address(&p.id, a).unwrap(),
    )
}

/// The allocator alone (what every store pays on top of).
fn run_allocator(subnet: &str, fill: usize) -> Run {
    use cnm_ipam::{Leases, PoolDef};
    let subnet: ipnet::IpNet = subnet.parse().unwrap();
    let def = PoolDef {
        id: "bench".into(),
        space: cnm_core::AddressSpace::Local,
        subnet,
        ip_range: None,
        gateway: match subnet.network() {
            std::net::IpAddr::V4(a) => std::net::IpAddr::V4((u32::from(a) + 1).into()),
            std::net::IpAddr::V6(a) => std::net::IpAddr::V6((u128::from(a) + 1).into()),
        },
        aux: Default::default(),
        owner: "bench".into(),
    };
    let leases = std::cell::RefCell::new(Leases::default());
    measure(
        fill,
        || leases.borrow_mut().allocate(&def, AddressRequest::Any, false).unwrap(),
        |a| leases.borrow_mut().release(&def, a).unwrap(),
    )
}

fn report(label: &str, runs: Vec<Run>) {
    let a = median(runs.iter().map(|r| r.alloc_per_s).collect());
    let r = median(runs.iter().map(|r| r.release_per_s).collect());
    let at: Vec<f64> = (0..3).map(|i| median(runs.iter().map(|r| r.at[i]).collect())).collect();
    println!(
        "{label:<44} {:>12.0} {:>12.0} {:>9.0} {:>9.0} {:>9.0}   ({} runs, medians)",
        a,
        r,
        at[0],
        at[1],
        at[2],
        runs.len()
    );
}

fn main() {
    let runs: usize = std::env::args().nth(1).map(|a| a.parse().expect("RUNS must be a number")).unwrap_or(5);
    // tmpfs, like /run, where the controller keeps leases.
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
    let dir = base.join(format!("cnm-bench-ipam-{}", std::process::id()));
    println!(
        "{:<44} {:>12} {:>12} {:>9} {:>9} {:>9}",
        "workload", "alloc/s", "release/s", "ns @1%", "ns @50%", "ns @99%"
    );
    let fill16 = 65_533 * 99 / 100;
    for (label, subnet, fill) in
        [("/16 to 99%", "10.40.0.0/16", fill16), ("IPv6 /64, 65k addresses", "fd00:40::/64", 65_536)]
    {
        report(&format!("allocator alone, {label}"), (0..runs).map(|_| run_allocator(subnet, fill)).collect());
        report(
            &format!("memory store, {label}"),
            (0..runs).map(|_| run(Arc::new(MemStore::new()), subnet, fill)).collect(),
        );
        let file_runs = (0..runs.min(3))
            .map(|i| {
                let d = dir.join(format!("{i}"));
                let r = run(Arc::new(FileStore::open_volatile(&d).unwrap()), subnet, fill);
                std::fs::remove_dir_all(&d).unwrap();
                r
            })
            .collect();
        report(&format!("file store ({}), {label}", base.display()), file_runs);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
