//! What the `dstream` integration tests share: running the built binary
//! against a test server.
#![allow(dead_code)] // each test file uses part of it

use std::io::Write;
use std::process::{Command, Output, Stdio};

use test_servers::TestServer;

/// The `dstream` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dstream");

/// `dstream ARGS` aimed at `server` (DS_URL set, DS_AUTH cleared).
pub fn command(server: &TestServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("DS_URL", server.base_url())
        .env_remove("DS_AUTH")
        .args(args);
    cmd
}

/// Run `dstream ARGS` with `stdin` as its input; wait for it.
pub fn run_stdin(server: &TestServer, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = command(server, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dstream");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().expect("wait for dstream")
}

/// Run `dstream ARGS` with empty input; wait for it.
pub fn run(server: &TestServer, args: &[&str]) -> Output {
    run_stdin(server, args, b"")
}
