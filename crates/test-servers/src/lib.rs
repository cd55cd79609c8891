//! Start **real** Durable Streams servers on `127.0.0.1` for integration
//! tests, benches, CI and demos.
//!
//! Two servers are supported:
//!
//! * [`ServerKind::Node`]: the reference server `@durable-streams/server`
//!   (npm, 0.3.7), run through `scripts/node-server.mjs`. It is in-memory and
//!   supports fault injection ([`TestServer::inject_error`]).
//! * [`ServerKind::Rust`]: `durable-streams-server` from the crate
//!   `durable-streams` (0.1.5), run with a fresh temporary data directory.
//!
//! Install both with `scripts/install-servers.sh`. Each [`TestServer`] owns
//! its child process and kills it when dropped, so every test gets its own
//! server on its own free port and tests can run in parallel.
//!
//! This crate has no async runtime and no HTTP client dependency: it starts a
//! process, waits until its port accepts connections, and offers a tiny
//! blocking HTTP/1.1 client ([`http_request`]) for test setup and
//! assertions. It works from sync and async tests alike.
//!
//! # Example
//!
//! ```
//! use test_servers::{both, http_request, TestServer};
//!
//! for kind in both() {
//!     let server = TestServer::start(kind);
//!     let url = server.unique_stream_url("doc-example");
//!     let created = http_request("PUT", &url, &[("content-type", "text/plain")], b"").unwrap();
//!     assert_eq!(created.status, 201, "{kind}");
//!     let appended = http_request("POST", &url, &[("content-type", "text/plain")], b"hi").unwrap();
//!     assert_eq!(appended.status, 204, "{kind}");
//!     let read = http_request("GET", &format!("{url}?offset=-1"), &[], b"").unwrap();
//!     assert_eq!(read.body, b"hi");
//! } // each server is killed when `server` goes out of scope
//! ```
//!
//! # Environment variables
//!
//! * `DS_TOOLS_DIR`: cache directory of the installed servers (default
//!   `$HOME/.cache/durable-streams-client`), see [`tools_dir`].
//! * `DS_RUST_SERVER_BIN`: path of the Rust server binary, overriding
//!   `$DS_TOOLS_DIR/cargo/bin/durable-streams-server`.
//! * `DS_NODE_SERVER_DIR`: npm prefix holding `@durable-streams/server`
//!   (default `$DS_TOOLS_DIR/node`).
//! * `DS_NODE_BIN`: the `node` executable (default `node` on `PATH`).
//! * `DS_TEST_SERVER_LOG`: when set to anything but `0` or empty, every
//!   line the servers print is echoed to stderr.

pub mod fault_proxy;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a server may take to start listening.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Path prefix under which [`TestServer::stream_url`] places streams. Both
/// servers accept streams at any path; this one is used for both.
pub const STREAM_PATH_PREFIX: &str = "/v1/stream/";

/// Default long-poll timeout given to both servers, in milliseconds.
pub const DEFAULT_LONG_POLL_TIMEOUT_MS: u64 = 500;

/// Default `--wal-shards` for the Rust server (its own default is one shard
/// per CPU, each preallocating a segment).
pub const DEFAULT_WAL_SHARDS: u32 = 2;

/// Default `--wal-segment-bytes` for the Rust server: 16 MiB. Its own default
/// (128 MiB per shard, preallocated on start) costs ~0.5 s and hundreds of
/// MiB of disk per server. A single append must fit into one segment.
pub const DEFAULT_WAL_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

const INSTALL_HINT: &str = "run scripts/install-servers.sh";
const LOG_LINES: usize = 500;
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

mod crash;

/// Which server implementation to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// The Node reference server `@durable-streams/server` (in-memory,
    /// supports fault injection).
    Node,
    /// The Rust server `durable-streams-server` (crate `durable-streams`).
    Rust,
}

impl ServerKind {
    /// Short lowercase name: `"node"` or `"rust"` (same as `Display`).
    pub fn as_str(self) -> &'static str {
        match self {
            ServerKind::Node => "node",
            ServerKind::Rust => "rust",
        }
    }

    /// Whether this server is installed and can be started.
    pub fn is_available(self) -> bool {
        match self {
            ServerKind::Node => node_server_available(),
            ServerKind::Rust => rust_server_bin().is_some(),
        }
    }

    fn long_name(self) -> &'static str {
        match self {
            ServerKind::Node => "the Node reference server (@durable-streams/server)",
            ServerKind::Rust => "the Rust server (durable-streams-server)",
        }
    }
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// On-CPU time of this process's live threads (Linux
/// `/proc/self/task/*/schedstat`, nanosecond resolution; zero elsewhere).
/// For benches: servers are separate processes, so this is the client's
/// cost alone. Threads that exited are not counted, so measure across a
/// span in which the runtime's threads live.
pub fn process_cpu_time() -> Duration {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Benchmark byte message `i` of `size` bytes, written into `buffer`
/// (cleared first): `x`s, tagged with `i` so that no two are alike.
pub fn write_bench_message(buffer: &mut Vec<u8>, size: usize, i: usize) {
    buffer.clear();
    buffer.resize(size, b'x');
    let tag = i.to_le_bytes();
    let n = tag.len().min(size);
    buffer[..n].copy_from_slice(&tag[..n]);
}

/// Both server kinds, `[Node, Rust]`, for tests that run against each.
pub fn both() -> Vec<ServerKind> {
    vec![ServerKind::Node, ServerKind::Rust]
}

/// Options for [`TestServer::start_with`]. Build with struct update syntax:
///
/// ```
/// let opts = test_servers::ServerOptions {
///     long_poll_timeout_ms: 200,
///     ..Default::default()
/// };
/// assert!(!opts.durability_memory);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOptions {
    /// How long a long-poll read waits for data before the server answers
    /// `204`, in milliseconds. Default [`DEFAULT_LONG_POLL_TIMEOUT_MS`].
    pub long_poll_timeout_ms: u64,
    /// Rust server only: pass `--durability memory` (no WAL, acks are not
    /// durable, starts faster). Default `false` (the server's `wal` mode).
    pub durability_memory: bool,
    /// Rust server only, WAL mode: `--wal-shards`. `None` leaves the
    /// server's default (one per CPU). Default `Some(DEFAULT_WAL_SHARDS)`.
    pub wal_shards: Option<u32>,
    /// Rust server only, WAL mode: `--wal-segment-bytes`. `None` leaves the
    /// server's default (128 MiB). A single append larger than a segment
    /// fails with `500`. Default `Some(DEFAULT_WAL_SEGMENT_BYTES)`.
    pub wal_segment_bytes: Option<u64>,
    /// Node server only: enable webhook subscriptions (`webhooks: true`;
    /// pull-wake subscriptions are always on). Default `false`.
    pub webhooks: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            long_poll_timeout_ms: DEFAULT_LONG_POLL_TIMEOUT_MS,
            durability_memory: false,
            wal_shards: Some(DEFAULT_WAL_SHARDS),
            wal_segment_bytes: Some(DEFAULT_WAL_SEGMENT_BYTES),
            webhooks: false,
        }
    }
}

/// The cache directory where `scripts/install-servers.sh` installs the
/// servers: `$DS_TOOLS_DIR`, or `$HOME/.cache/durable-streams-client`.
pub fn tools_dir() -> PathBuf {
    if let Some(dir) = non_empty_env("DS_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let home = non_empty_env("HOME")
        .or_else(|| non_empty_env("USERPROFILE"))
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("durable-streams-client")
}

/// The Rust server binary, if it exists: `$DS_RUST_SERVER_BIN`, or
/// `tools_dir()/cargo/bin/durable-streams-server`.
pub fn rust_server_bin() -> Option<PathBuf> {
    let path = match non_empty_env("DS_RUST_SERVER_BIN") {
        Some(p) => PathBuf::from(p),
        None => tools_dir().join("cargo").join("bin").join(format!(
            "durable-streams-server{}",
            std::env::consts::EXE_SUFFIX
        )),
    };
    path.is_file().then_some(path)
}

/// The npm prefix holding `node_modules/@durable-streams/server`:
/// `$DS_NODE_SERVER_DIR`, or `tools_dir()/node`.
pub fn node_server_dir() -> PathBuf {
    non_empty_env("DS_NODE_SERVER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tools_dir().join("node"))
}

/// The launcher script `scripts/node-server.mjs` of this workspace.
pub fn node_server_script() -> PathBuf {
    workspace_root().join("scripts").join("node-server.mjs")
}

/// Whether the Node server can be started: `node` runs, the npm package is
/// installed in [`node_server_dir`] and the launcher script exists.
pub fn node_server_available() -> bool {
    node_package_json().is_file()
        && node_server_script().is_file()
        && Command::new(node_bin())
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The path part of an `http://` URL, without query or fragment, e.g.
/// `"/v1/stream/x"` for `"http://127.0.0.1:1234/v1/stream/x?offset=-1"`.
/// This is what the `path` of a fault for [`TestServer::inject_error`]
/// must be.
pub fn url_path(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let rest = match rest.find('/') {
        Some(i) if url.len() != rest.len() => &rest[i..],
        Some(_) => rest,
        None => return "/",
    };
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// A running server process. The process is killed when this is dropped
/// (and the Rust server's temporary data directory is removed).
#[derive(Debug)]
pub struct TestServer {
    kind: ServerKind,
    base_url: String,
    addr: SocketAddr,
    child: Child,
    log: OutputLog,
    watchdog: Option<Watchdog>,
    /// The options it was started with (for [`TestServer::restart`]).
    options: ServerOptions,
    // Declared last: removed after the process is gone.
    data_dir: Option<TempDir>,
}

impl TestServer {
    /// Starts a server of `kind` with [`ServerOptions::default`] (long-poll
    /// timeout 500 ms).
    ///
    /// # Panics
    ///
    /// If the server is not installed (`"<server> is not installed; run
    /// scripts/install-servers.sh"`) or does not start within
    /// [`STARTUP_TIMEOUT`]; the message includes the server's output.
    pub fn start(kind: ServerKind) -> TestServer {
        Self::start_with(kind, ServerOptions::default())
    }

    /// Starts a server of `kind` with `opts`.
    ///
    /// # Panics
    ///
    /// Like [`TestServer::start`].
    pub fn start_with(kind: ServerKind, opts: ServerOptions) -> TestServer {
        match Self::try_start_with(kind, opts) {
            Ok(server) => server,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`TestServer::start_with`] but returns the error instead of
    /// panicking.
    pub fn try_start_with(kind: ServerKind, opts: ServerOptions) -> Result<TestServer, String> {
        match kind {
            ServerKind::Node => start_node(&opts),
            ServerKind::Rust => start_rust(&opts),
        }
    }

    /// Which server this is.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// Base URL without trailing slash, e.g. `"http://127.0.0.1:40123"`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Process id of the server (for the Node server, of `node`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The Rust server's temporary data directory (`None` for Node).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_ref().map(|d| d.0.as_path())
    }

    /// URL of the stream `name`: `base_url + "/v1/stream/" + name`. Both
    /// servers accept streams at any path; `name` is used verbatim, so keep
    /// it URL-path safe (it may contain `/`).
    pub fn stream_url(&self, name: &str) -> String {
        format!("{}{STREAM_PATH_PREFIX}{name}", self.base_url)
    }

    /// [`TestServer::stream_url`] of `"<prefix>-<pid>-<counter>-<nanos>"`,
    /// unique across tests, threads and processes.
    pub fn unique_stream_url(&self, prefix: &str) -> String {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.stream_url(&format!(
            "{prefix}-{}-{n}-{}",
            std::process::id(),
            nanos_since_epoch()
        ))
    }

    /// Whether this server has the `/_test/inject-error` endpoint (Node only).
    pub fn supports_fault_injection(&self) -> bool {
        self.kind == ServerKind::Node
    }

    /// Injects a fault: `POST /_test/inject-error` with `fault` as JSON body,
    /// e.g. `{"path": "/v1/stream/x", "status": 503, "count": 1}` (the
    /// `path` is a URL path, see [`url_path`]; further fields: `retryAfter`,
    /// `delayMs`, `jitterMs`, `dropConnection`, `truncateBodyBytes`,
    /// `corruptBody`, `injectSseEvent`, `probability`, `method`). The server
    /// keeps one fault per path. `Err` on the Rust server, on transport
    /// errors and on a non-200 answer.
    pub fn inject_error(&self, fault: &serde_json::Value) -> Result<(), String> {
        if !self.supports_fault_injection() {
            return Err(format!(
                "fault injection is not supported by the {} server",
                self.kind
            ));
        }
        let body = serde_json::to_vec(fault).map_err(|e| e.to_string())?;
        let resp = http_request(
            "POST",
            &format!("{}/_test/inject-error", self.base_url),
            &[("content-type", "application/json")],
            &body,
        )?;
        check_ok("inject-error", &resp)
    }

    /// Clears all injected faults: `DELETE /_test/inject-error`. `Err` on the
    /// Rust server.
    pub fn clear_errors(&self) -> Result<(), String> {
        if !self.supports_fault_injection() {
            return Err(format!(
                "fault injection is not supported by the {} server",
                self.kind
            ));
        }
        let resp = http_request(
            "DELETE",
            &format!("{}/_test/inject-error", self.base_url),
            &[],
            b"",
        )?;
        check_ok("clear-errors", &resp)
    }

    /// The last lines the server printed (stdout and stderr), for
    /// diagnostics.
    pub fn recent_output(&self) -> String {
        self.log.snapshot()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Disarm the watchdog first: it must not act on a recycled pid.
        drop(self.watchdog.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_ok(what: &str, resp: &HttpResponse) -> Result<(), String> {
    if resp.status == 200 {
        Ok(())
    } else {
        Err(format!(
            "{what} answered {}: {}",
            resp.status,
            resp.text().trim()
        ))
    }
}

// ---------------------------------------------------------------------------
// Starting servers
// ---------------------------------------------------------------------------

fn start_node(opts: &ServerOptions) -> Result<TestServer, String> {
    let kind = ServerKind::Node;
    let script = node_server_script();
    if !node_package_json().is_file() || !script.is_file() {
        return Err(not_installed(
            kind,
            &format!(
                "missing {} or {}",
                node_package_json().display(),
                script.display()
            ),
        ));
    }
    let mut cmd = Command::new(node_bin());
    cmd.arg(&script)
        .args([
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--long-poll-timeout-ms",
        ])
        .arg(opts.long_poll_timeout_ms.to_string())
        .env("DS_NODE_SERVER_DIR", node_server_dir());
    if opts.webhooks {
        cmd.arg("--webhooks");
    }
    let mut proc = Proc::spawn(kind, &mut cmd).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            not_installed(kind, "`node` was not found")
        } else {
            format!("failed to spawn node: {e}")
        }
    })?;

    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let url = loop {
        match proc.next_line(deadline) {
            Ok(line) => {
                if let Some(url) = line.trim().strip_prefix("LISTENING ") {
                    break url.trim().trim_end_matches('/').to_owned();
                }
            }
            Err(reason) => return Err(proc.fail(&format!("{} {reason}", kind.long_name()))),
        }
    };
    let addr = match url
        .strip_prefix("http://")
        .and_then(|a| a.parse::<SocketAddr>().ok())
    {
        Some(addr) => addr,
        None => {
            return Err(proc.fail(&format!(
                "the Node server printed an unexpected URL {url:?}"
            )));
        }
    };
    let (child, log) = proc.into_parts();
    Ok(TestServer {
        kind,
        base_url: url,
        addr,
        child,
        log,
        watchdog: None,
        options: opts.clone(),
        data_dir: None,
    })
}

/// The Rust server's command line for `port`, `data_dir` and `opts`
/// (shared by the first start and by `TestServer::restart`).
fn rust_server_command(bin: &Path, port: u16, data_dir: &Path, opts: &ServerOptions) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--long-poll-timeout-ms")
        .arg(opts.long_poll_timeout_ms.to_string());
    if opts.durability_memory {
        cmd.args(["--durability", "memory"]);
    } else {
        if let Some(shards) = opts.wal_shards {
            cmd.arg("--wal-shards").arg(shards.to_string());
        }
        if let Some(bytes) = opts.wal_segment_bytes {
            cmd.arg("--wal-segment-bytes").arg(bytes.to_string());
        }
    }
    cmd
}

fn start_rust(opts: &ServerOptions) -> Result<TestServer, String> {
    let kind = ServerKind::Rust;
    let Some(bin) = rust_server_bin() else {
        let expected = non_empty_env("DS_RUST_SERVER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| tools_dir().join("cargo/bin/durable-streams-server"));
        return Err(not_installed(
            kind,
            &format!("{} does not exist", expected.display()),
        ));
    };

    const ATTEMPTS: usize = 8;
    let mut last_error = String::new();
    for _ in 0..ATTEMPTS {
        let data_dir = TempDir::new("ds-rust-server")?;
        let port = free_port()?;
        let mut cmd = rust_server_command(&bin, port, &data_dir.0, opts);
        let mut proc = Proc::spawn(kind, &mut cmd)
            .map_err(|e| format!("failed to spawn {}: {e}", bin.display()))?;
        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        match proc.wait_until_listening(addr, Instant::now() + STARTUP_TIMEOUT) {
            Ok(()) => {
                let (child, log) = proc.into_parts();
                let watchdog = Watchdog::spawn(child.id(), &data_dir.0);
                return Ok(TestServer {
                    kind,
                    base_url: format!("http://{addr}"),
                    addr,
                    child,
                    log,
                    watchdog,
                    options: opts.clone(),
                    data_dir: Some(data_dir),
                });
            }
            Err(reason) => {
                let message = proc.fail(&format!("{} {reason} (port {port})", kind.long_name()));
                let lower = message.to_ascii_lowercase();
                if lower.contains("addrinuse")
                    || lower.contains("address already in use")
                    || lower.contains("bind failed")
                {
                    // Someone took the port between our probe and the bind.
                    last_error = message;
                    continue;
                }
                return Err(message);
            }
        }
    }
    Err(format!(
        "the Rust server failed to bind a free port {ATTEMPTS} times; last error: {last_error}"
    ))
}

fn not_installed(kind: ServerKind, detail: &str) -> String {
    format!(
        "{} is not installed; {INSTALL_HINT} ({detail})",
        kind.long_name()
    )
}

/// A spawned server whose output is being drained.
struct Proc {
    kind: ServerKind,
    child: Option<Child>,
    stdout_lines: Receiver<String>,
    log: OutputLog,
    drains: Vec<JoinHandle<()>>,
}

impl Proc {
    fn spawn(kind: ServerKind, cmd: &mut Command) -> std::io::Result<Proc> {
        // stdin stays open (piped) for the server's lifetime: the Node
        // launcher exits when it closes, i.e. when we die.
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        let log = OutputLog::new(kind);
        let (tx, rx) = mpsc::channel();
        let mut drains = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            drains.push(drain(stdout, log.clone(), Some(tx)));
        }
        if let Some(stderr) = child.stderr.take() {
            drains.push(drain(stderr, log.clone(), None));
        }
        Ok(Proc {
            kind,
            child: Some(child),
            stdout_lines: rx,
            log,
            drains,
        })
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present until into_parts")
    }

    /// Next stdout line, or why there is none.
    fn next_line(&mut self, deadline: Instant) -> Result<String, String> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "did not start within {}s",
                    STARTUP_TIMEOUT.as_secs()
                ));
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            match self.stdout_lines.recv_timeout(wait) {
                Ok(line) => return Ok(line),
                Err(RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child().try_wait() {
                        return Err(format!("exited during startup ({status})"));
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // stdout closed: the process is (about to be) gone.
                    let until = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < until {
                        if let Ok(Some(status)) = self.child().try_wait() {
                            return Err(format!("exited during startup ({status})"));
                        }
                        thread::sleep(Duration::from_millis(20));
                    }
                    return Err("closed its stdout during startup".to_owned());
                }
            }
        }
    }

    /// Waits until the server announces that it listens on `addr` (and
    /// `addr` accepts connections) while the process is alive. A connection
    /// alone proves nothing: another test's socket may hold the port while
    /// ours failed to bind, or a connect may meet itself on a free port.
    fn wait_until_listening(&mut self, addr: SocketAddr, deadline: Instant) -> Result<(), String> {
        let announcement = format!("listening on http://{addr}");
        loop {
            while let Ok(line) = self.stdout_lines.try_recv() {
                if line.contains(&announcement) && TcpStream::connect(addr).is_ok() {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child().try_wait() {
                return Err(format!("exited during startup ({status})"));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "did not announce listening on {addr} within {}s",
                    STARTUP_TIMEOUT.as_secs()
                ));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Kills the process and returns an error message with its output.
    fn fail(mut self, reason: &str) -> String {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for handle in self.drains.drain(..) {
            let _ = handle.join();
        }
        let output = self.log.snapshot();
        let output = if output.trim().is_empty() {
            "(no output)".to_owned()
        } else {
            output
        };
        format!(
            "{reason}\n--- {} server output ---\n{output}\n--- end of output ---",
            self.kind
        )
    }

    fn into_parts(mut self) -> (Child, OutputLog) {
        let child = self.child.take().expect("child present");
        // Drain threads keep running detached until the pipes close.
        (child, self.log.clone())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads `reader` line by line until EOF, recording each line in `log` and
/// forwarding it to `lines` (while anyone listens). Keeps the pipe empty so
/// the server never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(
    reader: R,
    log: OutputLog,
    lines: Option<Sender<String>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_owned();
                    log.push(&line);
                    if let Some(tx) = &lines {
                        let _ = tx.send(line);
                    }
                }
            }
        }
    })
}

/// The last [`LOG_LINES`] lines a server printed.
#[derive(Debug, Clone)]
struct OutputLog {
    kind: ServerKind,
    echo: bool,
    lines: Arc<Mutex<VecDeque<String>>>,
}

impl OutputLog {
    fn new(kind: ServerKind) -> Self {
        let echo = non_empty_env("DS_TEST_SERVER_LOG").is_some_and(|v| v != "0");
        OutputLog {
            kind,
            echo,
            lines: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    fn push(&self, line: &str) {
        if self.echo {
            eprintln!("[{} server] {line}", self.kind);
        }
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == LOG_LINES {
            lines.pop_front();
        }
        lines.push_back(line.to_owned());
    }

    fn snapshot(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Unix only, best effort: a `sh` process that SIGKILLs the Rust server and
/// removes its data directory when its stdin reaches EOF, i.e. when this
/// process dies without running destructors (SIGKILL, abort). The Node
/// launcher does the same itself by watching its own stdin.
#[derive(Debug)]
struct Watchdog(Child);

impl Watchdog {
    const SCRIPT: &'static str =
        r#"cat >/dev/null 2>&1; kill -9 "$1" 2>/dev/null; sleep 1; rm -rf -- "$2""#;

    fn spawn(pid: u32, data_dir: &Path) -> Option<Watchdog> {
        if !cfg!(unix) {
            return None;
        }
        Command::new("sh")
            .arg("-c")
            .arg(Self::SCRIPT)
            .arg("ds-test-server-watchdog")
            .arg(pid.to_string())
            .arg(data_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .map(Watchdog)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Killing `sh` disarms it; its `cat` exits when our end of the pipe
        // (dropped right after this) closes.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory removed (recursively) on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<TempDir, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!(
                "{prefix}-{}-{n}-{}",
                std::process::id(),
                nanos_since_epoch()
            ));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            }
        }
        Err(format!(
            "cannot create a temporary directory in {}",
            base.display()
        ))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| format!("cannot bind 127.0.0.1:0 to find a free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.join("../.."))
}

fn node_package_json() -> PathBuf {
    node_server_dir()
        .join("node_modules")
        .join("@durable-streams")
        .join("server")
        .join("package.json")
}

fn node_bin() -> OsString {
    std::env::var_os("DS_NODE_BIN")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| OsString::from("node"))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn nanos_since_epoch() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Tiny HTTP/1.1 client
// ---------------------------------------------------------------------------

/// A response read by [`http_request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code, e.g. `201`.
    pub status: u16,
    /// Header fields in the order received (names as sent by the server).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was sent chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal blocking HTTP/1.1 request over [`TcpStream`] for test setup and
/// assertions (plain `http://` only, one request per connection, 30 s
/// timeouts). `url` is absolute (`http://127.0.0.1:1234/path?query`);
/// `Host`, `Connection: close` and `Content-Length` are added unless given in
/// `headers`.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
    let (authority, target) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    let target = match target.find('#') {
        Some(i) => target[..i].to_owned(),
        None => target,
    };
    let host_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'))
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<SocketAddr> = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .collect();
    let mut last_err = format!("no address for {authority}");
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, HTTP_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("connect to {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(HTTP_TIMEOUT)))
        .map_err(|e| e.to_string())?;

    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut request = format!("{method} {target} HTTP/1.1\r\n");
    if !has("host") {
        request.push_str(&format!("Host: {authority}\r\n"));
    }
    if !has("connection") {
        request.push_str("Connection: close\r\n");
    }
    if !has("content-length") && !has("transfer-encoding") {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    stream
        .write_all(&bytes)
        .and_then(|()| stream.flush())
        .map_err(|e| format!("{method} {url}: write failed: {e}"))?;

    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{method} {url}: read failed: {e}"))?;
    parse_response(method, &raw).map_err(|e| format!("{method} {url}: {e}"))
}

fn parse_response(method: &str, raw: &[u8]) -> Result<HttpResponse, String> {
    if raw.is_empty() {
        return Err("connection closed without a response".to_owned());
    }
    let head_end = find(raw, b"\r\n\r\n").ok_or("incomplete response head")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "response head is not UTF-8")?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: Vec::new(),
    };
    if method.eq_ignore_ascii_case("HEAD") || status == 204 || status == 304 || status < 200 {
        return Ok(resp);
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    resp.body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        rest[..len.min(rest.len())].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(resp)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let line_end = find(data, b"\r\n").ok_or("truncated chunked body")?;
        let size_line = std::str::from_utf8(&data[..line_end]).map_err(|_| "bad chunk size")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_line:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("truncated chunked body".to_owned());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn put_append_get(server: &TestServer) {
        let url = server.unique_stream_url("roundtrip");
        let text = [("content-type", "text/plain")];

        let created = http_request("PUT", &url, &text, b"").unwrap();
        assert_eq!(created.status, 201, "{}: {created:?}", server.kind());
        assert!(created.header("stream-next-offset").is_some());

        let again = http_request("PUT", &url, &text, b"").unwrap();
        assert_eq!(again.status, 200, "{}: idempotent create", server.kind());

        let appended = http_request("POST", &url, &text, b"hello ").unwrap();
        assert_eq!(appended.status, 204, "{}: {appended:?}", server.kind());
        let appended = http_request("POST", &url, &text, b"world").unwrap();
        assert_eq!(appended.status, 204, "{}: {appended:?}", server.kind());

        let read = http_request("GET", &format!("{url}?offset=-1"), &[], b"").unwrap();
        assert_eq!(read.status, 200, "{}: {read:?}", server.kind());
        assert_eq!(read.text(), "hello world", "{}", server.kind());
        assert_eq!(read.header("content-type"), Some("text/plain"));
        assert_eq!(read.header("stream-up-to-date"), Some("true"));

        let head = http_request("HEAD", &url, &[], b"").unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("stream-next-offset"),
            read.header("stream-next-offset")
        );

        let missing = http_request("GET", &server.unique_stream_url("missing"), &[], b"").unwrap();
        assert_eq!(missing.status, 404, "{}", server.kind());
    }

    #[test]
    fn node_roundtrip() {
        let server = TestServer::start(ServerKind::Node);
        assert_eq!(server.kind(), ServerKind::Node);
        assert!(server.base_url().starts_with("http://127.0.0.1:"));
        assert!(!server.base_url().ends_with('/'));
        assert!(server.data_dir().is_none());
        put_append_get(&server);
    }

    #[test]
    fn rust_roundtrip() {
        let server = TestServer::start(ServerKind::Rust);
        assert_eq!(server.kind(), ServerKind::Rust);
        assert_eq!(server.base_url(), format!("http://{}", server.addr()));
        assert!(server.data_dir().unwrap().is_dir());
        put_append_get(&server);
    }

    #[test]
    fn rust_memory_durability_and_server_defaults() {
        for opts in [
            ServerOptions {
                durability_memory: true,
                ..Default::default()
            },
            ServerOptions {
                long_poll_timeout_ms: 100,
                wal_shards: None,
                wal_segment_bytes: None,
                ..Default::default()
            },
        ] {
            let server = TestServer::start_with(ServerKind::Rust, opts);
            put_append_get(&server);
        }
    }

    #[test]
    fn long_poll_timeout_is_applied() {
        for kind in both() {
            let opts = ServerOptions {
                long_poll_timeout_ms: 300,
                ..Default::default()
            };
            let server = TestServer::start_with(kind, opts);
            let url = server.unique_stream_url("lp");
            let created =
                http_request("PUT", &url, &[("content-type", "text/plain")], b"").unwrap();
            assert_eq!(created.status, 201);
            let offset = created.header("stream-next-offset").unwrap().to_owned();
            let started = Instant::now();
            let resp = http_request(
                "GET",
                &format!("{url}?offset={offset}&live=long-poll"),
                &[],
                b"",
            )
            .unwrap();
            let elapsed = started.elapsed();
            assert_eq!(resp.status, 204, "{kind}: {resp:?}");
            assert!(
                elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(5),
                "{kind}: long-poll took {elapsed:?}"
            );
        }
    }

    #[test]
    fn node_fault_injection() {
        let server = TestServer::start(ServerKind::Node);
        assert!(server.supports_fault_injection());
        let url = server.unique_stream_url("faults");
        let created = http_request("PUT", &url, &[("content-type", "text/plain")], b"").unwrap();
        assert_eq!(created.status, 201);

        server
            .inject_error(
                &json!({"path": url_path(&url), "status": 503, "retryAfter": 1, "count": 1}),
            )
            .unwrap();
        let failed = http_request("GET", &format!("{url}?offset=-1"), &[], b"").unwrap();
        assert_eq!(failed.status, 503);
        assert_eq!(failed.header("retry-after"), Some("1"));
        let ok = http_request("GET", &format!("{url}?offset=-1"), &[], b"").unwrap();
        assert_eq!(ok.status, 200, "the fault fires only once");

        server
            .inject_error(&json!({"path": url_path(&url), "status": 500, "count": 10}))
            .unwrap();
        server.clear_errors().unwrap();
        let ok = http_request("GET", &format!("{url}?offset=-1"), &[], b"").unwrap();
        assert_eq!(ok.status, 200, "cleared faults do not fire");

        let err = server
            .inject_error(&json!({"path": url_path(&url)}))
            .unwrap_err();
        assert!(err.contains("400"), "{err}");
    }

    #[test]
    fn rust_has_no_fault_injection() {
        let server = TestServer::start(ServerKind::Rust);
        assert!(!server.supports_fault_injection());
        assert!(
            server
                .inject_error(&json!({"path": "/x", "status": 503}))
                .is_err()
        );
        assert!(server.clear_errors().is_err());
    }

    #[test]
    fn drop_kills_the_server() {
        for kind in both() {
            let server = TestServer::start(kind);
            let addr = server.addr();
            let data_dir = server.data_dir().map(Path::to_path_buf);
            assert!(TcpStream::connect(addr).is_ok());
            drop(server);
            assert!(
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
                "{kind}: {addr} still accepts connections after drop"
            );
            if let Some(dir) = data_dir {
                assert!(!dir.exists(), "{kind}: {} not removed", dir.display());
            }
        }
    }

    #[test]
    fn unique_stream_urls() {
        let server = TestServer::start(ServerKind::Node);
        let a = server.unique_stream_url("t");
        let b = server.unique_stream_url("t");
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("{}/v1/stream/t-", server.base_url())));
        assert_eq!(
            server.stream_url("x"),
            format!("{}/v1/stream/x", server.base_url())
        );
    }

    #[test]
    fn kinds_and_paths() {
        assert_eq!(both(), vec![ServerKind::Node, ServerKind::Rust]);
        assert_eq!(ServerKind::Node.to_string(), "node");
        assert_eq!(ServerKind::Rust.to_string(), "rust");
        assert!(ServerKind::Node.is_available(), "{INSTALL_HINT}");
        assert!(ServerKind::Rust.is_available(), "{INSTALL_HINT}");
        assert!(node_server_script().is_file());
        assert_eq!(
            url_path("http://127.0.0.1:1/v1/stream/a?offset=-1"),
            "/v1/stream/a"
        );
        assert_eq!(url_path("http://127.0.0.1:1"), "/");
        assert_eq!(url_path("/a/b#c"), "/a/b");
    }

    #[test]
    fn parses_chunked_and_length_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        let resp = parse_response("GET", raw).unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-a"), Some("b"));
        assert_eq!(resp.text(), "hello world");

        let raw = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nokEXTRA";
        let resp = parse_response("PUT", raw).unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (201, "ok"));

        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        assert!(parse_response("HEAD", raw).unwrap().body.is_empty());
        assert!(parse_response("GET", b"").is_err());
    }
}
