//! The listener over real sockets: HTTPS, client certificates, connection
//! cap, slowloris and handshake deadlines, head size, PROXY protocol and
//! graceful shutdown.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers fail the test on any setup error"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Extension, Router};
use lineprobe_collector::{
    CertStore, ConnInfo, ListenerEvent, ListenerObserver, ListenerOptions, Proxied, TlsConfig,
    serve,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

const BOUND: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Events(Mutex<Vec<ListenerEvent>>);

impl Events {
    fn count(&self, e: ListenerEvent) -> usize {
        self.0.lock().unwrap().iter().filter(|x| **x == e).count()
    }
}

impl ListenerObserver for Events {
    fn on_event(&self, event: ListenerEvent, _peer: SocketAddr) {
        self.0.lock().unwrap().push(event);
    }
}

/// The test handler shows what the listener put into the request.
async fn whoami(Extension(info): Extension<ConnInfo>) -> String {
    format!(
        "peer={} proxied={} client={} tls={} sni={} client_cert={}",
        info.peer,
        match info.proxied {
            None => "none".to_owned(),
            Some(Proxied::NoAddress) => "no-address".to_owned(),
            Some(Proxied::Client(a)) => a.to_string(),
        },
        info.client(),
        info.tls.as_ref().map_or("none", |t| t.version.as_str()),
        info.tls
            .as_ref()
            .and_then(|t| t.sni.clone())
            .unwrap_or_else(|| "none".to_owned()),
        info.tls.as_ref().is_some_and(|t| t.client_certificate),
    )
}

fn router() -> Router {
    Router::new()
        .route("/", get(whoami))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow done"
            }),
        )
        .route(
            "/very-slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "never"
            }),
        )
}

fn options() -> ListenerOptions {
    ListenerOptions {
        max_connections: 64,
        max_connections_per_prefix: 64,
        header_read_timeout: Duration::from_secs(5),
        tls_handshake_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(30),
        max_header_bytes: 16 * 1024,
        trusted_proxies: Vec::new(),
        proxy_protocol: false,
        shutdown_grace: Duration::from_secs(5),
    }
}

struct Server {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), lineprobe_collector::Error>>,
    events: Arc<Events>,
}

async fn start(tls: Option<Arc<rustls::ServerConfig>>, options: ListenerOptions) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let events = Arc::new(Events::default());
    let observer: Arc<dyn ListenerObserver> = events.clone();
    let task = tokio::spawn(serve(
        listener,
        tls,
        options,
        router(),
        shutdown.clone(),
        Some(observer),
    ));
    Server {
        addr,
        shutdown,
        task,
        events,
    }
}

/// Sends raw bytes and reads until the server closes; the whole exchange
/// must end within `within`.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8], within: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    read_to_close(&mut s, within).await
}

async fn read_to_close(s: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let r = timeout(within, s.read_to_end(&mut out))
        .await
        .expect("the server did not close the connection in time");
    // A reset after unread input counts as closed too.
    if let Err(e) = r {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    String::from_utf8_lossy(&out).into_owned()
}

const GET_CLOSE: &[u8] = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";

fn generated_store(dir: &Path) -> CertStore {
    CertStore::load_or_generate(&TlsConfig::default(), dir).unwrap()
}

fn https_client(dir: &Path, addr: SocketAddr) -> reqwest::ClientBuilder {
    let pem = std::fs::read(dir.join("tls/cert.pem")).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve("localhost", addr)
        .timeout(BOUND)
}

#[tokio::test]
async fn https_with_the_generated_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let store = generated_store(dir.path());
    let server = start(Some(store.server_config(None).unwrap()), options()).await;
    let client = https_client(dir.path(), server.addr).build().unwrap();
    let url = format!("https://localhost:{}/", server.addr.port());
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(body.contains("tls=TLSv1.3"), "{body}");
    assert!(body.contains("sni=localhost"), "{body}");
    assert!(body.contains("proxied=none"), "{body}");
    assert!(body.contains("client_cert=false"), "{body}");

    // Plain HTTP on the TLS port is a failed handshake, counted.
    let out = raw_exchange(server.addr, GET_CLOSE, BOUND).await;
    assert!(!out.contains("200"), "{out}");
    assert_eq!(server.events.count(ListenerEvent::TlsHandshakeFailed), 1);
    server.shutdown.cancel();
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

struct ClientPki {
    ca_file: std::path::PathBuf,
    identity_pem: Vec<u8>,
    stranger_pem: Vec<u8>,
}

fn client_pki(dir: &Path) -> ClientPki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        (cert, Issuer::new(params, key))
    };
    let leaf = |issuer: &Issuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["puller.internal".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, issuer).unwrap();
        format!("{}{}", cert.pem(), key.serialize_pem()).into_bytes()
    };
    let (ca_cert, ca_issuer) = ca("lineprobe test client CA");
    let (_other_cert, other_issuer) = ca("someone else's CA");
    let ca_file = dir.join("client-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    ClientPki {
        ca_file,
        identity_pem: leaf(&ca_issuer),
        stranger_pem: leaf(&other_issuer),
    }
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = generated_store(dir.path());
    let pki = client_pki(dir.path());
    let config = store.server_config(Some(&pki.ca_file)).unwrap();
    let server = start(Some(config), options()).await;
    let url = format!("https://localhost:{}/", server.addr.port());

    let anonymous = https_client(dir.path(), server.addr).build().unwrap();
    assert!(anonymous.get(&url).send().await.is_err());

    let stranger = https_client(dir.path(), server.addr)
        .identity(reqwest::Identity::from_pem(&pki.stranger_pem).unwrap())
        .build()
        .unwrap();
    assert!(stranger.get(&url).send().await.is_err());

    let member = https_client(dir.path(), server.addr)
        .identity(reqwest::Identity::from_pem(&pki.identity_pem).unwrap())
        .build()
        .unwrap();
    let resp = member.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("client_cert=true"));
    assert!(server.events.count(ListenerEvent::TlsHandshakeFailed) >= 2);
    server.shutdown.cancel();
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn over_the_cap_a_connection_is_closed_at_once() {
    let server = start(
        None,
        ListenerOptions {
            max_connections: 2,
            ..options()
        },
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Let the server accept both before the third arrives.
    timeout(BOUND, async {
        while server.events.count(ListenerEvent::Accepted) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let started = Instant::now();
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    let out = read_to_close(&mut extra, Duration::from_secs(2)).await;
    assert!(out.is_empty());
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(server.events.count(ListenerEvent::RefusedAtCap), 1);

    // A freed slot is usable again.
    drop(held.pop());
    timeout(BOUND, async {
        while server.events.count(ListenerEvent::Closed) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let out = raw_exchange(server.addr, GET_CLOSE, BOUND).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    server.shutdown.cancel();
    drop(held);
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

/// A TCP connection to `addr` from the local address `from` (any of
/// 127.0.0.0/8 is this host).
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Waits until `event` was seen `n` times.
async fn seen(server: &Server, event: ListenerEvent, n: usize) {
    timeout(BOUND, async {
        while server.events.count(event) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn one_prefix_gets_only_its_share_of_the_connections() {
    let server = start(
        None,
        ListenerOptions {
            max_connections: 64,
            max_connections_per_prefix: 2,
            ..options()
        },
    )
    .await;
    let mut held = vec![
        connect_from([127, 0, 0, 1], server.addr).await,
        connect_from([127, 0, 0, 2], server.addr).await,
    ];
    seen(&server, ListenerEvent::Accepted, 2).await;
    // A third from the same /24 is closed at once; one from another is served.
    let mut extra = connect_from([127, 0, 0, 3], server.addr).await;
    assert!(
        read_to_close(&mut extra, Duration::from_secs(2))
            .await
            .is_empty()
    );
    assert_eq!(server.events.count(ListenerEvent::RefusedAtPrefixCap), 1);
    let mut other = connect_from([127, 0, 1, 1], server.addr).await;
    other.write_all(GET_CLOSE).await.unwrap();
    let out = read_to_close(&mut other, BOUND).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // A closed connection gives its place back.
    drop(held.pop());
    seen(&server, ListenerEvent::Closed, 2).await;
    let mut again = connect_from([127, 0, 0, 4], server.addr).await;
    again.write_all(GET_CLOSE).await.unwrap();
    let out = read_to_close(&mut again, BOUND).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    server.shutdown.cancel();
    drop(held);
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

/// Behind a PROXY-protocol proxy the client's prefix is counted, not the
/// proxy's: the proxy may hold many connections, one client only its share.
#[tokio::test]
async fn behind_a_proxy_the_clients_prefix_is_counted() {
    let server = start(
        None,
        ListenerOptions {
            max_connections_per_prefix: 1,
            ..proxy_options("127.0.0.1/32")
        },
    )
    .await;
    let header = |client: &str| format!("PROXY TCP4 {client} 127.0.0.1 40000 80\r\n").into_bytes();
    // One connection of 198.51.100.7 held open (no request yet).
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    first.write_all(&header("198.51.100.7")).await.unwrap();
    seen(&server, ListenerEvent::Accepted, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another of the same client's /24 is closed...
    let out = raw_exchange(
        server.addr,
        &[header("198.51.100.8"), GET_CLOSE.to_vec()].concat(),
        BOUND,
    )
    .await;
    assert!(out.is_empty(), "{out}");
    seen(&server, ListenerEvent::RefusedAtPrefixCap, 1).await;
    // ...while other clients through the same proxy are served.
    for client in ["203.0.113.9", "192.0.2.1"] {
        let out = raw_exchange(
            server.addr,
            &[header(client), GET_CLOSE.to_vec()].concat(),
            BOUND,
        )
        .await;
        assert!(out.starts_with("HTTP/1.1 200"), "{client}: {out}");
    }
    server.shutdown.cancel();
    drop(first);
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn a_slowloris_head_is_cut_off_after_the_header_read_timeout() {
    let server = start(
        None,
        ListenerOptions {
            header_read_timeout: Duration::from_millis(400),
            ..options()
        },
    )
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = s.into_split();
    let trickle = tokio::spawn(async move {
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if wr
                .write_all(format!("X-Slow-{i}: a\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let _ = timeout(Duration::from_secs(3), rd.read_to_end(&mut out))
        .await
        .expect("slowloris connection still open");
    let elapsed = started.elapsed();
    trickle.abort();
    assert!(elapsed >= Duration::from_millis(350), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert!(!String::from_utf8_lossy(&out).contains(" 200 "));
    timeout(BOUND, async {
        while server.events.count(ListenerEvent::HeaderReadTimedOut) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    server.shutdown.cancel();
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn a_silent_client_is_cut_off_after_the_tls_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = generated_store(dir.path());
    let server = start(
        Some(store.server_config(None).unwrap()),
        ListenerOptions {
            tls_handshake_timeout: Duration::from_millis(300),
            ..options()
        },
    )
    .await;
    let started = Instant::now();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let out = read_to_close(&mut s, Duration::from_secs(3)).await;
    assert!(out.is_empty());
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(server.events.count(ListenerEvent::TlsHandshakeTimedOut), 1);
    server.shutdown.cancel();
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn a_connection_where_nothing_moves_is_closed_after_the_idle_timeout() {
    let server = start(
        None,
        ListenerOptions {
            idle_timeout: Duration::from_millis(300),
            ..options()
        },
    )
    .await;
    let started = Instant::now();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    read_to_close(&mut s, Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(250), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");

    // A handler busy for longer than the idle timeout is not cut off.
    let out = raw_exchange(
        server.addr,
        b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        BOUND,
    )
    .await;
    assert!(out.ends_with("slow done"), "{out}");
    server.shutdown.cancel();
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn oversized_heads_get_431() {
    let server = start(
        None,
        ListenerOptions {
            max_header_bytes: 2048,
            ..options()
        },
    )
    .await;
    let ok = raw_exchange(server.addr, GET_CLOSE, BOUND).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    for size in [3000, 100_000] {
        let head = format!(
            "GET / HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(size)
        );
        let out = raw_exchange(server.addr, head.as_bytes(), BOUND).await;
        assert!(
            out.is_empty() || out.starts_with("HTTP/1.1 431"),
            "{size}: {out}"
        );
        if size == 3000 {
            assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        }
    }
    server.shutdown.cancel();
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

fn proxy_options(trusted: &str) -> ListenerOptions {
    ListenerOptions {
        trusted_proxies: vec![trusted.parse().unwrap()],
        proxy_protocol: true,
        header_read_timeout: Duration::from_millis(500),
        ..options()
    }
}

fn proxy_v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut v = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v.extend_from_slice(&[0x21, 0x11, 0, 12 + 7]);
    v.extend_from_slice(&src);
    v.extend_from_slice(&[127, 0, 0, 1]);
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&80u16.to_be_bytes());
    // A TLV (PP2_TYPE_AUTHORITY "test"), which must be skipped.
    v.extend_from_slice(&[0x02, 0x00, 0x04]);
    v.extend_from_slice(b"test");
    v
}

#[tokio::test]
async fn proxy_headers_from_a_trusted_peer_name_the_client() {
    let server = start(None, proxy_options("127.0.0.0/8")).await;
    let v1 = [
        &b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n"[..],
        GET_CLOSE,
    ]
    .concat();
    let out = raw_exchange(server.addr, &v1, BOUND).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("proxied=203.0.113.9:40000"), "{out}");
    assert!(out.contains("client=203.0.113.9:40000"), "{out}");
    assert!(out.contains("peer=127.0.0.1:"), "{out}");

    let v6 = [&b"PROXY TCP6 2001:db8::5 ::1 40001 443\r\n"[..], GET_CLOSE].concat();
    let out = raw_exchange(server.addr, &v6, BOUND).await;
    assert!(out.contains("proxied=[2001:db8::5]:40001"), "{out}");

    let v2 = [
        proxy_v2_tcp4([198, 51, 100, 23], 50000).as_slice(),
        GET_CLOSE,
    ]
    .concat();
    let out = raw_exchange(server.addr, &v2, BOUND).await;
    assert!(out.contains("proxied=198.51.100.23:50000"), "{out}");

    // The header split over several writes still parses.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    for part in v1.chunks(7) {
        s.write_all(part).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let out = read_to_close(&mut s, BOUND).await;
    assert!(out.contains("proxied=203.0.113.9:40000"), "{out}");

    // LOCAL (a health check by the proxy itself): served, no client
    // address, but known to have come with a PROXY header.
    let local = [&b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00"[..], GET_CLOSE].concat();
    let out = raw_exchange(server.addr, &local, BOUND).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("proxied=no-address"), "{out}");
    assert!(out.contains("client=127.0.0.1:"), "{out}");
    // UNKNOWN likewise.
    let unknown = [&b"PROXY UNKNOWN\r\n"[..], GET_CLOSE].concat();
    let out = raw_exchange(server.addr, &unknown, BOUND).await;
    assert!(out.contains("proxied=no-address"), "{out}");
    server.shutdown.cancel();
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn bad_or_missing_proxy_headers_from_a_trusted_peer_close_the_connection() {
    let server = start(None, proxy_options("127.0.0.1/32")).await;
    for bad in [
        &b"PROXY TCP4 203.0.113.9 127.0.0.1 99999 80\r\nGET / HTTP/1.1\r\n\r\n"[..],
        b"PROXY TCP4 203.0.113.9\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x02ab",
        GET_CLOSE,
    ] {
        let out = raw_exchange(server.addr, bad, BOUND).await;
        assert!(out.is_empty(), "{out}");
    }
    // Nothing at all: closed after the header read timeout.
    let started = Instant::now();
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        read_to_close(&mut s, Duration::from_secs(3))
            .await
            .is_empty()
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(server.events.count(ListenerEvent::ProxyHeaderRejected), 5);
    server.shutdown.cancel();
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn proxy_headers_from_an_untrusted_peer_are_not_interpreted() {
    let server = start(None, proxy_options("10.0.0.0/8")).await;
    let v1 = [
        &b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\n"[..],
        GET_CLOSE,
    ]
    .concat();
    let out = raw_exchange(server.addr, &v1, BOUND).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    let v2 = [
        proxy_v2_tcp4([198, 51, 100, 23], 50000).as_slice(),
        GET_CLOSE,
    ]
    .concat();
    let out = raw_exchange(server.addr, &v2, BOUND).await;
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(!out.contains("198.51.100.23"), "{out}");

    let out = raw_exchange(server.addr, GET_CLOSE, BOUND).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("proxied=none"), "{out}");
    assert_eq!(server.events.count(ListenerEvent::ProxyHeaderRejected), 0);
    server.shutdown.cancel();
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn proxy_header_before_tls() {
    let dir = tempfile::tempdir().unwrap();
    let store = generated_store(dir.path());
    let server = start(
        Some(store.server_config(None).unwrap()),
        proxy_options("127.0.0.0/8"),
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(store.current_chain()[0].clone()).unwrap();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"PROXY TCP4 192.0.2.77 127.0.0.1 1234 443\r\n")
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = timeout(BOUND, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    tls.write_all(GET_CLOSE).await.unwrap();
    let mut out = String::new();
    timeout(BOUND, tls.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert!(out.contains("proxied=192.0.2.77:1234"), "{out}");
    assert!(out.contains("tls=TLSv1.3"), "{out}");
    server.shutdown.cancel();
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish_and_refuses_new_connections() {
    let server = start(None, options()).await;
    let addr = server.addr;
    let in_flight = tokio::spawn(async move {
        raw_exchange(
            addr,
            b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            BOUND,
        )
        .await
    });
    // An idle keep-alive connection must not hold up the shutdown.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.shutdown.cancel();
    let out = in_flight.await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with("slow done"), "{out}");
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
    // Well within the 5 s grace: nothing waited for the idle connection.
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(TcpStream::connect(addr).await.is_err());
    read_to_close(&mut idle, BOUND).await;
    assert_eq!(server.events.count(ListenerEvent::ForceClosed), 0);
}

#[tokio::test]
async fn requests_still_running_after_the_grace_period_are_cut_off() {
    let server = start(
        None,
        ListenerOptions {
            shutdown_grace: Duration::from_millis(200),
            ..options()
        },
    )
    .await;
    let addr = server.addr;
    let stuck = tokio::spawn(async move {
        raw_exchange(
            addr,
            b"GET /very-slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            BOUND,
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    server.shutdown.cancel();
    timeout(BOUND, server.task).await.unwrap().unwrap().unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let out = stuck.await.unwrap();
    assert!(out.is_empty(), "{out}");
    assert_eq!(server.events.count(ListenerEvent::ForceClosed), 1);
}
