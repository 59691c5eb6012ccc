//! `cnm-cni`: the CNI plugin binary. Reads the configuration on stdin and
//! the `CNI_*` variables; prints the result, or the error with its code
//! (and exits 1).
//!
//! A container's veth is not deleted on its `DEL`'s path: the kernel charges
//! each deletion an RCU grace period (about 20 ms), which would be most of
//! the call. `DEL` parks it (down, its container end renamed out of the
//! way) and, after answering, starts this binary again, detached, to delete
//! what is parked (`CNM_CNI_DELETE_PARKED`): one request for all veths
//! parked meanwhile.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use cnm_cni::cmd::{self, Host};
use cnm_cni::CniEnv;

/// Set in the environment of the detached process that deletes parked veths.
const DELETE_PARKED: &str = "CNM_CNI_DELETE_PARKED";

/// The version errors are written in: the configuration's, when it has one.
fn error_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(|s| s.as_str()).map(String::from))
        .unwrap_or_else(|| cnm_cni::SUPPORTED_VERSIONS.last().unwrap().to_string())
}

/// Deletes parked veths now.
fn delete_parked() {
    match cnm_netns::NetNs::current() {
        Ok(ns) => {
            if let Err(e) = cnm_bridge::delete_parked(&ns) {
                eprintln!("cnm-cni: deleting parked veths: {e}");
            }
        }
        Err(e) => eprintln!("cnm-cni: deleting parked veths: {e}"),
    }
}

/// Starts the detached deletion (no descriptor of the runtime's kept, its
/// own process group); deletes at once if it cannot start.
fn delete_parked_later() {
    let started = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .env(DELETE_PARKED, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
    });
    if started.is_err() {
        delete_parked();
    }
}

fn main() {
    if std::env::var_os(DELETE_PARKED).is_some() {
        delete_parked();
        return;
    }
    let mut stdin = Vec::new();
    let env = CniEnv::from_vars(|k| std::env::var(k).ok());
    // Every command comes with input (VERSION with `{"cniVersion": …}`).
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let host = Host::current(true);
    let out = env.and_then(|env| match &host {
        Ok(h) => cmd::run_in(&env, &stdin, h),
        Err(e) => Err(cnm_cni::Error::NotAvailable(e.to_string())),
    });
    let mut stdout = std::io::stdout();
    let code = match out {
        Ok(Some(v)) => {
            let _ = writeln!(stdout, "{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            let _ = writeln!(stdout, "{}", serde_json::to_string(&e.to_cni(&error_version(&stdin))).unwrap());
            1
        }
    };
    let _ = stdout.flush();
    if host.is_ok_and(|h| h.parked()) {
        delete_parked_later();
    }
    std::process::exit(code);
}
