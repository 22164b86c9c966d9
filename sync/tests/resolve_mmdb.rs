//! MaxMind-format sources: fixtures written here with `mmdb-writer`, and
//! MaxMind's own test databases when they are present.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use lineprobe_shared::Catalog;
use lineprobe_sync::{Chain, ChainConfig, IpSource, IpType, MmdbKind, MmdbSource};
use mmdb_writer::{IpVersion, Writer};
use serde_json::{Value, json};

// serde_json numbers are written as uint64; MaxMind writes the ASN as uint32.
#[derive(serde::Serialize)]
struct AsnRecord {
    autonomous_system_number: u32,
    autonomous_system_organization: &'static str,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::embedded().unwrap())
}

fn write_db(
    dir: &Path,
    file: &str,
    db_type: &str,
    v: IpVersion,
    rows: &[(&str, Value)],
) -> PathBuf {
    let mut w = Writer::builder(db_type).ip_version(v).build();
    for (net, value) in rows {
        w.insert(net.parse::<IpNet>().unwrap(), value).unwrap();
    }
    let path = dir.join(file);
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    path
}

fn open(name: &str, paths: &[PathBuf]) -> MmdbSource {
    MmdbSource::open(name, None, paths, catalog()).unwrap()
}

#[test]
fn kinds_come_from_the_database_type() {
    assert_eq!(MmdbKind::detect("GeoLite2-City"), Some(MmdbKind::City));
    assert_eq!(MmdbKind::detect("GeoIP2-Country"), Some(MmdbKind::City));
    assert_eq!(MmdbKind::detect("GeoLite2-ASN"), Some(MmdbKind::Asn));
    assert_eq!(MmdbKind::detect("GeoIP2-ISP"), Some(MmdbKind::Isp));
    assert_eq!(
        MmdbKind::detect("GeoIP2-Anonymous-IP"),
        Some(MmdbKind::AnonymousIp)
    );
    assert_eq!(MmdbKind::detect("dbip-city-ipv4"), Some(MmdbKind::Dbip));
    assert_eq!(MmdbKind::detect("My-Own-Thing"), None);
}

#[test]
fn geoip2_city_records_are_normalised_to_catalog_ids() {
    let dir = tempfile::tempdir().unwrap();
    let city = |iso: &str, sub_en: &str, city_zh: Option<&str>, city_en: &str| {
        let mut names = json!({ "en": city_en });
        if let Some(zh) = city_zh {
            names["zh-CN"] = json!(zh);
        }
        json!({
            "country": { "iso_code": "CN", "names": { "en": "China" } },
            "subdivisions": [ { "iso_code": iso, "names": { "en": sub_en } } ],
            "city": { "names": names },
        })
    };
    let path = write_db(
        dir.path(),
        "city.mmdb",
        "GeoLite2-City",
        IpVersion::V6,
        &[
            // MaxMind's numeric code and "Sheng" name for Jilin.
            (
                "175.16.199.0/24",
                city("22", "Jilin Sheng", Some("长春"), "Changchun"),
            ),
            // GeoLite2's letter code, English city name only.
            ("113.64.0.0/16", city("GD", "Guangdong", None, "Guangzhou")),
            ("2001:250::/31", json!({ "country": { "iso_code": "CN" } })),
            (
                "81.2.69.0/24",
                json!({ "country": { "iso_code": "GB" }, "subdivisions": [ { "iso_code": "ENG" } ], "city": { "names": { "en": "London" } } }),
            ),
            ("1.36.0.0/16", json!({ "country": { "iso_code": "HK" } })),
        ],
    );
    let src = open("geolite2-city", &[path]);
    assert_eq!(src.kinds(), vec![MmdbKind::City]);
    assert!(
        src.data_version().starts_with("GeoLite2-City "),
        "{}",
        src.data_version()
    );

    let f = src.lookup(ip("175.16.199.37")).unwrap().unwrap();
    assert_eq!(f.province.unwrap().as_str(), "CN-JL");
    assert_eq!(f.city.unwrap().as_str(), "220100");
    let f = src.lookup(ip("113.64.1.1")).unwrap().unwrap();
    assert_eq!(f.province.unwrap().as_str(), "CN-GD");
    assert_eq!(f.city.unwrap().as_str(), "440100");
    // China, but no province: nothing to say.
    assert!(src.lookup(ip("2001:250::1")).unwrap().is_none());
    // Abroad: nothing the catalog knows.
    assert!(src.lookup(ip("81.2.69.1")).unwrap().is_none());
    assert_eq!(
        src.lookup(ip("1.36.1.1"))
            .unwrap()
            .unwrap()
            .province
            .unwrap()
            .as_str(),
        "CN-HK"
    );
    let none = src.lookup(ip("8.8.8.8")).unwrap();
    assert!(none.is_none(), "{none:?}");
}

#[test]
fn dbip_flat_files_route_ipv4_and_ipv6_to_the_right_file() {
    let dir = tempfile::tempdir().unwrap();
    let flat =
        |state: &str, city: &str| json!({ "country_code": "CN", "state1": state, "city": city });
    let v4 = write_db(
        dir.path(),
        "dbip4.mmdb",
        "dbip-city-ipv4",
        IpVersion::V4,
        &[("58.16.0.0/16", flat("Guangdong", "Guangzhou"))],
    );
    let v6 = write_db(
        dir.path(),
        "dbip6.mmdb",
        "dbip-city-ipv6",
        IpVersion::V6,
        &[("2408:8000::/20", flat("Jilin", "Changchun"))],
    );
    let src = open("dbip", &[v4.clone(), v6]);
    let f = src.lookup(ip("58.16.3.4")).unwrap().unwrap();
    assert_eq!(
        (f.province.unwrap().as_str(), f.city.unwrap().as_str()),
        ("CN-GD", "440100")
    );
    // The IPv4-only file is not asked (it would error); the IPv6 one answers.
    let f = src.lookup(ip("2408:8000::1")).unwrap().unwrap();
    assert_eq!(
        (f.province.unwrap().as_str(), f.city.unwrap().as_str()),
        ("CN-JL", "220100")
    );
    // An IPv4-mapped address is looked up as IPv4.
    assert!(src.lookup(ip("::ffff:58.16.3.4")).unwrap().is_some());
    // The IPv4 file alone has no answer for IPv6, and no error either.
    let only4 = open("dbip4", &[v4]);
    assert!(only4.lookup(ip("2408:8000::1")).unwrap().is_none());
}

#[test]
fn asn_and_anonymous_databases_and_a_chain_over_them() {
    let dir = tempfile::tempdir().unwrap();
    let asn = write_db(
        dir.path(),
        "asn.mmdb",
        "GeoLite2-ASN",
        IpVersion::V6,
        &[
            (
                "49.64.0.0/11",
                json!({ "autonomous_system_organization": "Chinanet" }),
            ),
            (
                "27.192.0.0/11",
                json!({ "autonomous_system_organization": "CNCGROUP China169 Backbone" }),
            ),
        ],
    );
    write_db(
        dir.path(),
        "anon.mmdb",
        "GeoIP2-Anonymous-IP",
        IpVersion::V6,
        &[(
            "49.64.9.0/24",
            json!({ "is_anonymous": true, "is_anonymous_vpn": true, "is_hosting_provider": true }),
        )],
    );
    let mut writer = Writer::builder("GeoLite2-ASN").build();
    writer
        .insert(
            "49.64.0.0/11".parse::<IpNet>().unwrap(),
            &AsnRecord {
                autonomous_system_number: 4134,
                autonomous_system_organization: "Chinanet",
            },
        )
        .unwrap();
    writer
        .insert(
            "27.192.0.0/11".parse::<IpNet>().unwrap(),
            &json!({ "autonomous_system_organization": "CNCGROUP China169 Backbone" }),
        )
        .unwrap();
    std::fs::write(&asn, writer.to_bytes().unwrap()).unwrap();
    let asn_src = open("asn", &[asn]);
    let f = asn_src.lookup(ip("49.64.0.1")).unwrap().unwrap();
    assert_eq!(
        (f.asn, f.carrier.unwrap().as_str()),
        (Some(4134), "china_telecom")
    );
    let f = asn_src.lookup(ip("27.192.0.1")).unwrap().unwrap();
    assert_eq!((f.asn, f.carrier.unwrap().as_str()), (None, "china_unicom"));

    // The same chain from TOML, relative paths from the config's folder.
    let config = ChainConfig::from_toml(
        "chain.toml",
        "[[source]]\nkind = \"mmdb\"\nname = \"anon\"\npath = \"anon.mmdb\"\n\n\
         [[source]]\nkind = \"mmdb\"\nname = \"asn\"\nversion = \"2026-11\"\npaths = [\"asn.mmdb\"]\n",
    )
    .unwrap();
    let cat = catalog();
    let chain: Chain = config.build(dir.path(), &cat).unwrap();
    let r = chain.resolve(&cat, ip("49.64.9.9")).unwrap();
    let anon = r.anonymous.unwrap();
    assert!(anon.value.vpn && anon.value.hosting && !anon.value.tor);
    assert_eq!(anon.source, "anon");
    let c = r.carrier.unwrap();
    assert_eq!(
        (c.value.as_str(), c.source.as_str(), c.version.as_str()),
        ("china_telecom", "asn", "2026-11")
    );
    assert_eq!(r.ip_type.map(|t| t.value), None::<IpType>);

    let e = ChainConfig::from_toml("chain.toml", "[[source]]\nkind = \"carrier-pigeon\"\n")
        .unwrap_err();
    assert!(e.to_string().starts_with("chain.toml"), "{e}");
    let bad = write_db(dir.path(), "odd.mmdb", "Acme-Weather", IpVersion::V6, &[]);
    let e = MmdbSource::open("odd", None, &[bad], catalog()).unwrap_err();
    assert!(e.to_string().contains("GeoLite2-ASN"), "{e}");
}

// ─────────────────────────── MaxMind's test files ───────────────────────────

fn sample(file: &str) -> Option<PathBuf> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/maxmind-test/"
    ))
    .join(file);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("LINEPROBE_REQUIRE_SAMPLES").is_none(),
        "LINEPROBE_REQUIRE_SAMPLES is set but {} is missing",
        path.display()
    );
    println!("skipped: {} is absent", path.display());
    None
}

#[test]
fn maxmind_city_test_file_china_records() {
    let Some(path) = sample("GeoLite2-City-Test.mmdb") else {
        return;
    };
    let src = open("geolite2-city", &[path]);
    let f = src.lookup(ip("175.16.199.1")).unwrap().unwrap();
    assert_eq!(f.province.unwrap().as_str(), "CN-JL");
    assert_eq!(f.city.unwrap().as_str(), "220100");
    // Chinese, but no subdivision: no province, no city.
    assert!(src.lookup(ip("2001:250::1")).unwrap().is_none());
    assert!(src.lookup(ip("2001:252::1")).unwrap().is_none());
}

#[test]
fn maxmind_asn_test_file_china_records() {
    let Some(path) = sample("GeoLite2-ASN-Test.mmdb") else {
        return;
    };
    let src = open("geolite2-asn", &[path]);
    for (addr, asn, carrier) in [
        ("49.64.0.1", 4134, "china_telecom"),
        ("183.0.0.1", 4134, "china_telecom"),
        ("240e::1", 4134, "china_telecom"),
        ("111.0.0.1", 9808, "china_mobile"),
        ("36.192.0.1", 9394, "china_mobile"),
        ("27.192.0.1", 4837, "china_unicom"),
    ] {
        let f = src.lookup(ip(addr)).unwrap().unwrap();
        assert_eq!(f.asn, Some(asn), "{addr}");
        assert_eq!(f.carrier.unwrap().as_str(), carrier, "{addr}");
    }
}

#[test]
fn maxmind_isp_test_file_china_records() {
    let Some(path) = sample("GeoIP2-ISP-Test.mmdb") else {
        return;
    };
    let src = open("geoip2-isp", &[path]);
    for (addr, carrier) in [
        ("101.0.0.1", "china_telecom"),  // "China Telecom FUJIAN", no ASN
        ("101.16.0.1", "china_unicom"),  // "China Unicom Hebei"
        ("101.144.0.1", "china_mobile"), // "China TieTong"
        ("101.4.0.1", "cernet"),
        ("112.0.0.1", "china_mobile"),
    ] {
        let f = src.lookup(ip(addr)).unwrap().unwrap();
        assert_eq!(
            f.carrier.map(|c| c.to_string()).as_deref(),
            Some(carrier),
            "{addr}"
        );
    }
    let f = src.lookup(ip("101.0.0.1")).unwrap().unwrap();
    assert_eq!(f.org.as_deref(), Some("China Telecom FUJIAN"));
}

#[test]
fn maxmind_anonymous_ip_test_file() {
    let Some(path) = sample("GeoIP2-Anonymous-IP-Test.mmdb") else {
        return;
    };
    let src = open("geoip2-anonymous-ip", &[path]);
    let a = src
        .lookup(ip("81.2.69.1"))
        .unwrap()
        .unwrap()
        .anonymous
        .unwrap();
    assert!(a.vpn && a.proxy && a.hosting && a.tor && a.residential_proxy);
    let a = src
        .lookup(ip("186.30.236.1"))
        .unwrap()
        .unwrap()
        .anonymous
        .unwrap();
    assert!(a.proxy && !a.vpn && !a.tor);
    let a = src
        .lookup(ip("abcd:1000::1"))
        .unwrap()
        .unwrap()
        .anonymous
        .unwrap();
    assert!(a.proxy);
    let none = src.lookup(ip("8.8.8.8")).unwrap();
    assert!(none.is_none(), "{none:?}");
}

#[test]
fn maxmind_connection_type_test_file() {
    let Some(path) = sample("GeoIP2-Connection-Type-Test.mmdb") else {
        return;
    };
    let src = open("geoip2-connection-type", &[path]);
    for (addr, want) in [
        ("1.0.0.1", IpType::Residential),      // Cable/DSL
        ("1.0.1.1", IpType::Mobile),           // Cellular
        ("201.243.200.1", IpType::Enterprise), // Corporate
        ("214.78.120.1", IpType::Unknown),     // Satellite
        ("2003::1", IpType::Residential),
    ] {
        let f = src.lookup(ip(addr)).unwrap().unwrap();
        assert_eq!(f.ip_type, Some(want), "{addr}");
        assert_eq!(f.carrier, None, "{addr}: the type alone names no carrier");
    }
    assert!(src.lookup(ip("8.8.8.8")).unwrap().is_none());
}

#[test]
fn an_isp_record_without_a_known_name_falls_back_to_its_chinese_mobile_network_code() {
    let dir = tempfile::tempdir().unwrap();
    let record = |mcc: &str, mnc: &str| {
        json!({ "isp": "Wireless Subscribers", "mobile_country_code": mcc,
                "mobile_network_code": mnc })
    };
    let path = write_db(
        dir.path(),
        "isp.mmdb",
        "GeoIP2-ISP",
        IpVersion::V6,
        &[
            ("10.0.0.0/24", record("460", "00")),
            ("10.0.1.0/24", record("460", "11")),
            ("10.0.2.0/24", record("460", "01")),
            // Another country's network 00: not a Chinese carrier.
            ("10.0.3.0/24", record("310", "00")),
            ("10.0.4.0/24", record("460", "99")),
        ],
    );
    let src = open("isp", &[path]);
    for (addr, want) in [
        ("10.0.0.1", Some("china_mobile")),
        ("10.0.1.1", Some("china_telecom")),
        ("10.0.2.1", Some("china_unicom")),
        ("10.0.3.1", None),
        ("10.0.4.1", None),
    ] {
        let f = src.lookup(ip(addr)).unwrap().unwrap();
        assert_eq!(f.carrier.map(|c| c.to_string()).as_deref(), want, "{addr}");
        assert_eq!(f.org.as_deref(), Some("Wireless Subscribers"), "{addr}");
    }
}

#[test]
fn an_isp_records_own_name_beats_the_announcing_as() {
    // Dr.Peng space announced by China Telecom's AS4847: the ISP database
    // names the access carrier, an ASN table only the announcer.
    #[derive(serde::Serialize)]
    struct IspRecord {
        autonomous_system_number: u32,
        autonomous_system_organization: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        isp: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        organization: Option<&'static str>,
    }
    let rows = [
        (
            "10.1.0.0/24",
            IspRecord {
                autonomous_system_number: 4847,
                autonomous_system_organization: "China Networks Inter-Exchange",
                isp: Some("Beijing Dr.Peng Telecom & Media Group"),
                organization: Some("Great Wall Broadband"),
            },
        ),
        // A name the catalog does not know: the ASN decides.
        (
            "10.1.1.0/24",
            IspRecord {
                autonomous_system_number: 4134,
                autonomous_system_organization: "Chinanet",
                isp: Some("Some Reseller Ltd"),
                organization: None,
            },
        ),
        // Neither name nor ASN known: the AS's own name.
        (
            "10.1.2.0/24",
            IspRecord {
                autonomous_system_number: 4_200_000_001,
                autonomous_system_organization: "China Unicom Beijing Province Network",
                isp: None,
                organization: None,
            },
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let mut w = Writer::builder("GeoIP2-ISP")
        .ip_version(IpVersion::V6)
        .build();
    for (net, record) in &rows {
        w.insert(net.parse::<IpNet>().unwrap(), record).unwrap();
    }
    let path = dir.path().join("isp.mmdb");
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    let src = open("isp", &[path]);
    for (addr, want) in [
        ("10.1.0.1", "drpeng"),
        ("10.1.1.1", "china_telecom"),
        ("10.1.2.1", "china_unicom"),
    ] {
        let f = src.lookup(ip(addr)).unwrap().unwrap();
        assert_eq!(
            f.carrier.map(|c| c.to_string()).as_deref(),
            Some(want),
            "{addr}"
        );
    }
}
