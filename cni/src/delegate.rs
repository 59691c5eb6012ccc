//! Delegated IPAM: the plugin the configuration's `ipam.type` names, found
//! in `CNI_PATH` and run with the same environment and configuration, as
//! the specification's delegation rules say.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::env::CniEnv;
use crate::error::{CniError, Error, Result};

/// Finds `plugin` in `CNI_PATH`.
pub fn find(plugin: &str, env: &CniEnv) -> Result<PathBuf> {
    env.path.iter().map(|d| d.join(plugin)).find(|p| p.is_file()).ok_or_else(|| {
        let dirs: Vec<String> = env.path.iter().map(|d| d.display().to_string()).collect();
        Error::config("ipam.type", format!("no plugin {plugin:?} in CNI_PATH ({})", dirs.join(":")))
    })
}

/// Runs `plugin` for `command` (`ADD`, `DEL`, `CHECK`) with `stdin`; its
/// result (nothing for `DEL` and `CHECK`), or its error.
pub fn run(plugin: &str, command: &str, env: &CniEnv, stdin: &[u8]) -> Result<Option<Value>> {
    let path = find(plugin, env)?;
    let mut child = Command::new(&path)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::config("ipam.type", format!("running {}: {e}", path.display())))?;
    // A plugin that exits without reading its input closes the pipe: its
    // answer says why.
    let _ = child.stdin.take().expect("piped").write_all(stdin);
    let out = child
        .wait_with_output()
        .map_err(|e| Error::config("ipam.type", format!("waiting for {}: {e}", path.display())))?;
    if !out.status.success() {
        let err: Option<CniError> = serde_json::from_slice(&out.stdout).ok();
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(match err {
            Some(e) => Error::Delegate { plugin: plugin.into(), code: e.code, msg: e.msg, details: e.details },
            None => Error::Delegate {
                plugin: plugin.into(),
                code: 999,
                msg: format!("{} {stderr}", out.status),
                details: String::new(),
            },
        });
    }
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::Decode { what: format!("the answer of IPAM plugin {plugin:?}"), reason: e.to_string() })?;
    Ok(Some(v))
}
