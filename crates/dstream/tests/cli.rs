//! End-to-end tests: the built `dstream` binary against a real Rust server.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use test_servers::{ServerKind, TestServer};

mod common;

use common::{BIN, command, run, run_stdin};

/// Starts the Rust server; panics with the install hint
/// (`scripts/install-servers.sh`) when it is not installed.
fn server() -> TestServer {
    TestServer::start(ServerKind::Rust)
}

/// A unique bare stream name on `server`.
fn unique_name(server: &TestServer, prefix: &str) -> String {
    let url = server.unique_stream_url(prefix);
    url.rsplit('/').next().unwrap().to_owned()
}

/// Run and require exit code 0; returns stdout.
fn ok(server: &TestServer, args: &[&str]) -> Vec<u8> {
    ok_stdin(server, args, b"")
}

fn ok_stdin(server: &TestServer, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let out = run_stdin(server, args, stdin);
    assert_eq!(
        out.status.code(),
        Some(0),
        "dstream {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn json_lines(bytes: &[u8]) -> Vec<Value> {
    text(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Expect exit code `code` and one stderr line that names `name`.
fn fails_with(out: &Output, code: i32, name: &str) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(stderr.starts_with("dstream: "), "{stderr:?}");
    assert!(stderr.contains(name), "{stderr:?} should name {name}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"));
    stderr
}

fn temp_path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-{file}", std::process::id()))
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "dstream did not exit within {limit:?}; stdout {:?}, stderr {:?}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bytes_round_trip_with_args_files_and_stdin() {
    let server = server();
    let name = unique_name(&server, "bytes");
    let created = text(&ok(
        &server,
        &["create", &name, "--content-type", "text/plain"],
    ));
    assert!(created.starts_with("created "), "{created}");

    let appended = text(&ok(&server, &["append", &name, "hello", ", "]));
    assert!(
        appended.starts_with("appended 2 inputs (7 bytes) to "),
        "a byte stream keeps no message boundaries: {appended}"
    );
    let file = temp_path("bytes.txt");
    std::fs::write(&file, "file\n").unwrap();
    ok(
        &server,
        &["append", &name, "--file", file.to_str().unwrap()],
    );
    ok_stdin(&server, &["append", &name], b"from stdin\n");

    let data = ok(&server, &["read", &name]);
    assert_eq!(text(&data), "hello, file\nfrom stdin\n");

    // A full URL works as the stream argument (with any --url).
    let url = server.stream_url(&name);
    let data = ok(&server, &["--url", "http://127.0.0.1:1", "read", &url]);
    assert_eq!(text(&data), "hello, file\nfrom stdin\n");

    // --output json: one object per chunk with its offset; resuming from it reads nothing.
    let chunks = json_lines(&ok(&server, &["read", &name, "--output", "json"]));
    let joined: String = chunks.iter().map(|c| c["data"].as_str().unwrap()).collect();
    assert_eq!(joined, "hello, file\nfrom stdin\n");
    let last = chunks.last().unwrap()["offset"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ok(&server, &["read", &name, "--from", &last]).is_empty());
    assert!(ok(&server, &["read", &name, "--from", "now"]).is_empty());

    let appended = json_lines(&ok_stdin(
        &server,
        &["append", &name, "--output", "json"],
        b"more",
    ));
    assert_eq!(appended[0]["messages"], 1);
    assert_eq!(appended[0]["bytes"], 4);
    let tail = ok(&server, &["read", &name, "--from", &last]);
    assert_eq!(text(&tail), "more");
    let _ = std::fs::remove_file(file);
}

#[test]
fn json_round_trip_one_message_per_value() {
    let server = server();
    let name = unique_name(&server, "json");
    let created = json_lines(&ok(
        &server,
        &["create", &name, "--json", "--output", "json"],
    ));
    assert_eq!(created[0]["created"], true);
    assert_eq!(created[0]["content_type"], "application/json");

    // Each argument is one message: the array stays one message.
    ok(&server, &["append", &name, r#"{"a":1}"#, "[1,2]", r#""s""#]);
    // stdin: one value per non-empty line; --json is implied by the stream.
    ok_stdin(&server, &["append", &name], b"{\"b\":2}\n\n  [3]\r\n");
    let file = temp_path("values.jsonl");
    std::fs::write(&file, "4\n{\"c\": [5]}\n").unwrap();
    ok(
        &server,
        &["append", &name, "--json", "--file", file.to_str().unwrap()],
    );

    let out = text(&ok(&server, &["read", &name]));
    let messages: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        messages,
        vec![
            serde_json::json!({"a": 1}),
            serde_json::json!([1, 2]),
            serde_json::json!("s"),
            serde_json::json!({"b": 2}),
            serde_json::json!([3]),
            serde_json::json!(4),
            serde_json::json!({"c": [5]}),
        ]
    );

    let objects = json_lines(&ok(&server, &["read", &name, "--output", "json"]));
    assert_eq!(objects.len(), 7);
    for (obj, message) in objects.iter().zip(&messages) {
        assert_eq!(&obj["value"], message);
        assert!(obj["offset"].as_str().is_some_and(|o| !o.is_empty()));
    }

    // Invalid JSON is rejected locally (exit code 8) and nothing is written.
    let bad = run(&server, &["append", &name, "[1,2]", "not json"]);
    fails_with(&bad, 8, &name);
    assert_eq!(json_lines(&ok(&server, &["read", &name])).len(), 7);
    let _ = std::fs::remove_file(file);
}

#[test]
fn produce_10000_json_lines_and_read_back_in_order() {
    let server = server();
    let name = unique_name(&server, "produce");
    ok(&server, &["create", &name, "--json"]);
    let file = temp_path("produce.jsonl");
    let mut lines = String::new();
    for n in 0..10_000 {
        lines.push_str(&format!("{{\"n\":{n},\"text\":\"record {n}\"}}\n"));
    }
    std::fs::write(&file, &lines).unwrap();

    let summary = json_lines(&ok(
        &server,
        &[
            "produce",
            &name,
            "--file",
            file.to_str().unwrap(),
            "--json-lines",
            "--output",
            "json",
        ],
    ));
    assert_eq!(summary[0]["messages"], 10_000);
    assert_eq!(summary[0]["bytes"], lines.len() - 10_000);
    assert!(summary[0]["messages_per_sec"].as_f64().unwrap() > 0.0);

    let read = text(&ok(&server, &["read", &name]));
    let ns: Vec<u64> = read
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns.len(), 10_000);
    assert!(ns.iter().copied().eq(0..10_000), "out of order");

    // Human summary line; stdin input; a byte stream keeps one line per record.
    let bytes_name = unique_name(&server, "produce-bytes");
    ok(
        &server,
        &["create", &bytes_name, "--content-type", "text/plain"],
    );
    let summary = text(&ok_stdin(
        &server,
        &["produce", &bytes_name, "--producer-id", "t", "--epoch", "3"],
        b"a\nb\r\n\nc",
    ));
    assert!(
        summary.starts_with("produced 3 messages (6 bytes) to ") && summary.contains("msg/s"),
        "{summary}"
    );
    assert_eq!(text(&ok(&server, &["read", &bytes_name])), "a\nb\nc\n");

    // An older epoch for the same producer id is a conflict (exit code 4).
    let stale = run_stdin(
        &server,
        &["produce", &bytes_name, "--producer-id", "t", "--epoch", "1"],
        b"x\n",
    );
    fails_with(&stale, 4, &bytes_name);
    // --json-lines on a byte stream is rejected before anything is sent.
    let wrong = run_stdin(&server, &["produce", &bytes_name, "--json-lines"], b"1\n");
    fails_with(&wrong, 8, &bytes_name);
    // A bad line stops the load; the lines before it were committed.
    let bad_name = unique_name(&server, "produce-bad");
    ok(&server, &["create", &bad_name, "--json"]);
    let bad = run_stdin(&server, &["produce", &bad_name], b"1\n2\nnot json\n3\n");
    let line = fails_with(&bad, 8, &bad_name);
    assert!(
        line.contains("line 3 is not one JSON value")
            && line.contains("the 2 messages before line 3 were committed")
            && line.contains("tail -n +3"),
        "{line}"
    );
    assert_eq!(text(&ok(&server, &["read", &bad_name])), "1\n2\n");
    let _ = std::fs::remove_file(file);
}

fn tail_until_closed(live: &str) {
    let server = server();
    let name = unique_name(&server, &format!("tail-{live}"));
    ok(&server, &["create", &name, "--json"]);
    ok(&server, &["append", &name, r#"{"i":0}"#]);
    let child = command(&server, &["tail", &name, "--live", live])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    ok(&server, &["append", &name, r#"{"i":1}"#]);
    std::thread::sleep(Duration::from_millis(300));
    ok(&server, &["close", &name, "--data", r#"{"i":2}"#]);
    let out = wait_with_timeout(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"i\":0}\n{\"i\":1}\n{\"i\":2}\n");
}

#[test]
fn tail_sse_ends_when_the_stream_is_closed() {
    tail_until_closed("sse");
}

#[test]
fn tail_long_poll_ends_when_the_stream_is_closed() {
    tail_until_closed("long-poll");
}

#[test]
fn tail_auto_on_a_byte_stream_with_json_output() {
    let server = server();
    let name = unique_name(&server, "tail-bytes");
    ok(&server, &["create", &name, "--content-type", "text/plain"]);
    let child = command(&server, &["tail", &name, "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ok(&server, &["append", &name, "live"]);
    ok(&server, &["close", &name]);
    let out = wait_with_timeout(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let chunks = json_lines(&out.stdout);
    let joined: String = chunks.iter().map(|c| c["data"].as_str().unwrap()).collect();
    assert_eq!(joined, "live");
}

#[test]
fn head_close_fork_delete() {
    let server = server();
    let name = unique_name(&server, "head");
    ok(&server, &["create", &name, "--json", "--ttl", "3600"]);
    ok(&server, &["append", &name, "1", "2"]);
    let info = json_lines(&ok(&server, &["head", &name, "--output", "json"]));
    assert_eq!(info[0]["closed"], false);
    assert_eq!(info[0]["content_type"], "application/json");
    assert_eq!(info[0]["ttl_secs"], 3600);
    let tail = info[0]["next_offset"].as_str().unwrap().to_owned();

    // Fork before closing; it inherits the data and stays open.
    let fork = unique_name(&server, "fork");
    let forked = json_lines(&ok(
        &server,
        &[
            "fork", &fork, "--from", &name, "--offset", &tail, "--output", "json",
        ],
    ));
    assert_eq!(forked[0]["created"], true);

    let closed = text(&ok(&server, &["close", &name]));
    assert!(closed.starts_with("closed "), "{closed}");
    let human = text(&ok(&server, &["head", &name]));
    assert!(human.contains("closed:       yes"), "{human}");
    assert!(human.contains(&format!("next-offset:  {tail}")), "{human}");
    let info = json_lines(&ok(&server, &["head", &name, "--output", "json"]));
    assert_eq!(info[0]["closed"], true);

    ok(&server, &["append", &fork, "3"]);
    assert_eq!(text(&ok(&server, &["read", &fork])), "1\n2\n3\n");
    let deleted = json_lines(&ok(&server, &["delete", &fork, "--output", "json"]));
    assert_eq!(deleted[0]["deleted"], true);
    fails_with(&run(&server, &["head", &fork]), 3, &fork);
}

#[test]
fn exit_codes_and_error_lines() {
    let server = server();
    let missing = unique_name(&server, "missing");
    for args in [
        vec!["read", missing.as_str()],
        vec!["tail", missing.as_str()],
        vec!["head", missing.as_str()],
        vec!["append", missing.as_str(), "x"],
        vec!["delete", missing.as_str()],
    ] {
        let out = run(&server, &args);
        let line = fails_with(&out, 3, &missing);
        assert!(line.contains("not found"), "{line}");
        if args[0] != "head" {
            // The server's own explanation, as `delete` shows it.
            assert!(line.contains("(HTTP 404): "), "{line}");
        }
    }

    let name = unique_name(&server, "codes");
    ok(&server, &["create", &name, "--json"]);
    // Same configuration again: success; another configuration: conflict.
    let again = text(&ok(&server, &["create", &name, "--json"]));
    assert!(again.starts_with("exists"), "{again}");
    fails_with(
        &run(&server, &["create", &name, "--content-type", "text/plain"]),
        4,
        &name,
    );

    ok(&server, &["close", &name, "--data", "[1]"]);
    assert_eq!(text(&ok(&server, &["read", &name])), "[1]\n");
    fails_with(&run(&server, &["append", &name, "2"]), 5, &name);
    fails_with(&run(&server, &["close", &name, "--data", "2"]), 5, &name);
    // A plain close of a closed stream is idempotent.
    ok(&server, &["close", &name]);

    // Usage errors: clap's exit code 2.
    assert_eq!(run(&server, &["read"]).status.code(), Some(2));
    assert_eq!(
        run(&server, &["tail", &name, "--live", "smoke"])
            .status
            .code(),
        Some(2)
    );
    let bad_url = run(&server, &["--url", "localhost:1", "head", "x"]);
    fails_with(&bad_url, 2, "http://");

    // Nothing listening: a network error after the retries.
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = run(
        &server,
        &[
            "--url",
            &format!("http://127.0.0.1:{closed_port}"),
            "head",
            "x",
        ],
    );
    fails_with(&out, 6, "x");
}

#[test]
fn auth_and_headers_are_sent_and_401_maps_to_9() {
    // A one-shot HTTP server that records the request and answers 401.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let _ = conn.write_all(
                b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
            let _ = tx.send(String::from_utf8_lossy(&request).to_lowercase());
        }
    });
    let out = Command::new(BIN)
        .env("DS_URL", format!("http://{addr}"))
        .env("DS_AUTH", "s3cret-token")
        .args(["head", "guarded", "-H", "X-Tenant: acme"])
        .output()
        .unwrap();
    let request = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(request.starts_with("head /v1/stream/guarded "), "{request}");
    assert!(
        request.contains("authorization: bearer s3cret-token\r\n"),
        "{request}"
    );
    assert!(request.contains("x-tenant: acme\r\n"), "{request}");
    let stderr = fails_with(&out, 9, "guarded");
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn completions_print_a_script() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(BIN)
            .args(["completions", shell])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains("dstream"), "{shell}");
    }
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(text(&help.stdout).contains("Exit codes:"));
}

/// `dstream` never prints the user name, password or query values of a URL
/// it was given, in success or error messages, human or JSON.
#[test]
fn url_credentials_and_query_values_are_never_echoed() {
    let secrets = ["s3cr3tuser", "pw", "abc", "zyx-key"];
    let check = |out: &Output, what: &str| {
        for stream in [&out.stdout, &out.stderr] {
            let text = text(stream);
            for secret in secrets {
                assert!(
                    !text.contains(secret),
                    "{what}: {secret:?} echoed in {text:?}"
                );
            }
        }
    };

    // Errors: nothing listening, a bad URL, a bad base URL.
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://s3cr3tuser:pw@127.0.0.1:{closed_port}/v1/stream/x?token=abc");
    let out = Command::new(BIN)
        .env_remove("DS_AUTH")
        .args(["head", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("/v1/stream/x"),
        "{}",
        text(&out.stderr)
    );
    check(&out, "head on a closed port");
    let out = Command::new(BIN)
        .env_remove("DS_AUTH")
        .args([
            "--url",
            &format!("s3cr3tuser:pw@127.0.0.1:{closed_port}?k=zyx-key"),
            "head",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    check(&out, "a base URL without scheme");
    let out = Command::new(BIN)
        .env_remove("DS_AUTH")
        .args(["head", "http://s3cr3tuser:pw@[::1/x?token=abc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    check(&out, "an invalid URL");

    // Success, against a real server.
    let server = server();
    let name = unique_name(&server, "redact");
    let authority = server.base_url().strip_prefix("http://").unwrap();
    let url =
        format!("http://s3cr3tuser:pw@{authority}/v1/stream/{name}?token=abc&api_key=zyx-key");
    for args in [
        vec!["create", url.as_str()],
        vec!["append", url.as_str(), "hello"],
        vec!["head", url.as_str()],
        vec!["--output", "json", "head", url.as_str()],
        vec!["read", url.as_str()],
        vec!["close", url.as_str()],
        vec!["--output", "json", "close", url.as_str()],
    ] {
        let out = run(&server, &args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        check(&out, &format!("{args:?}"));
        if args.contains(&"head") {
            let stdout = text(&out.stdout);
            assert!(stdout.contains(&format!("/v1/stream/{name}")), "{stdout}");
            assert!(stdout.contains("token=***"), "{stdout}");
        }
    }
    // Errors from the server.
    let out = run(&server, &["append", &url, "more"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    check(&out, "append to a closed stream");
    let missing = format!("http://s3cr3tuser:pw@{authority}/v1/stream/{name}-missing?token=abc");
    let out = run(&server, &["delete", &missing]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    check(&out, "delete of a missing stream");
}

/// Silent by default; `-v` logs every request with its status, and no
/// credential, header value or query string ever reaches the log.
#[test]
fn verbose_logs_requests_and_never_secrets() {
    let server = server();
    let name = unique_name(&server, "verbose");
    ok(&server, &["create", &name]);
    let quiet = run(&server, &["append", &name, "a"]);
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty(),
        "silent by default: {}",
        String::from_utf8_lossy(&quiet.stderr)
    );

    let url = format!("{}/v1/stream/{name}?sig=SECRET-SIG", server.base_url());
    for args in [
        vec![
            "-v",
            "--auth",
            "SECRET-TOKEN",
            "-H",
            "x-api-key: SECRET-KEY",
            "append",
            &name,
            "b",
        ],
        vec!["-vv", "--auth", "SECRET-TOKEN", "read", &url],
    ] {
        let out = command(&server, &args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {log}");
        assert!(
            log.contains("durable_streams.request"),
            "{args:?}: no request logged: {log}"
        );
        assert!(
            log.contains("status=2"),
            "{args:?}: no status logged: {log}"
        );
        assert!(
            !log.contains("SECRET"),
            "{args:?}: a secret reached the log: {log}"
        );
    }
}
