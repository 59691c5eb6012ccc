//! A sandbox's resolv.conf and hosts file, as `docker run` writes them
//! (see [`ControllerBuilder::sandbox_files`](crate::ControllerBuilder::sandbox_files)).

use std::net::IpAddr;

use crate::model::{Endpoint, Sandbox};

/// resolv.conf: the `--dns*` settings when any was given; otherwise the
/// host's own, without loopback name servers (unreachable from a sandbox),
/// and with Google's public servers when none is left (Docker's rule).
pub fn resolv_conf(sb: &Sandbox, host_resolv: &str) -> String {
    let d = &sb.dns;
    let mut out = String::new();
    if d.servers.is_empty() && d.search.is_empty() && d.options.is_empty() {
        let mut servers = 0;
        for line in host_resolv.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => match words.next().and_then(|a| a.parse::<IpAddr>().ok()) {
                    Some(a) if !a.is_loopback() => {
                        out.push_str(&format!("nameserver {a}\n"));
                        servers += 1;
                    }
                    _ => {}
                },
                Some("search") | Some("options") | Some("domain") => {
                    out.push_str(line.trim());
                    out.push('\n');
                }
                _ => {}
            }
        }
        if servers == 0 {
            out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        }
        return out;
    }
    for s in &d.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !d.search.is_empty() {
        out.push_str(&format!("search {}\n", d.search.join(" ")));
    }
    if !d.options.is_empty() {
        out.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    out
}

/// The hosts file: loopback names, then the sandbox's name (and host name)
/// on each of its addresses.
pub fn hosts(sb: &Sandbox, endpoints: &[Endpoint]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    let name = sb.hostname.clone().unwrap_or_else(|| sb.name.clone());
    for e in endpoints {
        for a in [e.ipv4, e.ipv6].into_iter().flatten() {
            out.push_str(&format!("{}\t{name}\n", a.addr()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(dns: crate::DnsConfig) -> Sandbox {
        Sandbox {
            id: crate::Id::random().unwrap(),
            name: "c1".into(),
            netns: "/run/cnm/netns/c1".into(),
            owns_netns: true,
            hostname: Some("web1".into()),
            dns,
            endpoints: Vec::new(),
            created: crate::Timestamp::now(),
            state: crate::State::Ready,
        }
    }

    #[test]
    fn dns_flags_become_resolv_conf_lines() {
        let sb = sandbox(crate::DnsConfig {
            servers: vec!["10.0.0.2".parse().unwrap()],
            search: vec!["example.com".into(), "corp".into()],
            options: vec!["ndots:2".into()],
        });
        assert_eq!(
            resolv_conf(&sb, "nameserver 1.1.1.1\n"),
            "nameserver 10.0.0.2\nsearch example.com corp\noptions ndots:2\n"
        );
    }

    #[test]
    fn the_hosts_resolv_conf_is_copied_without_loopback_servers() {
        let sb = sandbox(crate::DnsConfig::default());
        let host = "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch lan\noptions edns0\n";
        assert_eq!(resolv_conf(&sb, host), "nameserver 192.0.2.53\nsearch lan\noptions edns0\n");
        assert_eq!(resolv_conf(&sb, "nameserver 127.0.0.53\n"), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
}
