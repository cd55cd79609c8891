//! Unit tests of `types` (a sibling file to keep the module short).
use super::*;
use crate::error::ErrorKind;

fn field(e: Error) -> &'static str {
    match e.kind() {
        ErrorKind::InvalidArgument { field } => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn spec_is_validated_before_sending() {
    let ok = SubscriptionSpec::pull_wake("wake/pool").pattern("events/*");
    ok.validate().unwrap();
    assert_eq!(
        field(SubscriptionSpec::pull_wake("w").validate().unwrap_err()),
        "streams"
    );
    for ttl in [Duration::from_millis(999), Duration::from_secs(601)] {
        let e = ok.clone().lease_ttl(ttl).validate().unwrap_err();
        assert_eq!(field(e), "lease_ttl");
    }
    ok.clone().lease_ttl(MIN_LEASE_TTL).validate().unwrap();
    ok.clone().lease_ttl(MAX_LEASE_TTL).validate().unwrap();
    let e = ok
        .clone()
        .lease_ttl(Duration::from_micros(1_500_500))
        .validate()
        .unwrap_err();
    assert_eq!(field(e), "lease_ttl");
    let e = SubscriptionSpec::pull_wake("__ds/wake")
        .stream("a")
        .validate()
        .unwrap_err();
    assert_eq!(field(e), "wake_stream");
    let e = ok
        .clone()
        .stream("/__ds/subscriptions/x")
        .validate()
        .unwrap_err();
    assert_eq!(field(e), "streams");
    let e = SubscriptionSpec::pull_wake("w")
        .pattern("__ds/**")
        .validate()
        .unwrap_err();
    assert_eq!(field(e), "pattern");
    let e = ok.clone().stream("a//b").validate().unwrap_err();
    assert_eq!(field(e), "streams");
    let e = ok.clone().stream("a/../b").validate().unwrap_err();
    assert_eq!(field(e), "streams");
    for url in ["ftp://x/h", "http://example.com/h", "not a url"] {
        let e = SubscriptionSpec::webhook(url)
            .stream("a")
            .validate()
            .unwrap_err();
        assert_eq!(field(e), "webhook.url", "{url}");
    }
    for url in [
        "https://example.com/h",
        "http://localhost:9/h",
        "http://127.0.0.1:9/h",
    ] {
        SubscriptionSpec::webhook(url)
            .stream("a")
            .validate()
            .unwrap();
    }
}

#[test]
fn spec_body_is_the_protocol_shape() {
    let spec = SubscriptionSpec::pull_wake("/wake/pool/")
        .pattern("events/*")
        .streams(["/events/a", "events/b"])
        .lease_ttl(Duration::from_secs(2))
        .description("d");
    assert_eq!(
        spec.to_json(),
        serde_json::json!({
            "type": "pull-wake", "wake_stream": "wake/pool", "pattern": "events/*",
            "streams": ["events/a", "events/b"], "lease_ttl_ms": 2000, "description": "d"
        })
    );
    let spec = SubscriptionSpec::webhook("https://w.example/h").stream("a");
    assert_eq!(
        spec.to_json(),
        serde_json::json!({"type": "webhook", "webhook": {"url": "https://w.example/h"}, "streams": ["a"]})
    );
}

#[test]
fn subscription_parses_with_unknown_fields_and_values() {
    let s: Subscription = serde_json::from_value(serde_json::json!({
        "id": "s", "subscription_id": "s", "type": "carrier-pigeon",
        "streams": [{"path": "a/b", "link_type": "glob", "acked_offset": "-1"},
                    {"path": "c", "link_type": "explicit", "acked_offset": "0000000000000000_0000000000000005"}],
        "wake_stream": null, "lease_ttl_ms": 30000, "status": "paused", "future": 1
    }))
    .unwrap();
    assert_eq!(s.kind, SubscriptionType::Other);
    assert_eq!(s.status, SubscriptionStatus::Other);
    assert_eq!(s.streams[0].acked_offset, Offset::start());
    assert_eq!(s.streams[1].link_type, LinkType::Explicit);
    assert_eq!(s.lease_ttl, Duration::from_secs(30));
}

#[test]
fn tokens_never_show() {
    let t = SecretToken::new("eyJ.secret.sig".into());
    assert!(!format!("{t:?}").contains("secret"));
    let wake = Wake::from_webhook("s".into(), "w".into(), 1, vec![], None, t);
    assert!(!format!("{wake:?}").contains("secret"));
}
