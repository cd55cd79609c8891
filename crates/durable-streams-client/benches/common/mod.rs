//! What the benches share: the quick switch, a Rust server with memory
//! durability and a two-worker runtime.

use test_servers::{ServerKind, ServerOptions, TestServer};

/// `DS_BENCH_QUICK=1`: a small fraction of the work (a smoke run).
pub fn quick() -> bool {
    std::env::var("DS_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The Rust server (memory durability) and a runtime, or `None` with a
/// printed reason when the server is not installed.
pub fn rust_server() -> Option<(TestServer, tokio::runtime::Runtime)> {
    if !ServerKind::Rust.is_available() {
        println!("skipping: the Rust server is not installed (run scripts/install-servers.sh)");
        return None;
    }
    let server = TestServer::start_with(
        ServerKind::Rust,
        ServerOptions {
            durability_memory: true,
            ..ServerOptions::default()
        },
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    Some((server, runtime))
}
