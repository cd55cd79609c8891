//! Command line definitions (clap derive).

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use durable_streams_client::{LiveMode, Offset};

use crate::util;

/// Default server base URL.
pub const DEFAULT_URL: &str = "http://127.0.0.1:4437";

/// The exit code table, shown by `--help` and documented in the README.
pub const EXIT_CODES_HELP: &str = "\
Streams are addressed as <URL>/v1/stream/<NAME> for a bare NAME, or used as
given when NAME starts with http:// or https://.

Exit codes:
    0    success (also: tail stopped with ctrl-c, output pipe closed)
    1    other error (I/O, undecodable server response, ...)
    2    usage error (bad arguments or options)
    3    not found (stream or fork source missing; 410 gone)
    4    conflict (exists with another configuration, content-type mismatch,
         sequence or producer epoch conflict)
    5    stream closed (append or close --data on a closed stream)
    6    network error or timeout
    7    server error (5xx, or 429 after retries ran out)
    8    bad request or invalid argument (400, 413, invalid input data,
         invalid State Protocol messages)
    9    unauthorized or forbidden (401, 403)
    10   the server does not support the feature (subscriptions)
    130  interrupted (ctrl-c during read or produce; produce flushes what
         it sent)";

/// Command line client for Durable Streams servers.
#[derive(Debug, Parser)]
#[command(
    name = "dstream",
    version,
    about = "Command line client for Durable Streams: create, append, read, tail and bulk-load streams",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Server base URL (optional: DS_URL, else the default); bare stream
    /// names resolve to <URL>/v1/stream/<NAME>.
    #[arg(
        long,
        global = true,
        env = "DS_URL",
        hide_env_values = true,
        default_value = DEFAULT_URL,
        value_name = "URL"
    )]
    pub url: String,

    /// Sent as the `authorization` header: `Bearer x`, any `Scheme value`,
    /// or a bare token (sent as `Bearer <token>`).
    #[arg(
        long,
        global = true,
        env = "DS_AUTH",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub auth: Option<String>,

    /// Extra request header `Name: value` (repeatable).
    #[arg(
        long = "header",
        short = 'H',
        global = true,
        value_name = "K:V",
        value_parser = util::parse_header
    )]
    pub headers: Vec<(String, String)>,

    /// Log requests, retries, reconnects and producer batches to stderr
    /// (`-v`: each request with its status and duration, retries and
    /// reconnects; `-vv`: everything the library traces). `RUST_LOG`, when
    /// set, takes precedence. Header values and query strings are never
    /// logged.
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Output format: `human` text, or `json` (one JSON object per line).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,

    /// Largest response body the client accepts, in MiB (a catch-up read
    /// may return a large stream in one response).
    #[arg(
        long,
        global = true,
        env = "DS_MAX_RESPONSE_MB",
        hide_env_values = true,
        default_value_t = 256,
        value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(1..=1 << 20)
    )]
    pub max_response_mb: u64,

    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Plain text for people (read/tail: the stream's bytes, JSON messages one per line).
    Human,
    /// One JSON object per result (read/tail: per chunk or message, with its offset).
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a stream (idempotent: an identical existing stream is success).
    Create(CreateArgs),
    /// Append data to a stream.
    Append(AppendArgs),
    /// Catch up: write the stream's content from an offset to stdout, then exit.
    Read(ReadArgs),
    /// Follow a stream live until it is closed (or ctrl-c).
    Tail(TailArgs),
    /// Show a stream's metadata (tail offset, content type, closed, expiry).
    Head(NameArg),
    /// Close a stream (EOF for readers), optionally with a final message.
    Close(CloseArgs),
    /// Delete a stream.
    Delete(NameArg),
    /// Create NAME as a fork of another stream on the same server.
    Fork(ForkArgs),
    /// Bulk-load newline-delimited records or JSON lines through the idempotent producer.
    Produce(ProduceArgs),
    /// Manage server-side subscriptions and run pull-wake workers (alias `sub`).
    #[command(visible_alias = "sub")]
    Subscription(SubscriptionArgs),
    /// State Protocol streams: show the materialized state, list changes,
    /// materialize into SQLite, write changes.
    State(StateArgs),
    /// A live view of streams and their consumers: tail, rates, last
    /// append, closed/expiry, consumer lag.
    Top(TopArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Benchmark the client against real servers, next to a raw HTTP baseline.
    #[cfg(feature = "bench")]
    Bench(crate::bench::BenchArgs),
}

/// Just a stream.
#[derive(Debug, Args)]
pub struct NameArg {
    /// Stream name (or full http(s):// URL).
    pub name: String,
}

/// `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Stream name (or full http(s):// URL).
    pub name: String,
    /// The stream's content type (server default: application/octet-stream).
    #[arg(long, value_name = "CT", conflicts_with = "json")]
    pub content_type: Option<String>,
    /// Create a JSON stream (application/json, message semantics).
    #[arg(long)]
    pub json: bool,
    /// Sliding time-to-live in seconds, reset by reads and writes.
    #[arg(long, value_name = "SECS", conflicts_with = "expires_at")]
    pub ttl: Option<u64>,
    /// Absolute expiry time (RFC 3339, e.g. 2030-01-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = util::parse_rfc3339)]
    pub expires_at: Option<std::time::SystemTime>,
    /// Create the stream already closed (empty).
    #[arg(long)]
    pub closed: bool,
}

/// `append`.
#[derive(Debug, Args)]
#[command(after_help = "\
Input: the DATA arguments first, then each --file in order; with neither,
stdin is read.

Byte streams: each DATA argument and each file is one append, stdin is one
append.

JSON streams (--json, or automatically when the stream's content type is
application/json): each DATA argument is exactly one JSON value, and files
and stdin hold one JSON value per non-empty line. Every value becomes ONE
message: a JSON array argument such as '[1,2]' is stored as one message (an
array), not flattened into two. All values go out in one request (atomic).
For large loads use `dstream produce`.")]
pub struct AppendArgs {
    /// Stream name (or full http(s):// URL).
    pub name: String,
    /// Data to append (see below); reads stdin when no DATA and no --file.
    #[arg(value_name = "DATA")]
    pub data: Vec<String>,
    /// Append the content of this file (repeatable).
    #[arg(long = "file", short = 'f', value_name = "F")]
    pub files: Vec<PathBuf>,
    /// Treat input as JSON values, one message each (implied for JSON streams).
    #[arg(long)]
    pub json: bool,
}

/// `read`.
#[derive(Debug, Args)]
#[command(after_help = "\
Byte streams are written to stdout as they are; JSON streams one message per
line (compact JSON). With --output json: one object per chunk
{\"offset\",\"bytes\",\"data\"|\"data_base64\"} or per JSON message
{\"offset\",\"value\"}; offset is where to resume after that chunk (for JSON
messages: after the batch the message arrived in).")]
pub struct ReadArgs {
    /// Stream name (or full http(s):// URL).
    pub name: String,
    /// Start offset: `start` (or -1), `now`, or an offset the server returned.
    #[arg(long, value_name = "OFFSET", default_value = "start", value_parser = util::parse_offset)]
    pub from: Offset,
}

/// `tail`.
#[derive(Debug, Args)]
#[command(after_help = "\
Output as for `read`. Ends with exit code 0 when the stream is closed or on
ctrl-c.")]
pub struct TailArgs {
    /// Stream name (or full http(s):// URL).
    pub name: String,
    /// How to follow the stream once caught up.
    #[arg(long, value_enum, default_value_t = LiveArg::Auto)]
    pub live: LiveArg,
    /// Start offset: `start` (or -1), `now`, or an offset the server returned.
    #[arg(long, value_name = "OFFSET", default_value = "start", value_parser = util::parse_offset)]
    pub from: Offset,
}

/// Live read modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LiveArg {
    /// Server-sent events.
    Sse,
    /// Long-polling.
    LongPoll,
    /// SSE, falling back to long-poll.
    Auto,
}

impl From<LiveArg> for LiveMode {
    fn from(live: LiveArg) -> LiveMode {
        match live {
            LiveArg::Sse => LiveMode::Sse,
            LiveArg::LongPoll => LiveMode::LongPoll,
            LiveArg::Auto => LiveMode::Auto,
        }
    }
}

/// `close`.
#[derive(Debug, Args)]
pub struct CloseArgs {
    /// Stream name (or full http(s):// URL).
    pub name: String,
    /// A final message appended atomically with the close (one JSON value for
    /// JSON streams). Fails with exit code 5 if the stream is already closed.
    #[arg(long, value_name = "D")]
    pub data: Option<String>,
}

/// `fork`.
#[derive(Debug, Args)]
pub struct ForkArgs {
    /// The new stream (name or full http(s):// URL).
    pub name: String,
    /// The source stream (name or URL on the same server).
    #[arg(long = "from", value_name = "SOURCE")]
    pub source: String,
    /// Divergence point: an offset the server returned (default: the source's tail).
    #[arg(long, value_name = "O", value_parser = util::parse_offset)]
    pub offset: Option<Offset>,
    /// Refine the divergence point past --offset: messages for JSON streams, bytes otherwise.
    #[arg(long, value_name = "N")]
    pub sub_offset: Option<u64>,
}

/// `produce`.
#[derive(Debug, Args)]
#[command(after_help = "\
Each non-empty input line is one message. Byte streams: the line including its
newline (so reading the stream back gives the same lines). JSON streams: the
line must be one JSON value (--json-lines is implied for JSON streams and fails
for other streams). A malformed line stops the load; the lines before it are
flushed and stay written.

Exactly once: the producer numbers its requests (Producer-Id, -Epoch, -Seq),
so retries after network errors never duplicate data. Without --epoch the
epoch is the current time in milliseconds (each run starts a newer epoch, and
a stale clock is corrected with auto-claim); with --epoch a stale epoch is an
error (exit code 4). Failed requests are retried with backoff for up to 2
minutes per batch, so a server restart only delays the load. If the server
loses the producer state (a crash of a server without durable producer
state), the unacknowledged batches are re-sent in a new epoch and the number
of messages that may have been stored twice is printed on stderr.

On a terminal a progress bar shows messages/s and MB/s; a summary line
follows. ctrl-c stops reading, flushes what was sent and exits with 130.")]
pub struct ProduceArgs {
    /// Stream name (or full http(s):// URL).
    pub name: String,
    /// Read records from this file instead of stdin.
    #[arg(long, short = 'f', value_name = "F")]
    pub file: Option<PathBuf>,
    /// Each line is one JSON value.
    #[arg(long)]
    pub json_lines: bool,
    /// Producer id (default: dstream-<pid>-<random>).
    #[arg(long, value_name = "ID")]
    pub producer_id: Option<String>,
    /// Producer epoch (default: the current time in milliseconds).
    #[arg(long, value_name = "N")]
    pub epoch: Option<u64>,
}

/// `subscription` (alias `sub`).
#[derive(Debug, Args)]
#[command(after_help = "\
Subscriptions (PROTOCOL.md sections 6-7) are durable cursors over many
streams, kept by the server; only some servers implement them (the Node
reference server does; others fail with exit code 10). Stream paths, globs
and wake streams are relative to the stream root <URL>/v1/stream, like bare
stream names: `orders/*` matches <URL>/v1/stream/orders/<one segment>.")]
pub struct SubscriptionArgs {
    #[command(subcommand)]
    pub command: SubCommand,
}

/// The `subscription` subcommands.
#[derive(Debug, Subcommand)]
pub enum SubCommand {
    /// Create a subscription (idempotent: an identical one is re-confirmed).
    Create(SubCreateArgs),
    /// Show a subscription: linked streams with acked offsets, lease, status.
    Get(SubIdArg),
    /// Delete a subscription (in-flight acks for it fail).
    Delete(SubIdArg),
    /// Link streams explicitly, at their current tail (idempotent).
    AddStreams(SubAddStreamsArgs),
    /// Remove a stream's explicit link (a matching --pattern still links it).
    RemoveStream(SubRemoveStreamArgs),
    /// Join the worker group of pull-wake subscriptions and print every message.
    Work(SubWorkArgs),
}

/// Just a subscription id.
#[derive(Debug, Args)]
pub struct SubIdArg {
    /// Subscription id.
    pub id: String,
}

/// `subscription create`.
#[derive(Debug, Args)]
#[command(
    group(ArgGroup::new("members").required(true).multiple(true).args(["pattern", "streams"])),
    group(ArgGroup::new("delivery").required(true).args(["pull_wake", "webhook"])),
    after_help = "\
Streams that already match --pattern, and --stream links, start at their
current tail: history is not replayed. --pull-wake creates the wake stream
(JSON) when it does not exist. Prints `created` or `reconfirmed` (an
identical subscription existed); a different configuration under the same
id fails with exit code 4. With --output json: the subscription as the
server reports it, plus \"created\": true|false."
)]
pub struct SubCreateArgs {
    /// Subscription id.
    pub id: String,
    /// Link every stream matching this glob (`*` one path segment, `**` any number).
    #[arg(long, value_name = "GLOB")]
    pub pattern: Option<String>,
    /// Link this stream explicitly (repeatable; additive to --pattern).
    #[arg(long = "stream", value_name = "PATH")]
    pub streams: Vec<String>,
    /// Pull-wake delivery: workers follow this wake stream and claim work.
    #[arg(long, value_name = "WAKE_STREAM")]
    pub pull_wake: Option<String>,
    /// Webhook delivery: the server POSTs signed wake notifications here.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// How long a claim stays valid without a heartbeat: 1s to 10m, e.g.
    /// `30s`, `2m`, `1500ms` or bare seconds (server default 30s).
    #[arg(long, value_name = "DURATION", value_parser = util::parse_lease_ttl)]
    pub lease_ttl: Option<std::time::Duration>,
    /// Human-readable description.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
}

/// `subscription add-streams`.
#[derive(Debug, Args)]
pub struct SubAddStreamsArgs {
    /// Subscription id.
    pub id: String,
    /// Stream paths (relative to the stream root).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
}

/// `subscription remove-stream`.
#[derive(Debug, Args)]
pub struct SubRemoveStreamArgs {
    /// Subscription id.
    pub id: String,
    /// Stream path (relative to the stream root).
    pub path: String,
}

/// `subscription work`.
#[derive(Debug, Args)]
#[command(after_help = "\
The worker follows the wake stream, races the other workers of the group to
claim whichever subscription has pending work, reads each pending stream
from its acked offset and writes the messages to stdout, heartbeating while
it works. A batch is acknowledged only after its output was written and
flushed: delivery is at least once (a worker that dies mid-batch leaves the
unacknowledged part to the next one, which prints it again), in order within
each stream. One subscription is worked by one worker at a time; run several
subscriptions (shards) to spread work over several workers.

Output: human: one line per message, `PATH<TAB>MESSAGE` (JSON messages as
compact JSON; byte streams line by line, invalid UTF-8 replaced). With
--output json: one object per line, {\"stream\",\"offset\",\"value\"} per
message of a JSON stream, {\"stream\",\"offset\",\"bytes\",\"data\"} per
chunk of a byte stream (\"data_base64\" instead of \"data\" when the bytes
are not UTF-8). `offset` is where the stream's cursor moves once the batch
is acked (for a piece of a large byte response: where that response started).
Whether a stream is JSON is learned from its content type (one HEAD per
stream, cached).

ctrl-c stops gracefully: the batch in hand is finished and acked, the claim
released (another worker continues at once), exit code 0. A second ctrl-c
exits at once with 130 without releasing (the lease lapses after its TTL).")]
pub struct SubWorkArgs {
    /// Subscription ids to serve (all pull-wake, with one wake stream).
    #[arg(required = true, value_name = "ID")]
    pub ids: Vec<String>,
    /// The wake stream (default: the subscriptions' own, read from the server).
    #[arg(long, value_name = "WAKE")]
    pub wake_stream: Option<String>,
    /// Worker name the server records as lease holder (default worker-<pid>-<random>).
    #[arg(long, value_name = "NAME")]
    pub worker: Option<String>,
}

/// `state`.
#[derive(Debug, Args)]
#[command(after_help = "\
The State Protocol (STATE-PROTOCOL.md) puts structured state on a JSON
stream: change messages {\"type\",\"key\",\"value\",\"headers\":{\"operation\":
\"insert\"|\"update\"|\"delete\",\"txid\"?}} and control messages
{\"headers\":{\"control\":\"snapshot-start\"|\"snapshot-end\"|\"reset\"}},
applied in stream order. Every message is validated; an invalid one stops the
command with exit code 8 and an error naming the offset and the field.")]
pub struct StateArgs {
    #[command(subcommand)]
    pub command: StateCommand,
}

/// The `state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Materialize a stream in memory and print the state (with --live: then every change).
    Show(StateShowArgs),
    /// Print the change and control messages themselves, validated, one per line.
    Changes(StateChangesArgs),
    /// Materialize into a SQLite file, exactly once across restarts.
    Materialize(StateMaterializeArgs),
    /// Write changes read from stdin (line syntax or JSON messages) through the idempotent producer.
    Write(StateWriteArgs),
}

/// `state show`.
#[derive(Debug, Args)]
#[command(after_help = "\
Output once caught up: human: one line per entity, `TYPE/KEY<TAB>VALUE`
(compact JSON), ordered by type and key; --output json: one object
{TYPE: {KEY: VALUE}}. Snapshots are shown only when complete.

--live: after that, one line per change as it is applied, until the stream
is closed or ctrl-c (exit 0): human: `insert|update<TAB>TYPE/KEY<TAB>VALUE`,
`delete<TAB>TYPE/KEY`, `reset`; --output json: {\"op\":\"insert\"|\"update\",
\"type\",\"key\",\"value\"}, {\"op\":\"delete\",\"type\",\"key\"},
{\"op\":\"reset\"} (the state is cleared). Changes inside a snapshot appear
when the snapshot ends. With --type, other types are left out (resets are
always shown).")]
pub struct StateShowArgs {
    /// Stream name (or full http(s):// URL).
    pub name: String,
    /// Only this entity type.
    #[arg(long = "type", value_name = "TYPE")]
    pub entity_type: Option<String>,
    /// Keep following: print each change as it is applied (SSE, falling back to long-poll).
    #[arg(long)]
    pub live: bool,
}

/// `state changes`.
#[derive(Debug, Args)]
#[command(after_help = "\
Human output: changes as `OP<TAB>TYPE/KEY<TAB>VALUE` (no value for a delete
without one), then `<TAB>txid=ID` when the change has one; control messages
as `snapshot-start`, `snapshot-end` or `reset`, then `<TAB>offset=O` when
given. --output json: {\"offset\",\"message\"} per message, the message as
stored (unknown fields kept), `offset` the resume position after the batch
it arrived in (as for `read`). The messages before an invalid one are
printed; the invalid one stops the command (exit 8).")]
pub struct StateChangesArgs {
    /// Stream name (or full http(s):// URL).
    pub name: String,
    /// Start offset: `start` (or -1), `now`, or an offset the server returned.
    #[arg(long, value_name = "OFFSET", default_value = "start", value_parser = util::parse_offset)]
    pub from: Offset,
    /// Keep following until the stream is closed or ctrl-c (SSE, falling back to long-poll).
    #[arg(long)]
    pub live: bool,
}

/// `state materialize`.
#[derive(Debug, Args)]
#[command(after_help = "\
The database (created if missing) holds one stream's state: tables
ds_state(entity_type, key, value JSON text) and ds_cursor(stream, offset,
applied_changes). Every read batch is applied in one SQLite transaction
together with its offset, so a restart, even after kill -9, resumes exactly
where the state is: no change applied twice, none lost (a snapshot commits
at its end). Other processes may read the file meanwhile (WAL mode), e.g.
  sqlite3 FILE \"SELECT key, value ->> '$.name' FROM ds_state WHERE entity_type = 'user'\"

Progress (changes applied, offset) goes to stderr at most once a second;
a summary to stdout at the end (--output json: {\"url\",\"db\",
\"applied_changes\",\"applied_this_run\",\"offset\",\"stopped\"}, stopped
being caught-up, closed or interrupted). Without --live it stops at the
tail. ctrl-c stops after the batch in hand is committed, exit 0. A database
that materializes another stream is refused (exit 4).")]
pub struct StateMaterializeArgs {
    /// Stream name (or full http(s):// URL).
    pub name: String,
    /// The SQLite database file.
    #[arg(long, value_name = "FILE")]
    pub db: PathBuf,
    /// Keep following after catching up (SSE, falling back to long-poll),
    /// reconnecting after errors, until the stream is closed or ctrl-c.
    #[arg(long)]
    pub live: bool,
}

/// `state write`.
#[derive(Debug, Args)]
#[command(after_help = "\
One message per non-empty stdin line (lines starting with # are comments):
  insert TYPE KEY JSON      update TYPE KEY JSON      delete TYPE KEY
  snapshot-start            snapshot-end              reset [OFFSET]
  begin TXID  ...  commit   the changes between are one transaction (each
                            gets headers.txid = TXID), written as ONE append
  {...}                     a State Protocol message as JSON (validated)
TYPE and KEY are single words; JSON is the rest of the line. Messages go
through the idempotent producer (exactly once under retries), in order. A
malformed line stops the input; the messages before it are flushed and stay
written (a transaction left open is not written). ctrl-c flushes what was
sent and exits 130.")]
pub struct StateWriteArgs {
    /// Stream name (or full http(s):// URL); must be a JSON stream.
    pub name: String,
    /// Read from this file instead of stdin.
    #[arg(long, short = 'f', value_name = "F")]
    pub file: Option<PathBuf>,
}

/// `top`.
#[derive(Debug, Args)]
#[command(after_help = "\
Streams: the STREAM arguments, then the names in --names-file (one per
line, # comments), kept when they match a --glob (`*` within one path
segment, `**` any number of segments, `?` one character; the protocol has
no way to list streams, so globs select among names you give), plus the
streams of each --subscription (Node server only).

Consumers: each file in a --checkpoints directory (the layout of the
library's FileCheckpointStore: one file per consumer name holding its
offset) is a consumer; `--checkpoints DIR` shows them under every stream,
`--checkpoints STREAM=DIR` under STREAM only. A subscription's acked offset
is a consumer named subscription:ID of each of its streams. POSITION
compares offsets (lexicographic, as the protocol allows); LAG BYTES is a
heuristic for the known servers' <seq>_<byte> offsets, n/a for other forms.
SINCE MOVED: a checkpoint file's modification time; for subscriptions the
time since top saw the acked offset change.

Refresh: a HEAD per stream every --interval, and one live long-poll reader
per stream from its tail counting appended bytes (JSON streams: messages
too; MSGS/S is n/a for byte streams, which have no message boundaries).
Rates cover the last interval; LAST APPEND is the time since the reader
last saw data.

Output: on a terminal, a dashboard (q, Esc or ctrl-c quits); otherwise a
plain text snapshot every interval (--output json: one JSON object per
line). --once: sample twice, --interval apart, print one snapshot and exit
0; streams that fail (e.g. not found) carry an \"error\" instead.")]
pub struct TopArgs {
    /// Streams to watch (names or full http(s):// URLs).
    #[arg(value_name = "STREAM")]
    pub streams: Vec<String>,
    /// Also watch the stream names in this file (one per line).
    #[arg(long, value_name = "FILE")]
    pub names_file: Option<PathBuf>,
    /// Keep only the named streams matching this glob (repeatable).
    #[arg(long = "glob", value_name = "GLOB")]
    pub globs: Vec<String>,
    /// Watch this subscription's streams and its acked offsets (repeatable).
    #[arg(long = "subscription", value_name = "ID")]
    pub subscriptions: Vec<String>,
    /// A checkpoint directory, for every stream or for one (repeatable).
    #[arg(long, value_name = "[STREAM=]DIR", value_parser = crate::top::parse_checkpoints)]
    pub checkpoints: Vec<(Option<String>, PathBuf)>,
    /// Refresh interval: `500ms`, `2s`, or bare seconds (100ms to 1h).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = crate::top::parse_interval)]
    pub interval: std::time::Duration,
    /// Print one snapshot (rates over one --interval) and exit.
    #[arg(long)]
    pub once: bool,
}

/// `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("dstream").chain(args.iter().copied()))
    }

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn globals_work_after_the_subcommand() {
        let cli = parse(&[
            "read",
            "x",
            "--url",
            "http://h:1",
            "--output",
            "json",
            "-H",
            "x-a: 1",
            "--header",
            "x-b:2",
            "--from",
            "now",
        ])
        .unwrap();
        assert_eq!(cli.url, "http://h:1");
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(
            cli.headers,
            vec![("x-a".into(), "1".into()), ("x-b".into(), "2".into())]
        );
        match cli.command {
            Command::Read(r) => assert!(r.from.is_now()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_shows_the_url_as_optional() {
        let help = Cli::command().render_help().to_string();
        assert!(
            help.contains("Usage: dstream [OPTIONS] <COMMAND>"),
            "{help}"
        );
        assert!(
            help.contains("optional: DS_URL, else the default"),
            "{help}"
        );
        assert!(help.contains("[env: DS_URL]"), "{help}");
        assert!(!help.contains("DS_URL="), "{help}");
    }

    #[test]
    fn usage_errors() {
        for args in [
            &["create", "x", "--json", "--content-type", "text/plain"][..],
            &[
                "create",
                "x",
                "--ttl",
                "5",
                "--expires-at",
                "2030-01-01T00:00:00Z",
            ],
            &["create", "x", "--expires-at", "tomorrow"],
            &["read", "x", "--from", "a/b"],
            &["tail", "x", "--live", "carrier-pigeon"],
            &["fork", "x"],
            &["read", "x", "-H", "no-colon"],
            &["completions", "cmd.exe"],
            &["sub", "create", "s", "--pull-wake", "w"],
            &["sub", "create", "s", "--pattern", "a/*"],
            &[
                "sub",
                "create",
                "s",
                "--pattern",
                "a/*",
                "--pull-wake",
                "w",
                "--webhook",
                "https://h/x",
            ],
            &[
                "sub",
                "create",
                "s",
                "--stream",
                "a",
                "--pull-wake",
                "w",
                "--lease-ttl",
                "20m",
            ],
            &["sub", "add-streams", "s"],
            &["sub", "work"],
            &["state", "materialize", "s"],
            &["state", "show"],
            &["state", "changes", "s", "--from", "a/b"],
            &["state", "show", "s", "--live", "sse"],
            &["top", "s", "--interval", "1ms"],
            &["top", "s", "--checkpoints", "=dir"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn append_collects_data_and_files() {
        let cli = parse(&[
            "append", "s", "a", "b", "--file", "f1", "-f", "f2", "--json",
        ])
        .unwrap();
        match cli.command {
            Command::Append(a) => {
                assert_eq!(a.data, vec!["a", "b"]);
                assert_eq!(a.files.len(), 2);
                assert!(a.json);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subscription_commands_parse() {
        let cli = parse(&[
            "sub",
            "create",
            "s",
            "--pattern",
            "a/*",
            "--stream",
            "b",
            "--stream",
            "c",
            "--pull-wake",
            "wake/a",
            "--lease-ttl",
            "5s",
        ])
        .unwrap();
        match cli.command {
            Command::Subscription(SubscriptionArgs {
                command: SubCommand::Create(c),
            }) => {
                assert_eq!(c.pattern.as_deref(), Some("a/*"));
                assert_eq!(c.streams, vec!["b", "c"]);
                assert_eq!(c.pull_wake.as_deref(), Some("wake/a"));
                assert_eq!(c.lease_ttl, Some(std::time::Duration::from_secs(5)));
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "subscription",
            "work",
            "a",
            "b",
            "--wake-stream",
            "w",
            "--worker",
            "n",
        ])
        .unwrap();
        match cli.command {
            Command::Subscription(SubscriptionArgs {
                command: SubCommand::Work(w),
            }) => {
                assert_eq!(w.ids, vec!["a", "b"]);
                assert_eq!(w.wake_stream.as_deref(), Some("w"));
                assert_eq!(w.worker.as_deref(), Some("n"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn state_commands_parse() {
        let cli = parse(&["state", "show", "s", "--type", "user", "--live"]).unwrap();
        match cli.command {
            Command::State(StateArgs {
                command: StateCommand::Show(a),
            }) => {
                assert_eq!(a.entity_type.as_deref(), Some("user"));
                assert!(a.live);
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["state", "materialize", "s", "--db", "x.db"]).unwrap();
        match cli.command {
            Command::State(StateArgs {
                command: StateCommand::Materialize(a),
            }) => {
                assert_eq!(a.db, PathBuf::from("x.db"));
                assert!(!a.live);
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["state", "changes", "s", "--from", "now"]).unwrap();
        match cli.command {
            Command::State(StateArgs {
                command: StateCommand::Changes(a),
            }) => assert!(a.from.is_now()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tail_defaults() {
        let cli = parse(&["tail", "s"]).unwrap();
        match cli.command {
            Command::Tail(t) => {
                assert_eq!(t.live, LiveArg::Auto);
                assert!(t.from.is_start());
                assert_eq!(LiveMode::from(LiveArg::LongPoll), LiveMode::LongPoll);
            }
            other => panic!("{other:?}"),
        }
    }
}
