//! `dstream state` end to end against a real Rust server: write, show (also
//! live), changes and materialize round trips, error lines and exit codes,
//! and exactly once into SQLite across `kill -9` of the materializer while
//! changes are being written.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use durable_streams_client::state::SqliteStore;
use serde_json::{Value, json};
use test_servers::{ServerKind, TestServer};

mod common;

use common::{command, run, run_stdin};

type Model = BTreeMap<String, BTreeMap<String, Value>>;

/// Starts the Rust server; panics with the install hint
/// (`scripts/install-servers.sh`) when it is not installed.
fn server() -> TestServer {
    TestServer::start(ServerKind::Rust)
}

fn unique_name(server: &TestServer, prefix: &str) -> String {
    let url = server.unique_stream_url(prefix);
    url.rsplit('/').next().unwrap().to_owned()
}

fn ok_stdin(server: &TestServer, args: &[&str], stdin: &[u8]) -> String {
    let out = run_stdin(server, args, stdin);
    assert_eq!(
        out.status.code(),
        Some(0),
        "dstream {args:?} failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn ok(server: &TestServer, args: &[&str]) -> String {
    ok_stdin(server, args, b"")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Expect exit code `code` and one stderr line containing every needle.
fn fails_with(out: &Output, code: i32, needles: &[&str]) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("dstream: "), "{stderr:?}");
    for needle in needles {
        assert!(last.contains(needle), "{last:?} should contain {needle:?}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    last.to_owned()
}

fn temp_db(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("state-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("state.db")
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "dstream did not exit within {limit:?}; stdout {:?}, stderr {:?}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interrupt(child: &Child) {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill -INT");
    assert!(status.success(), "kill -INT {}", child.id());
}

/// Lines of a child's stdout, as they come.
fn line_channel(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.expect("stdout line")).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("no line for {what} within 20s: {e}"))
}

const SCRIPT: &str = r#"# users and an order
insert user 1 {"name": "Alice"}
insert user 2 {"name": "Bob"}
begin tx-1
update user 1 {"name": "Alice Smith"}
insert order o1 {"user": "1", "total": 30}
commit
{"type":"user","key":"3","value":{"name":"Carol"},"headers":{"operation":"insert","timestamp":"2025-01-15T10:30:00Z"},"extra":true}
snapshot-start
insert flag dark {"on": true}
snapshot-end
delete user 2
"#;

fn expected_after_script() -> Model {
    let mut model = Model::new();
    model.insert(
        "user".into(),
        BTreeMap::from([
            ("1".into(), json!({"name": "Alice Smith"})),
            ("3".into(), json!({"name": "Carol"})),
        ]),
    );
    model.insert(
        "order".into(),
        BTreeMap::from([("o1".into(), json!({"user": "1", "total": 30}))]),
    );
    model.insert(
        "flag".into(),
        BTreeMap::from([("dark".into(), json!({"on": true}))]),
    );
    model
}

#[test]
fn write_show_and_changes_round_trip() {
    let server = server();
    let name = unique_name(&server, "state-rt");
    ok(&server, &["create", &name, "--json"]);
    let wrote = ok_stdin(&server, &["state", "write", &name], SCRIPT.as_bytes());
    assert!(
        wrote.starts_with("wrote 9 messages (7 changes, 1 transaction) to "),
        "{wrote}"
    );

    // Human: TYPE/KEY<TAB>VALUE ordered by type and key.
    let shown = ok(&server, &["state", "show", &name]);
    assert_eq!(
        shown,
        "flag/dark\t{\"on\":true}\norder/o1\t{\"total\":30,\"user\":\"1\"}\n\
         user/1\t{\"name\":\"Alice Smith\"}\nuser/3\t{\"name\":\"Carol\"}\n"
    );
    let state = json_lines(&ok(&server, &["state", "show", &name, "--output", "json"]));
    assert_eq!(state.len(), 1);
    assert_eq!(
        serde_json::from_value::<Model>(state[0].clone()).unwrap(),
        expected_after_script()
    );
    let users = ok(&server, &["state", "show", &name, "--type", "user"]);
    assert_eq!(users.lines().count(), 2, "{users}");
    let none = json_lines(&ok(
        &server,
        &["state", "show", &name, "--type", "nope", "--output", "json"],
    ));
    assert_eq!(none, vec![json!({"nope": {}})]);

    // The messages themselves.
    let changes = ok(&server, &["state", "changes", &name]);
    let lines: Vec<&str> = changes.lines().collect();
    assert_eq!(
        lines,
        vec![
            "insert\tuser/1\t{\"name\":\"Alice\"}",
            "insert\tuser/2\t{\"name\":\"Bob\"}",
            "update\tuser/1\t{\"name\":\"Alice Smith\"}\ttxid=tx-1",
            "insert\torder/o1\t{\"total\":30,\"user\":\"1\"}\ttxid=tx-1",
            "insert\tuser/3\t{\"name\":\"Carol\"}",
            "snapshot-start",
            "insert\tflag/dark\t{\"on\":true}",
            "snapshot-end",
            "delete\tuser/2",
        ]
    );
    let messages = json_lines(&ok(
        &server,
        &["state", "changes", &name, "--output", "json"],
    ));
    assert_eq!(messages.len(), 9);
    // As written by the JSON line (StateWriter writes the validated wire form).
    assert_eq!(
        messages[4]["message"]["headers"]["timestamp"],
        "2025-01-15T10:30:00Z"
    );
    assert_eq!(messages[2]["message"]["headers"]["txid"], "tx-1");
    let last = messages.last().unwrap()["offset"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ok(&server, &["state", "changes", &name, "--from", &last]).is_empty());

    // More changes after that offset: `--from` shows only them.
    ok_stdin(
        &server,
        &["state", "write", &name],
        b"reset\ninsert user 9 {}\n",
    );
    let tail = ok(&server, &["state", "changes", &name, "--from", &last]);
    assert_eq!(tail, "reset\ninsert\tuser/9\t{}\n");
    assert_eq!(
        ok(&server, &["state", "show", &name]),
        "user/9\t{}\n",
        "reset clears the state"
    );
}

#[test]
fn invalid_input_and_streams_fail_with_clear_lines() {
    let server = server();
    let name = unique_name(&server, "state-bad");
    ok(&server, &["create", &name, "--json"]);
    ok_stdin(&server, &["state", "write", &name], b"insert t a 1\n");
    // A message that is not a valid change: exit 8, naming offset and field.
    ok(
        &server,
        &[
            "append",
            &name,
            r#"{"type":"t","key":"b","headers":{"operation":"upsert"}}"#,
        ],
    );
    for args in [
        vec!["state", "show", name.as_str()],
        vec!["state", "changes", name.as_str()],
    ] {
        let out = run(&server, &args);
        fails_with(
            &out,
            8,
            &[
                &name,
                "invalid message (`headers.operation`)",
                "message #",
                "at offset",
                "\"upsert\"",
            ],
        );
    }
    // `changes` printed the valid message before the invalid one.
    let out = run(&server, &["state", "changes", &name]);
    assert_eq!(text(&out.stdout), "insert\tt/a\t1\n");
    let db = temp_db("bad");
    let out = run(
        &server,
        &["state", "materialize", &name, "--db", db.to_str().unwrap()],
    );
    fails_with(&out, 8, &[&name, "`headers.operation`", "at offset"]);
    let _ = std::fs::remove_dir_all(db.parent().unwrap());

    // Bad input lines: exit 8, naming the line; nothing after it is written.
    let other = unique_name(&server, "state-bad-input");
    ok(&server, &["create", &other, "--json"]);
    let out = run_stdin(
        &server,
        &["state", "write", &other],
        b"insert t a 1\nupsert t b 2\ninsert t c 3\n",
    );
    fails_with(
        &out,
        8,
        &[
            &other,
            "stdin line 2: unknown command \"upsert\"",
            "the 1 message before line 2 were committed",
        ],
    );
    let out = run_stdin(
        &server,
        &["state", "write", &other],
        br#"{"type":"t","key":"","value":1,"headers":{"operation":"insert"}}"#,
    );
    fails_with(&out, 8, &["stdin line 1", "`key`", "must not be empty"]);
    // A transaction left open is not written.
    let out = run_stdin(
        &server,
        &["state", "write", &other],
        b"begin t1\ninsert t x 1\n",
    );
    fails_with(
        &out,
        8,
        &["ended inside the transaction begun at line 1; it was not written"],
    );
    assert_eq!(ok(&server, &["state", "show", &other]), "t/a\t1\n");

    // Not JSON, missing, wrong database.
    let bytes = unique_name(&server, "state-bytes");
    ok(&server, &["create", &bytes, "--content-type", "text/plain"]);
    fails_with(
        &run(&server, &["state", "show", &bytes]),
        8,
        &[&bytes, "not a JSON stream (content type text/plain)"],
    );
    let missing = unique_name(&server, "state-missing");
    fails_with(
        &run(&server, &["state", "changes", &missing]),
        3,
        &[&missing, "not found"],
    );
    let db = temp_db("owner");
    ok(
        &server,
        &["state", "materialize", &other, "--db", db.to_str().unwrap()],
    );
    fails_with(
        &run(
            &server,
            &["state", "materialize", &name, "--db", db.to_str().unwrap()],
        ),
        4,
        &["materializes", "use one database per stream"],
    );
    // Usage errors.
    assert_eq!(
        run(&server, &["state", "materialize", &name]).status.code(),
        Some(2)
    );
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

#[test]
fn show_live_prints_the_state_then_each_change_until_closed() {
    let server = server();
    let name = unique_name(&server, "state-live");
    ok(&server, &["create", &name, "--json"]);
    ok_stdin(&server, &["state", "write", &name], SCRIPT.as_bytes());
    let mut child = command(
        &server,
        &["state", "show", &name, "--live", "--output", "json"],
    )
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let lines = line_channel(child.stdout.take().unwrap());
    let state: Value = serde_json::from_str(&next_line(&lines, "the state")).unwrap();
    assert_eq!(
        serde_json::from_value::<Model>(state).unwrap(),
        expected_after_script()
    );
    ok_stdin(
        &server,
        &["state", "write", &name],
        b"update user 3 {\"name\":\"Carol C\"}\nbegin t\ndelete user 1\ninsert order o2 {}\ncommit\n\
          snapshot-start\ninsert flag x 1\nsnapshot-end\nreset\n",
    );
    let changes: Vec<Value> = (0..5)
        .map(|i| serde_json::from_str(&next_line(&lines, &format!("change {i}"))).unwrap())
        .collect();
    assert_eq!(
        changes,
        vec![
            json!({"op": "update", "type": "user", "key": "3", "value": {"name": "Carol C"}}),
            json!({"op": "delete", "type": "user", "key": "1"}),
            json!({"op": "insert", "type": "order", "key": "o2", "value": {}}),
            json!({"op": "insert", "type": "flag", "key": "x", "value": 1}),
            json!({"op": "reset"}),
        ]
    );
    ok(&server, &["close", &name]);
    let out = wait_with_timeout(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// The `state materialize` summary (`--output json`).
fn materialize_json(server: &TestServer, name: &str, db: &Path) -> Value {
    let out = ok(
        server,
        &[
            "state",
            "materialize",
            name,
            "--db",
            db.to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    json_lines(&out).pop().expect("a summary line")
}

#[test]
fn materialize_into_sqlite_resumes_where_it_stopped() {
    let server = server();
    let name = unique_name(&server, "state-sqlite");
    ok(&server, &["create", &name, "--json"]);
    ok_stdin(&server, &["state", "write", &name], SCRIPT.as_bytes());
    let db = temp_db("resume");
    let first = materialize_json(&server, &name, &db);
    assert_eq!(first["applied_changes"], 7, "{first}");
    assert_eq!(first["applied_this_run"], 7, "{first}");
    assert_eq!(first["stopped"], "caught-up", "{first}");
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.snapshot().unwrap(), expected_after_script());
    drop(store);

    // Again: nothing new, nothing applied twice.
    let again = materialize_json(&server, &name, &db);
    assert_eq!(again["applied_changes"], 7, "{again}");
    assert_eq!(again["applied_this_run"], 0, "{again}");
    assert_eq!(again["offset"], first["offset"]);

    // More changes: only they are applied; human summary and stderr progress.
    ok_stdin(
        &server,
        &["state", "write", &name],
        b"delete order o1\ninsert user 4 {\"name\":\"Dan\"}\n",
    );
    let out = run(
        &server,
        &["state", "materialize", &name, "--db", db.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    assert!(
        summary.contains("9 changes applied (2 this run)") && summary.ends_with("; caught up\n"),
        "{summary}"
    );
    assert!(
        text(&out.stderr).contains("resuming") && text(&out.stderr).contains("(7 changes applied)"),
        "{}",
        text(&out.stderr)
    );
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.applied_changes().unwrap(), 9);
    assert_eq!(store.get("order", "o1").unwrap(), None);
    assert_eq!(
        store.get("user", "4").unwrap(),
        Some(json!({"name": "Dan"}))
    );
    // Queryable with SQL (SQLite's JSON operators).
    let name_of_4: String = store
        .connection()
        .query_row(
            "SELECT value ->> '$.name' FROM ds_state WHERE entity_type = 'user' AND key = '4'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(name_of_4, "Dan");
    drop(store);

    // A closed stream: --live stops at its end with "closed".
    ok(&server, &["close", &name]);
    let out = ok(
        &server,
        &[
            "state",
            "materialize",
            &name,
            "--db",
            db.to_str().unwrap(),
            "--live",
            "--output",
            "json",
        ],
    );
    assert_eq!(json_lines(&out)[0]["stopped"], "closed", "{out}");
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}

// --- exactly once across kill -9 -------------------------------------------

const CHANGES: usize = 20_000;
const KEYS: u64 = 500;

/// Change `i`: upserts over `KEYS` keys of two types, every fifth a delete.
fn change(i: usize) -> (String, String, Option<Value>) {
    let r = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let ty = if r & 1 == 0 { "user" } else { "order" };
    let key = format!("k{}", (r >> 8) % KEYS);
    let value = (i % 5 != 4).then(|| json!({ "n": i }));
    (ty.to_owned(), key, value)
}

fn change_line(i: usize) -> String {
    match change(i) {
        (t, k, Some(v)) => format!("update {t} {k} {v}\n"),
        (t, k, None) => format!("delete {t} {k}\n"),
    }
}

fn model_after(n: usize) -> Model {
    let mut model = Model::new();
    for i in 0..n {
        let (t, k, v) = change(i);
        match v {
            Some(v) => {
                model.entry(t).or_default().insert(k, v);
            }
            None => {
                if let Some(m) = model.get_mut(&t) {
                    m.remove(&k);
                    if m.is_empty() {
                        model.remove(&t);
                    }
                }
            }
        }
    }
    model
}

/// The database after a kill: exactly the model after as many changes as
/// it counts as applied (state and count commit together), never fewer
/// than before. Returns the count.
fn check_db(db: &Path, previous: usize, what: &str) -> usize {
    let store = SqliteStore::open(db).unwrap();
    let applied = store.applied_changes().unwrap() as usize;
    assert!(
        applied >= previous,
        "{what}: the applied count went back {previous} -> {applied}"
    );
    assert!(applied <= CHANGES, "{what}: {applied} > {CHANGES}");
    assert_eq!(
        store.snapshot().unwrap(),
        model_after(applied),
        "{what}: the database is not the model after {applied} changes"
    );
    applied
}

/// A small deterministic pseudo-random sequence (xorshift), seeded by time.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(nanos | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `state materialize --live` killed with SIGKILL 5 times (and stopped with
/// ctrl-c once) while `state write` is writing 20,000 changes: after every
/// kill the database is consistent, and in the end it equals the model with
/// every change applied exactly once.
#[test]
fn materialize_is_exactly_once_across_kill_9() {
    let server = server();
    let name = unique_name(&server, "state-kill");
    ok(&server, &["create", &name, "--json"]);
    let db = temp_db("kill");
    let db_arg = db.to_str().unwrap().to_owned();

    // The writer: one `state write` process fed over a few seconds.
    let mut writer = command(&server, &["state", "write", &name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dstream state write");
    let mut input = writer.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for chunk in (0..CHANGES).collect::<Vec<_>>().chunks(250) {
            let lines: String = chunk.iter().map(|&i| change_line(i)).collect();
            input.write_all(lines.as_bytes()).unwrap();
            input.flush().unwrap();
            std::thread::sleep(Duration::from_millis(60));
        }
    });

    let mut rng = Rng::new();
    let mut applied = 0;
    let mut mid_stream = 0;
    let materializer = || {
        command(
            &server,
            &["state", "materialize", &name, "--db", &db_arg, "--live"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dstream state materialize")
    };
    for round in 1..=6 {
        let mut child = materializer();
        std::thread::sleep(Duration::from_millis(400 + rng.below(500)));
        if round == 3 {
            // Graceful: ctrl-c commits the batch in hand and exits 0.
            interrupt(&child);
            let out = wait_with_timeout(child, Duration::from_secs(20));
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            assert!(
                text(&out.stdout).contains("stopped by ctrl-c"),
                "{}",
                text(&out.stdout)
            );
        } else {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
        applied = check_db(&db, applied, &format!("round {round}"));
        mid_stream += usize::from(applied > 0 && applied < CHANGES);
        eprintln!("round {round}: {applied} changes applied");
    }
    feeder.join().unwrap();
    let out = wait_with_timeout(writer, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("wrote {CHANGES} messages")),
        "{}",
        text(&out.stdout)
    );
    assert!(
        mid_stream >= 2,
        "only {mid_stream} stops landed mid-stream: the test did not test"
    );

    // Restart without --live: catches up and stops.
    let last = materialize_json(&server, &name, &db);
    assert_eq!(last["applied_changes"], CHANGES, "{last}");
    assert_eq!(
        last["applied_this_run"].as_u64().unwrap() as usize,
        CHANGES - applied
    );
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(store.applied_changes().unwrap() as usize, CHANGES);
    assert_eq!(store.snapshot().unwrap(), model_after(CHANGES));
    let _ = std::fs::remove_dir_all(db.parent().unwrap());
}
