//! Spec corrections: public cases whose YAML expectation contradicts
//! PROTOCOL.md. For these, the runner checks what the protocol requires
//! instead, prints the correction with the section it rests on, and counts
//! the case by that check. The list is short and every entry is argued;
//! nothing else is relaxed.

use crate::cases::{Expect, Operation, TestCase};

/// One corrected expectation.
#[derive(Debug)]
pub struct Correction {
    /// The test id.
    pub test: &'static str,
    /// Index into the test's `operations`.
    pub operation: usize,
    /// Why, citing PROTOCOL.md.
    pub reason: &'static str,
}

/// Every correction, with the replacement expectation each one installs.
pub fn all() -> Vec<(Correction, Expect)> {
    let invalid_offset = || Expect {
        error: Some(true),
        status: Some(400),
        error_code: Some("INVALID_OFFSET".to_owned()),
        ..Expect::default()
    };
    vec![
        (
            Correction {
                test: "offset-zero-start",
                operation: 0,
                reason: "the YAML expects offset \"0\" to read from the start, but offsets are \
                         opaque and the only start sentinel is \"-1\" (PROTOCOL.md section 8: \
                         clients MUST NOT interpret or construct offsets); \"0\" was never issued \
                         by the server, which answers 400 for a malformed offset (section 5.6)",
            },
            invalid_offset(),
        ),
        (
            Correction {
                test: "read-future-offset",
                operation: 0,
                reason: "the YAML comment allows \"empty or 400\" but its expectation \
                         (chunkCount: 0) only accepts a successful read; a made-up offset is \
                         malformed for the server, which answers 400 (PROTOCOL.md sections 5.6 \
                         and 8)",
            },
            invalid_offset(),
        ),
    ]
}

/// Apply the corrections that concern `test`; returns their reasons.
pub fn apply(test: &mut TestCase) -> Vec<&'static str> {
    let mut applied = Vec::new();
    for (correction, expect) in all() {
        if correction.test != test.id {
            continue;
        }
        if let Some(Operation::Read(read)) = test.operations.get_mut(correction.operation) {
            read.expect = Some(expect);
            applied.push(correction.reason);
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_correction_targets_a_read_and_cites_the_spec() {
        for (c, expect) in all() {
            assert!(c.reason.contains("PROTOCOL.md"), "{}", c.test);
            assert_eq!(expect.error, Some(true));
        }
    }

    #[test]
    fn applying_replaces_only_the_named_operation() {
        let yaml = r#"
id: s
name: s
category: consumer
tests:
  - id: offset-zero-start
    name: t
    operations:
      - action: read
        path: /p
        offset: "0"
        expect:
          data: "x"
      - action: read
        path: /p
        expect:
          data: "x"
"#;
        let mut suite = crate::cases::parse_suite(yaml).unwrap();
        let test = &mut suite.tests[0];
        let reasons = apply(test);
        assert_eq!(reasons.len(), 1);
        let first = test.operations[0].expect().unwrap();
        assert_eq!(first.status, Some(400));
        assert_eq!(first.data, None);
        let second = test.operations[1].expect().unwrap();
        assert_eq!(second.data.as_deref(), Some("x"));
    }
}
