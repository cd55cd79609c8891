use super::*;

#[test]
fn display_names_the_path_but_not_the_query_or_credentials() {
    let url = url::Url::parse("http://user:pw@h:1/v1/stream/a?token=secret").unwrap();
    let err = Error::new(ErrorKind::NotFound)
        .with_url(&url)
        .with_status(404);
    let shown = err.to_string();
    assert!(shown.contains("/v1/stream/a"), "{shown}");
    assert!(shown.contains("404"), "{shown}");
    assert!(
        !shown.contains("secret") && !shown.contains("pw"),
        "{shown}"
    );
    let debug = format!("{err:?}");
    assert!(
        !debug.contains("secret") && !debug.contains("pw"),
        "{debug}"
    );
    assert_eq!(err.url(), Some("http://h:1/v1/stream/a"));
}

#[test]
fn display_names_the_host_and_the_causes_once() {
    let url = url::Url::parse("http://user:pw@127.0.0.1:4437/v1/stream/x?k=s").unwrap();
    let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
    #[derive(Debug)]
    struct Outer(std::io::Error);
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("tcp connect error")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let err = Error::new(ErrorKind::Network)
        .with_url(&url)
        .with_message("tcp connect error")
        .with_source(Outer(inner));
    assert_eq!(
        err.to_string(),
        "network error for stream /v1/stream/x on 127.0.0.1:4437: tcp connect error: caused by connection refused"
    );
    let https = url::Url::parse("https://h/s").unwrap();
    let err = Error::new(ErrorKind::NotFound).with_url(&https);
    assert!(err.to_string().ends_with("/s on h:443"), "{err}");
    let long = Error::new(ErrorKind::Network).with_source(std::io::Error::other("x".repeat(1000)));
    assert!(long.to_string().len() < 400, "{long}");
}

#[test]
fn outcome_unknown_is_stated() {
    let err = Error::new(ErrorKind::Network).with_outcome_unknown();
    assert!(err.is_outcome_unknown());
    assert!(err.to_string().contains("outcome unknown"));
}

#[test]
fn invalid_offsets_map_to_invalid_argument_or_header_decode() {
    for bad in ["", "a,b", "a&b", "a=b", "a?b", "a/b", "a\nb", "\u{7f}"] {
        let reason = Offset::parse(bad).unwrap_err().reason().to_owned();
        let err = Error::from(Offset::parse(bad).unwrap_err());
        assert_eq!(err.kind(), &ErrorKind::InvalidArgument { field: "offset" });
        assert_eq!(err.message(), Some(reason.as_str()));
        let err = Error::from(Offset::from_server(bad).unwrap_err());
        assert_eq!(err.kind(), &ErrorKind::Decode(DecodeKind::Header));
        assert_eq!(err.message(), Some(reason.as_str()));
    }
    let err = Error::from(Offset::parse("a/b").unwrap_err());
    assert_eq!(
        err.to_string(),
        "invalid argument `offset`: offset contains the forbidden character '/'"
    );
    for sentinel in ["-1", "now"] {
        let err = Error::from(Offset::from_server(sentinel).unwrap_err());
        assert_eq!(err.kind(), &ErrorKind::Decode(DecodeKind::Header));
        assert_eq!(
            err.message(),
            Some(format!("server returned the reserved offset {sentinel:?}").as_str())
        );
    }
}

#[test]
fn retryable_kinds() {
    assert!(Error::new(ErrorKind::Server { status: 503 }).is_retryable());
    assert!(!Error::new(ErrorKind::BadRequest).is_retryable());
    let rl = Error::new(ErrorKind::RateLimited {
        retry_after: Some(Duration::from_secs(2)),
    });
    assert_eq!(rl.retry_after(), Some(Duration::from_secs(2)));
}
