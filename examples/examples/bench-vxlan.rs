//! Benchmark: the VXLAN codec on one core. Encapsulates and decapsulates
//! 64-byte and 1450-byte inner frames into a buffer it owns, and prints the
//! rate in Mpps and Gbit/s of inner bytes next to a `memcpy` of the same
//! bytes (the practical ceiling: encapsulation copies the frame once).
//!
//! `cargo run --release -p cnm-examples --example bench-vxlan [-- SECONDS]`

use std::hint::black_box;
use std::time::{Duration, Instant};

use cnm_vxlan::wire::{decapsulate, encapsulate, Outer, VXLAN_PORT};

fn rate(bytes: usize, per: Duration) -> (f64, f64) {
    let pps = 1.0 / per.as_secs_f64();
    (pps / 1e6, pps * bytes as f64 * 8.0 / 1e9)
}

/// Runs `f` for about `secs`, returns the median time per call over 5 slices.
fn time(secs: f64, mut f: impl FnMut()) -> Duration {
    let mut per = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed().as_secs_f64() < secs / 5.0 {
            for _ in 0..1000 {
                f();
            }
            n += 1000;
        }
        per.push(t.elapsed() / n as u32);
    }
    per.sort();
    per[2]
}

fn main() {
    let secs: f64 = std::env::args().nth(1).map(|a| a.parse().expect("SECONDS")).unwrap_or(2.0);
    let outer = Outer {
        dst_mac: [2, 0, 0, 0, 0, 2],
        src_mac: [2, 0, 0, 0, 0, 1],
        src_ip: "192.0.2.1".parse().unwrap(),
        dst_ip: "192.0.2.2".parse().unwrap(),
        dst_port: VXLAN_PORT,
        ttl: 64,
    };
    let outer6 = Outer { src_ip: "2001:db8::1".parse().unwrap(), dst_ip: "2001:db8::2".parse().unwrap(), ..outer };
    println!("one core, median of 5 slices of {secs} s in all; rates count inner bytes");
    for size in [64usize, 1450] {
        let mut inner = vec![0u8; size];
        inner[12..14].copy_from_slice(&[0x08, 0x00]);
        inner[14] = 0x45;
        let mut buf = vec![0u8; 1600];
        for (label, o) in [("IPv4", &outer), ("IPv6", &outer6)] {
            let enc = time(secs, || {
                black_box(encapsulate(black_box(&mut buf), o, 4097, black_box(&inner)).unwrap());
            });
            let n = encapsulate(&mut buf, o, 4097, &inner).unwrap();
            let dec = time(secs, || {
                black_box(decapsulate(black_box(&buf[..n])).unwrap());
            });
            let both = enc + dec;
            let (mpps, gbps) = rate(size, both);
            println!(
                "{size:>5} B inner over {label}: encapsulate {:>6.1} ns, decapsulate {:>6.1} ns, both {mpps:>6.2} Mpps {gbps:>6.2} Gbit/s",
                enc.as_secs_f64() * 1e9,
                dec.as_secs_f64() * 1e9,
            );
        }
        let mut dst = vec![0u8; size];
        let copy = time(secs, || {
            black_box(&mut dst).copy_from_slice(black_box(&inner));
        });
        let (mpps, gbps) = rate(size, copy);
        println!(
            "{size:>5} B memcpy of the inner frame: {:>6.1} ns, {mpps:>6.2} Mpps {gbps:>6.2} Gbit/s",
            copy.as_secs_f64() * 1e9
        );
    }
}
