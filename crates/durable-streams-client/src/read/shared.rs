//! One read shared by many subscribers in one process
//! ([`ReadBuilder::shared`]): one HTTP connection however many subscribe.
//!
//! The upstream read is an ordinary read (same retries, reconnects and
//! guards), run by a task while anyone subscribes. It hands every chunk to a
//! bounded broadcast ring of `capacity` chunks. A subscriber that falls
//! further behind than the ring holds is not cut off and loses nothing: it
//! continues on its own connection from the last exact offset it passed,
//! skipping what it had already delivered after it (data at an offset never
//! changes). It does not rejoin the shared read.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use serde::de::DeserializeOwned;

use super::{Chunk, ChunkStream, JsonStream, ReadBuilder, TextStream};
use crate::error::{Error, Result};
use crate::offset::Offset;

/// One read shared by many subscribers in this process; see
/// [`ReadBuilder::shared`]. Cheap to clone: clones share the read.
///
/// Memory: the ring keeps the last `capacity` chunks until newer ones
/// replace them, read or not (a chunk is one SSE data event, or a piece of
/// at most 1 MiB of a catch-up response), so choose `capacity` with the
/// chunk size in mind: 64 is plenty for a live tail.
#[derive(Clone)]
pub struct SharedRead {
    hub: Arc<Hub>,
}

impl fmt::Debug for SharedRead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.hub.lock();
        f.debug_struct("SharedRead")
            .field(
                "url",
                &crate::error::redacted_url(self.hub.template.stream_url()),
            )
            .field("capacity", &self.hub.capacity)
            .field("position", &state.position)
            .field(
                "subscribers",
                &state.sender.as_ref().map_or(0, |tx| tx.receiver_count()),
            )
            .finish()
    }
}

/// What the upstream task broadcasts.
#[derive(Clone)]
enum Shared {
    Chunk(Arc<Sent>),
    Failed(Error),
}

/// A chunk as broadcast, with its size in the units a resumed read skips
/// (bytes, or messages of a JSON piece).
struct Sent {
    chunk: Chunk,
    units: u64,
}

struct Hub {
    /// The read as configured; each upstream (and each subscriber that
    /// leaves the shared connection) reads with it from its own offset.
    template: ReadBuilder,
    capacity: usize,
    runtime: tokio::runtime::Handle,
    state: Mutex<HubState>,
}

struct HubState {
    /// The last exact offset broadcast (at first, the read's start).
    position: Offset,
    /// Units broadcast since `position` (pieces of a large response).
    units_since: u64,
    /// The running upstream's channel.
    sender: Option<broadcast::Sender<Shared>>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        // The state stays consistent under every panic point (plain stores).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ReadBuilder {
    /// Share this read among many subscribers in this process: one HTTP
    /// read (one connection for [`LiveMode::Sse`](super::LiveMode::Sse)),
    /// however many [`SharedRead::subscribe`]. For fan-out: thousands of
    /// local subscribers of one stream cost a few hundred bytes each instead
    /// of a connection each.
    ///
    /// The shared read starts with the first subscriber, from this builder's
    /// offset, and stops when the last one is dropped (a later subscriber
    /// starts it again from where it stopped). `capacity` chunks are kept
    /// for subscribers that are behind; one that falls further behind
    /// continues on its own connection, losing and repeating nothing.
    ///
    /// Fails with `InvalidArgument` when `capacity` is 0 or when called
    /// outside a tokio runtime (the shared read runs as a task on it).
    ///
    /// ```no_run
    /// # use durable_streams_client::{Client, LiveMode};
    /// # use futures::StreamExt;
    /// # async fn demo() -> durable_streams_client::Result<()> {
    /// let stream = Client::new().stream("http://127.0.0.1:4437/v1/stream/prices")?;
    /// let tail = stream.head().await?.next_offset;
    /// let shared = stream.read().offset(tail).live(LiveMode::Sse).shared(256)?;
    /// for _ in 0..1000 {
    ///     let mut chunks = shared.subscribe();
    ///     tokio::spawn(async move {
    ///         while let Some(Ok(chunk)) = chunks.next().await {
    ///             // every subscriber gets every chunk, in order
    ///             # drop(chunk);
    ///         }
    ///     });
    /// }
    /// # Ok(()) }
    /// ```
    pub fn shared(self, capacity: usize) -> Result<SharedRead> {
        if capacity == 0 {
            return Err(Error::invalid_argument(
                "capacity",
                "a shared read must keep at least one chunk",
            ));
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::invalid_argument(
                "runtime",
                "a shared read must be made inside a tokio runtime",
            )
        })?;
        let position = self.offset.clone();
        Ok(SharedRead {
            hub: Arc::new(Hub {
                template: self,
                capacity,
                runtime,
                state: Mutex::new(HubState {
                    position,
                    units_since: 0,
                    sender: None,
                }),
            }),
        })
    }
}

impl SharedRead {
    /// A new subscriber: every chunk after the shared read's current
    /// position ([`SharedRead::position`] now), in order, each once. Ends
    /// like the read it shares (closing chunk, catch-up done for
    /// [`LiveMode::Off`](super::LiveMode::Off), or an error item). Starts
    /// the shared read if it is not running.
    pub fn subscribe(&self) -> ChunkStream {
        let mut state = self.hub.lock();
        let from = state.position.clone();
        if state.units_since > 0 {
            // Joining inside a large response: what it delivered so far
            // has no position of its own, so this subscriber reads alone
            // from the response's start.
            return private(&self.hub.template, from, 0);
        }
        // A sender in the state means the upstream task is running (it
        // clears the state under the lock before it ends).
        let rx = match &state.sender {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = broadcast::channel(self.hub.capacity);
                let chunks = self.hub.template.clone().offset(from.clone()).bytes();
                self.hub
                    .runtime
                    .spawn(upstream(Arc::clone(&self.hub), tx.clone(), chunks));
                state.sender = Some(tx);
                rx
            }
        };
        drop(state);
        subscriber(Arc::clone(&self.hub), rx, from)
    }

    /// [`subscribe`](Self::subscribe) as UTF-8 text (like
    /// [`ReadBuilder::text`]).
    pub fn subscribe_text(&self) -> TextStream {
        super::text_stream(self.subscribe(), self.hub.template.stream_url().clone())
    }

    /// [`subscribe`](Self::subscribe) as typed JSON batches (like
    /// [`ReadBuilder::json`]); each subscriber decodes for itself.
    pub fn subscribe_json<T: DeserializeOwned + Send + 'static>(&self) -> JsonStream<T> {
        super::json_stream(
            self.subscribe(),
            self.hub.template.stream_url().clone(),
            None,
        )
    }

    /// Where a subscriber made now starts: the last exact offset the shared
    /// read delivered (at first, the read's start offset).
    pub fn position(&self) -> Offset {
        self.hub.lock().position.clone()
    }
}

/// Units a resumed read skips for what `chunk` delivered: JSON messages
/// when the chunk was split into them, else bytes.
fn units(chunk: &Chunk) -> u64 {
    match &chunk.messages {
        Some(messages) => messages.len() as u64,
        None => chunk.data.len() as u64,
    }
}

/// Run the shared read and broadcast its chunks until it ends or nobody
/// listens.
async fn upstream(hub: Arc<Hub>, tx: broadcast::Sender<Shared>, mut chunks: ChunkStream) {
    loop {
        let item = tokio::select! {
            item = chunks.next() => item,
            () = tx.closed() => {
                // Re-checked under the lock: `subscribe` may have joined
                // between the wake-up and here.
                let mut state = hub.lock();
                if tx.receiver_count() == 0 {
                    state.sender = None;
                    return;
                }
                continue;
            }
        };
        let mut state = hub.lock();
        match item {
            Some(Ok(mut chunk)) => {
                let units = units(&chunk);
                if chunk.exact {
                    state.position = chunk.offset.clone();
                    state.units_since = 0;
                } else {
                    state.units_since += units;
                }
                // Subscribers see the public fields only.
                chunk.messages = None;
                let listened = tx.send(Shared::Chunk(Arc::new(Sent { chunk, units })));
                if listened.is_err() {
                    state.sender = None;
                    return;
                }
            }
            Some(Err(e)) => {
                let _ = tx.send(Shared::Failed(e));
                state.sender = None;
                return;
            }
            None => {
                state.sender = None;
                return;
            }
        }
    }
}

/// A read of the subscriber's own, from `from`, skipping `skip` units that
/// it already delivered.
fn private(template: &ReadBuilder, from: Offset, skip: u64) -> ChunkStream {
    let url = template.stream_url().clone();
    let json = template.stream.is_json();
    let chunks = template.clone().offset(from).bytes();
    if skip == 0 {
        return chunks;
    }
    let stream = futures::stream::unfold(
        (chunks, skip, url),
        move |(mut chunks, mut skip, url)| async move {
            loop {
                let mut chunk = match chunks.next().await? {
                    Ok(chunk) => chunk,
                    Err(e) => return Some((Err(e), (chunks, 0, url))),
                };
                if skip == 0 {
                    return Some((Ok(chunk), (chunks, 0, url)));
                }
                match skip_units(&mut chunk, &mut skip, json) {
                    Ok(()) => {}
                    Err(e) => return Some((Err(e.with_url(&url)), (chunks, 0, url))),
                }
                // A piece wholly delivered before is dropped; an exact chunk
                // still carries its position.
                if !chunk.data.is_empty() || chunk.exact {
                    return Some((Ok(chunk), (chunks, skip, url)));
                }
            }
        },
    );
    ChunkStream {
        inner: stream.boxed(),
    }
}

/// Drop up to `skip` units from the front of `chunk` (JSON messages on a
/// JSON stream, else bytes), counting them off `skip`.
fn skip_units(chunk: &mut Chunk, skip: &mut u64, json: bool) -> Result<()> {
    if json || chunk.messages.is_some() {
        let mut messages = chunk.take_json_messages()?;
        let n = (*skip).min(messages.len() as u64) as usize;
        messages.drain(..n);
        *skip -= n as u64;
        chunk.data = if messages.is_empty() {
            bytes::Bytes::new()
        } else {
            crate::json::frame_elements(&messages)
        };
    } else {
        let n = (*skip).min(chunk.data.len() as u64) as usize;
        chunk.data = chunk.data.slice(n..);
        *skip -= n as u64;
    }
    Ok(())
}

/// Where a subscriber is and what feeds it.
enum Source {
    Shared(broadcast::Receiver<Shared>),
    Own(ChunkStream),
    Ended,
}

struct Subscriber {
    hub: Arc<Hub>,
    source: Source,
    /// The last exact offset delivered (or the start).
    exact: Offset,
    /// Units delivered since `exact`.
    units_since: u64,
}

fn subscriber(hub: Arc<Hub>, rx: broadcast::Receiver<Shared>, from: Offset) -> ChunkStream {
    let state = Subscriber {
        hub,
        source: Source::Shared(rx),
        exact: from,
        units_since: 0,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        let item = s.next().await?;
        Some((item, s))
    });
    ChunkStream {
        inner: stream.boxed(),
    }
}

impl Subscriber {
    async fn next(&mut self) -> Option<Result<Chunk>> {
        loop {
            let rx = match &mut self.source {
                Source::Ended => return None,
                Source::Own(chunks) => {
                    let item = chunks.next().await;
                    if !matches!(item, Some(Ok(_))) {
                        self.source = Source::Ended;
                    }
                    return item;
                }
                Source::Shared(rx) => rx,
            };
            match rx.recv().await {
                Ok(Shared::Chunk(sent)) => {
                    if sent.chunk.exact {
                        self.exact = sent.chunk.offset.clone();
                        self.units_since = 0;
                    } else {
                        self.units_since += sent.units;
                    }
                    return Some(Ok(sent.chunk.clone()));
                }
                Ok(Shared::Failed(e)) => {
                    self.source = Source::Ended;
                    return Some(Err(e));
                }
                Err(RecvError::Closed) => {
                    // The shared read ended after its last chunk.
                    self.source = Source::Ended;
                    return None;
                }
                Err(RecvError::Lagged(missed)) => {
                    tracing::debug!(
                        url = %crate::error::redacted_url(self.hub.template.stream_url()),
                        missed,
                        "a shared-read subscriber fell behind; continuing on its own connection"
                    );
                    crate::telemetry::retry("shared_read", "lagged");
                    self.source = Source::Own(private(
                        &self.hub.template,
                        self.exact.clone(),
                        self.units_since,
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn chunk(data: &'static [u8], messages: Option<Vec<&'static [u8]>>) -> Chunk {
        Chunk {
            data: Bytes::from_static(data),
            offset: Offset::parse("o").unwrap(),
            exact: false,
            cursor: None,
            up_to_date: false,
            closed: false,
            status: 200,
            messages: messages.map(|m| m.into_iter().map(Bytes::from_static).collect()),
            typed_bytes: None,
        }
    }

    #[test]
    fn skipping_bytes_counts_across_chunks() {
        let mut skip = 5;
        let mut a = chunk(b"abc", None);
        skip_units(&mut a, &mut skip, false).unwrap();
        assert_eq!((&a.data[..], skip), (&b""[..], 2));
        let mut b = chunk(b"defgh", None);
        skip_units(&mut b, &mut skip, false).unwrap();
        assert_eq!((&b.data[..], skip), (&b"fgh"[..], 0));
    }

    #[test]
    fn skipping_json_drops_whole_messages() {
        let mut skip = 2;
        let mut c = chunk(b"[1,2,3]", Some(vec![b"1", b"2", b"3"]));
        skip_units(&mut c, &mut skip, true).unwrap();
        assert_eq!((&c.data[..], skip), (&b"[3]"[..], 0));
        let mut skip = 3;
        let mut d = chunk(b"[1,2]", Some(vec![b"1", b"2"]));
        skip_units(&mut d, &mut skip, true).unwrap();
        assert_eq!((&d.data[..], skip), (&b""[..], 1));
        assert_eq!(units(&chunk(b"[1,2]", Some(vec![b"1", b"2"]))), 2);
        assert_eq!(units(&chunk(b"abc", None)), 3);
    }

    #[test]
    fn capacity_and_runtime_are_checked() {
        let stream = crate::Client::new()
            .stream("http://127.0.0.1:9/v1/stream/x")
            .unwrap();
        let err = stream.read().shared(4).unwrap_err();
        assert_eq!(
            err.kind(),
            &crate::ErrorKind::InvalidArgument { field: "runtime" }
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let err = stream.read().shared(0).unwrap_err();
        assert_eq!(
            err.kind(),
            &crate::ErrorKind::InvalidArgument { field: "capacity" }
        );
        let shared = stream.read().shared(4).unwrap();
        assert_eq!(shared.position(), Offset::start());
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SharedRead>();
    }
}
