//! End-to-end tests of `dstream top`: the built binary against real
//! servers (both servers for streams and checkpoints, the Node server for
//! subscriptions), with a producer appending while `top` samples.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;
use test_servers::{ServerKind, TestServer, http_request};

mod common;

use common::{command, run};

fn ok_json(server: &TestServer, args: &[&str]) -> Value {
    let out = run(server, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "dstream {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn unique_name(server: &TestServer, prefix: &str) -> String {
    let url = server.unique_stream_url(prefix);
    url.rsplit('/').next().unwrap().to_owned()
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dstream-top-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A checkpoint as the library's `FileCheckpointStore` writes it.
fn write_checkpoint(dir: &Path, name: &str, offset: &str) {
    std::fs::write(dir.join(name), format!("{offset}\n")).unwrap();
}

fn tail(server: &TestServer, name: &str) -> String {
    let head = ok_json(server, &["head", name, "--output", "json"]);
    head["next_offset"].as_str().unwrap().to_owned()
}

/// Appends a line to `url` every 20 ms until dropped.
struct Producer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Producer {
    fn start(url: String) -> Producer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut n = 0;
            while !flag.load(Ordering::Relaxed) {
                let body = format!("record {n:06} {}\n", "x".repeat(100));
                let r = http_request(
                    "POST",
                    &url,
                    &[("content-type", "text/plain")],
                    body.as_bytes(),
                )
                .unwrap();
                assert!((200..300).contains(&r.status), "append: {}", r.status);
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            n
        });
        Producer {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn row<'a>(snapshot: &'a Value, name: &str) -> &'a Value {
    snapshot["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}: {snapshot:#}"))
}

fn consumer<'a>(row: &'a Value, name: &str) -> &'a Value {
    row["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no consumer {name}: {row:#}"))
}

fn once_json_with_producer_and_lagging_consumer(kind: ServerKind) {
    let server = TestServer::start(kind);
    let busy = unique_name(&server, "top-busy");
    let idle = unique_name(&server, "top-idle");
    let done = unique_name(&server, "top-done");
    ok_json(
        &server,
        &[
            "create",
            &busy,
            "--content-type",
            "text/plain",
            "--output",
            "json",
        ],
    );
    ok_json(
        &server,
        &[
            "create", &idle, "--json", "--ttl", "3600", "--output", "json",
        ],
    );
    ok_json(&server, &["create", &done, "--output", "json"]);
    let first = ok_json(&server, &["append", &busy, "first\n", "--output", "json"]);
    let lagging_at = first["next_offset"].as_str().unwrap().to_owned();
    ok_json(
        &server,
        &[
            "append",
            &idle,
            "{\"a\":1}",
            "{\"a\":2}",
            "--output",
            "json",
        ],
    );
    ok_json(&server, &["append", &done, "bye", "--output", "json"]);
    ok_json(&server, &["close", &done, "--output", "json"]);
    let idle_tail = tail(&server, &idle);
    let done_tail = tail(&server, &done);

    let busy_dir = temp_dir("busy");
    let idle_dir = temp_dir("idle");
    write_checkpoint(&busy_dir, "lagging", &lagging_at);
    write_checkpoint(&idle_dir, "caught-up", &idle_tail);
    write_checkpoint(&idle_dir, "from-start", "-1");

    let producer = Producer::start(server.stream_url(&busy));
    std::thread::sleep(Duration::from_millis(200));
    let before = tail(&server, &busy);
    let busy_ck = format!("{busy}={}", busy_dir.display());
    let idle_ck = format!("{idle}={}", idle_dir.display());
    let snapshot = ok_json(
        &server,
        &[
            "top",
            &busy,
            &idle,
            &done,
            "--checkpoints",
            &busy_ck,
            "--checkpoints",
            &idle_ck,
            "--once",
            "--interval",
            "1s",
            "--output",
            "json",
        ],
    );
    let after = tail(&server, &busy);
    let appended = producer.stop();
    assert!(appended > 10, "the producer ran: {appended}");

    assert_eq!(
        snapshot["window_secs"].as_f64().map(f64::round),
        Some(1.0),
        "{snapshot:#}"
    );
    assert_eq!(snapshot["streams"].as_array().unwrap().len(), 3);

    // The written stream: its tail between two HEADs around `top`, bytes
    // per second > 0, messages n/a (a byte stream), a recent append.
    let b = row(&snapshot, &busy);
    let busy_tail = b["tail_offset"].as_str().unwrap();
    assert!(
        before.as_str() <= busy_tail && busy_tail <= after.as_str(),
        "{before} {busy_tail} {after}"
    );
    assert!(b["bytes_per_sec"].as_f64().unwrap() > 1000.0, "{b:#}");
    assert!(b["messages_per_sec"].is_null(), "{b:#}");
    assert!(b["last_append_secs"].as_f64().unwrap() < 1.0, "{b:#}");
    assert_eq!(b["closed"], false);
    assert!(b["error"].is_null());
    let lagging = consumer(b, "lagging");
    assert_eq!(lagging["source"], "checkpoint");
    assert_eq!(lagging["offset"], lagging_at.as_str());
    assert_eq!(lagging["position"], "behind");
    assert!(lagging["lag_bytes"].as_u64().unwrap() > 1000, "{lagging:#}");
    assert!(
        lagging["since_moved_secs"].as_f64().unwrap() >= 1.0,
        "{lagging:#}"
    );

    // The idle JSON stream: tail as HEAD says, no appends (0 bytes and
    // messages per second), the caught-up consumer 0 bytes behind.
    let i = row(&snapshot, &idle);
    assert_eq!(i["tail_offset"], idle_tail.as_str());
    assert_eq!(i["bytes_per_sec"].as_f64(), Some(0.0), "{i:#}");
    assert_eq!(i["messages_per_sec"].as_f64(), Some(0.0), "{i:#}");
    assert!(i["last_append_secs"].is_null(), "{i:#}");
    assert_eq!(i["ttl_secs"], 3600);
    let caught_up = consumer(i, "caught-up");
    assert_eq!(caught_up["lag_bytes"], 0);
    assert_eq!(caught_up["position"], "caught-up");
    let from_start = consumer(i, "from-start");
    assert_eq!(from_start["position"], "behind");
    assert!(
        from_start["lag_bytes"].as_u64().unwrap() > 0,
        "{from_start:#}"
    );
    assert_eq!(
        i["consumers"].as_array().unwrap().len(),
        2,
        "only its own directory"
    );

    // The closed stream.
    let d = row(&snapshot, &done);
    assert_eq!(d["closed"], true);
    assert_eq!(d["tail_offset"], done_tail.as_str());
    assert_eq!(d["bytes_per_sec"].as_f64(), Some(0.0));
    assert!(d["consumers"].as_array().unwrap().is_empty());

    // Plain text when stdout is not a terminal; a missing stream is an
    // error row, not a failure.
    let missing = unique_name(&server, "top-missing");
    let out = run(
        &server,
        &[
            "top",
            &idle,
            &done,
            &missing,
            "--once",
            "--interval",
            "100ms",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].starts_with("STREAM") && !lines[1].contains("LAG"),
        "{text}"
    );
    assert!(
        lines[1].contains("TAIL OFFSET") && lines[1].contains("BYTES/S"),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&idle) && l.contains(&idle_tail) && l.contains("ttl 3600s")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&done) && l.contains("closed")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&missing) && l.contains("error:")),
        "{text}"
    );

    let _ = std::fs::remove_dir_all(busy_dir);
    let _ = std::fs::remove_dir_all(idle_dir);
}

#[test]
fn once_json_rust_server() {
    once_json_with_producer_and_lagging_consumer(ServerKind::Rust);
}

#[test]
fn once_json_node_server() {
    once_json_with_producer_and_lagging_consumer(ServerKind::Node);
}

#[test]
fn subscription_acked_offsets_are_consumers() {
    let server = TestServer::start(ServerKind::Node);
    let a = unique_name(&server, "top-sub-a");
    let wake = unique_name(&server, "top-sub-wake");
    let id = unique_name(&server, "topsub");
    ok_json(&server, &["create", &a, "--json", "--output", "json"]);
    ok_json(&server, &["append", &a, "{\"n\":0}", "--output", "json"]);
    ok_json(
        &server,
        &[
            "sub",
            "create",
            &id,
            "--stream",
            &a,
            "--pull-wake",
            &wake,
            "--output",
            "json",
        ],
    );
    // Linked at the tail; what is appended after is not acked.
    ok_json(
        &server,
        &["append", &a, "{\"n\":1}", "{\"n\":2}", "--output", "json"],
    );
    let snapshot = ok_json(
        &server,
        &[
            "top",
            "--subscription",
            &id,
            "--once",
            "--interval",
            "200ms",
            "--output",
            "json",
        ],
    );
    let r = row(&snapshot, &a);
    assert_eq!(r["tail_offset"], tail(&server, &a).as_str());
    let c = consumer(r, &format!("subscription:{id}"));
    assert_eq!(c["source"], "subscription");
    assert_eq!(c["position"], "behind");
    assert!(c["lag_bytes"].as_u64().unwrap() > 0, "{c:#}");
    assert!(c["since_moved_secs"].is_null(), "not seen to move: {c:#}");

    // The Rust server has no subscriptions: exit code 10.
    let rust = TestServer::start(ServerKind::Rust);
    let out = run(
        &rust,
        &[
            "top",
            "--subscription",
            "x",
            "--once",
            "--interval",
            "100ms",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(10),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn without_a_terminal_snapshots_repeat_every_interval() {
    let server = TestServer::start(ServerKind::Rust);
    let s = unique_name(&server, "top-loop");
    ok_json(&server, &["create", &s, "--output", "json"]);
    let mut child = command(
        &server,
        &["top", &s, "--interval", "200ms", "--output", "json"],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    for _ in 0..3 {
        let line = lines.next().unwrap().unwrap();
        let snapshot: Value = serde_json::from_str(&line).unwrap();
        assert!(snapshot["window_secs"].as_f64().unwrap() > 0.1, "{line}");
        assert_eq!(row(&snapshot, &s)["bytes_per_sec"].as_f64(), Some(0.0));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // No streams at all is a usage error.
    let out = run(&server, &["top", "--once"]);
    assert_eq!(out.status.code(), Some(2));
}
