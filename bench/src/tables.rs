//! The Markdown tables the README and `docs/benchmarks.md` quote, made
//! from a run's output directory (`summary.json`, `samples.json`,
//! `datapath.json`), so that no quoted figure is typed by hand:
//! `cnm-bench --tables docs/bench` prints them, and a test checks that the
//! documents hold exactly what it prints.

use std::path::Path;

use serde_json::Value;

/// The systems, in column order, with their column titles.
const SYSTEMS: [(&str, &str); 4] =
    [("cnm", "cnm"), ("netavark", "netavark"), ("cni", "CNI plugins"), ("floor", "floor (`ip -batch`, `nft -f`)")];

/// A run's output, read back.
pub struct Run {
    summary: Vec<Value>,
    samples: Vec<Value>,
    datapath: Vec<Value>,
    /// The DNS workload (`dns.json`), when the run had it.
    dns: Vec<Value>,
    /// The dockerd workload (`docker.json`), when the run had it.
    docker: Vec<Value>,
    /// The CNI workload (`cni.json`), when the run had it.
    cni: Vec<Value>,
    /// The services workload (`services.json`), when the run had it.
    services: Vec<Value>,
}

fn read(dir: &Path, name: &str) -> Result<Vec<Value>, String> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    v.as_array().cloned().ok_or_else(|| format!("{}: not a JSON array", path.display()))
}

/// A duration in ms, to three significant digits.
fn ms(v: f64) -> String {
    match v {
        v if v >= 10_000.0 => format!("{:.1} s", v / 1e3),
        v if v >= 1_000.0 => format!("{:.2} s", v / 1e3),
        v if v >= 100.0 => format!("{v:.0} ms"),
        v if v >= 10.0 => format!("{v:.1} ms"),
        v => format!("{v:.2} ms"),
    }
}

/// A ratio to three significant digits at most.
fn ratio(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}×")
    } else {
        format!("{v:.1}×")
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

impl Run {
    /// Reads a run's output directory.
    pub fn load(dir: &Path) -> Result<Run, String> {
        Ok(Run {
            summary: read(dir, "summary.json")?,
            samples: read(dir, "samples.json")?,
            datapath: read(dir, "datapath.json")?,
            dns: if dir.join("dns.json").exists() { read(dir, "dns.json")? } else { Vec::new() },
            docker: if dir.join("docker.json").exists() { read(dir, "docker.json")? } else { Vec::new() },
            cni: if dir.join("cni.json").exists() { read(dir, "cni.json")? } else { Vec::new() },
            services: if dir.join("services.json").exists() { read(dir, "services.json")? } else { Vec::new() },
        })
    }

    /// Medians over the rounds of the DNS workload for `system` at the
    /// size measured with several rounds (the largest size has one).
    fn dns_median(&self, system: &str, field: &str, largest: bool) -> Option<f64> {
        let sizes: Vec<u64> = self.dns.iter().filter_map(|r| r["containers"].as_u64()).collect();
        let size = if largest { sizes.iter().max()? } else { sizes.iter().min()? };
        median(
            self.dns
                .iter()
                .filter(|r| r["system"] == system && r["containers"].as_u64() == Some(*size))
                .filter_map(|r| r[field].as_f64())
                .collect(),
        )
    }

    /// The DNS workload: cnm's embedded DNS (the agent) against
    /// aardvark-dns, queried by dnsperf from inside a container.
    pub fn dns(&self) -> String {
        let sizes: Vec<u64> = self.dns.iter().filter_map(|r| r["containers"].as_u64()).collect();
        let (small, large) = (sizes.iter().min().copied().unwrap_or(0), sizes.iter().max().copied().unwrap_or(0));
        let get = |s: &str, f: &str, l: bool| self.dns_median(s, f, l);
        // The anchor's value with its ratio to cnm's.
        let pair = |f: &str, l: bool, fmt: &dyn Fn(f64) -> String| -> (String, String) {
            let (c, a) = (get("cnm", f, l), get("aardvark-dns", f, l));
            let anchor = match (c, a) {
                (Some(c), Some(a)) if c > 0.0 => format!("{} ({} cnm's)", fmt(a), ratio(a / c)),
                (_, Some(a)) => fmt(a),
                _ => String::new(),
            };
            (c.map(fmt).unwrap_or_default(), anchor)
        };
        let qps = |v: f64| {
            let n = v.round() as u64;
            if n >= 1000 {
                format!("{},{:03}/s", n / 1000, n % 1000)
            } else {
                format!("{n}/s")
            }
        };
        let us = |v: f64| if v >= 1000.0 { format!("{:.2} ms", v / 1000.0) } else { format!("{v:.0} µs") };
        let mb = |v: f64| format!("{:.1} MiB", v / 1024.0);
        let mut t = String::from("| dnsperf from inside a container | cnm (`cnm agent`, 127.0.0.11) | aardvark-dns (netavark, on the gateway) |\n| --- | --- | --- |\n");
        type Format<'a> = &'a dyn Fn(f64) -> String;
        let rows: [(String, &str, bool, Format<'_>); 5] = [
            (format!("answered queries, local names, 100 in flight ({small} containers)"), "qps", false, &qps),
            (format!("p50 latency at 100 in flight ({small} containers)"), "p50_us", false, &us),
            (format!("p99 latency at 100 in flight ({small} containers)"), "p99_us", false, &us),
            (format!("answered queries with {large} containers"), "qps", true, &qps),
            (format!("resident memory of the server process, {large} containers"), "rss_kb", true, &mb),
        ];
        for (title, field, large, fmt) in rows {
            let (c, a) = pair(field, large, fmt);
            t += &format!("| {title} | {c} | {a} |\n");
        }
        t
    }

    /// The dockerd workload: `docker run --rm` on a cnm network, on
    /// Docker's bridge and without a network, and the plugin's share.
    pub fn docker(&self) -> String {
        let of = |system: &str, field: &str| {
            median(self.docker.iter().filter(|r| r["system"] == system).filter_map(|r| r[field].as_f64()).collect())
        };
        let runs = self.docker.iter().filter(|r| r["system"] == "cnm").count();
        let none = of("none", "ms");
        let mut t = format!(
            "| `docker run --rm --network NET busybox true`, median of {runs} | run | added by the network |\n| --- | --- | --- |\n"
        );
        for (system, title) in [
            ("cnm", "a cnm network (`-d cnm`)"),
            ("docker-bridge", "Docker's bridge driver"),
            ("none", "`--network none`"),
        ] {
            let Some(v) = of(system, "ms") else { continue };
            let added = match none {
                Some(n) if system != "none" => ms(v - n),
                _ => String::new(),
            };
            t += &format!("| {title} | {} | {added} |\n", ms(v));
        }
        if let Some(p) = of("cnm", "plugin_ms") {
            t += &format!("| the plugin answering dockerd's calls, during a cnm run | {} | |\n", ms(p));
        }
        t
    }

    /// The CNI workload: ADD and DEL with 10 ports, `cnm-cni` against the
    /// reference chain, and `podman run --rm` with each.
    pub fn cni(&self) -> String {
        let of = |system: &str, op: &str| {
            median(
                self.cni
                    .iter()
                    .filter(|r| r["system"] == system && r["op"] == op)
                    .filter_map(|r| r["ms"].as_f64())
                    .collect(),
            )
        };
        let runs = self.cni.iter().filter(|r| r["system"] == "cnm" && r["op"] == "add").count();
        let mut t = format!(
            "| one container, 10 published ports, each plugin a process, median of {runs} | `cnm-cni` | `bridge` + `host-local` + `portmap` | ratio |\n| --- | --- | --- | --- |\n"
        );
        for (op, title) in [("add", "`ADD`"), ("del", "`DEL`")] {
            if let (Some(c), Some(r)) = (of("cnm", op), of("reference", op)) {
                t += &format!("| {title} | {} | {} | {} |\n", ms(c), ms(r), ratio(r / c));
            }
        }
        if let (Some(c), Some(r)) = (of("cnm", "podman-run"), of("reference", "podman-run")) {
            let none = of("none", "podman-run").map(|n| format!(" (`--network none`: {})", ms(n))).unwrap_or_default();
            t += &format!("| `podman run --rm … true`{none} | {} | {} | {} |\n", ms(c), ms(r), ratio(r / c));
        }
        t
    }

    fn median_ms(&self, workload: &str, system: &str) -> Option<f64> {
        self.summary.iter().find(|r| r["workload"] == workload && r["system"] == system)?["median_ms"].as_f64()
    }

    fn samples(&self, workload: &str, system: &str) -> Vec<f64> {
        let r = self.samples.iter().find(|r| r["workload"] == workload && r["system"] == system);
        r.and_then(|r| r["samples_ms"].as_array())
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    }

    /// A row of medians, with each anchor's ratio to cnm where `with_ratio`.
    fn medians(&self, title: &str, workload: &str, with_ratio: bool) -> String {
        let cnm = self.median_ms(workload, "cnm");
        let cells: Vec<String> = SYSTEMS
            .iter()
            .map(|(s, _)| match (self.median_ms(workload, s), cnm) {
                (Some(v), Some(c)) if with_ratio && *s != "cnm" && c > 0.0 => format!("{} ({})", ms(v), ratio(v / c)),
                (Some(v), _) => ms(v),
                (None, _) => String::new(),
            })
            .collect();
        format!("| {title} | {} |\n", cells.join(" | "))
    }

    /// Attach `at` of the sequential run against attach 10 (medians of the
    /// ten before each), or how many an anchor made in its time budget.
    fn growth(&self, at: usize) -> String {
        let cells: Vec<String> = SYSTEMS
            .iter()
            .map(|(s, _)| {
                let v = self.samples("scale-attach-1-port", s);
                if v.len() < at {
                    return if v.is_empty() { String::new() } else { format!("({} in the time budget)", v.len()) };
                }
                match (median(v[..10].to_vec()), median(v[at - 10..at].to_vec())) {
                    (Some(a), Some(b)) if a > 0.0 => format!("{:.2}×", b / a),
                    _ => String::new(),
                }
            })
            .collect();
        format!("| sequential attaches (1 port): attach {at} / attach 10 | {} |\n", cells.join(" | "))
    }

    fn concurrent(&self) -> String {
        let w = "concurrent-32-attaches";
        let cell = self.median_ms(w, "cnm").map(|v| format!("{} in all, {:.0} attaches/s", ms(v), 32.0 / v * 1e3));
        format!("| 32 `cnm connect` processes at once | {} | | | |\n", cell.unwrap_or_default())
    }

    fn iperf3(&self) -> String {
        let gbit = |s: &str| {
            self.datapath
                .iter()
                .find(|r| r["system"] == s)
                .and_then(|r| r["gbit_s"].as_f64())
                .map(|g| format!("{g:.1} Gbit/s"))
                .unwrap_or_default()
        };
        let cells: Vec<String> = SYSTEMS.iter().map(|(s, _)| gbit(s)).collect();
        format!("| iperf3, one TCP stream container to container | {} |\n", cells.join(" | "))
    }

    fn header() -> String {
        let titles: Vec<&str> = SYSTEMS.iter().map(|(_, t)| *t).collect();
        format!("| workload | {} |\n| --- | --- | --- | --- | --- |\n", titles.join(" | "))
    }

    /// The README's table: single attaches, whole processes, the data path.
    pub fn speed(&self) -> String {
        let mut t = Self::header();
        t += &self.medians("attach one container, no ports", "attach-0-ports", true);
        t += &self.medians("attach, 10 published ports", "attach-10-ports", true);
        t += &self.medians("detach, no ports", "detach-0-ports", true);
        t += &self.medians("publish 1000 ports on one container", "publish-1000-ports", true);
        t += &self.medians("whole process (`cnm connect`, `netavark setup`), no ports", "process-attach-0-ports", true);
        t += &self.iperf3();
        t
    }

    /// `docs/benchmarks.md`'s table: every workload.
    pub fn full(&self) -> String {
        let mut t = Self::header();
        t += &self.medians("attach, no ports", "attach-0-ports", true);
        t += &self.medians("attach, 10 ports", "attach-10-ports", true);
        t += &self.medians("detach, no ports", "detach-0-ports", true);
        t += &self.medians("detach, 10 ports", "detach-10-ports", true);
        t += &self.growth(300);
        t += &self.growth(1000);
        t += &self.medians("publish 100 ports on one container", "publish-100-ports", true);
        t += &self.medians("publish 1000 ports on one container", "publish-1000-ports", true);
        t += &self.medians("one more port with 10,000 mappings in place", "add-1-port-10000-mappings", false);
        t += &self.medians("whole process: `cnm connect` / `netavark setup`, no ports", "process-attach-0-ports", true);
        t += &self.medians("whole process, 10 ports", "process-attach-10-ports", true);
        t += &self.concurrent();
        t += &self.iperf3();
        t
    }

    /// The services workload: a connection through a virtual IP against a
    /// direct one, and a backend change with 1 and 1,000 services, cnm
    /// against kube-proxy's iptables rules.
    pub fn services(&self) -> String {
        let find = |kind: &str, system: &str, services: u64| {
            self.services.iter().find(|r| {
                r["kind"] == kind
                    && r["system"].as_str().is_some_and(|s| s.starts_with(system))
                    && r["services"] == services
            })
        };
        let us = |r: Option<&Value>, f: &str| r.and_then(|r| r[f].as_f64());
        let fmt = |v: Option<f64>| {
            v.map(|v| if v >= 1000.0 { format!("{:.2} ms", v / 1000.0) } else { format!("{v:.1} µs") })
        };
        let mut t = String::from(
            "| services | cnm (nftables, numgen) | kube-proxy's iptables rules (statistic) |\n| --- | --- | --- |\n",
        );
        let direct = us(find("connect", "direct", 1), "p50_us");
        let (c, k) = (us(find("connect", "cnm", 1), "p50_us"), us(find("connect", "kube", 1), "p50_us"));
        let added = |v: Option<f64>| match (v, direct) {
            (Some(v), Some(d)) => {
                format!("{} (+{:.1} µs over direct {})", fmt(Some(v)).unwrap(), v - d, fmt(Some(d)).unwrap())
            }
            _ => String::new(),
        };
        t += &format!("| a TCP connection through the virtual IP, p50 | {} | {} |\n", added(c), added(k));
        for n in [1u64, 1000] {
            for (f, label) in [("p50_us", "p50"), ("p99_us", "p99")] {
                let (c, k) = (us(find("change", "cnm", n), f), us(find("change", "kube", n), f));
                let anchor = match (c, k) {
                    (Some(c), Some(k)) if c > 0.0 => format!("{} ({} cnm's)", fmt(Some(k)).unwrap(), ratio(k / c)),
                    _ => fmt(k).unwrap_or_default(),
                };
                let what = if n == 1 { "one service".to_string() } else { format!("{n} services of 10 backends") };
                t += &format!(
                    "| a backend change in process, {what} in place, {label} | {} | {anchor} |\n",
                    fmt(c).unwrap_or_default()
                );
            }
        }
        t
    }

    /// A generated table by the name the documents use.
    pub fn table(&self, name: &str) -> Option<String> {
        match name {
            "speed" => Some(self.speed()),
            "full" => Some(self.full()),
            "dns" if !self.dns.is_empty() => Some(self.dns()),
            "docker" if !self.docker.is_empty() => Some(self.docker()),
            "cni" if !self.cni.is_empty() => Some(self.cni()),
            "services" if !self.services.is_empty() => Some(self.services()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_three_significant_digits() {
        assert_eq!(
            [1.754, 41.38, 162.4, 1800.0, 74_600.0].map(ms),
            ["1.75 ms", "41.4 ms", "162 ms", "1.80 s", "74.6 s"].map(String::from)
        );
        assert_eq!([2.74, 23.46, 685.8].map(ratio), ["2.7×", "23.5×", "686×"].map(String::from));
    }
}
