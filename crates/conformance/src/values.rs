//! YAML values to JSON, the way the Node runner serialises them.
//!
//! The Node runner parses YAML into JavaScript values and re-serialises them
//! with `JSON.stringify`, so every number is a double and a float with a zero
//! fractional part loses it (`2.0` is sent as `2`, CASE-FORMAT §1). Keys keep
//! their document order, which matters for `append.json`, whose text is later
//! compared byte for byte with what a read returns.

use serde_json::Value as JsonValue;
use serde_yaml_ng::Value as YamlValue;

/// Largest integer a double holds exactly (2^53 - 1).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Converts a YAML value to a JSON value, normalising numbers. Use this for
/// command fields where key order does not matter.
pub fn yaml_to_json(value: &YamlValue) -> Result<JsonValue, String> {
    Ok(match value {
        YamlValue::Null => JsonValue::Null,
        YamlValue::Bool(flag) => JsonValue::Bool(*flag),
        YamlValue::Number(number) => number_to_json(number),
        YamlValue::String(text) => JsonValue::String(text.clone()),
        YamlValue::Sequence(items) => {
            JsonValue::Array(items.iter().map(yaml_to_json).collect::<Result<_, _>>()?)
        }
        YamlValue::Mapping(mapping) => {
            let mut object = serde_json::Map::new();
            for (key, item) in mapping {
                object.insert(key_to_string(key)?, yaml_to_json(item)?);
            }
            JsonValue::Object(object)
        }
        YamlValue::Tagged(tagged) => {
            return Err(format!("YAML tags are not supported: {}", tagged.tag));
        }
    })
}

/// Serialises a YAML value as compact JSON text with keys in document order,
/// as `JSON.stringify` would.
pub fn yaml_to_json_text(value: &YamlValue) -> Result<String, String> {
    let mut out = String::new();
    write_json(value, &mut out)?;
    Ok(out)
}

fn write_json(value: &YamlValue, out: &mut String) -> Result<(), String> {
    match value {
        YamlValue::Null => out.push_str("null"),
        YamlValue::Bool(flag) => out.push_str(if *flag { "true" } else { "false" }),
        YamlValue::Number(number) => out.push_str(&number_to_json(number).to_string()),
        YamlValue::String(text) => out.push_str(&JsonValue::String(text.clone()).to_string()),
        YamlValue::Sequence(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_json(item, out)?;
            }
            out.push(']');
        }
        YamlValue::Mapping(mapping) => {
            out.push('{');
            for (index, (key, item)) in mapping.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&JsonValue::String(key_to_string(key)?).to_string());
                out.push(':');
                write_json(item, out)?;
            }
            out.push('}');
        }
        YamlValue::Tagged(tagged) => {
            return Err(format!("YAML tags are not supported: {}", tagged.tag));
        }
    }
    Ok(())
}

/// JavaScript turns every object key into a string.
fn key_to_string(key: &YamlValue) -> Result<String, String> {
    match key {
        YamlValue::String(text) => Ok(text.clone()),
        YamlValue::Number(number) => Ok(number_to_json(number).to_string()),
        YamlValue::Bool(flag) => Ok(flag.to_string()),
        YamlValue::Null => Ok("null".to_owned()),
        other => Err(format!("unsupported mapping key {other:?}")),
    }
}

fn number_to_json(number: &serde_yaml_ng::Number) -> JsonValue {
    if let Some(integer) = number.as_i64() {
        return JsonValue::from(integer);
    }
    if let Some(integer) = number.as_u64() {
        return JsonValue::from(integer);
    }
    float_to_json(number.as_f64().unwrap_or(f64::NAN))
}

/// A double as `JSON.stringify` writes it: integral values without a
/// fraction, non-finite values as `null`.
pub fn float_to_json(value: f64) -> JsonValue {
    if !value.is_finite() {
        return JsonValue::Null;
    }
    if value.fract() == 0.0 && value.abs() <= MAX_SAFE_INTEGER {
        // Exact: the value is integral and within the safe range.
        return JsonValue::from(value as i64);
    }
    serde_json::Number::from_f64(value).map_or(JsonValue::Null, JsonValue::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> YamlValue {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn integral_floats_lose_their_fraction() {
        let value = yaml("{multiplier: 2.0, half: 0.5, big: 9007199254740991, neg: -3.0}");
        assert_eq!(
            yaml_to_json(&value).unwrap(),
            serde_json::json!({"multiplier": 2, "half": 0.5, "big": 9007199254740991_i64, "neg": -3})
        );
    }

    #[test]
    fn json_text_keeps_document_order() {
        let value = yaml("{zeta: 1, alpha: [true, null, \"x\\\"y\"], mid: {b: 1.0, a: 2}}");
        assert_eq!(
            yaml_to_json_text(&value).unwrap(),
            r#"{"zeta":1,"alpha":[true,null,"x\"y"],"mid":{"b":1,"a":2}}"#
        );
    }

    #[test]
    fn scalars_and_non_ascii() {
        assert_eq!(yaml_to_json_text(&yaml("null")).unwrap(), "null");
        assert_eq!(yaml_to_json_text(&yaml("\"héllo\"")).unwrap(), "\"héllo\"");
    }
}
