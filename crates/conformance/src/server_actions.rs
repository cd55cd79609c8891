//! Runner-side HTTP actions against the reference server (CASE-FORMAT §7.2):
//! `server-append`, `server-close`, `inject-error` and `clear-errors`.
//!
//! These requests are made by the runner, not the adapter, and go to the
//! same paths, so they consume injected faults just as the Node runner's do.

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value as JsonValue, json};

use crate::cases::Headers;

/// Runner-side requests have no timeout in the Node runner; this bound only
/// keeps a wedged server from hanging the run forever.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// An HTTP client bound to the reference server.
#[derive(Debug, Clone)]
pub struct ServerActions {
    http: reqwest::Client,
    base_url: String,
}

/// Producer headers of a `server-append`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProducerHeaders<'a> {
    /// `Producer-Id`.
    pub id: Option<&'a str>,
    /// `Producer-Epoch`.
    pub epoch: Option<i64>,
    /// `Producer-Seq`.
    pub seq: Option<i64>,
}

impl ServerActions {
    /// A client for the server at `base_url` (no trailing slash).
    pub fn new(base_url: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|error| format!("cannot build HTTP client: {error}"))?;
        Ok(ServerActions {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
        })
    }

    /// `server-append`: HEAD for the content type, then POST the data.
    ///
    /// The result is `{"type":"append","success":true,"status":..,...}`
    /// whatever the status: the cases check the status themselves.
    pub async fn append(
        &self,
        path: &str,
        data: &str,
        headers: Option<&Headers>,
        producer: ProducerHeaders<'_>,
    ) -> Result<JsonValue, String> {
        let url = format!("{}{path}", self.base_url);
        // The HEAD's status is ignored; only its content type is used.
        let content_type = match self.http.head(&url).send().await {
            Ok(response) => response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
            Err(error) => return Err(format!("Server append failed: {error}")),
        }
        .unwrap_or_else(|| "application/octet-stream".to_owned());

        let mut request_headers = HeaderMap::new();
        insert_header(&mut request_headers, "content-type", &content_type)?;
        for (name, value) in headers
            .map(|headers| headers.0.as_slice())
            .unwrap_or_default()
        {
            insert_header(&mut request_headers, name, value)?;
        }
        if let Some(id) = producer.id {
            insert_header(&mut request_headers, "Producer-Id", id)?;
        }
        if let Some(epoch) = producer.epoch {
            insert_header(&mut request_headers, "Producer-Epoch", &epoch.to_string())?;
        }
        if let Some(seq) = producer.seq {
            insert_header(&mut request_headers, "Producer-Seq", &seq.to_string())?;
        }

        let response = self
            .http
            .post(&url)
            .headers(request_headers)
            .body(data.to_owned())
            .send()
            .await
            .map_err(|error| format!("Server append failed: {error}"))?;
        let status = response.status().as_u16();
        let response_headers = response.headers().clone();
        // Drain the body so the connection can be reused.
        let _ = response.bytes().await;

        let mut result = json!({
            "type": "append",
            "success": true,
            "status": status,
            "duplicate": status == 204,
        });
        if let Some(offset) = header_text(&response_headers, "stream-next-offset") {
            result["offset"] = offset.into();
        }
        for (header, field) in [
            ("producer-epoch", "producerEpoch"),
            ("producer-seq", "producerSeq"),
            ("producer-expected-seq", "producerExpectedSeq"),
            ("producer-received-seq", "producerReceivedSeq"),
        ] {
            if let Some(text) = header_text(&response_headers, header) {
                // parseInt semantics would accept "12abc"; the protocol says
                // these are integers, so anything else is reported as-is.
                result[field] = text
                    .parse::<i64>()
                    .map_or_else(|_| JsonValue::String(text.clone()), JsonValue::from);
            }
        }
        Ok(result)
    }

    /// `server-close`: POST with `Stream-Closed: true`.
    ///
    /// The result is `{"type":"close","success":true,"finalOffset":..}` as in
    /// the Node runner, plus the HTTP `status` (which the Node runner leaves
    /// out, making `expect.status` on `server-close` uncheckable).
    pub async fn close(
        &self,
        path: &str,
        data: Option<&str>,
        content_type: Option<&str>,
        headers: Option<&Headers>,
    ) -> Result<JsonValue, String> {
        let url = format!("{}{path}", self.base_url);
        let mut request_headers = HeaderMap::new();
        insert_header(&mut request_headers, "Stream-Closed", "true")?;
        for (name, value) in headers
            .map(|headers| headers.0.as_slice())
            .unwrap_or_default()
        {
            insert_header(&mut request_headers, name, value)?;
        }
        if let (Some(data), Some(content_type)) = (data, content_type)
            && !data.is_empty()
        {
            insert_header(&mut request_headers, "content-type", content_type)?;
        }
        let mut request = self.http.post(&url);
        if let Some(data) = data {
            // Node's fetch labels a string body it was given no type for.
            if !request_headers.contains_key(CONTENT_TYPE) {
                insert_header(
                    &mut request_headers,
                    "content-type",
                    "text/plain;charset=UTF-8",
                )?;
            }
            request = request.body(data.to_owned());
        }
        let response = request
            .headers(request_headers)
            .send()
            .await
            .map_err(|error| format!("Server close failed: {error}"))?;
        let status = response.status().as_u16();
        let final_offset =
            header_text(response.headers(), "stream-next-offset").unwrap_or_default();
        let _ = response.bytes().await;
        Ok(json!({
            "type": "close",
            "success": true,
            "status": status,
            "finalOffset": final_offset,
        }))
    }

    /// `inject-error`: POST the fault description to `/_test/inject-error`.
    pub async fn inject_error(&self, fault: &JsonValue) -> Result<(), String> {
        let response = self
            .http
            .post(format!("{}/_test/inject-error", self.base_url))
            .header(CONTENT_TYPE, "application/json")
            .body(fault.to_string())
            .send()
            .await
            .map_err(|error| format!("Failed to inject fault: {error}"))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!(
                "Failed to inject fault: {} {}",
                status.as_u16(),
                body.trim()
            ))
        }
    }

    /// `clear-errors`: DELETE `/_test/inject-error`; the status is ignored.
    pub async fn clear_errors(&self) -> Result<(), String> {
        let response = self
            .http
            .delete(format!("{}/_test/inject-error", self.base_url))
            .send()
            .await
            .map_err(|error| format!("Failed to clear errors: {error}"))?;
        let _ = response.bytes().await;
        Ok(())
    }
}

fn insert_header(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|error| format!("invalid header name {name:?}: {error}"))?;
    let value = HeaderValue::from_str(value)
        .map_err(|error| format!("invalid value for header {name}: {error}"))?;
    headers.insert(name, value);
    Ok(())
}

/// A response header as text, when present and non-empty.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}
