//! Every benchmark figure the README and `docs/` quote is what the
//! committed output in `docs/bench` says (`cnm-bench --docs . --check`).

use std::process::Command;

#[test]
fn quoted_benchmark_figures_match_the_committed_output() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let o = Command::new(env!("CARGO_BIN_EXE_cnm-bench")).args(["--docs", root, "--check"]).output().unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}
