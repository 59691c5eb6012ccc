//! A sandbox's resolv.conf and hosts file, as `docker run` writes them
//! (see [`ControllerBuilder::sandbox_files`](crate::ControllerBuilder::sandbox_files)).

use std::net::IpAddr;

use crate::model::{Endpoint, Sandbox};

/// The name servers a sandbox's queries go to: its `--dns` servers, or
/// the host's without loopback ones (unreachable from a sandbox), or
/// Google's public servers when none is left (Docker's rule). An embedded
/// name server forwards to these.
pub fn upstream_servers(sb: &Sandbox, host_resolv: &str) -> Vec<IpAddr> {
    if !sb.dns.servers.is_empty() {
        return sb.dns.servers.clone();
    }
    let host: Vec<IpAddr> = host_lines(host_resolv, "nameserver")
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<IpAddr>().ok())
        .filter(|a| !a.is_loopback())
        .collect();
    if host.is_empty() {
        return vec![IpAddr::from([8, 8, 8, 8]), IpAddr::from([8, 8, 4, 4])];
    }
    host
}

/// The host resolv.conf's lines that start with `keyword`.
fn host_lines<'a>(host_resolv: &'a str, keyword: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    host_resolv.lines().map(str::trim).filter(move |l| l.split_whitespace().next() == Some(keyword))
}

/// resolv.conf, as `docker run` writes it: the name servers of
/// [`upstream_servers`], or only `127.0.0.11` when `embedded` (an embedded
/// name server answers there and forwards to them); the `--dns-search`
/// domains (otherwise the host's `search`/`domain`); the `--dns-option`s
/// (otherwise the host's `options`), with `ndots:0` added when `embedded`
/// and no `ndots` is given, as Docker does.
pub fn resolv_conf(sb: &Sandbox, host_resolv: &str, embedded: bool) -> String {
    let d = &sb.dns;
    let mut out = String::new();
    if embedded {
        out.push_str(&format!("nameserver {}\n", crate::names::EMBEDDED_DNS));
    } else {
        for s in upstream_servers(sb, host_resolv) {
            out.push_str(&format!("nameserver {s}\n"));
        }
    }
    if !d.search.is_empty() {
        out.push_str(&format!("search {}\n", d.search.join(" ")));
    } else {
        for l in host_lines(host_resolv, "search").chain(host_lines(host_resolv, "domain")) {
            out.push_str(l);
            out.push('\n');
        }
    }
    let mut options: Vec<String> = if d.options.is_empty() {
        host_lines(host_resolv, "options").flat_map(|l| l.split_whitespace().skip(1)).map(String::from).collect()
    } else {
        d.options.clone()
    };
    if embedded && !options.iter().any(|o| o.starts_with("ndots:")) {
        options.push("ndots:0".into());
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
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

/// The system's host name (`/proc/sys/kernel/hostname`), `localhost` when
/// it cannot be read.
pub fn system_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
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
            external: false,
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
            resolv_conf(&sb, "nameserver 1.1.1.1\n", false),
            "nameserver 10.0.0.2\nsearch example.com corp\noptions ndots:2\n"
        );
        assert_eq!(
            resolv_conf(&sb, "nameserver 1.1.1.1\n", true),
            "nameserver 127.0.0.11\nsearch example.com corp\noptions ndots:2\n"
        );
    }

    #[test]
    fn the_hosts_resolv_conf_is_copied_without_loopback_servers() {
        let sb = sandbox(crate::DnsConfig::default());
        let host = "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch lan\noptions edns0\n";
        assert_eq!(resolv_conf(&sb, host, false), "nameserver 192.0.2.53\nsearch lan\noptions edns0\n");
        assert_eq!(resolv_conf(&sb, "nameserver 127.0.0.53\n", false), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
        // Embedded: the servers become upstreams, ndots:0 is added.
        assert_eq!(resolv_conf(&sb, host, true), "nameserver 127.0.0.11\nsearch lan\noptions edns0 ndots:0\n");
        assert_eq!(upstream_servers(&sb, host), vec!["192.0.2.53".parse::<IpAddr>().unwrap()]);
        // --dns-search alone keeps the host's servers.
        let search_only = sandbox(crate::DnsConfig { search: vec!["corp".into()], ..Default::default() });
        assert_eq!(resolv_conf(&search_only, host, false), "nameserver 192.0.2.53\nsearch corp\noptions edns0\n");
    }
}
