//! Running one test: skip decisions, setup / operations / cleanup, variable
//! substitution, adapter commands, runner-side actions and background reads.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Map, Value as JsonValue, json};

use crate::adapter::{Adapter, truncate};
use crate::cases::{
    AppendBatchOp, AppendOp, AssertOp, Expect, Headers, InjectErrorOp, Operation, ReadOp, Suite,
    TestCase,
};
use crate::expect::{OpResult, ResultOrigin, capture, check};
use crate::server_actions::{ProducerHeaders, ServerActions};
use crate::values::{float_to_json, yaml_to_json, yaml_to_json_text};
use crate::vars::{Variables, random_uuid};

/// Extra time a read command gets beyond its own `timeoutMs`, for the
/// adapter to stop and answer.
const READ_TIMEOUT_MARGIN: Duration = Duration::from_secs(10);

/// Settings that apply to every test.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Per-adapter-command timeout (reads get at least `timeoutMs` + 10 s).
    pub command_timeout: Duration,
    /// Print one line per operation.
    pub verbose: bool,
}

/// How a test ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Passed,
    /// The first failure, with expected vs actual.
    Failed(String),
    /// Not run, with the reason.
    Skipped(String),
}

/// The outcome of one test plus what was noticed along the way.
#[derive(Debug, Clone)]
pub struct TestReport {
    /// Pass, fail or skip.
    pub outcome: Outcome,
    /// Wall time of the test (zero when skipped).
    pub duration: Duration,
    /// Warnings that did not decide the outcome (failed setup steps without
    /// an expectation, cleanup errors, adapter restarts while draining).
    pub notes: Vec<String>,
}

/// Runs tests against one adapter and one server.
#[derive(Debug)]
pub struct Runner {
    adapter: Adapter,
    server: ServerActions,
    settings: RunSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Operations,
    Cleanup,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Operations => "operations",
            Phase::Cleanup => "cleanup",
        }
    }
}

/// Per-test state, cleared before every test (CASE-FORMAT §6.2).
#[derive(Debug, Default)]
struct TestState {
    vars: Variables,
    /// Background reads by `as` name, with the read's own expectation.
    background: HashMap<String, Option<Expect>>,
    notes: Vec<String>,
}

impl Runner {
    /// A runner over a started adapter and the server's HTTP client.
    pub fn new(adapter: Adapter, server: ServerActions, settings: RunSettings) -> Self {
        Runner {
            adapter,
            server,
            settings,
        }
    }

    /// The adapter, for its init info and restart count.
    pub fn adapter(&self) -> &Adapter {
        &self.adapter
    }

    /// Shuts the adapter down.
    pub async fn shutdown(self) {
        self.adapter.shutdown().await;
    }

    /// Runs one test of `suite` (CASE-FORMAT §4.3).
    pub async fn run_test(&mut self, suite: &Suite, test: &TestCase) -> TestReport {
        let skipped = |reason: String| TestReport {
            outcome: Outcome::Skipped(reason),
            duration: Duration::ZERO,
            notes: Vec::new(),
        };
        // Precedence as in the Node runner: suite features, then `skip`,
        // then the test's own features.
        if let Some(missing) = missing_features(&suite.requires, &self.adapter.info.features) {
            return skipped(missing);
        }
        if let Some(reason) = test.skip.as_ref().and_then(|skip| skip.reason()) {
            return skipped(reason);
        }
        if let Some(missing) = missing_features(&test.requires, &self.adapter.info.features) {
            return skipped(missing);
        }

        let started = Instant::now();
        let mut state = TestState::default();
        let mut outcome = match self.run_phases(test, &mut state).await {
            Ok(()) => Outcome::Passed,
            Err(message) => Outcome::Failed(message),
        };

        // A background read nobody awaited was never checked; and its reply
        // must be drained so it is not paired with the next command.
        let mut unawaited: Vec<&String> = state.background.keys().collect();
        unawaited.sort();
        if !unawaited.is_empty() && outcome == Outcome::Passed {
            outcome = Outcome::Failed(format!(
                "background read(s) never awaited: {}",
                unawaited
                    .iter()
                    .map(|name| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        state.background.clear();
        if let Some(note) = self.adapter.discard_pending().await {
            state.notes.push(note);
        }

        // Cleanup runs after failures too (the Node runner skips it then), so
        // injected faults are always cleared. Its errors are only notes.
        for operation in &test.cleanup {
            if let Err(error) = self
                .run_operation(operation, Phase::Cleanup, &mut state)
                .await
            {
                state
                    .notes
                    .push(format!("cleanup {}: {error}", operation.action()));
            }
        }
        if let Some(note) = self.adapter.discard_pending().await {
            state.notes.push(note);
        }

        TestReport {
            outcome,
            duration: started.elapsed(),
            notes: state.notes,
        }
    }

    async fn run_phases(&mut self, test: &TestCase, state: &mut TestState) -> Result<(), String> {
        for (index, operation) in test.setup.iter().enumerate() {
            self.run_operation(operation, Phase::Setup, state)
                .await
                .map_err(|error| {
                    format!(
                        "Setup failed at step {} ({}): {error}",
                        index + 1,
                        operation.action()
                    )
                })?;
        }
        for (index, operation) in test.operations.iter().enumerate() {
            self.run_operation(operation, Phase::Operations, state)
                .await
                .map_err(|error| {
                    format!("operation {} ({}): {error}", index + 1, operation.action())
                })?;
        }
        Ok(())
    }

    /// Executes one operation and checks its result.
    async fn run_operation(
        &mut self,
        operation: &Operation,
        phase: Phase,
        state: &mut TestState,
    ) -> Result<(), String> {
        let mut expectations: Vec<Expect> = operation.expect().into_iter().cloned().collect();
        if let Operation::Await(await_op) = operation {
            // The read's own `expect` is checked here too; the Node runner
            // never checks it.
            if let Some(Some(read_expect)) = state.background.get(&await_op.background_name) {
                expectations.insert(0, read_expect.clone());
            }
        }

        let Some(result) = self.execute(operation, state).await? else {
            return Ok(());
        };
        if self.settings.verbose {
            println!(
                "      {} {}: {}",
                phase.name(),
                operation.action(),
                truncate(&result.value.to_string(), 240)
            );
        }

        if expectations.is_empty() {
            // An adapter step without `expect` is still expected to work,
            // in setup too: a test whose preparation failed proves nothing.
            // The one exception is an append with an empty payload, which
            // PROTOCOL.md §5.2 requires the server to reject with 400; a
            // public case has one in setup (`sse-base64-empty-payload`).
            if result.origin != ResultOrigin::RunnerHttp && result.value["success"] != json!(true) {
                let message = format!(
                    "unexpected failure: {}",
                    truncate(&result.value.to_string(), 400)
                );
                if phase == Phase::Setup && is_empty_append(operation) {
                    state.notes.push(format!(
                        "setup append with an empty payload failed, as PROTOCOL.md §5.2 \
                         requires: {message}"
                    ));
                } else {
                    return Err(message);
                }
            }
            return Ok(());
        }
        for expect in &expectations {
            if phase != Phase::Cleanup {
                let mismatches = check(expect, &result);
                if !mismatches.is_empty() {
                    return Err(mismatches.join("; "));
                }
            }
            capture(expect, &result, &mut state.vars)?;
        }
        Ok(())
    }

    /// Performs the action. `Ok(None)` means the action has no result.
    async fn execute(
        &mut self,
        operation: &Operation,
        state: &mut TestState,
    ) -> Result<Option<OpResult>, String> {
        let vars = &mut state.vars;
        let timeout = self.settings.command_timeout;
        let command = match operation {
            Operation::Create(op) => {
                let path = match op.path.as_deref() {
                    Some(path) if !path.is_empty() => vars.substitute(path)?,
                    _ => format!("/test-stream-{}", random_uuid()),
                };
                // Set before the command is sent, so it exists even when the
                // create fails.
                if let Some(name) = &op.store_path_as {
                    vars.set(name, path.clone().into());
                }
                let mut command = command("create", &path);
                insert_opt(&mut command, "contentType", op.content_type.clone());
                insert_opt(&mut command, "ttlSeconds", op.ttl_seconds);
                insert_opt(&mut command, "expiresAt", op.expires_at.clone());
                insert_headers(&mut command, op.headers.as_ref());
                insert_opt(&mut command, "closed", op.closed);
                insert_opt(&mut command, "data", op.data.clone());
                command
            }
            Operation::Connect(op) | Operation::Head(op) | Operation::Delete(op) => {
                let mut command = command(operation.action(), &vars.substitute(&op.path)?);
                insert_headers(&mut command, op.headers.as_ref());
                command
            }
            Operation::Append(op) => append_command(op, vars)?,
            Operation::AppendBatch(op) => {
                self.ensure_idle("append-batch", state)?;
                return self.append_batch(op, &state.vars).await.map(Some);
            }
            Operation::IdempotentAppend(op) => {
                let mut command = command("idempotent-append", &vars.substitute(&op.path)?);
                command.insert("data".into(), vars.substitute(&op.data)?.into());
                command.insert("producerId".into(), op.producer_id.clone().into());
                command.insert("epoch".into(), op.epoch.unwrap_or(0).into());
                command.insert("autoClaim".into(), op.auto_claim.unwrap_or(false).into());
                insert_headers(&mut command, op.headers.as_ref());
                command
            }
            Operation::IdempotentAppendBatch(op) => {
                let mut command = command("idempotent-append-batch", &vars.substitute(&op.path)?);
                let items = op
                    .items
                    .iter()
                    .map(|item| vars.substitute(&item.data).map(JsonValue::String))
                    .collect::<Result<Vec<_>, _>>()?;
                command.insert("items".into(), items.into());
                command.insert("producerId".into(), op.producer_id.clone().into());
                command.insert("epoch".into(), op.epoch.unwrap_or(0).into());
                command.insert("autoClaim".into(), op.auto_claim.unwrap_or(false).into());
                insert_opt(&mut command, "maxInFlight", op.max_in_flight);
                insert_headers(&mut command, op.headers.as_ref());
                command
            }
            Operation::IdempotentClose(op) => {
                let mut command = command("idempotent-close", &vars.substitute(&op.path)?);
                command.insert("producerId".into(), op.producer_id.clone().into());
                command.insert("epoch".into(), op.epoch.unwrap_or(0).into());
                if let Some(data) = op.data.as_deref().filter(|data| !data.is_empty()) {
                    command.insert("data".into(), vars.substitute(data)?.into());
                }
                command.insert("autoClaim".into(), op.auto_claim.unwrap_or(false).into());
                insert_headers(&mut command, op.headers.as_ref());
                command
            }
            Operation::IdempotentDetach(op) => {
                let mut command = command("idempotent-detach", &vars.substitute(&op.path)?);
                command.insert("producerId".into(), op.producer_id.clone().into());
                command.insert("epoch".into(), op.epoch.unwrap_or(0).into());
                insert_headers(&mut command, op.headers.as_ref());
                command
            }
            Operation::Read(op) => {
                let command = read_command(op, vars)?;
                let timeout = read_timeout(timeout, op.timeout_ms);
                let background_name = op
                    .background_name
                    .as_deref()
                    .filter(|name| op.background == Some(true) && !name.is_empty());
                if let Some(name) = background_name {
                    self.ensure_idle("read", state)?;
                    self.adapter
                        .send(&JsonValue::Object(command), timeout)
                        .await?;
                    state.background.insert(name.to_owned(), op.expect.clone());
                    return Ok(None);
                }
                self.ensure_idle("read", state)?;
                let reply = self
                    .adapter
                    .request(&JsonValue::Object(command), timeout)
                    .await?;
                return Ok(Some(OpResult::adapter(reply)));
            }
            Operation::Close(op) => {
                let mut command = command("close", &vars.substitute(&op.path)?);
                insert_opt(&mut command, "data", op.data.clone());
                insert_opt(&mut command, "contentType", op.content_type.clone());
                command
            }
            Operation::SetDynamicHeader(op) => {
                let mut command = bare_command("set-dynamic-header");
                command.insert("name".into(), op.name.clone().into());
                command.insert("valueType".into(), op.value_type.clone().into());
                insert_opt(&mut command, "initialValue", op.initial_value.clone());
                command
            }
            Operation::SetDynamicParam(op) => {
                let mut command = bare_command("set-dynamic-param");
                command.insert("name".into(), op.name.clone().into());
                command.insert("valueType".into(), op.value_type.clone().into());
                command
            }
            Operation::ClearDynamic(_) => bare_command("clear-dynamic"),
            Operation::Validate(op) => {
                let mut command = bare_command("validate");
                command.insert("target".into(), yaml_to_json(&op.target)?);
                command
            }
            Operation::ServerAppend(op) => {
                let path = vars.substitute(&op.path)?;
                let data = vars.substitute(&op.data)?;
                let producer = ProducerHeaders {
                    id: op.producer_id.as_deref(),
                    epoch: op.producer_epoch,
                    seq: op.producer_seq,
                };
                let result = self
                    .server
                    .append(&path, &data, op.headers.as_ref(), producer)
                    .await?;
                return Ok(Some(OpResult::runner_http(result)));
            }
            Operation::ServerClose(op) => {
                let path = vars.substitute(&op.path)?;
                let result = self
                    .server
                    .close(
                        &path,
                        op.data.as_deref(),
                        op.content_type.as_deref(),
                        op.headers.as_ref(),
                    )
                    .await?;
                return Ok(Some(OpResult::runner_http(result)));
            }
            Operation::InjectError(op) => {
                let fault = fault_body(op, vars)?;
                self.server.inject_error(&fault).await?;
                return Ok(None);
            }
            Operation::ClearErrors(_) => {
                self.server.clear_errors().await?;
                return Ok(None);
            }
            Operation::Wait(op) => {
                tokio::time::sleep(Duration::from_millis(op.ms)).await;
                return Ok(None);
            }
            Operation::Set(op) => {
                let value = vars.substitute(&op.value)?;
                vars.set(&op.name, value.into());
                return Ok(None);
            }
            Operation::Assert(op) => {
                run_assert(op, vars)?;
                return Ok(None);
            }
            Operation::Await(op) => {
                if state.background.remove(&op.background_name).is_none() {
                    return Err(format!(
                        "No background operation found with ref: {}",
                        op.background_name
                    ));
                }
                let reply = self.adapter.receive().await?;
                return Ok(Some(OpResult::adapter(reply)));
            }
        };
        self.ensure_idle(operation.action(), state)?;
        let reply = self
            .adapter
            .request(&JsonValue::Object(command), timeout)
            .await?;
        Ok(Some(OpResult::adapter(reply)))
    }

    /// Refuses an adapter command while a background read is outstanding:
    /// the channel carries one command at a time (CASE-FORMAT §9).
    fn ensure_idle(&self, action: &str, state: &TestState) -> Result<(), String> {
        if self.adapter.has_pending() {
            let mut names: Vec<&str> = state.background.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(format!(
                "adapter command `{action}` while background read `{}` is outstanding \
                 (one command in flight only; await it first)",
                names.join(", ")
            ));
        }
        Ok(())
    }

    /// `append-batch`: one adapter `append` per item, every item even after
    /// a failure, combined into one result.
    async fn append_batch(
        &mut self,
        op: &AppendBatchOp,
        vars: &Variables,
    ) -> Result<OpResult, String> {
        let path = vars.substitute(&op.path)?;
        let mut replies = Vec::with_capacity(op.items.len());
        for item in &op.items {
            let mut command = command("append", &path);
            // `binaryData ?? data ?? ""`: an empty binaryData is an empty
            // text append.
            let data = item
                .binary_data
                .clone()
                .or_else(|| item.data.clone())
                .unwrap_or_default();
            let binary = item
                .binary_data
                .as_deref()
                .is_some_and(|binary| !binary.is_empty());
            command.insert("data".into(), data.into());
            command.insert("binary".into(), binary.into());
            insert_opt(&mut command, "seq", item.seq);
            insert_headers(&mut command, op.headers.as_ref());
            let reply = self
                .adapter
                .request(&JsonValue::Object(command), self.settings.command_timeout)
                .await?;
            replies.push(reply);
        }
        Ok(OpResult::batch(replies))
    }
}

/// Whether the operation is an `append` whose payload is empty (an empty or
/// absent `binaryData`, no `json`, and an empty or absent `data`).
fn is_empty_append(operation: &Operation) -> bool {
    match operation {
        Operation::Append(op) => {
            op.json.is_none()
                && op.binary_data.as_deref().is_none_or(str::is_empty)
                && op.data.as_deref().is_none_or(str::is_empty)
        }
        _ => false,
    }
}

/// `missing features: a, b` when any of `required` is not enabled.
fn missing_features(required: &[String], enabled: &BTreeSet<String>) -> Option<String> {
    let missing: Vec<&str> = required
        .iter()
        .filter(|name| feature_key(name).is_none_or(|key| !enabled.contains(key)))
        .map(String::as_str)
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!("missing features: {}", missing.join(", ")))
    }
}

/// The init feature key for a YAML feature name (ADAPTER §8); unknown names
/// count as missing.
pub fn feature_key(name: &str) -> Option<&'static str> {
    Some(match name {
        "batching" => "batching",
        "sse" => "sse",
        "long-poll" | "longPoll" => "longPoll",
        "auto" => "auto",
        "streaming" => "streaming",
        "dynamicHeaders" | "dynamic-headers" => "dynamicHeaders",
        "retryOptions" | "retry-options" => "retryOptions",
        "batchItems" | "batch-items" => "batchItems",
        "strictZeroValidation" | "strict-zero-validation" => "strictZeroValidation",
        _ => return None,
    })
}

fn read_timeout(base: Duration, read_timeout_ms: Option<u64>) -> Duration {
    match read_timeout_ms {
        Some(ms) => base.max(Duration::from_millis(ms) + READ_TIMEOUT_MARGIN),
        None => base,
    }
}

fn bare_command(command_type: &str) -> Map<String, JsonValue> {
    let mut command = Map::new();
    command.insert("type".into(), command_type.into());
    command
}

fn command(command_type: &str, path: &str) -> Map<String, JsonValue> {
    let mut command = bare_command(command_type);
    command.insert("path".into(), path.into());
    command
}

fn insert_opt<T: Into<JsonValue>>(
    command: &mut Map<String, JsonValue>,
    key: &str,
    value: Option<T>,
) {
    if let Some(value) = value {
        command.insert(key.into(), value.into());
    }
}

fn insert_headers(command: &mut Map<String, JsonValue>, headers: Option<&Headers>) {
    if let Some(headers) = headers {
        command.insert("headers".into(), headers.to_json());
    }
}

/// The `append` command (CASE-FORMAT §7.1): payload precedence is
/// `binaryData`, then `json`, then non-empty `data`, then `""`.
fn append_command(op: &AppendOp, vars: &Variables) -> Result<Map<String, JsonValue>, String> {
    let mut command = command("append", &vars.substitute(&op.path)?);
    let (data, binary) = if let Some(binary_data) = &op.binary_data {
        (binary_data.clone(), !binary_data.is_empty())
    } else if let Some(json) = &op.json {
        (yaml_to_json_text(json)?, false)
    } else if let Some(data) = op.data.as_deref().filter(|data| !data.is_empty()) {
        (vars.substitute(data)?, false)
    } else {
        (String::new(), false)
    };
    command.insert("data".into(), data.into());
    command.insert("binary".into(), binary.into());
    insert_opt(&mut command, "seq", op.seq);
    insert_headers(&mut command, op.headers.as_ref());
    Ok(command)
}

/// The `read` command; an empty `offset` means absent.
fn read_command(op: &ReadOp, vars: &Variables) -> Result<Map<String, JsonValue>, String> {
    let mut command = command("read", &vars.substitute(&op.path)?);
    if let Some(offset) = op.offset.as_deref().filter(|offset| !offset.is_empty()) {
        command.insert("offset".into(), vars.substitute(offset)?.into());
    }
    insert_opt(&mut command, "live", op.live.map(|live| live.to_json()));
    insert_opt(&mut command, "timeoutMs", op.timeout_ms);
    insert_opt(&mut command, "maxChunks", op.max_chunks);
    insert_opt(&mut command, "waitForUpToDate", op.wait_for_up_to_date);
    insert_headers(&mut command, op.headers.as_ref());
    Ok(command)
}

/// The JSON body POSTed to `/_test/inject-error`.
fn fault_body(op: &InjectErrorOp, vars: &Variables) -> Result<JsonValue, String> {
    let mut body = Map::new();
    body.insert("path".into(), vars.substitute(&op.path)?.into());
    insert_opt(&mut body, "status", op.status);
    body.insert("count".into(), op.count.unwrap_or(1).into());
    insert_opt(&mut body, "retryAfter", op.retry_after);
    insert_opt(&mut body, "delayMs", op.delay_ms);
    insert_opt(&mut body, "dropConnection", op.drop_connection);
    insert_opt(&mut body, "truncateBodyBytes", op.truncate_body_bytes);
    insert_opt(&mut body, "probability", op.probability.map(float_to_json));
    insert_opt(&mut body, "method", op.method.clone());
    insert_opt(&mut body, "corruptBody", op.corrupt_body);
    insert_opt(&mut body, "jitterMs", op.jitter_ms);
    if let Some(event) = &op.inject_sse_event {
        body.insert(
            "injectSseEvent".into(),
            json!({"eventType": event.event_type, "data": event.data}),
        );
    }
    Ok(JsonValue::Object(body))
}

/// `assert`: equals, notEquals, contains, matches, in that order.
fn run_assert(op: &AssertOp, vars: &Variables) -> Result<(), String> {
    let fail = |default: String| Err(op.message.clone().unwrap_or(default));
    if let Some(pair) = &op.equals {
        let (left, right) = (vars.substitute(&pair.left)?, vars.substitute(&pair.right)?);
        if left != right {
            return fail(format!(
                "Assertion failed: expected \"{left}\" to equal \"{right}\""
            ));
        }
    }
    if let Some(pair) = &op.not_equals {
        let (left, right) = (vars.substitute(&pair.left)?, vars.substitute(&pair.right)?);
        if left == right {
            return fail(format!(
                "Assertion failed: expected \"{left}\" to not equal \"{right}\""
            ));
        }
    }
    if let Some(check) = &op.contains {
        let (value, substring) = (
            vars.substitute(&check.value)?,
            vars.substitute(&check.substring)?,
        );
        if !value.contains(substring.as_str()) {
            return fail(format!(
                "Assertion failed: expected \"{value}\" to contain \"{substring}\""
            ));
        }
    }
    if let Some(check) = &op.matches {
        let value = vars.substitute(&check.value)?;
        // Rust regex syntax, which covers what JS patterns without
        // lookaround or backreferences mean; those are rejected as invalid.
        let pattern = regex::Regex::new(&check.pattern)
            .map_err(|_| format!("Invalid regex pattern: {}", check.pattern))?;
        if !pattern.is_match(&value) {
            return fail(format!(
                "Assertion failed: expected \"{value}\" to match /{}/",
                check.pattern
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::parse_suite;

    fn operations(yaml_ops: &str) -> Vec<Operation> {
        let text = format!(
            "id: s\nname: S\ncategory: producer\ntests:\n  - id: t\n    name: T\n    operations:\n{yaml_ops}"
        );
        parse_suite(&text).unwrap().tests.remove(0).operations
    }

    #[test]
    fn append_payload_precedence() {
        let mut vars = Variables::default();
        vars.set("x", "X".into());
        let ops = operations(
            "      - {action: append, path: /p, binaryData: AQID, json: {a: 1}, data: d}
      - {action: append, path: /p, json: {b: 2.0, a: [1]}, data: d}
      - {action: append, path: /p, data: \"${x}y\", seq: 3}
      - {action: append, path: /p, binaryData: \"\"}
      - {action: append, path: /p}
",
        );
        let commands: Vec<JsonValue> = ops
            .iter()
            .map(|op| match op {
                Operation::Append(op) => JsonValue::Object(append_command(op, &vars).unwrap()),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(
            commands[0],
            json!({"type": "append", "path": "/p", "data": "AQID", "binary": true})
        );
        assert_eq!(commands[1]["data"], json!(r#"{"b":2,"a":[1]}"#));
        assert_eq!(
            commands[2],
            json!({"type": "append", "path": "/p", "data": "Xy", "binary": false, "seq": 3})
        );
        assert_eq!(commands[3]["data"], json!(""));
        assert_eq!(commands[3]["binary"], json!(false));
        assert_eq!(commands[4]["data"], json!(""));
    }

    #[test]
    fn read_command_fields() {
        let mut vars = Variables::default();
        vars.set("o", "0_5".into());
        let ops = operations(
            "      - {action: read, path: /p, offset: \"${o}\", live: false, timeoutMs: 1000, maxChunks: 2, waitForUpToDate: true, headers: {A: b}}
      - {action: read, path: /p, offset: \"\"}
",
        );
        let Operation::Read(first) = &ops[0] else {
            unreachable!()
        };
        assert_eq!(
            JsonValue::Object(read_command(first, &vars).unwrap()),
            json!({"type": "read", "path": "/p", "offset": "0_5", "live": false,
                   "timeoutMs": 1000, "maxChunks": 2, "waitForUpToDate": true,
                   "headers": {"A": "b"}})
        );
        let Operation::Read(second) = &ops[1] else {
            unreachable!()
        };
        assert_eq!(
            JsonValue::Object(read_command(second, &vars).unwrap()),
            json!({"type": "read", "path": "/p"})
        );
    }

    #[test]
    fn fault_body_defaults_count_and_substitutes_path() {
        let mut vars = Variables::default();
        vars.set("p", "/s".into());
        let ops = operations(
            "      - {action: inject-error, path: \"${p}\", status: 503, retryAfter: 1, probability: 1.0, injectSseEvent: {eventType: control, data: \"\"}}\n",
        );
        let Operation::InjectError(op) = &ops[0] else {
            unreachable!()
        };
        assert_eq!(
            fault_body(op, &vars).unwrap(),
            json!({"path": "/s", "status": 503, "count": 1, "retryAfter": 1, "probability": 1,
                   "injectSseEvent": {"eventType": "control", "data": ""}})
        );
    }

    #[test]
    fn feature_names_map_and_unknown_is_missing() {
        let enabled: BTreeSet<String> = ["longPoll", "sse"].iter().map(|s| s.to_string()).collect();
        assert_eq!(
            missing_features(&["long-poll".into(), "sse".into()], &enabled),
            None
        );
        assert_eq!(
            missing_features(&["json".into(), "batching".into()], &enabled),
            Some("missing features: json, batching".to_owned())
        );
    }

    #[test]
    fn assertions() {
        let mut vars = Variables::default();
        vars.set("a", "0_5".into());
        let ops = operations(
            "      - {action: assert, equals: {left: \"${a}\", right: \"0_5\"}, contains: {value: abc, substring: b}, matches: {value: \"${a}\", pattern: \"^0_[0-9]+$\"}}
      - {action: assert, notEquals: {left: \"${a}\", right: \"0_5\"}, message: custom}
      - {action: assert, matches: {value: x, pattern: \"(\"}, message: custom}
",
        );
        let asserts: Vec<&AssertOp> = ops
            .iter()
            .map(|op| match op {
                Operation::Assert(op) => op,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(run_assert(asserts[0], &vars), Ok(()));
        assert_eq!(run_assert(asserts[1], &vars), Err("custom".to_owned()));
        assert_eq!(
            run_assert(asserts[2], &vars),
            Err("Invalid regex pattern: (".to_owned())
        );
    }

    #[test]
    fn read_timeouts_cover_the_read_duration() {
        let base = Duration::from_secs(30);
        assert_eq!(read_timeout(base, None), base);
        assert_eq!(read_timeout(base, Some(1000)), base);
        assert_eq!(read_timeout(base, Some(60_000)), Duration::from_secs(70));
    }
}
