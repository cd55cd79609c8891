//! Subscription management and pull-wake delivery against the Node
//! reference server (the only one with subscriptions), and the typed
//! "unsupported" answer of the Rust server.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_streams_client::consumer::{Batch, Flow, Handler, Json};
use durable_streams_client::subscription::{
    Claim, LinkType, StreamAck, SubscriptionSpec, SubscriptionType, Subscriptions, Worker,
};
use durable_streams_client::{
    Client, CreateOptions, ErrorKind, Offset, Result, SubscriptionErrorCode,
};
use serde::{Deserialize, Serialize};
use test_servers::{ServerKind, TestServer};

fn subs(server: &TestServer) -> Subscriptions {
    common::client()
        .subscriptions(server.base_url())
        .expect("subscriptions")
}

async fn create_json(subs: &Subscriptions, path: &str) {
    subs.stream(path)
        .unwrap()
        .create_with(CreateOptions::json())
        .await
        .unwrap_or_else(|e| panic!("create {path}: {e}"));
}

fn code(e: &durable_streams_client::Error) -> SubscriptionErrorCode {
    match e.kind() {
        ErrorKind::Subscription { code } => *code,
        other => panic!("expected a subscription error, got {other:?}: {e}"),
    }
}

#[tokio::test]
async fn create_reconfirm_conflict_get_delete() {
    let server = common::node();
    let subs = subs(&server);
    create_json(&subs, "events/a").await;
    create_json(&subs, "wake/pool").await;
    let spec = SubscriptionSpec::pull_wake("wake/pool")
        .pattern("events/*")
        .stream("other/x")
        .lease_ttl(Duration::from_secs(5))
        .description("d");
    let first = subs.create("sub-1", &spec).await.unwrap();
    assert!(first.created);
    assert_eq!(first.subscription.kind, SubscriptionType::PullWake);
    let again = subs.create("sub-1", &spec).await.unwrap();
    assert!(
        !again.created,
        "an identical create is a re-confirmation (200)"
    );
    let other = spec.clone().description("changed");
    let err = subs.create("sub-1", &other).await.unwrap_err();
    assert_eq!(code(&err), SubscriptionErrorCode::AlreadyExists);
    assert_eq!(err.status(), Some(409));

    let got = subs.get("sub-1").await.unwrap();
    assert_eq!(got.id, "sub-1");
    assert_eq!(got.pattern.as_deref(), Some("events/*"));
    assert_eq!(got.wake_stream.as_deref(), Some("wake/pool"));
    assert_eq!(got.lease_ttl, Duration::from_secs(5));
    let links: HashMap<_, _> = got.streams.iter().map(|l| (l.path.as_str(), l)).collect();
    assert_eq!(links["events/a"].link_type, LinkType::Glob);
    assert_eq!(links["other/x"].link_type, LinkType::Explicit);

    subs.delete("sub-1").await.unwrap();
    let err = subs.get("sub-1").await.unwrap_err();
    assert_eq!(code(&err), SubscriptionErrorCode::NotFound);
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn membership_add_and_remove_nested_paths() {
    let server = common::node();
    let subs = subs(&server);
    create_json(&subs, "wake/m").await;
    create_json(&subs, "deep/a/b/c").await;
    subs.create(
        "m",
        &SubscriptionSpec::pull_wake("wake/m").pattern("deep/*/b/*"),
    )
    .await
    .unwrap();
    subs.add_streams("m", ["deep/a/b/c", "x/y z"])
        .await
        .unwrap();
    subs.add_streams("m", ["x/y z"]).await.unwrap(); // idempotent
    let got = subs.get("m").await.unwrap();
    let kinds: HashMap<_, _> = got
        .streams
        .iter()
        .map(|l| (l.path.clone(), l.link_type))
        .collect();
    assert_eq!(
        kinds["deep/a/b/c"],
        LinkType::Explicit,
        "explicit wins over glob"
    );
    assert_eq!(kinds["x/y z"], LinkType::Explicit);

    subs.remove_stream("m", "x/y z").await.unwrap();
    subs.remove_stream("m", "deep/a/b/c").await.unwrap();
    subs.remove_stream("m", "never/linked").await.unwrap(); // idempotent
    let got = subs.get("m").await.unwrap();
    let kinds: HashMap<_, _> = got
        .streams
        .iter()
        .map(|l| (l.path.clone(), l.link_type))
        .collect();
    assert!(!kinds.contains_key("x/y z"));
    assert_eq!(kinds["deep/a/b/c"], LinkType::Glob, "the glob link stays");
}

#[tokio::test]
async fn invalid_requests_are_typed_and_local_checks_send_nothing() {
    let server = common::node();
    let subs = subs(&server);
    // Checked locally: named field, no request.
    let err = subs
        .create(
            "s",
            &SubscriptionSpec::pull_wake("w").lease_ttl(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidArgument { field: "streams" }),
        "{err}"
    );
    let err = subs
        .create(
            "s",
            &SubscriptionSpec::pull_wake("w")
                .stream("a")
                .lease_ttl(Duration::from_secs(900)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::InvalidArgument { field: "lease_ttl" }
        ),
        "{err}"
    );
    let err = subs.add_streams("s", ["__ds/x"]).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidArgument { .. }),
        "{err}"
    );
    // Refused by the server: typed codes.
    let err = subs.add_streams("missing", ["a"]).await.unwrap_err();
    assert_eq!(code(&err), SubscriptionErrorCode::NotFound);
    let err = subs
        .create(
            "hook",
            &SubscriptionSpec::webhook("http://127.0.0.1:9/h").stream("a"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        SubscriptionErrorCode::InvalidRequest,
        "webhooks are off: {err}"
    );
    let err = subs.claim("missing", "w").await.unwrap_err();
    assert_eq!(code(&err), SubscriptionErrorCode::NotFound);
}

#[tokio::test]
async fn a_server_without_subscriptions_is_reported_as_unsupported() {
    let server = TestServer::start(ServerKind::Rust);
    let client = Client::new();
    let subs = client.subscriptions(server.base_url()).unwrap();
    let spec = SubscriptionSpec::pull_wake("wake").pattern("a/*");
    let err = subs.create("s", &spec).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Unsupported {
                feature: "subscriptions"
            }
        ),
        "{err}"
    );
    // Nothing was created by mistake: the Rust server would have taken the
    // PUT for a stream create.
    let accidental = client
        .stream(format!(
            "{}/v1/stream/__ds/subscriptions/s",
            server.base_url()
        ))
        .unwrap();
    let head = accidental.head().await.unwrap_err();
    assert!(matches!(head.kind(), ErrorKind::NotFound), "{head}");
    for err in [
        subs.get("s").await.unwrap_err(),
        subs.claim("s", "w").await.unwrap_err(),
    ] {
        assert!(matches!(err.kind(), ErrorKind::Unsupported { .. }), "{err}");
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Event {
    stream: String,
    n: u64,
}

/// The low-level delivery calls: claim, the normal "nothing for you"
/// answers, a fenced stale ack that commits nothing, and a done ack.
#[tokio::test]
async fn claim_ack_release_and_fencing() {
    let server = common::node();
    let subs = subs(&server);
    create_json(&subs, "wake/f").await;
    create_json(&subs, "f/a").await;
    subs.create(
        "f",
        &SubscriptionSpec::pull_wake("wake/f")
            .pattern("f/*")
            .lease_ttl(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    assert_eq!(subs.claim("f", "w1").await.unwrap(), Claim::NoPendingWork);
    let a = subs.stream("f/a").unwrap();
    let tail = a
        .append_json(&Event {
            stream: "f/a".into(),
            n: 1,
        })
        .await
        .unwrap()
        .next_offset
        .unwrap();

    let Claim::Claimed(stale) = subs.claim("f", "w1").await.unwrap() else {
        panic!("expected a claim");
    };
    assert_eq!(stale.pending().count(), 1);
    assert!(!format!("{stale:?}").contains(stale.token().expose_secret()));
    match subs.claim("f", "w2").await.unwrap() {
        Claim::AlreadyClaimed { holder, .. } => assert_eq!(holder.as_deref(), Some("w1")),
        other => panic!("expected AlreadyClaimed, got {other:?}"),
    }
    // w1 stalls past its 1 s lease; w2 takes over.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let Claim::Claimed(fresh) = subs.claim("f", "w2").await.unwrap() else {
        panic!("expected w2 to claim after the lease lapsed");
    };
    assert!(fresh.generation > stale.generation);
    let err = subs
        .ack(&stale, &[StreamAck::new("f/a", tail.clone())], true)
        .await
        .unwrap_err();
    assert_eq!(code(&err), SubscriptionErrorCode::Fenced);
    let acked = |s: &durable_streams_client::subscription::Subscription| {
        s.streams
            .iter()
            .find(|l| l.path == "f/a")
            .unwrap()
            .acked_offset
            .clone()
    };
    assert_ne!(
        acked(&subs.get("f").await.unwrap()),
        tail,
        "a fenced ack commits nothing"
    );
    let err = subs.release(&stale).await.unwrap_err();
    assert_eq!(code(&err), SubscriptionErrorCode::Fenced);

    let out = subs
        .ack(&fresh, &[StreamAck::new("f/a", tail.clone())], true)
        .await
        .unwrap();
    assert!(!out.next_wake);
    assert_eq!(acked(&subs.get("f").await.unwrap()), tail);
    assert_eq!(subs.claim("f", "w2").await.unwrap(), Claim::NoPendingWork);
    let _ = Offset::start();
}

/// Records every event with the worker that handled it, and catches two
/// workers inside the same subscription at once.
#[derive(Clone)]
struct Recorder {
    worker: usize,
    seen: Arc<Mutex<Vec<(usize, Event)>>>,
    busy: Arc<Mutex<HashMap<String, usize>>>,
    overlaps: Arc<Mutex<u32>>,
    delay: Duration,
}

impl Handler for Recorder {
    type Format = Json<Event>;

    async fn handle_batch(&mut self, batch: &Batch<Event>) -> Result<Flow> {
        let key = batch.stream.to_string();
        {
            let mut busy = self.busy.lock().unwrap();
            if busy.insert(key.clone(), self.worker).is_some() {
                *self.overlaps.lock().unwrap() += 1;
            }
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.busy.lock().unwrap().remove(&key);
        let mut seen = self.seen.lock().unwrap();
        for e in &batch.items {
            assert_eq!(e.stream, *batch.stream, "the batch names its stream");
            seen.push((self.worker, e.clone()));
        }
        Ok(Flow::Continue)
    }
}

fn recorder(worker: usize, shared: &Recorder) -> Recorder {
    Recorder {
        worker,
        ..shared.clone()
    }
}

/// Every event of every stream handled, in order per stream (duplicates
/// allowed only as a repeated suffix after a failover: at least once).
fn assert_complete_in_order(seen: &[(usize, Event)], streams: usize, per_stream: u64) {
    let mut next: HashMap<String, u64> = HashMap::new();
    for (_, e) in seen {
        let expected = next.entry(e.stream.clone()).or_insert(0);
        assert!(
            e.n <= *expected,
            "{}: event {} handled before {} (order or loss)",
            e.stream,
            e.n,
            expected
        );
        if e.n == *expected {
            *expected += 1;
        }
    }
    assert_eq!(next.len(), streams, "every stream was handled");
    for (stream, n) in next {
        assert_eq!(n, per_stream, "{stream}: all events handled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_twenty_streams_without_overlap() {
    const STREAMS: usize = 20;
    const PER_STREAM: u64 = 2_500; // 50,000 events
    let server = common::node();
    let subs = subs(&server);
    create_json(&subs, "wake/g").await;
    let mut streams = Vec::new();
    for i in 0..STREAMS {
        let path = format!("g/s{i:02}");
        create_json(&subs, &path).await;
        streams.push(path);
    }
    // Four shards so three workers have parallel work.
    let ids: Vec<String> = (0..4).map(|k| format!("g-{k}")).collect();
    for (k, id) in ids.iter().enumerate() {
        let shard: Vec<_> = streams.iter().skip(k).step_by(4).cloned().collect();
        subs.create(
            id,
            &SubscriptionSpec::pull_wake("wake/g")
                .streams(shard)
                .lease_ttl(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    }
    let shared = Recorder {
        worker: 0,
        seen: Arc::default(),
        busy: Arc::default(),
        overlaps: Arc::default(),
        delay: Duration::ZERO,
    };
    let mut workers = Vec::new();
    for w in 0..3 {
        workers.push(
            Worker::builder(&subs, recorder(w, &shared))
                .subscriptions(ids.clone())
                .wake_stream("wake/g")
                .name(format!("w{w}"))
                .start()
                .await
                .unwrap(),
        );
    }
    // Append while the workers run: 50 rounds of one batch per stream.
    let producer_subs = subs.clone();
    let streams_for_writer = streams.clone();
    let writer = tokio::spawn(async move {
        for round in 0..50u64 {
            for path in &streams_for_writer {
                let stream = producer_subs.stream(path).unwrap();
                let events: Vec<_> = (0..PER_STREAM / 50)
                    .map(|i| Event {
                        stream: path.clone(),
                        n: round * (PER_STREAM / 50) + i,
                    })
                    .collect();
                stream.append_json_batch(&events).await.unwrap();
            }
        }
    });
    writer.await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done = {
            let seen = shared.seen.lock().unwrap();
            let mut max: HashMap<&str, u64> = HashMap::new();
            for (_, e) in seen.iter() {
                let m = max.entry(e.stream.as_str()).or_default();
                *m = (*m).max(e.n + 1);
            }
            max.len() == STREAMS && max.values().all(|&n| n == PER_STREAM)
        };
        let mut acked_at_tail = done;
        if done {
            for id in &ids {
                let sub = subs.get(id).await.unwrap();
                for link in &sub.streams {
                    let tail = subs
                        .stream(&link.path)
                        .unwrap()
                        .head()
                        .await
                        .unwrap()
                        .next_offset;
                    acked_at_tail &= link.acked_offset == tail;
                }
            }
        }
        if acked_at_tail {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "workers did not finish in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut handled_by = [0usize; 3];
    for (w, _) in shared.seen.lock().unwrap().iter() {
        handled_by[*w] += 1;
    }
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
    let seen = shared.seen.lock().unwrap().clone();
    assert_complete_in_order(&seen, STREAMS, PER_STREAM);
    assert_eq!(
        *shared.overlaps.lock().unwrap(),
        0,
        "two workers in one stream at once"
    );
    assert!(
        handled_by.iter().filter(|&&n| n > 0).count() >= 2,
        "work was spread over the workers: {handled_by:?}"
    );
}

/// A worker killed mid-lease (no release): another takes over after the
/// 2 s lease and nothing is lost. A handler slower than three leases keeps
/// its lease by heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_after_a_killed_worker_and_heartbeats_for_slow_handlers() {
    let server = common::node();
    let subs = subs(&server);
    create_json(&subs, "wake/k").await;
    create_json(&subs, "k/a").await;
    subs.create(
        "k",
        &SubscriptionSpec::pull_wake("wake/k")
            .pattern("k/*")
            .lease_ttl(Duration::from_secs(2)),
    )
    .await
    .unwrap();
    let shared = Recorder {
        worker: 0,
        seen: Arc::default(),
        busy: Arc::default(),
        overlaps: Arc::default(),
        delay: Duration::from_millis(6500), // more than three 2 s leases
    };
    let slow = Worker::builder(&subs, recorder(0, &shared))
        .subscription("k")
        .name("slow")
        .start()
        .await
        .unwrap();
    let a = subs.stream("k/a").unwrap();
    a.append_json(&Event {
        stream: "k/a".into(),
        n: 0,
    })
    .await
    .unwrap();
    // The slow handler finishes its batch after 6.5 s and acks: heartbeats kept the lease.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while slow.stats().completed == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slow worker never completed: {:?}",
            slow.stats()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(slow.stats().leases_lost, 0);
    assert_eq!(slow.stats().fenced, 0);
    // Now kill it in the middle of the next batch.
    a.append_json(&Event {
        stream: "k/a".into(),
        n: 1,
    })
    .await
    .unwrap();
    while slow.stats().claims < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slow.abort();
    let fast = Worker::builder(
        &subs,
        Recorder {
            delay: Duration::ZERO,
            ..recorder(1, &shared)
        },
    )
    .subscription("k")
    .name("fast")
    .start()
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got: Vec<u64> = shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(w, _)| *w == 1)
            .map(|(_, e)| e.n)
            .collect();
        if got.contains(&1) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no takeover after the lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fast.shutdown().await.unwrap();
    let seen = shared.seen.lock().unwrap().clone();
    assert_complete_in_order(&seen, 1, 2);
}

/// Graceful shutdown (here through a supervisor) finishes the batch in
/// hand, acks it and releases: another worker continues at once, long
/// before the 60 s lease would have lapsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervised_worker_shutdown_releases_for_the_next_worker() {
    use durable_streams_client::supervisor::{ChildSpec, Supervisor};
    let server = common::node();
    let subs = subs(&server);
    create_json(&subs, "wake/r").await;
    create_json(&subs, "r/a").await;
    create_json(&subs, "r/b").await;
    subs.create(
        "r",
        &SubscriptionSpec::pull_wake("wake/r")
            .pattern("r/*")
            .lease_ttl(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let shared = Recorder {
        worker: 0,
        seen: Arc::default(),
        busy: Arc::default(),
        overlaps: Arc::default(),
        delay: Duration::from_millis(1500),
    };
    let first = recorder(0, &shared);
    let child_subs = subs.clone();
    let supervisor = Supervisor::builder()
        .child(ChildSpec::worker("first", move || {
            Worker::builder(&child_subs, first.clone())
                .subscription("r")
                .name("first")
        }))
        .stop_on_ctrl_c(false)
        .build()
        .unwrap()
        .spawn();
    for path in ["r/a", "r/b"] {
        subs.stream(path)
            .unwrap()
            .append_json(&Event {
                stream: path.into(),
                n: 0,
            })
            .await
            .unwrap();
    }
    // Wait until the first worker is inside its first (slow) batch.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while shared.busy.lock().unwrap().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first worker never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = tokio::time::Instant::now();
    supervisor.shutdown().await.unwrap();
    assert_eq!(
        shared.seen.lock().unwrap().len(),
        1,
        "the batch in hand was finished"
    );
    let second = Worker::builder(
        &subs,
        Recorder {
            delay: Duration::ZERO,
            ..recorder(1, &shared)
        },
    )
    .subscription("r")
    .name("second")
    .start()
    .await
    .unwrap();
    while shared.seen.lock().unwrap().len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the released wake was not taken over: {:?}",
            second.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.shutdown().await.unwrap();
    let seen = shared.seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        2,
        "nothing handled twice after a clean release: {seen:?}"
    );
    assert_eq!(seen[0].0, 0);
    assert_eq!(seen[1].0, 1);
}

/// Workers behind a hostile proxy: claims applied upstream but answered
/// 502, 503s, final acks whose answers are lost, failing stream reads and
/// cut SSE connections on the wake stream. Every event is still handled in
/// order per stream, the cursors end at the tails, and the number of
/// requests stays bounded (no hot loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_survive_a_hostile_proxy_without_hammering() {
    use test_servers::fault_proxy::{Fault, FaultProxy, Rule};
    const STREAMS: usize = 4;
    const PER_STREAM: u64 = 300;
    let server = common::node();
    let proxy = FaultProxy::start(&server);
    let direct = subs(&server);
    let subs = common::client().subscriptions(proxy.base_url()).unwrap();
    create_json(&direct, "wake/h").await;
    for i in 0..STREAMS {
        create_json(&direct, &format!("h/s{i}")).await;
    }
    direct
        .create(
            "h",
            &SubscriptionSpec::pull_wake("wake/h")
                .pattern("h/*")
                .lease_ttl(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    let rules = [
        proxy.add_rule(
            Rule::new(Fault::StatusAfterForward(502))
                .path("/claim")
                .times(2),
        ),
        proxy.add_rule(
            Rule::new(Fault::Status(503, vec![]))
                .path("/claim")
                .times(3),
        ),
        proxy.add_rule(Rule::new(Fault::DropAfterForward).path("/ack").times(2)),
        proxy.add_rule(
            Rule::new(Fault::Status(500, vec![]))
                .method("GET")
                .path("/h/s")
                .times(5),
        ),
        proxy.add_rule(
            Rule::new(Fault::CutSseAfterFirstControl)
                .path("/wake/h")
                .times(3),
        ),
    ];

    let shared = Recorder {
        worker: 0,
        seen: Arc::default(),
        busy: Arc::default(),
        overlaps: Arc::default(),
        delay: Duration::ZERO,
    };
    let mut workers = Vec::new();
    for w in 0..2 {
        workers.push(
            Worker::builder(&subs, recorder(w, &shared))
                .subscription("h")
                .name(format!("h{w}"))
                .start()
                .await
                .unwrap(),
        );
    }
    for round in 0..10u64 {
        for i in 0..STREAMS {
            let path = format!("h/s{i}");
            let events: Vec<_> = (0..PER_STREAM / 10)
                .map(|n| Event {
                    stream: path.clone(),
                    n: round * (PER_STREAM / 10) + n,
                })
                .collect();
            direct
                .stream(&path)
                .unwrap()
                .append_json_batch(&events)
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let sub = direct.get("h").await.unwrap();
        let mut at_tail = sub.streams.len() == STREAMS;
        for link in &sub.streams {
            let tail = direct
                .stream(&link.path)
                .unwrap()
                .head()
                .await
                .unwrap()
                .next_offset;
            at_tail &= link.acked_offset == tail;
        }
        if at_tail {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "cursors never reached the tails: {:?} / {:?}",
            sub.streams,
            workers.iter().map(|w| w.stats()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
    let seen = shared.seen.lock().unwrap().clone();
    assert_complete_in_order(&seen, STREAMS, PER_STREAM);
    assert_eq!(*shared.overlaps.lock().unwrap(), 0);
    let hits: Vec<u64> = rules.iter().map(|r| proxy.rule_hits(*r)).collect();
    assert!(
        hits.iter().all(|&h| h > 0),
        "every fault was exercised: {hits:?}"
    );
    let total = proxy.total_requests();
    eprintln!("faults hit {hits:?}, {total} requests through the proxy");
    assert!(
        total < 1_500,
        "{total} requests through the proxy: a hot loop?"
    );
}
