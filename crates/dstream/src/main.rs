//! `dstream`: a command line client for Durable Streams servers, a thin
//! layer over the public API of `durable-streams-client`.

#[cfg(feature = "bench")]
mod bench;
mod cli;
mod commands;
mod produce;
mod state;
mod subscription;
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
