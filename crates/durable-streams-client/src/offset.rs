//! Offsets: opaque positions in a stream.

use std::fmt;
use std::sync::Arc;

use crate::error::{DecodeKind, Error, Result};

/// The longest offset token accepted (the protocol asks servers to stay under 256).
const MAX_OFFSET_LEN: usize = 1024;

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
    /// strings and the characters the protocol forbids in tokens
    /// (`,` `&` `=` `?` `/`), whitespace and control characters.
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
    if token.len() > MAX_OFFSET_LEN {
        return Err(format!("offset is longer than {MAX_OFFSET_LEN} bytes"));
    }
    if let Some(c) = token
        .chars()
        .find(|c| matches!(c, ',' | '&' | '=' | '?' | '/') || c.is_whitespace() || c.is_control())
    {
        return Err(format!("offset contains the forbidden character {c:?}"));
    }
    Ok(())
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
        for bad in ["", "a,b", "a&b", "a=b", "a?b", "a/b", "a b", "a\nb"] {
            let err = Offset::parse(bad).unwrap_err();
            assert_eq!(
                err.kind(),
                &crate::ErrorKind::InvalidArgument { field: "offset" }
            );
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

    proptest! {
        #[test]
        fn tokens_round_trip_and_order_bytewise(a in "[A-Za-z0-9_.~%+:-]{1,40}", b in "[A-Za-z0-9_.~%+:-]{1,40}") {
            prop_assume!(a != "-1" && a != "now" && b != "-1" && b != "now");
            let oa = Offset::parse(&a).unwrap();
            let ob = Offset::parse(&b).unwrap();
            prop_assert_eq!(oa.as_str(), a.as_str());
            prop_assert_eq!(oa.cmp(&ob), a.as_bytes().cmp(b.as_bytes()));
            prop_assert_eq!(oa.to_string().parse::<Offset>().unwrap(), oa);
        }

        #[test]
        fn any_string_either_parses_back_identically_or_is_rejected(s in "\\PC{0,20}") {
            if let Ok(o) = Offset::parse(&s) {
                prop_assert_eq!(o.as_str(), s.as_str());
            }
        }
    }
}
