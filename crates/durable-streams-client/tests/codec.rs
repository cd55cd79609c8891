//! Typed binary messages (`codec`) against both real servers: framed round
//! trips (plain, zstd, gzip, mixed) in every read mode, resumption from
//! every message's offset, frames split across appends, truncated frames at
//! a closed stream's end, and the producer, consumer and pipeline with a codec.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_streams_client::codec::{Compression, Framed, Framing, ProstCodec};
use durable_streams_client::consumer::{Batch, Consumer, Flow, Frames, Handler, StartFrom};
use durable_streams_client::pipeline::{Pipeline, Processed};
use durable_streams_client::{ErrorKind, LiveMode, Offset, Producer, Result, Stream};
use futures::StreamExt;

#[derive(Clone, PartialEq, prost::Message)]
struct Event {
    #[prost(uint64, tag = "1")]
    seq: u64,
    #[prost(string, tag = "2")]
    body: String,
}

const MODES: [LiveMode; 4] = [
    LiveMode::Off,
    LiveMode::LongPoll,
    LiveMode::Sse,
    LiveMode::Auto,
];

/// Small messages, large compressible ones (multi-KiB) and an empty one.
fn events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|seq| Event {
            seq,
            body: match seq % 4 {
                0 => String::new(),
                1 => format!("small-{seq}"),
                _ => format!("large-{seq}-").repeat(500 + seq as usize * 37),
            },
        })
        .collect()
}

fn framed(compression: Compression) -> Framed<ProstCodec<Event>> {
    Framed::new(ProstCodec::new()).framing(
        Framing::new()
            .compression(compression)
            .compress_threshold(256),
    )
}

fn binary(stream: Stream) -> Stream {
    stream.with_content_type("application/octet-stream")
}

/// Read frames until the stream's close (or the end of a catch-up read).
async fn read_all(s: &Stream, from: Offset, mode: LiveMode) -> Result<Vec<Event>> {
    let mut batches = s
        .read()
        .offset(from)
        .live(mode)
        .frames(framed(Compression::None));
    let mut out = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(15), batches.next())
            .await
            .expect("a batch within 15 s");
        let Some(batch) = next else { return Ok(out) };
        let batch = batch?;
        out.extend(batch.items);
        if batch.closed {
            return Ok(out);
        }
    }
}

#[tokio::test]
async fn framed_messages_round_trip_in_every_read_mode() {
    let all = events(12);
    for server in common::servers() {
        for mode in MODES {
            let client = common::client();
            let s = binary(common::stream(&server, &client, "codec-modes"));
            s.create().await.unwrap();
            // Plain, zstd and gzip frames mixed in one stream, written one per
            // append and several per append.
            let writers = [
                framed(Compression::None),
                framed(Compression::zstd()),
                framed(Compression::Gzip),
            ];
            let mut many = Vec::new();
            for (i, e) in all.iter().enumerate() {
                let w = &writers[i % writers.len()];
                if i < 6 {
                    s.append_frame(w, e).await.unwrap();
                } else {
                    w.encode(e, &mut many).unwrap();
                }
            }
            s.append(many).await.unwrap();
            s.close().await.unwrap();
            let got = read_all(&s, Offset::start(), mode).await.unwrap();
            assert_eq!(got, all, "{mode:?} {:?}", server.kind());
        }
    }
}

#[tokio::test]
async fn every_message_offset_resumes_with_exactly_the_rest() {
    let all = events(8);
    for server in common::servers() {
        let client = common::client();
        let s = binary(common::stream(&server, &client, "codec-resume"));
        s.create().await.unwrap();
        let w = framed(Compression::zstd());
        let mut offsets = vec![Offset::start()];
        for e in &all {
            let appended = s.append_frame(&w, e).await.unwrap();
            offsets.push(appended.next_offset.expect("next offset"));
        }
        for (i, from) in offsets.iter().enumerate() {
            for mode in [LiveMode::Off, LiveMode::Sse] {
                let mut batches = s.read().offset(from.clone()).live(mode).frames(w.clone());
                let mut got = Vec::new();
                while got.len() < all.len() - i {
                    let batch = tokio::time::timeout(Duration::from_secs(15), batches.next())
                        .await
                        .unwrap()
                        .expect("not ended")
                        .unwrap();
                    got.extend(batch.items);
                }
                assert_eq!(
                    got,
                    all[i..],
                    "from message {i} {mode:?} {:?}",
                    server.kind()
                );
            }
        }
    }
}

#[tokio::test]
async fn a_frame_split_across_appends_is_reassembled() {
    let e = events(3).pop().unwrap();
    for server in common::servers() {
        for mode in [LiveMode::LongPoll, LiveMode::Sse] {
            let client = common::client();
            let s = binary(common::stream(&server, &client, "codec-split"));
            s.create().await.unwrap();
            let w = framed(Compression::None);
            let frame = w.to_frame(&e).unwrap();
            let half = s.append(frame.slice(..frame.len() / 2)).await.unwrap();
            let mut batches = s.read().live(mode).frames(w.clone());
            let first = batches.next().await.unwrap().unwrap();
            assert!(first.items.is_empty());
            assert!(!first.exact, "a carried frame makes the offset inexact");
            assert_eq!(Some(first.offset), half.next_offset);
            let rest = s.append(frame.slice(frame.len() / 2..)).await.unwrap();
            let mut got = Vec::new();
            while got.is_empty() {
                let b = tokio::time::timeout(Duration::from_secs(15), batches.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                if !b.items.is_empty() {
                    assert!(b.exact);
                    assert_eq!(Some(b.offset), rest.next_offset);
                }
                got.extend(b.items);
            }
            assert_eq!(got, vec![e.clone()], "{mode:?} {:?}", server.kind());
        }
    }
}

#[tokio::test]
async fn a_truncated_frame_at_a_closed_end_is_a_typed_error() {
    for server in common::servers() {
        for mode in MODES {
            let client = common::client();
            let s = binary(common::stream(&server, &client, "codec-trunc"));
            s.create().await.unwrap();
            let w = framed(Compression::None);
            let whole = s.append_frame(&w, &events(2)[1]).await.unwrap();
            let frame = w.to_frame(&events(3)[2]).unwrap();
            s.append(frame.slice(..10)).await.unwrap();
            s.close().await.unwrap();
            let after_whole = whole.next_offset.clone().unwrap();
            // The error names a resume position at or before the frame: the
            // last exact offset at which no frame was carried (the whole
            // frame and the partial one may arrive in one response).
            let err = read_all(&s, Offset::start(), mode).await.unwrap_err();
            let ErrorKind::TruncatedFrame { offset } = err.kind() else {
                panic!("{mode:?} {:?}: {err}", server.kind());
            };
            assert!(
                *offset == Offset::start() || *offset == after_whole,
                "{mode:?} {:?}: {err}",
                server.kind()
            );
            let err = read_all(&s, after_whole.clone(), mode).await.unwrap_err();
            assert_eq!(
                err.kind(),
                &ErrorKind::TruncatedFrame {
                    offset: after_whole
                },
                "{mode:?} {:?}: {err}",
                server.kind()
            );
            assert!(err.to_string().contains("10 bytes of it"), "{err}");
        }
    }
}

#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Event>>>);

impl Handler for Collect {
    type Format = Frames<ProstCodec<Event>>;
    async fn handle_batch(&mut self, batch: &Batch<Event>) -> Result<Flow> {
        self.0.lock().unwrap().extend(batch.items.iter().cloned());
        Ok(Flow::Continue)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_consumer_and_pipeline_deliver_frames_in_order() {
    let all = events(200);
    for server in common::servers() {
        let client = common::client();
        let s = binary(common::stream(&server, &client, "codec-flow"));
        s.create().await.unwrap();
        let producer = Producer::builder(&s, "codec-writer")
            .max_batch_bytes(64 * 1024)
            .build()
            .unwrap();
        let w = framed(Compression::zstd());
        for e in &all {
            let _ack = producer.send_frame(&w, e).await.unwrap();
        }
        producer.flush().await.unwrap();
        producer.close().await.unwrap();
        s.close().await.unwrap();

        // A Frames<C> consumer is given its codec; without it, build fails.
        let err = Consumer::builder(&s, Collect::default())
            .build()
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::InvalidArgument { field: "framed" },
            "{err}"
        );
        // The given framing is the one applied: a 8-byte limit stops it.
        let tiny = Consumer::builder(&s, Collect::default())
            .start_from(StartFrom::Start)
            .live(LiveMode::Off)
            .framed(framed(Compression::None).framing(Framing::new().max_frame_bytes(8)))
            .build()
            .unwrap()
            .spawn();
        let err = tiny.join().await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::FrameTooLarge { limit: 8, .. }),
            "{err}"
        );

        let seen = Collect::default();
        let handle = Consumer::builder(&s, seen.clone())
            .start_from(StartFrom::Start)
            .live(LiveMode::Auto)
            .framed(w.clone())
            .build()
            .unwrap()
            .spawn();
        handle.join().await.unwrap();
        assert_eq!(*seen.0.lock().unwrap(), all, "consumer {:?}", server.kind());

        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        Pipeline::framed(&s, w.clone())
            .start_from(StartFrom::Start)
            .live(LiveMode::Sse)
            .process(move |m| {
                sink.lock().unwrap().push(m.data.clone());
                async { Ok(Processed::done()) }
            })
            .build()
            .unwrap()
            .spawn()
            .join()
            .await
            .unwrap();
        assert_eq!(*got.lock().unwrap(), all, "pipeline {:?}", server.kind());
    }
}
