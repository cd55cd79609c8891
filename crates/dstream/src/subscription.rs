//! `subscription` (alias `sub`): manage server-side subscriptions and run a
//! pull-wake worker that prints what it is handed.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use durable_streams_client::consumer::{Batch, ErrorAction, Flow, Handler, Raw};
use durable_streams_client::subscription::{
    LinkType, Subscription, SubscriptionSpec, SubscriptionStatus, SubscriptionType, Subscriptions,
    Worker,
};
use durable_streams_client::{
    CreateOptions, Error, ErrorKind, Offset, Result as ApiResult, SubscriptionErrorCode,
};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::cli::{SubAddStreamsArgs, SubCommand, SubCreateArgs, SubRemoveStreamArgs, SubWorkArgs};
use crate::commands::{Ctx, println_out, push_json_line};
use crate::util::{self, CliError, exit};

/// Run a `subscription` subcommand.
pub async fn run(ctx: &Ctx, command: SubCommand) -> Result<(), CliError> {
    match command {
        SubCommand::Create(args) => create(ctx, args).await,
        SubCommand::Get(args) => get(ctx, &args.id).await,
        SubCommand::Delete(args) => delete(ctx, &args.id).await,
        SubCommand::AddStreams(args) => add_streams(ctx, args).await,
        SubCommand::RemoveStream(args) => remove_stream(ctx, args).await,
        SubCommand::Work(args) => work(ctx, args).await,
    }
}

/// Error mapper for library errors during `context` (e.g. `sub get orders`):
/// subscription refusals and a server without subscriptions get their own
/// wording; everything else is worded as for streams.
fn sub_api(context: impl Into<String>) -> impl Fn(Error) -> CliError {
    let context = context.into();
    move |e| sub_error(&context, &e)
}

fn sub_error(context: &str, e: &Error) -> CliError {
    let code = util::exit_code(e.kind());
    let host = e.url().and_then(url_host);
    match e.kind() {
        ErrorKind::Unsupported { .. } => CliError::new(
            code,
            format!(
                "{context}: this server{} does not support subscriptions: its `__ds` \
                 subscription routes answer like ordinary stream paths (PROTOCOL.md sections 6-7; \
                 the Node reference server implements them)",
                host.map(|h| format!(" ({h})")).unwrap_or_default()
            ),
        ),
        ErrorKind::Subscription { code: sub } => {
            let (what, hint) = match sub {
                SubscriptionErrorCode::NotFound => ("no such subscription", ""),
                SubscriptionErrorCode::AlreadyExists => (
                    "a subscription with this id exists with another configuration",
                    "; repeat its exact options, or delete it first",
                ),
                SubscriptionErrorCode::WebhookUrlRejected => {
                    ("the server rejected the webhook URL", "")
                }
                SubscriptionErrorCode::TokenInvalid | SubscriptionErrorCode::TokenExpired => {
                    ("the server did not accept the claim token", "")
                }
                SubscriptionErrorCode::Fenced => ("fenced: the wake is no longer current", ""),
                _ => ("the server refused the request", ""),
            };
            let mut origin = sub.to_string();
            if let Some(s) = e.status() {
                origin.push_str(&format!(", HTTP {s}"));
            }
            if let Some(h) = host {
                origin.push_str(&format!(" from {h}"));
            }
            let detail = e
                .message()
                .filter(|m| *m != sub.as_str())
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            CliError::new(code, format!("{context}: {what} ({origin}){detail}{hint}"))
        }
        _ => CliError::api(context, e),
    }
}

/// `host:port` of a URL, for messages (no credentials).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    (!host.is_empty()).then(|| host.to_owned())
}

fn kind_str(kind: SubscriptionType) -> &'static str {
    match kind {
        SubscriptionType::PullWake => "pull-wake",
        SubscriptionType::Webhook => "webhook",
        _ => "other",
    }
}

fn status_str(status: SubscriptionStatus) -> &'static str {
    match status {
        SubscriptionStatus::Active => "active",
        SubscriptionStatus::Failed => "failed",
        _ => "other",
    }
}

fn link_str(link: LinkType) -> &'static str {
    match link {
        LinkType::Glob => "glob",
        LinkType::Explicit => "explicit",
        _ => "other",
    }
}

/// A subscription as one JSON object (the server's shape).
fn subscription_json(s: &Subscription) -> Value {
    json!({
        "id": s.id,
        "type": kind_str(s.kind),
        "pattern": s.pattern,
        "wake_stream": s.wake_stream,
        "webhook": s.webhook.as_ref().map(|w| json!({
            "url": w.url,
            "signing": w.signing.as_ref().map(|g| json!({
                "alg": g.alg, "kid": g.kid, "jwks_url": g.jwks_url,
            })),
        })),
        "lease_ttl_ms": u64::try_from(s.lease_ttl.as_millis()).unwrap_or(u64::MAX),
        "status": status_str(s.status),
        "description": s.description,
        "created_at": s.created_at,
        "streams": s.streams.iter().map(|l| json!({
            "path": l.path,
            "link_type": link_str(l.link_type),
            "acked_offset": l.acked_offset.as_str(),
        })).collect::<Vec<_>>(),
    })
}

/// `pull-wake via W, pattern P, N streams linked, lease 30s`.
fn summary(s: &Subscription) -> String {
    let mut parts = Vec::new();
    match (&s.wake_stream, &s.webhook) {
        (Some(w), _) => parts.push(format!("{} via {w}", kind_str(s.kind))),
        (None, Some(h)) => parts.push(format!(
            "{} to {}",
            kind_str(s.kind),
            util::redact_url(&h.url)
        )),
        (None, None) => parts.push(kind_str(s.kind).to_owned()),
    }
    if let Some(p) = &s.pattern {
        parts.push(format!("pattern {p}"));
    }
    let n = s.streams.len();
    parts.push(format!(
        "{n} stream{} linked",
        if n == 1 { "" } else { "s" }
    ));
    parts.push(format!("lease {}", humantime::format_duration(s.lease_ttl)));
    parts.join(", ")
}

async fn create(ctx: &Ctx, args: SubCreateArgs) -> Result<(), CliError> {
    let id = &args.id;
    let context = format!("sub create {id}");
    let subs = ctx.subscriptions()?;
    // Find out first whether the server has subscriptions at all, so that
    // nothing (no wake stream) is created on one that does not.
    match subs.get(id).await {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::Subscription {
                    code: SubscriptionErrorCode::NotFound
                }
            ) => {}
        Err(e) => return Err(sub_error(&context, &e)),
    }
    let mut spec = match (&args.pull_wake, &args.webhook) {
        (Some(wake), _) => SubscriptionSpec::pull_wake(wake),
        (None, Some(url)) => SubscriptionSpec::webhook(url),
        (None, None) => {
            return Err(CliError::new(
                exit::USAGE,
                format!("{context}: --pull-wake or --webhook is required"),
            ));
        }
    };
    if let Some(p) = &args.pattern {
        spec = spec.pattern(p);
    }
    spec = spec.streams(args.streams.iter().cloned());
    if let Some(ttl) = args.lease_ttl {
        spec = spec.lease_ttl(ttl);
    }
    if let Some(d) = &args.description {
        spec = spec.description(d);
    }
    let wake_created = match &args.pull_wake {
        Some(wake) => ensure_wake_stream(&subs, wake, &context).await?,
        None => false,
    };
    let confirmed = subs.create(id, &spec).await.map_err(sub_api(&context))?;
    let s = &confirmed.subscription;
    if ctx.json() {
        let mut obj = subscription_json(s);
        obj["created"] = json!(confirmed.created);
        if args.pull_wake.is_some() {
            obj["wake_stream_created"] = json!(wake_created);
        }
        return println_out(&obj.to_string());
    }
    let verb = if confirmed.created {
        "created"
    } else {
        "reconfirmed (identical configuration)"
    };
    let mut details = summary(s);
    if wake_created && let Some(w) = &s.wake_stream {
        details.push_str(&format!("; created the wake stream {w}"));
    }
    println_out(&format!("{verb} subscription {} ({details})", s.id))
}

/// Create the wake stream (JSON) when it does not exist; `true` if created.
async fn ensure_wake_stream(
    subs: &Subscriptions,
    path: &str,
    context: &str,
) -> Result<bool, CliError> {
    let stream = subs.stream(path).map_err(sub_api(context))?;
    match stream.head().await {
        Ok(_) => Ok(false),
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Gone) => {
            let r = stream
                .create_with(CreateOptions::json())
                .await
                .map_err(sub_api(format!(
                    "{context}: creating the wake stream {path}"
                )))?;
            Ok(r.created)
        }
        Err(e) => Err(sub_error(
            &format!("{context}: checking the wake stream {path}"),
            &e,
        )),
    }
}

async fn get(ctx: &Ctx, id: &str) -> Result<(), CliError> {
    let subs = ctx.subscriptions()?;
    let s = subs
        .get(id)
        .await
        .map_err(sub_api(format!("sub get {id}")))?;
    if ctx.json() {
        return println_out(&subscription_json(&s).to_string());
    }
    let mut lines = vec![
        format!("id:           {}", s.id),
        format!("type:         {}", kind_str(s.kind)),
    ];
    if let Some(w) = &s.wake_stream {
        lines.push(format!("wake-stream:  {w}"));
    }
    if let Some(h) = &s.webhook {
        lines.push(format!("webhook:      {}", util::redact_url(&h.url)));
    }
    if let Some(p) = &s.pattern {
        lines.push(format!("pattern:      {p}"));
    }
    lines.push(format!(
        "lease-ttl:    {}",
        humantime::format_duration(s.lease_ttl)
    ));
    lines.push(format!("status:       {}", status_str(s.status)));
    if let Some(d) = &s.description {
        lines.push(format!("description:  {d}"));
    }
    if let Some(c) = &s.created_at {
        lines.push(format!("created-at:   {c}"));
    }
    lines.push(format!("streams:      {}", s.streams.len()));
    let width = s.streams.iter().map(|l| l.path.len()).max().unwrap_or(0);
    for l in &s.streams {
        lines.push(format!(
            "  {:<width$}  {:<8}  acked {}",
            l.path,
            link_str(l.link_type),
            l.acked_offset
        ));
    }
    println_out(&lines.join("\n"))
}

async fn delete(ctx: &Ctx, id: &str) -> Result<(), CliError> {
    let subs = ctx.subscriptions()?;
    subs.delete(id)
        .await
        .map_err(sub_api(format!("sub delete {id}")))?;
    if ctx.json() {
        println_out(&json!({"id": id, "deleted": true}).to_string())
    } else {
        println_out(&format!("deleted subscription {id}"))
    }
}

async fn add_streams(ctx: &Ctx, args: SubAddStreamsArgs) -> Result<(), CliError> {
    let id = &args.id;
    let subs = ctx.subscriptions()?;
    subs.add_streams(id, &args.paths)
        .await
        .map_err(sub_api(format!("sub add-streams {id}")))?;
    if ctx.json() {
        return println_out(&json!({"id": id, "added": args.paths}).to_string());
    }
    let n = args.paths.len();
    println_out(&format!(
        "linked {n} stream{} to subscription {id}: {}",
        if n == 1 { "" } else { "s" },
        args.paths.join(", ")
    ))
}

async fn remove_stream(ctx: &Ctx, args: SubRemoveStreamArgs) -> Result<(), CliError> {
    let (id, path) = (&args.id, &args.path);
    let subs = ctx.subscriptions()?;
    subs.remove_stream(id, path)
        .await
        .map_err(sub_api(format!("sub remove-stream {id}")))?;
    if ctx.json() {
        return println_out(&json!({"id": id, "removed": path}).to_string());
    }
    println_out(&format!(
        "removed the explicit link of {path} from subscription {id}"
    ))
}

/// The wake stream all `ids` share (checked against `given`).
async fn resolve_wake_stream(
    subs: &Subscriptions,
    ids: &[String],
    given: Option<&str>,
    context: &str,
) -> Result<String, CliError> {
    let mut wake: Option<(String, String)> = None; // (wake stream, first id using it)
    for id in ids {
        let s = subs
            .get(id)
            .await
            .map_err(sub_api(format!("sub work {id}")))?;
        let Some(w) = s.wake_stream else {
            return Err(CliError::new(
                exit::USAGE,
                format!(
                    "{context}: subscription {id} is a {} subscription; `work` serves pull-wake subscriptions",
                    kind_str(s.kind)
                ),
            ));
        };
        if let Some(given) = given
            && given.trim_matches('/') != w
        {
            return Err(CliError::new(
                exit::USAGE,
                format!(
                    "{context}: subscription {id} announces its work on the wake stream {w}, not {given}"
                ),
            ));
        }
        match &wake {
            Some((prev, prev_id)) if *prev != w => {
                return Err(CliError::new(
                    exit::USAGE,
                    format!(
                        "{context}: subscriptions {prev_id} and {id} use different wake streams ({prev}, {w}); run one worker per wake stream"
                    ),
                ));
            }
            Some(_) => {}
            None => wake = Some((w, id.clone())),
        }
    }
    wake.map(|(w, _)| w)
        .ok_or_else(|| CliError::new(exit::USAGE, format!("{context}: no subscription ids given")))
}

/// What the printer did, shared with the command.
#[derive(Debug, Default)]
struct Counts {
    messages: AtomicU64,
    batches: AtomicU64,
}

/// The pieces of one large JSON response (the worker hands a response over
/// 1 MiB in pieces; only the last one has an exact offset).
struct Partial {
    stream: Arc<str>,
    /// Where the response started (the pieces' offset).
    start: Offset,
    pieces: Vec<Bytes>,
}

/// The `work` handler: writes each batch to stdout and flushes before
/// returning, so the worker acks only what was written.
///
/// It reads [`Raw`] bytes because one worker may serve JSON and byte streams
/// alike; whether a stream is JSON comes from its content type (one HEAD per
/// stream, cached: a stream's content type never changes). A JSON stream
/// read raw arrives as the server's JSON array per response, which is split
/// into messages here (pieces of a large response are kept until its last,
/// exact piece).
struct Printer {
    subs: Subscriptions,
    json_output: bool,
    out: tokio::io::Stdout,
    json_streams: HashMap<Arc<str>, bool>,
    partial: Option<Partial>,
    counts: Arc<Counts>,
    output_error: Arc<Mutex<Option<std::io::Error>>>,
}

impl Printer {
    async fn is_json(&mut self, stream: &Arc<str>) -> ApiResult<bool> {
        if let Some(&json) = self.json_streams.get(stream) {
            return Ok(json);
        }
        let handle = self.subs.stream(stream)?;
        match handle.head().await {
            Ok(info) => {
                let json = util::is_json_content_type(info.content_type.as_deref());
                self.json_streams.insert(Arc::clone(stream), json);
                Ok(json)
            }
            // Deleted since the read: print what was read as bytes.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Gone) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The whole JSON response body once its last piece is here.
    fn assemble(&mut self, batch: &Batch<Bytes>, data: &Bytes) -> Option<(Bytes, bool)> {
        if !batch.exact {
            match &mut self.partial {
                // A continuation of the response being collected. A piece
                // equal to its first one is the same response read again
                // (after a lost lease): start over.
                Some(p)
                    if p.stream == batch.stream
                        && p.start == batch.offset
                        && p.pieces.first() != Some(data) =>
                {
                    p.pieces.push(data.clone());
                }
                _ => {
                    self.partial = Some(Partial {
                        stream: Arc::clone(&batch.stream),
                        start: batch.offset.clone(),
                        pieces: vec![data.clone()],
                    });
                }
            }
            return None;
        }
        match self.partial.take() {
            Some(p) if p.stream == batch.stream => {
                let mut body =
                    Vec::with_capacity(p.pieces.iter().map(Bytes::len).sum::<usize>() + data.len());
                for piece in &p.pieces {
                    body.extend_from_slice(piece);
                }
                body.extend_from_slice(data);
                Some((Bytes::from(body), true))
            }
            _ => Some((data.clone(), false)),
        }
    }

    async fn write(&mut self, buf: &[u8]) -> ApiResult<()> {
        let written = async {
            self.out.write_all(buf).await?;
            self.out.flush().await
        }
        .await;
        if let Err(e) = written {
            let message = format!("cannot write to stdout: {e}");
            *self.output_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            return Err(Error::handler(message));
        }
        Ok(())
    }
}

/// The messages of a JSON response body (a JSON array).
fn json_messages(body: &[u8]) -> std::result::Result<Vec<Box<RawValue>>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// One output line per JSON message.
fn format_json_messages(
    buf: &mut Vec<u8>,
    stream: &str,
    offset: &Offset,
    values: &[Box<RawValue>],
    json_output: bool,
) {
    for value in values {
        if json_output {
            buf.extend_from_slice(b"{\"stream\":");
            buf.extend_from_slice(json!(stream).to_string().as_bytes());
            buf.extend_from_slice(b",\"offset\":");
            buf.extend_from_slice(json!(offset.as_str()).to_string().as_bytes());
            buf.extend_from_slice(b",\"value\":");
            push_json_line(buf, value);
            buf.extend_from_slice(b"}\n");
        } else {
            buf.extend_from_slice(stream.as_bytes());
            buf.push(b'\t');
            push_json_line(buf, value);
            buf.push(b'\n');
        }
    }
}

/// A chunk of a byte stream: one JSON object, or one line per text line.
fn format_bytes(buf: &mut Vec<u8>, stream: &str, offset: &Offset, data: &[u8], json_output: bool) {
    if json_output {
        let mut obj = json!({"stream": stream, "offset": offset.as_str(), "bytes": data.len()});
        match std::str::from_utf8(data) {
            Ok(text) => obj["data"] = json!(text),
            Err(_) => {
                obj["data_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
            }
        }
        buf.extend_from_slice(obj.to_string().as_bytes());
        buf.push(b'\n');
        return;
    }
    let text = String::from_utf8_lossy(data);
    for line in text.split_inclusive('\n') {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        buf.extend_from_slice(stream.as_bytes());
        buf.push(b'\t');
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
}

impl Handler for Printer {
    type Format = Raw;

    async fn handle_batch(&mut self, batch: &Batch<Bytes>) -> ApiResult<Flow> {
        let Some(data) = batch.items.first() else {
            return Ok(Flow::Continue);
        };
        let mut buf = Vec::with_capacity(data.len() + 256);
        let messages = if self.is_json(&batch.stream).await? {
            let Some((body, assembled)) = self.assemble(batch, data) else {
                return Ok(Flow::Continue);
            };
            let values = match json_messages(&body) {
                Ok(values) => values,
                // Left-over pieces of a response that was abandoned: the
                // last piece alone is a whole response.
                Err(_) if assembled && json_messages(data).is_ok() => {
                    json_messages(data).unwrap_or_default()
                }
                Err(e) => {
                    return Err(Error::handler(format!(
                        "the JSON stream {} sent a response that is not a JSON array: {e}",
                        batch.stream
                    )));
                }
            };
            format_json_messages(
                &mut buf,
                &batch.stream,
                &batch.offset,
                &values,
                self.json_output,
            );
            values.len()
        } else {
            format_bytes(
                &mut buf,
                &batch.stream,
                &batch.offset,
                data,
                self.json_output,
            );
            1
        };
        if !buf.is_empty() {
            self.write(&buf).await?;
        }
        self.counts
            .messages
            .fetch_add(messages as u64, Ordering::Relaxed);
        self.counts.batches.fetch_add(1, Ordering::Relaxed);
        Ok(Flow::Continue)
    }

    async fn handle_error(&mut self, error: &Error) -> ErrorAction {
        // The wake is released; its streams are read again from their acked offsets.
        self.partial = None;
        if matches!(error.kind(), ErrorKind::Handler { .. }) {
            ErrorAction::Stop
        } else {
            ErrorAction::default_for(error)
        }
    }
}

/// ctrl-c presses, as a channel (installed before the first await that
/// does I/O, so an early ctrl-c is not the default "kill the process").
async fn interrupts() -> tokio::sync::mpsc::UnboundedReceiver<()> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    tokio::task::yield_now().await;
    rx
}

async fn work(ctx: &Ctx, args: SubWorkArgs) -> Result<(), CliError> {
    let mut interrupt = interrupts().await;
    let context = format!("sub work {}", args.ids.join(" "));
    let subs = ctx.subscriptions()?;
    let wake = resolve_wake_stream(&subs, &args.ids, args.wake_stream.as_deref(), &context).await?;
    let counts = Arc::new(Counts::default());
    let output_error = Arc::new(Mutex::new(None));
    let printer = Printer {
        subs: subs.clone(),
        json_output: ctx.json(),
        out: tokio::io::stdout(),
        json_streams: HashMap::new(),
        partial: None,
        counts: Arc::clone(&counts),
        output_error: Arc::clone(&output_error),
    };
    let mut builder = Worker::builder(&subs, printer)
        .subscriptions(args.ids.iter().cloned())
        .wake_stream(&wake);
    if let Some(name) = &args.worker {
        builder = builder.name(name);
    }
    let handle = builder.start().await.map_err(sub_api(&context))?;
    let name = handle.name().to_owned();
    if std::io::stderr().is_terminal() {
        eprintln!(
            "dstream: worker {name} serving {} (wake stream {wake}); ctrl-c to stop",
            args.ids.join(", ")
        );
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let interrupted = loop {
        tokio::select! {
            Some(()) = interrupt.recv() => break true,
            _ = tick.tick() => {
                if handle.is_finished() {
                    break false;
                }
            }
        }
    };
    let result = if interrupted {
        // Graceful: finish and ack the batch in hand, release the claim.
        let shutdown = handle.shutdown();
        tokio::pin!(shutdown);
        tokio::select! {
            r = &mut shutdown => r,
            Some(()) = interrupt.recv() => {
                return Err(CliError::new(
                    exit::INTERRUPTED,
                    format!("{context}: interrupted again: stopped without releasing (the lease lapses after its TTL)"),
                ));
            }
        }
    } else {
        handle.shutdown().await
    };
    if let Some(e) = output_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        return Err(CliError::io("stdout", &e));
    }
    result.map_err(sub_api(&context))?;
    eprintln!(
        "dstream: worker {name} stopped after {} messages in {} batches",
        counts.messages.load(Ordering::Relaxed),
        counts.batches.load(Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset() -> Offset {
        Offset::parse("0000_0042").unwrap()
    }

    #[test]
    fn json_messages_print_one_per_line() {
        let values = json_messages(b"[{\"a\":\n1}, \"s\", [1,2]]").unwrap();
        let mut buf = Vec::new();
        format_json_messages(&mut buf, "t/a", &offset(), &values, false);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "t/a\t{\"a\":1}\nt/a\t\"s\"\nt/a\t[1,2]\n"
        );
        let mut buf = Vec::new();
        format_json_messages(&mut buf, "t/a", &offset(), &values[..1], true);
        let line: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            line,
            json!({"stream": "t/a", "offset": "0000_0042", "value": {"a": 1}})
        );
    }

    #[test]
    fn bytes_print_as_lines_or_one_object() {
        let mut buf = Vec::new();
        format_bytes(&mut buf, "b", &offset(), b"one\r\ntwo\nthree", false);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "b\tone\nb\ttwo\nb\tthree\n"
        );
        let mut buf = Vec::new();
        format_bytes(&mut buf, "b", &offset(), b"hi\n", true);
        let line: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            line,
            json!({"stream": "b", "offset": "0000_0042", "bytes": 3, "data": "hi\n"})
        );
        let mut buf = Vec::new();
        format_bytes(&mut buf, "b", &offset(), &[0xff, 0x00], true);
        let line: Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(line["data_base64"], "/wA=");
        assert!(line.get("data").is_none());
    }

    #[test]
    fn subscription_json_has_the_server_shape() {
        let s: Subscription = serde_json::from_value(json!({
            "id": "s", "type": "pull-wake", "pattern": "a/*",
            "streams": [{"path": "a/b", "link_type": "glob", "acked_offset": "-1"}],
            "wake_stream": "wake/a", "lease_ttl_ms": 5000, "status": "active"
        }))
        .unwrap();
        let v = subscription_json(&s);
        assert_eq!(v["type"], "pull-wake");
        assert_eq!(v["lease_ttl_ms"], 5000);
        assert_eq!(v["streams"][0]["link_type"], "glob");
        assert_eq!(v["streams"][0]["acked_offset"], "-1");
        assert_eq!(
            summary(&s),
            "pull-wake via wake/a, pattern a/*, 1 stream linked, lease 5s"
        );
    }
}
