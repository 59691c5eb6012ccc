//! Where etcd is and how to talk to it: its members, the key prefix, TLS
//! and credentials, from a URL (`etcd://h1:2379,h2:2379/prefix/`,
//! `etcds://…` for TLS) and the files and names given beside it.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use crate::error::Error;

/// etcd's client port when a URL names none.
pub const DEFAULT_PORT: u16 = 2379;

/// The files of a TLS connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed the members' certificates (PEM); the system's
    /// bundle when `None`.
    pub ca: Option<PathBuf>,
    /// A client certificate chain (PEM), for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key: Option<PathBuf>,
}

/// etcd's user/password authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"…").finish()
    }
}

/// One member: its name as given (the TLS server name) and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// `host` as the URL gives it.
    pub host: String,
    /// The port.
    pub port: u16,
    /// What `host:port` resolved to.
    pub addr: SocketAddr,
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host.contains(':') {
            true => write!(f, "[{}]:{}", self.host, self.port),
            false => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// How to reach an etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// The members, tried in order; requests move to the next when one
    /// cannot answer.
    pub members: Vec<Member>,
    /// Where keys go (`/cnm/` by default).
    pub prefix: String,
    /// TLS (`etcds://`), with the files to use.
    pub tls: Option<TlsFiles>,
    /// User and password, when etcd's authentication is on.
    pub credentials: Option<Credentials>,
}

impl EtcdConfig {
    /// Parses `etcd://HOST[:PORT][,HOST[:PORT]…][/PREFIX/]` (also `http://`),
    /// or `etcds://…` (also `https://`) for TLS with the system's CAs until
    /// [`EtcdConfig::tls`] says otherwise.
    pub fn from_url(url: &str) -> Result<EtcdConfig, Error> {
        let bad = |reason: String| Error::BadUrl { url: url.to_string(), reason };
        let (rest, tls) = if let Some(r) = url.strip_prefix("etcd://").or_else(|| url.strip_prefix("http://")) {
            (r, false)
        } else if let Some(r) = url.strip_prefix("etcds://").or_else(|| url.strip_prefix("https://")) {
            (r, true)
        } else {
            return Err(bad("must start with etcd:// (or http://), or etcds:// (or https://) for TLS".into()));
        };
        let (hosts, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/cnm/"),
        };
        let members = hosts.split(',').map(|h| member(h).map_err(&bad)).collect::<Result<Vec<_>, _>>()?;
        if members.is_empty() {
            return Err(bad("no member".into()));
        }
        let mut prefix = if path == "/" { "/cnm/".to_string() } else { path.to_string() };
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(EtcdConfig { members, prefix, tls: tls.then(TlsFiles::default), credentials: None })
    }

    /// With these TLS files (and so TLS, whatever the URL said).
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// With etcd authentication as `user`.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some(Credentials { user: user.into(), password: password.into() });
        self
    }

    /// The members as `h1:2379,h2:2379`.
    pub fn members_text(&self) -> String {
        self.members.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }
}

/// `host[:port]`, `[v6]:port`; resolved now, so a bad name fails at once.
fn member(text: &str) -> Result<Member, String> {
    if text.is_empty() {
        return Err("an empty member in the list".into());
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(|| format!("{text:?}: unclosed ["))?;
        (h, after.strip_prefix(':'))
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (text, None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("{text:?}: {p:?} is not a port"))?,
        None => DEFAULT_PORT,
    };
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host:?} has no address"))?;
    Ok(Member { host: host.to_string(), port, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_members_prefix_and_tls() {
        let c = EtcdConfig::from_url("etcd://10.0.0.1:2379,10.0.0.2,[fd00::3]:2390/k8s").unwrap();
        assert_eq!(c.members_text(), "10.0.0.1:2379,10.0.0.2:2379,[fd00::3]:2390");
        assert_eq!(c.prefix, "/k8s/");
        assert!(c.tls.is_none());
        let c = EtcdConfig::from_url("etcds://127.0.0.1:2379").unwrap();
        assert_eq!((c.prefix.as_str(), c.tls.clone()), ("/cnm/", Some(TlsFiles::default())));
        for bad in ["ftp://x", "etcd://", "etcd://a:99999", "etcd://1.2.3.4:1,", "etcd://no-such-host.invalid:1"] {
            let e = EtcdConfig::from_url(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        let creds = format!("{:?}", c.credentials("u", "secret").credentials);
        assert!(!creds.contains("secret"), "{creds}");
    }
}
