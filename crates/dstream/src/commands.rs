//! The commands, each a thin layer over the public client API.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use clap::CommandFactory;
use durable_streams_client::subscription::Subscriptions;
use durable_streams_client::{
    Client, CreateOptions, CreateResult, ErrorKind, ForkOptions, LiveMode, Offset, Stream,
    StreamInfo,
};
use futures::StreamExt;
use serde_json::json;
use serde_json::value::RawValue;

use crate::cli::{
    AppendArgs, Cli, CloseArgs, Command, CreateArgs, ForkArgs, NameArg, OutputFormat,
};
use crate::util::{self, CliError, exit};

/// Everything a command needs: the client, the server base and the output format.
#[derive(Debug)]
pub struct Ctx {
    client: Client,
    base: String,
    pub output: OutputFormat,
}

impl Ctx {
    fn new(cli: &Cli) -> Result<Ctx, CliError> {
        util::register_input(&cli.url);
        let mut builder =
            Client::builder().user_agent(concat!("dstream/", env!("CARGO_PKG_VERSION")));
        let max_response_bytes =
            usize::try_from(cli.max_response_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        builder = builder.max_response_bytes(max_response_bytes);
        for (name, value) in &cli.headers {
            builder = builder.default_header(name, value);
        }
        if let Some(auth) = &cli.auth {
            let value = util::normalize_auth(auth).map_err(|e| CliError::new(exit::USAGE, e))?;
            builder = builder.default_header("authorization", &value);
        }
        let client = builder
            .build()
            .map_err(|e| CliError::new(exit::USAGE, format!("invalid option: {e}")))?;
        Ok(Ctx {
            client,
            base: cli.url.clone(),
            output: cli.output,
        })
    }

    /// The handle for a stream name or URL.
    pub fn stream(&self, name: &str) -> Result<Stream, CliError> {
        util::register_input(name);
        let url = util::resolve_stream_url(&self.base, name)
            .map_err(|e| CliError::new(exit::USAGE, e))?;
        util::register_input(&url);
        self.client.stream(&url).map_err(|e| {
            CliError::new(
                exit::USAGE,
                format!("invalid stream URL {:?}: {e}", util::redact_url(&url)),
            )
        })
    }

    pub fn json(&self) -> bool {
        self.output == OutputFormat::Json
    }

    /// The subscription APIs under the server's stream root.
    pub fn subscriptions(&self) -> Result<Subscriptions, CliError> {
        // The same check as for stream URLs: an http(s) base.
        util::resolve_stream_url(&self.base, "x").map_err(|e| CliError::new(exit::USAGE, e))?;
        self.client.subscriptions(&self.base).map_err(|e| {
            CliError::new(
                exit::USAGE,
                format!("invalid server URL {:?}: {e}", util::redact_url(&self.base)),
            )
        })
    }
}

/// Error mapper for library errors during `op` on `name`.
pub fn api(op: &'static str, name: &str) -> impl Fn(durable_streams_client::Error) -> CliError {
    let context = format!("{op} {name}");
    move |e| CliError::api(&context, &e)
}

/// Write one line to stdout.
pub fn println_out(line: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout();
    out.write_all(line.as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| CliError::io("stdout", &e))
}

/// Run the parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Completions(args) = &cli.command {
        let mut cmd = Cli::command();
        let mut out = std::io::stdout();
        clap_complete::generate(args.shell, &mut cmd, "dstream", &mut out);
        return out.flush().map_err(|e| CliError::io("stdout", &e));
    }
    #[cfg(feature = "bench")]
    if let Command::Bench(args) = cli.command {
        return crate::bench::run(args).await;
    }
    let ctx = Ctx::new(&cli)?;
    match cli.command {
        Command::Create(args) => create(&ctx, args).await,
        Command::Append(args) => append(&ctx, args).await,
        Command::Read(args) => read(&ctx, &args.name, args.from, LiveMode::Off).await,
        Command::Tail(args) => read(&ctx, &args.name, args.from, args.live.into()).await,
        Command::Head(NameArg { name }) => head(&ctx, &name).await,
        Command::Close(args) => close(&ctx, args).await,
        Command::Delete(NameArg { name }) => delete(&ctx, &name).await,
        Command::Fork(args) => fork(&ctx, args).await,
        Command::Produce(args) => crate::produce::produce(&ctx, args).await,
        Command::Subscription(args) => crate::subscription::run(&ctx, args.command).await,
        Command::State(args) => crate::state::run(&ctx, args.command).await,
        Command::Top(args) => crate::top::run(&ctx, args).await,
        Command::Completions(_) => Ok(()),
        #[cfg(feature = "bench")]
        Command::Bench(_) => Ok(()),
    }
}

fn offset_json(offset: Option<&Offset>) -> serde_json::Value {
    offset.map_or(serde_json::Value::Null, |o| json!(o.as_str()))
}

fn print_created(
    ctx: &Ctx,
    stream: &Stream,
    r: &CreateResult,
    verb: &str,
    extra: Option<(&str, &str)>,
) -> Result<(), CliError> {
    if ctx.json() {
        let mut obj = json!({
            "url": util::redact_url(stream.url().as_str()),
            "created": r.created,
            "content_type": r.content_type,
            "next_offset": offset_json(r.next_offset.as_ref()),
            "closed": r.closed,
        });
        if let Some((k, v)) = extra {
            obj[k] = json!(v);
        }
        return println_out(&obj.to_string());
    }
    let what = if r.created {
        verb
    } else {
        "exists (same configuration)"
    };
    let mut details = Vec::new();
    if let Some((k, v)) = extra {
        details.push(format!("{k} {v}"));
    }
    if let Some(ct) = &r.content_type {
        details.push(format!("content-type {ct}"));
    }
    if let Some(o) = &r.next_offset {
        details.push(format!("next offset {o}"));
    }
    if r.closed {
        details.push("closed".into());
    }
    println_out(&format!(
        "{what} {} ({})",
        util::redact_url(stream.url().as_str()),
        details.join(", ")
    ))
}

async fn create(ctx: &Ctx, args: CreateArgs) -> Result<(), CliError> {
    let stream = ctx.stream(&args.name)?;
    let mut options = if args.json {
        CreateOptions::json()
    } else {
        CreateOptions::new()
    };
    if let Some(ct) = args.content_type {
        options = options.content_type(ct);
    }
    if let Some(secs) = args.ttl {
        options = options.ttl(Duration::from_secs(secs));
    }
    if let Some(at) = args.expires_at {
        options = options.expires_at(at);
    }
    if args.closed {
        options = options.closed(true);
    }
    let r = stream
        .create_with(options)
        .await
        .map_err(api("create", &args.name))?;
    print_created(ctx, &stream, &r, "created", None)
}

async fn fork(ctx: &Ctx, args: ForkArgs) -> Result<(), CliError> {
    let stream = ctx.stream(&args.name)?;
    let source = ctx.stream(&args.source)?;
    let (a, b) = (stream.url(), source.url());
    if (a.scheme(), a.host_str(), a.port_or_known_default())
        != (b.scheme(), b.host_str(), b.port_or_known_default())
    {
        return Err(CliError::new(
            exit::USAGE,
            format!(
                "fork {}: the source {} must be on the same server",
                args.name, args.source
            ),
        ));
    }
    let mut fork = ForkOptions::from_stream(&source);
    if let Some(offset) = args.offset {
        fork = fork.offset(offset);
    }
    if let Some(sub) = args.sub_offset {
        fork = fork.sub_offset(sub);
    }
    let r = stream
        .fork(fork, CreateOptions::new())
        .await
        .map_err(api("fork", &args.name))?;
    print_created(
        ctx,
        &stream,
        &r,
        "forked",
        Some(("from", source.url().path())),
    )
}

async fn head(ctx: &Ctx, name: &str) -> Result<(), CliError> {
    let stream = ctx.stream(name)?;
    let info = stream.head().await.map_err(api("head", name))?;
    print_info(ctx, &stream, &info)
}

fn print_info(ctx: &Ctx, stream: &Stream, info: &StreamInfo) -> Result<(), CliError> {
    if ctx.json() {
        let obj = json!({
            "url": util::redact_url(stream.url().as_str()),
            "content_type": info.content_type,
            "next_offset": info.next_offset.as_str(),
            "closed": info.closed,
            "ttl_secs": info.ttl.map(|d| d.as_secs()),
            "expires_at": info.expires_at_raw,
            "etag": info.etag,
        });
        return println_out(&obj.to_string());
    }
    let mut lines = vec![
        format!("url:          {}", util::redact_url(stream.url().as_str())),
        format!(
            "content-type: {}",
            info.content_type.as_deref().unwrap_or("(none)")
        ),
        format!("next-offset:  {}", info.next_offset),
        format!("closed:       {}", if info.closed { "yes" } else { "no" }),
    ];
    if let Some(ttl) = info.ttl {
        lines.push(format!("ttl:          {}s", ttl.as_secs()));
    }
    if let Some(at) = &info.expires_at_raw {
        lines.push(format!("expires-at:   {at}"));
    }
    if let Some(etag) = &info.etag {
        lines.push(format!("etag:         {etag}"));
    }
    println_out(&lines.join("\n"))
}

async fn delete(ctx: &Ctx, name: &str) -> Result<(), CliError> {
    let stream = ctx.stream(name)?;
    stream.delete().await.map_err(api("delete", name))?;
    if ctx.json() {
        println_out(
            &json!({"url": util::redact_url(stream.url().as_str()), "deleted": true}).to_string(),
        )
    } else {
        println_out(&format!(
            "deleted {}",
            util::redact_url(stream.url().as_str())
        ))
    }
}

async fn close(ctx: &Ctx, args: CloseArgs) -> Result<(), CliError> {
    let name = &args.name;
    let stream = ctx.stream(name)?;
    let result = match args.data {
        None => stream.close().await,
        Some(data) => {
            let info = stream.head().await.map_err(api("close", name))?;
            if util::is_json_content_type(info.content_type.as_deref()) {
                let value = parse_json_value(&data).map_err(|e| {
                    input_error("close", name, &format!("--data is not one JSON value: {e}"))
                })?;
                stream.close_with_json(&value).await
            } else {
                stream.close_with(data.into_bytes()).await
            }
        }
    };
    let r = result.map_err(api("close", name))?;
    if ctx.json() {
        let obj = json!({
            "url": util::redact_url(stream.url().as_str()),
            "closed": true,
            "final_offset": offset_json(r.final_offset.as_ref()),
        });
        return println_out(&obj.to_string());
    }
    match &r.final_offset {
        Some(o) => println_out(&format!(
            "closed {} (final offset {o})",
            util::redact_url(stream.url().as_str())
        )),
        None => println_out(&format!(
            "closed {}",
            util::redact_url(stream.url().as_str())
        )),
    }
}

/// Parse exactly one JSON value, keeping its text.
pub fn parse_json_value(text: &str) -> Result<Box<RawValue>, serde_json::Error> {
    serde_json::from_str::<Box<RawValue>>(text.trim())
}

/// Invalid local input for a stream (exit code 8).
pub fn input_error(op: &str, name: &str, message: &str) -> CliError {
    CliError::new(exit::BAD_REQUEST, format!("{op} {name}: {message}"))
}

async fn read_input(path: Option<&Path>) -> Result<Vec<u8>, CliError> {
    match path {
        Some(p) => tokio::fs::read(p)
            .await
            .map_err(|e| CliError::io(&format!("cannot read {}", p.display()), &e)),
        None => {
            use tokio::io::AsyncReadExt;
            stdin_hint();
            let mut buf = Vec::new();
            tokio::io::stdin()
                .read_to_end(&mut buf)
                .await
                .map_err(|e| CliError::io("cannot read stdin", &e))?;
            Ok(buf)
        }
    }
}

/// Tell a person at a terminal that input is expected on stdin.
pub fn stdin_hint() {
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprintln!("dstream: reading from stdin (end with ctrl-d)");
    }
}

/// Non-empty lines (without `\n` / `\r\n`) with their 1-based numbers.
fn lines_of(data: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    data.split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
}

async fn append(ctx: &Ctx, args: AppendArgs) -> Result<(), CliError> {
    let name = &args.name;
    let stream = ctx.stream(name)?;
    let json_mode = args.json || {
        let info = head_explained(&stream, "append", name).await?;
        util::is_json_content_type(info.content_type.as_deref())
    };
    // (label, bytes) for every input, in order.
    let mut inputs: Vec<(String, Bytes)> = Vec::new();
    for (i, d) in args.data.iter().enumerate() {
        inputs.push((format!("argument {}", i + 1), Bytes::from(d.clone())));
    }
    for f in &args.files {
        let data = read_input(Some(f)).await?;
        inputs.push((f.display().to_string(), Bytes::from(data)));
    }
    let from_args = !args.data.is_empty();
    if inputs.is_empty() {
        inputs.push(("stdin".into(), Bytes::from(read_input(None).await?)));
    }

    let (messages, bytes, result) = if json_mode {
        let mut values: Vec<Box<RawValue>> = Vec::new();
        for (idx, (label, data)) in inputs.iter().enumerate() {
            if from_args && idx < args.data.len() {
                let value = parse_json_value(&args.data[idx]).map_err(|e| {
                    input_error(
                        "append",
                        name,
                        &format!("{label} is not one JSON value: {e}"),
                    )
                })?;
                values.push(value);
                continue;
            }
            for (n, line) in lines_of(data) {
                let value = std::str::from_utf8(line)
                    .map_err(|e| e.to_string())
                    .and_then(|s| parse_json_value(s).map_err(|e| e.to_string()))
                    .map_err(|e| {
                        input_error(
                            "append",
                            name,
                            &format!("{label} line {n} is not one JSON value: {e}"),
                        )
                    })?;
                values.push(value);
            }
        }
        if values.is_empty() {
            return Err(input_error(
                "append",
                name,
                "nothing to append (no JSON values in the input)",
            ));
        }
        let bytes: usize = values.iter().map(|v| v.get().len()).sum();
        let r = stream
            .append_json_batch(values.iter())
            .await
            .map_err(api("append", name))?;
        (values.len(), bytes, r)
    } else {
        if let Some((label, _)) = inputs.iter().find(|(_, d)| d.is_empty()) {
            return Err(input_error(
                "append",
                name,
                &format!("nothing to append ({label} is empty)"),
            ));
        }
        let mut last = None;
        let mut bytes = 0;
        for (_, data) in &inputs {
            bytes += data.len();
            last = Some(
                stream
                    .append(data.clone())
                    .await
                    .map_err(api("append", name))?,
            );
        }
        let r = last.expect("at least one input");
        (inputs.len(), bytes, r)
    };
    if ctx.json() {
        let obj = json!({
            "url": util::redact_url(stream.url().as_str()),
            "messages": messages,
            "bytes": bytes,
            "next_offset": result.next_offset.as_ref().map(|o| o.as_str()),
            "closed": result.closed,
        });
        return println_out(&obj.to_string());
    }
    let plural = if messages == 1 { "" } else { "s" };
    // A byte stream keeps no boundaries: its inputs are not messages.
    let unit = if json_mode { "message" } else { "input" };
    println_out(&format!(
        "appended {messages} {unit}{plural} ({bytes} bytes) to {} (next offset {})",
        util::redact_url(stream.url().as_str()),
        result
            .next_offset
            .as_ref()
            .map_or("unknown".to_owned(), |o| o.to_string())
    ))
}

/// Where read output goes: stdout, with broken pipes ending quietly.
struct Sink {
    out: std::io::Stdout,
    buf: Vec<u8>,
}

impl Sink {
    fn new() -> Sink {
        Sink {
            out: std::io::stdout(),
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    fn flush(&mut self) -> Result<(), CliError> {
        if !self.buf.is_empty() {
            self.out
                .write_all(&self.buf)
                .map_err(|e| CliError::io("stdout", &e))?;
            self.buf.clear();
        }
        self.out.flush().map_err(|e| CliError::io("stdout", &e))
    }
}

pub fn push_json_line(buf: &mut Vec<u8>, raw: &RawValue) {
    let text = raw.get();
    if text.contains('\n') {
        // Keep one message per line.
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) => buf.extend_from_slice(v.to_string().as_bytes()),
            Err(_) => buf.extend_from_slice(text.replace('\n', " ").as_bytes()),
        }
    } else {
        buf.extend_from_slice(text.as_bytes());
    }
}

/// `read` (live off) and `tail` (live): write the stream to stdout.
/// HEAD the stream. A HEAD answer has no body, so when it says the stream
/// is missing (or gone) one GET fetches the server's explanation, which the
/// error then carries as other commands' errors do.
pub async fn head_explained(stream: &Stream, op: &str, name: &str) -> Result<StreamInfo, CliError> {
    let err = match stream.head().await {
        Ok(info) => return Ok(info),
        Err(err) => err,
    };
    let missing = matches!(err.kind(), ErrorKind::NotFound | ErrorKind::Gone);
    if missing && err.message().is_none() {
        let mut probe = stream.read().live(LiveMode::Off).bytes();
        if let Some(Err(explained)) = probe.next().await
            && explained.kind() == err.kind()
        {
            return Err(CliError::api(&format!("{op} {name}"), &explained));
        }
    }
    Err(CliError::api(&format!("{op} {name}"), &err))
}

async fn read(ctx: &Ctx, name: &str, from: Offset, live: LiveMode) -> Result<(), CliError> {
    let op = if live.is_live() { "tail" } else { "read" };
    let stream = ctx.stream(name)?;
    let info = head_explained(&stream, op, name).await?;
    let is_json = util::is_json_content_type(info.content_type.as_deref());
    let reader = stream.read().offset(from).live(live);
    let mut sink = Sink::new();
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    let mut closed_at = None;
    let mut interrupted = false;

    if is_json {
        let mut batches = reader.json::<Box<RawValue>>();
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
            let batch = batch.map_err(api(op, name))?;
            for item in &batch.items {
                if ctx.json() {
                    sink.buf.extend_from_slice(b"{\"offset\":");
                    sink.buf
                        .extend_from_slice(json!(batch.offset.as_str()).to_string().as_bytes());
                    sink.buf.extend_from_slice(b",\"value\":");
                    push_json_line(&mut sink.buf, item);
                    sink.buf.extend_from_slice(b"}\n");
                } else {
                    push_json_line(&mut sink.buf, item);
                    sink.buf.push(b'\n');
                }
            }
            if batch.closed {
                closed_at = Some(batch.offset.clone());
            }
            if live.is_live() || sink.buf.len() >= 64 * 1024 {
                sink.flush()?;
            }
        }
    } else {
        let mut chunks = reader.bytes();
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut interrupt => {
                    interrupted = true;
                    break;
                }
                next = chunks.next() => next,
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(api(op, name))?;
            if chunk.closed {
                closed_at = Some(chunk.offset.clone());
            }
            if chunk.data.is_empty() {
                continue;
            }
            if ctx.json() {
                let mut obj = json!({
                    "offset": chunk.offset.as_str(),
                    "bytes": chunk.data.len(),
                });
                match std::str::from_utf8(&chunk.data) {
                    Ok(text) => obj["data"] = json!(text),
                    Err(_) => {
                        obj["data_base64"] =
                            json!(base64::engine::general_purpose::STANDARD.encode(&chunk.data));
                    }
                }
                sink.buf.extend_from_slice(obj.to_string().as_bytes());
                sink.buf.push(b'\n');
            } else {
                sink.buf.extend_from_slice(&chunk.data);
            }
            sink.flush()?;
        }
    }
    sink.flush()?;
    if interrupted && !live.is_live() {
        return Err(CliError::new(
            exit::INTERRUPTED,
            format!("{op} {name}: interrupted"),
        ));
    }
    if let Some(offset) = closed_at
        && live.is_live()
        && std::io::stderr().is_terminal()
    {
        eprintln!("dstream: {name} is closed (final offset {offset})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_skip_blanks_and_strip_crlf() {
        let data = b"a\r\n\n  \nb\nc";
        let got: Vec<(usize, &[u8])> = lines_of(data).collect();
        assert_eq!(got, vec![(1, &b"a"[..]), (4, &b"b"[..]), (5, &b"c"[..])]);
    }

    #[test]
    fn json_lines_stay_on_one_line() {
        let raw = parse_json_value("{\"a\":\n [1, 2]}").unwrap();
        let mut buf = Vec::new();
        push_json_line(&mut buf, &raw);
        assert_eq!(buf, b"{\"a\":[1,2]}");
        let raw = parse_json_value(" [1,2] ").unwrap();
        assert_eq!(raw.get(), "[1,2]");
        assert!(parse_json_value("1 2").is_err());
    }
}
