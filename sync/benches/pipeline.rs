//! The committed benchmark of the internal side: pull → verdict → database
//! for generated reports, on SQLite and on PostgreSQL, and the cost of the
//! resolve stage as a ratio to the raw `maxminddb` lookups it performs, both
//! measured in the same run.
//!
//! ```text
//! cargo bench -p lineprobe-sync --bench pipeline
//! ```
//!
//! What it does:
//!
//! 1. Generates realistic stored reports (about 2 KB each): many accounts and
//!    installations across the provinces and carriers, home-router and CGNAT
//!    hops followed by the carrier's metro, provincial and backbone routers,
//!    repeats of the same observation (dedupe), lines that run on another
//!    carrier, leave through a cloud server or are used in another province,
//!    and a few reports the catalogs refuse (quarantine). The IP data that
//!    covers them is generated too: a GeoIP2-City-like and a GeoIP2-ISP-like
//!    MaxMind DB (written with `mmdb-writer`) as the `mmdb` source, preceded
//!    by China Mobile's address plan (CSV).
//! 2. Starts a real collector on loopback (HTTPS export by default) and
//!    stages every report in it (not timed).
//! 3. Times, on a fresh database for each backend: `Puller::pull_once`
//!    until caught up, then `Pipeline::run_pending`; prints reports/s and
//!    where the time went (pull: HTTP and commits; pipeline: reading,
//!    CPU work, database apply). Then, on another fresh PostgreSQL
//!    database, the puller and the pipeline at once, as `lineprobe-sync
//!    run` works (the puller on its own task, the pipeline running again
//!    after each commit), timed until the last report is processed.
//! 4. Times `Chain::resolve` over exactly the addresses the pipeline resolves
//!    for these reports (egress, public hops, target; once per address per
//!    report) against raw `Reader::lookup(ip)?.decode::<…>()` calls on the
//!    same files for the same addresses, and prints the ratio.
//! 5. Prints a summary with PASS/MISS against the goals: at least 30 000
//!    reports/s into PostgreSQL end to end (both ways), and the resolve
//!    stage within 3× of its raw lookups.
//!
//! Options, from the environment:
//!
//! | variable | meaning | default |
//! | --- | --- | --- |
//! | `LINEPROBE_BENCH_REPORTS` | reports generated | 100000 |
//! | `LINEPROBE_TEST_PG` | PostgreSQL server; a fresh database is created there and dropped after (the URL's parameters kept: `?sslmode=disable` connects without TLS) | unset: the PostgreSQL run is skipped with the reason |
//! | `LINEPROBE_BENCH_BACKENDS` | `sqlite`, `postgres` or both, comma-separated | both |
//! | `LINEPROBE_BENCH_PAGE` | reports per export page (collector cap 10000) | 5000 |
//! | `LINEPROBE_BENCH_BATCH` | reports per pipeline batch | 5000 |
//! | `LINEPROBE_BENCH_WORKERS` | pipeline worker threads | every core |
//! | `LINEPROBE_BENCH_TLS` | `0` serves the export API over plain HTTP | 1 |
//! | `LINEPROBE_BENCH_IPPLAN` | `0` leaves the address plan out of the chain | 1 |
//! | `LINEPROBE_BENCH_RESOLVE_ROUNDS` | timed rounds of the resolve comparison | 3 |
//! | `LINEPROBE_BENCH_STAGES` | `0` skips the per-step CPU costs | 1 |
//! | `LINEPROBE_BENCH_PG_KEEP` | `1` keeps the PostgreSQL benchmark database for inspection (drop it yourself) | 0 |
//! | `LINEPROBE_BENCH_PG_LOG` | `1` logs every statement on the benchmark database with its server time (`log_min_duration_statement = 0`, to the server's log) | 0 |
//! | `LINEPROBE_BENCH_STAGE_SAMPLE` | reports the per-step CPU costs are measured on | 20000 |
//! | `LINEPROBE_REQUIRE_LAB` | `1`: a missing or unreachable PostgreSQL is an error | unset |

// Figures are counts and durations turned into floats for printing; the
// precision lost beyond 2^52 does not matter here.
#![allow(clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt as _;
use ipnet::{IpNet, Ipv4Net};
use lineprobe_collector::{CollectorConfig, RunningCollector, StageOutcome};
use lineprobe_shared::{
    Catalog, CityKind, Classifier, ClassifierConfig, EnvelopeHeaders, EnvelopeTls,
    ReceiverEnvelope, Report, ReportId,
};
use lineprobe_sync::{
    Chain, CollectorClient, CollectorEndpoint, Error, IpPlanSource, LineEvidence, MmdbSource,
    Pipeline, PipelineRun, PullSettings, PullSink, PulledLine, Puller, Resolved, Store, extract,
};
use maxminddb::{Reader, geoip2};
use mmdb_writer::{IpVersion, Writer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

/// The collector node the reports are staged on.
const NODE: &str = "bench-dmz-1";
/// The collector's name in the puller's configuration.
const COLLECTOR: &str = "bench";
/// The goal: reports per second into PostgreSQL, end to end.
const GOAL_PG_REPORTS_PER_S: f64 = 30_000.0;
/// The goal: the resolve stage's cost over its raw lookups'.
const GOAL_RESOLVE_RATIO: f64 = 3.0;
/// The data version of the generated IP data.
const DATA_VERSION: &str = "bench-2026.11";

// The allocator of the programs measured: `lineprobe-sync` (src/main.rs) and
// the collector (its main.rs) both run on mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let options = Options::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(bench(&options))
}

// ─────────────────────────────── options ────────────────────────────────

#[derive(Debug)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "on/off switches from the environment"
)]
struct Options {
    reports: usize,
    pg_url: Option<String>,
    sqlite: bool,
    postgres: bool,
    page: usize,
    batch: u32,
    workers: usize,
    tls: bool,
    ipplan: bool,
    resolve_rounds: usize,
    require_lab: bool,
    /// Measure each step's CPU cost (on the first backend).
    stages: bool,
    /// Log every statement on the PostgreSQL benchmark database.
    pg_log: bool,
    /// Keep the PostgreSQL benchmark database.
    pg_keep: bool,
    stage_sample: usize,
}

impl Options {
    fn from_env() -> anyhow::Result<Self> {
        fn number<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a whole number")),
                Err(_) => Ok(default),
            }
        }
        fn flag(name: &str, default: bool) -> bool {
            std::env::var(name).map_or(default, |v| !matches!(v.trim(), "0" | "false" | "no"))
        }
        let backends = std::env::var("LINEPROBE_BENCH_BACKENDS")
            .unwrap_or_else(|_| "sqlite,postgres".to_owned());
        let mut sqlite = false;
        let mut postgres = false;
        for b in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            match b {
                "sqlite" => sqlite = true,
                "postgres" | "postgresql" | "pg" => postgres = true,
                other => bail!(
                    "LINEPROBE_BENCH_BACKENDS: unknown backend {other:?} (use sqlite, postgres)"
                ),
            }
        }
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let options = Self {
            reports: number("LINEPROBE_BENCH_REPORTS", 100_000)?,
            pg_url: std::env::var("LINEPROBE_TEST_PG")
                .ok()
                .filter(|u| !u.is_empty()),
            sqlite,
            postgres,
            page: number("LINEPROBE_BENCH_PAGE", 5_000)?,
            batch: number("LINEPROBE_BENCH_BATCH", 5_000)?,
            workers: number("LINEPROBE_BENCH_WORKERS", cores)?,
            tls: flag("LINEPROBE_BENCH_TLS", true),
            ipplan: flag("LINEPROBE_BENCH_IPPLAN", true),
            resolve_rounds: number("LINEPROBE_BENCH_RESOLVE_ROUNDS", 3)?,
            require_lab: std::env::var("LINEPROBE_REQUIRE_LAB").is_ok_and(|v| v == "1"),
            stages: flag("LINEPROBE_BENCH_STAGES", true),
            pg_log: flag("LINEPROBE_BENCH_PG_LOG", false),
            pg_keep: flag("LINEPROBE_BENCH_PG_KEEP", false),
            stage_sample: number("LINEPROBE_BENCH_STAGE_SAMPLE", 20_000)?,
        };
        ensure!(
            options.reports >= 100,
            "LINEPROBE_BENCH_REPORTS must be at least 100"
        );
        ensure!(
            (1..=10_000).contains(&options.page),
            "LINEPROBE_BENCH_PAGE must be 1 to 10000"
        );
        ensure!(
            options.batch >= 1,
            "LINEPROBE_BENCH_BATCH must be at least 1"
        );
        ensure!(
            options.resolve_rounds >= 1,
            "LINEPROBE_BENCH_RESOLVE_ROUNDS must be at least 1"
        );
        Ok(options)
    }
}

// ──────────────────────────────── the run ────────────────────────────────

#[allow(
    clippy::too_many_lines,
    reason = "the run reads top to bottom as its steps"
)]
async fn bench(options: &Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot make a temporary folder")?;
    let catalog = Arc::new(Catalog::embedded()?);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    println!("LineProbe sync pipeline benchmark");
    println!(
        "  {} reports, {cores} cores, {} pipeline workers, export page {}, pipeline batch {}, \
         export over {}, chain: {}",
        options.reports,
        options.workers,
        options.page,
        options.batch,
        if options.tls { "HTTPS" } else { "plain HTTP" },
        if options.ipplan {
            "ipplan (CSV) → mmdb (City + ISP)"
        } else {
            "mmdb (City + ISP)"
        },
    );

    // 1. The IP data and the reports.
    let started = Instant::now();
    let world = World::build(&catalog)?;
    let data = world.write_data(dir.path())?;
    let generated = generate_reports(&world, &catalog, options.reports)?;
    println!(
        "\nsetup: {} lines, {} reports ({} meant for quarantine), average stored report {} \
         bytes; IP data: {} blocks, {} City and {} ISP records, {} plan rows ({:.1} s)",
        generated.lines,
        generated.reports.len(),
        generated.invalid,
        generated.body_bytes / generated.reports.len().max(1),
        world.blocks.len(),
        data.city_records,
        data.isp_records,
        data.plan_rows,
        started.elapsed().as_secs_f64()
    );

    // 2. A real collector holding them.
    let started = Instant::now();
    let token = "bench-export-token-0123456789abcdefghijklmnopqrstuvwxyz";
    let collector_dir = dir.path().join("collector");
    let mut config = CollectorConfig {
        node_id: NODE.to_owned(),
        data_dir: collector_dir.clone(),
        ..CollectorConfig::default()
    };
    config.public.listen = "127.0.0.1:0".parse()?;
    config.public.plain_http = true;
    config.export.listen = "127.0.0.1:0".parse()?;
    config.export.plain_http = !options.tls;
    config.export.token = token.to_owned();
    config.export.max_batch = 10_000;
    config.staging.max_reports = u64::try_from(options.reports)?.saturating_mul(2);
    let collector = RunningCollector::start(&config)
        .await
        .map_err(|e| anyhow::anyhow!("the collector did not start: {e}"))?;
    let staged = seed(&collector, generated.reports).await;
    let staged = match staged {
        Ok(n) => n,
        Err(e) => {
            let _ = collector.shutdown().await;
            return Err(e);
        }
    };
    println!(
        "staged {staged} reports in the collector's staging ({:.1} s, not timed)",
        started.elapsed().as_secs_f64()
    );
    let mut endpoint = CollectorEndpoint::new(
        COLLECTOR,
        format!(
            "{}://{}",
            if options.tls { "https" } else { "http" },
            collector.export_addr
        ),
        token,
    );
    endpoint.batch = options.page;
    if options.tls {
        endpoint.ca_file = Some(
            collector_dir
                .join(lineprobe_collector::GENERATED_TLS_DIR)
                .join("cert.pem"),
        );
    } else {
        endpoint.allow_plain_http = true;
    }

    let chain = Arc::new(data.chain(&catalog, options.ipplan)?);
    let expected = Expected {
        reports: staged,
        quarantined: generated.invalid,
    };
    let setup = Setup {
        endpoint: &endpoint,
        catalog: &catalog,
        chain: &chain,
        options,
        expected: &expected,
    };
    let mut results = Vec::new();
    let mut at_once = None;
    let outcome: anyhow::Result<()> = async {
        if options.sqlite {
            let url = format!("sqlite://{}", dir.path().join("sync.sqlite3").display());
            let run = end_to_end("SQLite", &url, &setup, options.stages).await?;
            results.push(run);
        }
        if options.postgres
            && let Some(pg) = FreshPg::create(options).await?
        {
            let measure_stages = options.stages && !options.sqlite;
            let run = end_to_end("PostgreSQL", &pg.url, &setup, measure_stages).await;
            if options.pg_keep {
                println!(
                    "PostgreSQL: database {} kept (LINEPROBE_BENCH_PG_KEEP)",
                    pg.name
                );
            } else {
                pg.drop_database().await?;
            }
            results.push(run?);
        }
        if options.postgres
            && results.iter().any(|r| r.backend == "PostgreSQL")
            && let Some(pg) = FreshPg::create(options).await?
        {
            let run = overlapped(&pg.url, &setup).await;
            if !options.pg_keep {
                pg.drop_database().await?;
            }
            at_once = Some(run?);
        }
        Ok(())
    }
    .await;
    let _ = collector.shutdown().await;
    outcome?;

    // 4. The resolve stage against its raw lookups.
    let resolve = compare_resolve(&data, &catalog, options, &generated.addresses)?;

    // 5. The summary.
    summary(&results, at_once.as_ref(), &resolve, options);
    Ok(())
}

/// What the store must hold after a run.
struct Expected {
    reports: usize,
    quarantined: usize,
}

// ───────────────────────────── the IP world ──────────────────────────────

/// What a block of addresses is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    /// A carrier's access network in one province: subscribers' egress
    /// addresses and the metro and provincial routers.
    Access,
    /// A carrier's national backbone.
    Backbone,
    /// A cloud provider's data centre.
    Hosting,
    /// The data centre the receiver runs in.
    Target,
}

/// One /16 of the generated IP data.
#[derive(Debug, Clone)]
struct Block {
    net: Ipv4Net,
    kind: BlockKind,
    carrier: &'static str,
    /// Index into `World::provinces`, for blocks in one province.
    province: Option<usize>,
    /// The city of each /20, by index into the province's cities.
    cities: Vec<usize>,
    asn: u32,
    org: String,
}

#[derive(Debug, Clone)]
struct ProvinceInfo {
    id: String,
    letters: String,
    name_en: String,
    name_zh: String,
    /// (`name_zh`, `name_en`) of prefecture-level cities.
    cities: Vec<(String, String)>,
}

#[derive(Debug)]
struct World {
    provinces: Vec<ProvinceInfo>,
    blocks: Vec<Block>,
    /// `access[(carrier, province)]` → block index.
    access: BTreeMap<(&'static str, usize), usize>,
    backbone: BTreeMap<&'static str, usize>,
    hosting: Vec<usize>,
    target: usize,
}

/// The access carriers lines are sold on, their backbone ASN and name.
const CARRIERS: [(&str, u32, &str, &str); 3] = [
    ("china_telecom", 4134, "CHINANET-BACKBONE", "China Telecom"),
    (
        "china_unicom",
        4837,
        "CHINA UNICOM China169 Backbone",
        "China Unicom",
    ),
    (
        "china_mobile",
        9808,
        "China Mobile Communications Group",
        "China Mobile",
    ),
];

/// First octets of address space allocated in China; /16s are carved from
/// them in turn (second octet from 16, clear of the special-purpose blocks).
const FIRST_OCTETS: [u8; 24] = [
    36, 39, 42, 49, 58, 59, 60, 61, 101, 106, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119,
    120, 121, 122, 123,
];

impl World {
    #[allow(clippy::too_many_lines, reason = "the address plan, block by block")]
    fn build(catalog: &Catalog) -> anyhow::Result<World> {
        let provinces: Vec<ProvinceInfo> = catalog
            .provinces()
            .iter()
            .filter_map(|p| {
                let cities: Vec<(String, String)> = catalog
                    .cities_in(&p.id)
                    .filter(|c| {
                        c.code.is_some()
                            && matches!(c.kind, CityKind::Municipality | CityKind::PrefectureCity)
                    })
                    .map(|c| (c.name_zh.clone(), c.name_en.clone()))
                    .collect();
                (!cities.is_empty()).then(|| ProvinceInfo {
                    id: p.id.as_str().to_owned(),
                    letters: p.id.letters().to_owned(),
                    name_en: p.name_en.clone(),
                    name_zh: p.name_zh.clone(),
                    cities,
                })
            })
            .collect();
        ensure!(
            provinces.len() >= 20,
            "the catalog has too few provinces with cities"
        );
        let mut carved = 0usize;
        let mut net = || -> anyhow::Result<Ipv4Net> {
            let first = FIRST_OCTETS[carved % FIRST_OCTETS.len()];
            let second = 16 + carved / FIRST_OCTETS.len();
            carved += 1;
            ensure!(second < 250, "out of generated address space");
            Ok(Ipv4Net::new(
                Ipv4Addr::new(first, u8::try_from(second)?, 0, 0),
                16,
            )?)
        };
        let mut blocks = Vec::new();
        let mut access = BTreeMap::new();
        let mut backbone = BTreeMap::new();
        for &(carrier, asn, org, _) in &CARRIERS {
            backbone.insert(carrier, blocks.len());
            blocks.push(Block {
                net: net()?,
                kind: BlockKind::Backbone,
                carrier,
                province: None,
                cities: Vec::new(),
                asn,
                org: org.to_owned(),
            });
        }
        for (pi, p) in provinces.iter().enumerate() {
            for (ci, &(carrier, asn, _, name)) in CARRIERS.iter().enumerate() {
                // Most provincial networks are announced by the backbone AS;
                // some by a provincial AS the catalog does not list, which
                // only the organisation name ties to the carrier.
                let (asn, org) = if (pi + ci) % 3 == 0 {
                    let asn = 200_000 + u32::try_from(pi * 8 + ci)?;
                    ensure!(catalog.carrier_by_asn(asn).is_none());
                    (asn, format!("{name} {}", p.name_en.to_uppercase()))
                } else {
                    (asn, format!("{name} {} province network", p.name_en))
                };
                access.insert((carrier, pi), blocks.len());
                blocks.push(Block {
                    net: net()?,
                    kind: BlockKind::Access,
                    carrier,
                    province: Some(pi),
                    cities: (0..16).map(|k| k % p.cities.len()).collect(),
                    asn,
                    org,
                });
            }
        }
        let zhejiang = provinces
            .iter()
            .position(|p| p.id == "CN-ZJ")
            .context("no Zhejiang in the catalog")?;
        let mut hosting = Vec::new();
        for (carrier, asn, org) in [
            (
                "alibaba_cloud",
                37963,
                "Hangzhou Alibaba Advertising Co.,Ltd.",
            ),
            (
                "tencent_cloud",
                45090,
                "Shenzhen Tencent Computer Systems Company Limited",
            ),
        ] {
            hosting.push(blocks.len());
            blocks.push(Block {
                net: net()?,
                kind: BlockKind::Hosting,
                carrier,
                province: Some(zhejiang),
                cities: vec![0; 16],
                asn,
                org: org.to_owned(),
            });
        }
        let target = blocks.len();
        blocks.push(Block {
            net: net()?,
            kind: BlockKind::Target,
            carrier: "china_telecom",
            province: Some(zhejiang),
            cities: vec![0; 16],
            asn: 4134,
            org: "CHINANET Zhejiang province network".to_owned(),
        });
        Ok(World {
            provinces,
            blocks,
            access,
            backbone,
            hosting,
            target,
        })
    }

    /// An address in block `b`: `third` and `fourth` octets.
    fn addr(&self, b: usize, third: u8, fourth: u8) -> Ipv4Addr {
        let [a, s, _, _] = self.blocks[b].net.addr().octets();
        Ipv4Addr::new(a, s, third, fourth)
    }

    /// The receiver.
    fn target_addr(&self) -> Ipv4Addr {
        self.addr(self.target, 0, 80)
    }
}

// ───────────────────────────── the IP data ───────────────────────────────

#[derive(Clone, Copy, Serialize)]
struct Names<'a> {
    en: &'a str,
    #[serde(rename = "zh-CN")]
    zh: &'a str,
    #[serde(rename = "ja")]
    ja: &'a str,
    #[serde(rename = "ru")]
    ru: &'a str,
}

#[derive(Serialize)]
struct Place<'a> {
    geoname_id: u32,
    names: Names<'a>,
}

#[derive(Serialize)]
struct Country<'a> {
    geoname_id: u32,
    iso_code: &'a str,
    names: Names<'a>,
}

#[derive(Serialize)]
struct Continent<'a> {
    code: &'a str,
    geoname_id: u32,
    names: Names<'a>,
}

#[derive(Serialize)]
struct Subdivision<'a> {
    geoname_id: u32,
    iso_code: &'a str,
    names: Names<'a>,
}

#[derive(Serialize)]
struct Location<'a> {
    accuracy_radius: u16,
    latitude: f64,
    longitude: f64,
    time_zone: &'a str,
}

/// A GeoIP2-City record, with the fields the real database carries.
#[derive(Serialize)]
struct CityRecord<'a> {
    continent: Continent<'a>,
    country: Country<'a>,
    registered_country: Country<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subdivisions: Vec<Subdivision<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<Place<'a>>,
    location: Location<'a>,
}

/// A GeoIP2-ISP record.
#[derive(Serialize)]
struct IspRecord<'a> {
    autonomous_system_number: u32,
    autonomous_system_organization: &'a str,
    isp: &'a str,
    organization: &'a str,
}

/// The generated IP data files.
#[derive(Debug)]
struct IpData {
    city: PathBuf,
    isp: PathBuf,
    plan: PathBuf,
    city_records: usize,
    isp_records: usize,
    plan_rows: usize,
}

impl IpData {
    /// The chain the pipeline resolves with.
    fn chain(&self, catalog: &Arc<Catalog>, ipplan: bool) -> anyhow::Result<Chain> {
        let mut chain = Chain::default();
        if ipplan {
            chain.push(Box::new(IpPlanSource::open(
                "cmcc-plan",
                Some(DATA_VERSION.to_owned()),
                &self.plan,
                catalog,
            )?));
        }
        chain.push(Box::new(MmdbSource::open(
            "geoip2",
            None,
            &[self.city.clone(), self.isp.clone()],
            Arc::clone(catalog),
        )?));
        Ok(chain)
    }
}

impl World {
    #[allow(clippy::too_many_lines, reason = "one record layout per kind of block")]
    fn write_data(&self, dir: &Path) -> anyhow::Result<IpData> {
        let china = Names {
            en: "China",
            zh: "中国",
            ja: "中国",
            ru: "Китай",
        };
        let asia = Names {
            en: "Asia",
            zh: "亚洲",
            ja: "アジア",
            ru: "Азия",
        };
        let country = || Country {
            geoname_id: 1_814_991,
            iso_code: "CN",
            names: china,
        };
        let mut city_db = Writer::builder("GeoIP2-City")
            .ip_version(IpVersion::V6)
            .build();
        let mut isp_db = Writer::builder("GeoIP2-ISP")
            .ip_version(IpVersion::V6)
            .build();
        let mut plan = String::from("cidr,carrier,province,city,ip_type,customer\n");
        let (mut city_records, mut isp_records, mut plan_rows) = (0, 0, 0);
        for (bi, b) in self.blocks.iter().enumerate() {
            let isp = IspRecord {
                autonomous_system_number: b.asn,
                autonomous_system_organization: &b.org,
                isp: &b.org,
                organization: &b.org,
            };
            isp_db.insert(IpNet::V4(b.net), &isp)?;
            isp_records += 1;
            let province = b.province.map(|p| &self.provinces[p]);
            let Some(p) = province else {
                // Backbone space: the country only.
                let record = CityRecord {
                    continent: Continent {
                        code: "AS",
                        geoname_id: 6_255_147,
                        names: asia,
                    },
                    country: country(),
                    registered_country: country(),
                    subdivisions: Vec::new(),
                    city: None,
                    location: Location {
                        accuracy_radius: 1000,
                        latitude: 34.7732,
                        longitude: 113.722,
                        time_zone: "Asia/Shanghai",
                    },
                };
                city_db.insert(IpNet::V4(b.net), &record)?;
                city_records += 1;
                continue;
            };
            for (k, &ci) in b.cities.iter().enumerate() {
                let (city_zh, city_en) = &p.cities[ci];
                let subnet = Ipv4Net::new(self.addr(bi, u8::try_from(k * 16)?, 0), 20)?;
                let record = CityRecord {
                    continent: Continent {
                        code: "AS",
                        geoname_id: 6_255_147,
                        names: asia,
                    },
                    country: country(),
                    registered_country: country(),
                    subdivisions: vec![Subdivision {
                        geoname_id: 1_800_000 + u32::try_from(b.province.unwrap_or(0))?,
                        iso_code: &p.letters,
                        names: Names {
                            en: &p.name_en,
                            zh: &p.name_zh,
                            ja: &p.name_zh,
                            ru: &p.name_en,
                        },
                    }],
                    city: Some(Place {
                        geoname_id: 1_900_000 + u32::try_from(bi * 16 + k)?,
                        names: Names {
                            en: city_en,
                            zh: city_zh,
                            ja: city_zh,
                            ru: city_en,
                        },
                    }),
                    location: Location {
                        accuracy_radius: 50,
                        latitude: 20.0 + f64::from(u8::try_from(k)?),
                        longitude: 100.0 + f64::from(u8::try_from(bi % 40)?),
                        time_zone: "Asia/Shanghai",
                    },
                };
                city_db.insert(IpNet::V4(subnet), &record)?;
                city_records += 1;
                // China Mobile's own plan: every access block, by city,
                // residential lines except one /20 of business lines.
                if b.carrier == "china_mobile" && b.kind == BlockKind::Access {
                    let (ip_type, customer) = if k == 15 {
                        ("enterprise", format!("Customer {bi}-{k} Ltd."))
                    } else {
                        ("residential", String::new())
                    };
                    let _ = writeln!(
                        plan,
                        "{subnet},中国移动,{},{city_zh},{ip_type},{customer}",
                        p.id
                    );
                    plan_rows += 1;
                }
            }
        }
        let city = dir.join("GeoIP2-City.mmdb");
        let isp = dir.join("GeoIP2-ISP.mmdb");
        let plan_path = dir.join("cmcc-plan.csv");
        std::fs::write(&city, city_db.to_bytes()?)?;
        std::fs::write(&isp, isp_db.to_bytes()?)?;
        std::fs::write(&plan_path, plan)?;
        Ok(IpData {
            city,
            isp,
            plan: plan_path,
            city_records,
            isp_records,
            plan_rows,
        })
    }
}

// ──────────────────────────────── reports ────────────────────────────────

/// What kind of line a subscriber has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineKind {
    /// What was declared.
    Normal,
    /// Sold as China Mobile, runs over China Telecom.
    UrbanVillage,
    /// Leaves through a cloud server.
    Proxied,
    /// Used in another province than declared.
    Roaming,
    /// Dr.Peng, leaving through China Telecom.
    DrPeng,
    /// Addresses no source knows.
    Unknown,
}

#[derive(Debug, Clone)]
struct Line {
    install_id: String,
    account: String,
    province: usize,
    /// Declared city: index into the province's cities.
    city: usize,
    declared_carrier: &'static str,
    kind: LineKind,
    /// The access block the line runs on, and the /20 its addresses are in.
    block: usize,
    subnet: u8,
    os: &'static str,
    /// The last observation: egress and hops, for repeats.
    last: Option<(Ipv4Addr, Vec<Value>)>,
}

/// The generated reports, and what the benchmark needs to know of them.
struct Generated {
    reports: Vec<Report>,
    lines: usize,
    invalid: usize,
    body_bytes: usize,
    /// Every address the pipeline resolves, report by report.
    addresses: Vec<IpAddr>,
}

fn generate_reports(world: &World, catalog: &Catalog, n: usize) -> anyhow::Result<Generated> {
    let mut rng = StdRng::seed_from_u64(0x4C50_4245_4E43);
    let line_count = (n * 2 / 5).max(1);
    let mut lines: Vec<Line> = (0..line_count)
        .map(|i| new_line(world, &mut rng, i))
        .collect();
    let classifier = Classifier::new(&ClassifierConfig::default())?;
    let start = Utc::now() - TimeDelta::days(1);
    let mut out = Generated {
        reports: Vec::with_capacity(n),
        lines: line_count,
        invalid: 0,
        body_bytes: 0,
        addresses: Vec::new(),
    };
    for i in 0..n {
        let at = start + TimeDelta::milliseconds(i64::try_from(i)? * 500);
        let li = rng.gen_range(0..line_count);
        // One report in 200 is one the catalogs refuse.
        let broken = if i % 200 == 199 {
            Some(i / 200 % 4)
        } else {
            None
        };
        let report = make_report(world, &mut rng, &mut lines[li], at, broken)?;
        let body = report.to_json()?;
        out.body_bytes += body.len();
        match extract(&body, NODE, catalog) {
            Ok(x) => {
                // The addresses the pipeline resolves for this report.
                let _ = LineEvidence::gather(
                    &x.report,
                    x.declared.clone(),
                    catalog,
                    &classifier,
                    |ip| {
                        out.addresses.push(ip);
                        Ok::<_, Error>(Resolved::default())
                    },
                )?;
            }
            Err(q) => {
                ensure!(
                    broken.is_some(),
                    "generated report {i} was meant to be valid but is quarantined: {q}"
                );
                out.invalid += 1;
            }
        }
        if let Some(kind) = broken {
            ensure!(
                extract(&body, NODE, catalog).is_err(),
                "generated report {i} (broken kind {kind}) was meant to be quarantined"
            );
        }
        out.reports.push(report);
    }
    Ok(out)
}

fn new_line(world: &World, rng: &mut StdRng, i: usize) -> Line {
    let province = rng.gen_range(0..world.provinces.len());
    let roll = rng.gen_range(0..100);
    let kind = match roll {
        0..80 => LineKind::Normal,
        80..88 => LineKind::UrbanVillage,
        88..92 => LineKind::Proxied,
        92..96 => LineKind::Roaming,
        96..98 => LineKind::DrPeng,
        _ => LineKind::Unknown,
    };
    let carrier = CARRIERS[i % CARRIERS.len()].0;
    let (declared_carrier, access_carrier, access_province) = match kind {
        LineKind::UrbanVillage => ("china_mobile", "china_telecom", province),
        LineKind::DrPeng => ("drpeng", "china_telecom", province),
        LineKind::Roaming => (
            carrier,
            carrier,
            (province + 1 + rng.gen_range(0..world.provinces.len() - 1)) % world.provinces.len(),
        ),
        _ => (carrier, carrier, province),
    };
    let block = world.access[&(access_carrier, access_province)];
    let subnet = rng.gen_range(0..15u8);
    // The declared city is the one the line's addresses are in (for a
    // roaming line, a city of the declared province).
    let city = if access_province == province {
        world.blocks[block].cities[usize::from(subnet)]
    } else {
        rng.gen_range(0..world.provinces[province].cities.len())
    };
    let has_account = !i.is_multiple_of(10);
    Line {
        install_id: format!("{}-{:07}", &world.provinces[province].letters, i),
        account: if has_account {
            format!("0{:010}", 7_550_000_000u64 + i as u64)
        } else {
            String::new()
        },
        province,
        city,
        declared_carrier,
        kind,
        block,
        subnet,
        os: ["windows", "android", "android", "linux"][i % 4],
        last: None,
    }
}

fn hop(ttl: u8, addr: Option<IpAddr>, rng: &mut StdRng) -> Value {
    match addr {
        None => json!({ "ttl": ttl, "addrs": [], "rtt_ms": [], "sent": 3, "received": 0 }),
        Some(a) => {
            let base = f64::from(ttl) * 2.7;
            let rtt = |rng: &mut StdRng| (base + rng.gen_range(0.0..3.0) * 100.0).round() / 100.0;
            json!({
                "ttl": ttl, "addrs": [a],
                "rtt_ms": [rtt(rng), rtt(rng), rtt(rng)],
                "sent": 3, "received": 3
            })
        }
    }
}

/// The hops of one trace of `line` (its egress is separate).
fn path(world: &World, rng: &mut StdRng, line: &Line, li: u64) -> Vec<Value> {
    let mut hops = Vec::new();
    let mut ttl = 0u8;
    let mut push = |addr: Option<Ipv4Addr>, rng: &mut StdRng| {
        ttl += 1;
        hops.push(hop(ttl, addr.map(IpAddr::V4), rng));
    };
    let home = [[192, 168, 1, 1], [192, 168, 0, 1], [192, 168, 31, 1]][(li % 3) as usize];
    push(Some(Ipv4Addr::from(home)), rng);
    // Carrier-grade NAT on most lines.
    if !li.is_multiple_of(4) {
        let cgn = if li.is_multiple_of(2) {
            Ipv4Addr::new(100, 64 + (li % 60) as u8, 0, 1)
        } else {
            Ipv4Addr::new(10, (li % 250) as u8, 0, 1)
        };
        push(Some(cgn), rng);
    }
    if line.kind == LineKind::Unknown {
        // Someone else's network, known to no source.
        push(Some(Ipv4Addr::new(185, 199, 108, 1)), rng);
        push(Some(Ipv4Addr::new(185, 199, 109, 7)), rng);
        push(None, rng);
    } else {
        let b = line.block;
        let carrier = world.blocks[b].carrier;
        // Metro router (one of four), an occasional silent hop, the
        // provincial core, two backbone routers, then into the receiver's
        // carrier when it is another.
        push(Some(world.addr(b, 240 + rng.gen_range(0..4), 1)), rng);
        if li.is_multiple_of(3) {
            push(None, rng);
        }
        push(Some(world.addr(b, 254, 1 + (li % 4) as u8)), rng);
        let bb = world.backbone[carrier];
        push(Some(world.addr(bb, rng.gen_range(0..=255), 1)), rng);
        push(Some(world.addr(bb, rng.gen_range(0..=255), 2)), rng);
        if carrier != "china_telecom" {
            let ct = world.backbone["china_telecom"];
            push(Some(world.addr(ct, rng.gen_range(0..=255), 5)), rng);
        }
    }
    push(Some(world.addr(world.target, 1, 1)), rng);
    push(Some(world.addr(world.target, 1, 2)), rng);
    push(Some(world.target_addr()), rng);
    hops
}

fn egress(world: &World, rng: &mut StdRng, line: &Line) -> Ipv4Addr {
    match line.kind {
        LineKind::Unknown => Ipv4Addr::new(185, 199, 110, rng.gen_range(1..255)),
        LineKind::Proxied => {
            let h = world.hosting[usize::from(line.subnet) % world.hosting.len()];
            world.addr(h, rng.gen_range(0..240), rng.gen_range(1..255))
        }
        _ => world.addr(
            line.block,
            line.subnet * 16 + rng.gen_range(0..16),
            rng.gen_range(1..255),
        ),
    }
}

const ADDRESSES: [&str; 6] = [
    "南山区科技园高新南一道 8 号 3 栋 1201 室",
    "朝阳区望京街道阜通东大街 12 号院 5 号楼 2 单元 802",
    "下沙村 3 巷 7 号 4 楼（出租屋，房东代办宽带）",
    "浦东新区张江路 99 弄 14 号 601 室",
    "越秀区北京路 66 号 2 座 1508",
    "西湖区文三路 88 号 A 座 10 层",
];

/// One report of `line`; `broken` picks a way to make the catalogs refuse it.
#[allow(clippy::too_many_lines, reason = "the report, field by field")]
fn make_report(
    world: &World,
    rng: &mut StdRng,
    line: &mut Line,
    at: DateTime<Utc>,
    broken: Option<usize>,
) -> anyhow::Result<Report> {
    let li: u64 = line.install_id.bytes().map(u64::from).sum::<u64>() + line.account.len() as u64;
    // A quarter of the reports repeat the line's last observation exactly.
    let (egress_ip, mut hops) = match &line.last {
        Some(last) if rng.gen_range(0..4) == 0 => last.clone(),
        _ => {
            let e = egress(world, rng, line);
            let p = path(world, rng, line, li);
            line.last = Some((e, p.clone()));
            (e, p)
        }
    };
    // Fresh round-trip times each time; the observation is the same.
    for h in &mut hops {
        if let Some(rtts) = h.get_mut("rtt_ms").and_then(Value::as_array_mut) {
            for r in rtts {
                let v = r.as_f64().unwrap_or(1.0) + rng.gen_range(0.0..0.5);
                *r = json!((v * 100.0).round() / 100.0);
            }
        }
    }
    let p = &world.provinces[line.province];
    let mut province = json!(p.id);
    let mut city = json!(p.cities[line.city].0);
    let mut carrier = json!(line.declared_carrier);
    match broken {
        Some(0) => province = json!("CN-XX"),
        Some(1) => carrier = json!("alibaba_cloud"),
        Some(2) => {
            // A city of another province.
            let other = &world.provinces[(line.province + 1) % world.provinces.len()];
            city = json!(other.cities[0].0);
        }
        Some(_) => {
            for h in &mut hops {
                h["addrs"] = json!([]);
                h["rtt_ms"] = json!([]);
                h["received"] = json!(0);
            }
        }
        None => {}
    }
    let created = at - TimeDelta::seconds(2);
    let (os_version, arch) = match line.os {
        "windows" => ("10.0.22631", "x86_64"),
        "android" => ("14", "aarch64"),
        _ => ("6.1.0-26-amd64", "x86_64"),
    };
    let proxied = line.kind == LineKind::Proxied && li.is_multiple_of(2);
    let proxy = if proxied {
        json!({ "system_configured": true, "env_configured": false,
                "details": format!("{}:3128", egress_ip) })
    } else {
        json!({ "system_configured": false, "env_configured": false })
    };
    let mut doc = json!({
        "schema": 1,
        "report_id": ReportId::new_v7().to_string(),
        "install_id": line.install_id,
        "account": line.account,
        "created_at": created.fixed_offset().to_rfc3339(),
        "declared": {
            "province": province,
            "city": city,
            "carrier": carrier,
            "address": ADDRESSES[(li % 6) as usize],
        },
        "device": {
            "os": line.os,
            "os_version": os_version,
            "arch": arch,
            "agent_version": "0.9.3",
            "local_addrs": ["192.168.1.23", "fe80::1c2b:3dff:fe4e:5f60"],
            "proxy": proxy,
        },
        "trace": {
            "target": "probe.lineprobe.example",
            "target_addr": world.target_addr().to_string(),
            "protocol": "icmp",
            "engine": "trippy-core",
            "started_at": (created - TimeDelta::seconds(21)).fixed_offset().to_rfc3339(),
            "duration_ms": 14_200 + li % 3_000,
            "hops": hops,
        },
    });
    if li.is_multiple_of(5) {
        doc["endpoint_attempts"] = json!([{
            "endpoint": "https://collector-2.lineprobe.example/api/v1/report",
            "at": (created - TimeDelta::seconds(1)).fixed_offset().to_rfc3339(),
            "outcome": "timeout",
            "detail": "no answer within 10 s (connect to 198.51.100.20:443)",
        }]);
    }
    let bytes = serde_json::to_vec(&doc)?;
    let mut report = Report::from_submitted_json(&bytes)
        .map_err(|e| anyhow::anyhow!("a generated report is not a valid submission: {e}"))?;
    let mut headers = EnvelopeHeaders::default();
    headers.insert(
        "user-agent",
        &format!("lineprobe-agent/0.9.3 ({}; {arch})", line.os),
    );
    headers.insert("x-forwarded-for", &egress_ip.to_string());
    headers.insert("accept-language", "zh-CN,zh;q=0.9,en;q=0.8");
    report.envelope = Some(ReceiverEnvelope {
        received_at: at,
        peer_ip: IpAddr::V4(egress_ip),
        peer_port: None,
        path: "/api/v1/report".to_owned(),
        headers,
        tls: Some(EnvelopeTls {
            version: "TLSv1.3".to_owned(),
            sni: Some("collector-1.lineprobe.example".to_owned()),
        }),
        node_id: NODE.to_owned(),
        seq: 0,
        trust: None,
    });
    Ok(report)
}

/// Stages every report in the collector, many at a time (group commit).
async fn seed(collector: &RunningCollector, reports: Vec<Report>) -> anyhow::Result<usize> {
    let staging = collector.staging.clone();
    let mut stream = futures_util::stream::iter(reports)
        .map(|r| {
            let staging = staging.clone();
            async move { staging.stage(r).await }
        })
        .buffer_unordered(1024);
    let mut stored = 0;
    while let Some(outcome) = stream.next().await {
        match outcome.map_err(|e| anyhow::anyhow!("staging a report: {e}"))? {
            StageOutcome::Stored { .. } => stored += 1,
            StageOutcome::Duplicate { seq } => bail!("report staged twice (seq {seq})"),
        }
    }
    Ok(stored)
}

// ──────────────────────────── end to end ─────────────────────────────────

/// The puller's sink: the store, with the time its commits take, and a
/// wake-up after each (for a pipeline running beside the puller, as the
/// daemon's does).
struct TimedSink {
    store: Store,
    commit_ns: AtomicU64,
    committed: tokio::sync::Notify,
}

impl PullSink for TimedSink {
    async fn cursor(&self, collector: &str) -> Result<Option<(String, u64)>, Error> {
        PullSink::cursor(&self.store, collector).await
    }

    async fn commit(
        &self,
        collector: &str,
        node_id: &str,
        reports: &[PulledLine],
        next_after: u64,
    ) -> Result<u64, Error> {
        let started = Instant::now();
        let result = self
            .store
            .commit(collector, node_id, reports, next_after)
            .await;
        self.commit_ns
            .fetch_add(nanos(started.elapsed()), Ordering::Relaxed);
        self.committed.notify_one();
        result
    }

    async fn store(&self, collector: &str) -> Result<Option<String>, Error> {
        PullSink::store(&self.store, collector).await
    }

    async fn bind_store(&self, collector: &str, store_id: &str) -> Result<(), Error> {
        self.store.bind_store(collector, store_id).await
    }

    async fn acked(&self, collector: &str, up_to: u64) -> Result<(), Error> {
        self.store.acked(collector, up_to).await
    }

    async fn caught_up(&self, collector: &str, round_started_ms: i64) -> Result<(), Error> {
        self.store.caught_up(collector, round_started_ms).await
    }

    async fn failed(&self, collector: &str, message: &str) -> Result<(), Error> {
        self.store.failed(collector, message).await
    }
}

/// CPU time (user + system) of a process or thread, from its `stat` file
/// under /proc (Linux; zero elsewhere). Clock ticks are 1/100 s.
fn cpu_of(stat: &str) -> Duration {
    let Ok(text) = std::fs::read_to_string(stat) else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name: state is the 3rd field,
    // utime the 14th and stime the 15th.
    let Some(rest) = text.rfind(')').map(|i| &text[i + 1..]) else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// This process's CPU time.
fn process_cpu() -> Duration {
    cpu_of("/proc/self/stat")
}

/// The calling thread's CPU time.
fn thread_cpu() -> Duration {
    cpu_of("/proc/thread-self/stat")
}

/// The 1-minute load average, to judge the figures by.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One backend's end-to-end figures.
#[derive(Debug)]
struct EndToEnd {
    backend: &'static str,
    reports: usize,
    total: Duration,
    pull: Duration,
    pull_commit: Duration,
    process: Duration,
    run: PipelineRun,
    /// CPU time of this process while pulling, and while processing.
    cpu_pull: Duration,
    cpu_process: Duration,
    /// CPU time of the PostgreSQL backends over the whole run.
    db_cpu: Option<Duration>,
    /// The 1-minute load average after the run.
    load: String,
    stages: Option<Stages>,
    pg_tables: Option<PgWrites>,
    batch: u32,
}

impl EndToEnd {
    fn per_second(&self) -> f64 {
        self.reports as f64 / self.total.as_secs_f64()
    }
}

/// What every end-to-end run shares.
struct Setup<'a> {
    endpoint: &'a CollectorEndpoint,
    catalog: &'a Arc<Catalog>,
    chain: &'a Arc<Chain>,
    options: &'a Options,
    expected: &'a Expected,
}

/// What a timed run works with: a fresh store, the puller's sink into it,
/// the puller of the bench's collector, and the pipeline.
struct Parts {
    store: Store,
    sink: TimedSink,
    puller: Puller,
    pipeline: Pipeline,
}

impl Parts {
    async fn open(url: &str, setup: &Setup<'_>) -> anyhow::Result<Self> {
        let store = Store::open(url).await?;
        let sink = TimedSink {
            store: store.clone(),
            commit_ns: AtomicU64::new(0),
            committed: tokio::sync::Notify::new(),
        };
        let puller = Puller::from_clients(
            vec![CollectorClient::new(setup.endpoint)?],
            PullSettings {
                interval_s: 60,
                max_pages_per_round: 10_000,
            },
        )?;
        let classifier = Classifier::new(&ClassifierConfig::default())?;
        let pipeline = Pipeline::new(
            Arc::clone(setup.catalog),
            Arc::clone(setup.chain),
            classifier,
        )
        .with_workers(setup.options.workers);
        Ok(Self {
            store,
            sink,
            puller,
            pipeline,
        })
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "pull, process, then check what the store holds"
)]
async fn end_to_end(
    backend: &'static str,
    url: &str,
    setup: &Setup<'_>,
    measure_stages: bool,
) -> anyhow::Result<EndToEnd> {
    let Setup {
        catalog,
        options,
        expected,
        ..
    } = *setup;
    let Parts {
        store,
        sink,
        puller,
        pipeline,
    } = Parts::open(url, setup).await?;

    let wal_start = if store.backend_name() == "postgres" {
        wal_position(url).await
    } else {
        None
    };
    let cpu_start = process_cpu();
    let started = Instant::now();
    let mut inserted = 0;
    loop {
        let rounds = puller.pull_once(&sink).await;
        let round = rounds.first().context("the puller pulled no collector")?;
        if let Some(error) = &round.error {
            bail!("{backend}: pulling failed: {error}");
        }
        inserted += round.inserted;
        if round.caught_up {
            break;
        }
    }
    let pull = started.elapsed();
    let cpu_pulled = process_cpu();
    let run = pipeline.run_pending(&store, options.batch, |_| {}).await?;
    let total = started.elapsed();
    let cpu_done = process_cpu();
    let load = load_average();
    let db_cpu = if store.backend_name() == "postgres" {
        postgres_backends_cpu(url).await
    } else {
        None
    };
    let wal_bytes = match &wal_start {
        Some(lsn) => wal_since(url, lsn).await,
        None => None,
    };

    let counts = store.counts().await?;
    let stages = if measure_stages {
        Some(cpu_stages(&store, &pipeline, catalog, options).await?)
    } else {
        None
    };
    store.close().await;
    // After the close: a backend reports its table counters when it exits
    // (when idle, only after up to ten seconds).
    let pg_tables = match wal_bytes {
        Some(wal_bytes) => table_writes(url)
            .await
            .map(|tables| PgWrites { wal_bytes, tables }),
        None => None,
    };
    let reports = expected.reports;
    ensure!(
        usize::try_from(inserted)? == reports && usize::try_from(counts.raw)? == reports,
        "{backend}: {inserted} reports pulled and {} stored, {reports} expected",
        counts.raw
    );
    ensure!(
        usize::try_from(run.read)? == reports && counts.pending == 0,
        "{backend}: the pipeline read {} reports and left {} pending, {reports} expected",
        run.read,
        counts.pending
    );
    ensure!(
        usize::try_from(counts.quarantined)? == expected.quarantined,
        "{backend}: {} reports quarantined, {} expected",
        counts.quarantined,
        expected.quarantined
    );
    let figures = EndToEnd {
        backend,
        reports,
        total,
        pull,
        pull_commit: Duration::from_nanos(sink.commit_ns.load(Ordering::Relaxed)),
        process: total.saturating_sub(pull),
        run,
        cpu_pull: cpu_pulled.saturating_sub(cpu_start),
        cpu_process: cpu_done.saturating_sub(cpu_pulled),
        db_cpu,
        load,
        stages,
        pg_tables,
        batch: options.batch,
    };
    print_end_to_end(&figures, &counts);
    Ok(figures)
}

/// An end-to-end run with the puller and the pipeline at once.
#[derive(Debug)]
struct Overlapped {
    reports: usize,
    total: Duration,
    /// Pipeline runs it took.
    runs: u32,
    /// CPU time of this process over the run.
    cpu: Duration,
    /// CPU time of the PostgreSQL backends over the run.
    db_cpu: Option<Duration>,
}

impl Overlapped {
    fn per_second(&self) -> f64 {
        self.reports as f64 / self.total.as_secs_f64()
    }
}

/// Pull → verdict → database as `lineprobe-sync run` does it: the puller
/// on a task of its own, the pipeline running again after every commit
/// that stored new reports, each while the other works. Timed until the
/// last report is pulled and processed.
async fn overlapped(url: &str, setup: &Setup<'_>) -> anyhow::Result<Overlapped> {
    let Setup {
        options, expected, ..
    } = *setup;
    let parts = Parts::open(url, setup).await?;
    let (store, puller, pipeline) = (parts.store, parts.puller, parts.pipeline);
    let sink = Arc::new(parts.sink);

    let cpu_start = process_cpu();
    let started = Instant::now();
    let mut pulling = tokio::spawn({
        let sink = Arc::clone(&sink);
        async move {
            let mut inserted = 0;
            loop {
                let rounds = puller.pull_once(&*sink).await;
                let round = rounds.first().context("the puller pulled no collector")?;
                if let Some(error) = &round.error {
                    bail!("pulling failed: {error}");
                }
                inserted += round.inserted;
                if round.caught_up {
                    return anyhow::Ok(inserted);
                }
            }
        }
    });
    let mut inserted = None;
    let mut read = 0;
    let mut runs = 0;
    loop {
        let run = pipeline.run_pending(&store, options.batch, |_| {}).await?;
        runs += 1;
        read += run.read;
        if run.read > 0 {
            continue;
        }
        // Nothing pending: done once the puller is, else wait for its
        // next commit (a commit made meanwhile has left its wake-up).
        if inserted.is_some() {
            break;
        }
        tokio::select! {
            () = sink.committed.notified() => {}
            ended = &mut pulling => {
                inserted = Some(ended.context("the puller task failed")??);
            }
        }
    }
    let total = started.elapsed();
    let cpu = process_cpu().saturating_sub(cpu_start);
    let db_cpu = postgres_backends_cpu(url).await;
    let counts = store.counts().await?;
    store.close().await;
    let reports = expected.reports;
    ensure!(
        inserted.and_then(|n| usize::try_from(n).ok()) == Some(reports)
            && usize::try_from(counts.raw)? == reports
            && usize::try_from(read)? == reports
            && counts.pending == 0,
        "overlapped run: {inserted:?} reports pulled, {} stored, {read} processed, {} left \
         pending; {reports} expected",
        counts.raw,
        counts.pending
    );
    let figures = Overlapped {
        reports,
        total,
        runs,
        cpu,
        db_cpu,
    };
    print_overlapped(&figures);
    Ok(figures)
}

fn print_overlapped(o: &Overlapped) {
    let per_report = |d: Duration| d.as_secs_f64() * 1e6 / o.reports as f64;
    println!("\nPostgreSQL: puller and pipeline at once, as `lineprobe-sync run` works");
    println!(
        "  {:>9.0} reports/s end to end ({} reports in {:.2} s, {} pipeline runs)",
        o.per_second(),
        o.reports,
        o.total.as_secs_f64(),
        o.runs
    );
    println!(
        "  CPU per report: this process {:.1} µs, PostgreSQL backends {}",
        per_report(o.cpu),
        o.db_cpu.map_or_else(
            || "unknown".to_owned(),
            |d| format!("{:.1} µs", per_report(d))
        )
    );
}

/// The CPU time of the PostgreSQL server processes serving the database
/// at `url` (its backends; the WAL writer and checkpointer are not counted).
async fn postgres_backends_cpu(url: &str) -> Option<Duration> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    let pids: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut conn)
    .await
    .ok()?;
    let _ = conn.close().await;
    let total = pids
        .iter()
        .map(|pid| cpu_of(&format!("/proc/{pid}/stat")))
        .sum::<Duration>();
    (total > Duration::ZERO).then_some(total)
}

/// The current WAL position of the server at `url`.
async fn wal_position(url: &str) -> Option<String> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(&mut conn)
        .await
        .ok()?;
    let _ = conn.close().await;
    Some(lsn)
}

/// What PostgreSQL wrote: WAL since `wal_start` (the whole server's, so
/// other clients' writes count too) and, per table, rows inserted, updated
/// (and how many of those were HOT updates, which touch no index) and the
/// table's size with its indexes and TOAST.
#[derive(Debug, Clone)]
struct PgWrites {
    wal_bytes: f64,
    tables: Vec<(String, i64, i64, i64, i64)>,
}

/// WAL written by the whole server since `wal_start`, in bytes.
async fn wal_since(url: &str, wal_start: &str) -> Option<f64> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    let wal_bytes: f64 =
        sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8")
            .bind(wal_start)
            .fetch_one(&mut conn)
            .await
            .ok()?;
    let _ = conn.close().await;
    Some(wal_bytes)
}

/// Per table: rows inserted, updated, HOT-updated, and its size, once every
/// other connection to the database has gone (and so reported its counters).
async fn table_writes(url: &str) -> Option<Vec<(String, i64, i64, i64, i64)>> {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    // A closed pool's backends exit a moment after their clients leave; an
    // idle one would hold its counters back for up to ten seconds, which
    // undercounted every table by up to a tenth.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await
        .ok()?;
        if others == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tables = sqlx::query_as(
        "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd, \
         pg_total_relation_size(relid) FROM pg_stat_user_tables \
         WHERE relname <> '_sqlx_migrations' ORDER BY pg_total_relation_size(relid) DESC",
    )
    .fetch_all(&mut conn)
    .await
    .ok()?;
    let _ = conn.close().await;
    Some(tables)
}

/// CPU cost per report of each step of the pipeline, on one thread and
/// without the database: decode and validate; then also classify and
/// resolve; then also judge; then the whole of `Pipeline::process` (the
/// records and their JSON included).
#[derive(Debug, Clone, Copy)]
struct Stages {
    reports: usize,
    extract: Duration,
    gather: Duration,
    judge: Duration,
    process: Duration,
    /// Average bytes of the evidence, reasons and path JSON and of the raw
    /// report.
    sizes: [usize; 4],
}

async fn cpu_stages(
    store: &Store,
    pipeline: &Pipeline,
    catalog: &Arc<Catalog>,
    options: &Options,
) -> anyhow::Result<Stages> {
    let mut rows = Vec::new();
    let mut after = 0;
    while rows.len() < options.stage_sample {
        let page = store.processed_raw(None, after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        rows.extend(page);
    }
    rows.truncate(options.stage_sample);
    let pipeline = pipeline.clone();
    let catalog = Arc::clone(catalog);
    tokio::task::spawn_blocking(move || -> anyhow::Result<Stages> {
        let classifier = Classifier::new(&ClassifierConfig::default())?;
        let timed = |f: &dyn Fn(&lineprobe_sync::RawReport) -> anyhow::Result<()>| {
            let start = thread_cpu();
            for raw in &rows {
                f(raw)?;
            }
            Ok::<_, anyhow::Error>(thread_cpu().saturating_sub(start))
        };
        let gather = |raw: &lineprobe_sync::RawReport| -> anyhow::Result<Option<()>> {
            let Ok(x) = extract(&raw.body, &raw.node_id, &catalog) else {
                return Ok(None);
            };
            let ev =
                LineEvidence::gather(&x.report, x.declared.clone(), &catalog, &classifier, |ip| {
                    pipeline.chain().resolve(&catalog, ip)
                })?;
            black_box(&ev);
            Ok(Some(()))
        };
        let extract_t = timed(&|raw| {
            let _ = black_box(extract(&raw.body, &raw.node_id, &catalog));
            Ok(())
        })?;
        let gather_t = timed(&|raw| gather(raw).map(|_| ()))?;
        let judge_t = timed(&|raw| {
            if let Ok(x) = extract(&raw.body, &raw.node_id, &catalog) {
                let ev = LineEvidence::gather(
                    &x.report,
                    x.declared.clone(),
                    &catalog,
                    &classifier,
                    |ip| pipeline.chain().resolve(&catalog, ip),
                )?;
                black_box(lineprobe_sync::judge(&ev));
            }
            Ok(())
        })?;
        let process_t = timed(&|raw| {
            black_box(pipeline.process(raw, false, 0)?);
            Ok(())
        })?;
        let mut sizes = [0usize; 4];
        let mut verdicts = 0;
        for raw in &rows {
            if let lineprobe_sync::Processed::Observation(o) = pipeline.process(raw, false, 0)? {
                verdicts += 1;
                sizes[0] += o.verdict.evidence_json.len();
                sizes[1] += o.verdict.reasons_json.len();
                sizes[2] += o.facts.path_json.len();
                sizes[3] += raw.body.len();
            }
        }
        let sizes = sizes.map(|n| n / verdicts.max(1));
        Ok(Stages {
            reports: rows.len(),
            extract: extract_t,
            gather: gather_t,
            judge: judge_t,
            process: process_t,
            sizes,
        })
    })
    .await?
}

fn print_end_to_end(f: &EndToEnd, counts: &lineprobe_sync::StoreCounts) {
    let secs = |d: Duration| d.as_secs_f64();
    let ms = |n: u64| Duration::from_millis(n).as_secs_f64();
    println!("\n{}: pull → verdict → database", f.backend);
    println!(
        "  {:>9.0} reports/s end to end ({} reports in {:.2} s)",
        f.per_second(),
        f.reports,
        secs(f.total)
    );
    println!(
        "  pull      {:>7.2} s  {:>9.0} reports/s  (database commits {:.2} s, HTTP + page \
         checks {:.2} s)",
        secs(f.pull),
        f.reports as f64 / secs(f.pull),
        secs(f.pull_commit),
        secs(f.pull.saturating_sub(f.pull_commit))
    );
    println!(
        "  pipeline  {:>7.2} s  {:>9.0} reports/s  (reading pending {:.2} s, CPU work {:.2} s \
         on {} workers, database apply {:.2} s; apply overlaps the next batch's CPU work)",
        secs(f.process),
        f.reports as f64 / secs(f.process),
        ms(f.run.fetch_ms),
        ms(f.run.process_ms),
        f.run.workers,
        ms(f.run.apply_ms),
    );
    let batches = f.run.read.div_ceil(u64::from(f.batch)).max(1);
    println!(
        "  database apply: {batches} batches of up to {} results, {:.0} ms per batch \
         ({:.1} µs per report)",
        f.batch,
        ms(f.run.apply_ms) * 1e3 / batches as f64,
        ms(f.run.apply_ms) * 1e6 / f.reports as f64
    );
    let per = |d: Duration| d.as_secs_f64() * 1e6 / f.reports as f64;
    let db = f.db_cpu.map_or_else(String::new, |d| {
        format!(", PostgreSQL backends {:.1} µs", per(d))
    });
    let all = f.cpu_pull + f.cpu_process + f.db_cpu.unwrap_or_default();
    println!(
        "  CPU per report: pull {:.1} µs, pipeline {:.1} µs (this process){db}; at most {:.0} \
         reports/s on {} idle cores (load average now {})",
        per(f.cpu_pull),
        per(f.cpu_process),
        f.run.workers as f64 * 1e6 / per(all),
        f.run.workers,
        f.load
    );
    if let Some(pg) = &f.pg_tables {
        let n = f.reports as f64;
        let tables: Vec<String> = pg
            .tables
            .iter()
            .filter(|t| t.1 + t.2 > 0)
            .map(|(name, ins, upd, hot, size)| {
                format!(
                    "{name} {ins} inserted, {upd} updated ({hot} HOT), {:.0} B/report",
                    *size as f64 / n
                )
            })
            .collect();
        println!(
            "  PostgreSQL wrote {:.1} KB of WAL per report (whole server); {}",
            pg.wal_bytes / n / 1024.0,
            tables.join("; ")
        );
    }
    if let Some(s) = f.stages {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / s.reports as f64;
        println!(
            "  CPU per report on one thread, no database ({} reports): extract + validate \
             {:.1} µs, classify + resolve {:.1} µs, judge {:.1} µs, records + JSON {:.1} µs; \
             Pipeline::process {:.1} µs",
            s.reports,
            per(s.extract),
            per(s.gather.saturating_sub(s.extract)),
            per(s.judge.saturating_sub(s.gather)),
            per(s.process.saturating_sub(s.judge)),
            per(s.process)
        );
        println!(
            "  record sizes: evidence JSON {} B, reasons JSON {} B, path JSON {} B per verdict; \
             raw report {} B",
            s.sizes[0], s.sizes[1], s.sizes[2], s.sizes[3]
        );
    }
    println!(
        "  stored: {} raw, {} quarantined, {} observations ({} repeats collapsed), {} \
         verdicts, {} lines, {} history",
        counts.raw,
        counts.quarantined,
        counts.observations,
        f.run.applied.observations_repeated,
        counts.verdicts,
        counts.lines,
        counts.line_history
    );
}

/// A PostgreSQL database made for the run.
struct FreshPg {
    admin_url: String,
    name: String,
    url: String,
}

impl FreshPg {
    async fn create(options: &Options) -> anyhow::Result<Option<FreshPg>> {
        use sqlx::Connection as _;
        /// The connections' TLS state is printed for the first database only.
        static SAID_TLS: std::sync::Once = std::sync::Once::new();
        let skip = |reason: String| -> anyhow::Result<Option<FreshPg>> {
            if options.require_lab {
                bail!("LINEPROBE_REQUIRE_LAB=1 but PostgreSQL cannot be used: {reason}");
            }
            println!(
                "\nPostgreSQL: SKIPPED: {reason} (set LINEPROBE_TEST_PG=postgres://… to run it)"
            );
            Ok(None)
        };
        let Some(admin_url) = options.pg_url.clone() else {
            return skip("LINEPROBE_TEST_PG is not set".to_owned());
        };
        let connect = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::PgConnection::connect(&admin_url),
        )
        .await;
        let mut admin = match connect {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return skip(format!("cannot connect to LINEPROBE_TEST_PG: {e}")),
            Err(_) => return skip("connecting to LINEPROBE_TEST_PG timed out".to_owned()),
        };
        let name = format!(
            "lp_bench_{}_{}",
            std::process::id(),
            Utc::now().timestamp_millis()
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .context("cannot create the benchmark database")?;
        if options.pg_log {
            // Diagnostics for the store: every statement on this database
            // with its server time goes to the server log (parameters left
            // out: they hold whole pages of reports).
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE {name} SET log_min_duration_statement = 0; \
                 ALTER DATABASE {name} SET log_parameter_max_length = 0"
            )))
            .execute(&mut admin)
            .await
            .context("cannot turn on statement logging for the benchmark database")?;
            println!("\nPostgreSQL: logging every statement of database {name} with its time");
        }
        // Whether the connections are encrypted matters to the figures:
        // TLS on both ends costs about 5 µs of CPU a report on each side.
        let tls: Option<bool> =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_optional(&mut admin)
                .await
                .context("cannot read the connection's TLS state")?;
        SAID_TLS.call_once(|| {
            if tls == Some(true) {
                println!(
                    "\nPostgreSQL: connections use TLS (the server offers it and the URL does not \
                     say otherwise; add ?sslmode=disable to LINEPROBE_TEST_PG for a server on this \
                     host, as a deployment on one host would connect)"
                );
            } else {
                println!("\nPostgreSQL: connections without TLS");
            }
        });
        admin.close().await?;
        let mut url = reqwest::Url::parse(&admin_url).context("LINEPROBE_TEST_PG is not a URL")?;
        url.set_path(&format!("/{name}"));
        Ok(Some(FreshPg {
            admin_url,
            name,
            url: url.to_string(),
        }))
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        use sqlx::Connection as _;
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .context("cannot drop the benchmark database")?;
        admin.close().await?;
        Ok(())
    }
}

// ──────────────────────────── the resolve stage ──────────────────────────

#[derive(Debug)]
struct ResolveFigures {
    lookups: usize,
    distinct: usize,
    chain: Duration,
    chain_first: Duration,
    raw: Duration,
}

impl ResolveFigures {
    fn ratio(&self) -> f64 {
        self.chain.as_secs_f64() / self.raw.as_secs_f64()
    }
}

fn compare_resolve(
    data: &IpData,
    catalog: &Arc<Catalog>,
    options: &Options,
    addresses: &[IpAddr],
) -> anyhow::Result<ResolveFigures> {
    // A chain of its own: nothing the end-to-end runs left behind helps it.
    let chain = data.chain(catalog, options.ipplan)?;
    let city = Reader::open_readfile(&data.city)?;
    let isp = Reader::open_readfile(&data.isp)?;
    let resolve = |chain: &Chain| -> anyhow::Result<Duration> {
        let started = Instant::now();
        for &ip in addresses {
            black_box(chain.resolve(catalog, black_box(ip))?);
        }
        Ok(started.elapsed())
    };
    let raw = || -> anyhow::Result<Duration> {
        let started = Instant::now();
        for &ip in addresses {
            let ip = black_box(ip);
            black_box(city.lookup(ip)?.decode::<geoip2::City<'_>>()?);
            black_box(isp.lookup(ip)?.decode::<geoip2::Isp<'_>>()?);
        }
        Ok(started.elapsed())
    };
    let chain_first = resolve(&chain)?;
    let mut chain_best = chain_first;
    let mut raw_best = raw()?;
    for _ in 1..options.resolve_rounds {
        raw_best = raw_best.min(raw()?);
        chain_best = chain_best.min(resolve(&chain)?);
    }
    let mut distinct = addresses.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let figures = ResolveFigures {
        lookups: addresses.len(),
        distinct: distinct.len(),
        chain: chain_best,
        chain_first,
        raw: raw_best,
    };
    let per = |d: Duration| d.as_secs_f64() * 1e9 / figures.lookups as f64;
    println!(
        "\nresolve stage (one thread; best of {} rounds)",
        options.resolve_rounds
    );
    println!(
        "  {} address lookups ({} distinct addresses) for the valid reports: egress, public \
         hops, target",
        figures.lookups, figures.distinct
    );
    println!(
        "  Chain::resolve          {:>8.3} s  {:>7.0} ns/lookup  (first round {:.3} s)",
        figures.chain.as_secs_f64(),
        per(figures.chain),
        figures.chain_first.as_secs_f64()
    );
    println!(
        "  raw lookup + decode     {:>8.3} s  {:>7.0} ns/lookup  (City + ISP file each)",
        figures.raw.as_secs_f64(),
        per(figures.raw)
    );
    println!("  ratio                   {:>8.2}×", figures.ratio());
    Ok(figures)
}

// ──────────────────────────────── summary ────────────────────────────────

fn summary(
    results: &[EndToEnd],
    at_once: Option<&Overlapped>,
    resolve: &ResolveFigures,
    options: &Options,
) {
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!("\nsummary");
    for r in results {
        println!(
            "  {:<10} {:>9.0} reports/s end to end",
            r.backend,
            r.per_second()
        );
    }
    if let Some(o) = at_once {
        println!(
            "  {:<10} {:>9.0} reports/s end to end, puller and pipeline at once",
            "PostgreSQL",
            o.per_second()
        );
    }
    match results.iter().find(|r| r.backend == "PostgreSQL") {
        Some(pg) => {
            println!(
                "  {} PostgreSQL end to end, pull then pipeline: {:.0} reports/s (goal ≥ {:.0})",
                verdict(pg.per_second() >= GOAL_PG_REPORTS_PER_S),
                pg.per_second(),
                GOAL_PG_REPORTS_PER_S
            );
            if let Some(o) = at_once {
                println!(
                    "  {} PostgreSQL end to end, puller and pipeline at once: {:.0} reports/s \
                     (goal ≥ {:.0})",
                    verdict(o.per_second() >= GOAL_PG_REPORTS_PER_S),
                    o.per_second(),
                    GOAL_PG_REPORTS_PER_S
                );
            }
        }
        None => println!(
            "  SKIP PostgreSQL end to end: not run{}",
            if options.postgres {
                " (LINEPROBE_TEST_PG not set or unreachable)"
            } else {
                " (not in LINEPROBE_BENCH_BACKENDS)"
            }
        ),
    }
    println!(
        "  {} resolve stage: {:.2}× its raw maxminddb lookups (goal ≤ {:.0}×)",
        verdict(resolve.ratio() <= GOAL_RESOLVE_RATIO),
        resolve.ratio(),
        GOAL_RESOLVE_RATIO
    );
}
