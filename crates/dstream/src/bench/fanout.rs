//! Fan-out: N concurrent SSE subscribers of one stream on one client.
//!
//! Each side (ours, baseline) runs in fresh child processes (`dstream bench
//! --fanout-child ...`; ours and the baseline three times each, in turns,
//! their samples pooled) so that resident memory is measured from a clean
//! heap: RSS after all N subscribers received a warm-up append, minus RSS
//! before the first subscriber was opened, divided by N. Then `appends`
//! appends are timed to every subscriber (one latency sample per
//! subscriber and append). Variants of ours: one SSE read per subscriber
//! (`fanout-N`), the same with a small read buffer (`fanout-small-N`), N
//! subscribers of one shared read (`fanout-shared-N`,
//! [`ReadBuilder::shared`]), and one SSE read per subscriber over HTTP/2,
//! all multiplexed on one connection (`fanout-h2-N`), all against the same
//! raw baseline of one HTTP/1.1 connection per subscriber. Neither
//! reference server speaks HTTP/2 (h2c prior knowledge is refused, an
//! `Upgrade: h2c` ignored), so `fanout-h2` goes through an h2c front: the
//! test servers' proxy, in this (parent) process, which forwards over
//! HTTP/1.1; the measured child holds only the client side.
//!
//! [`ReadBuilder::shared`]: durable_streams_client::ReadBuilder::shared

use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use bytes::Bytes;
use durable_streams_client::LiveMode;
use futures::StreamExt;
use hyper::Method;
use serde::{Deserialize, Serialize};
use test_servers::fault_proxy::FaultProxy;
use tokio::sync::mpsc;

use super::Target;
use super::raw;
use super::report::{Metric, Row};
use super::scenarios::{client, client_builder};

/// The `fanout-small` variant's `ClientBuilder::sse_read_buffer`.
const SMALL_SSE_READ_BUFFER: usize = 2048;

/// Chunks the shared-read variant keeps for subscribers that are behind.
const SHARED_CAPACITY: usize = 64;

/// Children of ours (`fanout-N`) and of the baseline per fan-out size.
const SIDE_CHILDREN: usize = 3;

/// File descriptors kept free for everything but the subscribers.
const FD_RESERVE: usize = 256;

/// What a child prints (one JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildReport {
    /// Subscribers.
    pub n: usize,
    /// RSS growth per subscriber, bytes.
    pub rss_per_subscriber: f64,
    /// One delivery latency per subscriber and timed append, microseconds.
    pub latencies_us: Vec<f64>,
}

/// The soft `RLIMIT_NOFILE` from `/proc/self/limits`, if readable.
pub fn fd_soft_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_fd_limit(&limits)
}

fn parse_fd_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(usize::MAX);
    }
    soft.parse().ok()
}

/// Subscribers allowed by the descriptor limit (one connection each).
pub fn cap_subscribers(wanted: usize, soft_limit: Option<usize>) -> usize {
    match soft_limit {
        Some(limit) => wanted.min(limit.saturating_sub(FD_RESERVE).max(1)),
        None => wanted,
    }
}

/// This process's resident set size in bytes (`VmRSS`).
pub fn rss_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("/proc/self/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no VmRSS in /proc/self/status".to_owned())
}

/// Parent side: one fan-out size, ours and the baseline in turns (each
/// child a fresh process), then the other variants of ours.
pub async fn fanout(t: &Target, wanted: usize, appends: usize) -> Result<Vec<Row>, String> {
    let n = cap_subscribers(wanted, fd_soft_limit());
    let note = (n < wanted).then(|| {
        let msg = format!(
            "{wanted} subscribers capped to {n} by the open file limit (ulimit -n); raise it to measure {wanted}"
        );
        eprintln!("  note: {msg}");
        msg
    });
    let client = client()?;
    let url = t.unique_url();
    let s = client
        .stream(&url)
        .map_err(|e| format!("stream url: {e}"))?;
    s.create_with(durable_streams_client::CreateOptions::new().content_type("text/plain"))
        .await
        .map_err(|e| format!("create: {e}"))?;
    // Warm-up, not measured: the first child with this many connections
    // paid for the server growing into them (the Node server's p99 to all
    // at 10,000 was 15-25% higher for whichever child went first).
    run_child("base", &url, n, 1).await?;
    // Ours and the baseline in turns, several children each, pooled: with
    // one child per side the p99 to all moved by ±0.25 between runs.
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for pair in 0..SIDE_CHILDREN {
        if pair % 2 == 0 {
            ours.push(run_child("ours", &url, n, appends).await?);
            base.push(run_child("base", &url, n, appends).await?);
        } else {
            base.push(run_child("base", &url, n, appends).await?);
            ours.push(run_child("ours", &url, n, appends).await?);
        }
    }
    let (ours, base) = (pooled(ours)?, pooled(base)?);
    let small = run_child("small", &url, n, appends).await?;
    let shared = run_child("shared", &url, n, appends).await?;
    let h2 = match h2c_front(&url) {
        Some(front) => Some(run_child("h2", &front.url_of(&url), n, appends).await?),
        None => {
            eprintln!("  note: fanout-h2-{wanted} skipped: {url} is not a plain http:// URL");
            None
        }
    };
    let mut out = rows(
        format!("fanout-{wanted}"),
        t,
        n,
        appends,
        ours,
        &base,
        note.clone(),
    )?;
    out.extend(rows(
        format!("fanout-small-{wanted}"),
        t,
        n,
        appends,
        small,
        &base,
        note.clone(),
    )?);
    out.extend(rows(
        format!("fanout-shared-{wanted}"),
        t,
        n,
        appends,
        shared,
        &base,
        note.clone(),
    )?);
    if let Some(h2) = h2 {
        out.extend(rows(
            format!("fanout-h2-{wanted}"),
            t,
            n,
            appends,
            h2,
            &base,
            note,
        )?);
    }
    Ok(out)
}

/// One report from several children of one kind: every latency sample,
/// and the median memory per subscriber.
fn pooled(children: Vec<ChildReport>) -> Result<ChildReport, String> {
    let n = children.first().ok_or("fan-out: no child ran")?.n;
    let mut rss: Vec<f64> = children.iter().map(|c| c.rss_per_subscriber).collect();
    rss.sort_by(f64::total_cmp);
    Ok(ChildReport {
        n,
        rss_per_subscriber: super::stats::median(&rss),
        latencies_us: children.into_iter().flat_map(|c| c.latencies_us).collect(),
    })
}

/// An h2c front (HTTP/2 in, HTTP/1.1 out) for the server of `url`, if
/// it is a plain `http://` URL.
fn h2c_front(url: &str) -> Option<FaultProxy> {
    let authority = http_authority(url)?;
    let upstream = authority.to_socket_addrs().ok()?.next()?;
    Some(FaultProxy::start_for(upstream))
}

/// The `host:port` of a plain `http://` URL (port 80 when absent).
fn http_authority(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty() {
        return None;
    }
    Some(
        if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.contains(']'))
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        },
    )
}

/// A latency row and a memory row of one fan-out variant against the
/// baseline.
fn rows(
    name: String,
    t: &Target,
    n: usize,
    appends: usize,
    ours: ChildReport,
    base: &ChildReport,
    note: Option<String>,
) -> Result<Vec<Row>, String> {
    let (how, children) = if name.contains("shared") {
        ("subscribers of one shared read (ReadBuilder::shared)", 1)
    } else if name.contains("h2") {
        (
            "SSE subscribers on one client over HTTP/2 (one connection to an h2c front that \
             forwards over HTTP/1.1: latency includes that hop)",
            1,
        )
    } else if name.contains("small") {
        (
            "SSE subscribers on one client with sse_read_buffer(2048)",
            1,
        )
    } else {
        ("SSE subscribers on one client", SIDE_CHILDREN)
    };
    let params = format!(
        "{n} {how}; {appends} timed appends, latency to each subscriber; ours from \
         {children} child process(es), the baseline from {SIDE_CHILDREN}"
    );
    let mut lat = Row::new(
        &t.label,
        name.clone(),
        Metric::Latency,
        "us",
        ours.latencies_us,
        base.latencies_us.clone(),
    )
    .ok_or("fan-out: no latency samples")?;
    lat.params = params;
    lat.note.clone_from(&note);
    let mut mem = Row::new(
        &t.label,
        name,
        Metric::Memory,
        "B/subscriber",
        vec![ours.rss_per_subscriber],
        vec![base.rss_per_subscriber],
    )
    .ok_or("fan-out: no memory sample")?;
    mem.params =
        format!("{n} {how}: RSS growth / N, each child a fresh process (median of the children)");
    mem.note = note;
    Ok(vec![lat, mem])
}

async fn run_child(kind: &str, url: &str, n: usize, appends: usize) -> Result<ChildReport, String> {
    let args = [
        "--fanout-child",
        kind,
        "--fanout-url",
        url,
        "--fanout-n",
        &n.to_string(),
        "--fanout-appends",
        &appends.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    super::run_self_child(format!("fan-out child ({kind}, {n})"), args).await
}

async fn collect(
    rx: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
    n: usize,
    timeout: Duration,
    mut each: impl FnMut(Instant),
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    for got in 0..n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((_, at))) => each(at),
            Ok(None) => return Err(format!("subscribers ended after {got} of {n} deliveries")),
            Err(_) => return Err(format!("only {got} of {n} deliveries within {timeout:?}")),
        }
    }
    Ok(())
}

/// Child side: open `n` subscribers, warm up, measure, print one JSON line.
pub async fn child(kind: &str, url: &str, n: usize, appends: usize) -> Result<(), String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Instant)>();
    let (ours, shared) = match kind {
        "ours" | "small" | "h2" => (true, false),
        "shared" => (true, true),
        "base" => (false, false),
        other => return Err(format!("unknown fan-out child kind {other:?}")),
    };
    // Fixed costs (client, pool, first connection) before the first sample.
    let client = match kind {
        "small" => client_builder().sse_read_buffer(SMALL_SSE_READ_BUFFER),
        "h2" => client_builder().http2_prior_knowledge(true),
        _ => client_builder(),
    }
    .build()
    .map_err(|e| format!("client: {e}"))?;
    let stream = client.stream(url).map_err(|e| format!("stream url: {e}"))?;
    let raw = raw::client();
    let tail = if ours {
        stream
            .head()
            .await
            .map_err(|e| format!("head: {e}"))?
            .next_offset
            .as_str()
            .to_owned()
    } else {
        raw::tail(&raw, url).await?
    };
    let rss0 = rss_bytes()?;
    let offset = durable_streams_client::Offset::parse(&tail).map_err(|e| e.to_string())?;
    let hub = if shared {
        let read = stream.read().offset(offset.clone()).live(LiveMode::Sse);
        Some(
            read.shared(SHARED_CAPACITY)
                .map_err(|e| format!("shared read: {e}"))?,
        )
    } else {
        None
    };
    let mut tasks = Vec::with_capacity(n);
    for id in 0..n {
        let tx = tx.clone();
        if ours {
            let mut reader = match &hub {
                Some(hub) => hub.subscribe(),
                None => stream
                    .read()
                    .offset(offset.clone())
                    .live(LiveMode::Sse)
                    .bytes(),
            };
            tasks.push(tokio::spawn(async move {
                while let Some(Ok(chunk)) = reader.next().await {
                    if !chunk.data.is_empty() && tx.send((id, Instant::now())).is_err() {
                        break;
                    }
                }
            }));
        } else {
            tasks.push(tokio::spawn(raw::sse_reader(
                raw.clone(),
                url.to_owned(),
                tail.clone(),
                id,
                tx,
            )));
        }
    }
    drop(tx);
    let write = |k: usize| {
        let stream = stream.clone();
        let raw = raw.clone();
        async move {
            let body = Bytes::from(format!("fanout-{k}\n"));
            if ours {
                stream
                    .append(body)
                    .await
                    .map(drop)
                    .map_err(|e| format!("append: {e}"))
            } else {
                raw::send_ok(
                    &raw,
                    Method::POST,
                    url,
                    &[("content-type", "text/plain")],
                    body,
                )
                .await
                .map(drop)
            }
        }
    };
    let warmup_timeout = Duration::from_secs(60) + Duration::from_millis(5) * n as u32;
    write(0).await?;
    collect(&mut rx, n, warmup_timeout, |_| {}).await?;
    let rss1 = rss_bytes()?;
    let mut latencies = Vec::with_capacity(n * appends);
    for k in 1..=appends {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let start = Instant::now();
        write(k).await?;
        collect(&mut rx, n, Duration::from_secs(60), |at| {
            latencies.push(at.duration_since(start).as_secs_f64() * 1e6);
        })
        .await?;
    }
    for task in &tasks {
        task.abort();
    }
    let report = ChildReport {
        n,
        rss_per_subscriber: rss1.saturating_sub(rss0) as f64 / n as f64,
        latencies_us: latencies,
    };
    println!(
        "{}",
        serde_json::to_string(&report).map_err(|e| format!("report: {e}"))?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_limit_parsing_and_cap() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_fd_limit(limits), Some(1024));
        assert_eq!(
            parse_fd_limit("Max open files  unlimited unlimited files\n"),
            Some(usize::MAX)
        );
        assert_eq!(parse_fd_limit("nothing"), None);
        assert_eq!(cap_subscribers(10_000, Some(1024)), 1024 - FD_RESERVE);
        assert_eq!(cap_subscribers(100, Some(1024)), 100);
        assert_eq!(cap_subscribers(100, None), 100);
        assert_eq!(cap_subscribers(100, Some(10)), 1);
    }

    #[test]
    fn authority_of_plain_http_urls() {
        for (url, authority) in [
            ("http://127.0.0.1:8080/v1/a?x=1", Some("127.0.0.1:8080")),
            ("http://localhost/v1", Some("localhost:80")),
            ("http://[::1]:81/x", Some("[::1]:81")),
            ("http://[::1]/x", Some("[::1]:80")),
            ("https://example.com/x", None),
            ("http:///x", None),
        ] {
            assert_eq!(http_authority(url).as_deref(), authority, "{url}");
        }
    }

    #[test]
    fn rss_is_readable_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes().unwrap() > 0);
        }
    }
}
