//! `dstream bench`: latency, throughput and fan-out of the library against
//! real servers, each next to a raw hyper baseline measured in the same run.
//!
//! Without `--url` the servers are started through `test-servers` (the Rust
//! server with in-memory durability, and/or the Node reference server).
//! Results go to the terminal (a table), `bench.json` and `bench.svg` in
//! `--out` (default `target/dstream-bench`).

mod fanout;
mod raw;
pub mod report;
mod scenarios;
mod state;
pub mod stats;
mod subscriptions;
pub mod svg;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, CommandFactory, ValueEnum};
use durable_streams_client::LiveMode;
use serde_json::json;
use test_servers::{ServerKind, ServerOptions, TestServer};

use crate::util::{CliError, exit};
use report::Row;
use scenarios::ProduceWith;

/// Scenario names, in run order (`--only` matches substrings of these).
pub const SCENARIOS: &[&str] = &[
    "append-100B",
    "catchup-read-10KiB",
    "create",
    "roundtrip-long-poll",
    "roundtrip-sse",
    "producer-100B",
    "producer-100B-writer",
    "producer-100B-writers-5",
    "producer-1MiB",
    "json-read",
    "fanout",
    "sub-latency",
    "sub-webhook-latency",
    "sub-throughput",
    "state-memory",
    "state-sqlite",
    "state-rss",
];

/// `bench`.
#[derive(Debug, Args)]
#[command(after_help = "\
Scenarios (each also run by a raw hyper client making the same HTTP requests,
in the same run, alternating round by round; the five latency scenarios
alternate sample by sample):
  append-100B          sequential 100 B appends (latency)
  catchup-read-10KiB   catch-up read of a whole 10 KiB stream (latency)
  create               stream creation (latency)
  roundtrip-long-poll  append to delivery, reader long-polling at the tail
  roundtrip-sse        append to delivery, reader on SSE at the tail
  producer-100B        500,000 x 100 B through Producer::send (msg/s);
                       baseline: 5 raw producer ids posting 1 MiB batches
                       at once; the -1-lane row: one raw producer id, one
                       request at a time (what the protocol lets one
                       producer have: its requests apply in order)
  producer-100B-writer the same through one ProducerWriter
  producer-100B-writers-5
                       the same split over 5 producers, a writer each
                       (alike to the 5-id baseline)
  producer-1MiB        50 x 1 MiB through Producer::send (msg/s)
  json-read            catch-up read of 1,000,000 small JSON messages with
                       typed serde decoding, read().json::<T>() (msg/s)
  fanout-N             N SSE subscribers on one client (N = 100, 1,000,
                       10,000): RSS per subscriber, and the latency of one
                       append to every subscriber (p50/p99)
  fanout-shared-N      the same N subscribers on one shared read
                       (ReadBuilder::shared: one connection for all);
                       same baseline, one raw connection per subscriber
  sub-latency          pull-wake subscription: one append, time until the
                       worker's handler has it; baseline: a live consumer
  sub-webhook-latency  webhook subscription: one append, time until a
                       receiver on 127.0.0.1 verified the signed
                       notification and read the event; baseline: a
                       live consumer
  sub-throughput-Nw    50,000 JSON events over 4 subscriptions x 4 streams
                       drained by N = 1, 2, 4 in-process workers (msg/s);
                       baseline: one plain consumer per stream
                       (sub-*: servers with subscriptions only, e.g. node;
                       skipped with a note elsewhere)
  state-memory         State Protocol: 200,000 updates over 1,000 keys
                       materialized into memory (changes/s); baseline: a raw
                       catch-up read of the same stream into serde_json::Value
  state-sqlite         the same into a fresh SQLite file per round (one
                       SQLite transaction per read batch)
  state-rss-memory     peak RSS growth while catching up 1,000,000 updates
  state-rss-sqlite     over 1,000 keys (into memory / SQLite), each side in a
                       fresh process; baseline: the raw read into Value
--quick: 10,000 JSON messages, 2,000 x 100 B, 5 x 1 MiB, N = 10 and 100,
2,000 events over 4 x 2 streams, 10,000 state changes, 50,000 updates for
state-rss, 2 rounds of 20 samples.

Without --url the servers are started on free ports (the Rust server with
--durability memory; installed by scripts/install-servers.sh). With --url
(on the command line; DS_URL is ignored here) only that server is measured;
--auth and --header are not sent. Writes bench.json and bench.svg to --out.")]
pub struct BenchArgs {
    /// Which servers to start and measure (ignored with --url).
    #[arg(long, value_enum, default_value_t = ServerArg::Both)]
    pub server: ServerArg,
    /// Small sizes for a smoke test (well under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Rounds per scenario (default 5; --quick: 2). Throughput: one sample
    /// per round; latency: --samples samples per round.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub rounds: Option<u32>,
    /// Latency samples per round (default 100; --quick: 20).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub samples: Option<u32>,
    /// Directory for bench.json and bench.svg.
    #[arg(long, value_name = "DIR", default_value = "target/dstream-bench")]
    pub out: PathBuf,
    /// Run only the scenarios whose name contains this (repeatable).
    #[arg(long, value_name = "SUBSTR")]
    pub only: Vec<String>,
    /// Internal: run one side of a fan-out measurement in this process.
    #[arg(long, hide = true, value_name = "ours|small|shared|h2|base", requires_all = ["fanout_url", "fanout_n"])]
    pub fanout_child: Option<String>,
    /// Internal: the fan-out stream URL.
    #[arg(long, hide = true)]
    pub fanout_url: Option<String>,
    /// Internal: the number of fan-out subscribers.
    #[arg(long, hide = true)]
    pub fanout_n: Option<usize>,
    /// Internal: timed fan-out appends.
    #[arg(long, hide = true, default_value_t = 5)]
    pub fanout_appends: usize,
    /// Internal: run one side of a state RSS measurement in this process.
    #[arg(long, hide = true, value_name = "memory|sqlite|raw", requires_all = ["state_url", "state_count"])]
    pub state_child: Option<String>,
    /// Internal: the state stream URL.
    #[arg(long, hide = true)]
    pub state_url: Option<String>,
    /// Internal: the number of changes in the state stream.
    #[arg(long, hide = true)]
    pub state_count: Option<usize>,
}

/// `--server`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerArg {
    /// The Rust server (durable-streams-server).
    Rust,
    /// The Node reference server (@durable-streams/server).
    Node,
    /// Both, one after the other.
    Both,
}

/// Sizes of the scenarios.
#[derive(Debug, Clone)]
struct Sizes {
    producer_small: usize,
    producer_large: usize,
    json_messages: usize,
    fanout: Vec<usize>,
    fanout_appends: usize,
    sub_streams_per_shard: usize,
    sub_events: usize,
    state_changes: usize,
    state_rss_updates: usize,
    state_keys: usize,
}

impl Sizes {
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                producer_small: 2_000,
                producer_large: 5,
                json_messages: 10_000,
                fanout: vec![10, 100],
                fanout_appends: 3,
                sub_streams_per_shard: 2,
                sub_events: 2_000,
                state_changes: 10_000,
                state_rss_updates: 50_000,
                state_keys: 1_000,
            }
        } else {
            Sizes {
                producer_small: 500_000,
                producer_large: 50,
                json_messages: 1_000_000,
                fanout: vec![100, 1_000, 10_000],
                fanout_appends: 5,
                sub_streams_per_shard: 4,
                sub_events: 50_000,
                state_changes: 200_000,
                state_rss_updates: 1_000_000,
                state_keys: 1_000,
            }
        }
    }
}

/// One server under test.
#[derive(Debug)]
pub struct Target {
    /// `rust`, `node` or `external`.
    pub label: String,
    /// Base URL without trailing slash.
    pub base: String,
    /// Rounds per scenario.
    pub rounds: usize,
    /// Latency samples per round.
    pub samples: usize,
}

impl Target {
    /// A stream URL nobody used before.
    pub fn unique_url(&self) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!(
            "{}/v1/stream/dstream-bench-{}-{n}-{nanos}",
            self.base,
            std::process::id()
        )
    }
}

/// Microseconds since `start`.
pub fn micros(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e6
}

/// `--url` when it was given on the command line (not its default, not DS_URL).
fn explicit_url() -> Option<String> {
    let matches = crate::cli::Cli::command()
        .try_get_matches_from(std::env::args_os())
        .ok()?;
    let sub = matches.subcommand_matches("bench");
    for m in sub.into_iter().chain([&matches]) {
        if m.value_source("url") == Some(clap::parser::ValueSource::CommandLine) {
            return m.get_one::<String>("url").cloned();
        }
    }
    None
}

fn failed(message: impl Into<String>) -> CliError {
    CliError::new(exit::OTHER, message)
}

async fn run_scenario(t: &Target, name: &str, sizes: &Sizes) -> Result<Vec<Row>, String> {
    match name {
        "append-100B" => scenarios::append_latency(t).await,
        "catchup-read-10KiB" => scenarios::read_latency(t).await,
        "create" => scenarios::create_latency(t).await,
        "roundtrip-long-poll" => scenarios::roundtrip(t, LiveMode::LongPoll).await,
        "roundtrip-sse" => scenarios::roundtrip(t, LiveMode::Sse).await,
        "producer-100B" => {
            scenarios::producer(t, name, sizes.producer_small, 100, ProduceWith::Send).await
        }
        "producer-100B-writer" => {
            scenarios::producer(t, name, sizes.producer_small, 100, ProduceWith::Writers(1)).await
        }
        "producer-100B-writers-5" => {
            let with = ProduceWith::Writers(scenarios::LANES);
            scenarios::producer(t, name, sizes.producer_small, 100, with).await
        }
        "producer-1MiB" => {
            scenarios::producer(t, name, sizes.producer_large, 1 << 20, ProduceWith::Send).await
        }
        "json-read" => scenarios::json_read(t, sizes.json_messages).await,
        "fanout" => {
            let mut rows = Vec::new();
            for &n in &sizes.fanout {
                let started = Instant::now();
                rows.extend(fanout::fanout(t, n, sizes.fanout_appends).await?);
                eprintln!(
                    "  [{}] fanout-{n}: {:.1}s",
                    t.label,
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(rows)
        }
        "sub-latency" => subscriptions::latency(t).await,
        "sub-webhook-latency" => subscriptions::webhook_latency(t).await,
        "sub-throughput" => {
            subscriptions::throughput(t, sizes.sub_streams_per_shard, sizes.sub_events).await
        }
        "state-memory" => {
            state::materialize_rate(t, false, sizes.state_changes, sizes.state_keys).await
        }
        "state-sqlite" => {
            state::materialize_rate(t, true, sizes.state_changes, sizes.state_keys).await
        }
        "state-rss" => state::rss(t, sizes.state_rss_updates, sizes.state_keys).await,
        other => Err(format!("unknown scenario {other}")),
    }
}

/// Run `dstream bench`.
pub async fn run(args: BenchArgs) -> Result<(), CliError> {
    if let Some(kind) = &args.fanout_child {
        let url = args.fanout_url.as_deref().unwrap_or_default();
        let n = args.fanout_n.unwrap_or(1).max(1);
        return fanout::child(kind, url, n, args.fanout_appends)
            .await
            .map_err(failed);
    }
    if let Some(kind) = &args.state_child {
        let url = args.state_url.as_deref().unwrap_or_default();
        return state::child(kind, url, args.state_count.unwrap_or(0))
            .await
            .map_err(failed);
    }
    let sizes = Sizes::new(args.quick);
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 5 }) as usize;
    let samples = args.samples.unwrap_or(if args.quick { 20 } else { 100 }) as usize;
    let selected: Vec<&str> = SCENARIOS
        .iter()
        .copied()
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| s.contains(o.as_str())))
        .collect();
    if selected.is_empty() {
        return Err(CliError::new(
            exit::USAGE,
            format!(
                "--only matches no scenario (scenarios: {})",
                SCENARIOS.join(", ")
            ),
        ));
    }

    let mut notes: Vec<String> = Vec::new();
    let mut servers: Vec<TestServer> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    let target = |label: &str, base: &str| Target {
        label: label.to_owned(),
        base: base.trim_end_matches('/').to_owned(),
        rounds,
        samples,
    };
    if let Some(url) = explicit_url() {
        targets.push(target("external", &url));
    } else {
        let kinds = match args.server {
            ServerArg::Rust => vec![ServerKind::Rust],
            ServerArg::Node => vec![ServerKind::Node],
            ServerArg::Both => vec![ServerKind::Rust, ServerKind::Node],
        };
        for kind in kinds {
            if !kind.is_available() {
                let msg = format!(
                    "the {kind} server is not installed (run scripts/install-servers.sh); skipped"
                );
                if args.server != ServerArg::Both {
                    return Err(failed(msg));
                }
                eprintln!("note: {msg}");
                notes.push(msg);
                continue;
            }
            eprintln!("starting the {kind} server");
            let server = TestServer::try_start_with(
                kind,
                ServerOptions {
                    // Long enough that no long-poll expires during a sample.
                    long_poll_timeout_ms: 10_000,
                    durability_memory: true,
                    // Node: webhook subscriptions for sub-webhook-latency.
                    webhooks: true,
                    ..ServerOptions::default()
                },
            )
            .map_err(|e| failed(format!("starting the {kind} server: {e}")))?;
            targets.push(target(kind.as_str(), server.base_url()));
            servers.push(server);
        }
    }
    if targets.is_empty() {
        return Err(failed("no server to measure"));
    }

    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for t in &targets {
        // Whether the server has subscriptions, asked once (sub-* only).
        let mut subscriptions: Option<bool> = None;
        for name in &selected {
            if name.starts_with("sub-") {
                if subscriptions.is_none() {
                    match subscriptions::supported(t).await {
                        Ok(yes) => subscriptions = Some(yes),
                        Err(e) => {
                            let msg = format!("[{}] {name}: {e}", t.label);
                            eprintln!("  error: {msg}");
                            errors.push(msg);
                            continue;
                        }
                    }
                }
                if subscriptions == Some(false) {
                    let msg = format!(
                        "[{}] {name}: skipped, the server does not support subscriptions",
                        t.label
                    );
                    eprintln!("  note: {msg}");
                    notes.push(msg);
                    continue;
                }
            }
            let at = Instant::now();
            match run_scenario(t, name, &sizes).await {
                Ok(r) => rows.extend(r),
                Err(e) => {
                    let msg = format!("[{}] {name}: {e}", t.label);
                    eprintln!("  error: {msg}");
                    errors.push(msg);
                }
            }
            eprintln!("  [{}] {name}: {:.1}s", t.label, at.elapsed().as_secs_f64());
        }
    }
    drop(servers);
    for row in &rows {
        if let Some(note) = &row.note
            && !notes.contains(note)
        {
            notes.push(note.clone());
        }
    }

    let title = format!(
        "dstream bench{}: durable-streams-client {} vs raw hyper",
        if args.quick { " --quick" } else { "" },
        env!("CARGO_PKG_VERSION")
    );
    println!("{title} ({rounds} rounds, {samples} latency samples per round)");
    print!("{}", report::table(&rows));
    for note in &notes {
        println!("note: {note}");
    }

    let doc = json!({
        "tool": "dstream bench",
        "version": env!("CARGO_PKG_VERSION"),
        "quick": args.quick,
        "rounds": rounds,
        "samples_per_round": samples,
        "servers": targets.iter().map(|t| t.label.as_str()).collect::<Vec<_>>(),
        "finished_unix_s": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "elapsed_s": started.elapsed().as_secs_f64(),
        "scenarios": selected,
        "notes": notes,
        "errors": errors,
        "results": rows,
    });
    std::fs::create_dir_all(&args.out)
        .map_err(|e| CliError::io(&format!("create {}", args.out.display()), &e))?;
    let json_path = args.out.join("bench.json");
    let svg_path = args.out.join("bench.svg");
    let text = serde_json::to_string_pretty(&doc).map_err(|e| failed(format!("json: {e}")))?;
    std::fs::write(&json_path, text + "\n")
        .map_err(|e| CliError::io(&json_path.display().to_string(), &e))?;
    std::fs::write(&svg_path, svg::render(&title, &rows))
        .map_err(|e| CliError::io(&svg_path.display().to_string(), &e))?;
    println!("wrote {} and {}", json_path.display(), svg_path.display());
    if errors.is_empty() {
        Ok(())
    } else {
        Err(failed(format!(
            "{} scenario(s) failed: {}",
            errors.len(),
            errors.join("; ")
        )))
    }
}

/// Run `dstream bench ARGS...` (this very binary) as a child process and
/// parse the JSON report on the last line of its stdout. Memory scenarios
/// measure each side in a fresh process; `what` names it in errors.
pub(crate) async fn run_self_child<T: serde::de::DeserializeOwned>(
    what: String,
    args: Vec<String>,
) -> Result<T, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(exe)
            .arg("bench")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
    })
    .await
    .map_err(|e| format!("{what}: {e}"))?
    .map_err(|e| format!("{what}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("{what} output: {e}"))
}
