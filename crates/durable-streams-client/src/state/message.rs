//! State Protocol messages (STATE-PROTOCOL.md sections 4-5): change and
//! control messages, validated on read with errors that name the offset,
//! the message and the field.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, ErrorKind, Result};
use crate::offset::Offset;

/// What a change does to the entity at `type`/`key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Store a new entity.
    Insert,
    /// Replace the entity.
    Update,
    /// Remove the entity.
    Delete,
}

impl Operation {
    /// The wire form: `insert`, `update` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// A change message (STATE-PROTOCOL.md 4.1).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Change {
    /// Entity type (`type` on the wire): routes the change to a collection.
    pub entity_type: String,
    /// Entity key, unique within its type.
    pub key: String,
    /// The new value (inserts and updates; `None` for a delete without one).
    pub value: Option<Value>,
    /// The previous value, when the writer sent it.
    pub old_value: Option<Value>,
    /// Insert, update or delete.
    pub operation: Operation,
    /// Transaction the change belongs to.
    pub txid: Option<String>,
    /// When the change happened.
    pub timestamp: Option<OffsetDateTime>,
}

impl Change {
    /// A change of `operation` on `entity_type`/`key`.
    pub fn new(
        operation: Operation,
        entity_type: impl Into<String>,
        key: impl Into<String>,
        value: Option<Value>,
    ) -> Change {
        Change {
            entity_type: entity_type.into(),
            key: key.into(),
            value,
            old_value: None,
            operation,
            txid: None,
            timestamp: None,
        }
    }

    /// With `old_value`.
    pub fn old_value(mut self, old: Value) -> Change {
        self.old_value = Some(old);
        self
    }

    /// With `headers.txid`.
    pub fn txid(mut self, txid: impl Into<String>) -> Change {
        self.txid = Some(txid.into());
        self
    }

    /// With `headers.timestamp`.
    pub fn timestamp(mut self, at: OffsetDateTime) -> Change {
        self.timestamp = Some(at);
        self
    }
}

/// The kind of a control message (STATE-PROTOCOL.md 4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlKind {
    /// The changes up to the matching `snapshot-end` form one snapshot.
    SnapshotStart,
    /// End of a snapshot.
    SnapshotEnd,
    /// Clear the materialized state.
    Reset,
}

impl ControlKind {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlKind::SnapshotStart => "snapshot-start",
            ControlKind::SnapshotEnd => "snapshot-end",
            ControlKind::Reset => "reset",
        }
    }
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Control {
    /// Snapshot start or end, or reset.
    pub kind: ControlKind,
    /// The stream offset the event refers to, when given.
    pub offset: Option<Offset>,
}

impl Control {
    /// A control message of `kind`.
    pub fn new(kind: ControlKind, offset: Option<Offset>) -> Control {
        Control { kind, offset }
    }
}

/// One State Protocol message.
#[derive(Debug, Clone, PartialEq)]
pub enum StateMessage {
    /// Insert, update or delete.
    Change(Change),
    /// Snapshot boundary or reset.
    Control(Control),
}

/// Where a message sits, for error messages: the read position of its
/// batch and its index in it (`offset: None`: not read from a stream).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position<'a> {
    pub(crate) offset: Option<&'a Offset>,
    pub(crate) index: usize,
}

impl std::fmt::Display for Position<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.offset {
            Some(offset) => write!(
                f,
                "message #{} of the batch read at offset {offset}",
                self.index
            ),
            None => f.write_str("the message"),
        }
    }
}

/// An invalid message: the field and the reason, located when read from a stream.
pub(crate) fn invalid(
    at: Position<'_>,
    field: &'static str,
    reason: impl std::fmt::Display,
) -> Error {
    let message = match at.offset {
        Some(_) => format!("{at}: {reason}"),
        None => reason.to_string(),
    };
    Error::new(ErrorKind::InvalidMessage { field }).with_message(message)
}

/// The loose wire shape: every field optional, so validation can name
/// exactly what is missing; unknown fields are ignored.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type", default)]
    entity_type: Option<Value>,
    #[serde(default)]
    key: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    old_value: Option<Value>,
    #[serde(default)]
    headers: Option<Value>,
}

/// `Some(Value::Null)` for an explicit `null`, `None` only when absent.
fn present<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

impl StateMessage {
    /// Parse and validate one message (every MUST of STATE-PROTOCOL.md
    /// sections 4 and 5; unknown fields are ignored). An invalid message is
    /// an error of kind [`ErrorKind::InvalidMessage`] naming the field, with
    /// a message that says what is wrong.
    ///
    /// ```
    /// use durable_streams_client::ErrorKind;
    /// use durable_streams_client::state::StateMessage;
    /// let m = StateMessage::from_slice(br#"{"type":"user","key":"1","value":{},"headers":{"operation":"insert"}}"#);
    /// assert!(matches!(m, Ok(StateMessage::Change(_))));
    /// let e = StateMessage::from_slice(br#"{"type":"user","key":"1","headers":{"operation":"upsert"}}"#).unwrap_err();
    /// assert_eq!(e.kind(), &ErrorKind::InvalidMessage { field: "headers.operation" });
    /// ```
    pub fn from_slice(raw: &[u8]) -> Result<StateMessage> {
        Self::parse(
            raw,
            Position {
                offset: None,
                index: 0,
            },
        )
    }

    /// [`from_slice`](Self::from_slice) for a message read from a stream:
    /// errors name where, as the materializer's do (`message #index of the
    /// batch read at offset read_at`), `read_at` being the offset the read
    /// that returned the message started at.
    pub fn from_slice_at(raw: &[u8], read_at: &Offset, index: usize) -> Result<StateMessage> {
        Self::parse(
            raw,
            Position {
                offset: Some(read_at),
                index,
            },
        )
    }

    pub(crate) fn parse(raw: &[u8], at: Position<'_>) -> Result<StateMessage> {
        // serde would also accept a struct written as an array.
        if raw.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            let field = if serde_json::from_slice::<Value>(raw).is_ok() {
                "message"
            } else {
                "json"
            };
            return Err(invalid(at, field, "a state message must be a JSON object"));
        }
        let wire: Wire = match serde_json::from_slice(raw) {
            Ok(w) => w,
            Err(e) => {
                let field = if serde_json::from_slice::<Value>(raw).is_ok() {
                    "message"
                } else {
                    "json"
                };
                return Err(invalid(at, field, format_args!("not a JSON object: {e}")));
            }
        };
        let Some(Value::Object(headers)) = wire.headers else {
            return Err(invalid(at, "headers", "`headers` must be an object"));
        };
        if let Some(control) = headers.get("control") {
            if headers.contains_key("operation") {
                return Err(invalid(
                    at,
                    "headers",
                    "a message cannot have both `headers.control` and `headers.operation`",
                ));
            }
            return parse_control(control, headers.get("offset"), at).map(StateMessage::Control);
        }
        let entity_type = non_empty_string(wire.entity_type, "type", at)?;
        let key = non_empty_string(wire.key, "key", at)?;
        let operation = match headers.get("operation") {
            Some(Value::String(op)) => match op.as_str() {
                "insert" => Operation::Insert,
                "update" => Operation::Update,
                "delete" => Operation::Delete,
                other => {
                    return Err(invalid(
                        at,
                        "headers.operation",
                        format_args!("unknown operation {other:?} (insert, update or delete)"),
                    ));
                }
            },
            Some(_) => return Err(invalid(at, "headers.operation", "must be a string")),
            None => {
                return Err(invalid(
                    at,
                    "headers.operation",
                    "missing (a change needs insert, update or delete; a control message needs `headers.control`)",
                ));
            }
        };
        if operation != Operation::Delete && wire.value.is_none() {
            return Err(invalid(
                at,
                "value",
                format_args!("an {} must carry a `value`", operation.as_str()),
            ));
        }
        let txid = match headers.get("txid") {
            None => None,
            Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
            Some(_) => return Err(invalid(at, "headers.txid", "must be a non-empty string")),
        };
        let timestamp = match headers.get("timestamp") {
            None => None,
            Some(Value::String(t)) => Some(OffsetDateTime::parse(t, &Rfc3339).map_err(|e| {
                invalid(
                    at,
                    "headers.timestamp",
                    format_args!("{t:?} is not RFC 3339: {e}"),
                )
            })?),
            Some(_) => {
                return Err(invalid(
                    at,
                    "headers.timestamp",
                    "must be an RFC 3339 string",
                ));
            }
        };
        Ok(StateMessage::Change(Change {
            entity_type,
            key,
            value: wire.value,
            old_value: wire.old_value,
            operation,
            txid,
            timestamp,
        }))
    }

    /// The wire form.
    pub fn to_json(&self) -> Value {
        match self {
            StateMessage::Change(c) => {
                let mut headers = serde_json::Map::new();
                headers.insert("operation".into(), c.operation.as_str().into());
                if let Some(t) = &c.txid {
                    headers.insert("txid".into(), t.clone().into());
                }
                if let Some(ts) = c.timestamp
                    && let Ok(s) = ts.format(&Rfc3339)
                {
                    headers.insert("timestamp".into(), s.into());
                }
                let mut m = serde_json::Map::new();
                m.insert("type".into(), c.entity_type.clone().into());
                m.insert("key".into(), c.key.clone().into());
                if let Some(v) = &c.value {
                    m.insert("value".into(), v.clone());
                }
                if let Some(v) = &c.old_value {
                    m.insert("old_value".into(), v.clone());
                }
                m.insert("headers".into(), Value::Object(headers));
                Value::Object(m)
            }
            StateMessage::Control(c) => {
                let mut headers = serde_json::Map::new();
                headers.insert("control".into(), c.kind.as_str().into());
                if let Some(o) = &c.offset {
                    headers.insert("offset".into(), o.as_str().into());
                }
                serde_json::json!({ "headers": headers })
            }
        }
    }
}

fn parse_control(control: &Value, offset: Option<&Value>, at: Position<'_>) -> Result<Control> {
    let kind = match control {
        Value::String(c) => match c.as_str() {
            "snapshot-start" => ControlKind::SnapshotStart,
            "snapshot-end" => ControlKind::SnapshotEnd,
            "reset" => ControlKind::Reset,
            other => {
                return Err(invalid(
                    at,
                    "headers.control",
                    format_args!(
                        "unknown control {other:?} (snapshot-start, snapshot-end or reset)"
                    ),
                ));
            }
        },
        _ => return Err(invalid(at, "headers.control", "must be a string")),
    };
    let offset = match offset {
        None => None,
        Some(Value::String(o)) => Some(Offset::parse(o).map_err(|e| {
            invalid(
                at,
                "headers.offset",
                format_args!("{o:?} is not a valid offset: {e}"),
            )
        })?),
        Some(_) => return Err(invalid(at, "headers.offset", "must be a string")),
    };
    Ok(Control { kind, offset })
}

fn non_empty_string(v: Option<Value>, field: &'static str, at: Position<'_>) -> Result<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(invalid(
            at,
            field,
            format_args!("`{field}` must not be empty"),
        )),
        Some(_) => Err(invalid(
            at,
            field,
            format_args!("`{field}` must be a string"),
        )),
        None => Err(invalid(at, field, format_args!("a change needs `{field}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at() -> Position<'static> {
        static START: Offset = Offset::start();
        Position {
            offset: Some(&START),
            index: 3,
        }
    }

    fn field_of(raw: &str) -> &'static str {
        match StateMessage::parse(raw.as_bytes(), at()) {
            Err(e) => match e.kind() {
                ErrorKind::InvalidMessage { field } => {
                    assert!(e.to_string().contains("message #3"), "{e}");
                    field
                }
                other => panic!("{other:?}"),
            },
            Ok(m) => panic!("accepted {raw}: {m:?}"),
        }
    }

    #[test]
    fn valid_messages_parse() {
        let m = StateMessage::parse(
            br#"{"type":"user","key":"1","value":{"n":"A"},"headers":{"operation":"insert","txid":"t1","timestamp":"2025-01-15T10:30:00+02:00"},"extra":1}"#,
            at(),
        )
        .unwrap();
        let StateMessage::Change(c) = m else { panic!() };
        assert_eq!(c.operation, Operation::Insert);
        assert_eq!(c.txid.as_deref(), Some("t1"));
        assert_eq!(c.timestamp.unwrap().offset().whole_hours(), 2);
        let m = StateMessage::parse(
            br#"{"type":"u","key":"1","headers":{"operation":"delete"}}"#,
            at(),
        )
        .unwrap();
        assert!(matches!(
            m,
            StateMessage::Change(Change { value: None, .. })
        ));
        let m = StateMessage::parse(
            br#"{"type":"u","key":"1","value":null,"headers":{"operation":"update"}}"#,
            at(),
        )
        .unwrap();
        assert!(matches!(
            m,
            StateMessage::Change(Change {
                value: Some(Value::Null),
                ..
            })
        ));
        let m = StateMessage::parse(
            br#"{"headers":{"control":"reset","offset":"123456_000"}}"#,
            at(),
        )
        .unwrap();
        assert_eq!(
            m,
            StateMessage::Control(Control::new(
                ControlKind::Reset,
                Some(Offset::parse("123456_000").unwrap())
            ))
        );
    }

    #[test]
    fn every_must_is_checked_and_named() {
        assert_eq!(field_of("[1]"), "message");
        assert_eq!(field_of("{"), "json");
        assert_eq!(field_of(r#"{"type":"u","key":"1","value":1}"#), "headers");
        assert_eq!(
            field_of(r#"{"type":"u","key":"1","value":1,"headers":[]}"#),
            "headers"
        );
        assert_eq!(
            field_of(r#"{"key":"1","value":1,"headers":{"operation":"insert"}}"#),
            "type"
        );
        assert_eq!(
            field_of(r#"{"type":"","key":"1","value":1,"headers":{"operation":"insert"}}"#),
            "type"
        );
        assert_eq!(
            field_of(r#"{"type":"u","key":5,"value":1,"headers":{"operation":"insert"}}"#),
            "key"
        );
        assert_eq!(
            field_of(r#"{"type":"u","key":"1","headers":{"operation":"insert"}}"#),
            "value"
        );
        assert_eq!(
            field_of(r#"{"type":"u","key":"1","headers":{"operation":"update"}}"#),
            "value"
        );
        assert_eq!(
            field_of(r#"{"type":"u","key":"1","value":1,"headers":{"operation":"upsert"}}"#),
            "headers.operation"
        );
        assert_eq!(
            field_of(r#"{"type":"u","key":"1","value":1,"headers":{}}"#),
            "headers.operation"
        );
        assert_eq!(
            field_of(
                r#"{"type":"u","key":"1","value":1,"headers":{"operation":"insert","txid":""}}"#
            ),
            "headers.txid"
        );
        assert_eq!(
            field_of(
                r#"{"type":"u","key":"1","value":1,"headers":{"operation":"insert","timestamp":"yesterday"}}"#
            ),
            "headers.timestamp"
        );
        assert_eq!(
            field_of(r#"{"headers":{"control":"pause"}}"#),
            "headers.control"
        );
        assert_eq!(
            field_of(r#"{"headers":{"control":"reset","offset":"a&b"}}"#),
            "headers.offset"
        );
        assert_eq!(
            field_of(r#"{"headers":{"control":"reset","operation":"insert"}}"#),
            "headers"
        );
    }

    #[test]
    fn public_parsers_locate_errors_only_when_read_from_a_stream() {
        let raw = br#"{"type":"u","key":"1","headers":{"operation":"upsert"}}"#;
        let e = StateMessage::from_slice(raw).unwrap_err();
        assert_eq!(
            e.kind(),
            &ErrorKind::InvalidMessage {
                field: "headers.operation"
            }
        );
        assert!(
            e.to_string()
                .ends_with(": unknown operation \"upsert\" (insert, update or delete)")
        );
        assert!(!e.to_string().contains("message #"), "{e}");
        let at = Offset::parse("0_42").unwrap();
        let e = StateMessage::from_slice_at(raw, &at, 7).unwrap_err();
        assert!(
            e.to_string()
                .contains("message #7 of the batch read at offset 0_42: unknown operation"),
            "{e}"
        );
        assert!(StateMessage::from_slice(br#"{"headers":{"control":"reset"}}"#).is_ok());
    }

    fn arb_message() -> impl Strategy<Value = StateMessage> {
        let op = prop_oneof![
            Just(Operation::Insert),
            Just(Operation::Update),
            Just(Operation::Delete)
        ];
        let change = (
            op,
            "[a-z]{1,5}",
            "[a-z0-9:]{1,8}",
            proptest::option::of(any::<i64>()),
            proptest::option::of("[a-z0-9]{1,6}"),
        )
            .prop_map(|(op, t, k, v, txid)| {
                let value = match (op, v) {
                    (Operation::Delete, v) => v.map(Value::from),
                    (_, v) => Some(v.map(Value::from).unwrap_or(Value::Null)),
                };
                let mut c = Change::new(op, t, k, value);
                c.txid = txid;
                StateMessage::Change(c)
            });
        let control = prop_oneof![
            Just(ControlKind::SnapshotStart),
            Just(ControlKind::SnapshotEnd),
            Just(ControlKind::Reset)
        ]
        .prop_map(|k| StateMessage::Control(Control::new(k, None)));
        prop_oneof![4 => change, 1 => control]
    }

    proptest! {
        #[test]
        fn wire_form_round_trips(m in arb_message()) {
            let raw = serde_json::to_vec(&m.to_json()).unwrap();
            prop_assert_eq!(StateMessage::parse(&raw, at()).unwrap(), m);
        }

        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = StateMessage::parse(&raw, at());
        }
    }
}
