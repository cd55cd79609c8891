//! Proof that the runner can fail: a deliberately broken adapter that
//! initialises correctly (advertising every feature) and answers every other
//! command with an error must fail most of the public cases, and the run must
//! exit non-zero. Checked twice: with the shell script below, and with the
//! real `conformance-adapter` binary in its broken mode
//! (`CONFORMANCE_ADAPTER_BROKEN=1`), when that binary has been built.
//!
//! The authors' Node runner passes such an adapter on 142 of 269 tests
//! (ADAPTER §5); this runner's strict checks must not.
//!
//! Needs the Node reference server (`scripts/install-servers.sh`); the runner
//! exits with a clear message when it is missing. Needs the public cases
//! (`../shared/conformance/test-cases`): fails without them (`scripts/test.sh`
//! skips these two tests by name, saying why, when they are absent).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Answers `init` like a full-featured client, `shutdown` with success, and
/// everything else with an ADAPTER §4 error result (without `status`).
const BROKEN_ADAPTER: &str = r#"#!/bin/sh
while IFS= read -r line; do
  type=$(printf '%s\n' "$line" | sed -n 's/.*"type":"\([a-z-]*\)".*/\1/p')
  case "$type" in
    init)
      printf '%s\n' '{"type":"init","success":true,"clientName":"broken-adapter","clientVersion":"0.0.0","features":{"batching":true,"sse":true,"longPoll":true,"auto":true,"streaming":true,"dynamicHeaders":true,"retryOptions":true,"batchItems":true,"strictZeroValidation":true}}'
      ;;
    shutdown)
      printf '%s\n' '{"type":"shutdown","success":true}'
      exit 0
      ;;
    *)
      printf '{"type":"error","success":false,"commandType":"%s","errorCode":"NOT_SUPPORTED","message":"broken adapter: %s is not implemented"}\n' "$type" "$type"
      ;;
  esac
done
"#;

/// The public cases (`shared/conformance/test-cases` beside the workspace).
/// Absent cases fail the test: `scripts/test.sh` skips these two tests by
/// name, saying why, when the shared/ checkout is missing (a user's clone).
fn cases_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/test-cases");
    assert!(
        dir.is_dir(),
        "no conformance cases at {} (the shared/ checkout beside the workspace is absent); \
         run `cargo test -- --skip fails_most_cases` to leave these tests out",
        dir.display()
    );
    dir
}

/// Parses the closing `N passed, N failed, N skipped` line.
fn closing_counts(stdout: &str) -> Option<(usize, usize, usize)> {
    let line = stdout.lines().rev().find(|line| !line.trim().is_empty())?;
    let parts: Vec<&str> = line.split(", ").collect();
    let [passed, failed, skipped] = parts.as_slice() else {
        return None;
    };
    let count = |part: &str, label: &str| -> Option<usize> {
        let (count, word) = part.split_once(' ')?;
        if word == label {
            count.parse().ok()
        } else {
            None
        }
    };
    Some((
        count(passed, "passed")?,
        count(failed, "failed")?,
        count(skipped, "skipped")?,
    ))
}

/// Runs the conformance binary against `adapter` (with `envs` set for the
/// adapter, which inherits the runner's environment) and checks that the run
/// fails as a broken adapter must.
fn assert_run_fails(label: &str, adapter: &Path, envs: &[(&str, &str)], cases: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_conformance"))
        .arg("--adapter")
        .arg(adapter)
        .arg("--cases")
        .arg(cases)
        .envs(envs.iter().copied())
        .output()
        .expect("run the conformance binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stdout.lines().rev().take(15).collect();

    let (passed, failed, skipped) = closing_counts(&stdout).unwrap_or_else(|| {
        panic!("no closing `N passed, N failed, N skipped` line\nstdout tail: {tail:?}\nstderr: {stderr}")
    });
    eprintln!("{label}: {passed} passed, {failed} failed, {skipped} skipped");
    assert!(
        !output.status.success(),
        "the run must exit non-zero, got {:?}",
        output.status
    );
    let ran = passed + failed;
    assert!(ran > 0, "nothing ran");
    assert!(
        failed * 2 > ran,
        "only {failed} of {ran} non-skipped cases failed with a broken adapter"
    );
    // Only the cases the YAML marks `skip` may be skipped: the broken
    // adapter advertises every feature.
    assert!(skipped <= 2, "{skipped} cases skipped");
}

#[test]
fn broken_adapter_fails_most_cases() {
    let cases = cases_dir();

    let work_dir = std::env::temp_dir().join(format!("conformance-broken-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir).unwrap();
    let adapter = work_dir.join("broken-adapter.sh");
    std::fs::write(&adapter, BROKEN_ADAPTER).unwrap();
    std::fs::set_permissions(&adapter, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_run_fails("broken shell adapter", &adapter, &[], &cases);
    let _ = std::fs::remove_dir_all(&work_dir);
}

/// The real adapter (`crates/conformance-adapter`) in its deliberately broken
/// mode: with `CONFORMANCE_ADAPTER_BROKEN=1` it answers `init` normally and
/// every other command with an error, exactly like [`BROKEN_ADAPTER`]. Uses
/// the binary beside this runner's (`cargo build -p conformance-adapter`
/// first); fails when it has not been built.
#[test]
fn real_adapter_in_broken_mode_fails_most_cases() {
    let cases = cases_dir();
    let adapter =
        Path::new(env!("CARGO_BIN_EXE_conformance")).with_file_name("conformance-adapter");
    assert!(
        adapter.is_file(),
        "{} is not built: run `cargo build -p conformance-adapter` first (scripts/test.sh does)",
        adapter.display()
    );
    assert_run_fails(
        "conformance-adapter with CONFORMANCE_ADAPTER_BROKEN=1",
        &adapter,
        &[("CONFORMANCE_ADAPTER_BROKEN", "1")],
        &cases,
    );
}

#[test]
fn closing_line_parser() {
    assert_eq!(
        closing_counts("x\n1 passed, 2 failed, 3 skipped\n"),
        Some((1, 2, 3))
    );
    assert_eq!(closing_counts("1 passed, 2 failed\n"), None);
    assert_eq!(closing_counts("1 passed, 2 failed, 3 skipped, 4 x\n"), None);
}
