//! A tiny run of the end-to-end benchmark so that it keeps working.

use std::process::Command;

#[test]
fn bench_runs_end_to_end_on_a_tiny_load() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args([
            "bench",
            "--spans",
            "3000",
            "--logs",
            "3000",
            "--samples",
            "3000",
            "--series",
            "300",
        ])
        .args([
            "--batch-size",
            "200",
            "--concurrency",
            "2",
            "--query-runs",
            "2",
            "--out",
        ])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("bench.json")).unwrap()).unwrap();
    let ingest = report["ingest"].as_array().unwrap();
    assert_eq!(ingest.len(), 3);
    for i in ingest {
        let l = &i["load"];
        assert!(l["records_accepted"].as_u64().unwrap() >= 3000, "{l}");
        assert_eq!(l["requests_failed"], 0, "{l}");
        assert!(l["records_per_sec"].as_f64().unwrap() > 0.0);
        assert!(i["server"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    }
    let md = std::fs::read_to_string(out.path().join("bench.md")).unwrap();
    assert!(md.contains("| traces |"), "{md}");
}
