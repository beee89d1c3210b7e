use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as the [`HttpTestServer`] received it.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The request target, e.g. `/hook`.
    pub path: String,
    /// Header names lower-cased.
    pub headers: HashMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
    /// When the request was complete.
    pub at: Instant,
}

/// How the server answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Wait this long before answering (to provoke client timeouts).
    pub delay: Duration,
}

impl Reply {
    /// A reply with this status, no extra headers, no delay.
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

type Script = dyn Fn(&ReceivedRequest, usize) -> Reply + Send + Sync;

/// A tiny HTTP/1.1 server on `127.0.0.1` for webhook tests: it records each
/// request and answers as a script says (the script gets the request and
/// its index). One request per connection (`Connection: close`). Stops
/// when dropped.
pub struct HttpTestServer {
    url: String,
    received: Arc<Mutex<VecDeque<ReceivedRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for HttpTestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTestServer")
            .field("url", &self.url)
            .finish()
    }
}

impl HttpTestServer {
    /// Starts a server answering with `script(request, index)`.
    pub async fn start(
        script: impl Fn(&ReceivedRequest, usize) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let received: Arc<Mutex<VecDeque<ReceivedRequest>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let counter = Arc::new(Mutex::new(0usize));
        let task = {
            let received = received.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut sock, _)) = listener.accept().await else {
                        return;
                    };
                    let (received, script, counter) =
                        (received.clone(), script.clone(), counter.clone());
                    tokio::spawn(async move {
                        let Some(req) = read_request(&mut sock).await else {
                            return;
                        };
                        let index = {
                            let mut c = counter.lock().unwrap();
                            *c += 1;
                            *c - 1
                        };
                        let reply = script(&req, index);
                        received.lock().unwrap().push_back(req);
                        tokio::time::sleep(reply.delay).await;
                        let mut head = format!(
                            "HTTP/1.1 {} X\r\ncontent-length: 0\r\nconnection: close\r\n",
                            reply.status
                        );
                        for (k, v) in &reply.headers {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    });
                }
            })
        };
        HttpTestServer {
            url,
            received,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<ReceivedRequest> {
        self.received.lock().unwrap().iter().cloned().collect()
    }

    /// Waits (polling) until `cond` holds on the requests, up to `within`.
    pub async fn wait_for(
        &self,
        within: Duration,
        cond: impl Fn(&[ReceivedRequest]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if cond(&self.requests()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for HttpTestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<ReceivedRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_owned(), first.next()?.to_owned());
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(ReceivedRequest {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    })
}
