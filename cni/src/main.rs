//! `cnm-cni`: the CNI plugin binary. Reads the configuration on stdin and
//! the `CNI_*` variables; prints the result, or the error with its code
//! (and exits 1).

use std::io::{Read, Write};

use cnm_cni::{cmd, CniEnv};

/// The version errors are written in: the configuration's, when it has one.
fn error_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(|s| s.as_str()).map(String::from))
        .unwrap_or_else(|| cnm_cni::SUPPORTED_VERSIONS.last().unwrap().to_string())
}

fn main() {
    let mut stdin = Vec::new();
    let env = CniEnv::from_vars(|k| std::env::var(k).ok());
    // Every command comes with input (VERSION with `{"cniVersion": …}`).
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let out = env.and_then(|env| cmd::run(&env, &stdin));
    let mut stdout = std::io::stdout();
    match out {
        Ok(Some(v)) => {
            let _ = writeln!(stdout, "{v}");
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(stdout, "{}", serde_json::to_string(&e.to_cni(&error_version(&stdin))).unwrap());
            std::process::exit(1);
        }
    }
}
