//! `conformance`: a strict runner for the Durable Streams client-conformance
//! YAML cases.
//!
//! ```text
//! cargo run -p conformance -- --adapter PATH [--cases DIR] [--suite S]... [--tag T]...
//!                             [--case C]... [--timeout-ms MS] [--verbose]
//! ```
//!
//! It starts the Node reference server on 127.0.0.1 with the conformance
//! settings (long-poll timeout 500 ms) through `test-servers`, spawns the
//! adapter executable, sends `init`, and runs every selected case: adapter
//! commands over JSON lines, runner-side HTTP actions, variables, background
//! reads. It prints PASS / FAIL / SKIP per case, grouped by suite, and ends
//! with the line `N passed, N failed, N skipped`. The exit status is 1 when a
//! case failed, 2 on a usage or start-up error, 0 otherwise. When the default
//! cases directory (`shared/conformance/test-cases` beside the workspace) is
//! absent, it says so and exits 2, or 0 when `DS_SKIP_CONFORMANCE=1` (the
//! project's one opt-out for a checkout without the shared/ cases).
//!
//! The formats it implements are `shared/conformance/CASE-FORMAT.md` (YAML)
//! and `shared/conformance/ADAPTER.md` (adapter protocol).
//!
//! # Where this runner is stricter than the authors' Node runner
//!
//! * Every YAML key must be known: an unknown key anywhere (suite, test,
//!   operation, `expect`) makes that file fail to load, and a file that does
//!   not load counts as one failed case. Suite-level `skip`, `headers` on
//!   `close` and `expect` on `inject-error` are rejected for that reason:
//!   the Node runner would silently ignore them.
//! * Every expectation key is checked, including `error`, `success`,
//!   `allSucceed`, `succeedIndices`, `failIndices` and `maxChunks`; content
//!   keys need a successful result of the right type; `status` must be
//!   present; see [`expect`] for the rules.
//! * An adapter step without `expect` must succeed, in `setup` as well as in
//!   `operations`; the Node runner never checks setup results. The one
//!   exception is a setup `append` with an empty payload, which PROTOCOL.md
//!   §5.2 requires the server to reject (public case
//!   `consumer/read-sse-base64.yaml` / `sse-base64-empty-payload` has one);
//!   its failure is printed as a note.
//! * Captures (`storeOffsetAs`, `storeDataAs`, `storeAs`) fail at once when
//!   the value is absent. They work on every result type: `storeOffsetAs`
//!   takes `offset`, or `finalOffset` for close results; `storeAs` stores the
//!   whole result. A background read's own `expect` is checked at `await`.
//! * Every reply must have the ADAPTER §4 envelope: `type` and boolean
//!   `success`; a success echoes the command type; a failure has
//!   `type:"error"`, `commandType`, `errorCode` and `message`.
//! * A stdout line that arrives while no command is pending fails the next
//!   command instead of being dropped.
//! * After a timeout, an exit or an unparseable line, the adapter is killed,
//!   restarted and re-initialised (so its dynamic headers and caches reset),
//!   and that case fails with the reason. An orphaned background read is
//!   drained at the end of its test; an un-awaited one fails the test.
//! * `cleanup` also runs after a failed test, so injected faults are cleared.
//! * Between tests the adapter is NOT told to `clear-dynamic`, exactly like
//!   the Node runner: dynamic headers set by `lifecycle/dynamic-headers.yaml`
//!   stay for the rest of the run (CASE-FORMAT §4.1).
//!
//! # Spec corrections
//!
//! A few public cases expect what PROTOCOL.md forbids (see
//! [`corrections`]). For those the runner checks the protocol's behaviour
//! instead and prints `spec correction:` with the section it rests on. Only
//! the named operation's expectation changes; nothing else is relaxed.
//!
//! # Adapter commands this runner sends
//!
//! One JSON object per line on stdin; exactly one reply line on stdout per
//! command; never a second command before the reply (a background read is
//! followed only by runner-side steps until its `await`). Optional fields
//! are omitted when absent, never `null`. Numbers that are integral are sent
//! as JSON integers.
//!
//! | `type` | fields sent (`?` = only when the case sets it) |
//! |---|---|
//! | `init` | `serverUrl` (`http://127.0.0.1:PORT`, no trailing slash) |
//! | `create` | `path`, `contentType`?, `ttlSeconds`?, `expiresAt`?, `headers`?, `closed`?, `data`? |
//! | `connect` | `path`, `headers`? |
//! | `append` | `path`, `data` (always; base64 when `binary`), `binary` (always), `seq`?, `headers`? |
//! | `idempotent-append` | `path`, `data`, `producerId`, `epoch` (default 0), `autoClaim` (default false), `headers`? |
//! | `idempotent-append-batch` | `path`, `items` (array of strings), `producerId`, `epoch`, `autoClaim`, `maxInFlight`?, `headers`? |
//! | `idempotent-close` | `path`, `producerId`, `epoch`, `data`?, `autoClaim`, `headers`? |
//! | `idempotent-detach` | `path`, `producerId`, `epoch`, `headers`? |
//! | `read` | `path`, `offset`?, `live`? (`false`, `true`, `"long-poll"`, `"sse"`), `timeoutMs`?, `maxChunks`?, `waitForUpToDate`?, `headers`? |
//! | `head` | `path`, `headers`? |
//! | `delete` | `path`, `headers`? |
//! | `close` | `path`, `data`?, `contentType`? |
//! | `set-dynamic-header` | `name`, `valueType`, `initialValue`? |
//! | `set-dynamic-param` | `name`, `valueType` |
//! | `clear-dynamic` | (none) |
//! | `validate` | `target` (object with its own `target` discriminator) |
//! | `shutdown` | (none), at the end of the run |
//!
//! `append-batch` in YAML becomes one `append` per item. `server-append`,
//! `server-close`, `inject-error`, `clear-errors`, `wait`, `set`, `assert`
//! and `await` never reach the adapter.
//!
//! # Replies this runner expects
//!
//! Success: `{"type":<command type>,"success":true,...}`. Failure:
//! `{"type":"error","success":false,"commandType":<command type>,"errorCode":..,"message":..,"status"?:<HTTP status>}`.
//! Put `status` in every reply that has one, **including `close` and error
//! replies**: an expected `status` is a failure when the reply lacks it
//! (cases expect `status: 200` on `close` and on `delete`). The fields the
//! checks read are: `status`; `errorCode`; `message`; read `chunks[].data`,
//! `offset`, `upToDate`, `streamClosed`, `headersSent`, `paramsSent`; head
//! `offset`, `contentType`, `streamClosed`; append `offset`, `duplicate`,
//! `headersSent`, `paramsSent`; idempotent-append `offset`, `duplicate`;
//! close and idempotent-close `finalOffset`; init `features` (booleans
//! `batching`, `sse`, `longPoll`, `auto`, `streaming`, `dynamicHeaders`,
//! `retryOptions`, `batchItems`, `strictZeroValidation`), `clientName`,
//! `clientVersion`.

mod adapter;
mod cases;
mod corrections;
mod execute;
mod expect;
mod server_actions;
mod values;
mod vars;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::adapter::{Adapter, truncate};
use crate::cases::{Category, LoadedFile, Suite, TestCase};
use crate::execute::{Outcome, RunSettings, Runner};
use crate::server_actions::ServerActions;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "conformance",
    about = "Strict Durable Streams client-conformance runner"
)]
struct Cli {
    /// Adapter executable (started with no arguments).
    #[arg(long)]
    adapter: PathBuf,
    /// Directory of YAML cases [default: shared/conformance/test-cases beside
    /// the workspace].
    #[arg(long = "cases", value_name = "DIR")]
    cases_dir: Option<PathBuf>,
    /// Only suites of this category (repeatable).
    #[arg(long = "suite", value_enum, value_name = "S")]
    suites: Vec<Category>,
    /// Only tests whose own or suite tags include this (repeatable).
    #[arg(long = "tag", value_name = "T")]
    tags: Vec<String>,
    /// Only this test: `test-id` or `suite-id/test-id` (repeatable).
    #[arg(long = "case", value_name = "C")]
    case_ids: Vec<String>,
    /// Per-adapter-command timeout; reads get at least their `timeoutMs`
    /// plus 10 s.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    timeout_ms: u64,
    /// Print every operation's result and the adapter's stderr.
    #[arg(long)]
    verbose: bool,
}

/// The reference server's long-poll timeout in conformance mode (ADAPTER
/// §2); two cases rely on its 204 arriving before their 1000 ms read timeout.
const CONFORMANCE_LONG_POLL_TIMEOUT_MS: u64 = 500;

/// `shared/conformance/test-cases` beside the workspace root.
pub fn default_cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/test-cases")
}

/// One suite with the tests the filters kept.
#[derive(Debug)]
struct SelectedSuite<'a> {
    relative_path: &'a str,
    suite: &'a Suite,
    tests: Vec<&'a TestCase>,
}

/// Pass / fail / skip counts.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    passed: usize,
    failed: usize,
    skipped: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cases_dir = match &cli.cases_dir {
        Some(dir) if !dir.is_dir() => {
            eprintln!(
                "conformance: cases directory {} does not exist",
                dir.display()
            );
            return ExitCode::from(2);
        }
        Some(dir) => dir.clone(),
        None => {
            let dir = default_cases_dir();
            if !dir.is_dir() {
                let skip = std::env::var_os("DS_SKIP_CONFORMANCE").is_some_and(|v| v == "1");
                let message = format!(
                    "conformance: no cases to run: the default cases directory {} does not exist \
                     (it is the shared/ checkout beside the workspace; pass --cases DIR to use another)",
                    dir.display()
                );
                if skip {
                    println!("{message}; skipped (DS_SKIP_CONFORMANCE=1)");
                    return ExitCode::SUCCESS;
                }
                eprintln!("{message}; set DS_SKIP_CONFORMANCE=1 to skip the conformance suite");
                return ExitCode::from(2);
            }
            dir
        }
    };
    let mut files = match cases::load_all(&cases_dir) {
        Ok(files) => files,
        Err(error) => {
            eprintln!("conformance: cannot read {}: {error}", cases_dir.display());
            return ExitCode::from(2);
        }
    };
    // Cases whose YAML contradicts PROTOCOL.md are checked against the
    // protocol instead; each correction is printed with its reason.
    let mut corrected: std::collections::HashMap<String, Vec<&'static str>> =
        std::collections::HashMap::new();
    for file in &mut files {
        if let Ok(suite) = &mut file.suite {
            for test in &mut suite.tests {
                let reasons = corrections::apply(test);
                if !reasons.is_empty() {
                    corrected.insert(test.id.clone(), reasons);
                }
            }
        }
    }
    let selected = select(&files, &cli);
    let load_failures: Vec<&LoadedFile> = files.iter().filter(|file| file.suite.is_err()).collect();
    let test_count: usize = selected.iter().map(|suite| suite.tests.len()).sum();
    println!(
        "conformance: {} case file(s) in {}, {test_count} test(s) selected",
        files.len(),
        cases_dir.display()
    );

    if !cli.adapter.is_file() {
        eprintln!(
            "conformance: adapter {} is not a file",
            cli.adapter.display()
        );
        return ExitCode::from(2);
    }

    let started = Instant::now();
    // The server is started outside the async runtime: starting it blocks.
    let options = test_servers::ServerOptions {
        long_poll_timeout_ms: CONFORMANCE_LONG_POLL_TIMEOUT_MS,
        ..test_servers::ServerOptions::default()
    };
    let server =
        match test_servers::TestServer::try_start_with(test_servers::ServerKind::Node, options) {
            Ok(server) => server,
            Err(error) => {
                eprintln!("conformance: cannot start the Node reference server: {error}");
                return ExitCode::from(2);
            }
        };
    println!(
        "server: {} (Node reference server, long-poll timeout 500 ms)",
        server.base_url()
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("conformance: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let settings = RunSettings {
        command_timeout: Duration::from_millis(cli.timeout_ms),
        verbose: cli.verbose,
    };
    let result = runtime.block_on(run(
        &cli.adapter,
        server.base_url(),
        &selected,
        &load_failures,
        &corrected,
        settings,
    ));
    // The runtime goes first so that the adapter process is gone before the
    // server stops.
    drop(runtime);
    drop(server);

    let (tally, failures) = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("conformance: {error}");
            return ExitCode::from(2);
        }
    };
    if !failures.is_empty() {
        println!("\nFailures:");
        for (id, reason) in &failures {
            println!("  {id}: {}", truncate(reason, 400));
        }
    }
    println!("\nFinished in {:.1} s", started.elapsed().as_secs_f64());
    println!(
        "{} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    if tally.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Applies `--suite`, `--tag` and `--case`; suites left without tests are
/// dropped.
fn select<'a>(files: &'a [LoadedFile], cli: &Cli) -> Vec<SelectedSuite<'a>> {
    files
        .iter()
        .filter_map(|file| {
            let suite = file.suite.as_ref().ok()?;
            if !cli.suites.is_empty() && !cli.suites.contains(&suite.category) {
                return None;
            }
            let tests: Vec<&TestCase> = suite
                .tests
                .iter()
                .filter(|test| {
                    cli.tags.is_empty()
                        || cli
                            .tags
                            .iter()
                            .any(|tag| test.tags.contains(tag) || suite.tags.contains(tag))
                })
                .filter(|test| {
                    cli.case_ids.is_empty()
                        || cli.case_ids.iter().any(|wanted| {
                            *wanted == test.id || *wanted == format!("{}/{}", suite.id, test.id)
                        })
                })
                .collect();
            (!tests.is_empty()).then_some(SelectedSuite {
                relative_path: &file.relative_path,
                suite,
                tests,
            })
        })
        .collect()
}

/// Runs the selected tests; returns the tally and the failures by id.
async fn run(
    adapter_path: &Path,
    server_url: &str,
    selected: &[SelectedSuite<'_>],
    load_failures: &[&LoadedFile],
    corrected: &std::collections::HashMap<String, Vec<&'static str>>,
    settings: RunSettings,
) -> Result<(Tally, Vec<(String, String)>), String> {
    let mut tally = Tally::default();
    let mut failures = Vec::new();

    for file in load_failures {
        let error = file.suite.as_ref().err().cloned().unwrap_or_default();
        println!("\nFAIL  {}: cannot load: {error}", file.relative_path);
        tally.failed += 1;
        failures.push((file.relative_path.clone(), format!("cannot load: {error}")));
    }

    let adapter = Adapter::start(adapter_path, server_url, settings.verbose)
        .await
        .map_err(|error| format!("adapter {}: {error}", adapter_path.display()))?;
    let info = adapter.info.clone();
    println!(
        "adapter: {} (client {} {}; features: {})",
        adapter_path.display(),
        info.client_name,
        info.client_version,
        if info.features.is_empty() {
            "none".to_owned()
        } else {
            info.features.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    );
    let server = ServerActions::new(server_url)?;
    let mut runner = Runner::new(adapter, server, settings);

    for selection in selected {
        let suite = selection.suite;
        println!(
            "\n{} [{}] {} ({})",
            selection.relative_path, suite.category, suite.name, suite.id
        );
        let mut suite_tally = Tally::default();
        for test in &selection.tests {
            let report = runner.run_test(suite, test).await;
            let millis = report.duration.as_millis();
            match &report.outcome {
                Outcome::Passed => {
                    suite_tally.passed += 1;
                    println!("  PASS  {} - {} ({millis} ms)", test.id, test.name);
                }
                Outcome::Failed(reason) => {
                    suite_tally.failed += 1;
                    println!("  FAIL  {} - {} ({millis} ms)", test.id, test.name);
                    println!("        {reason}");
                    failures.push((format!("{}/{}", suite.id, test.id), reason.clone()));
                }
                Outcome::Skipped(reason) => {
                    suite_tally.skipped += 1;
                    println!("  SKIP  {} - {}: {reason}", test.id, test.name);
                }
            }
            for note in &report.notes {
                println!("        note: {}", truncate(note, 400));
            }
            for reason in corrected.get(&test.id).into_iter().flatten() {
                println!("        spec correction: {reason}");
            }
        }
        println!(
            "  suite {}: {} pass, {} fail, {} skip",
            suite.id, suite_tally.passed, suite_tally.failed, suite_tally.skipped
        );
        tally.passed += suite_tally.passed;
        tally.failed += suite_tally.failed;
        tally.skipped += suite_tally.skipped;
    }

    let restarts = runner.adapter().restarts;
    if restarts > 0 {
        println!("\nadapter restarts: {restarts}");
    }
    runner.shutdown().await;
    Ok((tally, failures))
}
