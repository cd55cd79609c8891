//! `produce`: bulk-load lines through the idempotent producer.

use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use durable_streams_client::{Error, Producer};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use serde_json::value::RawValue;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use crate::cli::ProduceArgs;
use crate::commands::{Ctx, api, input_error, println_out};
use crate::util::{self, CliError, exit};

/// Input read buffer.
const READ_BUFFER: usize = 1 << 20;
/// Progress is redrawn at most every this many messages.
const PROGRESS_EVERY: u64 = 512;

/// The default producer id: unique per run.
pub fn default_producer_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!("dstream-{}-{nanos:08x}", std::process::id())
}

/// Tell (on stderr) what recoveries happened: a server that lost the
/// producer state, and how many messages may therefore be stored twice.
fn report_recoveries(name: &str, producer: &Producer) {
    let stats = producer.stats();
    if stats.state_losses > 0 || stats.possible_duplicate_messages > 0 {
        eprintln!(
            "dstream: produce {name}: the server lost the producer state {} time(s); re-sent unacknowledged batches in a new epoch; possible duplicates: {} messages ({} batches in flight at the loss)",
            stats.state_losses, stats.possible_duplicate_messages, stats.possible_duplicate_batches,
        );
    }
}

/// Strip the line terminator; `None` for a blank line.
fn record(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(line)
    }
}

/// Messages per second and MB (10^6 bytes) per second.
pub fn rates(messages: u64, bytes: u64, elapsed: Duration) -> (f64, f64) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    (messages as f64 / secs, bytes as f64 / 1e6 / secs)
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (pb, template) = match total {
        Some(len) => (
            ProgressBar::new(len),
            "{spinner} [{elapsed_precise}] [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} {msg}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} [{elapsed_precise}] {decimal_bytes} {decimal_bytes_per_sec} {msg}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

pub async fn produce(ctx: &Ctx, args: ProduceArgs) -> Result<(), CliError> {
    let name = &args.name;
    let stream = ctx.stream(name)?;
    let info = stream.head().await.map_err(api("produce", name))?;
    let content_type = info
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".to_owned());
    let is_json = util::is_json_content_type(Some(&content_type));
    if args.json_lines && !is_json {
        return Err(input_error(
            "produce",
            name,
            &format!(
                "--json-lines needs a JSON stream (application/json), this one is {content_type}"
            ),
        ));
    }
    let producer_id = args.producer_id.clone().unwrap_or_else(default_producer_id);
    // Without --epoch: the library's default, the clock in milliseconds.
    let mut builder = Producer::builder(&stream, &producer_id)
        .auto_claim(args.epoch.is_none())
        // A server that lost the producer state (restart without durable
        // producer state) is recovered from; possible duplicates are reported.
        .recover_lost_state(true)
        .content_type(&content_type);
    if let Some(epoch) = args.epoch {
        builder = builder.epoch(epoch);
    }
    let producer = builder.build().map_err(api("produce", name))?;

    let (input, total): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>) = match &args.file {
        Some(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| CliError::io(&format!("cannot open {}", path.display()), &e))?;
            let len = file
                .metadata()
                .await
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            (Box::new(file), len)
        }
        None => {
            crate::commands::stdin_hint();
            (Box::new(tokio::io::stdin()), None)
        }
    };
    let label = args
        .file
        .as_ref()
        .map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
    let mut reader = BufReader::with_capacity(READ_BUFFER, input);
    let pb = progress_bar(total);
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);

    let started = Instant::now();
    let (mut messages, mut bytes, mut read_bytes) = (0u64, 0u64, 0u64);
    let mut line = Vec::with_capacity(4096);
    // One buffer for every byte message (`feed_slice` copies it).
    let mut message = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    let mut interrupted = false;
    let mut failure: Option<CliError> = None;
    // Whether `failure` is about line `line_no`, which was not sent.
    let mut resume_line = false;
    loop {
        line.clear();
        let n = tokio::select! {
            biased;
            _ = &mut interrupt => { interrupted = true; break; }
            n = reader.read_until(b'\n', &mut line) => n,
        };
        let n = match n {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                failure = Some(CliError::io(&format!("cannot read {label}"), &e));
                break;
            }
        };
        line_no += 1;
        read_bytes += n as u64;
        let Some(rec) = record(&line) else { continue };
        let sent = if is_json {
            let raw = match std::str::from_utf8(rec)
                .map_err(|e| e.to_string())
                .and_then(|s| serde_json::from_str::<&RawValue>(s).map_err(|e| e.to_string()))
            {
                Ok(raw) => raw,
                Err(e) => {
                    failure = Some(input_error(
                        "produce",
                        name,
                        &format!("{label} line {line_no} is not one JSON value: {e}"),
                    ));
                    resume_line = true;
                    break;
                }
            };
            bytes += raw.get().len() as u64;
            tokio::select! {
                biased;
                _ = &mut interrupt => { interrupted = true; break; }
                r = producer.feed_json(raw) => r,
            }
        } else {
            message.clear();
            message.extend_from_slice(rec);
            message.push(b'\n');
            bytes += message.len() as u64;
            tokio::select! {
                biased;
                _ = &mut interrupt => { interrupted = true; break; }
                r = producer.feed_slice(&message) => r,
            }
        };
        // No acknowledgement per message (`feed`): close reports failures.
        if let Err(e) = sent {
            failure = Some(CliError::api(&format!("produce {name}"), &e));
            resume_line = true;
            break;
        }
        messages += 1;
        if messages % PROGRESS_EVERY == 0 {
            pb.set_position(read_bytes);
            let (mps, _) = rates(messages, bytes, started.elapsed());
            pb.set_message(format!("{messages} msgs, {mps:.0} msg/s"));
        }
    }
    pb.set_position(read_bytes);
    pb.set_message(format!("{messages} msgs, flushing"));
    let closed = producer.close().await;
    pb.finish_and_clear();
    let elapsed = started.elapsed();
    report_recoveries(name, &producer);
    if let Some(mut failure) = failure {
        let resume = resume_line.then_some(line_no);
        failure
            .message
            .push_str(&committed_note(messages, resume, closed.as_ref().err()));
        return Err(failure);
    }
    closed.map_err(api("produce", name))?;

    let (mps, mbps) = rates(messages, bytes, elapsed);
    if ctx.json() {
        let obj = json!({
            "url": util::redact_url(stream.url().as_str()),
            "messages": messages,
            "bytes": bytes,
            "elapsed_secs": elapsed.as_secs_f64(),
            "messages_per_sec": mps,
            "mb_per_sec": mbps,
            "producer_id": producer_id,
            "epoch": producer.epoch(),
            "possible_duplicates": producer.possible_duplicates(),
            "interrupted": interrupted,
        });
        println_out(&obj.to_string())?;
    } else {
        println_out(&format!(
            "produced {messages} messages ({bytes} bytes) to {} in {:.2}s: {mps:.0} msg/s, {mbps:.2} MB/s",
            util::redact_url(stream.url().as_str()),
            elapsed.as_secs_f64(),
        ))?;
    }
    if interrupted {
        return Err(CliError::new(
            exit::INTERRUPTED,
            format!("produce {name}: interrupted; {messages} messages were sent and flushed"),
        ));
    }
    Ok(())
}

/// What a failed `produce` already wrote: the messages before the failure
/// were committed (unless the final flush failed too), so rerunning the
/// same input appends them again.
pub fn committed_note(messages: u64, resume: Option<u64>, flush_error: Option<&Error>) -> String {
    let plural = if messages == 1 { "" } else { "s" };
    match (flush_error, resume) {
        _ if messages == 0 => "; nothing was appended".to_owned(),
        (None, Some(line)) => format!(
            "; the {messages} message{plural} before line {line} were committed: rerunning \
             the same input appends them again, resume from line {line} instead \
             (e.g. `tail -n +{line}`)"
        ),
        (None, None) => format!(
            "; the {messages} message{plural} before it were committed: rerunning the same \
             input appends them again"
        ),
        (Some(e), _) => format!(
            "; the {messages} message{plural} before it may be only partly committed \
             (flushing failed: {e})"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_say_what_was_committed() {
        assert_eq!(
            committed_note(5001, Some(5002), None),
            "; the 5001 messages before line 5002 were committed: rerunning the same input \
             appends them again, resume from line 5002 instead (e.g. `tail -n +5002`)"
        );
        assert!(committed_note(3, None, None).contains("3 messages before it were committed"));
        assert_eq!(committed_note(0, Some(1), None), "; nothing was appended");
    }

    #[test]
    fn records() {
        assert_eq!(record(b"abc\n"), Some(&b"abc"[..]));
        assert_eq!(record(b"abc\r\n"), Some(&b"abc"[..]));
        assert_eq!(record(b"abc"), Some(&b"abc"[..]));
        assert_eq!(record(b" \t\n"), None);
        assert_eq!(record(b"\n"), None);
    }

    #[test]
    fn rate_math() {
        let (mps, mbps) = rates(1000, 2_000_000, Duration::from_secs(2));
        assert_eq!(mps, 500.0);
        assert_eq!(mbps, 1.0);
        let (mps, _) = rates(0, 0, Duration::ZERO);
        assert_eq!(mps, 0.0);
    }

    #[test]
    fn defaults_are_valid() {
        assert!(default_producer_id().starts_with("dstream-"));
    }
}
