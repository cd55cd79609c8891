//! JSON mode (PROTOCOL.md 9.1): request bodies that survive the server's
//! one-level array flattening, and response arrays split into messages.

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::{DecodeKind, Error, Result};

fn encode_error(e: serde_json::Error) -> Error {
    Error::invalid_argument("value", format!("could not serialize to JSON: {e}"))
}

/// `[value]`: the server flattens one level, so exactly one message is stored
/// even when `value` is itself an array.
pub(crate) fn single_message_body<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    let mut out = BytesMut::with_capacity(64).writer();
    out.get_mut().put_u8(b'[');
    serde_json::to_writer(&mut out, value).map_err(encode_error)?;
    out.get_mut().put_u8(b']');
    Ok(out.into_inner().freeze())
}

/// `[a,b,...]`: one message per value. An empty batch is rejected before any
/// request (the server would answer 400).
pub(crate) fn batch_body<T: Serialize, I: IntoIterator<Item = T>>(values: I) -> Result<Bytes> {
    let mut out = BytesMut::with_capacity(256).writer();
    out.get_mut().put_u8(b'[');
    let mut count = 0usize;
    for value in values {
        if count > 0 {
            out.get_mut().put_u8(b',');
        }
        serde_json::to_writer(&mut out, &value).map_err(encode_error)?;
        count += 1;
    }
    if count == 0 {
        return Err(Error::invalid_argument(
            "values",
            "a JSON batch needs at least one value",
        ));
    }
    out.get_mut().put_u8(b']');
    Ok(out.into_inner().freeze())
}

/// Split a JSON array response into its raw items without building a tree.
pub(crate) fn split_array(body: &[u8]) -> Result<Vec<Box<RawValue>>> {
    let trimmed = trim_ascii(body);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_slice::<Vec<Box<RawValue>>>(trimmed).map_err(|e| {
        Error::decode(
            DecodeKind::Json,
            format!("expected a JSON array of messages: {e}"),
        )
    })
}

/// Deserialize raw items into the caller's type.
pub(crate) fn decode_items<T: DeserializeOwned>(items: &[Box<RawValue>]) -> Result<Vec<T>> {
    items
        .iter()
        .map(|raw| {
            serde_json::from_str(raw.get()).map_err(|e| {
                Error::decode(
                    DecodeKind::Json,
                    format!("message does not match the requested type: {e}"),
                )
            })
        })
        .collect()
}

/// Merge several JSON array payloads (e.g. consecutive SSE data events) into
/// one array body. Each payload must be an array.
pub(crate) fn merge_arrays(parts: &[Bytes]) -> Result<Bytes> {
    if parts.len() == 1 {
        return Ok(parts[0].clone());
    }
    let mut out = BytesMut::new();
    out.put_u8(b'[');
    let mut first = true;
    for part in parts {
        let t = trim_ascii(part);
        if t.is_empty() {
            continue;
        }
        if t.first() != Some(&b'[') || t.last() != Some(&b']') {
            return Err(Error::decode(
                DecodeKind::Json,
                "SSE data event is not a JSON array",
            ));
        }
        let inner = trim_ascii(&t[1..t.len() - 1]);
        if inner.is_empty() {
            continue;
        }
        if !first {
            out.put_u8(b',');
        }
        out.put_slice(inner);
        first = false;
    }
    out.put_u8(b']');
    Ok(out.freeze())
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// What the server stores for a POST body (PROTOCOL.md 9.1.2).
    fn server_flatten(body: &[u8]) -> Vec<Value> {
        match serde_json::from_slice::<Value>(body).unwrap() {
            Value::Array(items) => items,
            other => vec![other],
        }
    }

    #[test]
    fn single_values_stay_single_messages() {
        for v in [
            json!({"a":1}),
            json!([1, 2]),
            json!([[1, 2, 3]]),
            json!(null),
            json!("s"),
        ] {
            let body = single_message_body(&v).unwrap();
            assert_eq!(server_flatten(&body), vec![v]);
        }
    }

    #[test]
    fn batches_become_one_message_each() {
        let body = batch_body([json!([1, 2]), json!([3, 4])]).unwrap();
        assert_eq!(server_flatten(&body), vec![json!([1, 2]), json!([3, 4])]);
        let err = batch_body(Vec::<Value>::new()).unwrap_err();
        assert_eq!(
            err.kind(),
            &crate::ErrorKind::InvalidArgument { field: "values" }
        );
    }

    #[test]
    fn split_and_merge() {
        let items = split_array(b" [ {\"a\":1}, [2], 3 ] ").unwrap();
        let got: Vec<Value> = decode_items(&items).unwrap();
        assert_eq!(got, vec![json!({"a":1}), json!([2]), json!(3)]);
        assert!(split_array(b"").unwrap().is_empty());
        assert!(split_array(b"{\"a\":1}").is_err());
        assert!(split_array(b"[1,").is_err());
        let merged = merge_arrays(&[
            Bytes::from_static(b"[1,2]"),
            Bytes::from_static(b"[]"),
            Bytes::from_static(b"\n[\n3\n]\n"),
        ])
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&merged).unwrap(),
            json!([1, 2, 3])
        );
        assert!(merge_arrays(&[Bytes::from_static(b"[1]"), Bytes::from_static(b"{}")]).is_err());
    }

    #[test]
    fn decode_type_mismatch_is_a_decode_error() {
        let items = split_array(b"[\"x\"]").unwrap();
        let err = decode_items::<u32>(&items).unwrap_err();
        assert_eq!(err.kind(), &crate::ErrorKind::Decode(DecodeKind::Json));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(|n| json!(n)),
            "[a-z]{0,5}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::hash_map("[a-z]{1,3}", inner, 0..3)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn flattening_preserves_each_value(values in prop::collection::vec(arb_json(), 1..6)) {
            let body = batch_body(values.iter()).unwrap();
            prop_assert_eq!(server_flatten(&body), values.clone());
            for v in &values {
                let single = single_message_body(v).unwrap();
                prop_assert_eq!(server_flatten(&single), vec![v.clone()]);
            }
        }
    }
}
