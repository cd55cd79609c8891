use super::*;
use crate::Client;

fn stream() -> Stream {
    Client::new()
        .stream("http://127.0.0.1:9/v1/stream/x")
        .unwrap()
}

fn field<T: Send + 'static>(b: PipelineBuilder<T>) -> &'static str {
    match b.build().unwrap_err().kind() {
        ErrorKind::InvalidArgument { field } => field,
        other => panic!("unexpected {other:?}"),
    }
}

async fn ok_batch(_: BatchInfo, _: Vec<Message<serde_json::Value>>) -> Result<()> {
    Ok(())
}

#[test]
fn builder_validation_names_the_field() {
    let p = || Pipeline::json::<serde_json::Value>(&stream());
    let ms = Duration::from_millis(10);
    assert_eq!(field(p().processors(0)), "processors");
    assert_eq!(field(p().name("")), "name");
    assert_eq!(field(p().batcher("a", 0, ms, ok_batch)), "batch_size");
    assert_eq!(
        field(p().batcher("a", 1, Duration::ZERO, ok_batch)),
        "batch_timeout"
    );
    assert_eq!(field(p().batcher("", 1, ms, ok_batch)), "batcher");
    assert_eq!(
        field(
            p().batcher("a", 1, ms, ok_batch)
                .batcher("a", 1, ms, ok_batch)
        ),
        "batcher"
    );
    assert_eq!(
        field(p().max_in_flight_messages(0)),
        "max_in_flight_messages"
    );
    assert_eq!(field(p().max_in_flight_bytes(0)), "max_in_flight_bytes");
    assert_eq!(field(p().channel_capacity(0)), "channel_capacity");
    assert_eq!(
        field(
            p().checkpoint_store(crate::consumer::FileCheckpointStore::new("/tmp"))
                .name("../x")
        ),
        "name"
    );
    assert!(
        p().processors(8)
            .batcher("a", 10, ms, ok_batch)
            .build()
            .is_ok()
    );
}

#[test]
fn json_decoding_keeps_payload_slices_and_fails_single_messages() {
    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct N {
        n: u32,
    }
    let chunk = |data: &'static [u8]| Chunk {
        data: Bytes::from_static(data),
        offset: Offset::start(),
        exact: true,
        cursor: None,
        up_to_date: false,
        closed: false,
        status: 200,
        messages: None,
        typed_bytes: None,
    };
    let items = decode_json::<N>(&mut chunk(br#" [{"n":1}, {"x":2} ,{"n":3}] "#)).unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].0.as_ref().unwrap(), &N { n: 1 });
    assert!(items[1].0.is_err());
    assert_eq!(&items[1].1[..], br#"{"x":2}"#);
    assert_eq!(&items[2].1[..], br#"{"n":3}"#);
    assert!(decode_json::<N>(&mut chunk(b"  ")).unwrap().is_empty());
    assert!(decode_json::<N>(&mut chunk(b"{")).is_err());
}

#[test]
fn dead_letter_records() {
    let failure = |payload: &'static [u8]| Failure {
        position: Position::new(Offset::start(), Offset::parse("0_10").unwrap(), 2),
        payload: Bytes::from_static(payload),
        error: Error::handler("nope"),
        stage: Stage::Batcher(Arc::from("db")),
    };
    // Key order and spacing are kept: the original bytes.
    let original = br#"{"z": 1, "a":[1.50]}"#;
    let json = DeadLetter::from_failure("p", true, &failure(original));
    assert_eq!(json.encoding, "json");
    assert_eq!(json.payload.get().as_bytes(), original);
    assert_eq!(json.payload_bytes().unwrap(), original);
    let written = serde_json::to_string(&json).unwrap();
    assert!(
        written.contains(r#""payload":{"z": 1, "a":[1.50]}"#),
        "{written}"
    );
    let back: DeadLetter = serde_json::from_str(&written).unwrap();
    assert_eq!(back, json);
    assert_eq!(json.offset, "-1");
    assert_eq!(json.next_offset, "0_10");
    assert_eq!((json.index, json.stage.as_str()), (2, "batcher"));
    assert_eq!(json.batcher.as_deref(), Some("db"));
    assert!(json.error.contains("nope"));
    let bytes = DeadLetter::from_failure("p", false, &failure(b"\x00\xffraw"));
    assert_eq!(bytes.encoding, "base64");
    assert_eq!(bytes.payload_bytes().unwrap(), b"\x00\xffraw");
}

/// Processing fails and panics go to the failure callback; every message
/// is acknowledged; per-key order holds with partitioning.
// Paused time: the timeout fires by the clock, not by how busy the machine is.
#[tokio::test(start_paused = true)]
async fn batch_loop_flushes_on_size_timeout_and_drain() {
    let (ackable, _rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        name: Arc::from("t"),
        json: true,
        tracker: Mutex::new(AckTracker::default()),
        ackable,
        on_failure: None,
        dead_letters: None,
        stop: CancellationToken::new(),
        fatal: Mutex::new(None),
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let spec = BatcherSpec::<u32> {
        name: Arc::from("b"),
        batch_size: 3,
        batch_timeout: Duration::from_millis(50),
        batch_fn: Arc::new(move |info: BatchInfo, batch: Vec<Message<u32>>| {
            s.lock().unwrap().push((
                info.trigger,
                batch.iter().map(|m| m.data).collect::<Vec<_>>(),
            ));
            Box::pin(async { Ok(()) })
        }),
    };
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(batch_loop(spec, rx, Arc::clone(&shared)));
    let pos = Position::new(Offset::start(), Offset::start(), 0);
    let (seq, _) =
        shared
            .tracker
            .lock()
            .unwrap()
            .register(6, Offset::parse("0_1").unwrap(), true, None);
    for i in 0..4 {
        tx.send(Envelope {
            seq,
            message: Message::new(i, pos.clone(), Bytes::new()),
        })
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    tx.send(Envelope {
        seq,
        message: Message::new(4, pos.clone(), Bytes::new()),
    })
    .await
    .unwrap();
    tx.send(Envelope {
        seq,
        message: Message::new(5, pos.clone(), Bytes::new()),
    })
    .await
    .unwrap();
    drop(tx);
    task.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (BatchTrigger::Size, vec![0, 1, 2]),
            (BatchTrigger::Timeout, vec![3]),
            (BatchTrigger::Drain, vec![4, 5]),
        ]
    );
    assert_eq!(
        shared.ackable.borrow().clone(),
        Some(Offset::parse("0_1").unwrap())
    );
}
