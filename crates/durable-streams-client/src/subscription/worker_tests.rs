//! Unit tests of `worker` (a sibling file to keep the module short).
use std::time::{Instant, SystemTime};

use super::*;
use crate::subscription::StreamAck;
use crate::subscription::types::{SecretToken, WakeSource};

fn wake(ttl: Duration) -> Wake {
    Wake {
        subscription_id: "s".into(),
        wake_id: "w".into(),
        generation: 1,
        streams: Vec::new(),
        lease_ttl: Some(ttl),
        callback_url: None,
        token: SecretToken::new("t".into()),
        source: WakeSource::Claim,
    }
}

#[test]
fn lease_lapses_before_the_server_ttl_and_renews() {
    let lease = Lease::new(&wake(Duration::from_millis(200)));
    assert!(!lease.lapsed());
    std::thread::sleep(Duration::from_millis(185));
    assert!(lease.lapsed(), "a tenth of the lease is kept as margin");
    lease.renewed((Instant::now(), SystemTime::now()));
    assert!(!lease.lapsed());
    // A wall clock that jumped forward (a machine that slept) counts too.
    lease.renewed((Instant::now(), SystemTime::now() - Duration::from_secs(5)));
    assert!(lease.lapsed());
    lease.renewed((Instant::now(), SystemTime::now()));
    lease.lost.cancel();
    assert!(lease.lapsed(), "a fenced heartbeat ends the lease");
}

#[test]
fn progress_keeps_the_latest_offset_per_stream() {
    let lease = Lease::new(&wake(Duration::from_secs(30)));
    let o = |s: &str| Offset::parse(s).unwrap();
    lease.record("a", &o("0000000000000000_0000000000000001"));
    lease.record("b", &o("0000000000000000_0000000000000002"));
    lease.record("a", &o("0000000000000000_0000000000000003"));
    assert_eq!(
        lease.progress(),
        vec![
            StreamAck::new("a", o("0000000000000000_0000000000000003")),
            StreamAck::new("b", o("0000000000000000_0000000000000002")),
        ]
    );
}

#[test]
fn wake_events_queue_each_known_subscription_once() {
    let mut queue = VecDeque::new();
    push_unique(&mut queue, "a");
    push_unique(&mut queue, "a");
    push_unique(&mut queue, "b");
    assert_eq!(queue, ["a", "b"]);
    let parsed: WakeEvent = serde_json::from_str(
        r#"{"type":"wake","subscription_id":"a","stream":"x","generation":3,"ts":1}"#,
    )
    .unwrap();
    assert_eq!(parsed.kind.as_deref(), Some("wake"));
    assert_eq!(parsed.subscription_id.as_deref(), Some("a"));
    let foreign: WakeEvent = serde_json::from_str(r#"{"hello":1}"#).unwrap();
    assert!(foreign.kind.is_none() && foreign.subscription_id.is_none());
}

/// A handler of framed messages (its codec comes from the builder).
struct FramedHandler;

impl Handler for FramedHandler {
    type Format = Frames<crate::codec::BytesCodec>;
    async fn handle_batch(&mut self, _batch: &Batch<bytes::Bytes>) -> Result<Flow> {
        Ok(Flow::Continue)
    }
}

#[tokio::test]
async fn a_framed_handler_needs_its_codec_before_anything_is_sent() {
    // Nothing listens here: the check must come before any request.
    let subs = crate::Client::new()
        .subscriptions("http://127.0.0.1:9")
        .unwrap();
    let err = Worker::builder(&subs, FramedHandler)
        .subscription("s")
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "framed" });
    // With it, the worker gets past configuration (and then fails to reach
    // the server, which is the next thing it does).
    let err = Worker::builder(&subs, FramedHandler)
        .subscription("s")
        .framed(Framed::new(crate::codec::BytesCodec))
        .run(CancellationToken::new())
        .await
        .unwrap_err();
    assert_ne!(err.kind(), &ErrorKind::InvalidArgument { field: "framed" });
}
