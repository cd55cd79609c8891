//! `state`: the State Protocol (STATE-PROTOCOL.md) on the command line:
//! show the materialized state (and follow its changes), print the
//! validated messages, materialize into SQLite exactly once, write changes.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durable_streams_client::consumer::StopReason;
use durable_streams_client::state::{
    ApplyBatch, Change, Control, ControlKind, Materializer, Operation, SqliteStore, StateMessage,
    StateStore, StateWriter, StoreOp, Transaction,
};
use durable_streams_client::{
    Error, LiveMode, Offset, Producer, Result as ApiResult, RetryPolicy, Stream,
};
use futures::StreamExt;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::cli::{
    StateChangesArgs, StateCommand, StateMaterializeArgs, StateShowArgs, StateWriteArgs,
};
use crate::commands::{Ctx, api, head_explained, input_error, println_out, push_json_line};
use crate::produce::{committed_note, default_producer_id};
use crate::util::{self, CliError, exit};

/// Progress lines of `materialize` at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Run a `state` subcommand.
pub async fn run(ctx: &Ctx, command: StateCommand) -> Result<(), CliError> {
    match command {
        StateCommand::Show(args) => show(ctx, args).await,
        StateCommand::Changes(args) => changes(ctx, args).await,
        StateCommand::Materialize(args) => materialize(ctx, args).await,
        StateCommand::Write(args) => write(ctx, args).await,
    }
}

/// The stream, checked to exist and to be JSON; also its content type.
async fn json_stream(ctx: &Ctx, op: &str, name: &str) -> Result<(Stream, String), CliError> {
    let stream = ctx.stream(name)?;
    let info = head_explained(&stream, op, name).await?;
    let ct = info.content_type.unwrap_or_default();
    if !util::is_json_content_type(Some(&ct)) {
        let shown = if ct.is_empty() { "none" } else { ct.as_str() };
        return Err(input_error(
            op,
            name,
            &format!(
                "not a JSON stream (content type {shown}); the State Protocol needs application/json"
            ),
        ));
    }
    Ok((stream, ct))
}

/// Write `buf` to stdout and flush.
fn write_stdout(buf: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(buf)?;
    out.flush()
}

fn json_str(s: &str) -> String {
    Value::from(s).to_string()
}

/// The state: `TYPE/KEY<TAB>VALUE` lines, or one JSON object `{TYPE: {KEY: VALUE}}`.
fn format_state(buf: &mut Vec<u8>, state: &BTreeMap<String, BTreeMap<String, Value>>, json: bool) {
    if json {
        let obj: serde_json::Map<String, Value> = state
            .iter()
            .map(|(t, entries)| {
                let m: serde_json::Map<String, Value> = entries
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (t.clone(), Value::Object(m))
            })
            .collect();
        buf.extend_from_slice(Value::Object(obj).to_string().as_bytes());
        buf.push(b'\n');
        return;
    }
    for (t, entries) in state {
        for (k, v) in entries {
            buf.extend_from_slice(format!("{t}/{k}\t{v}\n").as_bytes());
        }
    }
}

/// One applied change (`show --live`); nothing for another type than `filter`.
fn format_applied(buf: &mut Vec<u8>, op: &StoreOp, filter: Option<&str>, json: bool) {
    let other_type = |t: &str| filter.is_some_and(|f| f != t);
    let line = match op {
        StoreOp::Put {
            entity_type,
            key,
            value,
            operation,
            ..
        } => {
            if other_type(entity_type) {
                return;
            }
            if json {
                format!(
                    "{{\"op\":{},\"type\":{},\"key\":{},\"value\":{value}}}",
                    json_str(operation.as_str()),
                    json_str(entity_type),
                    json_str(key),
                )
            } else {
                format!("{}\t{entity_type}/{key}\t{value}", operation.as_str())
            }
        }
        StoreOp::Delete {
            entity_type, key, ..
        } => {
            if other_type(entity_type) {
                return;
            }
            if json {
                format!(
                    "{{\"op\":\"delete\",\"type\":{},\"key\":{}}}",
                    json_str(entity_type),
                    json_str(key),
                )
            } else {
                format!("delete\t{entity_type}/{key}")
            }
        }
        StoreOp::Clear => {
            if json {
                "{\"op\":\"reset\"}".to_owned()
            } else {
                "reset".to_owned()
            }
        }
        _ => return,
    };
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
}

/// The store of `show --live`: prints every committed change (it keeps no
/// state; the state was printed before it started). It blocks on stdout,
/// so it is called on the blocking pool, which gives backpressure: no
/// change is dropped for a slow reader.
struct PrintStore {
    offset: Option<Offset>,
    staged: Vec<StoreOp>,
    filter: Option<String>,
    json: bool,
    output_error: Arc<Mutex<Option<std::io::Error>>>,
}

impl StateStore for PrintStore {
    fn committed_offset(&mut self, _stream: &str) -> ApiResult<Option<Offset>> {
        Ok(self.offset.clone())
    }

    fn apply(&mut self, batch: &ApplyBatch) -> ApiResult<()> {
        self.staged.extend(batch.ops.iter().cloned());
        if !batch.commit {
            return Ok(());
        }
        let mut buf = Vec::new();
        for op in self.staged.drain(..) {
            format_applied(&mut buf, &op, self.filter.as_deref(), self.json);
        }
        self.offset = Some(batch.offset.clone());
        if buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = write_stdout(&buf) {
            let message = format!("cannot write to stdout: {e}");
            *self.output_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            return Err(Error::handler(message));
        }
        Ok(())
    }

    fn discard_staged(&mut self) -> ApiResult<()> {
        self.staged.clear();
        Ok(())
    }
}

/// `state show`: catch up into memory, print; with `--live`, then print
/// every change from the offset the printed state corresponds to.
async fn show(ctx: &Ctx, args: StateShowArgs) -> Result<(), CliError> {
    let op = "state show";
    let name = &args.name;
    let (stream, _) = json_stream(ctx, op, name).await?;
    let builder = Materializer::builder(&stream)
        .live(LiveMode::Off)
        .retry_policy(RetryPolicy::default());
    let state = builder.state();
    let handle = builder.start();
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let caught_up = tokio::select! {
        biased;
        _ = &mut interrupt => {
            return Err(CliError::new(exit::INTERRUPTED, format!("{op} {name}: interrupted")));
        }
        r = handle.join() => r,
    };
    caught_up.map_err(api(op, name))?;

    let mut snapshot = state.snapshot();
    if let Some(t) = &args.entity_type {
        let only = snapshot.remove(t).unwrap_or_default();
        snapshot = BTreeMap::from([(t.clone(), only)]);
        if !ctx.json() {
            snapshot.retain(|_, m| !m.is_empty());
        }
    }
    let mut buf = Vec::new();
    format_state(&mut buf, &snapshot, ctx.json());
    write_stdout(&buf).map_err(|e| CliError::io("stdout", &e))?;
    if !args.live {
        return Ok(());
    }

    let output_error = Arc::new(Mutex::new(None));
    let printer = PrintStore {
        // Where the printed state ends (a snapshot still open at the tail
        // was not printed and is read again, to be printed when it ends).
        offset: Some(state.offset().unwrap_or_else(Offset::start)),
        staged: Vec::new(),
        filter: args.entity_type.clone(),
        json: ctx.json(),
        output_error: Arc::clone(&output_error),
    };
    let handle = Materializer::builder(&stream)
        .store(printer)
        .live(LiveMode::Auto)
        .start();
    let result = handle.shutdown_on_ctrl_c().await;
    if let Some(e) = output_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(CliError::io("stdout", &e));
    }
    result.map_err(api(op, name))?;
    Ok(())
}

/// One validated message (`state changes`).
fn format_message(
    buf: &mut Vec<u8>,
    message: &StateMessage,
    raw: &RawValue,
    offset: &Offset,
    json: bool,
) {
    if json {
        buf.extend_from_slice(b"{\"offset\":");
        buf.extend_from_slice(json_str(offset.as_str()).as_bytes());
        buf.extend_from_slice(b",\"message\":");
        push_json_line(buf, raw);
        buf.extend_from_slice(b"}\n");
        return;
    }
    let mut line = match message {
        StateMessage::Change(c) => {
            let mut line = format!("{}\t{}/{}", c.operation.as_str(), c.entity_type, c.key);
            if let Some(v) = &c.value {
                line.push_str(&format!("\t{v}"));
            }
            if let Some(t) = &c.txid {
                line.push_str(&format!("\ttxid={t}"));
            }
            line
        }
        StateMessage::Control(c) => {
            let mut line = c.kind.as_str().to_owned();
            if let Some(o) = &c.offset {
                line.push_str(&format!("\toffset={o}"));
            }
            line
        }
    };
    line.push('\n');
    buf.extend_from_slice(line.as_bytes());
}

/// `state changes`: read (catch-up, or live) and print every message,
/// validated.
async fn changes(ctx: &Ctx, args: StateChangesArgs) -> Result<(), CliError> {
    let op = "state changes";
    let name = &args.name;
    let (stream, _) = json_stream(ctx, op, name).await?;
    let live = if args.live {
        LiveMode::Auto
    } else {
        LiveMode::Off
    };
    let mut batches = stream
        .read()
        .offset(args.from.clone())
        .live(live)
        .json::<Box<RawValue>>();
    // Where the batch being read started, for error messages.
    let mut read_at = args.from;
    let mut buf = Vec::with_capacity(64 * 1024);
    let flush = |buf: &mut Vec<u8>| {
        let r = write_stdout(buf).map_err(|e| CliError::io("stdout", &e));
        buf.clear();
        r
    };
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut interrupted = false;
    loop {
        let next = tokio::select! {
            biased;
            _ = &mut interrupt => {
                interrupted = true;
                break;
            }
            next = batches.next() => next,
        };
        let Some(batch) = next else { break };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                flush(&mut buf)?;
                return Err(CliError::api(&format!("{op} {name}"), &e));
            }
        };
        for (index, raw) in batch.items.iter().enumerate() {
            match StateMessage::from_slice_at(raw.get().as_bytes(), &read_at, index) {
                Ok(message) => format_message(&mut buf, &message, raw, &batch.offset, ctx.json()),
                Err(e) => {
                    // What was valid before it is printed.
                    flush(&mut buf)?;
                    return Err(CliError::api(&format!("{op} {name}"), &e));
                }
            }
        }
        read_at = batch.offset.clone();
        if args.live || buf.len() >= 64 * 1024 {
            flush(&mut buf)?;
        }
    }
    flush(&mut buf)?;
    if interrupted && !args.live {
        return Err(CliError::new(
            exit::INTERRUPTED,
            format!("{op} {name}: interrupted"),
        ));
    }
    Ok(())
}

fn stop_word(reason: &StopReason) -> &'static str {
    match reason {
        StopReason::CaughtUp => "caught-up",
        StopReason::Closed => "closed",
        StopReason::Shutdown => "interrupted",
        _ => "stopped",
    }
}

/// `state materialize`: into a SQLite file, exactly once across restarts.
async fn materialize(ctx: &Ctx, args: StateMaterializeArgs) -> Result<(), CliError> {
    let op = "state materialize";
    let name = &args.name;
    let context = format!("{op} {name}");
    let (stream, _) = json_stream(ctx, op, name).await?;
    let db: &Path = &args.db;
    let store_error = |e: Error| CliError::api(&format!("{context}: {}", db.display()), &e);
    let store = SqliteStore::open(db).map_err(store_error)?;
    let url = stream.url().as_str().to_owned();
    let before = store.cursor().map_err(store_error)?;
    if let Some((other, _, _)) = &before
        && *other != url
    {
        return Err(CliError::new(
            exit::CONFLICT,
            format!(
                "{context}: {} materializes {}, not {}; use one database per stream",
                db.display(),
                util::redact_url(other),
                util::redact_url(&url)
            ),
        ));
    }
    // A second connection for progress: readers do not block the writer (WAL).
    let reader = SqliteStore::open(db).map_err(store_error)?;
    let applied_before = before.as_ref().map_or(0, |(_, _, n)| *n);
    match &before {
        Some((_, offset, n)) => eprintln!(
            "dstream: {context}: resuming {} at offset {offset} ({n} changes applied)",
            db.display()
        ),
        None => eprintln!(
            "dstream: {context}: materializing into {} from the start",
            db.display()
        ),
    }
    let mut builder = Materializer::builder(&stream).store(store);
    builder = if args.live {
        // A follower rides out server restarts (library default: unbounded backoff).
        builder.live(LiveMode::Auto)
    } else {
        builder
            .live(LiveMode::Off)
            .retry_policy(RetryPolicy::default())
    };
    let handle = builder.start();
    let done = handle.shutdown_on_ctrl_c();
    tokio::pin!(done);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    let mut reported = before.map(|(_, o, n)| (o, n));
    let result = loop {
        tokio::select! {
            r = &mut done => break r,
            _ = tick.tick() => {
                if let Ok(Some((_, offset, n))) = reader.cursor()
                    && reported.as_ref() != Some(&(offset.clone(), n))
                {
                    eprintln!("dstream: {context}: {n} changes applied, offset {offset}");
                    reported = Some((offset, n));
                }
            }
        }
    };
    let reason = result.map_err(api(op, name))?;
    let (offset, applied) = match reader.cursor().map_err(store_error)? {
        Some((_, o, n)) => (Some(o), n),
        None => (None, 0),
    };
    let this_run = applied.saturating_sub(applied_before);
    if ctx.json() {
        let obj = serde_json::json!({
            "url": util::redact_url(&url),
            "db": db.display().to_string(),
            "applied_changes": applied,
            "applied_this_run": this_run,
            "offset": offset.as_ref().map(Offset::as_str),
            "stopped": stop_word(&reason),
        });
        return println_out(&obj.to_string());
    }
    let how = match reason {
        StopReason::CaughtUp => "caught up",
        StopReason::Closed => "the stream is closed",
        StopReason::Shutdown => "stopped by ctrl-c",
        _ => "stopped",
    };
    println_out(&format!(
        "materialized {} into {}: {applied} changes applied ({this_run} this run), offset {}; {how}",
        util::redact_url(&url),
        db.display(),
        offset.as_ref().map_or("none", Offset::as_str),
    ))
}

/// `1 change`, `2 changes`.
fn plural(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// One parsed input line of `state write`.
#[derive(Debug, PartialEq)]
enum Line {
    Message(StateMessage),
    Begin(String),
    Commit,
}

/// The first whitespace-separated word and the rest (trimmed).
fn split_word(s: &str) -> (&str, &str) {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    }
}

const LINE_SYNTAX: &str = "insert|update TYPE KEY JSON, delete TYPE KEY, snapshot-start, snapshot-end, reset [OFFSET], begin TXID, commit, or a JSON message";

/// Parse one non-empty, non-comment line.
fn parse_line(line: &str) -> Result<Line, String> {
    if line.starts_with('{') {
        return StateMessage::from_slice(line.as_bytes())
            .map(Line::Message)
            .map_err(|e| e.to_string());
    }
    let (word, rest) = split_word(line);
    let no_more = |what: &str, rest: &str| {
        if rest.is_empty() {
            Ok(())
        } else {
            Err(format!("unexpected {rest:?} after {what}"))
        }
    };
    let type_key = |rest| -> Result<(String, String, &str), String> {
        let (t, rest) = split_word(rest);
        let (k, rest) = split_word(rest);
        if t.is_empty() || k.is_empty() {
            return Err(format!("{word} needs TYPE and KEY"));
        }
        Ok((t.to_owned(), k.to_owned(), rest))
    };
    let change = match word {
        "insert" | "update" => {
            let (t, k, json) = type_key(rest)?;
            if json.is_empty() {
                return Err(format!("{word} {t} {k} needs a JSON value"));
            }
            let value: Value = serde_json::from_str(json)
                .map_err(|e| format!("the value of {word} {t} {k} is not one JSON value: {e}"))?;
            let op = if word == "insert" {
                Operation::Insert
            } else {
                Operation::Update
            };
            Change::new(op, t, k, Some(value))
        }
        "delete" => {
            let (t, k, rest) = type_key(rest)?;
            no_more("delete TYPE KEY", rest)?;
            Change::new(Operation::Delete, t, k, None)
        }
        "snapshot-start" | "snapshot-end" => {
            no_more(word, rest)?;
            let kind = if word == "snapshot-start" {
                ControlKind::SnapshotStart
            } else {
                ControlKind::SnapshotEnd
            };
            return Ok(Line::Message(StateMessage::Control(Control::new(
                kind, None,
            ))));
        }
        "reset" => {
            let offset = if rest.is_empty() {
                None
            } else {
                Some(
                    Offset::parse(rest)
                        .map_err(|e| format!("reset {rest}: not a valid offset: {e}"))?,
                )
            };
            return Ok(Line::Message(StateMessage::Control(Control::new(
                ControlKind::Reset,
                offset,
            ))));
        }
        "begin" => {
            let (txid, rest) = split_word(rest);
            if txid.is_empty() {
                return Err("begin needs a transaction id".into());
            }
            no_more("begin TXID", rest)?;
            return Ok(Line::Begin(txid.to_owned()));
        }
        "commit" => {
            no_more(word, rest)?;
            return Ok(Line::Commit);
        }
        other => {
            return Err(format!(
                "unknown command {other:?} (expected {LINE_SYNTAX})"
            ));
        }
    };
    Ok(Line::Message(StateMessage::Change(change)))
}

/// What `state write` wrote.
#[derive(Debug, Default)]
struct Written {
    messages: u64,
    changes: u64,
    transactions: u64,
}

/// `state write`: lines from stdin (or a file) through `StateWriter`.
async fn write(ctx: &Ctx, args: StateWriteArgs) -> Result<(), CliError> {
    let op = "state write";
    let name = &args.name;
    let (stream, content_type) = json_stream(ctx, op, name).await?;
    let producer_id = default_producer_id();
    let producer = Producer::builder(&stream, &producer_id)
        .auto_claim(true)
        .recover_lost_state(true)
        .content_type(&content_type)
        .build()
        .map_err(api(op, name))?;
    let writer = StateWriter::new(producer);
    let input: Box<dyn AsyncRead + Unpin + Send> = match &args.file {
        Some(path) => Box::new(
            tokio::fs::File::open(path)
                .await
                .map_err(|e| CliError::io(&format!("cannot open {}", path.display()), &e))?,
        ),
        None => {
            crate::commands::stdin_hint();
            Box::new(tokio::io::stdin())
        }
    };
    let label = args
        .file
        .as_ref()
        .map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
    let mut reader = BufReader::new(input);
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);

    let mut written = Written::default();
    let mut tx: Option<(Transaction<'_>, u64)> = None;
    let mut raw = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    let mut interrupted = false;
    // The failure, and the line to resume from when it is about the input.
    let mut failure: Option<(CliError, Option<u64>)> = None;
    let bad_line = |line_no: u64, message: &str| {
        input_error(op, name, &format!("{label} line {line_no}: {message}"))
    };
    loop {
        raw.clear();
        let n = tokio::select! {
            biased;
            _ = &mut interrupt => { interrupted = true; break; }
            n = reader.read_until(b'\n', &mut raw) => n,
        };
        match n {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                failure = Some((CliError::io(&format!("cannot read {label}"), &e), None));
                break;
            }
        }
        line_no += 1;
        let resume = tx.as_ref().map_or(line_no, |(_, begun)| *begun);
        let text = match std::str::from_utf8(&raw) {
            Ok(t) => t.trim(),
            Err(e) => {
                failure = Some((bad_line(line_no, &format!("not UTF-8: {e}")), Some(resume)));
                break;
            }
        };
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let parsed = match parse_line(text) {
            Ok(p) => p,
            Err(e) => {
                failure = Some((bad_line(line_no, &e), Some(resume)));
                break;
            }
        };
        let sent = match parsed {
            Line::Begin(txid) => {
                if let Some((_, begun)) = &tx {
                    failure = Some((
                        bad_line(
                            line_no,
                            &format!(
                                "begin {txid}: the transaction begun at line {begun} is still open (commit it first)"
                            ),
                        ),
                        Some(resume),
                    ));
                    break;
                }
                tx = Some((writer.transaction(txid), line_no));
                continue;
            }
            Line::Message(message) => match (&mut tx, message) {
                (Some((open, _)), StateMessage::Change(change)) => {
                    open.push(change);
                    continue;
                }
                (Some((_, begun)), StateMessage::Control(c)) => {
                    failure = Some((
                        bad_line(
                            line_no,
                            &format!(
                                "{} inside the transaction begun at line {begun}: a transaction holds changes only",
                                c.kind.as_str()
                            ),
                        ),
                        Some(resume),
                    ));
                    break;
                }
                (None, message) => {
                    let is_change = matches!(message, StateMessage::Change(_));
                    let r = tokio::select! {
                        biased;
                        _ = &mut interrupt => { interrupted = true; break; }
                        r = writer.send(&message) => r,
                    };
                    if r.is_ok() {
                        written.messages += 1;
                        written.changes += u64::from(is_change);
                    }
                    r
                }
            },
            Line::Commit => {
                let Some((open, _)) = tx.take() else {
                    failure = Some((bad_line(line_no, "commit without begin"), Some(line_no)));
                    break;
                };
                let n = open.len() as u64;
                if n == 0 {
                    failure = Some((bad_line(line_no, "the transaction is empty"), Some(resume)));
                    break;
                }
                let r = tokio::select! {
                    biased;
                    _ = &mut interrupt => { interrupted = true; break; }
                    r = open.commit() => r,
                };
                if r.is_ok() {
                    written.messages += n;
                    written.changes += n;
                    written.transactions += 1;
                }
                r
            }
        };
        // The acknowledgement is not awaited: close reports failures.
        if let Err(e) = sent {
            failure = Some((CliError::api(&format!("{op} {name}"), &e), Some(resume)));
            break;
        }
    }
    if failure.is_none()
        && !interrupted
        && let Some((_, begun)) = &tx
    {
        failure = Some((
            input_error(
                op,
                name,
                &format!(
                    "{label} ended inside the transaction begun at line {begun}; it was not written"
                ),
            ),
            Some(*begun),
        ));
    }
    drop(tx);
    let closed = writer.close().await;
    if let Some((mut failure, resume)) = failure {
        failure.message.push_str(&committed_note(
            written.messages,
            resume,
            closed.as_ref().err(),
        ));
        return Err(failure);
    }
    closed.map_err(api(op, name))?;
    let url = util::redact_url(stream.url().as_str());
    if ctx.json() {
        let obj = serde_json::json!({
            "url": url,
            "messages": written.messages,
            "changes": written.changes,
            "transactions": written.transactions,
            "producer_id": producer_id,
            "interrupted": interrupted,
        });
        println_out(&obj.to_string())?;
    } else {
        println_out(&format!(
            "wrote {} ({}, {}) to {url}",
            plural(written.messages, "message"),
            plural(written.changes, "change"),
            plural(written.transactions, "transaction"),
        ))?;
    }
    if interrupted {
        return Err(CliError::new(
            exit::INTERRUPTED,
            format!(
                "{op} {name}: interrupted; {} messages were sent and flushed",
                written.messages
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn change(line: &str) -> Change {
        match parse_line(line).unwrap() {
            Line::Message(StateMessage::Change(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn line_syntax() {
        let c = change(r#"insert user 1 {"name": "Alice Smith"}"#);
        assert_eq!(
            (c.operation, c.entity_type.as_str(), c.key.as_str()),
            (Operation::Insert, "user", "1")
        );
        assert_eq!(c.value, Some(json!({"name": "Alice Smith"})));
        assert_eq!(change("update  t  k   7").value, Some(json!(7)));
        let c = change("delete t k");
        assert_eq!((c.operation, c.value), (Operation::Delete, None));
        let c = change(
            r#"{"type":"t","key":"k","value":1,"headers":{"operation":"update","txid":"x"}}"#,
        );
        assert_eq!(c.txid.as_deref(), Some("x"));
        assert_eq!(
            parse_line("reset 0_5").unwrap(),
            Line::Message(StateMessage::Control(Control::new(
                ControlKind::Reset,
                Some(Offset::parse("0_5").unwrap())
            )))
        );
        assert!(matches!(
            parse_line("snapshot-start").unwrap(),
            Line::Message(StateMessage::Control(_))
        ));
        assert_eq!(
            parse_line("begin tx-1").unwrap(),
            Line::Begin("tx-1".into())
        );
        assert_eq!(parse_line("commit").unwrap(), Line::Commit);
        for (bad, needle) in [
            ("insert t", "needs TYPE and KEY"),
            ("insert t k", "needs a JSON value"),
            ("insert t k {", "not one JSON value"),
            ("delete t k v", "unexpected \"v\""),
            ("upsert t k 1", "unknown command \"upsert\""),
            ("begin", "needs a transaction id"),
            ("commit now", "unexpected"),
            ("reset a&b", "not a valid offset"),
            (
                r#"{"type":"t","key":"k","headers":{"operation":"insert"}}"#,
                "`value`",
            ),
        ] {
            let e = parse_line(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn state_and_changes_print_one_line_each() {
        let state = BTreeMap::from([(
            "user".to_owned(),
            BTreeMap::from([
                ("1".to_owned(), json!({"n": "A"})),
                ("2".to_owned(), json!("x\ny")),
            ]),
        )]);
        let mut buf = Vec::new();
        format_state(&mut buf, &state, false);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "user/1\t{\"n\":\"A\"}\nuser/2\t\"x\\ny\"\n"
        );
        let mut buf = Vec::new();
        format_state(&mut buf, &state, true);
        let v: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v, json!({"user": {"1": {"n": "A"}, "2": "x\ny"}}));

        let put = StoreOp::Put {
            entity_type: "user".into(),
            key: "1".into(),
            value: json!({"n": 1}),
            operation: Operation::Update,
            txid: None,
        };
        let del = StoreOp::Delete {
            entity_type: "order".into(),
            key: "9".into(),
            txid: None,
        };
        let mut buf = Vec::new();
        for op in [&put, &del, &StoreOp::Clear] {
            format_applied(&mut buf, op, None, false);
        }
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "update\tuser/1\t{\"n\":1}\ndelete\torder/9\nreset\n"
        );
        let mut buf = Vec::new();
        for op in [&put, &del, &StoreOp::Clear] {
            format_applied(&mut buf, op, Some("user"), true);
        }
        let lines: Vec<Value> = String::from_utf8(buf)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines,
            vec![
                json!({"op": "update", "type": "user", "key": "1", "value": {"n": 1}}),
                json!({"op": "reset"}),
            ]
        );
    }
}
