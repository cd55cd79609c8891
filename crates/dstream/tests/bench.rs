//! `dstream bench --quick` end to end against the Rust server started by the
//! command itself: the JSON has every scenario with positive numbers and the
//! SVG is a complete document. The subscription scenarios (`sub-*`) run
//! against the Node server (the Rust server has no subscriptions: they are
//! skipped there with a note).

use std::process::Command;

use serde_json::Value;
use test_servers::ServerKind;

const BIN: &str = env!("CARGO_BIN_EXE_dstream");

/// Scenario names expected in the JSON (fan-out rows are `fanout-<N>`).
const SCENARIOS: &[&str] = &[
    "append-100B",
    "catchup-read-10KiB",
    "create",
    "roundtrip-long-poll",
    "roundtrip-sse",
    "producer-100B",
    "producer-100B-1-lane",
    "producer-100B-writer",
    "producer-100B-writer-1-lane",
    "producer-100B-writers-5",
    "producer-1MiB",
    "json-read",
    "fanout-10",
    "fanout-100",
    "fanout-small-10",
    "fanout-shared-10",
    "fanout-h2-10",
    "state-memory",
    "state-sqlite",
    "state-rss-memory",
    "state-rss-sqlite",
];

fn temp_dir() -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("dstream-bench-test-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn positive(summary: &Value, what: &str) {
    for key in ["n", "min", "p50", "p99", "max", "mean"] {
        let v = summary[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: {key} missing in {summary}"));
        assert!(v > 0.0 && v.is_finite(), "{what}: {key} = {v}");
    }
    assert!(summary["min"].as_f64() <= summary["p50"].as_f64(), "{what}");
    assert!(summary["p50"].as_f64() <= summary["p99"].as_f64(), "{what}");
    assert!(summary["p99"].as_f64() <= summary["max"].as_f64(), "{what}");
}

#[test]
fn quick_bench_writes_json_and_svg() {
    assert!(
        ServerKind::Rust.is_available(),
        "the Rust server (durable-streams-server) is not installed; run scripts/install-servers.sh"
    );
    let out = temp_dir();
    let output = Command::new(BIN)
        .args(["bench", "--quick", "--server", "rust", "--out"])
        .arg(&out)
        .env_remove("DS_URL")
        .output()
        .expect("run dstream bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dstream bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("ours/base"), "{stdout}");

    let doc: Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).expect("bench.json"))
            .expect("bench.json is JSON");
    assert_eq!(doc["quick"], true);
    assert_eq!(doc["servers"], serde_json::json!(["rust"]));
    assert_eq!(doc["errors"], serde_json::json!([]));
    let notes = doc["notes"].to_string();
    assert!(
        notes.contains("sub-latency: skipped, the server does not support subscriptions"),
        "{notes}"
    );
    let results = doc["results"].as_array().expect("results");
    for scenario in SCENARIOS {
        let rows: Vec<&Value> = results
            .iter()
            .filter(|r| r["scenario"] == *scenario && r["server"] == "rust")
            .collect();
        assert!(!rows.is_empty(), "no result for {scenario}: {doc}");
        for row in &rows {
            let what = format!("{scenario} {}", row["metric"]);
            positive(&row["ours"], &format!("{what} ours"));
            positive(&row["baseline"], &format!("{what} baseline"));
            let ratio = row["ratio"].as_f64().unwrap();
            assert!(ratio > 0.0 && ratio.is_finite(), "{what}: ratio {ratio}");
        }
        if scenario.starts_with("fanout-") {
            let metrics: Vec<&str> = rows.iter().filter_map(|r| r["metric"].as_str()).collect();
            assert!(
                metrics.contains(&"latency") && metrics.contains(&"memory"),
                "{scenario}: {metrics:?}"
            );
        }
        if scenario.starts_with("state-rss") {
            assert_eq!(rows[0]["metric"], "memory");
            assert_eq!(rows[0]["unit"], "B peak");
        }
        if scenario.starts_with("producer")
            || *scenario == "json-read"
            || *scenario == "state-memory"
            || *scenario == "state-sqlite"
        {
            assert_eq!(rows[0]["metric"], "throughput");
            assert!(rows[0]["ours_mb_per_s"].as_f64().unwrap() > 0.0);
        }
    }

    let svg = std::fs::read_to_string(out.join("bench.svg")).expect("bench.svg");
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches("<svg").count(), 1);
    assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    assert!(svg.contains("append-100B") && svg.contains("fanout-100"));
    assert!(svg.contains("state-sqlite") && svg.contains("state-rss-memory"));
    let _ = std::fs::remove_dir_all(&out);
}

/// `sub-latency` and `sub-throughput-{1,2,4}w` on the Node server.
#[test]
fn quick_subscription_bench_on_node() {
    assert!(
        ServerKind::Node.is_available(),
        "the Node server (@durable-streams/server) is not installed; run scripts/install-servers.sh"
    );
    let out = temp_dir();
    let output = Command::new(BIN)
        .args([
            "bench", "--quick", "--server", "node", "--only", "sub-", "--out",
        ])
        .arg(&out)
        .env_remove("DS_URL")
        .output()
        .expect("run dstream bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "dstream bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let doc: Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).expect("bench.json"))
            .expect("bench.json is JSON");
    assert_eq!(doc["errors"], serde_json::json!([]));
    let results = doc["results"].as_array().expect("results");
    for (scenario, metric) in [
        ("sub-latency", "latency"),
        ("sub-throughput-1w", "throughput"),
        ("sub-throughput-2w", "throughput"),
        ("sub-throughput-4w", "throughput"),
    ] {
        let row = results
            .iter()
            .find(|r| r["scenario"] == scenario && r["server"] == "node")
            .unwrap_or_else(|| panic!("no result for {scenario}: {doc}"));
        assert_eq!(row["metric"], metric, "{row}");
        positive(&row["ours"], &format!("{scenario} ours"));
        positive(&row["baseline"], &format!("{scenario} baseline"));
        let ratio = row["ratio"].as_f64().unwrap();
        assert!(
            ratio > 0.0 && ratio.is_finite(),
            "{scenario}: ratio {ratio}"
        );
    }
    assert!(stdout.contains("sub-throughput-4w"), "{stdout}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn bench_rejects_an_unknown_only_filter() {
    let output = Command::new(BIN)
        .args(["bench", "--quick", "--only", "no-such-scenario"])
        .output()
        .expect("run dstream bench");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("matches no scenario"));
}
