//! Shared helpers for integration tests against real servers.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use durable_streams_client::{Client, RetryPolicy, Stream};
use test_servers::{ServerKind, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A client with fast retries so fault tests stay quick.
pub fn client() -> Client {
    Client::builder()
        .retry_policy(
            RetryPolicy::default()
                .initial_delay(std::time::Duration::from_millis(10))
                .max_delay(std::time::Duration::from_millis(200)),
        )
        .build()
        .expect("client")
}

/// A fresh stream handle on `server`.
pub fn stream(server: &TestServer, client: &Client, prefix: &str) -> Stream {
    client
        .stream(server.unique_stream_url(prefix))
        .expect("stream url")
}

/// Start both servers (each test gets its own processes, so tests never collide).
pub fn servers() -> Vec<TestServer> {
    test_servers::both()
        .into_iter()
        .map(TestServer::start)
        .collect()
}

pub fn node() -> TestServer {
    TestServer::start(ServerKind::Node)
}

/// The URL path of a stream, as the fault injection endpoint wants it.
pub fn path_of(stream: &Stream) -> String {
    stream.url().path().to_owned()
}

/// A TCP proxy in front of a server that records every byte the client sends,
/// so tests can see headers and query strings exactly as they went on the wire.
pub struct RecordingProxy {
    pub base_url: String,
    seen: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingProxy {
    pub async fn start(upstream: &str) -> RecordingProxy {
        Self::start_with_cut(upstream, None).await
    }

    /// Like `start`, but every connection is cut after `cut_after`: a fault
    /// proxy that forces live reads to reconnect mid-stream.
    pub async fn start_with_cut(
        upstream: &str,
        cut_after: Option<std::time::Duration>,
    ) -> RecordingProxy {
        Self::start_with_faults(upstream, cut_after, 0.0).await
    }

    /// Like `start`, but each chunk of a server answer is, with probability
    /// `drop_answer`, replaced by killing the connection: the server applied
    /// the request, the client never hears so (an outcome-unknown write).
    pub async fn start_dropping_answers(upstream: &str, drop_answer: f64) -> RecordingProxy {
        Self::start_with_faults(upstream, None, drop_answer).await
    }

    /// Like `start`, but the answer on the `i`-th accepted connection is cut
    /// (connection killed) after `cuts[i]` bytes; later connections are
    /// left alone. Deterministic mid-body breaks.
    pub async fn start_cutting_answers(upstream: &str, cuts: Vec<usize>) -> RecordingProxy {
        Self::start_with(upstream, None, 0.0, cuts).await
    }

    async fn start_with_faults(
        upstream: &str,
        cut_after: Option<std::time::Duration>,
        drop_answer: f64,
    ) -> RecordingProxy {
        Self::start_with(upstream, cut_after, drop_answer, Vec::new()).await
    }

    async fn start_with(
        upstream: &str,
        cut_after: Option<std::time::Duration>,
        drop_answer: f64,
        cuts: Vec<usize>,
    ) -> RecordingProxy {
        let upstream_addr = upstream.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_in_task = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut accepted = 0usize;
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let cut_answer_at = cuts.get(accepted).copied();
                accepted += 1;
                let upstream_addr = upstream_addr.clone();
                let seen = Arc::clone(&seen_in_task);
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream_addr).await else {
                        return;
                    };
                    let (mut ri, mut wi) = inbound.split();
                    let (mut ro, mut wo) = outbound.split();
                    let client_to_server = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match ri.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            seen.lock().unwrap().extend_from_slice(&buf[..n]);
                            if wo.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = wo.shutdown().await;
                    };
                    let server_to_client = async {
                        if let Some(limit) = cut_answer_at {
                            let mut buf = vec![0u8; 16 * 1024];
                            let mut forwarded = 0usize;
                            loop {
                                let n = match ro.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => n,
                                };
                                let n = n.min(limit - forwarded);
                                if wi.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                                forwarded += n;
                                if forwarded >= limit {
                                    // Returning ends the connection task: both sockets close.
                                    return;
                                }
                            }
                            let _ = wi.shutdown().await;
                            return;
                        }
                        if drop_answer <= 0.0 {
                            let _ = tokio::io::copy(&mut ro, &mut wi).await;
                            let _ = wi.shutdown().await;
                            return;
                        }
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = match ro.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if fastrand::f64() < drop_answer {
                                // Returning ends the connection task: both sockets close.
                                return;
                            }
                            if wi.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = wi.shutdown().await;
                    };
                    if drop_answer > 0.0 || cut_answer_at.is_some() {
                        tokio::select! {
                            _ = client_to_server => {}
                            _ = server_to_client => {}
                        }
                        return;
                    }
                    match cut_after {
                        Some(d) => {
                            let _ = tokio::time::timeout(d, async {
                                tokio::join!(client_to_server, server_to_client)
                            })
                            .await;
                        }
                        None => {
                            tokio::join!(client_to_server, server_to_client);
                        }
                    }
                });
            }
        });
        RecordingProxy {
            base_url: format!("http://127.0.0.1:{port}"),
            seen,
            task,
        }
    }

    /// Everything the client sent so far, as text (lowercased for header matching).
    pub fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).to_string()
    }

    /// The request lines (`METHOD target HTTP/1.1`) seen so far.
    pub fn request_lines(&self) -> Vec<String> {
        // A request line may directly follow the previous request's body on
        // a kept-alive connection, so look for the method anywhere in the line.
        self.seen()
            .lines()
            .filter(|l| l.ends_with(" HTTP/1.1"))
            .filter_map(|l| {
                ["GET ", "POST ", "PUT ", "HEAD ", "DELETE "]
                    .iter()
                    .filter_map(|m| l.find(m))
                    .min()
                    .map(|i| l[i..].to_owned())
            })
            .collect()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
