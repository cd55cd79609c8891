//! Results: one row per (server, scenario, metric), printed as a table and
//! written as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::stats::Summary;

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Per-operation latency samples in microseconds (lower is better).
    Latency,
    /// Messages per second, one sample per round (higher is better).
    Throughput,
    /// Resident bytes (per subscriber, or peak growth; lower is better).
    Memory,
}

/// One measured quantity, ours next to the raw baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `rust`, `node` or `external`.
    pub server: String,
    /// Scenario name, e.g. `append-100B`.
    pub scenario: String,
    /// Sizes, counts and method.
    pub params: String,
    /// What is measured.
    pub metric: Metric,
    /// Unit of the summaries: `us`, `msg/s`, `B/subscriber` or `B peak`.
    pub unit: &'static str,
    /// The library.
    pub ours: Summary,
    /// The raw hyper client making the same HTTP requests.
    pub baseline: Summary,
    /// `ours.p50 / baseline.p50`.
    pub ratio: f64,
    /// Throughput rows: median MB/s of ours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ours_mb_per_s: Option<f64>,
    /// Throughput rows: median MB/s of the baseline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_mb_per_s: Option<f64>,
    /// Caveats (e.g. a subscriber count capped by the file descriptor limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Row {
    /// A row from raw samples; `None` when either side has no samples.
    pub fn new(
        server: &str,
        scenario: impl Into<String>,
        metric: Metric,
        unit: &'static str,
        ours: Vec<f64>,
        baseline: Vec<f64>,
    ) -> Option<Row> {
        let o = Summary::of(&ours)?;
        let b = Summary::of(&baseline)?;
        Some(Row {
            server: server.to_owned(),
            scenario: scenario.into(),
            params: String::new(),
            metric,
            unit,
            ours: o,
            baseline: b,
            ratio: if b.p50 > 0.0 { o.p50 / b.p50 } else { f64::NAN },
            ours_mb_per_s: None,
            baseline_mb_per_s: None,
            note: None,
        })
    }
}

/// The short unit of a row for the table and the SVG: `latency`, `msg/s`,
/// `B/sub` (bytes per subscriber) or a memory row's own unit (`B peak`).
pub fn unit_label(r: &Row) -> &'static str {
    match r.metric {
        Metric::Latency => "latency",
        Metric::Throughput => "msg/s",
        Metric::Memory if r.unit == "B/subscriber" => "B/sub",
        Metric::Memory => r.unit,
    }
}

/// A value for the table: latencies in us/ms/s, others with SI suffixes.
pub fn fmt_value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Latency => fmt_micros(v),
        Metric::Throughput | Metric::Memory => fmt_si(v),
    }
}

/// Microseconds in a readable unit.
pub fn fmt_micros(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{:.2}s", us / 1e6)
    }
}

/// A count with k/M/G suffix.
pub fn fmt_si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// The terminal table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<22} {:<10} {:>9} {:>9} {:>19} {:>9} {:>9} {:>19} {:>9}",
        "server",
        "scenario",
        "metric",
        "ours p50",
        "ours p99",
        "ours min-max",
        "base p50",
        "base p99",
        "base min-max",
        "ours/base"
    );
    for r in rows {
        let f = |v: f64| fmt_value(r.metric, v);
        let p99 = |s: &Summary| {
            if r.metric == Metric::Latency {
                f(s.p99)
            } else {
                "-".to_owned()
            }
        };
        let spread = |s: &Summary| format!("{}-{}", f(s.min), f(s.max));
        let unit = unit_label(r);
        let _ = writeln!(
            out,
            "{:<8} {:<22} {:<10} {:>9} {:>9} {:>19} {:>9} {:>9} {:>19} {:>8.2}x{}",
            r.server,
            r.scenario,
            unit,
            f(r.ours.p50),
            p99(&r.ours),
            spread(&r.ours),
            f(r.baseline.p50),
            p99(&r.baseline),
            spread(&r.baseline),
            r.ratio,
            match (r.ours_mb_per_s, r.baseline_mb_per_s) {
                (Some(o), Some(b)) => format!("  ({o:.1} vs {b:.1} MB/s)"),
                _ => String::new(),
            }
        );
    }
    out.push_str(
        "ours/base = ours p50 / baseline p50 (latency and memory: lower is better, \
         throughput: higher is better); throughput p50 = median of the rounds\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_micros(12.4), "12us");
        assert_eq!(fmt_micros(1_500.0), "1.50ms");
        assert_eq!(fmt_micros(2_000_000.0), "2.00s");
        assert_eq!(fmt_si(950.0), "950");
        assert_eq!(fmt_si(123_456.0), "123.5k");
        assert_eq!(fmt_si(2_500_000.0), "2.50M");
    }

    #[test]
    fn row_ratio_and_table() {
        let r = Row::new(
            "rust",
            "append-100B",
            Metric::Latency,
            "us",
            vec![200.0, 210.0, 220.0],
            vec![100.0, 105.0, 110.0],
        )
        .unwrap();
        assert!((r.ratio - 2.0).abs() < 1e-9);
        let t = table(&[r]);
        assert!(t.contains("append-100B"), "{t}");
        assert!(t.contains("2.00x"), "{t}");
        assert!(Row::new("rust", "x", Metric::Memory, "B", vec![], vec![1.0]).is_none());
    }
}
