use super::*;

fn url(s: &str) -> url::Url {
    url::Url::parse(s).unwrap()
}

#[test]
fn writes_follow_only_same_origin_307_308() {
    let from = url("http://h:1/v1/stream/a");
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        for status in [301u16, 302, 303] {
            assert_eq!(
                redirect_decision(
                    RedirectPolicy::AnyOrigin,
                    &method,
                    StatusCode::from_u16(status).unwrap(),
                    &from,
                    Some("/v1/stream/b")
                ),
                Redirect::Refuse,
                "{method} {status}"
            );
        }
        for status in [
            StatusCode::TEMPORARY_REDIRECT,
            StatusCode::PERMANENT_REDIRECT,
        ] {
            assert_eq!(
                redirect_decision(
                    RedirectPolicy::SameOrigin,
                    &method,
                    status,
                    &from,
                    Some("/v1/stream/b")
                ),
                Redirect::Follow(url("http://h:1/v1/stream/b"))
            );
            assert_eq!(
                redirect_decision(
                    RedirectPolicy::AnyOrigin,
                    &method,
                    status,
                    &from,
                    Some("http://other:1/v1/stream/b")
                ),
                Redirect::Refuse,
                "a write never crosses origins"
            );
        }
    }
}

#[test]
fn reads_follow_by_policy_and_never_downgrade() {
    let from = url("https://h/v1/stream/a");
    let get = Method::GET;
    let found = StatusCode::FOUND;
    assert!(matches!(
        redirect_decision(RedirectPolicy::SameOrigin, &get, found, &from, Some("/x")),
        Redirect::Follow(_)
    ));
    assert_eq!(
        redirect_decision(
            RedirectPolicy::SameOrigin,
            &get,
            found,
            &from,
            Some("https://other/x")
        ),
        Redirect::Refuse
    );
    assert!(matches!(
        redirect_decision(
            RedirectPolicy::AnyOrigin,
            &get,
            found,
            &from,
            Some("https://other/x")
        ),
        Redirect::Follow(_)
    ));
    assert_eq!(
        redirect_decision(
            RedirectPolicy::AnyOrigin,
            &get,
            found,
            &from,
            Some("http://h/v1/stream/a")
        ),
        Redirect::Refuse,
        "https to http"
    );
    assert_eq!(
        redirect_decision(RedirectPolicy::None, &get, found, &from, Some("/x")),
        Redirect::Refuse
    );
    assert_eq!(
        redirect_decision(RedirectPolicy::SameOrigin, &get, found, &from, None),
        Redirect::Refuse
    );
    assert_eq!(
        redirect_decision(
            RedirectPolicy::AnyOrigin,
            &get,
            found,
            &from,
            Some("ftp://h/x")
        ),
        Redirect::Refuse
    );
}

#[test]
fn retry_table() {
    use Idempotency::{Safe, Unsafe};
    let s = |c| StatusCode::from_u16(c).unwrap();
    for code in [429, 500, 503] {
        assert!(retryable_status(s(code), Safe) && retryable_status(s(code), Unsafe));
    }
    for code in [502, 504] {
        assert!(retryable_status(s(code), Safe));
        assert!(!retryable_status(s(code), Unsafe));
        assert!(gateway_outcome_unknown(s(code), Unsafe));
        assert!(!gateway_outcome_unknown(s(code), Safe));
    }
    for code in [400, 401, 403, 404, 409, 410, 413, 501, 505] {
        assert!(!retryable_status(s(code), Safe), "{code}");
        assert!(!retryable_status(s(code), Unsafe), "{code}");
    }
    assert!(retryable_status(s(507), Safe) && !retryable_status(s(507), Unsafe));
}

#[test]
fn auth_failures_exclude_stale_epochs() {
    let mut h = HeaderMap::new();
    assert!(is_auth_failure(StatusCode::UNAUTHORIZED, &h));
    assert!(is_auth_failure(StatusCode::FORBIDDEN, &h));
    h.insert(names::PRODUCER_EPOCH, HeaderValue::from_static("3"));
    assert!(!is_auth_failure(StatusCode::FORBIDDEN, &h));
}

#[test]
fn cross_origin_drops_secret_headers() {
    let mut h = HeaderMap::new();
    h.insert("authorization", HeaderValue::from_static("Bearer x"));
    h.insert("cookie", HeaderValue::from_static("a=b"));
    let mut sensitive = HeaderValue::from_static("v");
    sensitive.set_sensitive(true);
    h.insert("x-custom", sensitive);
    h.insert("x-tenant", HeaderValue::from_static("acme"));
    h.retain_secrets_dropped();
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("x-tenant"));
}

#[test]
fn shown_locations_have_no_secrets() {
    let from = url("http://h:1/v1/stream/a");
    let shown = shown_location(&from, Some("http://u:pw@o:2/p?token=abc")).unwrap();
    assert!(!shown.contains("pw") && !shown.contains("abc"), "{shown}");
    assert_eq!(
        shown_location(&from, Some("/b?x=1")).as_deref(),
        Some("http://h:1/b")
    );
}

mod scripted {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use crate::testing::{Reply, ScriptedServer};
    use crate::{Client, ErrorKind, RedirectPolicy, RetryPolicy, Stream};

    fn client(redirects: RedirectPolicy) -> Client {
        Client::builder()
            .retry_policy(
                RetryPolicy::default()
                    .max_retries(3)
                    .initial_delay(Duration::from_millis(1))
                    .max_delay(Duration::from_millis(5)),
            )
            .redirects(redirects)
            .build()
            .unwrap()
    }

    fn stream(server: &ScriptedServer) -> Stream {
        client(RedirectPolicy::default())
            .stream(server.url("/v1/stream/s"))
            .unwrap()
            .with_content_type("application/octet-stream")
    }

    fn appended() -> Reply {
        Reply::status(204).with_header("stream-next-offset", "0_5")
    }

    #[tokio::test]
    async fn plain_http_through_a_configured_proxy_goes_to_the_proxy() {
        // Plain-HTTP requests normally skip reqwest; with a proxy they must
        // not: the proxy sees the absolute URL of the origin.
        let proxy = ScriptedServer::start(|_, _| appended()).await;
        let client = Client::builder().proxy(&proxy.base_url).build().unwrap();
        let stream = client
            .stream("http://origin.invalid:9/v1/stream/s")
            .unwrap()
            .with_content_type("application/octet-stream");
        stream.append("x").await.unwrap();
        let seen = proxy.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].target, "http://origin.invalid:9/v1/stream/s");
        // Without the proxy, the same client settings go direct.
        let direct = ScriptedServer::start(|_, _| appended()).await;
        stream_direct(&direct).append("x").await.unwrap();
        assert_eq!(direct.requests()[0].target, "/v1/stream/s");
    }

    #[tokio::test]
    async fn a_url_too_long_to_send_fails_at_once() {
        let server = ScriptedServer::start(|_, _| appended()).await;
        let long = server.url(&format!("/v1/stream/{}", "a".repeat(70_000)));
        let err = client(RedirectPolicy::default())
            .stream(long)
            .unwrap()
            .with_content_type("application/octet-stream")
            .append("x")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "url" });
        assert!(!err.is_outcome_unknown());
        assert_eq!(server.count(), 0);
    }

    fn stream_direct(server: &ScriptedServer) -> Stream {
        Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .stream(server.url("/v1/stream/s"))
            .unwrap()
            .with_content_type("application/octet-stream")
    }

    #[tokio::test]
    async fn gateway_errors_on_plain_appends_are_outcome_unknown() {
        for status in [502, 504] {
            let server = ScriptedServer::start(move |_, _| Reply::status(status)).await;
            let err = stream(&server).append("x").await.unwrap_err();
            assert!(err.is_outcome_unknown(), "{status}: {err}");
            assert_eq!(err.kind(), &ErrorKind::Server { status });
            assert_eq!(
                server.count(),
                1,
                "{status} is not retried for a plain append"
            );
        }
    }

    #[tokio::test]
    async fn plain_appends_retry_what_the_server_did_not_do() {
        let server = ScriptedServer::start(|_, i| match i {
            0 => Reply::status(503),
            1 => Reply::status(429),
            2 => Reply::status(500),
            _ => appended(),
        })
        .await;
        let r = stream(&server).append("x").await.unwrap();
        assert_eq!(r.next_offset.unwrap().as_str(), "0_5");
        assert_eq!(server.count(), 4);
        assert!(server.requests().iter().all(|r| r.body == b"x"));
    }

    #[tokio::test]
    async fn safe_requests_retry_gateway_errors_within_one_budget() {
        let server = ScriptedServer::start(|_, i| match i {
            0 => Reply::status(502),
            _ => Reply::status(200).with_header("stream-next-offset", "0_1"),
        })
        .await;
        stream(&server).head().await.unwrap();
        assert_eq!(server.count(), 2);

        let always = ScriptedServer::start(|_, _| Reply::status(503)).await;
        let err = stream(&always).head().await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Server { status: 503 });
        assert_eq!(always.count(), 4, "one try plus max_retries, no nesting");
    }

    #[tokio::test]
    async fn retry_after_is_a_minimum() {
        let server = ScriptedServer::start(|_, i| match i {
            0 => Reply::status(429).with_header("retry-after", "1"),
            _ => Reply::status(200).with_header("stream-next-offset", "0_1"),
        })
        .await;
        let started = std::time::Instant::now();
        stream(&server).head().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(950));
        assert_eq!(server.count(), 2);
    }

    #[tokio::test]
    async fn dropped_connections_after_sending_an_append_are_outcome_unknown() {
        let server = ScriptedServer::start(|req, _| {
            if req.method == "POST" {
                Reply::Close
            } else {
                Reply::status(200).with_header("stream-next-offset", "0_1")
            }
        })
        .await;
        let s = stream(&server);
        let err = s.append("x").await.unwrap_err();
        assert!(err.is_outcome_unknown(), "{err}");
        assert_eq!(server.count(), 1);

        let flaky = ScriptedServer::start(|_, i| {
            if i == 0 {
                Reply::Close
            } else {
                Reply::status(200).with_header("stream-next-offset", "0_1")
            }
        })
        .await;
        stream(&flaky).head().await.unwrap();
        assert_eq!(flaky.count(), 2, "a HEAD is retried");
    }

    #[tokio::test]
    async fn connect_errors_are_not_outcome_unknown() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1/stream/s", listener.local_addr().unwrap());
        drop(listener);
        let s = client(RedirectPolicy::default())
            .stream(url)
            .unwrap()
            .with_content_type("text/plain");
        let err = s.append("x").await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Network);
        assert!(!err.is_outcome_unknown(), "nothing was sent: {err}");
    }

    #[tokio::test]
    async fn writes_never_follow_a_redirect_that_would_lose_them() {
        for status in [301u16, 302, 303] {
            let server = ScriptedServer::start(move |_, _| {
                Reply::status(status).with_header("location", "/v1/stream/other")
            })
            .await;
            let err = stream(&server).append("x").await.unwrap_err();
            assert_eq!(
                err.kind(),
                &ErrorKind::Redirect {
                    status,
                    location: Some(server.url("/v1/stream/other")),
                }
            );
            assert_eq!(server.count(), 1, "nothing followed for {status}");
        }
    }

    #[tokio::test]
    async fn a_handed_in_client_that_follows_redirects_is_refused() {
        let server = ScriptedServer::start(|req, _| {
            if req.path() == "/v1/stream/s" {
                Reply::status(302).with_header("location", "/v1/stream/moved")
            } else {
                appended()
            }
        })
        .await;
        // reqwest's default policy follows redirects, turning a POST after
        // a 302 into a GET: the answer must not pass for the write's.
        let following = reqwest::Client::builder().build().unwrap();
        let client = Client::builder().http_client(following).build().unwrap();
        let s = client
            .stream(server.url("/v1/stream/s"))
            .unwrap()
            .with_content_type("application/octet-stream");
        let err = s.append("x").await.unwrap_err();
        assert!(
            matches!(err.kind(), ErrorKind::Redirect { status: 204, .. }),
            "{err:?}"
        );
        // A handed-in client that does not follow works as usual.
        let plain = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let client = Client::builder().http_client(plain).build().unwrap();
        let ok = ScriptedServer::start(|_, _| appended()).await;
        let s = client
            .stream(ok.url("/v1/stream/s"))
            .unwrap()
            .with_content_type("application/octet-stream");
        s.append("x").await.unwrap();
    }

    #[tokio::test]
    async fn writes_follow_same_origin_307_with_the_body() {
        let server = ScriptedServer::start(|req, _| {
            if req.path() == "/v1/stream/s" {
                Reply::status(307).with_header("location", "/v1/stream/moved")
            } else {
                appended()
            }
        })
        .await;
        stream(&server).append("payload").await.unwrap();
        let seen = server.requests();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].method, "POST");
        assert_eq!(seen[1].path(), "/v1/stream/moved");
        assert_eq!(seen[1].body, b"payload");

        let other = ScriptedServer::start(|_, _| appended()).await;
        let to = other.url("/v1/stream/s");
        let cross =
            ScriptedServer::start(move |_, _| Reply::status(308).with_header("location", &to))
                .await;
        let err = stream(&cross).append("x").await.unwrap_err();
        assert!(matches!(
            err.kind(),
            ErrorKind::Redirect { status: 308, .. }
        ));
        assert_eq!(other.count(), 0, "a write never crosses origins");
    }

    #[tokio::test]
    async fn reads_cross_origins_only_when_allowed_and_without_credentials() {
        let other = ScriptedServer::start(|_, _| {
            Reply::status(200).with_header("stream-next-offset", "0_1")
        })
        .await;
        let to = other.url("/elsewhere");
        let origin =
            ScriptedServer::start(move |_, _| Reply::status(302).with_header("location", &to))
                .await;
        let url = origin.url("/v1/stream/s");
        let refused = client(RedirectPolicy::default())
            .stream(&url)
            .unwrap()
            .head()
            .await
            .unwrap_err();
        assert!(matches!(
            refused.kind(),
            ErrorKind::Redirect { status: 302, .. }
        ));
        assert_eq!(other.count(), 0);

        let s = client(RedirectPolicy::AnyOrigin)
            .stream(&url)
            .unwrap()
            .with_header("authorization", "Bearer s3cret")
            .with_header_fn("x-signed", || "computed".to_owned())
            .with_header("x-tenant", "acme")
            .with_param_fn("token", || "t0k3n".to_owned())
            .with_param("region", "eu");
        s.head().await.unwrap();
        let seen = other.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].header("x-tenant"), Some("acme"));
        assert_eq!(seen[0].header("authorization"), None);
        assert_eq!(seen[0].header("x-signed"), None);
        assert!(!seen[0].target.contains("t0k3n"), "{}", seen[0].target);
        assert!(seen[0].target.contains("region=eu"), "{}", seen[0].target);
        let first = origin.requests().pop().unwrap();
        assert_eq!(first.header("authorization"), Some("Bearer s3cret"));
    }

    #[tokio::test]
    async fn refused_credentials_call_the_refresh_hook() {
        let server = ScriptedServer::start(|req, _| {
            if req.header("authorization") == Some("Bearer fresh") {
                Reply::status(200).with_header("stream-next-offset", "0_1")
            } else {
                Reply::status(401)
            }
        })
        .await;
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&calls);
        let s = stream(&server)
            .with_header("authorization", "Bearer expired")
            .with_auth_refresh(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Ok(Some("Bearer fresh".to_owned())) }
            });
        s.head().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // The refreshed value is kept for clones and later requests.
        s.clone().head().await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(server.count(), 3);

        let never = ScriptedServer::start(|_, _| Reply::status(401)).await;
        let s = stream(&never).with_auth_refresh(|| async { Ok(None) });
        let err = s.head().await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Unauthorized { status: 401 });
        assert_eq!(never.count(), 3, "two refreshes, then the error");

        let plain = ScriptedServer::start(|_, _| Reply::status(403)).await;
        let err = stream(&plain).head().await.unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Unauthorized { status: 403 });
        assert_eq!(plain.count(), 1);
    }

    #[tokio::test]
    async fn an_applied_append_without_an_offset_is_success() {
        let server = ScriptedServer::start(|_, _| Reply::status(204)).await;
        let r = stream(&server).append("x").await.unwrap();
        assert_eq!(r.next_offset, None);
        assert_eq!(server.count(), 1);
    }

    #[tokio::test]
    async fn errors_do_not_show_query_tokens() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://user:pw@{}/v1/stream/s?token=abc",
            listener.local_addr().unwrap()
        );
        drop(listener);
        let err = client(RedirectPolicy::default())
            .stream(url)
            .unwrap()
            .head()
            .await
            .unwrap_err();
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains("abc") && !shown.contains("pw"), "{shown}");
        }
    }
}

/// Every live reader holds one request future while it waits for an answer
/// (10,000 long-poll subscribers hold 10,000): it must stay small. Before
/// the HTTP engine built its request ahead of its future, it was 2 KB.
#[tokio::test]
async fn a_waiting_request_stays_small() {
    let client = crate::Client::new();
    let stream = client.stream("http://127.0.0.1:1/s").unwrap();
    let inner = &stream.inner;
    let spec = RequestSpec::new(Method::GET, "read");
    let mut backoff = Backoff::new(inner.client.retry_policy());
    let target = inner.target();
    let transport = inner.transport();
    let send = transport.send(&target, &spec, &mut backoff);
    let size = std::mem::size_of_val(&send);
    assert!(size <= 1024, "Transport::send's future is {size} bytes");
    drop(send);
    let buffered = transport.send_buffered(&target, &spec, &mut backoff);
    let size = std::mem::size_of_val(&buffered);
    assert!(
        size <= 1536,
        "Transport::send_buffered's future is {size} bytes"
    );
}

/// A request's own query is sent in key order, a later pair replacing an
/// earlier one of the same key, alike on the inline path (a few pairs) and
/// the general one (many, or a URL with a query of its own).
#[tokio::test]
async fn request_query_is_ordered_and_deduplicated() {
    let client = crate::Client::new();
    let stream = client.stream("http://127.0.0.1:1/s").unwrap();
    let inner = &stream.inner;
    let target = inner.target();
    let transport = inner.transport();
    let offset = crate::Offset::parse("0_5 x").unwrap();
    let spec = RequestSpec::new(Method::GET, "read")
        .query("offset", offset)
        .query("live", "long-poll")
        .query("cursor", "c1".to_owned())
        .query("cursor", "c2".to_owned());
    let sent = transport.sent_url(target.url, &target, &spec, false).await;
    assert_eq!(
        sent.query(),
        Some("cursor=c2&live=long-poll&offset=0_5%20x")
    );
    let many = ["g", "f", "e", "d", "c", "b", "a"]
        .into_iter()
        .fold(spec.clone(), |spec, key| spec.query(key, "1"));
    let sent = transport.sent_url(target.url, &target, &many, false).await;
    assert_eq!(
        sent.query(),
        Some("a=1&b=1&c=1&cursor=c2&d=1&e=1&f=1&g=1&live=long-poll&offset=0_5%20x")
    );
    let with_own = url("http://127.0.0.1:1/s?live=sse&z=9");
    let sent = transport.sent_url(&with_own, &target, &spec, false).await;
    assert_eq!(
        sent.query(),
        Some("cursor=c2&live=long-poll&offset=0_5%20x&z=9")
    );
    let none = RequestSpec::new(Method::HEAD, "head");
    let sent = transport.sent_url(target.url, &target, &none, false).await;
    assert_eq!(sent.query(), None);
}
