//! Test seam: an in-process scripted HTTP/1.1 server for unit tests of
//! transport logic (retry counts per status and method, `Retry-After`,
//! budgets, redirects, progress guards). Integration tests use the real
//! servers; this only answers what a test scripts, including answers no
//! real server gives (redirects, gateway errors, cut connections).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as the server received it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) method: String,
    /// Path and query, as sent.
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Recorded {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What the server does with one request.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// A complete response.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Read the request, then close the connection without answering.
    Close,
    /// Headers, then the body in parts with a pause before each, then
    /// close (a streamed or broken body; no Content-Length).
    Stream {
        status: u16,
        headers: Vec<(String, String)>,
        parts: Vec<(Duration, Vec<u8>)>,
    },
}

impl Reply {
    pub(crate) fn status(status: u16) -> Reply {
        Reply::Respond {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn with_header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Respond {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.to_owned(), value.to_owned()));
                Reply::Respond {
                    status,
                    headers,
                    body,
                }
            }
            Reply::Stream {
                status,
                mut headers,
                parts,
            } => {
                headers.push((name.to_owned(), value.to_owned()));
                Reply::Stream {
                    status,
                    headers,
                    parts,
                }
            }
            Reply::Close => Reply::Close,
        }
    }

    pub(crate) fn with_body(self, data: &[u8]) -> Reply {
        match self {
            Reply::Respond {
                status, headers, ..
            } => Reply::Respond {
                status,
                headers,
                body: data.to_vec(),
            },
            other => other,
        }
    }
}

type Script = Arc<dyn Fn(&Recorded, usize) -> Reply + Send + Sync>;

/// A server on 127.0.0.1 answering by script; stops when dropped.
pub(crate) struct ScriptedServer {
    pub(crate) base_url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedServer {
    /// `script(request, index)` decides the reply; `index` counts requests
    /// from 0 across connections.
    pub(crate) async fn start(
        script: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static,
    ) -> ScriptedServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind scripted server");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let seen = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, Arc::clone(&script), Arc::clone(&seen)));
            }
        });
        ScriptedServer {
            base_url: format!("http://{addr}"),
            requests,
            task,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub(crate) fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("requests lock").clone()
    }

    pub(crate) fn count(&self) -> usize {
        self.requests.lock().expect("requests lock").len()
    }
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut socket: TcpStream, script: Script, seen: Arc<Mutex<Vec<Recorded>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut socket, &mut buf).await else {
            return;
        };
        let index = {
            let mut seen = seen.lock().expect("requests lock");
            seen.push(request.clone());
            seen.len() - 1
        };
        match script(&request, index) {
            Reply::Respond {
                status,
                headers,
                body,
            } => {
                let mut head = format!("HTTP/1.1 {status} Scripted\r\n");
                for (n, v) in &headers {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
                if socket.write_all(head.as_bytes()).await.is_err()
                    || socket.write_all(&body).await.is_err()
                {
                    return;
                }
            }
            Reply::Close => return,
            Reply::Stream {
                status,
                headers,
                parts,
            } => {
                let mut head = format!("HTTP/1.1 {status} Scripted\r\nconnection: close\r\n");
                for (n, v) in &headers {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for (pause, data) in parts {
                    tokio::time::sleep(pause).await;
                    if socket.write_all(&data).await.is_err() {
                        return;
                    }
                }
                return;
            }
        }
    }
}

/// Read one request (head and Content-Length body); `None` at EOF.
async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Some(Recorded {
        method,
        target,
        headers,
        body,
    })
}

/// A read chunk for unit tests of decoders.
pub(crate) fn chunk_with(
    data: bytes::Bytes,
    offset: crate::Offset,
    exact: bool,
    closed: bool,
) -> crate::Chunk {
    crate::Chunk {
        data,
        offset,
        exact,
        cursor: None,
        up_to_date: false,
        closed,
        status: 200,
        messages: None,
        typed_bytes: None,
    }
}
