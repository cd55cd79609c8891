//! The fault proxy against real servers.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use test_servers::fault_proxy::{Fault, FaultProxy, Rule};
use test_servers::{HttpResponse, ServerKind, TestServer, both, http_request, url_path};

const TEXT: (&str, &str) = ("content-type", "text/plain");

fn create(url: &str) {
    let r = http_request("PUT", url, &[TEXT], b"").unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
}

fn append(url: &str, body: &[u8]) -> HttpResponse {
    http_request("POST", url, &[TEXT], body).unwrap()
}

fn read_all(url: &str) -> HttpResponse {
    http_request("GET", &format!("{url}?offset=-1"), &[], b"").unwrap()
}

/// Sends a raw request and reads until EOF, an error or `timeout`.
/// Returns the bytes and whether the peer closed the connection.
fn raw(url: &str, method: &str, target: &str, body: &[u8], timeout: Duration) -> (Vec<u8>, bool) {
    let authority = url
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let mut s = TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {authority}\r\ncontent-type: text/plain\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

#[test]
fn passes_through_and_counts() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let url = proxy.url_of(&server.unique_stream_url("pass"));
        let path = url_path(&url).to_owned();
        create(&url);
        assert_eq!(append(&url, b"ab").status, 204, "{kind}");
        let read = read_all(&url);
        assert_eq!(read.status, 200, "{kind}");
        assert_eq!(read.body, b"ab", "{kind}");
        assert!(read.header("stream-next-offset").is_some(), "{kind}");
        assert_eq!(proxy.requests("PUT", &path), 1);
        assert_eq!(proxy.requests("post", &path), 1);
        assert_eq!(proxy.requests("GET", &path), 1);
        assert_eq!(proxy.requests_with_method("GET"), 1);
        assert_eq!(proxy.total_requests(), 3);
        assert_eq!(
            proxy.request_log(),
            vec![
                format!("PUT {path}"),
                format!("POST {path}"),
                format!("GET {path}?offset=-1")
            ]
        );
        proxy.reset_counters();
        assert_eq!(proxy.total_requests(), 0);
        assert_eq!(proxy.requests("GET", &path), 0);
        assert!(proxy.request_log().is_empty());
    }
}

#[test]
fn redirect_is_not_forwarded() {
    let server = TestServer::start(ServerKind::Rust);
    let proxy = FaultProxy::start(&server);
    let upstream = server.unique_stream_url("redirect");
    let url = proxy.url_of(&upstream);
    create(&url);
    let id = proxy.add_rule(
        Rule::new(Fault::Redirect {
            status: 307,
            location: upstream.clone(),
        })
        .method("POST"),
    );
    let r = append(&url, b"x");
    assert_eq!(r.status, 307);
    assert_eq!(r.header("location"), Some(upstream.as_str()));
    assert_eq!(proxy.rule_hits(id), 1);
    // Not applied; GETs are not matched by the rule.
    assert_eq!(read_all(&url).body, b"");
    assert!(proxy.remove_rule(id));
    assert!(!proxy.remove_rule(id));
    assert_eq!(append(&url, b"y").status, 204);
    assert_eq!(read_all(&url).body, b"y");
}

#[test]
fn status_after_forward_applies_the_write() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let url = proxy.url_of(&server.unique_stream_url("saf"));
        create(&url);
        proxy.add_rule(Rule::new(Fault::StatusAfterForward(504)).method("POST"));
        let r = append(&url, b"applied");
        assert_eq!(r.status, 504, "{kind}");
        assert!(r.body.is_empty());
        assert_eq!(read_all(&url).body, b"applied", "{kind}");
    }
}

#[test]
fn status_with_headers_and_count_limit() {
    let server = TestServer::start(ServerKind::Rust);
    let proxy = FaultProxy::start(&server);
    let url = proxy.url_of(&server.unique_stream_url("status"));
    create(&url);
    let id = proxy.add_rule(
        Rule::new(Fault::Status(503, vec![("Retry-After".into(), "1".into())]))
            .method("POST")
            .path(url_path(&url))
            .times(2),
    );
    for _ in 0..2 {
        let r = append(&url, b"no");
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert_eq!(append(&url, b"yes").status, 204);
    assert_eq!(proxy.rule_hits(id), 2);
    assert_eq!(read_all(&url).body, b"yes");
    assert_eq!(proxy.requests("POST", url_path(&url)), 3);
}

#[test]
fn query_and_path_conditions() {
    let server = TestServer::start(ServerKind::Rust);
    let proxy = FaultProxy::start(&server);
    let url = proxy.url_of(&server.unique_stream_url("cond"));
    let other = proxy.url_of(&server.unique_stream_url("other"));
    create(&url);
    create(&other);
    proxy.add_rule(
        Rule::new(Fault::Status(401, vec![]))
            .path(url_path(&url))
            .query("offset=-1"),
    );
    assert_eq!(read_all(&url).status, 401);
    assert_eq!(read_all(&other).status, 200);
    let head = http_request("HEAD", &url, &[], b"").unwrap();
    assert_eq!(head.status, 200);
    proxy.clear_rules();
    assert_eq!(read_all(&url).status, 200);
}

#[test]
fn stale_replay_repeats_the_first_answer() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let url = proxy.url_of(&server.unique_stream_url("stale"));
        create(&url);
        append(&url, b"one");
        let id = proxy.add_rule(Rule::new(Fault::StaleReplay).method("GET"));
        let first = read_all(&url);
        assert_eq!(first.body, b"one", "{kind}");
        append(&url, b"two");
        let again = read_all(&url);
        assert_eq!(again.status, first.status);
        assert_eq!(again.body, b"one", "{kind}");
        assert_eq!(
            again.header("stream-next-offset"),
            first.header("stream-next-offset")
        );
        assert_eq!(proxy.rule_hits(id), 2);
        proxy.clear_rules();
        assert_eq!(read_all(&url).body, b"onetwo", "{kind}");
    }
}

#[test]
fn headers_rewritten_and_stripped() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let url = proxy.url_of(&server.unique_stream_url("hdr"));
        create(&url);
        append(&url, b"x");
        proxy.add_rule(
            Rule::new(Fault::RewriteHeader {
                name: "Stream-Next-Offset".into(),
                value: "backwards".into(),
            })
            .times(1),
        );
        proxy.add_rule(Rule::new(Fault::StripHeader("stream-next-offset".into())).times(1));
        proxy.add_rule(
            Rule::new(Fault::MapHeader {
                name: "stream-next-offset".into(),
                map: std::sync::Arc::new(|v| v.map(|v| format!("{v}-mapped"))),
            })
            .times(1),
        );
        let rewritten = read_all(&url);
        assert_eq!(rewritten.body, b"x");
        assert_eq!(rewritten.header("stream-next-offset"), Some("backwards"));
        let stripped = read_all(&url);
        assert_eq!(stripped.body, b"x");
        assert_eq!(stripped.header("stream-next-offset"), None, "{kind}");
        let mapped = read_all(&url);
        let real = read_all(&url);
        let real_offset = real.header("stream-next-offset").unwrap();
        assert_eq!(
            mapped.header("stream-next-offset"),
            Some(format!("{real_offset}-mapped").as_str()),
            "{kind}"
        );
        proxy.add_rule(Rule::new(Fault::RewriteHeader {
            name: "Stream-Next-Offset".into(),
            value: "backwards".into(),
        }));
        assert_eq!(
            read_all(&url).header("stream-next-offset"),
            Some("backwards")
        );
    }
}

#[test]
fn sse_is_cut_after_the_first_control_event() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let url = proxy.url_of(&server.unique_stream_url("sse"));
        create(&url);
        append(&url, b"hello");
        let path = url_path(&url).to_owned();
        // Uncut, the SSE response stays open.
        let (bytes, closed) = raw(
            &url,
            "GET",
            &format!("{path}?offset=-1&live=sse"),
            b"",
            Duration::from_millis(800),
        );
        let text = String::from_utf8_lossy(&bytes);
        assert!(!closed, "{kind}: {text}");
        assert!(text.contains("event: control"), "{kind}: {text}");

        proxy.add_rule(Rule::new(Fault::CutSseAfterFirstControl).query("live=sse"));
        let started = Instant::now();
        let (bytes, closed) = raw(
            &url,
            "GET",
            &format!("{path}?offset=-1&live=sse"),
            b"",
            Duration::from_secs(5),
        );
        let text = String::from_utf8_lossy(&bytes);
        assert!(closed, "{kind}: {text}");
        assert!(started.elapsed() < Duration::from_secs(2), "{kind}");
        assert!(text.contains("hello"), "{kind}: {text}");
        assert_eq!(text.matches("event: control").count(), 1, "{kind}: {text}");
        // Cut abruptly: a chunked body without its final zero-size chunk.
        assert!(!text.ends_with("0\r\n\r\n"), "{kind}: {text}");
        // The control event itself is complete.
        let after = &text[text.find("event: control").unwrap()..];
        assert!(
            after.contains("}\n\n") || after.contains("}\r\n\r\n"),
            "{kind}: {text}"
        );
    }
}

#[test]
fn black_hole_never_answers_and_does_not_forward() {
    let server = TestServer::start(ServerKind::Rust);
    let proxy = FaultProxy::start(&server);
    let url = proxy.url_of(&server.unique_stream_url("hole"));
    create(&url);
    proxy.add_rule(Rule::new(Fault::BlackHole).method("POST").times(1));
    let (bytes, closed) = raw(
        &url,
        "POST",
        url_path(&url),
        b"lost",
        Duration::from_millis(700),
    );
    assert!(bytes.is_empty());
    assert!(!closed);
    assert_eq!(read_all(&url).body, b"");
    assert_eq!(proxy.requests("POST", url_path(&url)), 1);
}

#[test]
fn drop_after_forward_applies_and_closes() {
    for kind in both() {
        let server = TestServer::start(kind);
        let proxy = FaultProxy::start(&server);
        let url = proxy.url_of(&server.unique_stream_url("drop"));
        create(&url);
        proxy.add_rule(Rule::new(Fault::DropAfterForward).method("POST"));
        let (bytes, closed) = raw(
            &url,
            "POST",
            url_path(&url),
            b"kept",
            Duration::from_secs(5),
        );
        assert!(closed, "{kind}");
        assert!(
            bytes.is_empty(),
            "{kind}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(read_all(&url).body, b"kept", "{kind}");
    }
}

#[test]
fn redirect_to_a_path_on_the_proxy() {
    let server = TestServer::start(ServerKind::Node);
    let proxy = FaultProxy::start(&server);
    let url = proxy.url_of(&server.unique_stream_url("moved"));
    let target = proxy.url_of(&server.unique_stream_url("target"));
    create(&url);
    create(&target);
    append(&target, b"t");
    proxy.add_rule(
        Rule::new(Fault::Redirect {
            status: 302,
            location: url_path(&target).to_owned(),
        })
        .path(url_path(&url))
        .method("GET"),
    );
    let r = read_all(&url);
    assert_eq!(r.status, 302);
    let location = r.header("location").unwrap();
    assert_eq!(location, url_path(&target));
    let followed = read_all(&proxy.url_of(location));
    assert_eq!(followed.body, b"t");
}

#[test]
fn upstream_can_be_switched() {
    let first = TestServer::start(ServerKind::Rust);
    let second = TestServer::start(ServerKind::Rust);
    let proxy = FaultProxy::start(&first);
    assert_eq!(proxy.upstream(), first.addr());
    assert_eq!(proxy.upstream_base_url(), first.base_url());
    let name = first.unique_stream_url("switch");
    let path = url_path(&name).to_owned();
    create(&proxy.url_of(&name));
    proxy.set_upstream(second.addr());
    // The stream exists on the first server only.
    assert_eq!(read_all(&proxy.url_of(&path)).status, 404);
    create(&proxy.url_of(&path));
    assert_eq!(
        read_all(&format!("{}{path}", second.base_url())).status,
        200
    );
}
