//! The `top` data model: one snapshot of every watched stream and its
//! consumers, the arithmetic behind it (rates, lag), and the text tables
//! that both renderers (plain text and the TUI) show.

use std::time::Duration;

use serde::Serialize;

/// One refresh of `dstream top` (printed as one JSON object by `--output json`).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TopSnapshot {
    /// When it was taken (RFC 3339, UTC).
    pub taken_at: String,
    /// The window the rates are measured over, in seconds (null: no
    /// window yet, so no rates).
    pub window_secs: Option<f64>,
    /// One row per stream, in the order they were named.
    pub streams: Vec<StreamRow>,
}

/// One stream.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StreamRow {
    /// The name as given (or the subscription's stream path).
    pub name: String,
    /// The stream URL (credentials and query values redacted).
    pub url: String,
    /// Why the stream could not be shown (HEAD failed), else null.
    pub error: Option<String>,
    /// The stream's content type.
    pub content_type: Option<String>,
    /// The tail (next) offset from the latest HEAD.
    pub tail_offset: Option<String>,
    /// Bytes appended per second over the window, as seen by the live
    /// reader (for JSON streams: the bytes of the JSON values).
    pub bytes_per_sec: Option<f64>,
    /// Messages appended per second (JSON streams only: byte streams have
    /// no message boundaries, so null).
    pub messages_per_sec: Option<f64>,
    /// Seconds since the live reader last saw data; null when nothing was
    /// appended since `top` started watching.
    pub last_append_secs: Option<f64>,
    /// Seconds `top` has been watching this stream.
    pub watched_secs: f64,
    /// Whether the stream is closed.
    pub closed: bool,
    /// The sliding TTL in seconds, if any.
    pub ttl_secs: Option<u64>,
    /// The absolute expiry as the server sent it, if any.
    pub expires_at: Option<String>,
    /// Consumers of this stream.
    pub consumers: Vec<ConsumerRow>,
}

/// One consumer position: a checkpoint file or a subscription's acked offset.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ConsumerRow {
    /// The checkpoint name (file name), or `subscription:ID`.
    pub name: String,
    /// `checkpoint` or `subscription`.
    pub source: &'static str,
    /// The consumer's offset (where it resumes).
    pub offset: Option<String>,
    /// `behind`, `caught-up` or `ahead`, by the protocol's lexicographic
    /// offset order (null without an offset or tail).
    pub position: Option<&'static str>,
    /// How many bytes the consumer is behind the tail. A heuristic for the
    /// known servers' `<seq>_<byte>` offsets: null when either offset has
    /// another form (0 whenever the offsets are equal).
    pub lag_bytes: Option<u64>,
    /// Seconds since the offset last moved (checkpoint files: the file's
    /// modification time; subscriptions: since `top` saw it change, null
    /// before that).
    pub since_moved_secs: Option<f64>,
    /// Why the position could not be read (e.g. a corrupt checkpoint file).
    pub error: Option<String>,
}

/// The byte position in an offset of the form the known servers mint,
/// `<read seq>_<byte offset>` in decimal digits (`-1`, the stream start, is
/// byte 0). `None` for any other form: offsets are opaque by the protocol,
/// so this is a heuristic used only for display.
pub fn byte_position(offset: &str) -> Option<u64> {
    if offset == "-1" {
        return Some(0);
    }
    let (seq, bytes) = offset.split_once('_')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(seq) || !digits(bytes) {
        return None;
    }
    bytes.parse().ok()
}

/// Bytes between a consumer offset and the tail; see [`byte_position`].
/// Equal offsets are 0 whatever their form; a consumer ahead of the tail
/// (e.g. a checkpoint of another stream) has no lag.
pub fn lag_bytes(tail: &str, consumer: &str) -> Option<u64> {
    if tail == consumer {
        return Some(0);
    }
    byte_position(tail)?.checked_sub(byte_position(consumer)?)
}

/// Where a consumer is relative to the tail, by the protocol's
/// lexicographic offset order (`-1`, the start, is before everything).
pub fn position(tail: &str, consumer: &str) -> &'static str {
    use std::cmp::Ordering;
    let order = match (consumer == "-1", tail == "-1") {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => consumer.cmp(tail),
    };
    match order {
        Ordering::Less => "behind",
        Ordering::Equal => "caught-up",
        Ordering::Greater => "ahead",
    }
}

/// `delta` units over `window`, per second (0 for an empty window).
pub fn per_second(delta: u64, window: Duration) -> f64 {
    let secs = window.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    round3(delta as f64 / secs)
}

/// Rounded to milliseconds (or thousandths), for stable output.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `1.5 KiB` style sizes.
pub fn human_bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3.2s`, `4m05s`, `2h03m`, `3d04h`.
pub fn human_age(secs: f64) -> String {
    if secs < 60.0 {
        return format!("{secs:.1}s");
    }
    let s = secs as u64;
    match s {
        0..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Column headers of the streams table.
pub const STREAM_HEADERS: [&str; 7] = [
    "STREAM",
    "TAIL OFFSET",
    "BYTES/S",
    "MSGS/S",
    "LAST APPEND",
    "STATE",
    "EXPIRY",
];

/// Column headers of the consumers table.
pub const CONSUMER_HEADERS: [&str; 6] = [
    "STREAM",
    "CONSUMER",
    "OFFSET",
    "POSITION",
    "LAG BYTES",
    "SINCE MOVED",
];

/// The streams table as text cells ("n/a": not applicable or unknown,
/// "-": nothing yet).
pub fn stream_cells(snapshot: &TopSnapshot) -> Vec<Vec<String>> {
    snapshot
        .streams
        .iter()
        .map(|s| {
            if let Some(error) = &s.error {
                let mut row = vec![s.name.clone(), format!("error: {error}")];
                row.resize(STREAM_HEADERS.len(), String::new());
                return row;
            }
            let rate = |r: Option<f64>, f: &dyn Fn(f64) -> String| match r {
                Some(r) => f(r),
                None => "n/a".to_owned(),
            };
            let bytes = rate(s.bytes_per_sec, &|r| format!("{}/s", human_bytes(r)));
            let msgs = if snapshot.window_secs.is_none() {
                "-".to_owned()
            } else {
                rate(s.messages_per_sec, &|r| format!("{r:.1}"))
            };
            let last = match s.last_append_secs {
                Some(age) => format!("{} ago", human_age(age)),
                None => format!("none in {}", human_age(s.watched_secs)),
            };
            let expiry = match (s.ttl_secs, &s.expires_at) {
                (Some(ttl), _) => format!("ttl {ttl}s"),
                (None, Some(at)) => at.clone(),
                (None, None) => "-".to_owned(),
            };
            vec![
                s.name.clone(),
                s.tail_offset.clone().unwrap_or_else(|| "-".into()),
                if snapshot.window_secs.is_none() {
                    "-".to_owned()
                } else {
                    bytes
                },
                msgs,
                last,
                if s.closed { "closed" } else { "open" }.to_owned(),
                expiry,
            ]
        })
        .collect()
}

/// The consumers table as text cells, grouped by stream.
pub fn consumer_cells(snapshot: &TopSnapshot) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for s in &snapshot.streams {
        for c in &s.consumers {
            if let Some(error) = &c.error {
                let mut row = vec![s.name.clone(), c.name.clone(), format!("error: {error}")];
                row.resize(CONSUMER_HEADERS.len(), String::new());
                rows.push(row);
                continue;
            }
            rows.push(vec![
                s.name.clone(),
                c.name.clone(),
                c.offset.clone().unwrap_or_else(|| "-".into()),
                c.position.unwrap_or("n/a").to_owned(),
                c.lag_bytes.map_or("n/a".to_owned(), |n| n.to_string()),
                c.since_moved_secs
                    .map_or("n/a".to_owned(), |a| format!("{} ago", human_age(a))),
            ]);
        }
    }
    rows
}

/// Column widths fitting the headers and cells.
pub fn widths(headers: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain(std::iter::once(h.len()))
                .max()
                .unwrap_or(0)
        })
        .collect()
}

fn text_table(out: &mut String, headers: &[&str], rows: &[Vec<String>]) {
    let widths = widths(headers, rows);
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The plain text form of a snapshot (for output that is not a terminal).
pub fn plain_text(snapshot: &TopSnapshot) -> String {
    let mut out = format!("dstream top  {}\n", snapshot.taken_at);
    text_table(&mut out, &STREAM_HEADERS, &stream_cells(snapshot));
    let consumers = consumer_cells(snapshot);
    if !consumers.is_empty() {
        out.push('\n');
        text_table(&mut out, &CONSUMER_HEADERS, &consumers);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_positions_of_the_known_servers_offsets_only() {
        assert_eq!(
            byte_position("0000000000000000_0000000000001234"),
            Some(1234)
        );
        assert_eq!(byte_position("3_17"), Some(17));
        assert_eq!(byte_position("-1"), Some(0));
        for opaque in [
            "", "_", "1_", "_1", "abc", "1_2_3", "01J0ULID", "1_-2", "x_1", "now",
        ] {
            assert_eq!(byte_position(opaque), None, "{opaque:?}");
        }
    }

    #[test]
    fn lag_is_bytes_behind_or_not_available() {
        let tail = "0000000000000000_0000000000005000";
        assert_eq!(
            lag_bytes(tail, "0000000000000000_0000000000001000"),
            Some(4000)
        );
        assert_eq!(lag_bytes(tail, tail), Some(0));
        assert_eq!(lag_bytes(tail, "-1"), Some(5000));
        // Other read sequence, same byte space.
        assert_eq!(
            lag_bytes(tail, "0000000000000001_0000000000004999"),
            Some(1)
        );
        // Ahead of the tail (a checkpoint of another stream): no lag.
        assert_eq!(lag_bytes("0_10", "0_20"), None);
        // Opaque offsets: n/a, except when equal.
        assert_eq!(lag_bytes("01HZX", "01HZA"), None);
        assert_eq!(lag_bytes("01HZX", "01HZX"), Some(0));
        assert_eq!(lag_bytes(tail, "01HZA"), None);
    }

    #[test]
    fn positions_follow_lexicographic_order() {
        assert_eq!(position("0_0000000010", "0_0000000005"), "behind");
        assert_eq!(position("0_0000000010", "0_0000000010"), "caught-up");
        assert_eq!(position("0_0000000010", "0_0000000011"), "ahead");
        assert_eq!(position("0_0000000010", "-1"), "behind");
        assert_eq!(position("-1", "-1"), "caught-up");
    }

    #[test]
    fn rates_and_formatting() {
        assert_eq!(per_second(3000, Duration::from_secs(2)), 1500.0);
        assert_eq!(per_second(1, Duration::from_millis(3)), 333.333);
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.0 * 1024.0 * 1024.0), "3.0 MiB");
        assert_eq!(human_age(2.25), "2.2s");
        assert_eq!(human_age(65.0), "1m05s");
        assert_eq!(human_age(7260.0), "2h01m");
        assert_eq!(human_age(90000.0), "1d01h");
    }

    #[test]
    fn plain_text_shows_na_and_consumers() {
        let snapshot = TopSnapshot {
            taken_at: "2030-01-01T00:00:00Z".into(),
            window_secs: Some(1.0),
            streams: vec![StreamRow {
                name: "orders".into(),
                tail_offset: Some("0_10".into()),
                bytes_per_sec: Some(2048.0),
                messages_per_sec: None,
                watched_secs: 1.0,
                consumers: vec![ConsumerRow {
                    name: "billing".into(),
                    source: "checkpoint",
                    offset: Some("X".into()),
                    position: Some("ahead"),
                    lag_bytes: None,
                    ..ConsumerRow::default()
                }],
                ..StreamRow::default()
            }],
        };
        let text = plain_text(&snapshot);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("STREAM  TAIL OFFSET  BYTES/S"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("orders  0_10         2.0 KiB/s  n/a"),
            "{text}"
        );
        assert!(lines[2].contains("none in 1.0s"), "{text}");
        assert!(
            text.contains("orders  billing   X       ahead     n/a"),
            "{text}"
        );
    }
}
