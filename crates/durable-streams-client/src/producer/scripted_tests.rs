//! The producer driver against the in-process scripted server: answers no
//! real server gives on demand (duplicates for a first attempt, gateway
//! errors, a server that forgot its producer state).

use std::time::Duration;

use crate::testing::{Recorded, Reply, ScriptedServer};
use crate::{Client, ErrorKind, Producer, RetryPolicy, Stream};

fn stream(server: &ScriptedServer) -> Stream {
    Client::builder()
        .retry_policy(
            RetryPolicy::default()
                .initial_delay(Duration::from_millis(1))
                .max_delay(Duration::from_millis(5)),
        )
        .build()
        .unwrap()
        .stream(server.url("/v1/stream/p"))
        .unwrap()
        .with_content_type("application/json")
}

fn producer(stream: &Stream) -> Producer {
    Producer::builder(stream, "scripted")
        .epoch(7)
        .linger(Duration::ZERO)
        .max_in_flight(1)
        .build()
        .unwrap()
}

fn seq(req: &Recorded) -> u64 {
    req.header("producer-seq").unwrap().parse().unwrap()
}

fn ok(req: &Recorded) -> Reply {
    Reply::status(200)
        .with_header("stream-next-offset", &format!("0_{}", seq(req) + 1))
        .with_header("producer-epoch", "7")
        .with_header("producer-seq", &seq(req).to_string())
}

fn duplicate(req: &Recorded) -> Reply {
    Reply::status(204)
        .with_header("producer-epoch", "7")
        .with_header("producer-seq", &seq(req).to_string())
}

#[tokio::test]
async fn a_duplicate_for_a_first_attempt_is_a_collision_not_success() {
    let server = ScriptedServer::start(|req, _| duplicate(req)).await;
    let p = producer(&stream(&server));
    let err = p.send_json(&1).await.unwrap().await.unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::ProducerIdCollision { epoch: 7, seq: 0 }
    );
    assert_eq!(server.count(), 1);
    assert!(p.flush().await.is_err(), "flush reports the failure too");
}

#[tokio::test]
async fn a_duplicate_after_a_gateway_error_is_the_retry_of_an_applied_write() {
    // 502: the origin may have applied seq 0; the retry's 204 confirms it.
    let server = ScriptedServer::start(|req, i| match i {
        0 => Reply::status(502),
        1 => duplicate(req),
        _ => ok(req),
    })
    .await;
    let p = producer(&stream(&server));
    let receipt = p.send_json(&1).await.unwrap().await.unwrap();
    assert!(receipt.duplicate);
    assert_eq!(receipt.seq, 0);
    p.send_json(&2).await.unwrap().await.unwrap();
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    // Every attempt of a batch carries the same (id, epoch, seq).
    assert_eq!(seq(&seen[0]), 0);
    assert_eq!(seq(&seen[1]), 0);
    assert_eq!(seen[0].body, seen[1].body);
    assert_eq!(seq(&seen[2]), 1);
}

#[tokio::test]
async fn a_server_that_forgot_the_producer_is_state_lost() {
    let server = ScriptedServer::start(|req, i| match i {
        0 => ok(req),
        _ => Reply::status(409)
            .with_header("producer-expected-seq", "0")
            .with_header("producer-received-seq", &seq(req).to_string()),
    })
    .await;
    let p = producer(&stream(&server));
    p.send_json(&1).await.unwrap().await.unwrap();
    let err = p.send_json(&2).await.unwrap().await.unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::ProducerStateLost { epoch: 7 });
    assert_eq!(server.count(), 2, "no retry loop on a lost state");
}

#[tokio::test]
async fn a_mismatched_echo_is_not_success() {
    let server = ScriptedServer::start(|req, _| {
        Reply::status(200)
            .with_header("stream-next-offset", "0_1")
            .with_header("producer-epoch", "8")
            .with_header("producer-seq", &seq(req).to_string())
    })
    .await;
    let p = producer(&stream(&server));
    let err = p.send_json(&1).await.unwrap().await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Decode(_)), "{err}");
}
