//! `cnm-bench --quick` runs end to end and writes the summary in the
//! documented shape, the raw samples and the plots. Speed is not judged here.

use std::process::Command;

#[test]
fn the_quick_suite_writes_its_json_and_plots() {
    if !cnm_netns::testing::require_root("cnm-bench --quick") {
        return;
    }
    let out = std::env::temp_dir().join(format!("cnm-bench-quick-{}", std::process::id()));
    let o = Command::new(env!("CARGO_BIN_EXE_cnm-bench")).args(["--quick", "--out"]).arg(&out).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}\n{}", String::from_utf8_lossy(&o.stderr));

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let records = summary.as_array().unwrap();
    for r in records {
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["median_ms", "p10_ms", "p90_ms", "p99_ms", "runs", "system", "workload"], "{r}");
        assert!(["cnm", "netavark", "cni", "floor"].contains(&r["system"].as_str().unwrap()));
        let w = r["workload"].as_str().unwrap();
        if w.starts_with("attach-") || w.starts_with("detach-") || w.starts_with("process-") {
            assert_eq!(r["runs"], 5, "{r}");
        }
        let (p10, med, p90) =
            (r["p10_ms"].as_f64().unwrap(), r["median_ms"].as_f64().unwrap(), r["p90_ms"].as_f64().unwrap());
        assert!(0.0 < p10 && p10 <= med && med <= p90, "{r}");
    }
    for w in
        ["attach-0-ports", "attach-1-ports", "attach-10-ports", "detach-0-ports", "detach-1-ports", "detach-10-ports"]
    {
        assert!(records.iter().any(|r| r["workload"] == w && r["system"] == "cnm"), "no cnm record for {w}");
        // Every system the suite found was measured on every workload.
        for line in text.lines().filter(|l| l.ends_with(": found")) {
            let system = line.trim_start_matches("system ").trim_end_matches(": found");
            assert!(records.iter().any(|r| r["workload"] == w && r["system"] == system), "{system} missing on {w}");
        }
    }
    let samples: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("samples.json")).unwrap()).unwrap();
    assert_eq!(samples.as_array().unwrap().len(), records.len());
    let cnm_scale = records.iter().find(|r| r["workload"] == "scale-attach-1-port" && r["system"] == "cnm").unwrap();
    assert_eq!(cnm_scale["runs"], 100, "cnm attaches all 100 in the quick scale run");
    for w in ["publish-1-ports", "publish-10-ports", "publish-100-ports"] {
        assert!(records.iter().any(|r| r["workload"] == w && r["system"] == "cnm"), "no cnm record for {w}");
    }
    assert!(records.iter().any(|r| r["workload"] == "add-1-port-1000-mappings" && r["system"] == "cnm"));
    for f in ["single.svg", "single.png", "scale.svg", "scale.png", "ports.svg", "ports.png"] {
        assert!(std::fs::metadata(out.join(f)).map(|m| m.len() > 1000).unwrap_or(false), "{f} missing or empty");
    }
    // The data path: cnm's bridge carries TCP at kernel speed.
    let dp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("datapath.json")).unwrap()).unwrap();
    let cnm = dp.as_array().unwrap().iter().find(|r| r["system"] == "cnm");
    let cnm = cnm.unwrap_or_else(|| {
        panic!(
            "no iperf3 result for cnm:\n{}",
            text.lines().filter(|l| l.starts_with("datapath")).collect::<Vec<_>>().join("\n")
        )
    });
    assert!(cnm["gbit_s"].as_f64().unwrap() > 1.0, "{dp}");
    // dockerd on a cnm network: every run timed, with the plugin's share.
    let docker: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("docker.json")).unwrap()).unwrap();
    let runs = docker.as_array().unwrap();
    for system in ["cnm", "docker-bridge", "none"] {
        assert_eq!(runs.iter().filter(|r| r["system"] == system).count(), 2, "{docker}");
    }
    for r in runs.iter().filter(|r| r["system"] == "cnm") {
        let (plugin, total) = (r["plugin_ms"].as_f64().unwrap(), r["ms"].as_f64().unwrap());
        assert!(0.0 < plugin && plugin < total, "{r}");
        assert!(r["plugin_calls"].as_u64().unwrap() >= 4, "CreateEndpoint, Join, Leave, DeleteEndpoint at least: {r}");
    }
    let _ = std::fs::remove_dir_all(&out);
}
