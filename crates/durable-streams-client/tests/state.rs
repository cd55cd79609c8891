//! The State Protocol against both real servers: the materialized state
//! equals a model applied in memory from the same generated changes
//! (catch-up and live), `await_txid` never resolves early, and typed
//! collections reject malformed values naming the offset.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use durable_streams_client::state::{Materializer, MemoryState, StateWriter};
use durable_streams_client::{CreateOptions, ErrorKind, LiveMode, Producer, Stream};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde::Deserialize;
use serde_json::{Value, json};
use test_servers::TestServer;
use tokio_util::sync::CancellationToken;

type Model = BTreeMap<String, BTreeMap<String, Value>>;

#[derive(Debug, Clone)]
enum Step {
    Insert(String, String, i64),
    Update(String, String, i64),
    Delete(String, String),
    Reset,
    /// A snapshot of these puts, delimited by snapshot-start/end.
    Snapshot(Vec<(String, String, i64)>),
    /// A transaction of these puts.
    Tx(Vec<(String, String, i64)>),
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    let ty = prop::sample::select(vec!["user", "order", "flag"]).prop_map(String::from);
    let key = (0u8..12).prop_map(|k| format!("k{k}"));
    // The Node server stores JSON through JavaScript numbers: stay within 2^53.
    let put = (ty.clone(), key.clone(), any::<i32>().prop_map(i64::from));
    let step = prop_oneof![
        6 => put.clone().prop_map(|(t, k, v)| Step::Insert(t, k, v)),
        4 => put.clone().prop_map(|(t, k, v)| Step::Update(t, k, v)),
        3 => (ty, key).prop_map(|(t, k)| Step::Delete(t, k)),
        1 => Just(Step::Reset),
        1 => prop::collection::vec(put.clone(), 1..6).prop_map(Step::Snapshot),
        1 => prop::collection::vec(put, 1..6).prop_map(Step::Tx),
    ];
    prop::collection::vec(step, 1..60)
}

fn put(model: &mut Model, t: &str, k: &str, v: i64) {
    model
        .entry(t.into())
        .or_default()
        .insert(k.into(), json!({ "v": v }));
}

fn apply_model(model: &mut Model, steps: &[Step]) {
    for step in steps {
        match step {
            Step::Insert(t, k, v) | Step::Update(t, k, v) => put(model, t, k, *v),
            Step::Delete(t, k) => {
                if let Some(m) = model.get_mut(t) {
                    m.remove(k);
                    if m.is_empty() {
                        model.remove(t);
                    }
                }
            }
            Step::Reset => model.clear(),
            Step::Snapshot(puts) | Step::Tx(puts) => {
                for (t, k, v) in puts {
                    put(model, t, k, *v);
                }
            }
        }
    }
}

async fn write_steps(writer: &StateWriter, steps: &[Step], tx_base: usize) {
    for (i, step) in steps.iter().enumerate() {
        let ack = match step {
            Step::Insert(t, k, v) => writer.insert(t, k, &json!({ "v": v })).await,
            Step::Update(t, k, v) => writer.update(t, k, &json!({ "v": v })).await,
            Step::Delete(t, k) => writer.delete(t, k).await,
            Step::Reset => writer.reset(None).await,
            Step::Snapshot(puts) => {
                drop(writer.snapshot_start().await.unwrap());
                for (t, k, v) in puts {
                    drop(writer.insert(t, k, &json!({ "v": v })).await.unwrap());
                }
                writer.snapshot_end().await
            }
            Step::Tx(puts) => {
                let mut tx = writer.transaction(format!("tx-{}", tx_base + i));
                for (t, k, v) in puts {
                    tx.insert(t, k, &json!({ "v": v })).unwrap();
                }
                tx.commit().await
            }
        };
        drop(ack.unwrap());
    }
    writer.flush().await.unwrap();
}

async fn json_stream(server: &TestServer, prefix: &str) -> Stream {
    let stream = common::stream(server, &common::client(), prefix);
    stream.create_with(CreateOptions::json()).await.unwrap();
    stream
}

async fn writer_for(stream: &Stream) -> StateWriter {
    let producer = Producer::builder(stream, format!("w-{}", fastrand::u64(..)))
        .linger(Duration::from_millis(1))
        .connect()
        .await
        .unwrap();
    StateWriter::new(producer)
}

async fn wait_for(state: &MemoryState, expected: &Model) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut watch = state.watch();
    while state.snapshot() != *expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "live state never matched the model:\n got {:?}\nwant {:?}",
            state.snapshot(),
            expected
        );
        let _ = tokio::time::timeout(Duration::from_millis(200), watch.changed()).await;
    }
}

/// For each server, generated histories: written, then materialized by a
/// catch-up reader and by a live reader started before the writes.
#[test]
fn materialized_state_equals_the_model_on_both_servers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for server in common::servers() {
        let mut runner = TestRunner::new(Config {
            cases: 8,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&arb_steps(), |steps| {
                rt.block_on(async {
                    let stream = json_stream(&server, "state-model").await;
                    let live = Materializer::builder(&stream).live(LiveMode::Auto);
                    let live_state = live.state();
                    let live = live.start();
                    let writer = writer_for(&stream).await;
                    write_steps(&writer, &steps, 0).await;
                    writer.close().await.unwrap();
                    let mut model = Model::new();
                    apply_model(&mut model, &steps);

                    let catch_up = Materializer::builder(&stream).live(LiveMode::Off);
                    let state = catch_up.state();
                    catch_up.run(CancellationToken::new()).await.unwrap();
                    assert_eq!(state.snapshot(), model, "{} catch-up", server.kind());
                    wait_for(&live_state, &model).await;
                    live.shutdown().await.unwrap();
                });
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", server.kind()));
    }
}

/// `await_txid` resolves only once every change of the transaction is
/// visible, including a transaction large enough to span read chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_txid_never_resolves_early() {
    for server in common::servers() {
        let stream = json_stream(&server, "state-txid").await;
        let builder = Materializer::builder(&stream).live(LiveMode::LongPoll);
        let state = builder.state();
        let handle = builder.start();
        let writer = writer_for(&stream).await;
        for (txid, size) in [("small", 3usize), ("large", 20_000)] {
            let waiter = {
                let state = state.clone();
                tokio::spawn(async move {
                    state.await_txid(txid).await;
                    state.len(txid)
                })
            };
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(
                !waiter.is_finished(),
                "resolved before anything was written"
            );
            let mut tx = writer.transaction(txid);
            for k in 0..size {
                tx.insert(txid, &format!("{k:06}"), &json!({ "pad": "x".repeat(40) }))
                    .unwrap();
            }
            tx.commit().await.unwrap().await.unwrap();
            let seen = tokio::time::timeout(Duration::from_secs(30), waiter)
                .await
                .expect("await_txid never resolved")
                .unwrap();
            assert_eq!(
                seen,
                size,
                "{}: {txid} resolved with {seen} of {size} changes",
                server.kind()
            );
        }
        writer.close().await.unwrap();
        handle.shutdown().await.unwrap();
    }
}

#[derive(Debug, Deserialize, PartialEq)]
struct User {
    name: String,
}

#[tokio::test]
async fn typed_collections_reject_malformed_values_naming_the_offset() {
    let server = common::node();
    let stream = json_stream(&server, "state-typed").await;
    let writer = writer_for(&stream).await;
    drop(
        writer
            .insert("user", "1", &json!({ "name": "Alice" }))
            .await
            .unwrap(),
    );
    drop(writer.insert("other", "x", &json!(5)).await.unwrap());
    writer.flush().await.unwrap();
    let builder = Materializer::builder(&stream)
        .live(LiveMode::Off)
        .schema::<User>("user");
    let state = builder.state();
    builder.run(CancellationToken::new()).await.unwrap();
    let users = state.collection::<User>("user");
    assert_eq!(
        users.get("1").unwrap(),
        Some(User {
            name: "Alice".into()
        })
    );
    assert_eq!(users.len(), 1);

    drop(
        writer
            .update("user", "1", &json!({ "name": 5 }))
            .await
            .unwrap(),
    );
    writer.close().await.unwrap();
    let builder = Materializer::builder(&stream)
        .live(LiveMode::Off)
        .schema::<User>("user");
    let state = builder.state();
    let err = builder.run(CancellationToken::new()).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidMessage { field: "value" }),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("offset") && text.contains("user/1"), "{text}");
    // A batch with an invalid message is not applied at all: the state
    // stays at the last good batch (here, nothing: all three came in one read).
    assert_eq!(state.get("other", "x"), None);
    assert_eq!(state.offset(), None);
}

/// Malformed messages on the wire stop the materializer with a typed error
/// naming the field; nothing panics.
#[tokio::test]
async fn malformed_messages_are_typed_errors() {
    let server = common::node();
    for (body, field) in [
        (
            r#"{"type":"u","key":"1","headers":{"operation":"insert"}}"#,
            "value",
        ),
        (
            r#"{"type":"u","value":1,"headers":{"operation":"insert"}}"#,
            "key",
        ),
        (r#"{"headers":{"control":"rewind"}}"#, "headers.control"),
        (r#"42"#, "message"),
    ] {
        let stream = json_stream(&server, "state-bad").await;
        stream.append(body.to_owned()).await.unwrap();
        let err = Materializer::builder(&stream)
            .live(LiveMode::Off)
            .run(CancellationToken::new())
            .await
            .unwrap_err();
        match err.kind() {
            ErrorKind::InvalidMessage { field: f } => assert_eq!(*f, field, "{err}"),
            other => panic!("{body}: {other:?} {err}"),
        }
        assert!(err.to_string().contains("offset"), "{err}");
    }
}
