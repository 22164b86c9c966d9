//! The `http` source against a real lookup service on 127.0.0.1 (axum on a
//! runtime of its own; the source's lookups block, so they run on the test
//! threads): field mapping, the success check, errors, timeouts, the rate
//! limit, one request per address, the cache and its export, the TOML
//! configuration, the chain, and HTTPS behind a private CA.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

#[path = "../../testsupport/ports.rs"]
mod ports;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use lineprobe_shared::Catalog;
use lineprobe_sync::{
    Anonymous, CacheEntry, ChainConfig, Error, FieldMap, HttpSettings, HttpSource, IpFacts,
    IpSource, IpType, Resolved,
};
use serde_json::json;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::embedded().unwrap())
}

// ───────────────────────────── the test service ────────────────────────────

/// What the service answers for one address.
#[derive(Clone)]
struct Canned {
    status: u16,
    body: String,
    delay: Duration,
}

fn answer(body: &serde_json::Value) -> Canned {
    Canned {
        status: 200,
        body: body.to_string(),
        delay: Duration::ZERO,
    }
}

fn raw(status: u16, body: &str) -> Canned {
    Canned {
        status,
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

#[derive(Default)]
struct Served {
    answers: Mutex<HashMap<String, Canned>>,
    hits: Mutex<HashMap<String, usize>>,
    headers: Mutex<Vec<HeaderMap>>,
}

/// A lookup service at `/lookup/{ip}`: canned answers (404 for anything
/// else), counting the requests per address.
#[derive(Clone)]
struct Service {
    addr: SocketAddr,
    served: Arc<Served>,
}

impl Service {
    fn start() -> Self {
        let served = Arc::new(Served::default());
        let router = Router::new()
            .route("/lookup/{ip}", get(lookup))
            .with_state(Arc::clone(&served));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        spawn_server(move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, router).await.unwrap();
        });
        Self { addr, served }
    }

    fn set(&self, ip: &str, canned: Canned) {
        self.served
            .answers
            .lock()
            .unwrap()
            .insert(ip.to_owned(), canned);
    }

    fn hits(&self, ip: &str) -> usize {
        self.served
            .hits
            .lock()
            .unwrap()
            .get(ip)
            .copied()
            .unwrap_or(0)
    }

    fn total_hits(&self) -> usize {
        self.served.hits.lock().unwrap().values().sum()
    }

    fn url(&self) -> String {
        format!("http://{}/lookup/{{ip}}", self.addr)
    }
}

async fn lookup(
    State(served): State<Arc<Served>>,
    UrlPath(ip): UrlPath<String>,
    headers: HeaderMap,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    *served.hits.lock().unwrap().entry(ip.clone()).or_default() += 1;
    served.headers.lock().unwrap().push(headers);
    let canned = served.answers.lock().unwrap().get(&ip).cloned();
    let canned = canned.unwrap_or_else(|| raw(404, r#"{"error":"not found"}"#));
    if !canned.delay.is_zero() {
        tokio::time::sleep(canned.delay).await;
    }
    (
        StatusCode::from_u16(canned.status).unwrap(),
        [(header::CONTENT_TYPE, "application/json")],
        canned.body,
    )
}

/// Runs a server on a runtime of its own, on a thread of its own, for the
/// rest of the test process.
fn spawn_server<F, Fut>(serve: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(serve());
    });
}

// ──────────────────────────────── sources ──────────────────────────────────

fn fields(toml_text: &str) -> FieldMap {
    toml::from_str(toml_text).unwrap()
}

/// A source on `url` with generous limits unless a test changes them.
fn settings(name: &str, url: &str, map: &str) -> HttpSettings {
    let mut s = HttpSettings::new(name, url, fields(map));
    s.rate_per_sec = 1000.0;
    s.burst = 1000;
    s
}

fn source(s: HttpSettings) -> HttpSource {
    HttpSource::new(s, catalog()).unwrap()
}

fn lookup_err(src: &HttpSource, addr: &str) -> String {
    let e = src.lookup(ip(addr)).unwrap_err();
    assert!(matches!(e, Error::Lookup { .. }), "{e:?}");
    e.to_string()
}

const NESTED: &str = r#"
carrier = ["/data/isp", "/data/org"]
country = "/data/country"
province = "/data/region"
city = "/data/city"
asn = "/data/as"
org = "/data/org"
ip_type = "/data/type"
proxy = "/data/security/proxy"
vpn = "/data/security/vpn"
tor = "/data/security/tor"
hosting = "/data/security/hosting"
"#;

#[test]
fn nested_pointers_map_and_normalise_to_catalog_ids() {
    let svc = Service::start();
    svc.set(
        "203.0.113.1",
        answer(&json!({"code": 0, "data": {
            "country": "中国", "isp": "中国电信", "region": "广东省", "city": "广州市",
            "as": "AS4134 CHINANET-BACKBONE", "org": "Chinanet Guangdong", "type": "家宽",
            "security": {"proxy": 1, "vpn": "no", "tor": false}
        }})),
    );
    // Numbers where text is expected, an organisation string for the
    // carrier, a type spelling nobody knows.
    svc.set(
        "203.0.113.2",
        answer(&json!({"data": {
            "isp": "Guangdong Mobile Communication Co.Ltd.", "region": 44, "city": 440_300,
            "as": 9808, "type": "isp"
        }})),
    );
    // An empty ISP falls through to the next pointer; a city alone gives
    // its province.
    svc.set(
        "203.0.113.3",
        answer(&json!({"data": {
            "country": "CN", "isp": "", "org": "CHINA UNICOM China169 Backbone", "city": "长春",
            "security": {"hosting": "yes"}
        }})),
    );
    // Abroad, a region code is not a province ("SC" is not Sichuan here);
    // a hosting carrier by its AS makes a data centre.
    svc.set(
        "198.51.100.1",
        answer(&json!({"data": {
            "country": "US", "region": "SC", "city": "Columbia", "as": "as37963",
            "org": "Hangzhou Alibaba Advertising Co.,Ltd."
        }})),
    );
    svc.set(
        "198.51.100.2",
        answer(&json!({"data": {"country": "Hong Kong", "isp": "china_mobile"}})),
    );
    let src = source(settings("svc", &svc.url(), NESTED));

    let f = src.lookup(ip("203.0.113.1")).unwrap().unwrap();
    assert_eq!(f.carrier.unwrap().as_str(), "china_telecom");
    assert_eq!(f.province.unwrap().as_str(), "CN-GD");
    assert_eq!(f.city.unwrap().as_str(), "440100");
    assert_eq!(f.asn, Some(4134));
    assert_eq!(f.org.as_deref(), Some("Chinanet Guangdong"));
    assert_eq!(f.ip_type, Some(IpType::Residential));
    assert_eq!(
        f.anonymous,
        Some(Anonymous {
            proxy: true,
            ..Anonymous::default()
        })
    );
    assert_eq!(f.customer, None);

    let f = src.lookup(ip("203.0.113.2")).unwrap().unwrap();
    assert_eq!(f.carrier.unwrap().as_str(), "china_mobile");
    assert_eq!(f.province.unwrap().as_str(), "CN-GD");
    assert_eq!(f.city.unwrap().as_str(), "440300");
    assert_eq!(f.asn, Some(9808));
    assert_eq!(f.ip_type, Some(IpType::Unknown));
    assert_eq!(f.anonymous, None, "no flag raised");

    let f = src.lookup(ip("203.0.113.3")).unwrap().unwrap();
    assert_eq!(f.carrier.unwrap().as_str(), "china_unicom");
    assert_eq!(f.city.unwrap().as_str(), "220100");
    assert_eq!(f.province.unwrap().as_str(), "CN-JL");
    assert!(f.anonymous.unwrap().hosting);

    let f = src.lookup(ip("198.51.100.1")).unwrap().unwrap();
    assert_eq!(f.province, None);
    assert_eq!(f.city, None);
    assert_eq!(f.carrier.unwrap().as_str(), "alibaba_cloud");
    assert_eq!(f.asn, Some(37963));
    assert_eq!(f.ip_type, Some(IpType::Idc));

    let f = src.lookup(ip("198.51.100.2")).unwrap().unwrap();
    assert_eq!(f.province.unwrap().as_str(), "CN-HK");
    assert_eq!(f.carrier.unwrap().as_str(), "china_mobile");

    // IPv6 goes into the URL as written; an IPv4-mapped address as IPv4.
    svc.set("2001:db8::7", answer(&json!({"data": {"as": 4134}})));
    let f = src.lookup(ip("2001:db8::7")).unwrap().unwrap();
    assert_eq!(f.carrier.unwrap().as_str(), "china_telecom");
    let f = src.lookup(ip("::ffff:203.0.113.1")).unwrap().unwrap();
    assert_eq!(f.asn, Some(4134));
    assert_eq!(
        svc.hits("203.0.113.1"),
        1,
        "the mapped form shares the cache"
    );
}

#[test]
fn error_answers_mean_knows_nothing_and_failures_name_source_and_address() {
    let svc = Service::start();
    svc.set(
        "192.0.2.1",
        answer(&json!({"status": "fail", "message": "private range"})),
    );
    svc.set(
        "192.0.2.2",
        answer(&json!({"status": "success", "isp": "China Telecom"})),
    );
    svc.set("192.0.2.3", raw(503, "overloaded,\n try later"));
    svc.set("192.0.2.4", raw(200, "<html>maintenance</html>"));
    svc.set(
        "192.0.2.5",
        answer(&json!({"status": "success", "as": [4134, 4809]})),
    );
    svc.set(
        "192.0.2.6",
        answer(&json!({"status": "success", "proxy": "maybe"})),
    );
    svc.set("192.0.2.7", raw(301, ""));
    // A success with nothing mapped present: knows nothing.
    svc.set(
        "192.0.2.8",
        answer(&json!({"status": "success", "other": 1})),
    );
    svc.set("192.0.2.9", raw(200, &"x".repeat(1024 * 1024 + 10)));

    let mut s = settings(
        "ipsvc",
        &svc.url(),
        "carrier = \"/isp\"\nasn = \"/as\"\nproxy = \"/proxy\"",
    );
    s.success = Some(toml::from_str("pointer = \"/status\"\nequals = \"success\"").unwrap());
    let src = source(s);

    assert_eq!(src.lookup(ip("192.0.2.1")).unwrap(), None);
    let f = src.lookup(ip("192.0.2.2")).unwrap().unwrap();
    assert_eq!(f.carrier.unwrap().as_str(), "china_telecom");
    // 404: the default answer of the test service.
    assert_eq!(src.lookup(ip("192.0.2.200")).unwrap(), None);
    assert_eq!(src.lookup(ip("192.0.2.8")).unwrap(), None);

    let e = lookup_err(&src, "192.0.2.3");
    assert!(
        e.contains("`ipsvc`") && e.contains("192.0.2.3") && e.contains("503"),
        "{e}"
    );
    assert!(e.contains("overloaded, try later"), "{e}");
    let e = lookup_err(&src, "192.0.2.4");
    assert!(e.contains("not JSON"), "{e}");
    let e = lookup_err(&src, "192.0.2.5");
    assert!(
        e.contains("`/as` (asn)") && e.contains("an array") && e.contains("AS4134"),
        "{e}"
    );
    let e = lookup_err(&src, "192.0.2.6");
    assert!(
        e.contains("`/proxy` (proxy)") && e.contains("\"maybe\""),
        "{e}"
    );
    let e = lookup_err(&src, "192.0.2.7");
    assert!(e.contains("301") && e.contains("redirect"), "{e}");
    let e = lookup_err(&src, "192.0.2.9");
    assert!(e.contains("larger than 1024 KiB"), "{e}");

    // "Knows nothing" is cached; failures are asked again.
    for a in ["192.0.2.1", "192.0.2.200", "192.0.2.8"] {
        assert_eq!(src.lookup(ip(a)).unwrap(), None);
        assert_eq!(svc.hits(a), 1, "{a}");
    }
    for a in ["192.0.2.3", "192.0.2.5"] {
        assert!(src.lookup(ip(a)).is_err());
        assert_eq!(svc.hits(a), 2, "{a}");
    }
    assert_eq!(src.requests_sent(), 12);
}

#[test]
fn a_slow_service_times_out_and_the_chain_goes_on_without_it() {
    let svc = Service::start();
    svc.set(
        "203.0.113.50",
        Canned {
            delay: Duration::from_secs(3),
            ..answer(&json!({"isp": "China Telecom"}))
        },
    );
    let mut s = settings("slow-svc", &svc.url(), "carrier = \"/isp\"");
    s.timeout = Duration::from_millis(300);
    let src = source(s);
    let started = Instant::now();
    let e = lookup_err(&src, "203.0.113.50");
    assert!(started.elapsed() < Duration::from_secs(2), "{e}");
    assert!(
        e.contains("`slow-svc`") && e.contains("203.0.113.50") && e.contains("300 ms"),
        "{e}"
    );

    // In a chain the failure is recorded; the plan still answers.
    let cat = catalog();
    let plan = lineprobe_sync::IpPlanSource::from_reader(
        "ipplan",
        "p1",
        "plan.csv",
        "cidr,province\n203.0.113.0/24,江苏\n".as_bytes(),
        &cat,
    )
    .unwrap();
    let mut chain = lineprobe_sync::Chain::new(vec![Box::new(plan)]);
    chain.push(Box::new(src));
    let r = chain.resolve(&cat, ip("203.0.113.50")).unwrap();
    assert_eq!(r.province.unwrap().value.as_str(), "CN-JS");
    assert_eq!(r.carrier, None);
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].source, "slow-svc");
    assert!(r.failures[0].message.contains("300 ms"), "{:?}", r.failures);
}

#[test]
fn a_service_that_trickles_its_answer_is_cut_off_at_the_timeout() {
    // The head at once, then the announced body a byte every 50 ms: each
    // read is quick, the answer never ends in time.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        use std::io::{Read as _, Write as _};
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut request = [0_u8; 4096];
                let _ = conn.read(&mut request);
                let body = format!("{{\"isp\": \"China Telecom\"{}}}", " ".repeat(200));
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for byte in body.bytes() {
                    std::thread::sleep(Duration::from_millis(50));
                    if conn.write_all(&[byte]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut s = settings(
        "trickle",
        &format!("http://{addr}/lookup/{{ip}}"),
        "carrier = \"/isp\"",
    );
    s.timeout = Duration::from_millis(300);
    let src = source(s);
    let started = Instant::now();
    let e = lookup_err(&src, "203.0.113.51");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}: {e}",
        started.elapsed()
    );
    assert!(e.contains("300 ms"), "{e}");
}

#[test]
fn an_overlong_text_attribute_is_a_wrong_answer_not_kept() {
    let svc = Service::start();
    svc.set(
        "203.0.113.52",
        answer(&json!({"isp": "China Telecom", "org": "x".repeat(100_000)})),
    );
    svc.set(
        "203.0.113.53",
        answer(&json!({"isp": "China Telecom", "org": "y".repeat(256)})),
    );
    let src = source(settings(
        "long",
        &svc.url(),
        "carrier = \"/isp\"\norg = \"/org\"",
    ));
    let e = lookup_err(&src, "203.0.113.52");
    assert!(e.contains("at most 256 characters"), "{e}");
    assert!(e.len() < 1000, "the message echoes the value whole: {e}");
    // At the limit it is kept.
    let facts = src.lookup(ip("203.0.113.53")).unwrap().unwrap();
    assert_eq!(facts.org.as_deref().map(str::len), Some(256));
}

#[test]
fn the_rate_limit_holds_across_threads_and_never_waits_past_the_timeout() {
    let svc = Service::start();
    let mut s = settings("limited", &svc.url(), "carrier = \"/isp\"");
    s.rate_per_sec = 20.0;
    s.burst = 2;
    s.timeout = Duration::from_secs(5);
    let src = Arc::new(source(s));
    let n: u32 = 12;
    let started = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let src = Arc::clone(&src);
            std::thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    assert_eq!(
                        src.lookup(ip(&format!("192.0.2.{}", i + 10))).unwrap(),
                        None
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed();
    // (N - burst) / rate = 0.5 s at least; a lower bound only.
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    assert_eq!(svc.total_hits(), 12);

    // A slot further away than the timeout: fail at once, do not queue.
    let mut s = settings("strict", &svc.url(), "carrier = \"/isp\"");
    // The next slot is 10 s away, the timeout 2 s: an answer well inside
    // the timeout did not wait for it, however loaded the machine.
    s.rate_per_sec = 0.1;
    s.burst = 1;
    s.timeout = Duration::from_secs(2);
    let src = source(s);
    assert_eq!(src.lookup(ip("192.0.2.100")).unwrap(), None);
    let started = Instant::now();
    let e = lookup_err(&src, "192.0.2.101");
    assert!(started.elapsed() < Duration::from_millis(1500), "{e}");
    assert!(
        e.contains("`strict`") && e.contains("rate_per_sec") && e.contains("2000 ms"),
        "{e}"
    );
    assert_eq!(svc.hits("192.0.2.101"), 0);
}

#[test]
fn concurrent_lookups_of_one_address_send_one_request() {
    let svc = Service::start();
    svc.set(
        "203.0.113.9",
        Canned {
            delay: Duration::from_millis(300),
            ..answer(&json!({"isp": "中国联通"}))
        },
    );
    svc.set(
        "203.0.113.10",
        Canned {
            delay: Duration::from_millis(300),
            ..raw(500, "")
        },
    );
    let src = Arc::new(source(settings("svc", &svc.url(), "carrier = \"/isp\"")));
    let run = |addr: &'static str| {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let src = Arc::clone(&src);
                std::thread::spawn(move || src.lookup(ip(addr)).map_err(|e| e.to_string()))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    };
    for r in run("203.0.113.9") {
        assert_eq!(
            r.unwrap().unwrap().carrier.unwrap().as_str(),
            "china_unicom"
        );
    }
    assert_eq!(svc.hits("203.0.113.9"), 1);
    // A failure in flight is shared too: one request, eight errors.
    for r in run("203.0.113.10") {
        let e = r.unwrap_err();
        assert!(e.contains("500") && e.contains("203.0.113.10"), "{e}");
    }
    assert_eq!(svc.hits("203.0.113.10"), 1);
}

#[test]
fn answers_expire_by_their_ttl_and_knows_nothing_sooner() {
    let svc = Service::start();
    svc.set("203.0.113.20", answer(&json!({"isp": "China Mobile"})));
    let mut s = settings("svc", &svc.url(), "carrier = \"/isp\"");
    // Wide margins: a busy machine must not make a cached answer expire early.
    s.cache_ttl = Duration::from_secs(4);
    s.negative_ttl = Duration::from_secs(1);
    let src = source(s);
    for _ in 0..3 {
        assert!(src.lookup(ip("203.0.113.20")).unwrap().is_some());
        assert_eq!(src.lookup(ip("203.0.113.21")).unwrap(), None);
    }
    assert_eq!((svc.hits("203.0.113.20"), svc.hits("203.0.113.21")), (1, 1));
    std::thread::sleep(Duration::from_millis(1300));
    assert!(src.lookup(ip("203.0.113.20")).unwrap().is_some());
    assert_eq!(src.lookup(ip("203.0.113.21")).unwrap(), None);
    assert_eq!((svc.hits("203.0.113.20"), svc.hits("203.0.113.21")), (1, 2));
    std::thread::sleep(Duration::from_millis(2900));
    assert!(src.lookup(ip("203.0.113.20")).unwrap().is_some());
    assert_eq!(svc.hits("203.0.113.20"), 2);

    // A TTL of zero turns the cache off.
    let mut s = settings("nocache", &svc.url(), "carrier = \"/isp\"");
    s.cache_ttl = Duration::ZERO;
    s.negative_ttl = Duration::ZERO;
    let src = source(s);
    src.lookup(ip("203.0.113.20")).unwrap();
    src.lookup(ip("203.0.113.20")).unwrap();
    assert_eq!(svc.hits("203.0.113.20"), 4);
    assert!(src.cache_entries().is_empty());
}

#[test]
fn the_cache_exports_as_json_and_preloads_into_a_new_source() {
    let svc = Service::start();
    svc.set(
        "203.0.113.30",
        answer(&json!({"isp": "中国电信", "region": "广东", "city": "广州", "proxy": true})),
    );
    let map = "carrier = \"/isp\"\nprovince = \"/region\"\ncity = \"/city\"\nproxy = \"/proxy\"";
    let first = source(settings("svc", &svc.url(), map));
    let facts = first.lookup(ip("203.0.113.30")).unwrap().unwrap();
    assert_eq!(first.lookup(ip("203.0.113.31")).unwrap(), None);

    let entries = first.cache_entries();
    assert_eq!(entries.len(), 2);
    let text = serde_json::to_string(&entries).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value[0]["ip"], "203.0.113.30");
    assert_eq!(
        value[0]["facts"],
        json!({"carrier": "china_telecom", "province": "CN-GD", "city": "440100",
               "anonymous": {"vpn": false, "proxy": true, "residential_proxy": false,
                             "hosting": false, "tor": false}})
    );
    assert_eq!(value[1]["facts"], serde_json::Value::Null);
    let back: Vec<CacheEntry> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, entries);
    // Unknown fields in stored facts are ignored (a newer writer).
    let newer: IpFacts =
        serde_json::from_str(r#"{"asn":4134,"ip_type":"idc","confidence":0.9}"#).unwrap();
    assert_eq!((newer.asn, newer.ip_type), (Some(4134), Some(IpType::Idc)));

    // A restart: the new source answers from the preloaded cache.
    let second = source(settings("svc", &svc.url(), map));
    assert_eq!(second.cache().fingerprint(), first.cache().fingerprint());
    let now = chrono::Utc::now();
    let mut stale = back.clone();
    stale.push(CacheEntry {
        ip: ip("203.0.113.32"),
        facts: None,
        fetched_at: now - chrono::TimeDelta::days(3),
        expires_at: now - chrono::TimeDelta::days(1),
    });
    // Claims a long life, but this source keeps answers a day at most.
    stale.push(CacheEntry {
        ip: ip("203.0.113.33"),
        facts: Some(facts.clone()),
        fetched_at: now - chrono::TimeDelta::hours(25),
        expires_at: now + chrono::TimeDelta::days(30),
    });
    assert_eq!(second.preload(stale), 2);
    assert_eq!(second.lookup(ip("203.0.113.30")).unwrap(), Some(facts));
    assert_eq!(second.lookup(ip("203.0.113.31")).unwrap(), None);
    assert_eq!(svc.total_hits(), 2, "answered from the preloaded cache");
    second.lookup(ip("203.0.113.33")).unwrap();
    assert_eq!(
        svc.hits("203.0.113.33"),
        1,
        "an outlived entry is asked again"
    );

    // Another mapping, another fingerprint: its cache is not this one's.
    let other = source(settings("svc", &svc.url(), "carrier = \"/org\""));
    assert_ne!(other.cache().fingerprint(), first.cache().fingerprint());

    // Another catalog too: the cached answers are mapped to its ids.
    let dir = tempfile::tempdir().unwrap();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/catalog");
    for file in ["carriers.toml", "provinces.toml", "cities.toml"] {
        let mut text = std::fs::read_to_string(repo.join(file)).unwrap();
        if file == "carriers.toml" {
            text = text.replacen(
                "name_en = \"China Telecom\"",
                "name_en = \"China Telecom Corporation\"",
                1,
            );
        }
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    let edited = Arc::new(Catalog::load_dir(dir.path()).unwrap());
    let recatalogued = HttpSource::new(settings("svc", &svc.url(), map), edited).unwrap();
    assert_ne!(
        recatalogued.cache().fingerprint(),
        first.cache().fingerprint()
    );
}

#[test]
fn headers_carry_values_from_the_environment() {
    let svc = Service::start();
    // Cargo sets these for the test process.
    let pkg = std::env::var("CARGO_PKG_NAME").unwrap();
    let version = std::env::var("CARGO_PKG_VERSION").unwrap();
    let mut s = settings("svc", &svc.url(), "carrier = \"/isp\"");
    s.headers
        .insert("X-Api-Key".to_owned(), "k-${CARGO_PKG_NAME}".to_owned());
    s.token_env = Some("CARGO_PKG_VERSION".to_owned());
    let src = source(s);
    // Credentials stay out of debug output.
    assert!(!format!("{src:?}").contains(&pkg), "{src:?}");
    src.lookup(ip("192.0.2.1")).unwrap();
    let seen = svc.served.headers.lock().unwrap()[0].clone();
    assert_eq!(seen["x-api-key"], format!("k-{pkg}").as_str());
    assert_eq!(seen["authorization"], format!("Bearer {version}").as_str());
    assert!(
        seen["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("lineprobe-sync/")
    );

    let mut s = settings("svc", &svc.url(), "carrier = \"/isp\"");
    s.headers.insert(
        "X-Api-Key".to_owned(),
        "${LINEPROBE_SURELY_UNSET_VARIABLE}".to_owned(),
    );
    let e = HttpSource::new(s, catalog()).unwrap_err().to_string();
    assert!(
        e.contains("LINEPROBE_SURELY_UNSET_VARIABLE") && e.contains("X-Api-Key"),
        "{e}"
    );
}

// ─────────────────────────────── configuration ─────────────────────────────

fn config_err(text: &str) -> String {
    let e = match ChainConfig::from_toml("chain.toml", text) {
        Ok(c) => c.validate().unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(e, Error::SourceData { .. }), "{e:?}");
    e.to_string()
}

#[test]
fn a_full_http_source_parses_and_validates() {
    let ok = ChainConfig::from_toml(
        "chain.toml",
        r#"
[[source]]
kind = "http"
name = "ip-api"
url = "https://lookup.example/json/{ip}?key=${LOOKUP_KEY}"
timeout_ms = 500
rate_per_sec = 0.75
cache_ttl_s = 600
negative_ttl_s = 60
headers = { "X-Client" = "lineprobe" }
success = { pointer = "/status", equals = "success" }
[source.fields]
carrier = ["/isp", "/org"]
asn = "/as"
proxy = "/security/proxy"
"#,
    )
    .unwrap();
    ok.validate().unwrap();
    let s = &ok.sources[0];
    assert_eq!(s.timeout_ms, Some(500));
    assert_eq!(
        s.fields
            .as_ref()
            .unwrap()
            .carrier
            .as_ref()
            .unwrap()
            .as_slice()[1]
            .as_str(),
        "/org"
    );
}

#[test]
fn the_address_is_only_sent_to_the_configured_host_in_the_path_or_query() {
    let with_url = |url: &str| {
        format!("[[source]]\nkind = \"http\"\nurl = \"{url}\"\nfields = {{ carrier = \"/isp\" }}\n")
    };
    // In the host, the address looked up (a hop from an untrusted report)
    // would be the server asked, with the source's credentials; in the
    // user part or the fragment it never reaches the service, which would
    // then answer for whoever asks.
    for url in [
        "http://{ip}/json",
        "https://{ip}:8443/json?key=${K}",
        "https://{ip}.lookup.example/json",
        "https://{ip}@lookup.example/json",
        "https://lookup.example/json#{ip}",
    ] {
        let e = config_err(&with_url(url));
        assert!(
            e.starts_with("source #1 (http):") && e.contains("path or query"),
            "{url}: {e}"
        );
    }
    for url in [
        "https://lookup.example/json/{ip}",
        "https://lookup.example:8443/json?ip={ip}&key=${K}",
        "https://${HOST}/v1/{ip}/geo",
    ] {
        ChainConfig::from_toml("chain.toml", &with_url(url))
            .unwrap()
            .validate()
            .unwrap();
    }
}

/// An `http` source on a closed port with `extra` options.
fn http(extra: &str) -> String {
    format!(
        "[[source]]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/{{ip}}\"\n{extra}\n\
         [source.fields]\ncarrier = \"/isp\"\n"
    )
}

#[test]
fn toml_mistakes_fail_with_messages_that_say_what_to_fix() {
    let e = config_err(
        "[[source]]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/lookup\"\n\
         fields = { carrier = \"/isp\" }\n",
    );
    assert!(
        e.starts_with("source #1 (http):") && e.contains("{ip}"),
        "{e}"
    );
    let e = config_err(
        "[[source]]\nkind = \"http\"\nurl = \"ftp://h/{ip}\"\nfields = { carrier = \"/isp\" }\n",
    );
    assert!(e.contains("http://") && e.contains("ftp"), "{e}");
    let e = config_err(
        "[[source]]\nkind = \"http\"\nurl = \"http://h/{ip}\"\nfields = { carrier = \"isp\" }\n",
    );
    assert!(e.contains("JSON pointer") && e.contains("`/isp`"), "{e}");
    let e = config_err(
        "[[source]]\nkind = \"http\"\nurl = \"http://h/{ip}\"\nfields = { asn = \"/a~2b\" }\n",
    );
    assert!(e.contains("~0"), "{e}");
    let e = config_err(&http("timeout = 5"));
    assert!(e.contains("unknown field `timeout`"), "{e}");
    let e = config_err(
        "[[source]]\nkind = \"http\"\nurl = \"http://h/{ip}\"\nfields = { isp = \"/isp\" }\n",
    );
    assert!(
        e.contains("unknown field `isp`") && e.contains("carrier"),
        "{e}"
    );
    let e = config_err(&http("success = { pointer = \"/status\", is = \"ok\" }"));
    assert!(e.contains("unknown field `is`"), "{e}");
    let e = config_err("[[source]]\nkind = \"http\"\nurl = \"http://h/{ip}\"\n");
    assert!(e.contains("[source.fields]"), "{e}");
    let e = config_err("[[source]]\nkind = \"http\"\nurl = \"http://h/{ip}\"\nfields = {}\n");
    assert!(e.contains("maps no attribute"), "{e}");
    let e = config_err(&http("rate_per_sec = 0"));
    assert!(e.contains("rate_per_sec") && e.contains("positive"), "{e}");
    let e = config_err(&http("cache_ttl_s = 60\nnegative_ttl_s = 600"));
    assert!(
        e.contains("negative_ttl_s") && e.contains("cache_ttl_s"),
        "{e}"
    );
    let e = config_err(&http("timeout_ms = 0"));
    assert!(e.contains("timeout_ms"), "{e}");
    let e = config_err(&http("headers = { \"X-Key\" = \"${UNCLOSED\" }"));
    assert!(e.contains("X-Key") && e.contains("closing"), "{e}");
    let e = config_err(&http(
        "token_env = \"T\"\nheaders = { Authorization = \"Basic x\" }",
    ));
    assert!(e.contains("keep one"), "{e}");
    let e = config_err(&http("path = \"x.csv\""));
    assert!(e.contains("`path`") && e.contains("`url`"), "{e}");
    let e = config_err(
        "[[source]]\nkind = \"ipplan\"\npath = \"p.csv\"\ntimeout_ms = 5\nurl = \"http://h/{ip}\"\n",
    );
    assert!(
        e.contains("`url`, `timeout_ms` only apply to kind = \"http\""),
        "{e}"
    );
}

#[test]
fn building_fills_defaults_and_reads_the_environment_and_the_ca_file() {
    // The version defaults to the host.
    let dir = tempfile::tempdir().unwrap();
    let cat = catalog();
    let chain = ChainConfig::from_toml("c.toml", &http(""))
        .unwrap()
        .build(dir.path(), &cat)
        .unwrap();
    assert_eq!(chain.sources()[0].name(), "http");
    assert_eq!(chain.sources()[0].data_version(), "http:127.0.0.1");
    assert!(chain.sources()[0].answer_cache().is_some());
    let e = ChainConfig::from_toml(
        "c.toml",
        &http("").replace("{ip}", "{ip}?k=${LINEPROBE_SURELY_UNSET_VARIABLE}"),
    )
    .unwrap()
    .build(dir.path(), &cat)
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("source #1 (http):") && e.contains("LINEPROBE_SURELY_UNSET_VARIABLE"),
        "{e}"
    );
    let e = ChainConfig::from_toml("c.toml", &http("ca_file = \"missing.pem\""))
        .unwrap()
        .build(dir.path(), &cat)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ca_file") && e.contains("missing.pem"), "{e}");
    std::fs::write(dir.path().join("empty.pem"), "not a certificate\n").unwrap();
    let e = ChainConfig::from_toml("c.toml", &http("ca_file = \"empty.pem\""))
        .unwrap()
        .build(dir.path(), &cat)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no certificate"), "{e}");
}

#[test]
fn in_a_chain_the_service_only_fills_what_earlier_sources_lack() {
    let svc = Service::start();
    svc.set(
        "49.64.1.7",
        answer(
            &json!({"isp": "China Telecom", "as": "AS4134", "region": "Guangdong",
                       "city": "Guangzhou", "proxy": true}),
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("plan.csv"),
        "cidr,province,city,customer\n49.64.1.0/24,江苏,南京,Example Ltd\n",
    )
    .unwrap();
    // Connection refused.
    let down = ports::unused_loopback_addr();
    let config = ChainConfig::from_toml(
        "chain.toml",
        &format!(
            r#"
[[source]]
kind = "ipplan"
path = "plan.csv"
version = "2026-11-01"

[[source]]
kind = "http"
name = "down"
url = "http://{down}/lookup/{{ip}}"
timeout_ms = 1000
fields = {{ carrier = "/isp" }}

[[source]]
kind = "http"
name = "lookup"
version = "svc-2026"
url = "{url}"
[source.fields]
carrier = "/isp"
asn = "/as"
province = "/region"
city = "/city"
proxy = "/proxy"
"#,
            url = svc.url()
        ),
    )
    .unwrap();
    let cat = catalog();
    let chain = config.build(dir.path(), &cat).unwrap();
    let r: Resolved = chain.resolve(&cat, ip("49.64.1.7")).unwrap();
    let p = r.province.unwrap();
    assert_eq!(
        (p.value.as_str(), p.source.as_str(), p.version.as_str()),
        ("CN-JS", "ipplan", "2026-11-01")
    );
    assert_eq!(r.city.unwrap().value.as_str(), "320100");
    assert_eq!(r.customer.unwrap().value, "Example Ltd");
    let c = r.carrier.unwrap();
    assert_eq!(
        (c.value.as_str(), c.source.as_str(), c.version.as_str()),
        ("china_telecom", "lookup", "svc-2026")
    );
    assert_eq!(r.asn.unwrap().value, 4134);
    assert!(r.anonymous.unwrap().value.proxy);
    assert_eq!(r.failures.len(), 1);
    assert_eq!(r.failures[0].source, "down");
    assert!(
        r.failures[0].message.contains("cannot connect"),
        "{:?}",
        r.failures
    );

    // The cache is reachable through the chain, for persisting.
    let cache = chain.sources()[2].answer_cache().unwrap();
    assert_eq!(cache.entries().len(), 1);
    assert!(chain.sources()[0].answer_cache().is_none());
    chain.resolve(&cat, ip("49.64.1.7")).unwrap();
    assert_eq!(svc.hits("49.64.1.7"), 1);
}

// ──────────────────────────────── HTTPS ────────────────────────────────────

/// A TLS listener for axum: the handshake happens in `accept`, and a
/// failed one is counted and skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    failed: Arc<Mutex<usize>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => *self.failed.lock().unwrap() += 1,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A private CA and a server certificate it signed for 127.0.0.1; writes
/// the CA's PEM into `dir` and returns the server's TLS configuration.
fn private_pki(dir: &Path) -> rustls::ServerConfig {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "LineProbe test lookup CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("lookup-ca.pem"), ca_cert.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap()
}

#[test]
fn https_with_a_private_ca_is_trusted_through_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let tls = Arc::new(private_pki(dir.path()));
    let served = Arc::new(Served::default());
    served.answers.lock().unwrap().insert(
        "203.0.113.40".to_owned(),
        answer(&json!({"isp": "中国移动", "region": "吉林"})),
    );
    let router = Router::new()
        .route("/lookup/{ip}", get(lookup))
        .with_state(Arc::clone(&served));
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let addr = tcp.local_addr().unwrap();
    let failed = Arc::new(Mutex::new(0));
    let failed_count = Arc::clone(&failed);
    spawn_server(move || async move {
        let listener = TlsListener {
            tcp: tokio::net::TcpListener::from_std(tcp).unwrap(),
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            failed: failed_count,
        };
        axum::serve(listener, router).await.unwrap();
    });

    let url = format!("https://127.0.0.1:{}/lookup/{{ip}}", addr.port());
    let map = "carrier = \"/isp\"\nprovince = \"/region\"";
    let mut s = settings("secure", &url, map);
    s.ca_file = Some(dir.path().join("lookup-ca.pem"));
    let src = source(s);
    let f = src.lookup(ip("203.0.113.40")).unwrap().unwrap();
    assert_eq!(f.carrier.unwrap().as_str(), "china_mobile");
    assert_eq!(f.province.unwrap().as_str(), "CN-JL");
    assert_eq!(src.data_version(), "http:127.0.0.1");

    // Without the CA the certificate is refused, and the error says so.
    let stranger = source(settings("no-ca", &url, map));
    let e = lookup_err(&stranger, "203.0.113.40");
    assert!(
        e.contains("`no-ca`") && e.contains("UnknownIssuer") && e.contains("set `ca_file`"),
        "{e}"
    );
    assert_eq!(served.hits.lock().unwrap()["203.0.113.40"], 1);
    // The server sees the refused handshake (maybe a moment after the client).
    let deadline = Instant::now() + Duration::from_secs(5);
    while *failed.lock().unwrap() == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(*failed.lock().unwrap() >= 1);
}

#[test]
fn a_service_that_keeps_failing_is_left_alone_for_a_while() {
    let svc = Service::start();
    for i in 1..=8 {
        svc.set(&format!("192.0.2.{i}"), raw(503, "down for maintenance"));
    }
    // A wrong answer is the answer's fault, not the service's: it does
    // not count towards taking the service for down.
    svc.set("192.0.2.50", raw(200, "<html>not json</html>"));
    let src = source(settings("ipsvc", &svc.url(), "carrier = \"/isp\""));
    for _ in 0..6 {
        assert!(lookup_err(&src, "192.0.2.50").contains("not JSON"));
    }
    for i in 1..=lineprobe_sync::BREAKER_FAILURES {
        let e = lookup_err(&src, &format!("192.0.2.{i}"));
        assert!(e.contains("503"), "{e}");
    }
    let sent = src.requests_sent();
    // Taken for down: the next lookups fail at once, without a request.
    let e = lookup_err(&src, "192.0.2.8");
    assert!(
        e.contains("`ipsvc`") && e.contains("192.0.2.8") && e.contains("in a row"),
        "{e}"
    );
    assert_eq!(src.requests_sent(), sent);
    assert_eq!(svc.hits("192.0.2.8"), 0);
}
