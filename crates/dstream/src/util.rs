//! Argument helpers, exit codes and the command line error type.

use std::fmt;
use std::time::SystemTime;

use durable_streams_client::{Error, ErrorKind, Offset};

/// The path under the server base where bare stream names live.
pub const STREAM_PREFIX: &str = "/v1/stream/";

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
        ErrorKind::BadRequest | ErrorKind::PayloadTooLarge | ErrorKind::InvalidArgument { .. } => {
            exit::BAD_REQUEST
        }
        ErrorKind::UnexpectedStatus { status: 401 | 403 } => exit::AUTH,
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
        self.message
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

/// The URL of a stream: `name` itself when it is an http(s) URL, else
/// `<base>/v1/stream/<name>` (a base that already ends in `/v1/stream` is
/// not doubled).
pub fn resolve_stream_url(base: &str, name: &str) -> Result<String, String> {
    let name = name.trim();
    if is_http_url(name) {
        return Ok(name.to_owned());
    }
    let name = name.trim_start_matches('/');
    if name.is_empty() {
        return Err("the stream name is empty".into());
    }
    let base = base.trim().trim_end_matches('/');
    if !is_http_url(base) {
        return Err(format!(
            "the server URL {base:?} must start with http:// or https:// (set --url or DS_URL)"
        ));
    }
    let prefix = STREAM_PREFIX.trim_end_matches('/');
    if base.ends_with(prefix) {
        Ok(format!("{base}/{name}"))
    } else {
        Ok(format!("{base}{prefix}/{name}"))
    }
}

fn is_http_url(s: &str) -> bool {
    let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
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
        token => Offset::parse(token).map_err(|e| match e.message() {
            Some(m) => m.to_owned(),
            None => e.to_string(),
        }),
    }
}

/// An RFC 3339 timestamp.
pub fn parse_rfc3339(raw: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(raw.trim())
        .map_err(|e| format!("expected an RFC 3339 time like 2030-01-01T00:00:00Z: {e}"))
}

/// Whether a content type is JSON (message semantics).
pub fn is_json_content_type(ct: Option<&str>) -> bool {
    ct.and_then(|ct| ct.split(';').next())
        .is_some_and(|base| base.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
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
            (ErrorKind::UnexpectedStatus { status: 401 }, exit::AUTH),
            (ErrorKind::UnexpectedStatus { status: 403 }, exit::AUTH),
            (ErrorKind::UnexpectedStatus { status: 405 }, exit::OTHER),
            (ErrorKind::ProducerClosed, exit::OTHER),
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
            exit::INTERRUPTED,
        ]
        .into_iter()
        .collect();
        assert_eq!(distinct.len(), 10);
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
    fn json_content_types() {
        assert!(is_json_content_type(Some("application/json")));
        assert!(is_json_content_type(Some(
            "Application/JSON; charset=utf-8"
        )));
        assert!(!is_json_content_type(Some("text/plain")));
        assert!(!is_json_content_type(None));
    }
}
