use super::*;
use crate::{Client, ErrorKind};

fn stream() -> Stream {
    Client::new()
        .stream("http://127.0.0.1:9/v1/stream/unit")
        .unwrap()
        .with_content_type("application/json")
}

fn field_of(builder: ProducerBuilder) -> &'static str {
    match builder.validate().unwrap_err().kind() {
        ErrorKind::InvalidArgument { field } => field,
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_options_name_their_field() {
    let s = stream();
    assert_eq!(field_of(Producer::builder(&s, "")), "producer_id");
    assert_eq!(field_of(Producer::builder(&s, "a\nb")), "producer_id");
    assert_eq!(
        field_of(Producer::builder(&s, "p").epoch(MAX_SAFE_INTEGER + 1)),
        "epoch"
    );
    assert_eq!(
        field_of(Producer::builder(&s, "p").max_batch_bytes(0)),
        "max_batch_bytes"
    );
    assert_eq!(
        field_of(Producer::builder(&s, "p").max_batch_items(0)),
        "max_batch_items"
    );
    assert_eq!(
        field_of(Producer::builder(&s, "p").max_in_flight(0)),
        "max_in_flight"
    );
    assert_eq!(
        field_of(Producer::builder(&s, "p").max_buffered_bytes(0)),
        "max_buffered_bytes"
    );
    assert!(
        Producer::builder(&s, "p")
            .epoch(MAX_SAFE_INTEGER)
            .linger(Duration::ZERO)
            .validate()
            .is_ok()
    );
}

#[test]
fn build_needs_a_content_type_and_a_runtime() {
    let unknown = Client::new().stream("http://127.0.0.1:9/x").unwrap();
    let err = Producer::builder(&unknown, "p").build().unwrap_err();
    assert_eq!(
        err.kind(),
        &ErrorKind::InvalidArgument {
            field: "content_type"
        }
    );
    let err = Producer::builder(&stream(), "p").build().unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "runtime" });
}

#[tokio::test]
async fn dropping_the_producer_stops_its_task() {
    let producer = Producer::builder(&stream(), "p").build().unwrap();
    producer.append_json(&1).unwrap();
    assert!(producer.buffered_bytes() > 0);
    let shared = Arc::downgrade(&producer.shared);
    drop(producer);
    // The task held the only other reference; it must end promptly.
    for _ in 0..100 {
        if shared.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the producer task outlived its handle");
}

#[tokio::test]
async fn appends_after_close_fail() {
    let producer = Producer::builder(&stream(), "p").build().unwrap();
    producer.close().await.unwrap();
    assert_eq!(
        producer.append_json(&1).unwrap_err().kind(),
        &ErrorKind::ProducerClosed
    );
    // Nothing is pending, so there is nothing to wait for.
    producer.flush().await.unwrap();
}

#[tokio::test]
async fn handles_and_their_futures_are_send() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<Producer>();
    let producer = Producer::builder(&stream(), "p").build().unwrap();
    let mut writer = producer.writer();
    assert_send(&writer);
    assert_send(&writer.write(b"x"));
    assert_send(&writer.write_json(&1));
    assert_send(&producer.feed_slice(b"x"));
    assert_send(&producer.feed_json(&1));
    drop(writer);
}

/// A task that only records that it ran.
fn spawn_witness() -> Arc<std::sync::atomic::AtomicBool> {
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&ran);
    tokio::spawn(async move { flag.store(true, std::sync::atomic::Ordering::SeqCst) });
    ran
}

/// Appends that never wait still count against tokio's cooperative budget:
/// on a single-threaded runtime, other tasks (the producer's own, the
/// connections) run while a caller appends in a loop.
#[tokio::test(flavor = "current_thread")]
async fn appending_in_a_loop_lets_other_tasks_run() {
    let producer = Producer::builder(&stream(), "p").build().unwrap();
    let ran = spawn_witness();
    for _ in 0..1_000 {
        producer.feed_slice(b"1").await.unwrap();
    }
    assert!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        "feed never yielded"
    );

    let ran = spawn_witness();
    for i in 0..1_000 {
        producer.feed_json(&i).await.unwrap();
    }
    assert!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        "feed_json never yielded"
    );

    let ran = spawn_witness();
    let mut writer = producer.writer();
    // A writer spends a unit per few writes: more than a whole budget's.
    for _ in 0..10_000 {
        writer.write(b"1").await.unwrap();
    }
    assert!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        "a writer never yielded"
    );
}

/// A writer's message is written when its future first runs: a future
/// dropped unpolled writes nothing, and a rejected message leaves nothing.
#[tokio::test]
async fn a_write_takes_effect_when_first_polled() {
    let producer = Producer::builder(&stream(), "p").build().unwrap();
    let mut writer = producer.writer();
    drop(writer.write(b"1"));
    assert_eq!(writer.buffered_bytes(), 0);
    assert!(writer.write(b"").await.is_err());
    assert!(writer.write(b"{").await.is_err());
    assert_eq!(writer.buffered_bytes(), 0);
    writer.write(b"12").await.unwrap();
    writer.write_json(&345).await.unwrap();
    assert_eq!(writer.buffered_bytes(), 5);
}

/// A send or feed appends when its future first runs: dropped unpolled it
/// appends nothing, and dropped while waiting for buffer room it appends
/// nothing and keeps no room (the server here never answers, so nothing
/// is acknowledged meanwhile).
#[tokio::test]
async fn a_send_takes_effect_when_first_polled_and_a_dropped_wait_keeps_no_room() {
    let producer = Producer::builder(&stream(), "p")
        .max_buffered_bytes(10)
        .build()
        .unwrap();
    drop(producer.send_slice(b"1"));
    drop(producer.feed_json(&2));
    assert_eq!(producer.buffered_bytes(), 0);
    assert!(producer.feed_slice(b"{").await.is_err());
    assert_eq!(producer.buffered_bytes(), 0);
    producer.feed_slice(b"12345678").await.unwrap();
    assert_eq!(producer.buffered_bytes(), 8);

    // No room for three more bytes: the feed waits, then is dropped.
    let mut waiting = Box::pin(producer.feed_slice(b"123"));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    drop(waiting);
    let mut waiting_json = Box::pin(producer.send_json(&"abc"));
    assert!(futures::poll!(waiting_json.as_mut()).is_pending());
    drop(waiting_json);
    assert_eq!(producer.buffered_bytes(), 8);

    // The room the dropped waits asked for was never taken.
    producer.append_slice(b"12").unwrap();
    assert_eq!(producer.buffered_bytes(), 10);
}
