//! Unit tests of `webhook` (a sibling file to keep the module short).
use super::*;
use crate::client::Client;
use crate::offset::Offset;
use crate::testing::{Reply, ScriptedServer};
use ed25519_dalek::{Signer, SigningKey};

const TOKEN: &str = "eyJzdWIiOiJzdWJzY3JpcHRpb246cyJ9.c2VjcmV0LXRva2Vu";

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn jwk(kid: &str, key: &SigningKey) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "kid": kid, "use": "sig", "alg": "EdDSA",
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
    })
}

fn jwks(keys: &[(&str, &SigningKey)]) -> Vec<u8> {
    let keys: Vec<_> = keys.iter().map(|(kid, k)| jwk(kid, k)).collect();
    serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(key: &SigningKey, t: u64, kid: &str, body: &[u8]) -> String {
    let mut message = format!("{t}.").into_bytes();
    message.extend_from_slice(body);
    let sig = key.sign(&message);
    format!(
        "t={t},kid={kid},ed25519={}",
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    )
}

fn body(subscription: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "subscription_id": subscription,
        "wake_id": "w_1",
        "generation": 3,
        "streams": [{
            "path": "events/a", "link_type": "glob",
            "acked_offset": "0000000000000000_0000000000000005",
            "tail_offset": "0000000000000000_0000000000000009",
            "has_pending": true
        }, {
            "path": "events/b", "link_type": "explicit",
            "acked_offset": "-1", "tail_offset": "-1", "has_pending": false
        }],
        "callback_url": "http://127.0.0.1:1/v1/stream/__ds/subscriptions/s/callback",
        "callback_token": TOKEN,
    }))
    .unwrap()
}

fn fixed(keys: &[(&str, &SigningKey)]) -> WebhookVerifier {
    WebhookVerifier::builder_from_jwks(&jwks(keys))
        .unwrap()
        .build()
}

fn reason(result: Result<Wake>) -> WebhookRejection {
    match result {
        Err(e) => {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(TOKEN), "the token leaked: {shown}");
            match e.kind() {
                ErrorKind::WebhookRejected { reason } => *reason,
                other => panic!("expected a rejection, got {other:?}: {e}"),
            }
        }
        Ok(wake) => panic!("expected a rejection, got {wake:?}"),
    }
}

fn headers(signature: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(SIGNATURE_HEADER, signature.parse().unwrap());
    h
}

#[tokio::test]
async fn a_valid_delivery_becomes_a_wake_and_the_token_never_shows() {
    let k1 = key(1);
    let v = fixed(&[("k1", &k1)]);
    let b = body("s");
    let wake = v
        .verify(&headers(&sign(&k1, now(), "k1", &b)), &b)
        .await
        .unwrap();
    assert_eq!(wake.subscription_id, "s");
    assert_eq!(wake.wake_id, "w_1");
    assert_eq!(wake.generation, 3);
    assert_eq!(wake.token().expose_secret(), TOKEN);
    assert_eq!(wake.streams.len(), 2);
    let pending: Vec<_> = wake.pending().collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].path, "events/a");
    assert_eq!(
        pending[0].tail_offset,
        Offset::parse("0000000000000000_0000000000000009").unwrap()
    );
    assert_eq!(wake.streams[1].acked_offset, Offset::start());
    assert!(wake.callback_url.as_deref().unwrap().ends_with("/callback"));
    assert_eq!(wake.source, super::super::WakeSource::Webhook);
    assert!(!format!("{wake:?}").contains(TOKEN));
    assert!(!format!("{v:?}").contains(TOKEN));
    // Within the window either way.
    for t in [now() - 290, now() + 290] {
        v.verify_signature(Some(&sign(&k1, t, "k1", &b)), &b)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn tampered_bodies_and_wrong_keys_are_bad_signatures() {
    let (k1, k2) = (key(1), key(2));
    let v = fixed(&[("k1", &k1), ("k2", &k2)]);
    let b = body("s");
    let sig = sign(&k1, now(), "k1", &b);
    let mut tampered = b.clone();
    let at = tampered.iter().position(|&c| c == b'3').unwrap(); // generation
    tampered[at] = b'4';
    assert_eq!(
        reason(v.verify(&headers(&sig), &tampered).await),
        WebhookRejection::BadSignature
    );
    // Signed by k1, but the header names k2 (a key the server has).
    let wrong_kid = sign(&k1, now(), "k1", &b).replace("kid=k1", "kid=k2");
    assert_eq!(
        reason(v.verify(&headers(&wrong_kid), &b).await),
        WebhookRejection::BadSignature
    );
    // The timestamp is part of what is signed.
    let t = now();
    let moved = sign(&k1, t, "k1", &b).replace(&format!("t={t}"), &format!("t={}", t - 1));
    assert_eq!(
        reason(v.verify(&headers(&moved), &b).await),
        WebhookRejection::BadSignature
    );
    // A key set without the key: unknown (a fixed set never refetches).
    let only_k2 = fixed(&[("k2", &k2)]);
    assert_eq!(
        reason(only_k2.verify(&headers(&sig), &b).await),
        WebhookRejection::UnknownKey
    );
}

#[tokio::test]
async fn malformed_and_missing_signature_headers() {
    let k1 = key(1);
    let v = fixed(&[("k1", &k1)]);
    let b = body("s");
    assert_eq!(
        reason(v.verify(&HeaderMap::new(), &b).await),
        WebhookRejection::MissingSignature
    );
    assert_eq!(
        reason(v.verify_signature(None, &b).await),
        WebhookRejection::MissingSignature
    );
    let good = sign(&k1, now(), "k1", &b);
    let sig = good.split("ed25519=").nth(1).unwrap().to_owned();
    let t = now();
    let cases = [
        String::new(),
        format!("t={t},kid=k1,ed25519={sig}="), // padded
        format!("t={t},kid=k1,ed25519=+{}", &sig[1..]), // base64, not base64url
        format!("t={t},kid=k1,ed25519=!!{}", &sig[2..]),
        format!("t={t},kid=k1,ed25519={}", &sig[..40]), // too short
        format!("t={t},kid=k1"),
        format!("t={t},kid=k1,ed25519={sig},ed25519={sig}"),
        format!("t={t},kid=k1,ed25519={sig},v1=x"),
        format!("t={t}, kid=k1,ed25519={sig}"),
        format!("t=-{t},kid=k1,ed25519={sig}"),
        format!("t=1.5,kid=k1,ed25519={sig}"),
        format!("t=99999999999999999999,kid=k1,ed25519={sig}"),
        format!("t={t},kid=,ed25519={sig}"),
        format!("t={t},kid=k 1,ed25519={sig}"),
        format!("t={t};kid=k1;ed25519={sig}"),
        "x".repeat(2000),
    ];
    for case in cases {
        assert_eq!(
            reason(v.verify_signature(Some(&case), &b).await),
            WebhookRejection::MalformedSignature,
            "{case}"
        );
    }
    // Any order of the three parameters is the same header.
    let reordered = format!(
        "kid=k1,ed25519={sig},t={}",
        good[2..].split(',').next().unwrap()
    );
    v.verify_signature(Some(&reordered), &b).await.unwrap();
    // Twice the header, or not text.
    let mut twice = headers(&good);
    twice.append(SIGNATURE_HEADER, good.parse().unwrap());
    assert_eq!(
        reason(v.verify(&twice, &b).await),
        WebhookRejection::MalformedSignature
    );
    let mut binary = HeaderMap::new();
    binary.insert(
        SIGNATURE_HEADER,
        reqwest::header::HeaderValue::from_bytes(b"t=1,kid=\xff,ed25519=x").unwrap(),
    );
    assert_eq!(
        reason(v.verify(&binary, &b).await),
        WebhookRejection::MalformedSignature
    );
}

#[tokio::test]
async fn old_and_future_timestamps_are_outside_the_replay_window() {
    let k1 = key(1);
    let v = fixed(&[("k1", &k1)]);
    let b = body("s");
    for t in [now() - 400, now() + 400, 0, 1] {
        assert_eq!(
            reason(v.verify_signature(Some(&sign(&k1, t, "k1", &b)), &b).await),
            WebhookRejection::OutsideReplayWindow,
            "{t}"
        );
    }
    let strict = WebhookVerifier::builder_from_jwks(&jwks(&[("k1", &k1)]))
        .unwrap()
        .replay_window(Duration::from_secs(30))
        .build();
    for t in [now() - 60, now() + 60] {
        assert_eq!(
            reason(
                strict
                    .verify_signature(Some(&sign(&k1, t, "k1", &b)), &b)
                    .await
            ),
            WebhookRejection::OutsideReplayWindow
        );
    }
    strict
        .verify_signature(Some(&sign(&k1, now() - 5, "k1", &b)), &b)
        .await
        .unwrap();
}

#[tokio::test]
async fn bodies_are_checked_after_the_signature_and_never_echo_the_token() {
    let k1 = key(1);
    let v = fixed(&[("k1", &k1)]);
    let signed = |b: &[u8]| sign(&k1, now(), "k1", b);
    let bodies: [&[u8]; 6] = [
        b"not json",
        b"[1, 2]",
        br#"{"subscription_id":"s","wake_id":"w","generation":1}"#,
        br#"{"subscription_id":"s","wake_id":"w","generation":1,"callback_token":5}"#,
        // The token's text in a field of the wrong type is not echoed.
        br#"{"subscription_id":"s","wake_id":"w","generation":"eyJzdWIiOiJzdWJzY3JpcHRpb246cyJ9.c2VjcmV0LXRva2Vu","callback_token":"eyJzdWIiOiJzdWJzY3JpcHRpb246cyJ9.c2VjcmV0LXRva2Vu"}"#,
        br#"{"subscription_id":"","wake_id":"w","generation":1,"callback_token":"t"}"#,
    ];
    for b in bodies {
        assert_eq!(
            reason(v.verify_signature(Some(&signed(b)), b).await),
            WebhookRejection::MalformedBody,
            "{}",
            String::from_utf8_lossy(b)
        );
    }
    // An unsigned malformed body is a signature problem first.
    assert_eq!(
        reason(v.verify_signature(Some(&signed(b"{}")), b"not json").await),
        WebhookRejection::BadSignature
    );
}

#[tokio::test]
async fn an_allow_list_rejects_other_subscriptions() {
    let k1 = key(1);
    let v = WebhookVerifier::builder_from_jwks(&jwks(&[("k1", &k1)]))
        .unwrap()
        .subscription("a")
        .subscriptions(["b", "c"])
        .build();
    for id in ["a", "c"] {
        let b = body(id);
        v.verify_signature(Some(&sign(&k1, now(), "k1", &b)), &b)
            .await
            .unwrap();
    }
    let b = body("s");
    assert_eq!(
        reason(
            v.verify_signature(Some(&sign(&k1, now(), "k1", &b)), &b)
                .await
        ),
        WebhookRejection::UnexpectedSubscription
    );
}

#[test]
fn key_sets_are_parsed_strictly() {
    let k1 = key(1);
    let mut set = serde_json::json!({"keys": [
        jwk("k1", &k1),
        {"kty": "RSA", "kid": "r", "n": "x", "e": "AQAB"},
        {"kty": "OKP", "crv": "X25519", "kid": "x", "x": "AAAA"},
        {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc",
         "x": URL_SAFE_NO_PAD.encode(key(2).verifying_key().to_bytes())},
        {"kty": "OKP", "crv": "Ed25519", "x": "no-kid"},
        "not an object"
    ]});
    let keys = parse_jwks(set.to_string().as_bytes()).unwrap();
    assert_eq!(keys.keys().collect::<Vec<_>>(), ["k1"]);
    set["keys"].as_array_mut().unwrap().push(jwk("k1", &key(3)));
    assert!(
        parse_jwks(set.to_string().as_bytes()).is_err(),
        "repeated kid"
    );
    let bad_x =
        serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k", "x": "AAAA"}]});
    assert!(parse_jwks(bad_x.to_string().as_bytes()).is_err());
    let err = WebhookVerifier::builder_from_jwks(b"{}").unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::InvalidArgument { field: "jwks" }),
        "{err}"
    );
}

#[test]
fn responses_are_the_protocol_bodies() {
    let done = WebhookResponse::done();
    assert_eq!(done.status(), 200);
    assert_eq!(done.content_type(), "application/json");
    let parsed: serde_json::Value = serde_json::from_slice(done.body()).unwrap();
    assert_eq!(parsed, serde_json::json!({"done": true}));
    assert_eq!(WebhookResponse::accepted().body(), b"{}");
}

/// A scripted server that publishes `sets[i]` on the `i`-th fetch (the
/// last one after that).
async fn key_server(sets: Vec<Vec<u8>>) -> ScriptedServer {
    ScriptedServer::start(move |req, i| {
        assert_eq!(req.method, "GET");
        assert_eq!(req.path(), "/v1/stream/__ds/jwks.json");
        Reply::status(200)
            .with_header("content-type", "application/jwk-set+json")
            .with_body(&sets[i.min(sets.len() - 1)])
    })
    .await
}

#[tokio::test]
async fn unknown_keys_are_refetched_at_most_once_per_interval() {
    let (k1, k2, k3) = (key(1), key(2), key(3));
    let server = key_server(vec![
        jwks(&[("k1", &k1)]),
        jwks(&[("k1", &k1), ("k2", &k2)]),
        jwks(&[("k2", &k2), ("k3", &k3)]),
    ])
    .await;
    let subs = Client::new().subscriptions(&server.base_url).unwrap();
    let v = WebhookVerifier::builder(&subs)
        .min_refetch_interval(Duration::from_millis(300))
        .build();
    let b = body("s");
    // First use fetches.
    v.verify_signature(Some(&sign(&k1, now(), "k1", &b)), &b)
        .await
        .unwrap();
    assert_eq!(server.count(), 1);
    assert_eq!(v.key_ids(), ["k1"]);
    // A rotated-in key shortly after: not refetched yet.
    let by_k2 = sign(&k2, now(), "k2", &b);
    assert_eq!(
        reason(v.verify_signature(Some(&by_k2), &b).await),
        WebhookRejection::UnknownKey
    );
    assert_eq!(server.count(), 1);
    // After the interval the unknown kid triggers one refetch.
    tokio::time::sleep(Duration::from_millis(350)).await;
    v.verify_signature(Some(&by_k2), &b).await.unwrap();
    assert_eq!(server.count(), 2);
    // A flood of bogus kids: at most one more fetch in the interval.
    tokio::time::sleep(Duration::from_millis(350)).await;
    for i in 0..50 {
        let bogus = sign(&k1, now(), &format!("bogus{i}"), &b);
        assert_eq!(
            reason(v.verify_signature(Some(&bogus), &b).await),
            WebhookRejection::UnknownKey
        );
    }
    assert_eq!(server.count(), 3);
    // That fetch dropped k1 and brought k3.
    assert_eq!(v.key_ids(), ["k2", "k3"]);
    assert_eq!(
        reason(
            v.verify_signature(Some(&sign(&k1, now(), "k1", &b)), &b)
                .await
        ),
        WebhookRejection::UnknownKey
    );
    v.verify_signature(Some(&sign(&k3, now(), "k3", &b)), &b)
        .await
        .unwrap();
    // Old or malformed deliveries are refused before any fetch.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let old = sign(&k1, now() - 3600, "other", &b);
    assert_eq!(
        reason(v.verify_signature(Some(&old), &b).await),
        WebhookRejection::OutsideReplayWindow
    );
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn stale_keys_are_refreshed_and_serve_when_the_server_fails() {
    let k1 = key(1);
    let set = jwks(&[("k1", &k1)]);
    let server = ScriptedServer::start(move |_, i| match i {
        0 => Reply::status(200).with_body(&set),
        _ => Reply::status(404).with_body(b"no"),
    })
    .await;
    let subs = Client::new().subscriptions(&server.base_url).unwrap();
    let v = WebhookVerifier::builder(&subs)
        .keys_max_age(Duration::ZERO)
        .min_refetch_interval(Duration::ZERO)
        .build();
    v.refresh_keys().await.unwrap();
    let b = body("s");
    // Stale at once: refetched, the fetch fails, the cached key serves.
    v.verify_signature(Some(&sign(&k1, now(), "k1", &b)), &b)
        .await
        .unwrap();
    assert_eq!(server.count(), 2);
    // An unknown kid with a failing fetch: the fetch error, not a rejection.
    let err = v
        .verify_signature(Some(&sign(&k1, now(), "k9", &b)), &b)
        .await
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Unsupported { .. }), "{err}");
    assert!(v.refresh_keys().await.is_err());
}
