//! Per-test variables and `${...}` substitution (CASE-FORMAT §6).

use std::collections::HashMap;
use std::io::Read;

use serde_json::Value as JsonValue;

/// The variables of one test. Values are JSON because `head`'s `storeAs`
/// stores a whole result object, read back as `${name.offset}`.
#[derive(Debug, Default)]
pub struct Variables {
    values: HashMap<String, JsonValue>,
}

impl Variables {
    /// Sets (or replaces) a variable.
    pub fn set(&mut self, name: &str, value: JsonValue) {
        self.values.insert(name.to_owned(), value);
    }

    /// The raw value of a variable, if defined.
    #[cfg(test)]
    pub fn get(&self, name: &str) -> Option<&JsonValue> {
        self.values.get(name)
    }

    /// Replaces every `${expr}` in `template`, left to right in one pass.
    ///
    /// `${randomUUID}` is a fresh v4 UUID per occurrence. Otherwise the
    /// expression is split on `.`: the first segment must be a defined
    /// variable (else an error), each further segment is a property access
    /// with JavaScript semantics, and a missing property becomes `""`.
    /// `${}` and an unterminated `${` stay literal.
    pub fn substitute(&self, template: &str) -> Result<String, String> {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            let after_open = &rest[start + 2..];
            match after_open.find('}') {
                Some(0) => {
                    // `${}` is not a reference; emit the `$` and rescan from
                    // the `{`, as a regex search would.
                    out.push_str(&rest[..start + 1]);
                    rest = &rest[start + 1..];
                }
                Some(end) => {
                    out.push_str(&rest[..start]);
                    let expression = &after_open[..end];
                    out.push_str(&self.evaluate(expression)?);
                    rest = &after_open[end + 1..];
                }
                None => break,
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn evaluate(&self, expression: &str) -> Result<String, String> {
        if expression == "randomUUID" {
            return Ok(random_uuid());
        }
        let mut segments = expression.split('.');
        let first = segments.next().unwrap_or_default();
        let mut current = match self.values.get(first) {
            Some(value) => Some(value.clone()),
            None => {
                return Err(format!(
                    "Undefined variable: {first} (in ${{{expression}}})"
                ));
            }
        };
        for segment in segments {
            current = current.and_then(|value| property(&value, segment));
        }
        Ok(current.map(|value| js_string(&value)).unwrap_or_default())
    }
}

/// JavaScript property access on a JSON value; `None` is `undefined`.
fn property(value: &JsonValue, name: &str) -> Option<JsonValue> {
    match value {
        JsonValue::Object(object) => object.get(name).cloned(),
        JsonValue::Array(items) if name == "length" => Some(JsonValue::from(items.len())),
        JsonValue::Array(items) => name
            .parse::<usize>()
            .ok()
            .and_then(|i| items.get(i).cloned()),
        JsonValue::String(text) if name == "length" => {
            Some(JsonValue::from(text.encode_utf16().count()))
        }
        _ => None,
    }
}

/// `String(value)` in JavaScript, except that null becomes `""` as the Node
/// runner's substitution does.
pub fn js_string(value: &JsonValue) -> String {
    match value {
        JsonValue::Null => String::new(),
        JsonValue::Bool(flag) => flag.to_string(),
        JsonValue::Number(number) => match number.as_f64() {
            Some(float) if number.is_f64() => crate::values::float_to_json(float).to_string(),
            _ => number.to_string(),
        },
        JsonValue::String(text) => text.clone(),
        JsonValue::Array(items) => items.iter().map(js_string).collect::<Vec<_>>().join(","),
        JsonValue::Object(_) => "[object Object]".to_owned(),
    }
}

/// A random lowercase v4 UUID, like `crypto.randomUUID()`.
pub fn random_uuid() -> String {
    let mut bytes = random_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(&mut bytes))
        .is_ok()
    {
        return bytes;
    }
    // No /dev/urandom: fall back to the standard library's randomly seeded
    // hasher keys, mixed with the clock and a counter. Only uniqueness
    // matters here, not unpredictability.
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    for half in bytes.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> Variables {
        let mut vars = Variables::default();
        vars.set("p", json!("/test-stream-1"));
        vars.set(
            "head",
            json!({"offset": "0_5", "contentType": "text/plain", "n": 3, "list": ["a", null, 2]}),
        );
        vars
    }

    #[test]
    fn substitutes_plain_and_dotted_references() {
        let vars = vars();
        assert_eq!(
            vars.substitute("${p}-suffix").unwrap(),
            "/test-stream-1-suffix"
        );
        assert_eq!(vars.substitute("at ${head.offset}!").unwrap(), "at 0_5!");
        assert_eq!(vars.substitute("${head.missing}").unwrap(), "");
        assert_eq!(vars.substitute("${head.missing.deeper}").unwrap(), "");
        assert_eq!(vars.substitute("${head.n}").unwrap(), "3");
        assert_eq!(vars.substitute("${head.list}").unwrap(), "a,,2");
        assert_eq!(vars.substitute("${head}").unwrap(), "[object Object]");
        assert_eq!(vars.substitute("${p.length}").unwrap(), "14");
    }

    #[test]
    fn undefined_variables_are_errors() {
        let error = vars().substitute("x ${nope.offset}").unwrap_err();
        assert_eq!(error, "Undefined variable: nope (in ${nope.offset})");
    }

    #[test]
    fn literal_forms_stay_literal() {
        let vars = vars();
        assert_eq!(vars.substitute("${}").unwrap(), "${}");
        assert_eq!(vars.substitute("${}${p}").unwrap(), "${}/test-stream-1");
        assert_eq!(vars.substitute("${p").unwrap(), "${p");
        assert_eq!(vars.substitute("no refs").unwrap(), "no refs");
    }

    #[test]
    fn substitution_is_one_pass() {
        let mut vars = Variables::default();
        vars.set("a", json!("${b}"));
        vars.set("b", json!("B"));
        assert_eq!(vars.substitute("${a}").unwrap(), "${b}");
    }

    #[test]
    fn random_uuid_is_fresh_v4() {
        let vars = Variables::default();
        let text = vars.substitute("${randomUUID}/${randomUUID}").unwrap();
        let (first, second) = text.split_once('/').unwrap();
        assert_ne!(first, second);
        for uuid in [first, second] {
            assert_eq!(uuid.len(), 36);
            assert_eq!(&uuid[14..15], "4");
            assert!(matches!(&uuid[19..20], "8" | "9" | "a" | "b"));
            assert!(uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        }
    }
}
