//! `conformance-adapter`: the JSON-lines adapter that lets the Durable
//! Streams client-conformance runners (ours in `crates/conformance`, and the
//! protocol authors' Node runner) drive `durable-streams-client`.
//!
//! Protocol: `shared/conformance/ADAPTER.md`. One command per stdin line, one
//! reply line per command on stdout (flushed at once); logs go to stderr.
//! Every operation goes through the library's public API only.
//!
//! Modules: [`commands`] (one function per command, per-process state),
//! [`read`] (the read command's stopping rules), [`dynamic`] (dynamic
//! headers and params as per-request closures), [`bench`] (benchmark
//! operations), [`errors`] (error codes and the error envelope).
//!
//! With `CONFORMANCE_ADAPTER_BROKEN=1` in the environment the adapter answers
//! `init` normally and every other command with an error result (used to
//! prove that the runner can fail; `shutdown` still ends the process).

mod bench;
mod commands;
mod dynamic;
mod errors;
mod read;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::commands::{Reply, State};
use crate::errors::Failure;

/// Environment variable that turns on the deliberately broken mode.
const BROKEN_ENV: &str = "CONFORMANCE_ADAPTER_BROKEN";

/// Whether [`BROKEN_ENV`] asks for the broken mode (`1`, `true`, `yes`).
fn broken_mode() -> bool {
    std::env::var(BROKEN_ENV).is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
}

/// Route one command to its handler.
async fn dispatch(state: &mut State, command_type: &str, command: &Value) -> Reply {
    match command_type {
        "init" => commands::init(state, command),
        "create" => commands::create(state, command).await,
        "connect" => commands::connect(state, command).await,
        "append" => commands::append(state, command).await,
        "read" => commands::read(state, command).await,
        "head" => commands::head(state, command).await,
        "delete" => commands::delete(state, command).await,
        "close" => commands::close(state, command).await,
        "idempotent-append" => commands::idempotent_append(state, command).await,
        "idempotent-append-batch" => commands::idempotent_append_batch(state, command).await,
        "idempotent-close" => commands::idempotent_close(state, command).await,
        "idempotent-detach" => commands::idempotent_detach(state, command).await,
        "set-dynamic-header" => commands::set_dynamic_header(state, command),
        "set-dynamic-param" => commands::set_dynamic_param(state, command),
        "clear-dynamic" => commands::clear_dynamic(state),
        "validate" => commands::validate(command),
        "benchmark" => bench::benchmark(state, command).await,
        "shutdown" => commands::shutdown(),
        other => Err(Failure::not_supported(format!("unknown command {other:?}"))),
    }
}

/// Handle one input line; returns the reply and whether to exit afterwards.
async fn handle_line(state: &mut State, line: &str, broken: bool) -> (Value, bool) {
    let command: Value = match serde_json::from_str(line) {
        Ok(value @ Value::Object(_)) => value,
        Ok(_) | Err(_) => {
            let reply = Failure::invalid_argument(format!(
                "input line is not a JSON object: {}",
                line.chars().take(200).collect::<String>()
            ))
            .into_reply("unknown");
            return (reply, false);
        }
    };
    let command_type = command
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_owned();
    let exit = command_type == "shutdown";
    let result = if broken && command_type != "init" {
        Err(Failure::not_supported(format!(
            "broken mode ({BROKEN_ENV}): {command_type} deliberately fails"
        )))
    } else {
        dispatch(state, &command_type, &command).await
    };
    let reply = result.unwrap_or_else(|failure| {
        eprintln!(
            "conformance-adapter: {command_type} failed: {} {}",
            failure.code, failure.message
        );
        failure.into_reply(&command_type)
    });
    (reply, exit)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let broken = broken_mode();
    if broken {
        eprintln!("conformance-adapter: {BROKEN_ENV} is set: every command but init fails");
    }
    let mut state = State::default();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let (reply, exit) = handle_line(&mut state, &line, broken).await;
        let mut out = serde_json::to_string(&reply).unwrap_or_else(|e| {
            json!({"type": "error", "success": false, "commandType": "unknown",
                   "errorCode": "INTERNAL_ERROR", "message": format!("could not encode the reply: {e}")})
            .to_string()
        });
        out.push('\n');
        stdout.write_all(out.as_bytes()).await?;
        stdout.flush().await?;
        if exit {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(line: &str, broken: bool) -> Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut state = State::default();
        rt.block_on(async {
            handle_line(
                &mut state,
                r#"{"type":"init","serverUrl":"http://127.0.0.1:9"}"#,
                broken,
            )
            .await;
            handle_line(&mut state, line, broken).await.0
        })
    }

    #[test]
    fn init_advertises_every_feature() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut state = State::default();
        for broken in [false, true] {
            let (reply, exit) = rt.block_on(handle_line(
                &mut state,
                r#"{"type":"init","serverUrl":"http://127.0.0.1:9"}"#,
                broken,
            ));
            assert!(!exit);
            assert_eq!(reply["type"], "init");
            assert_eq!(reply["success"], true);
            let features = reply["features"].as_object().unwrap();
            assert_eq!(features.len(), 9);
            assert!(features.values().all(|v| v == &json!(true)));
        }
    }

    #[test]
    fn broken_mode_fails_everything_but_init() {
        let reply = run(r#"{"type":"clear-dynamic"}"#, true);
        assert_eq!(reply["type"], "error");
        assert_eq!(reply["commandType"], "clear-dynamic");
        assert_eq!(reply["errorCode"], "NOT_SUPPORTED");
        assert_eq!(run(r#"{"type":"clear-dynamic"}"#, false)["success"], true);
    }

    #[test]
    fn producer_commands_validate_their_fields() {
        for t in [
            "idempotent-append",
            "idempotent-append-batch",
            "idempotent-close",
            "idempotent-detach",
        ] {
            // No producerId: a well-formed INVALID_ARGUMENT error, no request.
            let reply = run(&format!(r#"{{"type":"{t}","path":"/x"}}"#), false);
            assert_eq!(reply["type"], "error");
            assert_eq!(reply["success"], false);
            assert_eq!(reply["commandType"], t);
            assert_eq!(reply["errorCode"], "INVALID_ARGUMENT");
        }
    }

    #[test]
    fn garbage_and_unknown_commands() {
        assert_eq!(run("not json", false)["errorCode"], "INVALID_ARGUMENT");
        let reply = run(r#"{"type":"frobnicate"}"#, false);
        assert_eq!(reply["commandType"], "frobnicate");
        assert_eq!(reply["errorCode"], "NOT_SUPPORTED");
    }
}
