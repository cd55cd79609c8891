//! The expectation matcher and the capture directives (CASE-FORMAT §10, §6.3).
//!
//! Stricter than the Node runner in these ways:
//! * every key is checked, including `error`, `success`, `allSucceed`,
//!   `succeedIndices`, `failIndices` and `maxChunks`;
//! * a key that applies to one kind of result (read data, head metadata,
//!   append producer fields, ...) fails when the result is not a success of
//!   that kind, instead of being skipped;
//! * `status` fails when the result has no `status`;
//! * an adapter result must succeed unless the expectation says it should
//!   fail (`errorCode`, `messageContains`, `errorContains`, `valid: false`,
//!   `error: true`, `success: false`, `allSucceed: false`, `failIndices`, or
//!   a `status` of 400 or more), and must fail when `status` is 400 or more;
//! * a capture whose value is absent fails at once.
//!
//! Results the runner builds from its own HTTP requests (`server-append`,
//! `server-close`) always have `success: true`; for them the HTTP status is
//! the outcome, so the success/failure coupling does not apply.

use serde_json::Value as JsonValue;

use crate::adapter::truncate;
use crate::cases::Expect;
use crate::vars::Variables;

/// Who produced a result; decides how `status` relates to `success`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultOrigin {
    /// The adapter's reply to one command.
    Adapter,
    /// The runner's composite of several adapter replies (`append-batch`).
    Batch,
    /// The runner's own HTTP request (`server-append`, `server-close`).
    RunnerHttp,
}

/// The result of one operation, as checked against its `expect`.
#[derive(Debug, Clone)]
pub struct OpResult {
    /// The result object.
    pub value: JsonValue,
    /// Who produced it.
    pub origin: ResultOrigin,
    /// For `append-batch`: every item's reply, in item order.
    pub batch_items: Option<Vec<JsonValue>>,
}

impl OpResult {
    /// A reply from the adapter.
    pub fn adapter(value: JsonValue) -> Self {
        OpResult {
            value,
            origin: ResultOrigin::Adapter,
            batch_items: None,
        }
    }

    /// A result built from a runner-side HTTP request.
    pub fn runner_http(value: JsonValue) -> Self {
        OpResult {
            value,
            origin: ResultOrigin::RunnerHttp,
            batch_items: None,
        }
    }

    /// The composite result of an `append-batch`, as the Node runner builds
    /// it (`status` 200 if every item succeeded, else 207), keeping the
    /// per-item replies for `succeedIndices` / `failIndices`.
    pub fn batch(items: Vec<JsonValue>) -> Self {
        let all_succeeded = items.iter().all(is_success);
        OpResult {
            value: serde_json::json!({
                "type": "append",
                "success": all_succeeded,
                "status": if all_succeeded { 200 } else { 207 },
            }),
            origin: ResultOrigin::Batch,
            batch_items: Some(items),
        }
    }

    fn success(&self) -> bool {
        is_success(&self.value)
    }

    fn result_type(&self) -> &str {
        self.value["type"].as_str().unwrap_or("<no type>")
    }

    /// Whether this is a successful result of one of `types`.
    fn is_success_of(&self, types: &[&str]) -> bool {
        self.success() && types.contains(&self.result_type())
    }

    fn describe(&self) -> String {
        truncate(&self.value.to_string(), 400)
    }
}

fn is_success(value: &JsonValue) -> bool {
    value["success"] == JsonValue::Bool(true)
}

/// Whether the expectation asserts that the operation fails.
pub fn expects_failure(expect: &Expect) -> bool {
    expect.error_code.is_some()
        || expect.message_contains.is_some()
        || expect.error_contains.is_some()
        || expect.valid == Some(false)
        || expect.error == Some(true)
        || expect.success == Some(false)
        || expect.all_succeed == Some(false)
        || expect
            .fail_indices
            .as_ref()
            .is_some_and(|indices| !indices.is_empty())
        || expect.status.is_some_and(|status| status >= 400)
}

/// Checks `result` against `expect`. Returns every mismatch; empty means the
/// expectation holds.
pub fn check(expect: &Expect, result: &OpResult) -> Vec<String> {
    let mut mismatches = Vec::new();
    let value = &result.value;

    if result.origin != ResultOrigin::RunnerHttp {
        if !expects_failure(expect) && !result.success() {
            // Every other key would repeat this, so report it alone, together
            // with a status mismatch if there is one.
            mismatches.push(format!(
                "expected success, got failure: {}",
                result.describe()
            ));
            if let Some(status) = expect.status {
                check_status(status, result, &mut mismatches);
            }
            return mismatches;
        }
        if expect.status.is_some_and(|status| status >= 400) && result.success() {
            mismatches.push(format!(
                "status {} expects a failure, got success: {}",
                expect.status.unwrap_or_default(),
                result.describe()
            ));
        }
    }

    if let Some(status) = expect.status {
        check_status(status, result, &mut mismatches);
    }
    if let Some(code) = &expect.error_code {
        match error_field(result, "errorCode") {
            Err(why) => mismatches.push(format!("errorCode {code}: {why}")),
            Ok(actual) if actual != *code => {
                mismatches.push(format!("errorCode: expected {code}, got {actual}"));
            }
            Ok(_) => {}
        }
    }
    if let Some(needles) = &expect.message_contains {
        match error_field(result, "message") {
            Err(why) => mismatches.push(format!("messageContains {needles:?}: {why}")),
            Ok(message) => {
                let lowered = message.to_lowercase();
                for needle in needles {
                    if !lowered.contains(&needle.to_lowercase()) {
                        mismatches.push(format!(
                            "messageContains: {needle:?} not in message {message:?}"
                        ));
                    }
                }
            }
        }
    }

    check_read_content(expect, result, &mut mismatches);

    if let Some(closed) = expect.stream_closed {
        if result.is_success_of(&["read", "head"]) {
            compare_field(
                value,
                "streamClosed",
                &JsonValue::Bool(closed),
                &mut mismatches,
            );
        } else {
            mismatches.push(needs("streamClosed", "a successful read or head", result));
        }
    }
    if let Some(offset) = &expect.final_offset {
        if result.is_success_of(&["close", "idempotent-close"]) {
            compare_field(
                value,
                "finalOffset",
                &JsonValue::String(offset.clone()),
                &mut mismatches,
            );
        } else {
            mismatches.push(needs("finalOffset", "a successful close", result));
        }
    }
    if let Some(content_type) = &expect.content_type {
        if result.is_success_of(&["head"]) {
            compare_field(
                value,
                "contentType",
                &JsonValue::String(content_type.clone()),
                &mut mismatches,
            );
        } else {
            mismatches.push(needs("contentType", "a successful head", result));
        }
    }
    if let Some(has_offset) = expect.has_offset {
        if result.is_success_of(&["head"]) {
            let present = value["offset"]
                .as_str()
                .is_some_and(|offset| !offset.is_empty());
            if present != has_offset {
                mismatches.push(format!(
                    "hasOffset: expected {has_offset}, got offset {}",
                    value
                        .get("offset")
                        .map_or("<absent>".to_owned(), JsonValue::to_string)
                ));
            }
        } else {
            mismatches.push(needs("hasOffset", "a successful head", result));
        }
    }
    for (key, field, expected) in [
        ("headersSent", "headersSent", &expect.headers_sent),
        ("paramsSent", "paramsSent", &expect.params_sent),
    ] {
        let Some(expected) = expected else { continue };
        if !result.is_success_of(&["append", "read"]) {
            mismatches.push(needs(key, "a successful append or read", result));
            continue;
        }
        let Some(sent) = value[field].as_object() else {
            mismatches.push(format!("{key}: the result has no `{field}` map"));
            continue;
        };
        for (name, expected_value) in expected {
            match sent.get(name) {
                Some(JsonValue::String(actual)) if actual == expected_value => {}
                Some(actual) => mismatches.push(format!(
                    "{key}.{name}: expected {expected_value:?}, got {actual}"
                )),
                None => {
                    mismatches.push(format!("{key}.{name}: expected {expected_value:?}, absent"))
                }
            }
        }
    }
    if let Some(duplicate) = expect.duplicate {
        if result.is_success_of(&["append", "idempotent-append"]) {
            compare_field(
                value,
                "duplicate",
                &JsonValue::Bool(duplicate),
                &mut mismatches,
            );
        } else {
            mismatches.push(needs("duplicate", "a successful append", result));
        }
    }
    for (key, expected) in [
        ("producerEpoch", expect.producer_epoch),
        ("producerSeq", expect.producer_seq),
        ("producerExpectedSeq", expect.producer_expected_seq),
        ("producerReceivedSeq", expect.producer_received_seq),
    ] {
        let Some(expected) = expected else { continue };
        if result.is_success_of(&["append", "idempotent-append", "idempotent-append-batch"]) {
            compare_field(value, key, &JsonValue::from(expected), &mut mismatches);
        } else {
            mismatches.push(needs(key, "a successful append", result));
        }
    }
    if let Some(valid) = expect.valid
        && result.success() != valid
    {
        mismatches.push(format!(
            "valid: expected {valid}, got {}",
            result.describe()
        ));
    }
    if let Some(needle) = &expect.error_contains {
        match error_field(result, "message") {
            Err(why) => mismatches.push(format!("errorContains {needle:?}: {why}")),
            Ok(message) if !message.contains(needle.as_str()) => mismatches.push(format!(
                "errorContains: {needle:?} not in message {message:?} (case-sensitive)"
            )),
            Ok(_) => {}
        }
    }
    if let Some(error) = expect.error
        && result.success() == error
    {
        mismatches.push(format!(
            "error: expected {}, got {}",
            if error { "a failure" } else { "a success" },
            result.describe()
        ));
    }
    if let Some(success) = expect.success
        && result.success() != success
    {
        mismatches.push(format!(
            "success: expected {success}, got {}",
            result.describe()
        ));
    }
    check_batch(expect, result, &mut mismatches);
    mismatches
}

fn check_status(expected: u16, result: &OpResult, mismatches: &mut Vec<String>) {
    match result.value.get("status") {
        Some(actual) if actual.as_u64() == Some(u64::from(expected)) => {}
        Some(actual) => mismatches.push(format!("status: expected {expected}, got {actual}")),
        None => mismatches.push(format!(
            "status: expected {expected}, but the {} result has no `status`",
            result.result_type()
        )),
    }
}

/// A string field of an error result, or why there is none.
fn error_field(result: &OpResult, field: &str) -> Result<String, String> {
    if result.success() {
        return Err(format!(
            "expected an error result, got success: {}",
            result.describe()
        ));
    }
    if result.result_type() != "error" {
        return Err(format!(
            "expected an error result, got type `{}`",
            result.result_type()
        ));
    }
    result.value[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("the error result has no `{field}`"))
}

fn needs(key: &str, what: &str, result: &OpResult) -> String {
    format!("{key}: needs {what} result, got {}", result.describe())
}

/// Strict equality of `value[field]` with `expected`; an absent field fails.
fn compare_field(
    value: &JsonValue,
    field: &str,
    expected: &JsonValue,
    mismatches: &mut Vec<String>,
) {
    match value.get(field) {
        Some(actual) if actual == expected => {}
        Some(actual) => mismatches.push(format!("{field}: expected {expected}, got {actual}")),
        None => mismatches.push(format!(
            "{field}: expected {expected}, absent from the result"
        )),
    }
}

/// The chunk texts of a successful read, or why they are unavailable.
pub fn read_chunks(value: &JsonValue) -> Result<Vec<String>, String> {
    let Some(chunks) = value.get("chunks").and_then(JsonValue::as_array) else {
        return Err("the read result has no `chunks` array".to_owned());
    };
    chunks
        .iter()
        .enumerate()
        .map(|(index, chunk)| {
            chunk["data"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("chunks[{index}] has no string `data`"))
        })
        .collect()
}

fn check_read_content(expect: &Expect, result: &OpResult, mismatches: &mut Vec<String>) {
    let mut keys = Vec::new();
    if expect.data.is_some() {
        keys.push("data");
    }
    if expect.data_contains.is_some() {
        keys.push("dataContains");
    }
    if expect.data_contains_all.is_some() {
        keys.push("dataContainsAll");
    }
    if expect.data_exact.is_some() {
        keys.push("dataExact");
    }
    if expect.up_to_date.is_some() {
        keys.push("upToDate");
    }
    if expect.chunk_count.is_some() {
        keys.push("chunkCount");
    }
    if expect.min_chunks.is_some() {
        keys.push("minChunks");
    }
    if expect.max_chunks.is_some() {
        keys.push("maxChunks");
    }
    if keys.is_empty() {
        return;
    }
    if !result.is_success_of(&["read"]) {
        mismatches.push(needs(&keys.join(", "), "a successful read", result));
        return;
    }
    let value = &result.value;
    if let Some(up_to_date) = expect.up_to_date {
        compare_field(value, "upToDate", &JsonValue::Bool(up_to_date), mismatches);
    }
    let chunks = match read_chunks(value) {
        Ok(chunks) => chunks,
        Err(why) => {
            mismatches.push(format!("{}: {why}", keys.join(", ")));
            return;
        }
    };
    let joined = chunks.concat();
    if let Some(data) = &expect.data
        && joined != *data
    {
        mismatches.push(format!(
            "data: expected {:?}, got {:?}",
            truncate(data, 300),
            truncate(&joined, 300)
        ));
    }
    if let Some(needle) = &expect.data_contains
        && !joined.contains(needle.as_str())
    {
        mismatches.push(format!(
            "dataContains: {needle:?} not in {:?}",
            truncate(&joined, 300)
        ));
    }
    for needle in expect.data_contains_all.iter().flatten() {
        if !joined.contains(needle.as_str()) {
            mismatches.push(format!(
                "dataContainsAll: {needle:?} not in {:?}",
                truncate(&joined, 300)
            ));
        }
    }
    if let Some(exact) = &expect.data_exact
        && chunks != *exact
    {
        mismatches.push(format!(
            "dataExact: expected chunks {exact:?}, got {chunks:?}"
        ));
    }
    if let Some(count) = expect.chunk_count
        && chunks.len() != count
    {
        mismatches.push(format!(
            "chunkCount: expected {count}, got {}",
            chunks.len()
        ));
    }
    if let Some(min) = expect.min_chunks
        && chunks.len() < min
    {
        mismatches.push(format!(
            "minChunks: expected at least {min}, got {}",
            chunks.len()
        ));
    }
    if let Some(max) = expect.max_chunks
        && chunks.len() > max
    {
        mismatches.push(format!(
            "maxChunks: expected at most {max}, got {}",
            chunks.len()
        ));
    }
}

fn check_batch(expect: &Expect, result: &OpResult, mismatches: &mut Vec<String>) {
    if let Some(all_succeed) = expect.all_succeed {
        let actual = match &result.batch_items {
            Some(items) => items.iter().all(is_success),
            None => result.success(),
        };
        if actual != all_succeed {
            mismatches.push(format!(
                "allSucceed: expected {all_succeed}, got {}",
                batch_summary(result)
            ));
        }
    }
    for (key, indices, want_success) in [
        ("succeedIndices", &expect.succeed_indices, true),
        ("failIndices", &expect.fail_indices, false),
    ] {
        let Some(indices) = indices else { continue };
        let Some(items) = &result.batch_items else {
            mismatches.push(format!("{key}: only applies to append-batch results"));
            continue;
        };
        for &index in indices {
            match items.get(index) {
                None => mismatches.push(format!(
                    "{key}: item {index} does not exist ({} items)",
                    items.len()
                )),
                Some(item) if is_success(item) != want_success => mismatches.push(format!(
                    "{key}: item {index} should {}, got {}",
                    if want_success { "succeed" } else { "fail" },
                    truncate(&item.to_string(), 300)
                )),
                Some(_) => {}
            }
        }
    }
}

fn batch_summary(result: &OpResult) -> String {
    match &result.batch_items {
        Some(items) => {
            let outcomes: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(index, item)| {
                    if is_success(item) {
                        format!("{index}:ok")
                    } else {
                        format!("{index}:{}", item["errorCode"].as_str().unwrap_or("failed"))
                    }
                })
                .collect();
            format!("items [{}]", outcomes.join(", "))
        }
        None => result.describe(),
    }
}

/// Applies `storeOffsetAs`, `storeDataAs` and `storeAs`. Each needs a
/// successful result carrying the value; otherwise it fails at once instead
/// of leaving the variable undefined for a later step to trip over.
pub fn capture(expect: &Expect, result: &OpResult, vars: &mut Variables) -> Result<(), String> {
    let value = &result.value;
    if let Some(name) = &expect.store_offset_as {
        if !result.success() {
            return Err(format!(
                "storeOffsetAs {name}: the operation failed: {}",
                result.describe()
            ));
        }
        // Close results carry their offset as `finalOffset`.
        let field = if matches!(result.result_type(), "close" | "idempotent-close") {
            "finalOffset"
        } else {
            "offset"
        };
        match value[field].as_str() {
            Some(offset) if !offset.is_empty() => vars.set(name, offset.into()),
            _ => {
                return Err(format!(
                    "storeOffsetAs {name}: the {} result has no `{field}`",
                    result.result_type()
                ));
            }
        }
    }
    if let Some(name) = &expect.store_data_as {
        if !result.is_success_of(&["read"]) {
            return Err(format!(
                "storeDataAs {name}: needs a successful read result, got {}",
                result.describe()
            ));
        }
        vars.set(name, read_chunks(value)?.concat().into());
    }
    if let Some(name) = &expect.store_as {
        if !result.success() {
            return Err(format!(
                "storeAs {name}: the operation failed: {}",
                result.describe()
            ));
        }
        vars.set(name, value.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn expect(yaml: &str) -> Expect {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn read_ok(chunks: &[&str]) -> OpResult {
        OpResult::adapter(json!({
            "type": "read", "success": true, "status": 200,
            "chunks": chunks.iter().map(|data| json!({"data": data})).collect::<Vec<_>>(),
            "offset": "0_9", "upToDate": true, "streamClosed": false,
        }))
    }

    fn error(command: &str, status: Option<u16>, code: &str, message: &str) -> OpResult {
        let mut value = json!({"type": "error", "success": false, "commandType": command,
                               "errorCode": code, "message": message});
        if let Some(status) = status {
            value["status"] = json!(status);
        }
        OpResult::adapter(value)
    }

    #[test]
    fn read_content_passes_and_fails() {
        let result = read_ok(&["hel", "lo"]);
        let ok = expect(
            "{data: hello, dataContains: ell, dataContainsAll: [he, lo], dataExact: [hel, lo], chunkCount: 2, minChunks: 1, maxChunks: 2, upToDate: true, streamClosed: false, status: 200}",
        );
        assert_eq!(check(&ok, &result), Vec::<String>::new());
        let bad =
            expect("{data: hellO, chunkCount: 1, minChunks: 3, maxChunks: 1, upToDate: false}");
        assert_eq!(check(&bad, &result).len(), 5, "{:?}", check(&bad, &result));
    }

    #[test]
    fn content_keys_fail_on_an_error_result() {
        // The Node runner silently skips these on a failed read.
        let result = error("read", None, "NOT_SUPPORTED", "nope");
        let mismatches = check(&expect("{data: x, upToDate: true}"), &result);
        assert_eq!(mismatches.len(), 1);
        assert!(mismatches[0].contains("expected success"), "{mismatches:?}");
    }

    #[test]
    fn status_must_be_present() {
        // The Node runner passes this: the error result has no `status`.
        let result = error("read", None, "NOT_FOUND", "no /x");
        let mismatches = check(&expect("{status: 404, errorCode: NOT_FOUND}"), &result);
        assert_eq!(mismatches.len(), 1, "{mismatches:?}");
        assert!(mismatches[0].contains("no `status`"));
        let result = error("read", Some(404), "NOT_FOUND", "no /x");
        assert!(check(&expect("{status: 404, errorCode: NOT_FOUND}"), &result).is_empty());
    }

    #[test]
    fn error_status_requires_failure_and_success_status_requires_success() {
        let ok = OpResult::adapter(json!({"type": "head", "success": true, "status": 404}));
        assert!(!check(&expect("{status: 404}"), &ok).is_empty());
        let failed = error("create", Some(201), "X", "m");
        assert!(!check(&expect("{status: 201}"), &failed).is_empty());
    }

    #[test]
    fn error_code_and_messages() {
        let result = error("append", Some(404), "NOT_FOUND", "Stream /abc Not Found");
        assert!(
            check(
                &expect("{status: 404, errorCode: NOT_FOUND, messageContains: [/ABC, not found]}"),
                &result
            )
            .is_empty()
        );
        assert_eq!(check(&expect("{errorCode: CONFLICT}"), &result).len(), 1);
        assert_eq!(
            check(&expect("{errorContains: not found}"), &result).len(),
            1
        );
        assert!(check(&expect("{errorContains: Not Found}"), &result).is_empty());
        let success = OpResult::adapter(json!({"type": "append", "success": true, "status": 200}));
        assert_eq!(check(&expect("{errorCode: NOT_FOUND}"), &success).len(), 1);
    }

    #[test]
    fn error_success_and_valid_flags() {
        let failed = error("read", Some(400), "INVALID_OFFSET", "bad");
        let succeeded = read_ok(&[]);
        assert!(check(&expect("{error: true}"), &failed).is_empty());
        assert!(!check(&expect("{error: true}"), &succeeded).is_empty());
        assert!(check(&expect("{success: true}"), &succeeded).is_empty());
        assert!(!check(&expect("{success: true}"), &failed).is_empty());
        assert!(check(&expect("{valid: false}"), &failed).is_empty());
        assert!(!check(&expect("{valid: true}"), &failed).is_empty());
    }

    #[test]
    fn absent_boolean_fields_fail() {
        let result = OpResult::adapter(json!({
            "type": "read", "success": true, "status": 200, "chunks": []
        }));
        let mismatches = check(&expect("{upToDate: true, streamClosed: false}"), &result);
        assert_eq!(mismatches.len(), 2, "{mismatches:?}");
    }

    #[test]
    fn head_keys() {
        let head = OpResult::adapter(json!({
            "type": "head", "success": true, "status": 200,
            "offset": "0_5", "contentType": "text/plain", "streamClosed": true
        }));
        assert!(
            check(
                &expect(
                    "{status: 200, hasOffset: true, contentType: text/plain, streamClosed: true}"
                ),
                &head
            )
            .is_empty()
        );
        assert_eq!(
            check(&expect("{contentType: application/json}"), &head).len(),
            1
        );
        assert_eq!(check(&expect("{hasOffset: false}"), &head).len(), 1);
        assert_eq!(
            check(&expect("{contentType: text/plain}"), &read_ok(&[])).len(),
            1
        );
    }

    #[test]
    fn sent_maps() {
        let append = OpResult::adapter(json!({
            "type": "append", "success": true, "status": 200,
            "headersSent": {"X-Request-Counter": "2", "Authorization": "Bearer t"}
        }));
        assert!(
            check(
                &expect("{headersSent: {X-Request-Counter: \"2\"}}"),
                &append
            )
            .is_empty()
        );
        assert_eq!(
            check(
                &expect("{headersSent: {X-Request-Counter: \"1\"}}"),
                &append
            )
            .len(),
            1
        );
        assert_eq!(
            check(&expect("{paramsSent: {request_id: \"1\"}}"), &append).len(),
            1
        );
    }

    #[test]
    fn runner_http_results_check_status_only() {
        let server_append = OpResult::runner_http(json!({
            "type": "append", "success": true, "status": 403,
            "duplicate": false, "producerEpoch": 2
        }));
        assert!(check(&expect("{status: 403, producerEpoch: 2}"), &server_append).is_empty());
        assert_eq!(check(&expect("{status: 200}"), &server_append).len(), 1);
        assert_eq!(check(&expect("{duplicate: true}"), &server_append).len(), 1);
        assert_eq!(check(&expect("{producerSeq: 0}"), &server_append).len(), 1);
    }

    #[test]
    fn batch_indices() {
        let ok = json!({"type": "append", "success": true, "status": 200});
        let conflict = json!({"type": "error", "success": false, "commandType": "append",
                              "status": 409, "errorCode": "SEQUENCE_CONFLICT", "message": "m"});
        let all_ok = OpResult::batch(vec![ok.clone(), ok.clone()]);
        assert!(check(&expect("{allSucceed: true}"), &all_ok).is_empty());
        let mixed = OpResult::batch(vec![ok.clone(), conflict.clone(), ok.clone()]);
        assert_eq!(mixed.value["status"], json!(207));
        assert!(
            check(
                &expect("{succeedIndices: [0, 2], failIndices: [1]}"),
                &mixed
            )
            .is_empty()
        );
        assert_eq!(check(&expect("{allSucceed: true}"), &mixed).len(), 1);
        assert_eq!(
            check(&expect("{succeedIndices: [1], failIndices: [1]}"), &mixed).len(),
            1,
            "succeedIndices [1] must fail; failIndices [1] holds"
        );
        assert_eq!(check(&expect("{failIndices: [7]}"), &mixed).len(), 1);
        let single = OpResult::adapter(
            json!({"type": "idempotent-append-batch", "success": true, "status": 200}),
        );
        assert!(check(&expect("{allSucceed: true}"), &single).is_empty());
        assert_eq!(check(&expect("{failIndices: [0]}"), &single).len(), 1);
    }

    #[test]
    fn close_and_duplicate_keys() {
        let close =
            OpResult::adapter(json!({"type": "close", "success": true, "finalOffset": "0_7"}));
        assert!(check(&expect("{finalOffset: \"0_7\"}"), &close).is_empty());
        // Close replies need a status when the case expects one.
        assert_eq!(check(&expect("{status: 200}"), &close).len(), 1);
        let idem = OpResult::adapter(
            json!({"type": "idempotent-append", "success": true, "status": 200, "duplicate": false}),
        );
        assert!(
            check(
                &expect("{duplicate: false, success: true, status: 200}"),
                &idem
            )
            .is_empty()
        );
    }

    #[test]
    fn captures() {
        let mut vars = Variables::default();
        let all = expect("{storeOffsetAs: o, storeDataAs: d, storeAs: r}");
        capture(&all, &read_ok(&["a", "b"]), &mut vars).unwrap();
        assert_eq!(vars.get("o"), Some(&json!("0_9")));
        assert_eq!(vars.get("d"), Some(&json!("ab")));
        assert_eq!(vars.get("r").unwrap()["type"], json!("read"));

        let failed = error("append", Some(404), "NOT_FOUND", "m");
        assert!(capture(&expect("{storeOffsetAs: o}"), &failed, &mut vars).is_err());
        let no_offset =
            OpResult::adapter(json!({"type": "append", "success": true, "status": 200}));
        assert!(capture(&expect("{storeOffsetAs: o}"), &no_offset, &mut vars).is_err());
        let close =
            OpResult::adapter(json!({"type": "close", "success": true, "finalOffset": "0_3"}));
        capture(&expect("{storeOffsetAs: f}"), &close, &mut vars).unwrap();
        assert_eq!(vars.get("f"), Some(&json!("0_3")));
    }
}
