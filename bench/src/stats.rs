//! Percentiles and the summary records.

use std::time::Duration;

use serde::Serialize;

/// One workload on one system: the summary record of the JSON output.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// `attach-0-ports` …
    pub workload: String,
    /// `cnm`, `netavark`, `cni`, `floor`.
    pub system: String,
    /// Number of samples.
    pub runs: usize,
    /// Median.
    pub median_ms: f64,
    /// 10th percentile.
    pub p10_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
}

/// The `p`-th percentile (nearest rank) of sorted samples, in ms.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

impl Record {
    /// The record of `samples` (at least one).
    pub fn new(workload: &str, system: &str, samples: &[Duration]) -> Record {
        let mut s = samples.to_vec();
        s.sort();
        Record {
            workload: workload.into(),
            system: system.into(),
            runs: s.len(),
            median_ms: percentile(&s, 0.5),
            p10_ms: percentile(&s, 0.1),
            p90_ms: percentile(&s, 0.9),
            p99_ms: percentile(&s, 0.99),
        }
    }
}

/// The printed table, with each system's median as a ratio to cnm's.
pub fn table(records: &[Record]) -> String {
    let mut out = format!(
        "{:<18} {:<9} {:>5} {:>10} {:>10} {:>10} {:>10} {:>9}\n",
        "workload", "system", "runs", "median ms", "p10 ms", "p90 ms", "p99 ms", "vs cnm"
    );
    for r in records {
        let cnm = records.iter().find(|c| c.workload == r.workload && c.system == "cnm");
        let ratio = match cnm {
            Some(c) if r.system != "cnm" && c.median_ms > 0.0 => format!("{:.1}x", r.median_ms / c.median_ms),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{:<18} {:<9} {:>5} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>9}\n",
            r.workload, r.system, r.runs, r.median_ms, r.p10_ms, r.p90_ms, r.p99_ms, ratio
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_samples() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let r = Record::new("attach-0-ports", "cnm", &v);
        assert_eq!((r.runs, r.p10_ms, r.median_ms, r.p90_ms, r.p99_ms), (100, 11.0, 51.0, 90.0, 99.0));
        let t = table(&[r.clone(), Record { system: "netavark".into(), median_ms: 102.0, ..r }]);
        assert!(t.contains("2.0x"), "{t}");
    }
}
