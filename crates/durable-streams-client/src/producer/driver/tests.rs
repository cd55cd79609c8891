use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::answer::{check_echo, is_collision, mentions_epoch, state_lost};
use super::*;
use crate::error::DecodeKind;
use reqwest::header::HeaderValue;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

#[test]
fn echoed_producer_headers_must_match() {
    let ok = StatusCode::OK;
    let dup = StatusCode::NO_CONTENT;
    let echo = |e: &str, s: &str| headers(&[("producer-epoch", e), ("producer-seq", s)]);
    assert!(check_echo(&echo("7", "3"), ok, 7, 3, false).is_ok());
    // A duplicate echoes the highest accepted seq: ours or later.
    assert!(check_echo(&echo("7", "5"), dup, 7, 3, false).is_ok());
    assert!(check_echo(&echo("7", "2"), dup, 7, 3, false).is_err());
    // New data must be acknowledged as exactly this tuple.
    let err = check_echo(&echo("7", "4"), ok, 7, 3, false).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Decode(DecodeKind::Header));
    assert!(err.to_string().contains("Producer-Seq 4"), "{err}");
    let err = check_echo(&echo("8", "3"), ok, 7, 3, false).unwrap_err();
    assert!(err.to_string().contains("Producer-Epoch 8"), "{err}");
    assert!(check_echo(&echo("x", "3"), ok, 7, 3, false).is_err());
    // Servers that echo nothing are not second-guessed.
    assert!(check_echo(&HeaderMap::new(), ok, 7, 3, false).is_ok());
    // A close without a body: only the epoch is checked.
    assert!(check_echo(&echo("7", "0"), dup, 7, 3, true).is_ok());
    assert!(check_echo(&echo("6", "3"), dup, 7, 3, true).is_err());
}

#[test]
fn only_a_duplicate_of_a_first_attempt_is_a_collision() {
    assert!(is_collision(true, false, true));
    // An earlier attempt may have been applied: our own repeat.
    assert!(!is_collision(true, true, true));
    assert!(!is_collision(false, false, true));
    assert!(!is_collision(true, false, false), "detection off");
}

#[test]
fn lost_state_is_told_apart_from_reordering() {
    let gap = |expected, received| Error::new(ErrorKind::SequenceGap { expected, received });
    // Seq 0 was acknowledged, the server expects it again: forgotten.
    assert!(state_lost(&gap(0, 7), true, false));
    // Before seq 0 is acknowledged an expected 0 is plain reordering.
    assert!(!state_lost(&gap(0, 1), false, false));
    // A lower expected seq for a request sent after every lower seq was
    // acknowledged: the server went back.
    assert!(state_lost(&gap(3, 7), true, true));
    // The same answer to a pipelined request: reordering.
    assert!(!state_lost(&gap(3, 7), true, false));
    // A server that went back to an older epoch: "new epoch must start
    // at seq 0" for an established epoch.
    let bad =
        Error::new(ErrorKind::BadRequest).with_message("new producer epoch must start at seq 0");
    assert!(mentions_epoch(&bad));
    assert!(state_lost(&bad, true, false));
    assert!(!state_lost(&bad, false, true));
    assert!(!mentions_epoch(&Error::new(ErrorKind::BadRequest)));
    assert!(!state_lost(&Error::new(ErrorKind::NotFound), true, true));
}

#[test]
fn window_starts_at_one_halves_on_a_gap_and_probes_back() {
    let mut w = Window::new(5);
    assert_eq!(w.current, 1, "slow start");
    // 1 clean ack -> 2, 2 more -> 3, 3 more -> 4, 4 more -> 5.
    let mut acks = 0;
    while w.current < 5 {
        w.on_ack();
        acks += 1;
    }
    assert_eq!(acks, 1 + 2 + 3 + 4);
    w.on_ack();
    assert_eq!(w.current, 5, "never above max");
    // Overtaking at 5: halve, and 2 is the ceiling from now on.
    w.on_gap();
    assert_eq!((w.current, w.ceiling), (2, 2));
    for _ in 0..Window::PROBE_AFTER - 1 {
        w.on_ack();
        assert_eq!(w.current, 2);
    }
    // Long clean at the ceiling: probe one higher.
    w.on_ack();
    assert_eq!((w.current, w.ceiling), (3, 3));
    // Overtaking even at 2 settles at 1: no more pipelining to waste.
    w.on_gap();
    w.on_gap();
    assert_eq!((w.current, w.ceiling), (1, 1));
    w.on_gap();
    assert_eq!(w.current, 1, "never below one");
}
