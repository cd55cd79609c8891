//! Takes [`TopSnapshot`]s: a HEAD per stream per sample, a live long-poll
//! reader per stream counting what is appended, checkpoint files and
//! subscriptions read at each sample. Rendering is elsewhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use durable_streams_client::consumer::{CheckpointStore, FileCheckpointStore};
use durable_streams_client::subscription::Subscriptions;
use durable_streams_client::{LiveMode, Offset, Stream};
use futures::StreamExt;
use serde_json::value::RawValue;
use tokio::task::JoinHandle;

use super::model::{self, ConsumerRow, StreamRow, TopSnapshot};
use crate::util::{self, CliError};

/// What a stream's live reader saw since it started.
#[derive(Debug, Default)]
struct Counters {
    bytes: u64,
    messages: u64,
    last_append: Option<Instant>,
    /// The reader stopped (stream closed, or a terminal error).
    ended: bool,
}

/// A consumer position and when it was last seen to move.
#[derive(Debug, Clone)]
struct Tracked {
    offset: String,
    moved_at: Option<SystemTime>,
}

/// One watched stream.
struct Watched {
    name: String,
    stream: Stream,
    /// Checkpoint directories whose consumers read this stream.
    dirs: Vec<PathBuf>,
    /// Subscriptions that link this stream, with their acked offsets of the
    /// latest sample.
    acks: Vec<(String, Offset)>,
    counters: Arc<Mutex<Counters>>,
    reader: Option<JoinHandle<()>>,
    since: Instant,
    /// (bytes, messages) at the previous sample.
    previous: (u64, u64),
    json: Option<bool>,
    tracked: HashMap<String, Tracked>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

/// Resolves a stream name (as given, or a subscription's stream path) to a handle.
pub type Resolve<'a> = Box<dyn Fn(&str) -> Result<Stream, CliError> + Send + Sync + 'a>;

/// Samples a set of streams; see the module docs.
pub struct Sampler<'a> {
    streams: Vec<Watched>,
    subscriptions: Option<(Subscriptions, Vec<String>)>,
    /// Resolves a name (as given, or a subscription's stream path) to a handle.
    resolve: Resolve<'a>,
    /// Checkpoint directories for every stream.
    shared_dirs: Vec<PathBuf>,
    last_sample: Option<Instant>,
}

fn lock(counters: &Mutex<Counters>) -> std::sync::MutexGuard<'_, Counters> {
    counters.lock().unwrap_or_else(|p| p.into_inner())
}

impl<'a> Sampler<'a> {
    /// A sampler over `names`; `checkpoints` are `(stream or None for all,
    /// directory)`, `subscriptions` add their streams and acked offsets.
    pub fn new(
        names: Vec<String>,
        checkpoints: Vec<(Option<String>, PathBuf)>,
        subscriptions: Option<(Subscriptions, Vec<String>)>,
        resolve: Resolve<'a>,
    ) -> Result<Sampler<'a>, CliError> {
        let mut sampler = Sampler {
            streams: Vec::new(),
            subscriptions,
            resolve,
            shared_dirs: Vec::new(),
            last_sample: None,
        };
        for name in names {
            sampler.watch(&name)?;
        }
        for (stream, dir) in checkpoints {
            match stream {
                None => sampler.shared_dirs.push(dir),
                Some(name) => {
                    let i = sampler.watch(&name)?;
                    sampler.streams[i].dirs.push(dir);
                }
            }
        }
        Ok(sampler)
    }

    /// The index of `name`'s stream, watching it first if it is new.
    fn watch(&mut self, name: &str) -> Result<usize, CliError> {
        let stream = (self.resolve)(name)?;
        if let Some(i) = self
            .streams
            .iter()
            .position(|w| w.stream.url() == stream.url())
        {
            return Ok(i);
        }
        self.streams.push(Watched {
            name: name.to_owned(),
            stream,
            dirs: Vec::new(),
            acks: Vec::new(),
            counters: Arc::default(),
            reader: None,
            since: Instant::now(),
            previous: (0, 0),
            json: None,
            tracked: HashMap::new(),
        });
        Ok(self.streams.len() - 1)
    }

    /// Take a snapshot: HEAD every stream (concurrently), read the
    /// subscriptions and checkpoints, and the counters of the live readers
    /// (started at the tail of the first HEAD). Rates cover the time since
    /// the previous sample; the first sample has none.
    pub async fn sample(&mut self) -> Result<TopSnapshot, CliError> {
        self.refresh_subscriptions().await?;
        let now = Instant::now();
        let window = self.last_sample.map(|t| now.duration_since(t));
        self.last_sample = Some(now);
        let heads = futures::future::join_all(self.streams.iter().map(|w| w.stream.head())).await;
        let mut rows = Vec::with_capacity(self.streams.len());
        for (w, head) in self.streams.iter_mut().zip(heads) {
            let mut row = StreamRow {
                name: w.name.clone(),
                url: util::redact_url(w.stream.url().as_str()),
                watched_secs: model::round3(w.since.elapsed().as_secs_f64()),
                ..StreamRow::default()
            };
            let info = match head {
                Ok(info) => info,
                Err(e) => {
                    row.error = Some(CliError::api("head", &e).one_line());
                    rows.push(row);
                    continue;
                }
            };
            let json = util::is_json_content_type(info.content_type.as_deref());
            // Start the reader at the first HEAD's tail; restart it (from
            // the current tail) if it ended without the stream being closed.
            let ended = lock(&w.counters).ended;
            if (w.reader.is_none() || ended) && !info.closed {
                lock(&w.counters).ended = false;
                w.json = Some(json);
                w.reader = Some(spawn_reader(
                    &w.stream,
                    info.next_offset.clone(),
                    json,
                    Arc::clone(&w.counters),
                ));
            }
            let (bytes, messages, last_append) = {
                let c = lock(&w.counters);
                (c.bytes, c.messages, c.last_append)
            };
            if let Some(window) = window {
                row.bytes_per_sec = Some(model::per_second(bytes - w.previous.0, window));
                if w.json.unwrap_or(json) {
                    row.messages_per_sec = Some(model::per_second(messages - w.previous.1, window));
                }
            }
            w.previous = (bytes, messages);
            row.last_append_secs =
                last_append.map(|t| model::round3(now.saturating_duration_since(t).as_secs_f64()));
            row.content_type = info.content_type.clone();
            row.tail_offset = Some(info.next_offset.as_str().to_owned());
            row.closed = info.closed;
            row.ttl_secs = info.ttl.map(|d| d.as_secs());
            row.expires_at = info.expires_at_raw.clone();
            let mut consumers = Vec::new();
            for dir in w.dirs.iter().chain(&self.shared_dirs) {
                consumers.extend(read_checkpoints(dir).await);
            }
            for (id, offset) in &w.acks {
                consumers.push(ConsumerRow {
                    name: format!("subscription:{id}"),
                    source: "subscription",
                    offset: Some(offset.as_str().to_owned()),
                    ..ConsumerRow::default()
                });
            }
            for c in &mut consumers {
                let Some(offset) = c.offset.clone() else {
                    continue;
                };
                let tail = info.next_offset.as_str();
                c.position = Some(model::position(tail, &offset));
                c.lag_bytes = model::lag_bytes(tail, &offset);
                // Subscriptions: the time `top` saw the offset move; files:
                // their modification time (set by every save).
                let key = format!("{}\0{}", c.source, c.name);
                let seen = SystemTime::now();
                let moved_at = match w.tracked.get(&key) {
                    Some(t) if t.offset == offset => t.moved_at,
                    Some(_) => Some(seen),
                    None => None,
                };
                let moved_at = if c.source == "checkpoint" {
                    c.since_moved_secs
                        .map(|age| seen - Duration::from_secs_f64(age))
                } else {
                    moved_at
                };
                w.tracked.insert(key, Tracked { offset, moved_at });
                c.since_moved_secs = moved_at.map(|t| {
                    model::round3(seen.duration_since(t).unwrap_or_default().as_secs_f64())
                });
            }
            row.consumers = consumers;
            rows.push(row);
        }
        Ok(TopSnapshot {
            taken_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            window_secs: window.map(|w| model::round3(w.as_secs_f64())),
            streams: rows,
        })
    }

    /// Re-read the subscriptions: their streams (new ones are watched) and
    /// acked offsets.
    async fn refresh_subscriptions(&mut self) -> Result<(), CliError> {
        let Some((subs, ids)) = &self.subscriptions else {
            return Ok(());
        };
        let mut links = Vec::new();
        for id in ids {
            let s = subs
                .get(id)
                .await
                .map_err(|e| CliError::api(&format!("top: subscription {id}"), &e))?;
            links.push((id.clone(), s.streams));
        }
        for w in &mut self.streams {
            w.acks.clear();
        }
        for (id, streams) in links {
            for link in streams {
                let i = self.watch(&link.path)?;
                self.streams[i].acks.push((id.clone(), link.acked_offset));
            }
        }
        Ok(())
    }
}

/// Follow `stream` from `from` with long-polls (the library retries
/// failures with backoff), counting bytes and, for JSON streams, messages.
fn spawn_reader(
    stream: &Stream,
    from: Offset,
    json: bool,
    counters: Arc<Mutex<Counters>>,
) -> JoinHandle<()> {
    let reader = stream.read().offset(from).live(LiveMode::LongPoll);
    tokio::spawn(async move {
        if json {
            let mut batches = reader.json::<Box<RawValue>>();
            while let Some(Ok(batch)) = batches.next().await {
                if !batch.items.is_empty() {
                    let bytes: usize = batch.items.iter().map(|m| m.get().len()).sum();
                    let mut c = lock(&counters);
                    c.bytes += bytes as u64;
                    c.messages += batch.items.len() as u64;
                    c.last_append = Some(Instant::now());
                }
            }
        } else {
            let mut chunks = reader.bytes();
            while let Some(Ok(chunk)) = chunks.next().await {
                if !chunk.data.is_empty() {
                    let mut c = lock(&counters);
                    c.bytes += chunk.data.len() as u64;
                    c.last_append = Some(Instant::now());
                }
            }
        }
        lock(&counters).ended = true;
    })
}

/// The consumers in a checkpoint directory: every file whose name the
/// [`FileCheckpointStore`] accepts, with its offset and the age of the
/// file (its last save). A missing directory has none.
async fn read_checkpoints(dir: &Path) -> Vec<ConsumerRow> {
    let store = FileCheckpointStore::new(dir);
    let mut names = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if let (true, Ok(name)) = (is_file, entry.file_name().into_string())
                && store.validate_name(&name).is_ok()
            {
                names.push(name);
            }
        }
    }
    names.sort();
    let mut rows = Vec::new();
    for name in names {
        let mut row = ConsumerRow {
            name: name.clone(),
            source: "checkpoint",
            ..ConsumerRow::default()
        };
        match store.load(&name).await {
            Ok(Some(offset)) => row.offset = Some(offset.as_str().to_owned()),
            Ok(None) => continue,
            Err(e) => row.error = Some(e.to_string()),
        }
        row.since_moved_secs = std::fs::metadata(dir.join(&name))
            .and_then(|m| m.modified())
            .ok()
            .map(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .unwrap_or_default()
                    .as_secs_f64()
            });
        rows.push(row);
    }
    rows
}
