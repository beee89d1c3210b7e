//! The HTTP/1.1 server under the router (hyper), with what a listener open
//! to slow, idle or too many clients needs and `axum::serve` has not:
//!
//! - **header timeout**: a request's head must arrive within
//!   `header_timeout` of its first byte (half a request line and then
//!   nothing is closed then);
//! - **idle timeout**: a connection without a request in progress (before
//!   its first request, between keep-alive requests) is closed after
//!   `idle_timeout`;
//! - **connection limit**: at `max_connections` (lowered to fit the
//!   process's file-descriptor limit, see [`fit_to_fd_limit`]) each new
//!   connection closes the one idle longest, so probes and real requests
//!   keep being served while idle sockets pile up; when every connection is
//!   busy, the new one is answered 503 and closed. When `accept` fails for
//!   lack of file descriptors anyway, the same shedding frees one.
//!
//! The request timeout and the body limits are router layers
//! ([`super::limits`]): they hold for in-process calls too.
//!
//! Each connection is a task owning its [`Conn`] (phase and since when);
//! reads on its socket and the service calls move the phase, and one
//! reaper task closes connections past their deadline. Shutdown: the
//! listener closes, each connection is shut down gracefully (idle ones at
//! once, busy ones after their answer, within the request timeout; a
//! partial head within the header timeout), and `serve` returns when every
//! connection task ended.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::HttpOptions;

/// File descriptors left to the rest of the process (Redis and PostgreSQL
/// connections, consumers' handler pipes, logs) when the connection limit
/// is fitted to the descriptor limit: this many, or a quarter of the
/// limit when that is more.
const FD_RESERVE: u64 = 64;

/// The body of the answer to a connection over the limit when none can be shed.
const OVER_LIMIT: &str =
    r#"{"error":{"code":"unavailable","message":"too many connections, all busy; try again"}}"#;

/// No request in progress: closed after the idle timeout.
const IDLE: u64 = 0;
/// A request's head is arriving: closed after the header timeout.
const HEAD: u64 = 1;
/// A request is being handled or answered: closed after the request
/// timeout (which answers 408 first) and the idle timeout (for the client
/// to take the answer).
const BUSY: u64 = 2;

/// One connection: its phase and since when (milliseconds on the server's
/// clock) in one word, and the token that closes it.
struct Conn {
    state: AtomicU64,
    close: CancellationToken,
}

impl Conn {
    fn set(&self, phase: u64, now: u64) {
        self.state.store((now << 2) | phase, Ordering::Release);
    }

    /// (phase, since).
    fn get(&self) -> (u64, u64) {
        let s = self.state.load(Ordering::Acquire);
        (s & 3, s >> 2)
    }

    /// Bytes arrived: an idle connection starts reading a request's head.
    fn on_read(&self, now: u64) {
        let s = self.state.load(Ordering::Acquire);
        if s & 3 == IDLE {
            let _ = self.state.compare_exchange(
                s,
                (now << 2) | HEAD,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }
}

/// How long each phase may last.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header: Duration,
    request: Duration,
    idle: Duration,
}

/// What [`Registry::room`] found.
enum Room {
    /// Under the limit.
    Free,
    /// At the limit, with a connection closing.
    Closing,
    /// At the limit, every connection busy.
    Full,
}

/// The open connections, on one clock.
struct Registry {
    start: Instant,
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Notified when a connection leaves.
    left: tokio::sync::Notify,
}

impl Registry {
    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn len(&self) -> usize {
        self.conns.lock().expect("registry lock").len()
    }

    fn insert(self: &Arc<Self>) -> Registered {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            state: AtomicU64::new(0),
            close: CancellationToken::new(),
        });
        conn.set(IDLE, self.now());
        self.conns
            .lock()
            .expect("registry lock")
            .insert(id, conn.clone());
        Registered {
            registry: self.clone(),
            id,
            conn,
        }
    }

    /// Whether one more connection fits under `max`, closing the one idle
    /// longest (no request in progress) when it does not and none is
    /// closing already.
    fn room(&self, max: usize) -> Room {
        let conns = self.conns.lock().expect("registry lock");
        if conns.len() < max {
            return Room::Free;
        }
        if conns.values().any(|c| c.close.is_cancelled()) {
            return Room::Closing;
        }
        let oldest = conns
            .values()
            .map(|c| (c.get(), c))
            .filter(|((phase, _), _)| *phase != BUSY)
            .min_by_key(|((_, since), _)| *since);
        match oldest {
            Some((_, c)) => {
                c.close.cancel();
                Room::Closing
            }
            None => Room::Full,
        }
    }

    /// Waits until one more connection fits under `max` (false: every
    /// connection is busy). A closed connection leaves as its task ends;
    /// waiting for that keeps the descriptors in use under the limit
    /// however fast connections arrive.
    async fn make_room(&self, max: usize) -> bool {
        loop {
            let left = self.left.notified();
            tokio::pin!(left);
            left.as_mut().enable();
            match self.room(max) {
                Room::Free => return true,
                Room::Full => return false,
                Room::Closing => {
                    if tokio::time::timeout(Duration::from_secs(1), left)
                        .await
                        .is_err()
                    {
                        return true;
                    }
                }
            }
        }
    }

    /// Closes the connections past the deadline of their phase.
    fn close_expired(&self, timeouts: &Timeouts) -> usize {
        let now = self.now();
        let ms = |d: Duration| d.as_millis() as u64;
        let mut closed = 0;
        for c in self.conns.lock().expect("registry lock").values() {
            let (phase, since) = c.get();
            let limit = match phase {
                IDLE => ms(timeouts.idle),
                HEAD => ms(timeouts.header),
                _ => ms(timeouts.request + timeouts.idle),
            };
            if now.saturating_sub(since) >= limit && !c.close.is_cancelled() {
                c.close.cancel();
                closed += 1;
            }
        }
        closed
    }
}

/// A connection's place in the registry, left when dropped.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry
            .conns
            .lock()
            .expect("registry lock")
            .remove(&self.id);
        self.registry.left.notify_waiters();
    }
}

/// A request in progress on a connection; dropped with the answer's body
/// (once hyper has taken all of it) or with the request, it makes the
/// connection idle again.
struct Busy {
    registry: Arc<Registry>,
    conn: Arc<Conn>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn.set(IDLE, self.registry.now());
    }
}

/// The socket, telling its connection when bytes arrive.
struct Watched {
    io: TcpStream,
    registry: Arc<Registry>,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.on_read(this.registry.now());
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// `configured`, lowered so that HTTP connections leave [`FD_RESERVE`]
/// (or a quarter of the soft `RLIMIT_NOFILE`, when more) to the rest.
pub(crate) fn fit_to_fd_limit(configured: usize) -> usize {
    let Some(limit) = rustix::process::getrlimit(rustix::process::Resource::Nofile).current else {
        return configured;
    };
    let room = limit.saturating_sub(FD_RESERVE.max(limit / 4)).max(1);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// Out of file descriptors (the process's or the system's).
fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error()
        || code == rustix::io::Errno::NFILE.raw_os_error())
}

/// Serves `router` on `listener` until `shutdown` is cancelled, with the
/// timeouts and the connection limit of `options` (see the module docs),
/// then drains the connections.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    options: &HttpOptions,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let max = fit_to_fd_limit(options.max_connections);
    if max < options.max_connections {
        tracing::info!(
            configured = options.max_connections,
            max_connections = max,
            "the HTTP connection limit is lowered to fit the file-descriptor limit (ulimit -n)"
        );
    }
    let registry = Arc::new(Registry {
        start: Instant::now(),
        next: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
        left: tokio::sync::Notify::new(),
    });
    let connections = TaskTracker::new();
    let reaper_stop = CancellationToken::new();
    let timeouts = Timeouts {
        header: options.header_timeout,
        request: options.request_timeout,
        idle: options.idle_timeout,
    };
    let reaper = tokio::spawn(reap(registry.clone(), timeouts, reaper_stop.clone()));
    let mut last_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                if !registry.make_room(max).await {
                    // Every connection is busy: answer at once, never wait.
                    let answer = format!(
                        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                         connection: close\r\ncontent-length: {}\r\n\r\n{OVER_LIMIT}",
                        OVER_LIMIT.len()
                    );
                    let _ = stream.try_write(answer.as_bytes());
                    continue;
                }
                let _ = stream.set_nodelay(true);
                // Registered here, not in the task: the count holds every
                // accepted socket however far the tasks lag behind.
                connections.spawn(connection(
                    stream,
                    router.clone(),
                    registry.insert(),
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                }
                // Out of descriptors below our own limit (others hold
                // them): free one by lowering the limit to what is open.
                let freed = is_fd_exhaustion(&e) && registry.make_room(registry.len()).await;
                if !freed {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    reaper_stop.cancel();
    let _ = reaper.await;
    Ok(())
}

/// Closes expired connections, several times per shortest timeout.
async fn reap(registry: Arc<Registry>, timeouts: Timeouts, stop: CancellationToken) {
    let tick = (timeouts.header.min(timeouts.idle) / 8)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = interval.tick() => {
                let closed = registry.close_expired(&timeouts);
                if closed > 0 {
                    tracing::debug!(closed, "closed HTTP connections past their header or idle timeout");
                }
            }
        }
    }
}

/// One connection, until it ends, is closed by the registry (dropping it
/// closes the socket) or drains after `shutdown`.
async fn connection(
    stream: TcpStream,
    router: Router,
    registered: Registered,
    shutdown: CancellationToken,
) {
    let registry = registered.registry.clone();
    let conn = registered.conn.clone();
    let io = TokioIo::new(Watched {
        io: stream,
        registry: registry.clone(),
        conn: conn.clone(),
    });
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        conn.set(BUSY, registry.now());
        let busy = Busy {
            registry: registry.clone(),
            conn: conn.clone(),
        };
        let answer = router.clone().oneshot(request);
        async move {
            let response = answer.await.unwrap_or_else(|never| match never {});
            // The connection is busy until hyper has taken the whole body.
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &busy;
                    frame
                }))
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Heads are timed above, from their first byte (hyper's own timer
    // would start while the connection is still idle).
    builder.header_read_timeout(None);
    let http = builder.serve_connection(io, service);
    tokio::pin!(http);
    let close = registered.conn.close.clone();
    let mut draining = false;
    loop {
        tokio::select! {
            served = http.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            _ = close.cancelled() => break,
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                http.as_mut().graceful_shutdown();
            }
        }
    }
}
