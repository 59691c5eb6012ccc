//! The runtime's side of a call: the `CNI_*` environment variables.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the container.
    Add,
    /// Detach it (idempotent).
    Del,
    /// Check it is as `ADD` left it.
    Check,
    /// The versions spoken.
    Version,
    /// Whether the plugin can serve (1.1).
    Status,
    /// Remove what no valid attachment uses (1.1).
    Gc,
}

impl Command {
    fn parse(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(Error::env(
                    "CNI_COMMAND",
                    format!("{other:?} is not ADD, DEL, CHECK, VERSION, STATUS or GC"),
                ))
            }
        })
    }
}

/// The `CNI_*` variables of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for VERSION, STATUS, GC).
    pub container_id: String,
    /// `CNI_NETNS` (may be empty for DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`: `KEY=VALUE` pairs separated by `;`.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`: where delegated plugins are.
    pub path: Vec<PathBuf>,
}

/// The specification's container id: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn valid_container_id(id: &str) -> bool {
    id.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && id.bytes().all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

impl CniEnv {
    /// Reads the variables through `get` (`std::env::var` in the binary),
    /// checking those the command needs.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv> {
        let var = |n: &str| get(n).unwrap_or_default();
        let command = match get("CNI_COMMAND") {
            Some(c) => Command::parse(&c)?,
            None => return Err(Error::env("CNI_COMMAND", "not set")),
        };
        let container_id = var("CNI_CONTAINERID");
        let ifname = var("CNI_IFNAME");
        let netns = Some(var("CNI_NETNS")).filter(|s| !s.is_empty()).map(PathBuf::from);
        let path = var("CNI_PATH").split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect();
        let args = parse_args(&var("CNI_ARGS"))?;
        let env = CniEnv { command, container_id, netns, ifname, args, path };
        if matches!(command, Command::Add | Command::Del | Command::Check) {
            if env.container_id.is_empty() {
                return Err(Error::env("CNI_CONTAINERID", "not set"));
            }
            if !valid_container_id(&env.container_id) {
                return Err(Error::env(
                    "CNI_CONTAINERID",
                    format!("{:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*", env.container_id),
                ));
            }
            cnm_core::model::validate_ifname("CNI_IFNAME", &env.ifname).map_err(|_| {
                Error::env("CNI_IFNAME", format!("{:?} is not an interface name (1 to 15 bytes)", env.ifname))
            })?;
        }
        if matches!(command, Command::Add | Command::Check) && env.netns.is_none() {
            return Err(Error::env("CNI_NETNS", "not set"));
        }
        Ok(env)
    }

    /// A `CNI_ARGS` value.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn parse_args(s: &str) -> Result<Vec<(String, String)>> {
    s.split(';')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::env("CNI_ARGS", format!("{p:?} is not KEY=VALUE"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<CniEnv> {
        CniEnv::from_vars(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn add_needs_its_variables() {
        let ok =
            [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/run/netns/x"), ("CNI_IFNAME", "eth0")];
        let e = env(&ok).unwrap();
        assert_eq!((e.command, e.ifname.as_str()), (Command::Add, "eth0"));
        for drop in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_COMMAND"] {
            let vars: Vec<_> = ok.iter().copied().filter(|(k, _)| *k != drop).collect();
            let err = env(&vars).unwrap_err();
            assert_eq!(err.code(), 4, "{drop}: {err}");
            assert!(err.to_string().contains(drop), "{err}");
        }
        let bad = [("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "-x"), ("CNI_NETNS", "/n"), ("CNI_IFNAME", "eth0")];
        assert_eq!(env(&bad).unwrap_err().code(), 4);
    }

    #[test]
    fn del_takes_an_empty_netns_and_args_are_pairs() {
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", ""),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
        ])
        .unwrap();
        assert_eq!(e.netns, None);
        assert_eq!(e.arg("K8S_POD_NAME"), Some("web"));
        assert_eq!(env(&[("CNI_COMMAND", "VERSION")]).unwrap().command, Command::Version);
        assert_eq!(env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code(), 4);
    }
}
