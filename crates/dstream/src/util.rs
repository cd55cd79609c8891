//! Argument helpers, exit codes and the command line error type.

use std::fmt;
use std::time::SystemTime;

use durable_streams_client::{Error, ErrorKind, Offset, SubscriptionErrorCode};

/// Exit codes (documented in `--help` and the README).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Anything else (I/O, undecodable responses, ...).
    pub const OTHER: u8 = 1;
    /// Bad arguments or options (also clap's own code).
    pub const USAGE: u8 = 2;
    /// Stream (or fork source) not found, or gone.
    pub const NOT_FOUND: u8 = 3;
    /// Conflicting configuration, content type, sequence or producer epoch.
    pub const CONFLICT: u8 = 4;
    /// The stream is closed.
    pub const STREAM_CLOSED: u8 = 5;
    /// Connection failures and timeouts.
    pub const NETWORK: u8 = 6;
    /// 5xx, or 429 after retries ran out.
    pub const SERVER: u8 = 7;
    /// 400, 413, invalid arguments or input data.
    pub const BAD_REQUEST: u8 = 8;
    /// 401 or 403.
    pub const AUTH: u8 = 9;
    /// The server does not implement the feature (e.g. subscriptions).
    pub const UNSUPPORTED: u8 = 10;
    /// Interrupted by ctrl-c.
    pub const INTERRUPTED: u8 = 130;
}

/// The exit code for a library error kind.
pub fn exit_code(kind: &ErrorKind) -> u8 {
    match kind {
        ErrorKind::NotFound | ErrorKind::Gone => exit::NOT_FOUND,
        ErrorKind::Conflict(_)
        | ErrorKind::SequenceGap { .. }
        | ErrorKind::StaleEpoch { .. }
        | ErrorKind::ProducerIdCollision { .. }
        | ErrorKind::ProducerStateLost { .. } => exit::CONFLICT,
        ErrorKind::StreamClosed { .. } => exit::STREAM_CLOSED,
        ErrorKind::Network | ErrorKind::Timeout | ErrorKind::DeliveryTimeout => exit::NETWORK,
        ErrorKind::Server { .. } | ErrorKind::RateLimited { .. } => exit::SERVER,
        ErrorKind::BadRequest
        | ErrorKind::PayloadTooLarge
        | ErrorKind::InvalidArgument { .. }
        | ErrorKind::InvalidMessage { .. } => exit::BAD_REQUEST,
        ErrorKind::Unauthorized { .. } => exit::AUTH,
        ErrorKind::Subscription { code } => match code {
            SubscriptionErrorCode::NotFound => exit::NOT_FOUND,
            SubscriptionErrorCode::InvalidRequest | SubscriptionErrorCode::WebhookUrlRejected => {
                exit::BAD_REQUEST
            }
            SubscriptionErrorCode::TokenInvalid | SubscriptionErrorCode::TokenExpired => exit::AUTH,
            SubscriptionErrorCode::AlreadyExists
            | SubscriptionErrorCode::Fenced
            | SubscriptionErrorCode::AlreadyClaimed
            | SubscriptionErrorCode::NoPendingWork
            | SubscriptionErrorCode::InvalidOffset => exit::CONFLICT,
            _ => exit::OTHER,
        },
        ErrorKind::Unsupported { .. } => exit::UNSUPPORTED,
        ErrorKind::Redirect { .. } | ErrorKind::NoProgress { .. } => exit::OTHER,
        ErrorKind::UnexpectedStatus { .. } => exit::OTHER,
        _ => exit::OTHER,
    }
}

/// A failed command: an exit code and one line for stderr (empty: print nothing).
#[derive(Debug)]
pub struct CliError {
    /// The process exit code.
    pub code: u8,
    /// The message, without the `dstream:` prefix; empty for a quiet exit.
    pub message: String,
}

impl CliError {
    /// An error with a code and message.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }

    /// A library error during `context` (e.g. `append orders`).
    pub fn api(context: &str, error: &Error) -> Self {
        CliError::new(exit_code(error.kind()), format!("{context}: {error}"))
    }

    /// Exit with `code` without printing anything.
    pub fn quiet(code: u8) -> Self {
        CliError::new(code, "")
    }

    /// A local I/O error; a closed output pipe ends quietly with success.
    pub fn io(context: &str, error: &std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            return CliError::quiet(exit::OK);
        }
        CliError::new(exit::OTHER, format!("{context}: {error}"))
    }

    /// The message as exactly one line.
    pub fn one_line(&self) -> String {
        scrub(&self.message)
            .split(['\n', '\r'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.one_line())
    }
}

/// What replaces a redacted credential or query value in messages.
pub const REDACTED: &str = "***";

/// `text` (a URL, a stream name, or a server base URL as typed) fit for a
/// message: no user name or password, every query value replaced by
/// [`REDACTED`] (keys are kept), no fragment. Purely textual, so it works
/// on input that is not a valid URL too.
pub fn redact_url(text: &str) -> String {
    let text = text.split('#').next().unwrap_or("");
    let (head, query) = match text.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (text, None),
    };
    let (scheme, authority, path) = split_authority(head);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut out = format!("{scheme}{host}{path}");
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) => format!("{k}={REDACTED}"),
                None if pair.is_empty() => String::new(),
                None => REDACTED.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// The secret parts of a URL or name as typed: user name, password and
/// query values, each raw and percent-decoded.
fn secret_values(text: &str) -> Vec<String> {
    let text = text.split('#').next().unwrap_or("");
    let (head, query) = match text.split_once('?') {
        Some((h, q)) => (h, q),
        None => (text, ""),
    };
    let mut raw = Vec::new();
    let (_, authority, _) = split_authority(head);
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        match userinfo.split_once(':') {
            Some((user, password)) => {
                raw.push(user.to_owned());
                raw.push(password.to_owned());
            }
            None => raw.push(userinfo.to_owned()),
        }
    }
    for pair in query.split('&') {
        raw.push(pair.split_once('=').map_or(pair, |(_, v)| v).to_owned());
    }
    let mut all = Vec::new();
    for value in raw {
        for form in [
            percent_decode(&value),
            percent_decode(&value.replace('+', " ")),
            value,
        ] {
            if !form.is_empty() && !all.contains(&form) {
                all.push(form);
            }
        }
    }
    all
}

/// `(scheme with "://", authority, path)` of a URL without query; without a
/// scheme the authority is everything before the first `/`.
fn split_authority(head: &str) -> (&str, &str, &str) {
    let (scheme, rest) = match head.find("://") {
        Some(i) => head.split_at(i + 3),
        None => ("", head),
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    (scheme, authority, path)
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the user typed (URLs, names) that may carry secrets, with the
/// redacted form of each, and the secret values themselves.
#[derive(Debug, Default)]
struct Secrets {
    inputs: Vec<(String, String)>,
    values: Vec<String>,
}

static SECRETS: std::sync::Mutex<Secrets> = std::sync::Mutex::new(Secrets {
    inputs: Vec::new(),
    values: Vec::new(),
});

/// Secret values shorter than this are only removed as part of the whole
/// input that carried them (a value like `1` would mangle any message).
const MIN_SCRUBBED_LEN: usize = 3;

/// Remembers a URL or name the user typed, so that [`scrub`] removes its
/// credentials and query values from every error message.
pub fn register_input(text: &str) {
    let redacted = redact_url(text);
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if redacted != text && !secrets.inputs.iter().any(|(t, _)| t == text) {
        secrets.inputs.push((text.to_owned(), redacted));
        secrets
            .inputs
            .sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
    }
    for value in secret_values(text) {
        if value.len() >= MIN_SCRUBBED_LEN && !secrets.values.contains(&value) {
            secrets.values.push(value);
        }
    }
    secrets.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
}

/// `message` without any registered input's credentials or query values.
pub fn scrub(message: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = message.to_owned();
    for (text, redacted) in &secrets.inputs {
        out = out.replace(text.as_str(), redacted);
    }
    for value in &secrets.values {
        out = out.replace(value.as_str(), REDACTED);
    }
    out
}

/// The URL of a stream: `name` itself when it is an http(s) URL, else
/// `<base>/v1/stream/<name>` (a base that already ends in `/v1/stream` is
/// not doubled): [`Client::stream_url`](durable_streams_client::Client::stream_url).
pub fn resolve_stream_url(base: &str, name: &str) -> Result<String, String> {
    durable_streams_client::Client::stream_url(base, name).map_err(|e| match e.kind() {
        durable_streams_client::ErrorKind::InvalidArgument { field: "base_url" } => format!(
            "the server URL {:?} must start with http:// or https:// (set --url or DS_URL)",
            base.trim()
        ),
        _ => "the stream name is empty".to_owned(),
    })
}

/// The `authorization` value for `--auth`: `Bearer x` and other `Scheme
/// value` forms are kept (a lowercase `bearer` is capitalised), a bare token
/// becomes `Bearer <token>`.
pub fn normalize_auth(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err("--auth / DS_AUTH is empty".into());
    }
    match value.split_once(char::is_whitespace) {
        Some((scheme, rest)) if !rest.trim().is_empty() => {
            let scheme = if scheme.eq_ignore_ascii_case("bearer") {
                "Bearer"
            } else {
                scheme
            };
            Ok(format!("{scheme} {}", rest.trim()))
        }
        _ => Ok(format!("Bearer {value}")),
    }
}

/// `--header K:V` (split at the first colon, both sides trimmed).
pub fn parse_header(raw: &str) -> Result<(String, String), String> {
    let (name, value) = raw
        .split_once(':')
        .ok_or_else(|| format!("expected NAME:VALUE, got {raw:?}"))?;
    let name = name.trim();
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("invalid header name {name:?}"));
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

/// An offset argument: `start` / `-1` / `beginning`, `now`, or a server token.
pub fn parse_offset(raw: &str) -> Result<Offset, String> {
    match raw.trim() {
        "start" | "beginning" | "-1" => Ok(Offset::start()),
        "now" | "end" => Ok(Offset::now()),
        token => Offset::parse(token).map_err(|e| e.to_string()),
    }
}

/// An RFC 3339 timestamp.
pub fn parse_rfc3339(raw: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(raw.trim())
        .map_err(|e| format!("expected an RFC 3339 time like 2030-01-01T00:00:00Z: {e}"))
}

/// A subscription lease: `30s`, `1m30s`, `500ms` (humantime), or bare
/// seconds; 1 s to 10 min, whole milliseconds (PROTOCOL.md 6.2).
pub fn parse_lease_ttl(raw: &str) -> Result<std::time::Duration, String> {
    use durable_streams_client::subscription::{MAX_LEASE_TTL, MIN_LEASE_TTL};
    let raw = raw.trim();
    let ttl = match raw.parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw)
            .map_err(|e| format!("expected a duration like 30s, 2m or 1500ms: {e}"))?,
    };
    if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&ttl) {
        return Err(format!(
            "the lease must be between 1s and 10m, got {}",
            humantime::format_duration(ttl)
        ));
    }
    if ttl.subsec_nanos() % 1_000_000 != 0 {
        return Err("the lease must be whole milliseconds".into());
    }
    Ok(ttl)
}

/// Whether a content type is JSON (message semantics).
pub fn is_json_content_type(ct: Option<&str>) -> bool {
    ct.and_then(|ct| ct.split(';').next())
        .is_some_and(|base| base.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("http://user:pw@127.0.0.1:1/v1/stream/x?token=abc&b=2#frag"),
            "http://127.0.0.1:1/v1/stream/x?token=***&b=***"
        );
        assert_eq!(redact_url("https://h/s?flag"), "https://h/s?***");
        assert_eq!(redact_url("orders"), "orders");
        assert_eq!(redact_url("a?k=v"), "a?k=***");
        assert_eq!(redact_url("http://u@h:1/p@q"), "http://h:1/p@q");
        assert_eq!(redact_url("http://h:1/s?"), "http://h:1/s?");
        assert_eq!(redact_url("u:p@h:1?k=v"), "h:1?k=***");
        assert_eq!(
            secret_values("http://us%65r:p%40ss@h/x?t=a+b%21&f"),
            vec![
                "user", "us%65r", "p@ss", "p%40ss", "a+b!", "a b!", "a+b%21", "f"
            ]
        );
    }

    #[test]
    fn messages_are_scrubbed_of_registered_secrets() {
        register_input("http://scrub-user:zz@h:1/v1/stream/x?key=topsecret");
        let message = "head http://scrub-user:zz@h:1/v1/stream/x?key=topsecret: failed (topsecret, %74opsecret)";
        let cli = CliError::new(1, message);
        let line = cli.one_line();
        assert!(
            !line.contains("zz@") && !line.contains("topsecret"),
            "{line}"
        );
        assert!(
            line.starts_with("head http://h:1/v1/stream/x?key=***: failed (***"),
            "{line}"
        );
    }

    use super::*;
    use durable_streams_client::ConflictReason;

    #[test]
    fn stream_urls() {
        let base = "http://127.0.0.1:4437";
        assert_eq!(
            resolve_stream_url(base, "orders").unwrap(),
            "http://127.0.0.1:4437/v1/stream/orders"
        );
        assert_eq!(
            resolve_stream_url("http://h:1/", "/a/b").unwrap(),
            "http://h:1/v1/stream/a/b"
        );
        assert_eq!(
            resolve_stream_url("http://h:1/v1/stream/", "x").unwrap(),
            "http://h:1/v1/stream/x"
        );
        assert_eq!(
            resolve_stream_url("https://proxy/prefix", "x").unwrap(),
            "https://proxy/prefix/v1/stream/x"
        );
        for full in ["http://other:9/custom/path", "HTTPS://h/s?token=1"] {
            assert_eq!(resolve_stream_url(base, full).unwrap(), full);
        }
        assert!(resolve_stream_url(base, "").is_err());
        assert!(resolve_stream_url(base, "/").is_err());
        assert!(resolve_stream_url("127.0.0.1:4437", "x").is_err());
        assert!(resolve_stream_url("ftp://h", "x").is_err());
    }

    #[test]
    fn auth_values() {
        assert_eq!(normalize_auth("abc").unwrap(), "Bearer abc");
        assert_eq!(normalize_auth(" abc \n").unwrap(), "Bearer abc");
        assert_eq!(normalize_auth("Bearer abc").unwrap(), "Bearer abc");
        assert_eq!(normalize_auth("bearer  abc").unwrap(), "Bearer abc");
        assert_eq!(
            normalize_auth("Basic dXNlcjpwdw==").unwrap(),
            "Basic dXNlcjpwdw=="
        );
        assert_eq!(normalize_auth("Bearer").unwrap(), "Bearer Bearer");
        assert!(normalize_auth("  ").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header("x-a: 1").unwrap(), ("x-a".into(), "1".into()));
        assert_eq!(
            parse_header("X-Url:http://h:1").unwrap(),
            ("X-Url".into(), "http://h:1".into())
        );
        assert_eq!(
            parse_header("x-empty:").unwrap(),
            ("x-empty".into(), "".into())
        );
        assert!(parse_header("no-colon").is_err());
        assert!(parse_header(": v").is_err());
        assert!(parse_header("a b: v").is_err());
    }

    #[test]
    fn offsets() {
        assert!(parse_offset("start").unwrap().is_start());
        assert!(parse_offset("-1").unwrap().is_start());
        assert!(parse_offset("now").unwrap().is_now());
        assert_eq!(parse_offset("0000_0042").unwrap().as_str(), "0000_0042");
        assert!(parse_offset("a/b").is_err());
        assert!(parse_offset("").is_err());
    }

    #[test]
    fn timestamps() {
        assert!(parse_rfc3339("2030-01-01T00:00:00Z").is_ok());
        assert!(parse_rfc3339("2030-01-01T00:00:00.123+02:00").is_ok());
        assert!(parse_rfc3339("tomorrow").is_err());
    }

    #[test]
    fn exit_codes() {
        let cases = [
            (ErrorKind::NotFound, exit::NOT_FOUND),
            (ErrorKind::Gone, exit::NOT_FOUND),
            (
                ErrorKind::Conflict(ConflictReason::ExistsWithDifferentConfig),
                exit::CONFLICT,
            ),
            (ErrorKind::StaleEpoch { current: 3 }, exit::CONFLICT),
            (
                ErrorKind::ProducerIdCollision { epoch: 1, seq: 0 },
                exit::CONFLICT,
            ),
            (ErrorKind::ProducerStateLost { epoch: 1 }, exit::CONFLICT),
            (ErrorKind::DeliveryTimeout, exit::NETWORK),
            (
                ErrorKind::SequenceGap {
                    expected: 1,
                    received: 2,
                },
                exit::CONFLICT,
            ),
            (
                ErrorKind::StreamClosed { final_offset: None },
                exit::STREAM_CLOSED,
            ),
            (ErrorKind::Network, exit::NETWORK),
            (ErrorKind::Timeout, exit::NETWORK),
            (ErrorKind::Server { status: 503 }, exit::SERVER),
            (ErrorKind::RateLimited { retry_after: None }, exit::SERVER),
            (ErrorKind::BadRequest, exit::BAD_REQUEST),
            (ErrorKind::PayloadTooLarge, exit::BAD_REQUEST),
            (
                ErrorKind::InvalidArgument { field: "offset" },
                exit::BAD_REQUEST,
            ),
            (ErrorKind::Unauthorized { status: 401 }, exit::AUTH),
            (ErrorKind::Unauthorized { status: 403 }, exit::AUTH),
            (ErrorKind::UnexpectedStatus { status: 405 }, exit::OTHER),
            (
                ErrorKind::Subscription {
                    code: SubscriptionErrorCode::NotFound,
                },
                exit::NOT_FOUND,
            ),
            (
                ErrorKind::Subscription {
                    code: SubscriptionErrorCode::AlreadyExists,
                },
                exit::CONFLICT,
            ),
            (
                ErrorKind::Subscription {
                    code: SubscriptionErrorCode::InvalidRequest,
                },
                exit::BAD_REQUEST,
            ),
            (
                ErrorKind::Unsupported {
                    feature: "subscriptions",
                },
                exit::UNSUPPORTED,
            ),
            (ErrorKind::ProducerClosed, exit::OTHER),
            (
                ErrorKind::InvalidMessage { field: "key" },
                exit::BAD_REQUEST,
            ),
            (ErrorKind::Store, exit::OTHER),
        ];
        for (kind, code) in cases {
            assert_eq!(exit_code(&kind), code, "{kind:?}");
        }
        let distinct: std::collections::BTreeSet<u8> = [
            exit::OTHER,
            exit::USAGE,
            exit::NOT_FOUND,
            exit::CONFLICT,
            exit::STREAM_CLOSED,
            exit::NETWORK,
            exit::SERVER,
            exit::BAD_REQUEST,
            exit::AUTH,
            exit::UNSUPPORTED,
            exit::INTERRUPTED,
        ]
        .into_iter()
        .collect();
        assert_eq!(distinct.len(), 11);
    }

    #[test]
    fn errors_are_one_line_and_name_the_stream() {
        let err = Error::from(ErrorKind::NotFound);
        let cli = CliError::api("read orders", &err);
        assert_eq!(cli.code, exit::NOT_FOUND);
        assert!(cli.to_string().starts_with("read orders: not found"));
        let multi = CliError::new(1, "a\nb\r\n  c");
        assert_eq!(multi.to_string(), "a b c");
        let pipe = CliError::io(
            "stdout",
            &std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        );
        assert_eq!((pipe.code, pipe.message.as_str()), (exit::OK, ""));
    }

    #[test]
    fn lease_ttls() {
        use std::time::Duration;
        assert_eq!(parse_lease_ttl("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_lease_ttl("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(
            parse_lease_ttl("1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_lease_ttl("999ms").is_err());
        assert!(parse_lease_ttl("11m").is_err());
        assert!(parse_lease_ttl("1s500us").is_err());
        assert!(parse_lease_ttl("soon").is_err());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type(Some("application/json")));
        assert!(is_json_content_type(Some(
            "Application/JSON; charset=utf-8"
        )));
        assert!(!is_json_content_type(Some("text/plain")));
        assert!(!is_json_content_type(None));
    }
}
