use futures::StreamExt;

use super::sse_phase::{decode_base64, flat_control, join_payloads, parse_control, serde_control};
use super::*;
use crate::error::ErrorKind;
use crate::read::sse::SseParser;

#[test]
fn control_events_parse() {
    let c =
        parse_control(br#"{"streamNextOffset":"1_2","streamCursor":"9","upToDate":true}"#).unwrap();
    assert_eq!(c.next_offset.as_str(), "1_2");
    assert_eq!(c.cursor.as_deref(), Some("9"));
    assert!(c.up_to_date && !c.closed);
    assert!(matches!(c.cursor, Some(std::borrow::Cow::Borrowed(_))));
    let c = parse_control(br#"{"streamNextOffset":"1_3","streamClosed":true}"#).unwrap();
    assert!(c.closed && c.cursor.is_none());
    // Cursors in every JSON form: escapes decoded, other values echoed as
    // their JSON text, null as none.
    for (cursor, expected) in [
        (r#""a\"b\u00e9""#, Some("a\"b\u{e9}")),
        ("42", Some("42")),
        (r#" {"k" : [1,2]}"#, Some(r#"{"k":[1,2]}"#)),
        ("null", None),
    ] {
        let text = format!(r#"{{"streamNextOffset":"1_4","streamCursor":{cursor}}}"#);
        let c = parse_control(text.as_bytes()).unwrap();
        assert_eq!(c.cursor.as_deref(), expected, "{cursor}");
    }
    for bad in [
        &b"{"[..],
        b"{}",
        b"[]",
        br#"{"streamNextOffset":"a/b"}"#,
        b"not json",
    ] {
        let e = parse_control(bad).unwrap_err();
        assert_eq!(
            e.kind(),
            &ErrorKind::Decode(DecodeKind::Sse),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

fn meta(next: Option<&str>, cursor: Option<&str>, closed: bool) -> ResponseMeta {
    ResponseMeta {
        next_offset: next.map(|n| Offset::parse(n).unwrap()),
        cursor: cursor.map(str::to_owned),
        closed,
        ..ResponseMeta::default()
    }
}

#[test]
fn stripped_headers_are_typed_errors_naming_the_header() {
    assert_eq!(
        check_read_headers(&meta(Some("0001"), None, false), false)
            .unwrap()
            .as_str(),
        "0001"
    );
    let e = check_read_headers(&meta(None, Some("1"), false), false).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Header));
    assert!(e.to_string().contains("Stream-Next-Offset"), "{e}");
    assert!(e.to_string().contains("proxy"), "{e}");
    // Long-poll answers (200 and 204) of an open stream need a cursor.
    let e = check_read_headers(&meta(Some("0001"), None, false), true).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Header));
    assert!(e.to_string().contains("Stream-Cursor"), "{e}");
    // ... except when the stream is closed.
    assert!(check_read_headers(&meta(Some("0001"), None, true), true).is_ok());
    assert!(check_read_headers(&meta(Some("0001"), Some("7"), false), true).is_ok());
    let e = check_read_headers(&meta(None, None, true), true).unwrap_err();
    assert!(e.to_string().contains("Stream-Next-Offset"), "{e}");
}

#[test]
fn sse_json_messages_are_counted_not_sniffed() {
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    // One message that is an empty array, one that is an empty object.
    let (data, messages, has) = join_payloads(true, &mut vec![b("[[]]")]).unwrap();
    assert!(has);
    assert_eq!(&data[..], b"[[]]");
    assert_eq!(messages.unwrap().len(), 1);
    let (_, messages, has) =
        join_payloads(true, &mut vec![b("[{}]"), b("[]"), b("[[[]]]")]).unwrap();
    assert!(has);
    let messages = messages.unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(&messages[1][..], b"[[]]");
    // No messages at all.
    let (data, messages, has) = join_payloads(true, &mut vec![b("[]"), b(" [ ] ")]).unwrap();
    assert!(!has && data.is_empty() && messages.is_none());
    let (_, _, has) = join_payloads(true, &mut vec![]).unwrap();
    assert!(!has);
    // Not an array: a decode error, never a panic.
    assert!(join_payloads(true, &mut vec![b("{}")]).is_err());
    // Bytes: emptiness is length.
    let (data, _, has) = join_payloads(false, &mut vec![b("a"), b("b")]).unwrap();
    assert!(has && &data[..] == b"ab");
    assert!(!join_payloads(false, &mut vec![b("")]).unwrap().2);
}

fn unreachable_session(mode: LiveMode, max_no_progress: u32) -> Session {
    let stream = crate::Client::builder()
        .retry_policy(
            crate::RetryPolicy::default()
                .initial_delay(Duration::from_millis(100))
                .max_delay(Duration::from_secs(30))
                .max_retries(3),
        )
        .build()
        .unwrap()
        .stream("http://127.0.0.1:9/v1/stream/x")
        .unwrap();
    Session::with_options(
        stream,
        Offset::parse("0001").unwrap(),
        mode,
        false,
        ReadOptions {
            max_no_progress,
            ..ReadOptions::default()
        },
    )
}

#[tokio::test(start_paused = true)]
async fn stalls_back_off_exponentially_bust_caches_and_end_with_no_progress() {
    let mut s = unreachable_session(LiveMode::LongPoll, 10);
    let spec = s.read_spec("long-poll");
    assert!(
        spec.query.iter().all(|(k, _)| *k != "_nc"),
        "no buster at first"
    );
    let started = tokio::time::Instant::now();
    let mut waits = Vec::new();
    let mut err = None;
    for _ in 0..20 {
        let before = tokio::time::Instant::now();
        match s.stall("long-poll answers").await {
            Ok(()) => waits.push(before.elapsed()),
            Err(e) => {
                err = Some(e);
                break;
            }
        }
        let spec = s.read_spec("long-poll");
        assert!(
            spec.query.iter().any(|(k, _)| *k == "_nc"),
            "buster after a repeat"
        );
    }
    let err = err.expect("gave up");
    assert_eq!(err.kind(), &ErrorKind::NoProgress { attempts: 10 });
    assert_eq!(waits.len(), 9, "a handful of tries, each after a wait");
    assert!(
        waits.iter().all(|w| *w >= Duration::from_millis(50)),
        "{waits:?}"
    );
    assert!(waits[8] > waits[0] * 8, "exponential: {waits:?}");
    assert!(
        waits.iter().all(|w| *w <= Duration::from_secs(30)),
        "capped: {waits:?}"
    );
    assert!(started.elapsed() > Duration::from_secs(10));
    // Progress resets the count and drops the buster.
    let mut s = unreachable_session(LiveMode::LongPoll, 3);
    s.stall("x").await.unwrap();
    s.stall("x").await.unwrap();
    s.progressed();
    assert!(s.read_spec("x").query.iter().all(|(k, _)| *k != "_nc"));
    s.stall("x").await.unwrap();
    s.stall("x").await.unwrap();
    assert!(s.stall("x").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn an_up_to_date_answer_is_not_progress_by_itself() {
    // A replayed long-poll 204 says up-to-date every time: the strikes
    // must still add up to the bound.
    let mut s = unreachable_session(LiveMode::LongPoll, 3);
    let at = s.offset.clone();
    let mut ended = None;
    for i in 0..5 {
        let (_, moved) = s
            .advance(Answer {
                data: Bytes::new(),
                messages: None,
                typed_bytes: None,
                has_data: false,
                any_data: false,
                next: at.clone(),
                cursor: Some("7".into()),
                up_to_date: true,
                closed: false,
                status: StatusCode::NO_CONTENT,
            })
            .unwrap();
        assert!(!moved);
        if let Err(e) = s.stall("long-poll answers").await {
            ended = Some((i, e));
            break;
        }
    }
    let (i, e) = ended.expect("bounded");
    assert_eq!(i, 2);
    assert_eq!(e.kind(), &ErrorKind::NoProgress { attempts: 3 });
}

#[tokio::test]
async fn offsets_going_backwards_or_repeating_with_data_end_the_read() {
    let mut s = unreachable_session(LiveMode::Sse, 3);
    let answer = |next: &str, data: &'static [u8]| Answer {
        data: Bytes::from_static(data),
        messages: None,
        typed_bytes: None,
        has_data: !data.is_empty(),
        any_data: !data.is_empty(),
        next: Offset::parse(next).unwrap(),
        cursor: None,
        up_to_date: false,
        closed: false,
        status: StatusCode::OK,
    };
    assert!(s.advance(answer("0002", b"x")).unwrap().1);
    let e = s.advance(answer("0002", b"y")).err().unwrap();
    assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Offset));
    let e = s.advance(answer("0001", b"")).err().unwrap();
    assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Offset));
    assert_eq!(s.offset.as_str(), "0002", "the offset never moved back");
}

#[tokio::test(start_paused = true)]
async fn catch_up_only_reads_are_bounded_by_the_retry_budget() {
    // LiveMode::Off: the client's budget (3 retries) ends it first.
    let mut s = unreachable_session(LiveMode::Off, 10);
    for _ in 0..3 {
        s.stall("catch-up answers").await.unwrap();
    }
    let e = s.stall("catch-up answers").await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::NoProgress { attempts: 4 });
    // Live modes: unbounded backoff, the guard's bound ends it.
    let mut s = unreachable_session(LiveMode::Sse, 6);
    for _ in 0..5 {
        s.stall("SSE connections").await.unwrap();
    }
    assert!(s.stall("SSE connections").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_kept_clock_tick_checks_early_and_moves_on() {
    let mut clock = ClockWatch::new();
    // A tick an earlier wait left elapsed.
    let mut tick = Some(Box::pin(tokio::time::sleep(Duration::ZERO)));
    tokio::time::sleep(Duration::from_millis(1)).await;
    // A wait of several check periods is answered, however often it ticked
    // (the clocks did not jump).
    let waited = watched(&mut clock, &mut tick, async {
        tokio::time::sleep(CLOCK_CHECK * 3 + Duration::from_millis(1)).await;
        7
    })
    .await;
    assert_eq!(waited, Some(7));
    let deadline = tick.as_ref().expect("the tick is kept").deadline();
    let now = tokio::time::Instant::now();
    assert!(
        deadline > now && deadline <= now + CLOCK_CHECK,
        "the tick moves one period at a time: {deadline:?} vs now {now:?}"
    );
    // The next wait uses the same tick, untouched when it is answered first.
    assert_eq!(watched(&mut clock, &mut tick, async { 8 }).await, Some(8));
    assert_eq!(tick.as_ref().expect("still kept").deadline(), deadline);
}

#[tokio::test(start_paused = true)]
async fn short_sse_connections_back_off_and_auto_falls_back_to_long_poll() {
    fn conn(age: Duration, moved: bool) -> SseConnection {
        SseConnection {
            body: crate::http::BufferedBody::from_pieces(futures::stream::empty().boxed()),
            parser: SseParser::new(1024),
            base64: false,
            pending: Vec::new(),
            pending_bytes: 0,
            opened: Instant::now() - age,
            moved,
            deliberate: false,
            wake: Box::pin(tokio::time::sleep(CLOCK_CHECK)),
        }
    }
    let short = Duration::from_millis(20);
    let long = Duration::from_secs(30);
    // Auto: three short connections in a row, even ones that delivered
    // a control event, and the read long-polls.
    let mut s = unreachable_session(LiveMode::Auto, 10);
    s.phase = Phase::Sse;
    for moved in [true, false] {
        s.sse = Some(conn(short, moved));
        s.sse_ended("test").await.unwrap();
        assert_eq!(s.phase, Phase::Sse);
    }
    s.sse = Some(conn(short, true));
    s.sse_ended("test").await.unwrap();
    assert_eq!(s.phase, Phase::LongPoll);
    // A connection that lasted resets the count and is not backed off.
    let mut s = unreachable_session(LiveMode::Auto, 10);
    s.phase = Phase::Sse;
    for age in [short, short, long, short, short] {
        s.sse = Some(conn(age, false));
        s.sse_ended("test").await.unwrap();
        assert_eq!(s.phase, Phase::Sse);
    }
    // SSE mode: short empty connections are backed off and bounded;
    // the server's periodic close is free.
    let mut s = unreachable_session(LiveMode::Sse, 4);
    s.phase = Phase::Sse;
    let before = tokio::time::Instant::now();
    for _ in 0..50 {
        s.sse = Some(conn(long, false));
        s.sse_ended("periodic close").await.unwrap();
    }
    assert_eq!(
        before.elapsed(),
        Duration::ZERO,
        "healthy closes never wait"
    );
    let mut ended = None;
    for i in 0..10 {
        s.sse = Some(conn(short, false));
        if let Err(e) = s.sse_ended("cut").await {
            ended = Some((i, e));
            break;
        }
    }
    let (i, e) = ended.expect("bounded");
    assert_eq!(i, 3);
    assert_eq!(e.kind(), &ErrorKind::NoProgress { attempts: 4 });
    assert!(before.elapsed() >= Duration::from_millis(150), "backed off");
    // A deliberate reconnect (max age, clock jump) is healthy.
    let mut s = unreachable_session(LiveMode::Auto, 2);
    s.phase = Phase::Sse;
    for _ in 0..5 {
        let mut c = conn(short, false);
        c.deliberate = true;
        s.sse = Some(c);
        s.sse_ended("max age").await.unwrap();
    }
    assert_eq!(s.phase, Phase::Sse);
}

mod scripted {
    use super::*;
    use crate::testing::{Reply, ScriptedServer};
    use futures::StreamExt;

    fn client() -> crate::Client {
        crate::Client::builder()
            .retry_policy(
                crate::RetryPolicy::default()
                    .initial_delay(Duration::from_millis(10))
                    .max_delay(Duration::from_millis(100)),
            )
            .build()
            .unwrap()
    }

    fn at(next: &str) -> Reply {
        Reply::status(200)
            .with_header("content-type", "text/plain")
            .with_header("stream-next-offset", next)
    }

    #[tokio::test]
    async fn a_cache_replaying_an_empty_long_poll_answer_gets_a_handful_of_requests() {
        // Catch-up: up to date at 0001; every long-poll: the same
        // cached 204, at once, whatever the query.
        let server = ScriptedServer::start(|req, _| {
            if req.target.contains("live=long-poll") {
                Reply::status(204)
                    .with_header("stream-next-offset", "0001")
                    .with_header("stream-cursor", "5")
                    .with_header("stream-up-to-date", "true")
            } else {
                at("0001").with_header("stream-up-to-date", "true")
            }
        })
        .await;
        let stream = client().stream(server.url("/s")).unwrap();
        let started = Instant::now();
        let mut chunks = stream
            .read()
            .offset(Offset::parse("0001").unwrap())
            .live(LiveMode::LongPoll)
            .max_no_progress(5)
            .bytes();
        let mut err = None;
        while let Some(item) = chunks.next().await {
            if let Err(e) = item {
                err = Some(e);
            }
        }
        let err = err.expect("NoProgress");
        assert_eq!(err.kind(), &ErrorKind::NoProgress { attempts: 5 });
        let polls: Vec<String> = server
            .requests()
            .into_iter()
            .filter(|r| r.target.contains("live=long-poll"))
            .map(|r| r.target)
            .collect();
        assert_eq!(polls.len(), 5, "{polls:?}");
        assert!(!polls[0].contains("_nc="));
        assert!(polls[1..].iter().all(|p| p.contains("_nc=")), "{polls:?}");
        assert!(started.elapsed() >= Duration::from_millis(40), "backed off");
    }

    #[tokio::test]
    async fn stripped_headers_end_the_read_with_a_typed_error() {
        // A catch-up answer without Stream-Next-Offset.
        let server = ScriptedServer::start(|_, _| {
            Reply::status(200)
                .with_header("content-type", "text/plain")
                .with_body(b"data")
        })
        .await;
        let stream = client().stream(server.url("/s")).unwrap();
        let e = stream.read().collect_bytes().await.unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Header));
        assert!(e.to_string().contains("Stream-Next-Offset"), "{e}");
        // A long-poll 204 without Stream-Cursor on an open stream.
        let server = ScriptedServer::start(|req, _| {
            if req.target.contains("live=long-poll") {
                Reply::status(204)
                    .with_header("stream-next-offset", "0001")
                    .with_header("stream-up-to-date", "true")
            } else {
                at("0001").with_header("stream-up-to-date", "true")
            }
        })
        .await;
        let stream = client().stream(server.url("/s")).unwrap();
        let mut chunks = stream.read().live(LiveMode::LongPoll).bytes();
        let first = chunks.next().await.unwrap().unwrap();
        assert!(first.up_to_date);
        let e = chunks.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Header));
        assert!(e.to_string().contains("Stream-Cursor"), "{e}");
        assert!(chunks.next().await.is_none(), "the read ended");
    }

    #[tokio::test]
    async fn sse_connections_are_renewed_at_their_maximum_age_despite_keepalives() {
        let server = ScriptedServer::start(|_, _| {
            let mut parts = vec![(
                Duration::ZERO,
                b"event: control\ndata: {\"streamNextOffset\":\"0001\",\"streamCursor\":\"1\",\"upToDate\":true}\n\n"
                    .to_vec(),
            )];
            // Comments keep the connection alive for 10 s.
            parts.extend((0..200).map(|_| (Duration::from_millis(50), b": keepalive\n\n".to_vec())));
            Reply::Stream {
                status: 200,
                headers: vec![("content-type".into(), "text/event-stream".into())],
                parts,
            }
        })
        .await;
        let stream = client().stream(server.url("/s")).unwrap();
        let mut chunks = stream
            .read()
            .offset(Offset::parse("0001").unwrap())
            .live(LiveMode::Sse)
            .sse_max_age(Duration::from_millis(1200))
            .bytes();
        let first = chunks.next().await.unwrap().unwrap();
        assert!(first.up_to_date);
        let _ = tokio::time::timeout(Duration::from_millis(3000), chunks.next()).await;
        let n = server.count();
        // Renewed about every 1.2 s, never in a hot loop.
        assert!((2..=4).contains(&n), "{n} connections in 3 s");
        let targets: Vec<String> = server.requests().into_iter().map(|r| r.target).collect();
        assert!(
            targets.iter().all(|t| t.contains("offset=0001")),
            "{targets:?}"
        );
        assert!(
            targets.iter().all(|t| !t.contains("_nc=")),
            "healthy: {targets:?}"
        );
    }

    #[tokio::test]
    async fn a_backwards_offset_delivers_nothing() {
        let server = ScriptedServer::start(|_, _| at("0000").with_body(b"stale")).await;
        let stream = client().stream(server.url("/s")).unwrap();
        let mut chunks = stream.read().offset(Offset::parse("0001").unwrap()).bytes();
        let e = chunks.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Offset));
        assert!(e.to_string().contains("0000") && e.to_string().contains("0001"));
        assert!(chunks.next().await.is_none());
    }

    #[tokio::test]
    async fn a_message_that_is_an_empty_array_is_delivered_from_a_streamed_body() {
        let server = ScriptedServer::start(|_, _| Reply::Stream {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("stream-next-offset".into(), "0002".into()),
                ("stream-up-to-date".into(), "true".into()),
            ],
            parts: vec![
                (Duration::ZERO, b"[[".to_vec()),
                (Duration::from_millis(5), b"],{}]".to_vec()),
            ],
        })
        .await;
        let stream = client().stream(server.url("/s")).unwrap();
        let mut batches = stream
            .read()
            .offset(Offset::parse("0001").unwrap())
            .json::<serde_json::Value>();
        let batch = batches.next().await.unwrap().unwrap();
        assert_eq!(
            batch.items,
            vec![serde_json::json!([]), serde_json::json!({})]
        );
        assert!(batch.exact);
        assert_eq!(batch.offset.as_str(), "0002");
    }

    fn json_array(ids: std::ops::Range<u32>) -> Vec<u8> {
        let items: Vec<String> = ids.map(|i| format!(r#"{{"i":{i}}}"#)).collect();
        format!("[{}]", items.join(",")).into_bytes()
    }

    fn json_reply(status: u16) -> Reply {
        Reply::status(status)
            .with_header("content-type", "application/json")
            .with_header("stream-next-offset", "0002")
            .with_header("stream-up-to-date", "true")
    }

    /// Promises the whole `body`, sends `body[..cut]`, hangs up.
    fn broken_json_reply(body: &[u8], cut: usize) -> Reply {
        Reply::Stream {
            status: 200,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("stream-next-offset".into(), "0002".into()),
                ("stream-up-to-date".into(), "true".into()),
                ("content-length".into(), body.len().to_string()),
            ],
            parts: vec![(Duration::ZERO, body[..cut].to_vec())],
        }
    }

    /// Breaks the first answer after `cut` bytes, then serves `body` whole.
    async fn broken_once(body: Vec<u8>, cut: usize) -> ScriptedServer {
        ScriptedServer::start(move |_, n| {
            if n == 0 {
                broken_json_reply(&body, cut)
            } else {
                json_reply(200).with_body(&body)
            }
        })
        .await
    }

    /// Reads every item of a typed catch-up read with small pieces.
    async fn read_ids(server: &ScriptedServer, piece: usize) -> Vec<(Vec<u32>, bool)> {
        let client = crate::Client::builder()
            .max_response_bytes(piece)
            .retry_policy(
                crate::RetryPolicy::default()
                    .initial_delay(Duration::from_millis(5))
                    .max_delay(Duration::from_millis(20)),
            )
            .build()
            .unwrap();
        let stream = client.stream(server.url("/s")).unwrap();
        let mut batches = stream
            .read()
            .offset(Offset::parse("0001").unwrap())
            .json::<serde_json::Value>();
        let mut out = Vec::new();
        while let Some(batch) = batches.next().await {
            let batch = batch.unwrap();
            let ids = batch.items.iter().map(|v| v["i"].as_u64().unwrap() as u32);
            out.push((ids.collect(), batch.exact));
        }
        out
    }

    #[tokio::test]
    async fn a_json_body_larger_than_a_piece_is_split_into_whole_messages() {
        let body = json_array(0..200);
        let server = ScriptedServer::start(move |_, _| json_reply(200).with_body(&body)).await;
        let batches = read_ids(&server, 300).await;
        assert!(batches.len() > 3, "pieces: {batches:?}");
        let ids: Vec<u32> = batches.iter().flat_map(|(ids, _)| ids.clone()).collect();
        assert_eq!(ids, (0..200).collect::<Vec<_>>());
        // Only the last piece ends the response: only it is exact.
        let exact: Vec<bool> = batches.iter().map(|(_, exact)| *exact).collect();
        assert_eq!(exact.iter().filter(|e| **e).count(), 1);
        assert!(exact[exact.len() - 1]);
    }

    #[tokio::test]
    async fn a_json_body_broken_after_pieces_went_out_skips_them_when_read_again() {
        let body = json_array(0..200);
        let cut = body.len() * 2 / 3;
        let server = broken_once(body, cut).await;
        let batches = read_ids(&server, 300).await;
        let ids: Vec<u32> = batches.iter().flat_map(|(ids, _)| ids.clone()).collect();
        assert_eq!(
            ids,
            (0..200).collect::<Vec<_>>(),
            "nothing lost, nothing twice"
        );
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn a_small_json_body_broken_before_any_piece_is_read_again_whole() {
        let body = json_array(0..5);
        let cut = body.len() / 2;
        let server = broken_once(body, cut).await;
        let batches = read_ids(&server, 1 << 20).await;
        assert_eq!(batches, vec![((0..5).collect(), true)]);
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn a_malformed_json_body_is_a_typed_decode_error() {
        for body in [&b"[1,"[..], b"{\"a\":1}", b"[1,]", b"[1 2]", b"x"] {
            let server = ScriptedServer::start(move |_, _| json_reply(200).with_body(body)).await;
            let stream = client().stream(server.url("/s")).unwrap();
            let mut batches = stream
                .read()
                .offset(Offset::parse("0001").unwrap())
                .json::<serde_json::Value>();
            let e = batches.next().await.unwrap().unwrap_err();
            assert_eq!(
                e.kind(),
                &ErrorKind::Decode(DecodeKind::Json),
                "{}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }
}

#[test]
fn read_options_have_sensible_defaults() {
    let o = ReadOptions::default();
    assert_eq!(o.max_no_progress, 10);
    assert_eq!(o.sse_max_age, Duration::from_secs(600));
    assert!(o.ride_out_outages);
}

#[test]
fn base64_ignores_line_breaks() {
    assert_eq!(
        &decode_base64(b"AQID\nBAUG\r\nBwgJCg==").unwrap()[..],
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    );
    assert_eq!(decode_base64(b"").unwrap().len(), 0);
    let e = decode_base64(b"@@@").unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Decode(DecodeKind::Base64));
}

/// Every idle SSE subscriber holds one of these: the rare, large futures
/// (requests, reconnect waits) are boxed so that they do not count here
/// (about 3.4 KiB before they were).
#[test]
fn idle_session_state_stays_small() {
    let client = crate::Client::new();
    let stream = client.stream("http://127.0.0.1:1/v1/stream/x").unwrap();
    let session = Session::with_options(
        stream,
        Offset::parse("-1").unwrap(),
        LiveMode::Sse,
        false,
        ReadOptions::default(),
    );
    let session_size = std::mem::size_of_val(&session);
    let chunks = session.into_stream();
    let stream_size = std::mem::size_of_val(&chunks);
    assert!(session_size <= 640, "Session is {session_size} bytes");
    assert!(
        stream_size <= 640,
        "the chunk stream is {stream_size} bytes"
    );
}

/// What every waiting reader holds: an idle SSE subscriber its `next_chunk`
/// (with the SSE step inline), a long-poll reader its boxed step. Rare paths
/// (errors, re-requests, stalls) are boxed or kept out of these futures, and
/// the response is finished without an await; before that, a waiting
/// long-poll step was 2,360 bytes.
#[tokio::test]
async fn waiting_reads_hold_small_futures() {
    fn size<F>(future: F) -> usize {
        std::mem::size_of_val(&future)
    }
    let mut s = unreachable_session(LiveMode::LongPoll, 3);
    let sizes = [
        ("next_chunk", size(s.next_chunk()), 320),
        ("sse_step", size(s.sse_step()), 320),
        ("long_poll_step", size(s.long_poll_step()), 1152),
        ("catch_up_step", size(s.catch_up_step()), 1024),
        ("body_step", size(s.body_step()), 512),
    ];
    for (name, size, limit) in sizes {
        assert!(
            size <= limit,
            "{name}'s future is {size} bytes (limit {limit})"
        );
    }
}

/// The control events the reference servers send are read without serde.
#[test]
fn compact_control_events_take_the_direct_path() {
    for data in [
        &br#"{"streamNextOffset":"0000000000000000_0000000000000005","streamCursor":"3398563","upToDate":true}"#[..],
        br#"{"streamNextOffset":"1_3","streamClosed":true}"#,
        br#"{"streamNextOffset":"1_3","streamCursor":null,"other":"x","upToDate":false}"#,
        "{\"streamNextOffset\":\"é\"}".as_bytes(),
    ] {
        let direct = flat_control(data).expect("compact form read directly");
        assert_eq!(Some(direct), serde_control(data).ok());
    }
    for data in [
        &br#"{"streamNextOffset":"a\"b"}"#[..],
        br#"{ "streamNextOffset":"1"}"#,
        br#"{"streamNextOffset":"1","streamCursor":5}"#,
        br#"{"streamNextOffset":"1","upToDate":true,"upToDate":false}"#,
        br#"{"streamNextOffset":"1","upToDate":"yes"}"#,
        br#"{"streamNextOffset":"1	x"}"#,
        br#"{"streamNextOffset":"1",}"#,
        br#"{"streamNextOffset":null}"#,
        b"{",
    ] {
        assert_eq!(
            flat_control(data),
            None,
            "{}",
            String::from_utf8_lossy(data)
        );
    }
}

fn control_value() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        "[ -~]{0,12}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        "\\PC{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("null".to_owned()),
        any::<i32>().prop_map(|n| n.to_string()),
        Just("[1]".to_owned()),
    ]
}

proptest::proptest! {
    /// Whatever the direct path reads, serde_json reads alike.
    #[test]
    fn direct_control_reading_matches_serde(
        fields in proptest::collection::vec(
            (
                proptest::sample::select(vec!["streamNextOffset", "streamCursor", "upToDate", "streamClosed", "x"]),
                control_value(),
            ),
            0..6,
        ),
        spaced in proptest::bool::ANY,
    ) {
        let sep = if spaced { ", " } else { "," };
        let body = fields
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect::<Vec<_>>()
            .join(sep);
        let data = format!("{{{body}}}");
        if let Some(direct) = flat_control(data.as_bytes()) {
            proptest::prop_assert_eq!(Some(direct), serde_control(data.as_bytes()).ok(), "{}", data);
        }
    }
}
