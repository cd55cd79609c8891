//! End-to-end tests of `dstream subscription` (alias `sub`): the built
//! binary against the Node reference server (the only server with
//! subscriptions), and the "unsupported" answer of the Rust server.
//!
//! Servers come from `test_servers` (installed by
//! `scripts/install-servers.sh`); a missing server fails the test with the
//! install hint.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_servers::{ServerKind, TestServer, http_request};

mod common;

use common::{command, run};

fn node() -> TestServer {
    TestServer::start(ServerKind::Node)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run and require exit code 0; returns stdout.
fn ok(server: &TestServer, args: &[&str]) -> String {
    let out = run(server, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "dstream {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn ok_json(server: &TestServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = ok(server, &all);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out:?}: {e}"))
}

/// Expect exit code `code` and one stderr line that contains every `needle`.
fn fails_with(out: &Output, code: i32, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(stderr.starts_with("dstream: "), "{stderr:?}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{stderr:?} should contain {needle:?}"
        );
    }
    assert!(!stderr.contains("panicked"));
    stderr
}

fn links(sub: &Value) -> HashMap<String, Value> {
    sub["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|l| (l["path"].as_str().unwrap().to_owned(), l.clone()))
        .collect()
}

#[test]
fn create_get_membership_delete_round_trip() {
    let server = node();
    ok(&server, &["create", "rt/a", "--json"]);
    ok(&server, &["create", "rt/b", "--content-type", "text/plain"]);
    let create = [
        "sub",
        "create",
        "rt",
        "--pattern",
        "rt/*",
        "--pull-wake",
        "wake/rt",
        "--lease-ttl",
        "5s",
        "--description",
        "round trip",
    ];
    let created = ok_json(&server, &create);
    assert_eq!(created["created"], true, "{created}");
    assert_eq!(created["wake_stream_created"], true, "{created}");
    assert_eq!(created["type"], "pull-wake");
    assert_eq!(created["wake_stream"], "wake/rt");
    assert_eq!(created["lease_ttl_ms"], 5000);
    let linked = links(&created);
    assert_eq!(linked.len(), 2, "{created}");
    assert_eq!(linked["rt/a"]["link_type"], "glob");
    // The wake stream was created as a JSON stream.
    let head = ok_json(&server, &["head", "wake/rt"]);
    assert_eq!(head["content_type"], "application/json");

    // Identical: re-confirmed, in words and in JSON.
    let again = ok(&server, &create);
    assert!(again.starts_with("reconfirmed"), "{again}");
    assert!(again.contains("subscription rt"), "{again}");
    let again = ok_json(&server, &create);
    assert_eq!(again["created"], false);
    assert_eq!(again["wake_stream_created"], false);

    // Another configuration under the same id: conflict (4).
    let mut changed = create.to_vec();
    *changed.last_mut().unwrap() = "changed";
    fails_with(
        &run(&server, &changed),
        4,
        &["sub create rt", "SUBSCRIPTION_ALREADY_EXISTS"],
    );

    let got = ok(&server, &["sub", "get", "rt"]);
    assert!(got.contains("wake-stream:  wake/rt"), "{got}");
    assert!(got.contains("lease-ttl:    5s"), "{got}");
    let got = ok_json(&server, &["sub", "get", "rt"]);
    assert_eq!(got["pattern"], "rt/*");
    assert_eq!(got["description"], "round trip");

    // Explicit membership: add (idempotent), remove (idempotent).
    let added = ok(&server, &["sub", "add-streams", "rt", "x/one", "x/two"]);
    assert!(
        added.starts_with("linked 2 streams to subscription rt"),
        "{added}"
    );
    let added = ok_json(&server, &["sub", "add-streams", "rt", "x/one"]);
    assert_eq!(added["added"], json!(["x/one"]));
    let got = links(&ok_json(&server, &["sub", "get", "rt"]));
    assert_eq!(got["x/one"]["link_type"], "explicit");
    assert_eq!(got["x/two"]["link_type"], "explicit");
    ok(&server, &["sub", "remove-stream", "rt", "x/one"]);
    let removed = ok_json(&server, &["sub", "remove-stream", "rt", "never/linked"]);
    assert_eq!(removed["removed"], "never/linked");
    let got = links(&ok_json(&server, &["sub", "get", "rt"]));
    assert!(!got.contains_key("x/one"), "{got:?}");
    assert!(got.contains_key("x/two"), "{got:?}");
    fails_with(
        &run(&server, &["sub", "add-streams", "rt", "__ds/x"]),
        8,
        &["sub add-streams rt", "__ds"],
    );

    let deleted = ok_json(&server, &["sub", "delete", "rt"]);
    assert_eq!(deleted, json!({"id": "rt", "deleted": true}));
    for args in [
        &["sub", "get", "rt"][..],
        &["sub", "add-streams", "rt", "a"],
        &["sub", "work", "rt"],
    ] {
        fails_with(
            &run(&server, args),
            3,
            &["rt", "no such subscription", "SUBSCRIPTION_NOT_FOUND"],
        );
    }
    // Usage errors (2) before anything is sent.
    for args in [
        &["sub", "create", "x", "--pattern", "a/*"][..],
        &["sub", "create", "x", "--pull-wake", "w"],
        &[
            "sub",
            "create",
            "x",
            "--stream",
            "a",
            "--pull-wake",
            "w",
            "--lease-ttl",
            "100ms",
        ],
    ] {
        let out = run(&server, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn work_checks_its_subscriptions_before_starting() {
    let server = node();
    ok(&server, &["create", "c/a", "--json"]);
    for (id, wake) in [("c1", "wake/one"), ("c2", "wake/two")] {
        ok(
            &server,
            &["sub", "create", id, "--stream", "c/a", "--pull-wake", wake],
        );
    }
    fails_with(
        &run(&server, &["sub", "work", "c1", "c2"]),
        2,
        &["sub work c1 c2", "different wake streams"],
    );
    fails_with(
        &run(&server, &["sub", "work", "c1", "--wake-stream", "wake/two"]),
        2,
        &["c1", "wake/one", "not wake/two"],
    );
}

#[test]
fn a_server_without_subscriptions_is_reported_as_unsupported() {
    let server = TestServer::start(ServerKind::Rust);
    for args in [
        &["sub", "get", "s"][..],
        &["sub", "delete", "s"],
        &[
            "sub",
            "create",
            "s",
            "--pattern",
            "a/*",
            "--pull-wake",
            "wake/s",
        ],
        &["subscription", "add-streams", "s", "a"],
        &["sub", "work", "s", "--wake-stream", "wake/s"],
    ] {
        fails_with(
            &run(&server, args),
            10,
            &["this server", "does not support subscriptions"],
        );
    }
    // Nothing was created on the way: no wake stream, no stream named like a route.
    for name in ["wake/s", "__ds/subscriptions/s"] {
        let out = run(&server, &["head", name]);
        assert_eq!(out.status.code(), Some(3), "{name}: {}", text(&out.stderr));
    }
}

// --- workers ----------------------------------------------------------------

const SHARDS: usize = 4;
const PER_SHARD: usize = 5; // 20 streams
const WAKE: &str = "wake/w";

/// One `dstream sub work` process with its output collected by threads.
struct WorkProcess {
    name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

impl WorkProcess {
    fn start(server: &TestServer, name: &str) -> WorkProcess {
        let ids: Vec<String> = (0..SHARDS).map(|k| format!("w-{k}")).collect();
        let mut args = vec!["sub", "work"];
        args.extend(ids.iter().map(String::as_str));
        args.extend(["--wake-stream", WAKE, "--worker", name, "--output", "json"]);
        let mut child = command(server, &args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dstream sub work");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let sink = Arc::clone(&lines);
        let stdout = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                sink.lock().unwrap().push(line.expect("stdout line"));
            }
        });
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        WorkProcess {
            name: name.to_owned(),
            child,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill -INT");
        assert!(status.success(), "kill -INT {}", self.child.id());
    }

    /// Wait for the exit after ctrl-c; returns (exit code, stderr).
    fn wait(&mut self, limit: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.stderr.take().unwrap().join().unwrap();
                panic!(
                    "{} did not exit within {limit:?} after ctrl-c; stderr {stderr:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.stdout.take().unwrap().join().unwrap();
        let stderr = self.stderr.take().unwrap().join().unwrap();
        (status.code(), stderr)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for WorkProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An event as printed: (stream, n, offset of its batch).
#[derive(Debug, Clone)]
struct Printed {
    stream: String,
    n: u64,
    offset: String,
}

fn parse_lines(lines: &[String]) -> Vec<Printed> {
    lines
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            let stream = v["stream"].as_str().expect("stream").to_owned();
            assert_eq!(v["value"]["s"], stream.as_str(), "{line}");
            Printed {
                stream,
                n: v["value"]["n"].as_u64().expect("n"),
                offset: v["offset"].as_str().expect("offset").to_owned(),
            }
        })
        .collect()
}

fn streams() -> Vec<String> {
    (0..SHARDS)
        .flat_map(|k| (0..PER_SHARD).map(move |i| format!("w/{k}/s{i}")))
        .collect()
}

/// Append events `from..to` to every stream, `per_request` per POST.
fn append_events(server: &TestServer, from: u64, to: u64, per_request: u64) {
    let mut first = from;
    while first < to {
        let last = (first + per_request).min(to);
        for path in streams() {
            let events: Vec<Value> = (first..last).map(|n| json!({"s": path, "n": n})).collect();
            let body = serde_json::to_vec(&events).unwrap();
            let r = http_request(
                "POST",
                &server.stream_url(&path),
                &[("content-type", "application/json")],
                &body,
            )
            .unwrap();
            assert!(
                (200..300).contains(&r.status),
                "append {path}: {}",
                r.status
            );
        }
        first = last;
    }
}

/// Whether every stream's events `0..total` were printed by `processes`.
fn all_printed(processes: &[&WorkProcess], total: u64) -> bool {
    let mut seen: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for p in processes {
        for e in parse_lines(&p.lines()) {
            seen.entry(e.stream).or_default().insert(e.n);
        }
    }
    streams()
        .iter()
        .all(|s| seen.get(s).is_some_and(|set| set.len() as u64 == total))
}

/// At least once and in order: every event printed, no event printed that
/// was not appended; within each process, each stream's events in stream
/// order; across processes, the printed offsets agree with that order.
fn assert_complete_in_order(processes: &[&WorkProcess], total: u64) {
    let mut all: HashMap<String, Vec<Printed>> = HashMap::new();
    for p in processes {
        let mut last: HashMap<String, u64> = HashMap::new();
        for e in parse_lines(&p.lines()) {
            if let Some(prev) = last.insert(e.stream.clone(), e.n) {
                assert!(
                    e.n > prev,
                    "{}: {} printed {} after {prev}",
                    p.name,
                    e.stream,
                    e.n
                );
            }
            all.entry(e.stream.clone()).or_default().push(e);
        }
    }
    for stream in streams() {
        let mut events = all.remove(&stream).unwrap_or_default();
        let set: BTreeSet<u64> = events.iter().map(|e| e.n).collect();
        assert_eq!(
            set,
            (0..total).collect::<BTreeSet<u64>>(),
            "{stream}: every event, nothing else"
        );
        events.sort_by(|a, b| a.offset.cmp(&b.offset));
        for pair in events.windows(2) {
            assert!(
                pair[0].n <= pair[1].n || pair[0].offset == pair[1].offset,
                "{stream}: offsets disagree with the order: {pair:?}"
            );
        }
    }
}

/// Wait until every subscription's cursors are at the streams' tails.
fn wait_acked_at_tails(server: &TestServer, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let mut behind = Vec::new();
        for k in 0..SHARDS {
            let sub = ok_json(server, &["sub", "get", &format!("w-{k}")]);
            let linked = links(&sub);
            assert_eq!(linked.len(), PER_SHARD, "{sub}");
            for (path, link) in linked {
                let tail = ok_json(server, &["head", &path])["next_offset"].clone();
                if link["acked_offset"] != tail {
                    behind.push(format!(
                        "{path}: acked {} tail {tail}",
                        link["acked_offset"]
                    ));
                }
            }
        }
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "cursors not at the tails after {limit:?}: {behind:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_printed(processes: &[&WorkProcess], total: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !all_printed(processes, total) {
        assert!(
            Instant::now() < deadline,
            "not every event was printed within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A claim right after the workers stopped: it must not find a holder.
/// Claimed wakes are released again so the next worker can take them.
fn claim_and_release(server: &TestServer, id: &str) -> u16 {
    let base = format!("{}/v1/stream/__ds/subscriptions/{id}", server.base_url());
    let json_ct = [("content-type", "application/json")];
    let r = http_request(
        "POST",
        &format!("{base}/claim"),
        &json_ct,
        br#"{"worker":"probe"}"#,
    )
    .unwrap();
    if r.status == 200 {
        let claim: Value = serde_json::from_slice(&r.body).unwrap();
        let auth = format!("Bearer {}", claim["token"].as_str().unwrap());
        let body = json!({"wake_id": claim["wake_id"], "generation": claim["generation"]});
        let released = http_request(
            "POST",
            &format!("{base}/release"),
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            body.to_string().as_bytes(),
        )
        .unwrap();
        assert!(
            (200..300).contains(&released.status),
            "probe release {id}: {} {}",
            released.status,
            text(&released.body)
        );
    }
    assert_ne!(
        r.status,
        409,
        "{id} is still held after its worker stopped: {}",
        text(&r.body)
    );
    r.status
}

/// Three `dstream sub work` processes share four subscriptions (shards
/// matched by patterns) over 20 JSON streams while events are appended:
/// every event is printed at least once, in order per stream, and the
/// cursors end at the tails. ctrl-c during a second burst: each process
/// exits 0 and released its claim (a claim right after succeeds), and a
/// new worker prints the rest.
#[test]
fn three_workers_print_every_event_and_release_on_ctrl_c() {
    const FIRST: u64 = 150; // 3,000 events
    const SECOND: u64 = 250; // 2,000 more
    let server = node();
    ok(&server, &["create", WAKE, "--json"]);
    for path in streams() {
        ok(&server, &["create", &path, "--json"]);
    }
    for k in 0..SHARDS {
        let (id, pattern) = (format!("w-{k}"), format!("w/{k}/*"));
        let created = ok_json(
            &server,
            &[
                "sub",
                "create",
                &id,
                "--pattern",
                &pattern,
                "--pull-wake",
                WAKE,
                "--lease-ttl",
                "60s",
            ],
        );
        assert_eq!(links(&created).len(), PER_SHARD, "{created}");
    }
    let mut workers: Vec<WorkProcess> = (0..3)
        .map(|i| WorkProcess::start(&server, &format!("w{i}")))
        .collect();

    append_events(&server, 0, FIRST, 10);
    {
        let refs: Vec<&WorkProcess> = workers.iter().collect();
        wait_printed(&refs, FIRST, Duration::from_secs(90));
        wait_acked_at_tails(&server, Duration::from_secs(30));
        assert_complete_in_order(&refs, FIRST);
    }

    // Second burst; ctrl-c while it is being worked on.
    append_events(&server, FIRST, FIRST + 30, 10);
    for w in &workers {
        w.interrupt();
    }
    append_events(&server, FIRST + 30, SECOND, 10);
    for w in &mut workers {
        let (code, stderr) = w.wait(Duration::from_secs(30));
        assert_eq!(code, Some(0), "{}: stderr {stderr:?}", w.name);
        assert!(
            stderr.contains(&format!("worker {} stopped after", w.name)),
            "{}: {stderr:?}",
            w.name
        );
    }
    // Released: nobody holds a lease (60 s) although work is pending.
    let claimed = (0..SHARDS)
        .map(|k| claim_and_release(&server, &format!("w-{k}")))
        .filter(|s| *s == 200)
        .count();
    assert!(claimed > 0, "the second burst left pending work");

    let last = WorkProcess::start(&server, "w-last");
    workers.push(last);
    let refs: Vec<&WorkProcess> = workers.iter().collect();
    // Well within the 60 s lease: no claim was left behind.
    wait_printed(&refs, SECOND, Duration::from_secs(30));
    wait_acked_at_tails(&server, Duration::from_secs(30));
    assert_complete_in_order(&refs, SECOND);
    drop(refs);
    let last = workers.last_mut().unwrap();
    last.interrupt();
    let (code, stderr) = last.wait(Duration::from_secs(30));
    assert_eq!(code, Some(0), "stderr {stderr:?}");
}
