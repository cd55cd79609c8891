//! The stream operations: create (and fork), append, close, delete and
//! HEAD.
//!
//! Each public operation awaits a boxed future made in a function that is
//! never inlined (`*_boxed`). An `async fn`'s state machine is compiled
//! into every crate that awaits it, and so is everything it awaits in
//! turn; through the box the request path is compiled once, here, and a
//! caller's binary holds a small shim. One copy of that code is also one
//! copy to bring back into the CPU's caches after a pause (measured: fewer
//! code cache lines per append and long-poll cycle). The cost is one
//! allocation per operation.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde::Serialize;

use super::{
    AppendOptions, AppendResult, CloseResult, CreateOptions, CreateResult, ForkOptions, Stream,
    StreamInfo,
};
use crate::error::{DecodeKind, Error, Result};
use crate::offset::Offset;
use crate::request::{Idempotency, RequestSpec, header_str, header_value, names};

impl Stream {
    /// Create the stream with the handle's content type (or the server's
    /// default). Idempotent: an existing stream with the same configuration
    /// is success with `created == false`.
    pub async fn create(&self) -> Result<CreateResult> {
        self.create_with(CreateOptions::default()).await
    }

    /// Create the stream with options (PUT).
    pub async fn create_with(&self, options: CreateOptions) -> Result<CreateResult> {
        self.create_boxed(options).await
    }

    #[inline(never)]
    fn create_boxed(&self, options: CreateOptions) -> BoxFuture<'_, Result<CreateResult>> {
        Box::pin(async move {
            let mut spec = RequestSpec::new(Method::PUT, "create");
            let content_type = options.content_type.clone().or_else(|| self.content_type());
            if let Some(ct) = &content_type {
                spec = spec.header(reqwest::header::CONTENT_TYPE, ct)?;
            }
            spec = options.expiry.apply(spec)?;
            if options.closed {
                spec = spec.header(names::CLOSED, "true")?;
            }
            if let Some(fork) = &options.fork {
                spec = spec.header(names::FORKED_FROM, &fork.source_path)?;
                if let Some(offset) = &fork.offset {
                    spec = spec.header(names::FORK_OFFSET, offset.as_str())?;
                }
                if let Some(sub) = fork.sub_offset {
                    spec = spec.header(names::FORK_SUB_OFFSET, sub.to_string())?;
                }
            }
            if let Some(body) = options.body {
                spec = spec.body(body);
            }
            let resp = self.execute(&spec).await?;
            if !matches!(
                resp.status,
                StatusCode::OK | StatusCode::CREATED | StatusCode::NO_CONTENT
            ) {
                return Err(self.error_for(&spec, &resp));
            }
            let meta = self.meta(&resp)?;
            let learned = meta.content_type().map(str::to_owned).or(content_type);
            self.learn_content_type(learned.as_deref());
            Ok(CreateResult {
                created: resp.status == StatusCode::CREATED,
                next_offset: meta.next_offset,
                content_type: learned,
                closed: meta.closed,
            })
        })
    }

    /// Create this stream as a fork of another stream on the same server
    /// (PROTOCOL.md 4.2). The content type is inherited unless given.
    pub async fn fork(&self, fork: ForkOptions, options: CreateOptions) -> Result<CreateResult> {
        self.create_with(CreateOptions {
            fork: Some(fork),
            ..options
        })
        .await
    }

    pub(crate) async fn resolve_content_type(&self) -> Result<String> {
        if let Some(ct) = self.content_type() {
            return Ok(ct);
        }
        let info = self.head().await?;
        info.content_type.ok_or_else(|| {
            Error::decode(DecodeKind::Header, "HEAD returned no Content-Type")
                .with_url(&self.inner.url)
        })
    }

    /// Append bytes (POST). Returns the new tail offset.
    ///
    /// If the connection breaks after the body was sent, the outcome is
    /// unknown: the error says so ([`Error::is_outcome_unknown`]) and the
    /// append is not retried unless [`AppendOptions::retry_unknown_outcome`]
    /// is set. For safe retries at volume use the idempotent producer.
    pub async fn append(&self, data: impl Into<Bytes>) -> Result<AppendResult> {
        self.append_with(data, AppendOptions::default()).await
    }

    /// Append bytes with options (`Stream-Seq`, close, content type, retries).
    pub async fn append_with(
        &self,
        data: impl Into<Bytes>,
        options: AppendOptions,
    ) -> Result<AppendResult> {
        self.append_boxed(data.into(), options).await
    }

    #[inline(never)]
    fn append_boxed(
        &self,
        data: Bytes,
        options: AppendOptions,
    ) -> BoxFuture<'_, Result<AppendResult>> {
        Box::pin(async move {
            if data.is_empty() && !options.close {
                return Err(
                    Error::invalid_argument("data", "an append needs a non-empty body")
                        .with_url(&self.inner.url),
                );
            }
            let content_type = match (options.content_type, &self.inner.content_type_value) {
                (Some(ct), _) => header_value(&CONTENT_TYPE, &ct)?,
                (None, Some(value)) => value.clone(),
                (None, None) => header_value(&CONTENT_TYPE, &self.resolve_content_type().await?)?,
            };
            let mut spec = RequestSpec::new(Method::POST, "append")
                .header_value(CONTENT_TYPE, content_type)
                .body(data);
            if let Some(seq) = &options.seq {
                spec = spec.header(names::SEQ, seq)?;
            }
            if options.close {
                spec = spec.header(names::CLOSED, "true")?;
            }
            if options.retry_unknown_outcome {
                spec = spec.idempotency(Idempotency::Safe);
            }
            let resp = self.execute(&spec).await?;
            if !resp.status.is_success() {
                return Err(self.error_for(&spec, &resp));
            }
            // The server applied the write: a missing or malformed header must
            // not turn it into an error that a caller would retry (and duplicate).
            let next_offset = match header_str(&resp.headers, names::NEXT_OFFSET) {
                Some(v) => Offset::from_server(v).ok(),
                None => None,
            };
            if next_offset.is_none() {
                tracing::warn!(path = %self.inner.url.path(), "append succeeded without a valid Stream-Next-Offset (a proxy may strip it); the new offset is unknown");
            }
            Ok(AppendResult {
                next_offset,
                closed: crate::request::header_is_true(&resp.headers, names::CLOSED),
            })
        })
    }

    /// Append one JSON value as one message (sent as `[value]`, so arrays are
    /// stored as one message too; PROTOCOL.md 9.1.2).
    pub fn append_json<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> impl Future<Output = Result<AppendResult>> + Send + '_ {
        // Encode before the future so it does not borrow `value` (keeps it `Send`).
        let body = crate::json::single_message_body(value).map_err(|e| e.with_url(&self.inner.url));
        async move { self.append_with(body?, AppendOptions::json()).await }
    }

    /// Append several JSON values as separate messages in one request (sent as
    /// `[a,b,...]`). An empty batch is an `InvalidArgument` error; no request is made.
    pub async fn append_json_batch<T, I>(&self, values: I) -> Result<AppendResult>
    where
        T: Serialize,
        I: IntoIterator<Item = T>,
    {
        let body = crate::json::batch_body(values).map_err(|e| e.with_url(&self.inner.url))?;
        self.append_with(body, AppendOptions::json()).await
    }

    /// Close the stream (EOF for readers). Idempotent: closing a closed
    /// stream succeeds. Returns the final offset.
    pub async fn close(&self) -> Result<CloseResult> {
        self.close_boxed().await
    }

    #[inline(never)]
    fn close_boxed(&self) -> BoxFuture<'_, Result<CloseResult>> {
        Box::pin(async move {
            let spec = RequestSpec::new(Method::POST, "close")
                .header(names::CLOSED, "true")?
                .idempotency(Idempotency::Safe);
            let resp = self.execute(&spec).await?;
            if !resp.status.is_success() {
                return Err(self.error_for(&spec, &resp));
            }
            let meta = self.meta(&resp)?;
            Ok(CloseResult {
                final_offset: meta.next_offset,
            })
        })
    }

    /// Append a final message and close the stream atomically. Fails with
    /// `StreamClosed` if the stream is already closed.
    pub async fn close_with(&self, final_data: impl Into<Bytes>) -> Result<CloseResult> {
        let r = self
            .append_with(
                final_data,
                AppendOptions {
                    close: true,
                    ..AppendOptions::default()
                },
            )
            .await?;
        Ok(CloseResult {
            final_offset: r.next_offset,
        })
    }

    /// Append one final JSON message and close the stream atomically.
    pub fn close_with_json<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> impl Future<Output = Result<CloseResult>> + Send + '_ {
        let body = crate::json::single_message_body(value).map_err(|e| e.with_url(&self.inner.url));
        async move {
            let options = AppendOptions {
                close: true,
                ..AppendOptions::json()
            };
            let r = self.append_with(body?, options).await?;
            Ok(CloseResult {
                final_offset: r.next_offset,
            })
        }
    }

    /// Delete the stream.
    pub async fn delete(&self) -> Result<()> {
        self.delete_boxed().await
    }

    #[inline(never)]
    fn delete_boxed(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let spec = RequestSpec::new(Method::DELETE, "delete");
            let resp = self.execute(&spec).await?;
            if !resp.status.is_success() {
                return Err(self.error_for(&spec, &resp));
            }
            Ok(())
        })
    }

    /// Fetch metadata (HEAD): tail offset, content type, TTL, expiry, closure, ETag.
    pub async fn head(&self) -> Result<StreamInfo> {
        self.head_boxed().await
    }

    #[inline(never)]
    fn head_boxed(&self) -> BoxFuture<'_, Result<StreamInfo>> {
        Box::pin(async move {
            let spec = RequestSpec::new(Method::HEAD, "head");
            let resp = self.execute(&spec).await?;
            if !resp.status.is_success() {
                return Err(self.error_for(&spec, &resp));
            }
            let meta = self.meta(&resp)?;
            self.learn_content_type(meta.content_type());
            let ttl = match header_str(&resp.headers, names::TTL) {
                Some(v) => Some(Duration::from_secs(v.parse().map_err(|_| {
                    Error::decode(
                        DecodeKind::Header,
                        format!("Stream-TTL is not an integer: {v:?}"),
                    )
                    .with_url(&self.inner.url)
                })?)),
                None => None,
            };
            let expires_at_raw = header_str(&resp.headers, names::EXPIRES_AT).map(str::to_owned);
            Ok(StreamInfo {
                next_offset: meta
                    .require_next_offset()
                    .map_err(|e| e.with_url(&self.inner.url))?,
                content_type: meta.content_type().map(str::to_owned),
                ttl,
                expires_at: expires_at_raw
                    .as_deref()
                    .and_then(|v| humantime::parse_rfc3339_weak(v).ok()),
                expires_at_raw,
                closed: meta.closed,
                etag: meta.etag().map(str::to_owned),
            })
        })
    }
}
