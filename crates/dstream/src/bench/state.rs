//! State Protocol scenarios.
//!
//! * `state-memory`, `state-sqlite`: changes per second materialized by
//!   `Materializer` (catch-up, `LiveMode::Off`) into the `MemoryStore` or a
//!   fresh `SqliteStore` file (one SQLite transaction per read batch),
//!   against a raw catch-up read of the same stream decoded into
//!   `serde_json::Value` (ratio = materialize rate / raw read rate).
//! * `state-rss`: peak resident memory while catching up a long stream of
//!   updates over few keys: the state is bounded by the keys, not by the
//!   stream's length. Each side runs in a fresh child process (the same
//!   binary, hidden `--state-child` arguments): peak RSS (`VmHWM`, reset
//!   through `/proc/self/clear_refs` once the client is connected) minus
//!   the RSS at that moment.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use durable_streams_client::state::{Materializer, SqliteStore};
use durable_streams_client::{CreateOptions, LiveMode, Stream};
use hyper::Method;
use serde::{Deserialize, Serialize};

use super::Target;
use super::fanout::rss_bytes;
use super::raw;
use super::report::{Metric, Row};
use super::scenarios::client;

const JSON: &str = "application/json";
/// Changes per POST when the stream is written.
const PER_BODY: usize = 10_000;

/// Change `i` over `keys` keys: an update of a small user record.
fn change(i: usize, keys: usize) -> String {
    format!(
        r#"{{"type":"user","key":"k{}","value":{{"n":{i},"name":"user {i}","active":true}},"headers":{{"operation":"update"}}}}"#,
        i % keys
    )
}

/// A fresh JSON stream holding `count` changes over `keys` keys (written
/// with raw POSTs of 10,000 changes each). Returns it and its size in bytes.
async fn write_changes(t: &Target, count: usize, keys: usize) -> Result<(Stream, usize), String> {
    let client = client()?;
    let raw = raw::client();
    let s = client
        .stream(t.unique_url())
        .map_err(|e| format!("stream url: {e}"))?;
    s.create_with(CreateOptions::json())
        .await
        .map_err(|e| format!("create: {e}"))?;
    let mut bytes = 0;
    for first in (0..count).step_by(PER_BODY) {
        let mut body = String::from("[");
        for i in first..(first + PER_BODY).min(count) {
            if i > first {
                body.push(',');
            }
            let c = change(i, keys);
            bytes += c.len();
            body.push_str(&c);
        }
        body.push(']');
        raw::send_ok(
            &raw,
            Method::POST,
            s.url().as_str(),
            &[("content-type", JSON)],
            Bytes::from(body),
        )
        .await?;
    }
    Ok((s, bytes))
}

/// A database path nobody used before (with its WAL files removed by [`remove_db`]).
fn temp_db() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("dstream-bench-state-{}-{n}.db", std::process::id()))
}

fn remove_db(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

/// Catch up `s` into memory; returns the number of keys materialized.
async fn into_memory(s: &Stream) -> Result<usize, String> {
    let builder = Materializer::builder(s).live(LiveMode::Off);
    let state = builder.state();
    builder
        .start()
        .join()
        .await
        .map_err(|e| format!("materialize: {e}"))?;
    Ok(state.len("user"))
}

/// Catch up `s` into a fresh SQLite file; returns the applied changes.
async fn into_sqlite(s: &Stream) -> Result<u64, String> {
    let path = temp_db();
    remove_db(&path);
    let result = async {
        let store = SqliteStore::open(&path).map_err(|e| format!("sqlite: {e}"))?;
        Materializer::builder(s)
            .store(store)
            .live(LiveMode::Off)
            .start()
            .join()
            .await
            .map_err(|e| format!("materialize: {e}"))?;
        SqliteStore::open(&path)
            .and_then(|s| s.applied_changes())
            .map_err(|e| format!("sqlite: {e}"))
    }
    .await;
    remove_db(&path);
    result
}

/// The baseline: raw GETs from the start, each body decoded into
/// `Vec<serde_json::Value>`; returns the number of messages.
async fn raw_read(raw: &raw::Raw, url: &str) -> Result<usize, String> {
    let mut n = 0;
    raw::read_all(raw, url, |b| {
        let items: Vec<serde_json::Value> =
            serde_json::from_slice(b).map_err(|e| format!("baseline decode: {e}"))?;
        n += items.len();
        Ok(())
    })
    .await?;
    Ok(n)
}

/// `state-memory` / `state-sqlite`: materialize rate vs raw read rate.
pub async fn materialize_rate(
    t: &Target,
    sqlite: bool,
    count: usize,
    keys: usize,
) -> Result<Vec<Row>, String> {
    let name = if sqlite {
        "state-sqlite"
    } else {
        "state-memory"
    };
    let (s, bytes) = write_changes(t, count, keys).await?;
    let raw = raw::client();
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..t.rounds {
        let start = Instant::now();
        if sqlite {
            let applied = into_sqlite(&s).await?;
            if applied != count as u64 {
                return Err(format!(
                    "{name}: {applied} changes applied, expected {count}"
                ));
            }
        } else {
            let n = into_memory(&s).await?;
            if n != keys.min(count) {
                return Err(format!("{name}: {n} keys materialized, expected {keys}"));
            }
        }
        ours.push(count as f64 / start.elapsed().as_secs_f64());

        let start = Instant::now();
        let n = raw_read(&raw, s.url().as_str()).await?;
        base.push(count as f64 / start.elapsed().as_secs_f64());
        if n != count {
            return Err(format!(
                "{name}: baseline read {n} messages, expected {count}"
            ));
        }
    }
    let mut row =
        Row::new(&t.label, name, Metric::Throughput, "msg/s", ours, base).ok_or("no rounds")?;
    let per_msg = bytes as f64 / count as f64;
    row.ours_mb_per_s = Some(row.ours.p50 * per_msg / 1e6);
    row.baseline_mb_per_s = Some(row.baseline.p50 * per_msg / 1e6);
    let store = if sqlite {
        "a fresh SQLite file per round (SqliteStore: one SQLite transaction per read batch, WAL, synchronous=NORMAL)"
    } else {
        "memory (MemoryStore)"
    };
    row.params = format!(
        "{} rounds of a catch-up materialization of {count} updates (~{per_msg:.0} B) over {keys} keys into {store}; baseline: raw catch-up GETs decoded into serde_json::Value",
        t.rounds
    );
    Ok(vec![row])
}

/// What a `--state-child` prints (one JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildReport {
    /// Peak RSS growth during the catch-up, bytes.
    pub peak_growth: f64,
    /// How long the catch-up took, seconds.
    pub secs: f64,
    /// Whether the peak was reset before (else it is the process's peak).
    pub peak_reset: bool,
}

/// `VmHWM` (peak resident set size) in bytes.
fn peak_rss_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmHWM in /proc/self/status".to_owned())
}

/// Child side: catch up `url` as `kind` (memory, sqlite, raw) and report
/// the peak RSS growth.
pub async fn child(kind: &str, url: &str, count: usize) -> Result<(), String> {
    let client = client()?;
    let s = client.stream(url).map_err(|e| format!("stream url: {e}"))?;
    let raw = raw::client();
    // Connections up and the fixed costs paid before the baseline.
    match kind {
        "raw" => drop(raw::tail(&raw, url).await?),
        "memory" | "sqlite" => drop(s.head().await.map_err(|e| format!("head: {e}"))?),
        other => return Err(format!("unknown state child kind {other:?}")),
    }
    // "5" resets the peak RSS (VmHWM) to the current RSS (Linux 4.0+).
    let peak_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss0 = rss_bytes()?;
    let start = Instant::now();
    match kind {
        "raw" => {
            let n = raw_read(&raw, url).await?;
            if n != count {
                return Err(format!("raw read {n} messages, expected {count}"));
            }
        }
        "memory" => {
            into_memory(&s).await?;
        }
        _ => {
            let applied = into_sqlite(&s).await?;
            if applied != count as u64 {
                return Err(format!("{applied} changes applied, expected {count}"));
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let peak = peak_rss_bytes()?;
    let report = ChildReport {
        peak_growth: peak.saturating_sub(rss0) as f64,
        secs,
        peak_reset,
    };
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| format!("report: {e}"))?
    );
    Ok(())
}

async fn run_child(kind: &str, url: &str, count: usize) -> Result<ChildReport, String> {
    let args = [
        "--state-child",
        kind,
        "--state-url",
        url,
        "--state-count",
        &count.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    super::run_self_child(format!("state child ({kind})"), args).await
}

/// `state-rss`: peak RSS growth while catching up `updates` updates over
/// `keys` keys, into memory and into SQLite, vs the raw read.
pub async fn rss(t: &Target, updates: usize, keys: usize) -> Result<Vec<Row>, String> {
    let (s, bytes) = write_changes(t, updates, keys).await?;
    let url = s.url().as_str().to_owned();
    let base = run_child("raw", &url, updates).await?;
    let mut rows = Vec::new();
    for kind in ["memory", "sqlite"] {
        let ours = run_child(kind, &url, updates).await?;
        let mut row = Row::new(
            &t.label,
            format!("state-rss-{kind}"),
            Metric::Memory,
            "B peak",
            vec![ours.peak_growth],
            vec![base.peak_growth],
        )
        .ok_or("state-rss: no sample")?;
        row.params = format!(
            "peak RSS growth while catching up {updates} updates over {keys} keys ({:.1} MB stream) into {kind} ({:.2}s; raw read {:.2}s); each side in a fresh process",
            bytes as f64 / 1e6,
            ours.secs,
            base.secs
        );
        if !(ours.peak_reset && base.peak_reset) {
            row.note = Some(
                "peak RSS could not be reset (/proc/self/clear_refs): the peaks include start-up"
                    .to_owned(),
            );
        }
        rows.push(row);
    }
    Ok(rows)
}
