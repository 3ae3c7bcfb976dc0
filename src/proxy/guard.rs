//! Connection guard against slowloris: a cap on open downstream connections and an
//! overall deadline for receiving each request's header.
//!
//! pingora only times out single reads (60 s each), so a client that sends one header
//! line every few seconds holds its connection, and about 45 KB, for as long as it likes;
//! a few thousand such clients exhaust the gateway. Two wrappers around the pingora app
//! close that hole, built together by [`guard`]:
//!
//! - [`ConnectionLimit`] (a [`ServerApp`]) counts open connections and refuses one over
//!   `server.max_connections` at once, with a 503 (or a plain close where HTTP/1 cannot
//!   be spoken), leaving the connections already open alone.
//! - [`HeaderDeadline`] (an [`HttpServerApp`]) gives each HTTP/1 request
//!   `server.header_timeout` to deliver its whole header, then drops the connection. On a
//!   reused keep-alive connection the clock starts at the request's first byte: the wait
//!   before it is idle time, which pingora's keep-alive timeout already bounds.
//!
//! Both read their limits at connection (or request) time from a [`LimitsFn`], so a
//! config reload applies them to new connections.

use std::any::Any;
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora::protocols::http::v2::server::H2Options;
use pingora::protocols::http::ServerSession;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN, IO,
};
use pingora::server::ShutdownWatch;
use prometheus::{IntCounter, IntGauge};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::config::ServerConfig;
use crate::metrics::Metrics;

/// The limits the guard enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub(crate) fn of(server: &ServerConfig) -> Limits {
        Limits {
            header_timeout: server.header_timeout,
            max_connections: server.max_connections,
        }
    }
}

/// The limits in force now (called per connection and per request, so a reload applies).
pub(crate) type LimitsFn = Arc<dyn Fn() -> Limits + Send + Sync>;

/// The answer to a connection over the cap. A complete response (so clients report it as
/// such), telling them to come back in a second.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 21\r\n\
Connection: close\r\n\
Retry-After: 1\r\n\
\r\n\
too many connections\n";

/// How long a refused connection may take to receive its answer and close.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Wraps a pingora HTTP app (e.g. `http_proxy(..)`) in the connection cap and the header
/// deadline. The two share per-connection state, so they come only as this pair.
pub(crate) fn guard<A>(
    app: A,
    limits: LimitsFn,
    metrics: Arc<Metrics>,
) -> ConnectionLimit<HeaderDeadline<A>>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    ConnectionLimit {
        inner: Arc::new(HeaderDeadline {
            inner: Arc::new(app),
            limits: limits.clone(),
            header_timeouts: metrics.header_timeouts.clone(),
        }),
        open: Arc::new(AtomicUsize::new(0)),
        limits,
        gauge: metrics.connections_open.clone(),
        refused: metrics.connections_refused.clone(),
    }
}

/// Tells the header deadline that a request's header has been read. pingora passes the
/// guard's marker to `ProxyHttp::on_connection_reuse` right after parsing each HTTP/1
/// request header; call this there. Returns what the application itself persisted for
/// the connection (`ProxyHttp::persist_connection_context`), if anything, or `prev_ctx`
/// unchanged when it is not the guard's.
pub(crate) fn header_arrived(
    prev_ctx: Box<dyn Any + Send + Sync>,
) -> Option<Box<dyn Any + Send + Sync>> {
    match prev_ctx.downcast::<HeaderArrived>() {
        Ok(marker) => {
            marker.flag.store(true, Ordering::Release);
            marker.previous
        }
        Err(other) => Some(other),
    }
}

/// The guard's marker in the session's connection context.
struct HeaderArrived {
    flag: Arc<AtomicBool>,
    /// The application's own context from the previous request, handed back to it.
    previous: Option<Box<dyn Any + Send + Sync>>,
}

/// What the stream wrapper and the header deadline share about one connection.
#[derive(Debug, Default)]
struct Conn {
    /// Reads that returned data: a change marks the first byte of a reused connection's
    /// next request.
    reads: AtomicU64,
    /// HTTP/1 requests begun, telling the first from keep-alive reuses.
    requests: AtomicU64,
}

impl Conn {
    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// One open connection's place under the cap, given back on drop.
struct Slot {
    open: Arc<AtomicUsize>,
    gauge: IntGauge,
}

impl Slot {
    /// A place if fewer than `cap` are taken.
    fn take(open: &Arc<AtomicUsize>, cap: usize, gauge: &IntGauge) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cap).then_some(n + 1)
        })
        .ok()?;
        gauge.inc();
        Some(Slot {
            open: open.clone(),
            gauge: gauge.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.gauge.dec();
    }
}

/// The connection's stream, holding its slot for as long as it exists and counting reads.
/// Everything else is passed through (TLS and socket details included).
pub(crate) struct Tracked {
    inner: Stream,
    conn: Arc<Conn>,
    _slot: Slot,
}

impl fmt::Debug for Tracked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracked")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.reads.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Tracked {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for Tracked {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Tracked {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Tracked {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Tracked {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Tracked {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for Tracked {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The per-connection state of a stream the guard admitted.
fn conn_of(stream: &Stream) -> Option<Arc<Conn>> {
    let io: &dyn IO = &**stream;
    io.as_any()
        .downcast_ref::<Tracked>()
        .map(|t| t.conn.clone())
}

/// Caps concurrent downstream connections (see the module docs).
pub(crate) struct ConnectionLimit<A> {
    inner: Arc<A>,
    open: Arc<AtomicUsize>,
    limits: LimitsFn,
    gauge: IntGauge,
    refused: IntCounter,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnectionLimit<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // A stream handed back for another round already holds its slot.
        if conn_of(&stream).is_some() {
            return self.inner.process_new(stream, shutdown).await;
        }
        let cap = (self.limits)().max_connections;
        let Some(slot) = Slot::take(&self.open, cap, &self.gauge) else {
            self.refused.inc();
            tracing::debug!(cap, "connection refused: server.max_connections reached");
            refuse(stream).await;
            return None;
        };
        let tracked = Tracked {
            inner: stream,
            conn: Arc::default(),
            _slot: slot,
        };
        self.inner.process_new(Box::new(tracked), shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Answers a refused connection with [`REFUSAL`] and closes it. What the client sent is
/// read (and dropped) until it closes or [`REFUSAL_LINGER`] passes: closing with unread
/// data resets the connection, and a reset can discard the answer before it is read.
async fn refuse(mut stream: Stream) {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        // An HTTP/1 answer means nothing on HTTP/2; just close.
        return;
    }
    let _ = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(REFUSAL).await?;
        stream.flush().await?;
        AsyncWriteExt::shutdown(&mut stream).await?;
        let mut buf = [0u8; 1024];
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Gives each HTTP/1 request [`Limits::header_timeout`] to deliver its header (see the
/// module docs).
pub(crate) struct HeaderDeadline<A> {
    inner: Arc<A>,
    limits: LimitsFn,
    header_timeouts: IntCounter,
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for HeaderDeadline<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // HTTP/2 streams come with their header already read (and pingora reports no
        // header arrival for them); other kinds are not the guard's.
        let conn = match session.stream() {
            Some(stream) if session.as_http1().is_some() => conn_of(stream),
            _ => None,
        };
        let Some(conn) = conn else {
            return self.inner.process_new_http(session, shutdown).await;
        };
        let reused = conn.requests.fetch_add(1, Ordering::Relaxed) > 0;
        let header_timeout = (self.limits)().header_timeout;
        let arrived = Arc::new(AtomicBool::new(false));
        let previous = session.take_connection_user_context();
        session.set_connection_user_context(Some(Box::new(HeaderArrived {
            flag: arrived.clone(),
            previous,
        })));
        let mut inner = self.inner.process_new_http(session, shutdown);
        if reused {
            // Idle until the next request's first byte: pingora's keep-alive timeout
            // bounds that wait, so the header clock starts only then.
            let start = conn.reads();
            let done = poll_fn(|cx| match inner.as_mut().poll(cx) {
                Poll::Ready(out) => Poll::Ready(Some(out)),
                Poll::Pending if conn.reads() != start => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            })
            .await;
            if let Some(out) = done {
                return out;
            }
        }
        tokio::select! {
            out = inner.as_mut() => return out,
            _ = tokio::time::sleep(header_timeout) => {}
        }
        if arrived.load(Ordering::Acquire) {
            // The header is in; the rest of the request has no deadline of ours.
            return inner.await;
        }
        self.header_timeouts.inc();
        tracing::debug!(
            timeout = ?header_timeout,
            "closing a connection whose request header did not arrive in time (server.header_timeout)"
        );
        // Dropping the request's future closes the connection.
        None
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await;
    }

    async fn process_custom_session(
        self: Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.inner
            .clone()
            .process_custom_session(stream, shutdown)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new())
    }

    fn fixed(header_timeout: Duration, max_connections: usize) -> LimitsFn {
        Arc::new(move || Limits {
            header_timeout,
            max_connections,
        })
    }

    #[test]
    fn refusal_is_a_complete_503_with_retry_after() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        assert!(head.contains("\r\nConnection: close"));
        assert!(head.contains("\r\nRetry-After: 1"));
    }

    #[test]
    fn slots_stop_at_the_cap_and_come_back_on_drop() {
        let open = Arc::new(AtomicUsize::new(0));
        let gauge = IntGauge::new("g", "g").unwrap();
        let a = Slot::take(&open, 2, &gauge).unwrap();
        let b = Slot::take(&open, 2, &gauge).unwrap();
        assert!(Slot::take(&open, 2, &gauge).is_none());
        assert_eq!((open.load(Ordering::Relaxed), gauge.get()), (2, 2));
        drop(a);
        assert_eq!((open.load(Ordering::Relaxed), gauge.get()), (1, 1));
        let c = Slot::take(&open, 2, &gauge).unwrap();
        // A lower cap (after a reload) admits nobody until enough have closed.
        assert!(Slot::take(&open, 1, &gauge).is_none());
        drop((b, c));
        assert_eq!((open.load(Ordering::Relaxed), gauge.get()), (0, 0));
    }

    #[test]
    fn header_arrived_sets_the_flag_and_returns_the_apps_own_context() {
        let flag = Arc::new(AtomicBool::new(false));
        let marker = HeaderArrived {
            flag: flag.clone(),
            previous: Some(Box::new(7u32)),
        };
        let back = header_arrived(Box::new(marker)).unwrap();
        assert!(flag.load(Ordering::Acquire));
        assert_eq!(*back.downcast::<u32>().unwrap(), 7);
        // Someone else's context passes through untouched.
        let other = header_arrived(Box::new("x")).unwrap();
        assert_eq!(*other.downcast::<&str>().unwrap(), "x");
    }

    /// Reads one request header as pingora's proxy does (signalling its arrival), then
    /// takes `work` before answering `200` and closing.
    struct FakeApp {
        work: Duration,
    }

    #[async_trait]
    impl HttpServerApp for FakeApp {
        async fn process_new_http(
            self: &Arc<Self>,
            mut session: ServerSession,
            _shutdown: &ShutdownWatch,
        ) -> Option<ReusedHttpStream> {
            let marker = session.take_connection_user_context();
            if !session.read_request().await.ok()? {
                return None;
            }
            if let Some(m) = marker {
                header_arrived(m);
            }
            tokio::time::sleep(self.work).await;
            session.set_keepalive(None);
            let mut resp = pingora::http::ResponseHeader::build(200, None).unwrap();
            resp.insert_header("content-length", "2").unwrap();
            session.write_response_header(Box::new(resp)).await.ok()?;
            session
                .write_response_body(bytes::Bytes::from_static(b"ok"), true)
                .await
                .ok()?;
            let _ = session.finish().await;
            None
        }
    }

    fn shutdown_watch() -> (tokio::sync::watch::Sender<bool>, ShutdownWatch) {
        tokio::sync::watch::channel(false)
    }

    async fn read_all(mut client: tokio::io::DuplexStream) -> String {
        let mut buf = Vec::new();
        let _ = client.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[tokio::test]
    async fn a_trickled_header_is_cut_off_at_the_deadline() {
        let m = metrics();
        let app = Arc::new(guard(
            FakeApp {
                work: Duration::ZERO,
            },
            fixed(Duration::from_millis(300), 10),
            m.clone(),
        ));
        let (mut client, server) = tokio::io::duplex(4096);
        let (_tx, watch) = shutdown_watch();
        let started = Instant::now();
        let serve = tokio::spawn(async move { app.process_new(Box::new(server), &watch).await });
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let trickle = tokio::spawn(async move {
            for i in 0..20 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if client
                    .write_all(format!("x-{i}: y\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return true;
                }
            }
            false
        });
        assert!(serve.await.unwrap().is_none());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        assert_eq!(m.header_timeouts.get(), 1);
        assert!(
            trickle.await.unwrap(),
            "the client saw its connection closed"
        );
        assert_eq!(m.connections_open.get(), 0, "the slot was given back");
    }

    #[tokio::test]
    async fn once_the_header_is_in_the_request_may_take_longer() {
        let m = metrics();
        let app = Arc::new(guard(
            FakeApp {
                work: Duration::from_millis(600),
            },
            fixed(Duration::from_millis(200), 10),
            m.clone(),
        ));
        let (mut client, server) = tokio::io::duplex(4096);
        let (_tx, watch) = shutdown_watch();
        let serve = tokio::spawn(async move { app.process_new(Box::new(server), &watch).await });
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_all(client).await;
        serve.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
        assert_eq!(m.header_timeouts.get(), 0);
    }

    #[tokio::test]
    async fn a_connection_over_the_cap_gets_503_and_the_others_carry_on() {
        let m = metrics();
        let app = Arc::new(guard(
            FakeApp {
                work: Duration::ZERO,
            },
            fixed(Duration::from_secs(30), 1),
            m.clone(),
        ));
        let (_tx, watch) = shutdown_watch();
        // The first connection holds the only slot while its request is incomplete.
        let (mut first, server) = tokio::io::duplex(4096);
        let (a, w) = (app.clone(), watch.clone());
        let held = tokio::spawn(async move { a.process_new(Box::new(server), &w).await });
        first.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while m.connections_open.get() != 1 {
            assert!(Instant::now() < deadline, "first connection never admitted");
            tokio::task::yield_now().await;
        }
        let (mut second, server) = tokio::io::duplex(4096);
        let (a, w) = (app.clone(), watch.clone());
        let refused = tokio::spawn(async move { a.process_new(Box::new(server), &w).await });
        second
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_all(second).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(refused.await.unwrap().is_none());
        assert_eq!(m.connections_refused.get(), 1);
        // The held connection is still served.
        first.write_all(b"Host: x\r\n\r\n").await.unwrap();
        let answer = read_all(first).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.await.unwrap();
        assert_eq!(m.connections_open.get(), 0);
        // And its slot is free again.
        let (mut third, server) = tokio::io::duplex(4096);
        let a = app.clone();
        let served = tokio::spawn(async move { a.process_new(Box::new(server), &watch).await });
        third
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(read_all(third).await.starts_with("HTTP/1.1 200"));
        served.await.unwrap();
        assert_eq!(m.connections_refused.get(), 1);
    }
}
