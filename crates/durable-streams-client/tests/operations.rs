//! Every stream operation against both real servers.

mod common;

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use durable_streams_client::{
    AppendOptions, ConflictReason, CreateOptions, ErrorKind, ForkOptions, Offset,
};
use serde_json::{Value, json};

#[tokio::test]
async fn create_is_idempotent_and_reports_conflicts() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "create");
        let first = s
            .create_with(CreateOptions::new().content_type("text/plain"))
            .await
            .unwrap();
        assert!(first.created, "{:?}", server.kind());
        assert!(first.next_offset.is_some());
        let again = s
            .create_with(CreateOptions::new().content_type("text/plain"))
            .await
            .unwrap();
        assert!(
            !again.created,
            "same config is 200, not 201 ({:?})",
            server.kind()
        );
        let err = s
            .create_with(CreateOptions::new().content_type("application/json"))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::Conflict(ConflictReason::ExistsWithDifferentConfig),
            "{err} ({:?})",
            server.kind()
        );
        assert_eq!(err.status(), Some(409));
        assert!(err.to_string().contains(s.url().path()), "{err}");
        assert!(err.to_string().contains("closed state"), "{err}");
    }
}

#[tokio::test]
async fn append_and_read_bytes() {
    for server in common::servers() {
        let client = common::client();
        let s =
            common::stream(&server, &client, "bytes").with_content_type("application/octet-stream");
        s.create().await.unwrap();
        let mut last = None;
        for part in [&b"alpha-"[..], b"beta-", &[0u8, 255, 1]] {
            let r = s.append(Bytes::copy_from_slice(part)).await.unwrap();
            let next = r.next_offset.expect("the server sends Stream-Next-Offset");
            if let Some(prev) = &last {
                assert!(next > *prev, "offsets must grow ({:?})", server.kind());
            }
            last = Some(next);
        }
        let all = s.read_bytes().await.unwrap();
        assert_eq!(&all[..], b"alpha-beta-\x00\xff\x01");
        let info = s.head().await.unwrap();
        assert_eq!(Some(info.next_offset), last);
        assert_eq!(
            info.content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert!(!info.closed);

        let err = s.append(Bytes::new()).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "data" });
    }
}

#[tokio::test]
async fn a_producer_connects_to_a_stream_created_elsewhere() {
    for server in common::servers() {
        let client = common::client();
        let url = server.unique_stream_url("producer-learn");
        client
            .stream(&url)
            .unwrap()
            .create_with(CreateOptions::json())
            .await
            .unwrap();
        let s = client.stream(&url).unwrap();
        let producer = durable_streams_client::Producer::builder(&s, "learner")
            .connect()
            .await
            .unwrap();
        producer.append_json(&json!({"n": 1})).unwrap();
        producer.close().await.unwrap();
        assert_eq!(s.read_json::<Value>().await.unwrap(), vec![json!({"n": 1})]);
    }
}

#[tokio::test]
async fn content_type_is_learned_with_one_head() {
    for server in common::servers() {
        let client = common::client();
        let url = server.unique_stream_url("learn");
        client
            .stream(&url)
            .unwrap()
            .create_with(CreateOptions::new().content_type("text/plain"))
            .await
            .unwrap();
        // A fresh handle that never heard the content type.
        let s = client.stream(&url).unwrap();
        assert_eq!(s.content_type(), None);
        s.append("hello").await.unwrap();
        assert_eq!(s.content_type().as_deref(), Some("text/plain"));
        assert_eq!(s.read_text().await.unwrap(), "hello");
    }
}

#[tokio::test]
async fn json_flattening_is_handled_for_the_user() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "json");
        s.create_with(CreateOptions::json()).await.unwrap();
        s.append_json(&json!({"event": "created"})).await.unwrap();
        // An array value is ONE message, not flattened into two.
        s.append_json(&json!([1, 2])).await.unwrap();
        s.append_json_batch([json!({"n": 1}), json!([3, 4])])
            .await
            .unwrap();
        let items: Vec<Value> = s.read_json().await.unwrap();
        assert_eq!(
            items,
            vec![
                json!({"event": "created"}),
                json!([1, 2]),
                json!({"n": 1}),
                json!([3, 4])
            ]
        );

        let err = s.append_json_batch(Vec::<Value>::new()).await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "values" });

        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Event {
            event: String,
        }
        let err = s.read_json::<Event>().await.unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Decode(_)), "{err}");
    }
}

#[tokio::test]
async fn close_is_idempotent_and_blocks_appends() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "close").with_content_type("text/plain");
        s.create().await.unwrap();
        let appended = s.append("data").await.unwrap();
        let closed = s.close().await.unwrap();
        assert_eq!(closed.final_offset.as_ref(), appended.next_offset.as_ref());
        let again = s.close().await.unwrap();
        assert_eq!(
            again.final_offset,
            closed.final_offset,
            "{:?}",
            server.kind()
        );
        let err = s.append("more").await.unwrap_err();
        match err.kind() {
            ErrorKind::StreamClosed { final_offset } => {
                assert_eq!(final_offset.as_ref(), appended.next_offset.as_ref())
            }
            other => panic!("expected StreamClosed, got {other:?}"),
        }
        assert!(s.head().await.unwrap().closed);
        assert_eq!(s.read_text().await.unwrap(), "data");
    }
}

#[tokio::test]
async fn close_with_final_message_is_atomic() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "final");
        s.create_with(CreateOptions::json()).await.unwrap();
        s.append_json(&json!(1)).await.unwrap();
        let closed = s.close_with_json(&json!({"done": true})).await.unwrap();
        let info = s.head().await.unwrap();
        assert!(info.closed);
        assert_eq!(closed.final_offset, Some(info.next_offset));
        let items: Vec<Value> = s.read_json().await.unwrap();
        assert_eq!(items, vec![json!(1), json!({"done": true})]);
        let err = s.close_with_json(&json!("late")).await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::StreamClosed { .. }),
            "{err}"
        );
    }
}

#[tokio::test]
async fn create_closed_with_body() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "oneshot");
        let r = s
            .create_with(
                CreateOptions::new()
                    .content_type("text/plain")
                    .body("complete")
                    .closed(true),
            )
            .await
            .unwrap();
        assert!(r.created && r.closed, "{r:?}");
        assert_eq!(s.read_text().await.unwrap(), "complete");
        assert!(s.head().await.unwrap().closed);
    }
}

#[tokio::test]
async fn delete_then_not_found() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "delete").with_content_type("text/plain");
        s.create().await.unwrap();
        s.delete().await.unwrap();
        assert_eq!(s.head().await.unwrap_err().kind(), &ErrorKind::NotFound);
        assert_eq!(
            s.read_bytes().await.unwrap_err().kind(),
            &ErrorKind::NotFound
        );
        assert_eq!(
            s.append("x").await.unwrap_err().kind(),
            &ErrorKind::NotFound
        );
        assert_eq!(s.delete().await.unwrap_err().kind(), &ErrorKind::NotFound);
    }
}

#[tokio::test]
async fn head_reports_ttl_and_expiry() {
    for server in common::servers() {
        let client = common::client();
        let ttl = common::stream(&server, &client, "ttl");
        ttl.create_with(
            CreateOptions::new()
                .content_type("text/plain")
                .ttl(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        assert_eq!(
            ttl.head().await.unwrap().ttl,
            Some(Duration::from_secs(3600))
        );

        let at = SystemTime::now() + Duration::from_secs(7200);
        let exp = common::stream(&server, &client, "exp");
        exp.create_with(
            CreateOptions::new()
                .content_type("text/plain")
                .expires_at(at),
        )
        .await
        .unwrap();
        let info = exp.head().await.unwrap();
        let got = info
            .expires_at
            .unwrap_or_else(|| panic!("unparsed {:?}", info.expires_at_raw));
        let diff = got.duration_since(at).unwrap_or_else(|e| e.duration());
        assert!(diff < Duration::from_secs(2), "{diff:?}");

        let err = ttl
            .create_with(
                CreateOptions::new()
                    .content_type("text/plain")
                    .ttl(Duration::from_millis(10)),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "ttl" });
    }
}

#[tokio::test]
async fn stream_seq_regression_is_a_conflict() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "seq").with_content_type("text/plain");
        s.create().await.unwrap();
        s.append_with("a", AppendOptions::default().seq("0002"))
            .await
            .unwrap();
        s.append_with("b", AppendOptions::default().seq("0003"))
            .await
            .unwrap();
        let err = s
            .append_with("c", AppendOptions::default().seq("0001"))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            &ErrorKind::Conflict(ConflictReason::SequenceRegression),
            "{err} ({:?})",
            server.kind()
        );
    }
}

#[tokio::test]
async fn content_type_mismatch_is_a_conflict() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "ctm");
        s.create_with(CreateOptions::new().content_type("text/plain"))
            .await
            .unwrap();
        let err = s
            .append_with(
                "x",
                AppendOptions::new().content_type("application/octet-stream"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Conflict(_)),
            "{err} ({:?})",
            server.kind()
        );
        let shown = err.to_string();
        assert!(
            shown.contains("\"application/octet-stream\"") && shown.contains("`Stream::head`"),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn fork_inherits_prefix_and_diverges() {
    for server in common::servers() {
        let client = common::client();
        let source = common::stream(&server, &client, "src");
        source
            .create_with(CreateOptions::new().content_type("text/plain"))
            .await
            .unwrap();
        let at = source.append("one,").await.unwrap().next_offset.unwrap();
        source.append("two,").await.unwrap();

        let fork = common::stream(&server, &client, "fork");
        let r = fork
            .fork(
                ForkOptions::from_stream(&source).offset(at.clone()),
                CreateOptions::new(),
            )
            .await
            .unwrap();
        assert!(r.created, "{:?}", server.kind());
        fork.append("fork-only").await.unwrap();
        assert_eq!(fork.read_text().await.unwrap(), "one,fork-only");
        assert_eq!(source.read_text().await.unwrap(), "one,two,");
        assert_eq!(
            fork.head().await.unwrap().content_type.as_deref(),
            Some("text/plain")
        );

        // Whole-source fork with a sub-offset of 2 bytes past the anchor.
        let sub = common::stream(&server, &client, "sub");
        sub.fork(
            ForkOptions::from_stream(&source)
                .offset(Offset::parse(at.as_str()).unwrap())
                .sub_offset(2),
            CreateOptions::new(),
        )
        .await
        .unwrap();
        assert_eq!(sub.read_text().await.unwrap(), "one,tw");

        let missing = common::stream(&server, &client, "nosrc");
        let err = missing
            .fork(
                ForkOptions::from_path("/v1/stream/does-not-exist"),
                CreateOptions::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::NotFound);
    }
}

#[tokio::test]
async fn reading_from_an_offset_resumes_exactly() {
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "resume").with_content_type("text/plain");
        s.create().await.unwrap();
        let mid = s.append("first|").await.unwrap().next_offset.unwrap();
        s.append("second|").await.unwrap();
        let rest = s.read().offset(mid.clone()).collect_bytes().await.unwrap();
        assert_eq!(&rest[..], b"second|");
        let none = s
            .read()
            .offset(Offset::now())
            .collect_bytes()
            .await
            .unwrap();
        assert!(none.is_empty());
        let err = s
            .read()
            .offset(Offset::parse("not-an-offset").unwrap())
            .collect_bytes()
            .await;
        if let Err(e) = err {
            assert!(
                matches!(e.kind(), ErrorKind::BadRequest | ErrorKind::Gone),
                "{e}"
            );
        }
    }
}

#[tokio::test]
async fn invalid_offsets_never_reach_the_wire() {
    for bad in ["a&b", "a/b", "", "x=y"] {
        let err = durable_streams_client::Error::from(Offset::parse(bad).unwrap_err());
        assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "offset" });
    }
}

#[tokio::test]
async fn responses_larger_than_the_limit_are_refused() {
    for server in common::servers() {
        let small = durable_streams_client::Client::builder()
            .max_response_bytes(1024)
            .build()
            .unwrap();
        let url = server.unique_stream_url("limit");
        let writer = common::client().stream(&url).unwrap();
        writer
            .create_with(CreateOptions::new().content_type("text/plain"))
            .await
            .unwrap();
        writer.append(vec![b'x'; 4096]).await.unwrap();
        writer.close().await.unwrap();
        let reader = small.stream(&url).unwrap();
        for mode in [
            durable_streams_client::LiveMode::Off,
            durable_streams_client::LiveMode::Sse,
        ] {
            let err = reader.read().live(mode).collect_bytes().await.unwrap_err();
            assert_eq!(
                err.kind(),
                &ErrorKind::ResponseTooLarge { limit: 1024 },
                "{mode:?} {:?}",
                server.kind()
            );
        }
    }
}

#[tokio::test]
async fn a_read_from_inside_a_json_message_says_the_offset_is_not_a_boundary() {
    use futures::StreamExt;
    for server in common::servers() {
        let client = common::client();
        let s = common::stream(&server, &client, "midjson");
        s.create_with(CreateOptions::json()).await.unwrap();
        let first = s.append_json(&json!({"a": 1})).await.unwrap();
        s.append_json(&json!({"b": 22})).await.unwrap();
        // One byte past the start: inside the first message.
        let token = first.next_offset.unwrap().as_str().to_owned();
        let (head, _) = token.split_at(token.len() - 1);
        let mid = Offset::parse(&format!("{head}1")).unwrap();
        let mut read = s.read().offset(mid).json::<Value>();
        let mut failure = None;
        while let Some(batch) = read.next().await {
            match batch {
                Ok(batch) if batch.up_to_date => break,
                Ok(_) => {}
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        // The Rust server slices inside the message; the Node server rounds
        // to a boundary. Either way no bare "ended inside the array".
        if let Some(err) = failure {
            assert!(
                err.to_string().contains("probably not a message boundary"),
                "{err} ({:?})",
                server.kind()
            );
        }
    }
}
