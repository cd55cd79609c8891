//! The consumer engine: resolve the start, read, decode, hand each batch to
//! the handler, commit, and reconnect with backoff after errors.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Batch, ErrorAction, Flow, Format, FormatSettings, Handler, StopReason};
use crate::error::Result;
use crate::offset::Offset;
use crate::read::{Chunk, Session};
use crate::retry::Backoff;
use crate::runtime::{ReaderConfig, catch_panic};
use crate::telemetry::event_names;

/// The consumer's state while it runs.
pub(super) struct Runner<H: Handler> {
    pub(super) reader: ReaderConfig,
    pub(super) handler: H,
    pub(super) token: CancellationToken,
    pub(super) committed: watch::Sender<Option<Offset>>,
    /// Where the next read starts: the last committed offset, else the
    /// resolved start position; `None` until resolved.
    pub(super) position: Option<Offset>,
    pub(super) up_to_date: bool,
    /// The stream's URL for `Batch::stream`, built once (shared by batches).
    pub(super) stream_label: std::sync::Arc<str>,
    /// The current session's decoding state (a framed format carries
    /// partial frames); made anew for each session.
    decoder: Option<<H::Format as Format>::Decoder>,
    /// The format's settings (a framed format's codec).
    settings: FormatSettings<H>,
}

impl<H: Handler> Runner<H> {
    pub(super) fn new(
        reader: ReaderConfig,
        handler: H,
        settings: FormatSettings<H>,
        token: CancellationToken,
        committed: watch::Sender<Option<Offset>>,
    ) -> Self {
        Runner {
            stream_label: std::sync::Arc::from(reader.stream.url().as_str()),
            reader,
            handler,
            token,
            committed,
            position: None,
            up_to_date: false,
            decoder: None,
            settings,
        }
    }

    pub(super) async fn run(mut self) -> Result<StopReason> {
        // One budget for the consumer's reconnects, reset by progress.
        let mut backoff = Backoff::new(&self.reader.retry);
        loop {
            let error = match self.connect_and_consume(&mut backoff).await {
                Ok(reason) => {
                    tracing::debug!(?reason, offset = ?self.position, "consumer stopped");
                    return Ok(reason);
                }
                Err(e) => e,
            };
            let action = match catch_panic("handle_error", self.handler.handle_error(&error)).await
            {
                Ok(action) => action,
                Err(panic) => {
                    tracing::error!(%error, %panic, "consumer handle_error panicked; stopping");
                    return Err(error);
                }
            };
            if action == ErrorAction::Stop {
                tracing::warn!(%error, "consumer stopped by handle_error");
                return Err(error);
            }
            let Some(delay) = backoff.next_delay(error.retry_after()) else {
                tracing::warn!(%error, attempts = backoff.retries(), "consumer gave up reconnecting");
                return Err(error);
            };
            let attempt = backoff.retries();
            let reason = error.kind().label();
            crate::telemetry::consumer_reconnect(&self.reader.name, reason, delay);
            tracing::warn!(
                event = event_names::CONSUMER_RECONNECT,
                attempt,
                delay_ms = delay.as_millis() as u64,
                reason,
                %error,
                offset = ?self.position,
                "consumer reconnecting"
            );
            tokio::select! {
                biased;
                _ = self.token.cancelled() => return Ok(StopReason::Shutdown),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Resolve the start position (once), then read and handle until the
    /// consumer stops or an error occurs.
    async fn connect_and_consume(&mut self, backoff: &mut Backoff) -> Result<StopReason> {
        if self.token.is_cancelled() {
            return Ok(StopReason::Shutdown);
        }
        let start = match &self.position {
            Some(p) => p.clone(),
            None => {
                let resolved = self.reader.start_offset(&self.token, &self.committed);
                let Some(resolved) = resolved.await? else {
                    return Ok(StopReason::Shutdown);
                };
                self.position = Some(resolved.clone());
                resolved
            }
        };
        let mut decoder = <H::Format as Format>::decoder(&self.settings, &start);
        let limit = self.reader.stream.client().max_response_bytes();
        let typed = <H::Format as Format>::session_decoder(&mut decoder, limit);
        self.decoder = Some(decoder);
        let mut session = Session::new(
            self.reader.stream.clone(),
            start,
            self.reader.live,
            <H::Format as Format>::JSON,
        );
        if let Some(typed) = typed {
            session.decode_with(typed.0);
        }
        self.up_to_date = false;
        let token = self.token.clone();
        loop {
            let next = tokio::select! {
                biased;
                _ = token.cancelled() => return Ok(StopReason::Shutdown),
                next = session.next_chunk() => next,
            };
            let Some(chunk) = next else {
                return Ok(StopReason::CaughtUp);
            };
            if let Some(reason) = self.process(chunk?).await? {
                return Ok(reason);
            }
            backoff.reset();
            if self.token.is_cancelled() {
                return Ok(StopReason::Shutdown);
            }
        }
    }

    pub(super) async fn process(&mut self, mut chunk: Chunk) -> Result<Option<StopReason>> {
        let bytes = chunk.typed_bytes.unwrap_or(chunk.data.len());
        let decoder = self.decoder.get_or_insert_with(|| {
            <H::Format as Format>::decoder(&self.settings, &Offset::start())
        });
        let items = <H::Format as Format>::decode(decoder, &mut chunk)
            .map_err(|e| e.with_url(self.reader.stream.url()))?;
        let batch = Batch::from_chunk(
            items,
            chunk,
            bytes,
            std::sync::Arc::clone(&self.stream_label),
        );
        let mut flow = Flow::Continue;
        if !batch.items.is_empty() {
            crate::telemetry::consumer_batch(&self.reader.name, batch.items.len(), bytes);
            tracing::debug!(
                event = event_names::CONSUMER_BATCH,
                count = batch.items.len(),
                bytes,
                offset = %batch.offset,
                "consumer batch"
            );
            flow = catch_panic("handle_batch", self.handler.handle_batch(&batch)).await??;
        }
        if batch.exact {
            self.commit(&batch.offset).await?;
        }
        if flow == Flow::Stop {
            return Ok(Some(StopReason::Handler));
        }
        if batch.closed {
            catch_panic("on_closed", self.handler.on_closed(&batch.offset)).await?;
            return Ok(Some(StopReason::Closed));
        }
        if !batch.up_to_date {
            self.up_to_date = false;
        } else if !self.up_to_date {
            self.up_to_date = true;
            catch_panic("on_up_to_date", self.handler.on_up_to_date(&batch.offset)).await?;
        }
        Ok(None)
    }

    /// Save `offset` (when it moved forward) and make it the resume
    /// position. A checkpoint never moves backwards.
    async fn commit(&mut self, offset: &Offset) -> Result<()> {
        if !crate::read::checkpoint_moves(self.committed.borrow().as_ref(), offset) {
            return Ok(());
        }
        if let Some(store) = &self.reader.store {
            store.save_boxed(&self.reader.name, offset).await?;
        }
        self.position = Some(offset.clone());
        self.committed.send_replace(Some(offset.clone()));
        Ok(())
    }
}
