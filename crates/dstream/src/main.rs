//! `dstream`: a command line client for Durable Streams servers, a thin
//! layer over the public API of `durable-streams-client`.

#[cfg(feature = "bench")]
mod bench;
mod cli;
mod commands;
mod produce;
mod state;
mod subscription;
mod top;
mod util;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version and usage errors (exit code 2) print themselves.
        Err(e) => e.exit(),
    };
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dstream: cannot start the async runtime: {e}");
            return ExitCode::from(util::exit::OTHER);
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Do not wait for abandoned background work (e.g. a dropped live read).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = std::io::stdout().flush();
            let line = e.one_line();
            if !line.is_empty() {
                eprintln!("dstream: {line}");
            }
            ExitCode::from(e.code)
        }
    }
}

/// Silent by default. `-v` logs each request (a line when its span closes,
/// with status and duration) plus retries and reconnects; `-vv` everything.
/// `RUST_LOG` overrides both.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::fmt::format::FmtSpan;

    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let directives = match (from_env, verbose) {
        (Some(env), _) => env,
        (None, 0) => return,
        (None, 1) => "durable_streams_client=debug,dstream=debug".to_owned(),
        (None, _) => "durable_streams_client=trace,dstream=trace".to_owned(),
    };
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|e| {
        eprintln!("dstream: ignoring RUST_LOG {directives:?}: {e}");
        EnvFilter::new("warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_span_events(FmtSpan::CLOSE)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
