//! Offsets: opaque positions in a stream.

use std::fmt;
use std::sync::Arc;

use crate::error::{DecodeKind, Error, Result};

/// A position in a stream: the start (`-1`), the current tail (`now`), or an
/// opaque token the server returned in `Stream-Next-Offset`.
///
/// Tokens are never parsed: they compare byte-wise, which the protocol
/// guarantees matches stream order for tokens of the same stream. Cloning is
/// cheap (shared string).
///
/// ```
/// use durable_streams_client::Offset;
/// assert!(Offset::start().is_start());
/// let o = Offset::parse("0000000000000001_0000000000000042").unwrap();
/// assert_eq!(o.as_str(), "0000000000000001_0000000000000042");
/// assert!(Offset::parse("a&b").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Offset(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Start,
    Now,
    Token(Arc<str>),
}

impl Offset {
    /// The beginning of the stream (`-1`).
    pub const fn start() -> Offset {
        Offset(Repr::Start)
    }

    /// The current tail: skip existing data and read only what arrives next.
    pub const fn now() -> Offset {
        Offset(Repr::Now)
    }

    /// Accept an offset as text: `-1`, `now`, or a server token. Rejects empty
    /// strings, the characters the protocol forbids in tokens
    /// (`,` `&` `=` `?` `/`) and control characters; anything else is a
    /// valid opaque token (spaces and non-ASCII included: they are
    /// percent-encoded in request URLs).
    pub fn parse(token: &str) -> Result<Offset> {
        match token {
            "-1" => return Ok(Offset::start()),
            "now" => return Ok(Offset::now()),
            _ => {}
        }
        validate_token(token).map_err(|why| Error::invalid_argument("offset", why))?;
        Ok(Offset(Repr::Token(Arc::from(token))))
    }

    /// An offset from a server response header or control event.
    pub(crate) fn from_server(token: &str) -> Result<Offset> {
        if token == "-1" || token == "now" {
            return Err(Error::decode(
                DecodeKind::Header,
                format!("server returned the reserved offset {token:?}"),
            ));
        }
        validate_token(token).map_err(|why| Error::decode(DecodeKind::Header, why))?;
        Ok(Offset(Repr::Token(Arc::from(token))))
    }

    /// The wire form: `-1`, `now` or the token.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Start => "-1",
            Repr::Now => "now",
            Repr::Token(t) => t,
        }
    }

    /// True for the start sentinel.
    pub fn is_start(&self) -> bool {
        matches!(self.0, Repr::Start)
    }

    /// True for the `now` sentinel.
    pub fn is_now(&self) -> bool {
        matches!(self.0, Repr::Now)
    }
}

fn validate_token(token: &str) -> std::result::Result<(), String> {
    if token.is_empty() {
        return Err("offset is empty".into());
    }
    if let Some(c) = token.chars().find(|&c| is_forbidden(c)) {
        return Err(format!("offset contains the forbidden character {c:?}"));
    }
    Ok(())
}

/// The protocol's forbidden token characters, and control characters.
fn is_forbidden(c: char) -> bool {
    matches!(c, ',' | '&' | '=' | '?' | '/') || c.is_control()
}

impl Default for Offset {
    fn default() -> Self {
        Offset::start()
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Offset({})", self.as_str())
    }
}

impl std::str::FromStr for Offset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Offset> {
        Offset::parse(s)
    }
}

impl serde::Serialize for Offset {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Offset {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Offset, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Offset::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sentinels_round_trip() {
        assert_eq!(Offset::parse("-1").unwrap(), Offset::start());
        assert_eq!(Offset::parse("now").unwrap(), Offset::now());
        assert_eq!(Offset::start().as_str(), "-1");
        assert!(Offset::from_server("now").is_err());
        assert!(Offset::from_server("-1").is_err());
    }

    #[test]
    fn rejects_forbidden_characters() {
        for bad in [
            "", "a,b", "a&b", "a=b", "a?b", "a/b", "a\nb", "a\tb", "\u{7f}", "a\u{85}",
        ] {
            let err = Offset::parse(bad).unwrap_err();
            assert_eq!(
                err.kind(),
                &crate::ErrorKind::InvalidArgument { field: "offset" }
            );
            let err = Offset::from_server(bad).unwrap_err();
            assert_eq!(
                err.kind(),
                &crate::ErrorKind::Decode(crate::DecodeKind::Header)
            );
        }
    }

    #[test]
    fn accepts_any_other_token() {
        let long = "9".repeat(4096);
        for good in [
            "a b",
            " ",
            "+",
            "%20",
            "ü_ß",
            "a;b:c",
            "#",
            "[x]",
            "\"",
            "-2",
            "NOW",
            long.as_str(),
        ] {
            assert_eq!(Offset::parse(good).unwrap().as_str(), good);
            assert_eq!(Offset::from_server(good).unwrap().as_str(), good);
        }
    }
    #[test]
    fn serde_round_trip() {
        let o = Offset::parse("abc_123").unwrap();
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, "\"abc_123\"");
        let back: Offset = serde_json::from_str(&json).unwrap();
        assert_eq!(back, o);
        assert!(serde_json::from_str::<Offset>("\"a/b\"").is_err());
    }

    /// Any character but the forbidden ones.
    fn token_char() -> impl Strategy<Value = char> {
        any::<char>().prop_filter("allowed", |&c| !is_forbidden(c))
    }

    /// Any valid server token (not a sentinel).
    fn token() -> impl Strategy<Value = String> {
        prop::collection::vec(token_char(), 1..40)
            .prop_map(|cs| cs.into_iter().collect::<String>())
            .prop_filter("not a sentinel", |s| s != "-1" && s != "now")
    }

    /// A valid token with one forbidden character inserted.
    fn bad_token() -> impl Strategy<Value = String> {
        let forbidden = prop_oneof![
            prop::sample::select(vec![',', '&', '=', '?', '/']),
            any::<char>().prop_filter("control", |c| c.is_control()),
        ];
        (token(), forbidden, any::<prop::sample::Index>()).prop_map(|(t, c, at)| {
            let mut cs: Vec<char> = t.chars().collect();
            let i = at.index(cs.len() + 1);
            cs.insert(i, c);
            cs.into_iter().collect()
        })
    }

    proptest! {
        #[test]
        fn tokens_round_trip_and_order_bytewise(a in token(), b in token()) {
            let oa = Offset::parse(&a).unwrap();
            let ob = Offset::parse(&b).unwrap();
            prop_assert_eq!(oa.as_str(), a.as_str());
            prop_assert_eq!(oa.to_string(), a.clone());
            prop_assert_eq!(oa.cmp(&ob), a.as_bytes().cmp(b.as_bytes()));
            prop_assert_eq!(oa == ob, a == b);
            prop_assert_eq!(oa.to_string().parse::<Offset>().unwrap(), oa.clone());
            prop_assert_eq!(Offset::from_server(&a).unwrap(), oa.clone());
            // Serde keeps the token as is.
            let json = serde_json::to_string(&oa).unwrap();
            prop_assert_eq!(serde_json::from_str::<Offset>(&json).unwrap(), oa.clone());
            // The start is before every token.
            prop_assert!(Offset::start() < oa);
        }

        #[test]
        fn forbidden_characters_are_rejected(t in bad_token()) {
            prop_assert!(Offset::parse(&t).is_err());
            prop_assert!(Offset::from_server(&t).is_err());
        }

        #[test]
        fn any_string_either_parses_back_identically_or_is_rejected(s in "\\PC{0,20}|.{0,20}") {
            match Offset::parse(&s) {
                Ok(o) => {
                    prop_assert_eq!(o.as_str(), s.as_str());
                    prop_assert!(!s.is_empty() && !s.chars().any(is_forbidden));
                }
                Err(_) => prop_assert!(s.is_empty() || s.chars().any(is_forbidden)),
            }
        }

        #[test]
        fn query_encoding_round_trips(t in token()) {
            // How request URLs carry offsets: percent-encoded, never `+`.
            let mut url = url::Url::parse("http://h/s").unwrap();
            url.set_query(Some(&crate::request::encode_query(&[("offset".to_owned(), t.clone())])));
            let query = url.query().unwrap().to_owned();
            prop_assert!(!query.contains('+'));
            prop_assert!(!query.contains(' '));
            let decoded: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            prop_assert_eq!(decoded, vec![("offset".to_owned(), t.clone())]);
            let pct = percent_encoding::percent_decode_str(query.strip_prefix("offset=").unwrap())
                .decode_utf8()
                .unwrap();
            prop_assert_eq!(pct.as_ref(), t.as_str());
        }
    }
}
