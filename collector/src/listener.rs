//! The accept loop shared by both listeners: connection cap, PROXY protocol
//! from trusted proxies, TLS handshake with a deadline, HTTP/1.1 with a
//! header-read deadline and a head-size limit, an inactivity deadline, and
//! graceful shutdown.
//!
//! axum's own `serve` has no header-read timeout, so connections are driven
//! with hyper's HTTP/1 connection builder directly; the axum [`Router`] is
//! only the service.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse as _, Response};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use crate::proxyproto::read_proxy_header;
use crate::{CollectorConfig, Error};

/// hyper refuses read buffers smaller than this.
const HYPER_MIN_BUF: usize = 8192;

/// Connection-level limits of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerOptions {
    /// Most connections open at once; one more is closed right after accept.
    pub max_connections: usize,
    /// Most connections open at once from one source prefix (IPv4 /24, IPv6
    /// /56): the client's when a trusted proxy sends a PROXY header, else
    /// the socket peer's; a trusted proxy's own connections are not capped
    /// by prefix. One more is closed.
    pub max_connections_per_prefix: usize,
    /// Time to receive a whole request head (and the PROXY header). hyper
    /// also starts this clock while a keep-alive connection waits for its
    /// next request, so it bounds idle keep-alive as well.
    pub header_read_timeout: Duration,
    /// Time for the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// A connection on which no byte moves in either direction for this long
    /// while no request is being handled is closed (catches clients that stop
    /// reading their response).
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers); larger heads get 431.
    pub max_header_bytes: usize,
    /// Socket peers allowed to speak for a client (PROXY protocol here,
    /// forwarding headers in the handlers).
    pub trusted_proxies: Vec<IpNet>,
    /// Require a PROXY protocol header (v1 or v2) from trusted peers.
    pub proxy_protocol: bool,
    /// How long in-flight requests may run after shutdown before their
    /// connections are cut.
    pub shutdown_grace: Duration,
}

impl Default for ListenerOptions {
    fn default() -> Self {
        Self::export(&CollectorConfig::default())
    }
}

impl ListenerOptions {
    /// Options for the public listener from the configuration.
    pub fn public(config: &CollectorConfig) -> Self {
        Self {
            trusted_proxies: config.public.trusted_proxies.clone(),
            proxy_protocol: config.public.proxy_protocol,
            ..Self::export(config)
        }
    }

    /// Options for the export listener: the same limits, no proxies.
    pub fn export(config: &CollectorConfig) -> Self {
        Self {
            max_connections: config.limits.max_connections,
            max_connections_per_prefix: config.limits.max_connections_per_prefix,
            header_read_timeout: config.header_read_timeout(),
            tls_handshake_timeout: config.tls_handshake_timeout(),
            idle_timeout: config.idle_timeout(),
            max_header_bytes: config.limits.max_header_bytes,
            trusted_proxies: Vec::new(),
            proxy_protocol: false,
            shutdown_grace: config.shutdown_grace(),
        }
    }
}

/// What is known about the connection a request arrived on. Inserted into
/// every request's extensions: extract it with `Extension<ConnInfo>`.
///
/// Addresses are canonical: an IPv4 client on a dual-stack socket appears as
/// IPv4, not as `::ffff:a.b.c.d`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// The socket peer: whoever opened the TCP connection.
    pub peer: SocketAddr,
    /// What the PROXY protocol header a trusted peer sent on this
    /// connection said; `None` when none was read.
    pub proxied: Option<Proxied>,
    /// The local address the connection was accepted on.
    pub local: SocketAddr,
    /// TLS details; `None` on plain HTTP.
    pub tls: Option<TlsInfo>,
}

/// What a trusted peer's PROXY protocol header said about the client.
///
/// A header without an address is kept apart from no header at all: either
/// way the socket peer stands for the client, but behind a PROXY header the
/// peer is a layer 4 proxy, which passes the client's HTTP headers on
/// untouched, so its forwarding headers are the client's own word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxied {
    /// The client's address (TCP over IPv4 or IPv6).
    Client(SocketAddr),
    /// No address: `LOCAL` (the proxy's own health check), `UNKNOWN`, or a
    /// v2 header for `AF_UNSPEC` or a Unix socket.
    NoAddress,
}

impl Proxied {
    /// The client's address, when the header named one.
    pub fn client(self) -> Option<SocketAddr> {
        match self {
            Self::Client(addr) => Some(addr),
            Self::NoAddress => None,
        }
    }
}

/// TLS details of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// Protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// The server name the client asked for (SNI).
    pub sni: Option<String>,
    /// Whether the client presented a certificate (which the configured
    /// client CA then verified).
    pub client_certificate: bool,
}

impl ConnInfo {
    /// The client's address: the PROXY header's source when there is one,
    /// else the socket peer.
    pub fn client(&self) -> SocketAddr {
        self.proxied_client().unwrap_or(self.peer)
    }

    /// The client's address from the PROXY header, when it named one.
    pub fn proxied_client(&self) -> Option<SocketAddr> {
        self.proxied.and_then(Proxied::client)
    }

    /// Whether the socket peer lies in one of `trusted` (so its forwarding
    /// headers may be believed).
    pub fn is_trusted_proxy(&self, trusted: &[IpNet]) -> bool {
        is_trusted(self.peer, trusted)
    }
}

fn is_trusted(peer: SocketAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&peer.ip()))
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Connection-level events, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListenerEvent {
    /// A connection was accepted (and counts against the cap until
    /// [`ListenerEvent::Closed`]).
    Accepted,
    /// A connection was closed right after accept: the cap was reached.
    RefusedAtCap,
    /// A connection was closed before being served: its source prefix had
    /// its share of the connections already.
    RefusedAtPrefixCap,
    /// The TLS handshake failed.
    TlsHandshakeFailed,
    /// The TLS handshake did not finish in time.
    TlsHandshakeTimedOut,
    /// A required PROXY header was malformed, missing or late.
    ProxyHeaderRejected,
    /// A request head did not arrive in time (slowloris, or an idle
    /// keep-alive connection).
    HeaderReadTimedOut,
    /// Nothing moved on the connection for the idle timeout.
    IdleTimedOut,
    /// The connection was still busy when the shutdown grace period ended.
    ForceClosed,
    /// An accepted connection ended, for whatever reason.
    Closed,
}

/// Receives [`ListenerEvent`]s; implemented by the metrics module.
pub trait ListenerObserver: Send + Sync {
    /// Called once per event; must not block.
    fn on_event(&self, event: ListenerEvent, peer: SocketAddr);
}

/// Binds a listener, with an error that names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// Everything a connection task needs.
struct Shared {
    options: ListenerOptions,
    tls: Option<TlsAcceptor>,
    http: hyper::server::conn::http1::Builder,
    router: Router,
    observer: Option<Arc<dyn ListenerObserver>>,
    local: SocketAddr,
    prefixes: Arc<PrefixConnections>,
}

/// Open connections per source prefix, so that one source (a flooder, or
/// clients that open connections and never finish their handshake) cannot
/// hold every connection the listener takes.
#[derive(Debug)]
struct PrefixConnections {
    limit: usize,
    open: std::sync::Mutex<std::collections::HashMap<IpNet, usize>>,
}

/// One connection's place in its prefix's count; given back on drop.
struct PrefixSlot {
    owner: Arc<PrefixConnections>,
    prefix: IpNet,
}

impl PrefixConnections {
    fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// A place for a connection from `ip`, or `None` when its prefix has
    /// `limit` open already.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<PrefixSlot> {
        let prefix = crate::traffic::source_prefix(ip);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(prefix).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(PrefixSlot {
            owner: Arc::clone(self),
            prefix,
        })
    }
}

impl Drop for PrefixSlot {
    fn drop(&mut self) {
        let mut open = self
            .owner
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.prefix) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.prefix);
            }
        }
    }
}

impl Shared {
    fn event(&self, event: ListenerEvent, peer: SocketAddr) {
        if let Some(o) = &self.observer {
            o.on_event(event, peer);
        }
    }
}

/// Serves `router` on `listener` (HTTPS when `tls` is given) until
/// `shutdown` fires, then stops accepting, closes the listening socket,
/// lets in-flight requests finish for `options.shutdown_grace`, cuts what is
/// left, and returns once every connection is gone.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    options: ListenerOptions,
    router: Router,
    shutdown: CancellationToken,
    observer: Option<Arc<dyn ListenerObserver>>,
) -> Result<(), Error> {
    let local = listener.local_addr().map_err(|source| Error::Io {
        what: "reading the listener's address".to_owned(),
        source,
    })?;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Some(options.header_read_timeout))
        .max_buf_size(options.max_header_bytes.max(HYPER_MIN_BUF))
        .keep_alive(true);
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let grace = options.shutdown_grace;
    let prefixes = PrefixConnections::new(options.max_connections_per_prefix);
    let shared = Arc::new(Shared {
        options,
        tls: tls.map(TlsAcceptor::from),
        http,
        router,
        observer,
        local,
        prefixes,
    });
    let graceful = GracefulShutdown::new();
    let force = CancellationToken::new();
    let tracker = TaskTracker::new();

    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of
                // spinning; the listener itself is still fine.
                tracing::warn!(%local, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = canonical(peer);
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            shared.event(ListenerEvent::RefusedAtCap, peer);
            tracing::debug!(%peer, "connection refused: connection cap reached");
            drop(stream);
            continue;
        };
        // A trusted proxy's connections carry many clients: they are
        // counted by the client its PROXY header names, or not at all.
        let slot = if is_trusted(peer, &shared.options.trusted_proxies) {
            None
        } else {
            let Some(slot) = shared.prefixes.enter(peer.ip()) else {
                shared.event(ListenerEvent::RefusedAtPrefixCap, peer);
                tracing::debug!(%peer, "connection refused: its prefix has its share of connections");
                drop(stream);
                continue;
            };
            Some(slot)
        };
        shared.event(ListenerEvent::Accepted, peer);
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let watcher = graceful.watcher();
        let shutdown = shutdown.clone();
        let force = force.clone();
        tracker.spawn(async move {
            let outcome = tokio::select! {
                () = force.cancelled() => Some(ListenerEvent::ForceClosed),
                e = connection(&shared, stream, peer, watcher, &shutdown) => e,
            };
            if let Some(event) = outcome {
                shared.event(event, peer);
            }
            shared.event(ListenerEvent::Closed, peer);
            drop(slot);
            drop(permit);
        });
    }
    // New connections are refused from here on.
    drop(listener);
    tracker.close();
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            %local,
            connections = tracker.len(),
            "shutdown grace period over; closing the connections still busy"
        );
        force.cancel();
    }
    tracker.wait().await;
    Ok(())
}

/// Drives one connection; returns the event that ended it, if notable.
async fn connection(
    shared: &Shared,
    mut stream: TcpStream,
    peer: SocketAddr,
    watcher: Watcher,
    shutdown: &CancellationToken,
) -> Option<ListenerEvent> {
    let options = &shared.options;
    let mut proxied = None;
    let mut replay = Vec::new();
    // The client's place in its prefix's count, when a PROXY header names it.
    let mut client_slot: Option<PrefixSlot> = None;
    if options.proxy_protocol && is_trusted(peer, &options.trusted_proxies) {
        let read = read_proxy_header(&mut stream, options.header_read_timeout);
        let result = tokio::select! {
            () = shutdown.cancelled() => return None,
            r = read => r,
        };
        match result {
            Ok((header, rest)) => {
                let source = header.addresses.map(|a| canonical(a.source));
                proxied = Some(source.map_or(Proxied::NoAddress, Proxied::Client));
                if let Some(client) = source.filter(|s| !s.ip().is_unspecified()) {
                    let Some(slot) = shared.prefixes.enter(client.ip()) else {
                        tracing::debug!(%peer, %client, "connection closed: the client's prefix has its share of connections");
                        return Some(ListenerEvent::RefusedAtPrefixCap);
                    };
                    // Held until the connection ends.
                    client_slot.replace(slot);
                }
                // Ingest does not believe such a source (see
                // `egress_address`); said here once per connection, as it
                // points at the proxy's configuration.
                if let Some(source) = source.filter(|s| s.ip().is_unspecified() || s.port() == 0) {
                    tracing::warn!(
                        %peer,
                        %source,
                        "the trusted proxy's PROXY header names a source no client can have; \
                         an unspecified address is not believed, a port 0 is recorded as none"
                    );
                }
                replay = rest;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection closed: bad PROXY header");
                return Some(ListenerEvent::ProxyHeaderRejected);
            }
        }
    }
    let in_flight = Arc::new(AtomicUsize::new(0));
    let io = ConnIo::new(stream, replay, options.idle_timeout, Arc::clone(&in_flight));
    let mut info = ConnInfo {
        peer,
        proxied,
        local: shared.local,
        tls: None,
    };
    let Some(acceptor) = &shared.tls else {
        return serve_http(shared, io, info, in_flight, watcher).await;
    };
    let handshake = tokio::time::timeout(options.tls_handshake_timeout, acceptor.accept(io));
    let result = tokio::select! {
        () = shutdown.cancelled() => return None,
        r = handshake => r,
    };
    let tls = match result {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return Some(ListenerEvent::TlsHandshakeFailed);
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return Some(ListenerEvent::TlsHandshakeTimedOut);
        }
    };
    let session = tls.get_ref().1;
    info.tls = Some(TlsInfo {
        version: match session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
            other => format!("{other:?}"),
        },
        sni: session.server_name().map(str::to_owned),
        client_certificate: session.peer_certificates().is_some_and(|c| !c.is_empty()),
    });
    serve_http(shared, tls, info, in_flight, watcher).await
}

async fn serve_http<I>(
    shared: &Shared,
    io: I,
    info: ConnInfo,
    in_flight: Arc<AtomicUsize>,
    watcher: Watcher,
) -> Option<ListenerEvent>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = info.peer;
    let router = shared.router.clone();
    let max_head = shared.options.max_header_bytes;
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let router = router.clone();
        let guard = InFlight::new(Arc::clone(&in_flight));
        req.extensions_mut().insert(info.clone());
        async move {
            let _guard = guard;
            if head_size(&req) > max_head {
                return Ok::<Response, Infallible>(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.into_response(),
                );
            }
            router.oneshot(req).await
        }
    });
    let conn = shared.http.serve_connection(TokioIo::new(io), service);
    match watcher.watch(conn).await {
        Ok(()) => None,
        Err(e) if e.is_timeout() => {
            tracing::debug!(%peer, "connection closed: request head not received in time");
            Some(ListenerEvent::HeaderReadTimedOut)
        }
        Err(e) => {
            let idle = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<io::Error>())
                .is_some_and(|io| io.kind() == io::ErrorKind::TimedOut);
            tracing::debug!(%peer, error = %e, "connection ended with an error");
            idle.then_some(ListenerEvent::IdleTimedOut)
        }
    }
}

/// Size of the request head as sent, near enough: request line and headers
/// with their separators.
fn head_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri().path_and_query().map_or(1, |pq| pq.as_str().len());
    let line = req.method().as_str().len() + uri + " HTTP/1.1\r\n".len() + 1;
    req.headers().iter().fold(line, |n, (name, value)| {
        n + name.as_str().len() + value.len() + 4
    }) + 2
}

/// Counts a request as in flight for as long as its handler runs.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TCP stream, replaying bytes read past a PROXY header first, and
/// failing reads and writes with `TimedOut` once nothing has moved for the
/// idle timeout while no request is in flight.
struct ConnIo {
    inner: TcpStream,
    replay: Vec<u8>,
    replay_pos: usize,
    idle_timeout: Duration,
    last_activity: Instant,
    /// Armed lazily; when it fires the deadline is recomputed from
    /// `last_activity`, so traffic costs no timer resets.
    deadline: Pin<Box<Sleep>>,
    in_flight: Arc<AtomicUsize>,
}

impl ConnIo {
    fn new(
        inner: TcpStream,
        replay: Vec<u8>,
        idle_timeout: Duration,
        in_flight: Arc<AtomicUsize>,
    ) -> Self {
        let now = Instant::now();
        Self {
            inner,
            replay,
            replay_pos: 0,
            idle_timeout,
            last_activity: now,
            deadline: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            in_flight,
        }
    }

    fn touch(&mut self) {
        self.last_activity = Instant::now();
    }

    /// Called when the inner stream is pending: an error once idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if self.in_flight.load(Ordering::Relaxed) > 0 {
                // A handler at work is the request timeout's business.
                self.last_activity = now;
            }
            let due = self.last_activity + self.idle_timeout;
            if now >= due {
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ));
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(rest) = this.replay.get(this.replay_pos..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.replay_pos += n;
            if this.replay_pos >= this.replay.len() {
                this.replay = Vec::new();
                this.replay_pos = 0;
            }
            this.touch();
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    this.touch();
                }
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_idle(cx).map(Err),
            ready @ Poll::Ready(_) => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_shutdown(cx) {
            Poll::Pending => this.poll_idle(cx).map(Err),
            ready @ Poll::Ready(_) => ready,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_size_counts_line_and_headers() {
        let req = Request::get("/abc?x=1")
            .header("host", "example")
            .body(())
            .unwrap();
        // "GET /abc?x=1 HTTP/1.1\r\n" + "host: example\r\n" + "\r\n"
        assert_eq!(head_size(&req), 23 + 15 + 2);
    }

    #[test]
    fn trust_and_client_address() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut info = ConnInfo {
            peer: canonical("[::ffff:10.1.2.3]:5000".parse().unwrap()),
            proxied: None,
            local: "127.0.0.1:1".parse().unwrap(),
            tls: None,
        };
        assert_eq!(info.peer, "10.1.2.3:5000".parse().unwrap());
        assert!(info.is_trusted_proxy(&nets));
        assert_eq!(info.client(), info.peer);
        info.proxied = Some(Proxied::NoAddress);
        assert_eq!(info.client(), info.peer);
        info.proxied = Some(Proxied::Client("198.51.100.4:1234".parse().unwrap()));
        assert_eq!(info.client(), "198.51.100.4:1234".parse().unwrap());
        info.peer = "192.0.2.1:1".parse().unwrap();
        assert!(!info.is_trusted_proxy(&nets));
    }
}
