//! Dynamic headers and query parameters (ADAPTER.md §6).
//!
//! Each configured value becomes a per-request closure on the [`Stream`]
//! (`with_header_fn` / `with_param_fn`), so it is really evaluated for every
//! request the library sends, retries included. The closure records the value
//! it produced; a command reports the last value sent for each name as
//! `headersSent` / `paramsSent`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use durable_streams_client::Stream;

/// How a dynamic value is produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueType {
    /// `1`, `2`, `3`, ... (incremented before each use).
    Counter,
    /// Milliseconds since the Unix epoch.
    Timestamp,
    /// A fixed value, replaced by calling `set-dynamic-header` again.
    Token(String),
}

impl ValueType {
    /// Parse the command's `valueType` / `initialValue`.
    pub fn parse(value_type: &str, initial: Option<&str>) -> Option<ValueType> {
        match value_type {
            "counter" => Some(ValueType::Counter),
            "timestamp" => Some(ValueType::Timestamp),
            "token" => Some(ValueType::Token(initial.unwrap_or_default().to_owned())),
            _ => None,
        }
    }
}

/// One configured value with its counter.
#[derive(Debug)]
struct Generator {
    kind: ValueType,
    counter: u64,
}

impl Generator {
    fn next_value(&mut self) -> String {
        match &self.kind {
            ValueType::Counter => {
                self.counter += 1;
                self.counter.to_string()
            }
            ValueType::Timestamp => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
                .to_string(),
            ValueType::Token(token) => token.clone(),
        }
    }
}

type Sent = Arc<Mutex<BTreeMap<String, String>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Named generators plus the record of what was sent.
#[derive(Debug, Default)]
struct Group {
    entries: Vec<(String, Arc<Mutex<Generator>>)>,
    sent: Sent,
}

impl Group {
    fn set(&mut self, name: &str, kind: ValueType) {
        self.entries.retain(|(n, _)| n != name);
        self.entries.push((
            name.to_owned(),
            Arc::new(Mutex::new(Generator { kind, counter: 0 })),
        ));
    }

    /// One closure per entry: evaluates the generator and records the value.
    fn closures(
        &self,
    ) -> impl Iterator<Item = (String, impl Fn() -> String + Send + Sync + 'static)> {
        self.entries.iter().map(|(name, generator)| {
            let generator = Arc::clone(generator);
            let sent = Arc::clone(&self.sent);
            let key = name.clone();
            (name.clone(), move || {
                let value = lock(&generator).next_value();
                lock(&sent).insert(key.clone(), value.clone());
                value
            })
        })
    }

    fn take_sent(&self) -> BTreeMap<String, String> {
        std::mem::take(&mut *lock(&self.sent))
    }
}

/// Every dynamic header and parameter of this adapter process.
#[derive(Debug, Default)]
pub struct Dynamic {
    headers: Group,
    params: Group,
}

/// What the dynamic closures sent during one command.
#[derive(Debug, Default)]
pub struct SentValues {
    /// Header name to the last value sent.
    pub headers: BTreeMap<String, String>,
    /// Parameter name to the last value sent.
    pub params: BTreeMap<String, String>,
}

impl Dynamic {
    /// `set-dynamic-header`: add or replace (resetting its counter).
    pub fn set_header(&mut self, name: &str, kind: ValueType) {
        self.headers.set(name, kind);
    }

    /// `set-dynamic-param`: add or replace (resetting its counter).
    pub fn set_param(&mut self, name: &str, kind: ValueType) {
        self.params.set(name, kind);
    }

    /// `clear-dynamic` (and `init`).
    pub fn clear(&mut self) {
        *self = Dynamic::default();
    }

    /// Install the per-request closures on `stream` and forget values recorded
    /// by earlier commands. Static headers added afterwards replace dynamic
    /// ones of the same name (the command's own headers take precedence).
    pub fn apply(&self, mut stream: Stream) -> Stream {
        self.headers.take_sent();
        self.params.take_sent();
        for (name, f) in self.headers.closures() {
            stream = stream.with_header_fn(name, f);
        }
        for (name, f) in self.params.closures() {
            stream = stream.with_param_fn(name, f);
        }
        stream
    }

    /// The values the closures produced since [`Dynamic::apply`].
    pub fn take_sent(&self) -> SentValues {
        SentValues {
            headers: self.headers.take_sent(),
            params: self.params.take_sent(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_increments_per_evaluation_and_resets_on_replace() {
        let mut group = Group::default();
        group.set("X-C", ValueType::Counter);
        let (_, f) = group.closures().next().unwrap();
        assert_eq!(f(), "1");
        assert_eq!(f(), "2");
        assert_eq!(group.take_sent().get("X-C").map(String::as_str), Some("2"));
        assert!(group.take_sent().is_empty());
        group.set("X-C", ValueType::Token("t".into()));
        assert_eq!(group.entries.len(), 1);
        let (_, f) = group.closures().next().unwrap();
        assert_eq!(f(), "t");
    }
}
