//! The declared `rust-version` is the true MSRV: exactly the highest
//! `rust-version` among the packages the lockfile resolves for this
//! platform. (Our own code is held to it by clippy's `incompatible_msrv`
//! lint, which `cargo clippy -- -D warnings` runs against the declared
//! version; no older toolchain can be installed on the CI machine to build
//! with it.)

use std::process::Command;

fn version(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[test]
fn the_declared_rust_version_is_what_the_lockfile_needs() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    let o = Command::new(cargo)
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--locked", "--offline", "--filter-platform", &target])
        .output()
        .unwrap();
    assert!(o.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&o.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let members: Vec<&str> = meta["workspace_members"].as_array().unwrap().iter().filter_map(|m| m.as_str()).collect();
    let resolved: Vec<&str> =
        meta["resolve"]["nodes"].as_array().unwrap().iter().filter_map(|n| n["id"].as_str()).collect();
    let packages = meta["packages"].as_array().unwrap();
    let mut declared = None;
    let mut needed: Option<(Vec<u32>, String)> = None;
    for p in packages.iter().filter(|p| resolved.contains(&p["id"].as_str().unwrap())) {
        let Some(v) = p["rust_version"].as_str() else { continue };
        if members.contains(&p["id"].as_str().unwrap()) {
            declared = Some(v.to_string());
            continue;
        }
        let who = format!("{} {} needs {v}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap());
        if needed.as_ref().is_none_or(|(n, _)| version(v) > *n) {
            needed = Some((version(v), who));
        }
    }
    let declared = declared.expect("the workspace declares a rust-version");
    let (needed, who) = needed.expect("some dependency declares a rust-version");
    assert_eq!(
        version(&declared),
        needed,
        "Cargo.toml declares rust-version {declared}, but the lockfile's highest is {who}: make them equal"
    );
}
