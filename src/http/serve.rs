//! Serving connections: HTTP/1.1 over TCP with bounds on slow and idle clients (how long a
//! request head may take, how long a kept-alive connection may sit idle, how many connections
//! are open at once), and the `Connection: close` of an answer given before its request's body
//! was read. `axum::serve` offers none of these bounds, so the accept loop is ours; each
//! connection is served by hyper's HTTP/1 connection, as `axum::serve` does.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// The bounds on connections (`wenhui serve --header-read-timeout-s`, `--keep-alive-idle-s`,
/// `--max-connections`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// From a new connection, or from the first byte of a kept-alive connection's next request,
    /// until the request's head (request line and headers) is complete; else the connection is
    /// closed.
    pub header_read: Duration,
    /// How long a kept-alive connection may wait, silent, for its next request.
    pub keep_alive_idle: Duration,
    /// Connections open at once; those beyond wait, unaccepted, in the listen backlog.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> ConnectionLimits {
        ConnectionLimits {
            header_read: Duration::from_secs(10),
            keep_alive_idle: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting, lets the
/// requests in flight finish, and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: impl App,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let (open, open_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener, &permits) => accepted,
        };
        let Some((stream, permit)) = accepted else { continue };
        let connection = Connection { app: app.clone(), limits, stopping: stopping.clone() };
        let open = open_rx.clone();
        tokio::spawn(async move {
            connection.run(stream).await;
            drop((permit, open));
        });
    }
    drop(listener);
    let _ = stop.send(true);
    drop(open_rx);
    open.closed().await;
}

/// The next connection once there is room for it; None after an accept error (logged).
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = permits.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, _)) => Some((stream, permit)),
        Err(error) if is_connection_error(&error) => None,
        Err(error) => {
            // Out of file descriptors, say: wait for some connections to close.
            tracing::error!(%error, "accepting a connection failed");
            tokio::time::sleep(Duration::from_secs(1)).await;
            None
        }
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
    )
}

/// What a connection's requests are handed to: a port's router.
pub trait App:
    tower::Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone + Send + Sync + 'static
{
}

impl<S> App for S where
    S: tower::Service<Request, Response = Response, Error = Infallible, Future: Send>
        + Clone
        + Send
        + Sync
        + 'static
{
}

struct Connection<A> {
    app: A,
    limits: ConnectionLimits,
    stopping: watch::Receiver<bool>,
}

impl<A: App> Connection<A> {
    /// Serves one connection until the client or the server closes it, or it is too slow.
    async fn run(mut self, stream: TcpStream) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Watched { inner: stream, activity: activity.clone() });
        let (app, busy) = (self.app.clone(), activity.clone());
        let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            let (app, guard) = (app.clone(), busy.begin_request());
            async move {
                let response = app.oneshot(request.map(Body::new)).await;
                drop(guard);
                response
            }
        });
        let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
        tokio::pin!(connection);
        let mut shutting_down = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "a connection ended with an error");
                    }
                    return;
                }
                () = activity.too_slow(self.limits) => {
                    tracing::debug!("closing a connection too slow to send its request, or idle too long");
                    return;
                }
                _ = self.stopping.wait_for(|stop| *stop), if !shutting_down => {
                    connection.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
            }
        }
    }
}

/// What a connection is doing, for its deadlines: milliseconds since it was opened. Written by
/// the connection as it reads, writes and answers; read by its watchdog ([`Activity::too_slow`]).
/// Only a request head begun on an idle connection wakes the watchdog (it moves the deadline
/// earlier); the other changes only move it later or away, which the watchdog sees on its own
/// clock, so that an answer costs no wake-up and no timer.
struct Activity {
    opened: Instant,
    /// Requests being answered (the service's future not finished).
    busy: AtomicUsize,
    /// Whether a request has been answered: the connection is then kept alive, not new.
    answered: AtomicBool,
    /// When the connection last fell idle: its last answer, or its last byte written.
    idle_since_ms: AtomicU64,
    /// When the first byte of a request head arrived while idle; [`NO_HEAD`] if none has.
    head_since_ms: AtomicU64,
    /// A head begun on an idle connection: the watchdog's deadline moved earlier.
    head_begun: Notify,
}

const NO_HEAD: u64 = u64::MAX;

/// The shortest time between two looks of a busy connection's watchdog.
const LOOK_AT_LEAST_EVERY: Duration = Duration::from_millis(10);

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            answered: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            head_since_ms: AtomicU64::new(NO_HEAD),
            head_begun: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    fn begin_request(self: &Arc<Activity>) -> BusyGuard {
        self.busy.fetch_add(1, Ordering::SeqCst);
        self.head_since_ms.store(NO_HEAD, Ordering::SeqCst);
        BusyGuard(self.clone())
    }

    fn read(&self, bytes: usize) {
        if bytes > 0 && self.busy.load(Ordering::SeqCst) == 0 {
            let now = self.now_ms();
            if self.head_since_ms.compare_exchange(NO_HEAD, now, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                self.head_begun.notify_one();
            }
        }
    }

    fn wrote(&self, bytes: usize) {
        if bytes > 0 && self.busy.load(Ordering::SeqCst) == 0 {
            self.idle_since_ms.store(self.now_ms(), Ordering::SeqCst);
        }
    }

    /// When the connection is to be closed if nothing changes; None while a request is answered.
    fn deadline_ms(&self, limits: ConnectionLimits) -> Option<u64> {
        if self.busy.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2);
        if !self.answered.load(Ordering::SeqCst) {
            // A new connection: its first request's head within the limit from its opening.
            return Some(ms(limits.header_read));
        }
        let head_since = self.head_since_ms.load(Ordering::SeqCst);
        Some(if head_since != NO_HEAD {
            head_since.saturating_add(ms(limits.header_read))
        } else {
            self.idle_since_ms.load(Ordering::SeqCst).saturating_add(ms(limits.keep_alive_idle))
        })
    }

    /// Completes when the connection has been idle, or sending a request head, too long. While
    /// a request is answered there is no deadline: the watchdog looks again every quarter of the
    /// shorter limit, so it sees the idle deadline an answer sets long before it falls due.
    async fn too_slow(&self, limits: ConnectionLimits) {
        let look_every = (limits.header_read.min(limits.keep_alive_idle) / 4).max(LOOK_AT_LEAST_EVERY);
        loop {
            // Made before the deadline is read: a head begun after that wakes it.
            let head_begun = self.head_begun.notified();
            let now = self.now_ms();
            let wait = match self.deadline_ms(limits) {
                Some(deadline) if deadline <= now => return,
                Some(deadline) => Duration::from_millis(deadline - now),
                None => look_every,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = head_begun => {}
            }
        }
    }
}

/// A request being answered; its drop makes the connection idle again.
struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.answered.store(true, Ordering::SeqCst);
        activity.idle_since_ms.store(activity.now_ms(), Ordering::SeqCst);
        activity.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The TCP stream, telling the connection's [`Activity`] what it reads and writes.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.activity.read(buf.filled().len() - before);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            this.activity.wrote(written);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = polled {
            this.activity.wrote(written);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Middleware: an answer given before the request's body was read to its end (a 401 before a
/// POST's body, say) says `Connection: close`. The server closes such a connection rather than
/// read a body nobody wants; a keep-alive client told so does not send its next request there.
pub async fn close_if_body_unread(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let body = Body::new(ReadToEnd { inner: body, read: read.clone() });
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if !read.load(Ordering::SeqCst) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A request body that records whether it was read to its end.
struct ReadToEnd {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl HttpBody for ReadToEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || this.inner.is_end_stream() {
            this.read.store(true, Ordering::SeqCst);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
