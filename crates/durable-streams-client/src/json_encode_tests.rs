//! The encoder against `serde_json`, byte for byte.

use std::collections::{BTreeMap, HashMap};

use bytes::BytesMut;
use proptest::prelude::*;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{any_needs_escape, escape_of, word_needs_escape, write};

fn ours<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    write(&mut out, value).map_err(|e| e.to_string())?;
    // Into a `Vec` too: the producer's writer encodes into one.
    let mut vec = Vec::new();
    write(&mut vec, value).expect("the same value encodes into a Vec");
    assert_eq!(out[..], vec[..]);
    Ok(out.to_vec())
}

#[track_caller]
fn same<T: Serialize + ?Sized>(value: &T) {
    let expected = serde_json::to_vec(value).expect("serde_json encodes it");
    let got = ours(value).expect("we encode it");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
}

#[track_caller]
fn both_reject<T: Serialize + ?Sized>(value: &T) {
    assert!(serde_json::to_vec(value).is_err());
    assert!(ours(value).is_err());
}

#[test]
fn every_ascii_and_control_character_is_escaped_like_serde_json() {
    for byte in 0u8..0x80 {
        let s = (byte as char).to_string();
        same(&s);
        // At every position of an eight-byte word, and past it.
        for pad in 0..17 {
            same(&format!("{}{s}{}", "a".repeat(pad), "b".repeat(17 - pad)));
        }
    }
    same("");
    same("\"\\\u{7f}\u{1f}\u{0}é€😀 \u{2028}");
    same(&"x".repeat(1000));
    same(&format!("{}\n{}\"", "ü".repeat(300), "ab".repeat(7)));
}

#[test]
fn the_word_test_finds_exactly_the_words_with_a_byte_to_escape() {
    for byte in 0u8..=255 {
        let needs = byte < 0x20 || byte == b'"' || byte == b'\\';
        for pos in 0..8 {
            let mut word = [b'a'; 8];
            word[pos] = byte;
            assert_eq!(
                word_needs_escape(u64::from_le_bytes(word)),
                needs,
                "byte {byte:#x} at {pos}"
            );
        }
    }
}

#[derive(Serialize)]
struct Unit;

#[derive(Serialize)]
struct Newtype(u32);

#[derive(Serialize)]
struct Tuple(i8, String, Option<bool>);

#[derive(Serialize)]
enum Kind {
    Plain,
    Wrapped(f64),
    Pair(u8, char),
    Named {
        at: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
}

#[derive(Serialize)]
struct Event {
    id: u64,
    kind: Kind,
    #[serde(rename = "wé\"ird")]
    weird: Vec<Kind>,
    unit: Unit,
    newtype: Newtype,
    tuple: Tuple,
    nothing: Option<u8>,
    #[serde(flatten)]
    extra: BTreeMap<String, Value>,
    raw: Box<RawValue>,
    bytes: Bytes,
    big: (i128, u128),
    floats: [f64; 6],
    small: f32,
}

/// Bytes through `serialize_bytes` (an array of numbers in JSON).
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

#[test]
fn every_kind_of_serde_value_encodes_like_serde_json() {
    let event = Event {
        id: u64::MAX,
        kind: Kind::Named { at: -5, note: None },
        weird: vec![
            Kind::Plain,
            Kind::Wrapped(-0.0),
            Kind::Pair(7, '"'),
            Kind::Named {
                at: i64::MIN,
                note: Some("line\nbreak".into()),
            },
        ],
        unit: Unit,
        newtype: Newtype(3),
        tuple: Tuple(-128, "t\u{1}".into(), Some(false)),
        nothing: None,
        extra: BTreeMap::from([("x\ty".into(), serde_json::json!({"a": [1, 2.5, null]}))]),
        raw: RawValue::from_string(r#"{ "kept" : [1,  2] }"#.into()).unwrap(),
        bytes: Bytes(vec![0, 1, 255]),
        big: (i128::MIN, u128::MAX),
        floats: [
            1.0,
            1e300,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            0.1 + 0.2,
        ],
        small: 1.1,
    };
    same(&event);
    same(&vec![Kind::Plain, Kind::Wrapped(2.0)]);
    same(&Kind::Pair(1, 'é'));
    same(&());
    same(&Unit);
    same(&Option::<u8>::None);
    same(&Some("x"));
    same::<[u8]>(&[]);
    same(&BTreeMap::<String, u8>::new());
    same(&(1, "two", [3.0]));
    same(&RawValue::from_string("[1,\n2]".into()).unwrap());
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
enum KeyKind {
    Variant,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
struct KeyNewtype(i32);

#[test]
fn map_keys_follow_serde_json_rules() {
    same(&BTreeMap::from([(1i8, 1), (-2, 2)]));
    same(&BTreeMap::from([(u64::MAX, "max")]));
    same(&BTreeMap::from([(i128::MIN, ())]));
    same(&BTreeMap::from([(true, 1), (false, 0)]));
    same(&BTreeMap::from([('"', 1), ('\n', 2)]));
    same(&BTreeMap::from([(KeyKind::Variant, 1)]));
    same(&BTreeMap::from([(KeyNewtype(-7), 1)]));
    same(&BTreeMap::from([(Some("k"), 1)]));
    same(&HashMap::from([(1.5f64.to_bits(), 1)]));

    struct FloatKeys(Vec<f64>);
    impl Serialize for FloatKeys {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|k| (k, 1)))
        }
    }
    same(&FloatKeys(vec![1.5, -0.0, 1e21]));
    both_reject(&FloatKeys(vec![f64::NAN]));
    both_reject(&FloatKeys(vec![f64::INFINITY]));

    both_reject(&BTreeMap::from([((), 1)]));
    both_reject(&BTreeMap::from([(vec![1], 1)]));
    both_reject(&BTreeMap::from([(Option::<u8>::None, 1)]));
    both_reject(&BTreeMap::from([((1, 2), 1)]));
}

#[test]
fn displayed_values_encode_like_serde_json() {
    // `collect_str`, as date and time types and addresses use it.
    struct Shown(&'static str);
    impl Serialize for Shown {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_str(&format_args!("<{}>\n", self.0))
        }
    }
    same(&Shown("a \"quoted\" \u{1} word"));
    same(&BTreeMap::from([(
        std::net::Ipv4Addr::LOCALHOST,
        Shown("x"),
    )]));
}

#[test]
fn a_failing_serialize_is_an_error() {
    struct Fails;
    impl Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no way"))
        }
    }
    assert_eq!(ours(&vec![Fails]).unwrap_err(), "no way");
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[\"\\\\\u{0}-\u{1f}a-z]{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_json_value_encodes_like_serde_json(value in json_value()) {
        let expected = serde_json::to_vec(&value).unwrap();
        prop_assert_eq!(ours(&value).unwrap(), expected);
    }

    #[test]
    fn any_string_encodes_like_serde_json(s in any::<String>(), t in "[\"\\\\\u{0}-\u{1f}\u{7f}a-zé]{0,40}") {
        prop_assert_eq!(ours(&s).unwrap(), serde_json::to_vec(&s).unwrap());
        prop_assert_eq!(ours(&t).unwrap(), serde_json::to_vec(&t).unwrap());
    }

    #[test]
    fn the_whole_string_scan_finds_any_byte_to_escape(
        clean in "[a-zé ]{0,40}",
        dirty in proptest::option::of((0usize..48, prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20])),
    ) {
        // A clean string, and the same with one byte to escape anywhere
        // (every position against the word and tail boundaries).
        let mut bytes = clean.into_bytes();
        if let Some((at, byte)) = dirty {
            bytes.insert(at.min(bytes.len()), byte);
        }
        let expected = bytes.iter().any(|&b| escape_of(b).is_some());
        prop_assert_eq!(any_needs_escape(&bytes), expected);
    }
}
