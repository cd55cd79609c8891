//! Error results (ADAPTER.md §4): the standard error codes, and the mapping
//! from the library's [`ErrorKind`] to them.

use durable_streams_client::{ConflictReason, DecodeKind, Error, ErrorKind};
use serde_json::{Value, json};

/// The standard error codes of the adapter protocol (`ErrorCodes` in protocol.ts).
pub mod codes {
    pub const NETWORK_ERROR: &str = "NETWORK_ERROR";
    pub const TIMEOUT: &str = "TIMEOUT";
    pub const CONFLICT: &str = "CONFLICT";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const SEQUENCE_CONFLICT: &str = "SEQUENCE_CONFLICT";
    pub const STREAM_CLOSED: &str = "STREAM_CLOSED";
    pub const INVALID_OFFSET: &str = "INVALID_OFFSET";
    pub const UNEXPECTED_STATUS: &str = "UNEXPECTED_STATUS";
    pub const PARSE_ERROR: &str = "PARSE_ERROR";
    pub const INTERNAL_ERROR: &str = "INTERNAL_ERROR";
    pub const NOT_SUPPORTED: &str = "NOT_SUPPORTED";
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
}

/// A failed command, before it is wrapped in the error envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The HTTP status, when there is one.
    pub status: Option<u16>,
    /// One of [`codes`].
    pub code: &'static str,
    /// Human-readable text; names the stream path when there is one.
    pub message: String,
}

impl Failure {
    /// A failure without an HTTP status.
    pub fn new(code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status: None,
            code,
            message: message.into(),
        }
    }

    /// A command field the adapter could not accept (no request was made).
    pub fn invalid_argument(message: impl Into<String>) -> Failure {
        Failure::new(codes::INVALID_ARGUMENT, message)
    }

    /// A command this adapter does not implement.
    pub fn not_supported(message: impl Into<String>) -> Failure {
        Failure::new(codes::NOT_SUPPORTED, message)
    }

    /// Map a library error from an operation on the stream at `path`.
    ///
    /// `read` selects the read-specific mapping of 400 (a malformed offset,
    /// ADAPTER §3 "read").
    pub fn from_client(err: &Error, path: &str, read: bool) -> Failure {
        let (code, local_status) = match err.kind() {
            ErrorKind::NotFound => (codes::NOT_FOUND, None),
            ErrorKind::Conflict(ConflictReason::SequenceRegression) => {
                (codes::SEQUENCE_CONFLICT, None)
            }
            ErrorKind::Conflict(_) => (codes::CONFLICT, None),
            ErrorKind::StreamClosed { .. } => (codes::STREAM_CLOSED, None),
            ErrorKind::StaleEpoch { .. } => (codes::CONFLICT, None),
            ErrorKind::SequenceGap { .. } => (codes::SEQUENCE_CONFLICT, None),
            ErrorKind::BadRequest if read => (codes::INVALID_OFFSET, None),
            ErrorKind::BadRequest => (codes::INVALID_ARGUMENT, None),
            ErrorKind::Gone
            | ErrorKind::PayloadTooLarge
            | ErrorKind::RateLimited { .. }
            | ErrorKind::Server { .. }
            | ErrorKind::UnexpectedStatus { .. } => (codes::UNEXPECTED_STATUS, None),
            ErrorKind::ResponseTooLarge { .. } => (codes::INTERNAL_ERROR, None),
            ErrorKind::Network => (codes::NETWORK_ERROR, None),
            ErrorKind::Timeout => (codes::TIMEOUT, None),
            ErrorKind::Decode(
                DecodeKind::Json
                | DecodeKind::Sse
                | DecodeKind::Base64
                | DecodeKind::Header
                | DecodeKind::Utf8,
            ) => (codes::PARSE_ERROR, None),
            // The client refused to send a request the protocol says the
            // server must reject with 400 (e.g. an empty append body, an
            // offset with forbidden characters): report it as that 400.
            ErrorKind::InvalidArgument { field: "offset" } => (codes::INVALID_OFFSET, Some(400)),
            ErrorKind::InvalidArgument { .. } => (codes::INVALID_ARGUMENT, Some(400)),
            _ => (codes::INTERNAL_ERROR, None),
        };
        let status = err.status().or(match err.kind() {
            ErrorKind::Server { status } | ErrorKind::UnexpectedStatus { status } => Some(*status),
            ErrorKind::RateLimited { .. } => Some(429),
            _ => local_status,
        });
        let mut message = err.to_string();
        if !message.contains(path) {
            message = format!("{message} (stream {path})");
        }
        Failure {
            status,
            code,
            message,
        }
    }

    /// The ADAPTER §4 error envelope for a failure of `command_type`.
    pub fn into_reply(self, command_type: &str) -> Value {
        let mut reply = json!({
            "type": "error",
            "success": false,
            "commandType": command_type,
            "errorCode": self.code,
            "message": self.message,
        });
        if let Some(status) = self.status {
            reply["status"] = json!(status);
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_every_required_key() {
        let reply = Failure::new(codes::NOT_FOUND, "gone /s").into_reply("head");
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["success"], false);
        assert_eq!(reply["commandType"], "head");
        assert_eq!(reply["errorCode"], "NOT_FOUND");
        assert!(reply.get("status").is_none());
        let mut failure = Failure::new(codes::NOT_FOUND, "x");
        failure.status = Some(404);
        assert_eq!(failure.into_reply("read")["status"], 404);
    }

    #[test]
    fn local_rejections_name_the_path() {
        let client = durable_streams_client::Client::new();
        let stream = client.stream("http://127.0.0.1:1/some/path").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(stream.append_with(
                bytes::Bytes::new(),
                durable_streams_client::AppendOptions::default(),
            ))
            .unwrap_err();
        let failure = Failure::from_client(&err, "/some/path", false);
        assert_eq!(failure.code, codes::INVALID_ARGUMENT);
        assert_eq!(failure.status, Some(400));
        assert!(
            failure.message.contains("/some/path"),
            "{}",
            failure.message
        );
    }
}
