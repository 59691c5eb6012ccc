//! Two namespaces joined by a veth pair ping each other (IPv4 and IPv6).
//! Run as root: `cargo run -p cnm-examples --example veth-ping`.

use std::process::ExitCode;

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("veth-ping: run as root (it creates network namespaces)");
        return ExitCode::FAILURE;
    }
    match cnm_examples::veth_ping::run(|s| println!("ok  {:>9.3} ms  {}", s.took.as_secs_f64() * 1e3, s.what)) {
        Ok(steps) => {
            println!("all {} steps passed; the namespaces vanish with this process", steps.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
