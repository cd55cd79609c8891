//! Exactly once into SQLite: a materializer killed 10 times (5 task aborts,
//! 5 `kill -9` of a child process) while 100,000 changes are written. After
//! each kill the database equals the model after exactly as many changes as
//! it counts as applied (state and count commit together), the count never
//! goes back, and at the end it equals the full model with every change
//! applied once.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use durable_streams_client::state::{Materializer, SqliteStore, StateWriter};
use durable_streams_client::{Client, CreateOptions, LiveMode, Producer, Stream};
use serde_json::{Value, json};
use test_servers::{ServerKind, TestServer};
use tokio_util::sync::CancellationToken;

const CHANGES: usize = 100_000;
const KEYS: u64 = 5_000;
const CHILD_URL: &str = "DS_STATE_CHILD_STREAM";
const CHILD_DB: &str = "DS_STATE_CHILD_DB";

type Model = BTreeMap<String, BTreeMap<String, Value>>;

/// Change `i`: mostly upserts over `KEYS` keys of two types, every fifth a delete.
fn change(i: usize) -> (String, String, Option<Value>) {
    let r = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let ty = if r & 1 == 0 { "user" } else { "order" };
    let key = format!("k{}", (r >> 8) % KEYS);
    let value = if i % 5 == 4 {
        None
    } else {
        Some(json!({ "n": i }))
    };
    (ty.to_owned(), key, value)
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

async fn write_all(stream: Stream) {
    let producer = Producer::builder(&stream, "state-kill-writer")
        .connect()
        .await
        .unwrap();
    let writer = StateWriter::new(producer);
    for i in 0..CHANGES {
        let (t, k, v) = change(i);
        // Insert when new is not tracked: `update` and `insert` materialize alike.
        let ack = match v {
            Some(v) => writer.update(&t, &k, &v).await,
            None => writer.delete(&t, &k).await,
        };
        drop(ack.unwrap());
        if i % 250 == 249 {
            // Spread the writes over a few seconds so the kills land mid-stream.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    writer.close().await.unwrap();
}

/// Check the database after a kill; returns its applied count.
fn check(db: &Path, previous: usize, what: &str) -> usize {
    let store = SqliteStore::open(db).unwrap();
    let applied = store.applied_changes().unwrap() as usize;
    assert!(
        applied >= previous,
        "{what}: applied count went back {previous} -> {applied}"
    );
    assert!(
        applied <= CHANGES,
        "{what}: {applied} applications of {CHANGES} changes"
    );
    assert_eq!(
        store.snapshot().unwrap(),
        model_after(applied),
        "{what}: the database is not the model after {applied} changes"
    );
    applied
}

fn spawn_child(stream_url: &str, db: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_materializer", "--ignored", "--nocapture"])
        .env(CHILD_URL, stream_url)
        .env(CHILD_DB, db)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child materializer")
}

fn temp_db() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ds-state-kill-{}", fastrand::u64(..)));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("state.db")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_materializer_survives_ten_kills_exactly_once() {
    let server = TestServer::start(ServerKind::Rust);
    let client = Client::new();
    let stream = client
        .stream(server.unique_stream_url("state-kill"))
        .unwrap();
    stream.create_with(CreateOptions::json()).await.unwrap();
    let db = temp_db();
    let writer = tokio::spawn(write_all(stream.clone()));

    let mut applied = 0;
    for round in 0..10 {
        let run_for = Duration::from_millis(150 + fastrand::u64(0..350));
        if round % 2 == 0 {
            let handle = Materializer::builder(&stream)
                .store(SqliteStore::open(&db).unwrap())
                .live(LiveMode::LongPoll)
                .start();
            tokio::time::sleep(run_for).await;
            handle.abort();
            // Let the aborted task's blocking store call finish and drop.
            tokio::time::sleep(Duration::from_millis(50)).await;
        } else {
            let mut child = spawn_child(stream.url().as_str(), &db);
            tokio::time::sleep(run_for + Duration::from_millis(200)).await;
            child.kill().unwrap();
            child.wait().unwrap();
        }
        applied = check(&db, applied, &format!("kill {}", round + 1));
        eprintln!("kill {}: {applied} changes applied", round + 1);
    }
    writer.await.unwrap();
    Materializer::builder(&stream)
        .store(SqliteStore::open(&db).unwrap())
        .live(LiveMode::Off)
        .run(CancellationToken::new())
        .await
        .unwrap();
    let store = SqliteStore::open(&db).unwrap();
    assert_eq!(
        store.applied_changes().unwrap() as usize,
        CHANGES,
        "every change applied exactly once"
    );
    assert_eq!(store.snapshot().unwrap(), model_after(CHANGES));
    assert!(
        applied > 0,
        "no kill happened after progress: the test did not test"
    );
    std::fs::remove_dir_all(db.parent().unwrap()).ok();
}

/// Not a test on its own: the child process `sqlite_materializer_survives_ten_kills_exactly_once`
/// starts (and kills).
#[tokio::test]
#[ignore = "child process of sqlite_materializer_survives_ten_kills_exactly_once; started by it"]
async fn child_materializer() {
    let (Ok(url), Ok(db)) = (std::env::var(CHILD_URL), std::env::var(CHILD_DB)) else {
        panic!("{CHILD_URL} and {CHILD_DB} must be set: this is a child process of another test");
    };
    let stream = Client::new().stream(url).unwrap();
    Materializer::builder(&stream)
        .store(SqliteStore::open(db).unwrap())
        .live(LiveMode::LongPoll)
        .run(CancellationToken::new())
        .await
        .unwrap();
}
