//! The province, city and carrier catalogs: the embedded files load, every
//! spelling databases and users give resolves to the right entry, and broken
//! catalogs are refused with a message that says what to fix.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use lineprobe_shared::{
    Carrier, CarrierId, CarrierKind, Catalog, CityCode, CityKind, Error, ProvinceCode, ProvinceKind,
};

fn cat() -> Catalog {
    Catalog::embedded().expect("embedded catalogs load")
}

fn pc(s: &str) -> ProvinceCode {
    ProvinceCode::new(s).expect("well-formed province code")
}

fn cid(s: &str) -> CarrierId {
    CarrierId::new(s).expect("well-formed carrier id")
}

fn repo_catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/catalog")
}

// ───────────────────────────── loading ─────────────────────────────

#[test]
fn embedded_catalog_has_34_provinces_each_with_cities() {
    let c = cat();
    assert_eq!(c.provinces().len(), 34);
    let ids: HashSet<_> = c.province_ids().collect();
    assert_eq!(ids.len(), 34);
    for p in c.provinces() {
        assert!(c.cities_in(&p.id).count() >= 1, "{} has no city", p.id);
    }
    let kinds = |k: ProvinceKind| c.provinces().iter().filter(|p| p.kind == k).count();
    assert_eq!(kinds(ProvinceKind::Municipality), 4);
    assert_eq!(kinds(ProvinceKind::AutonomousRegion), 5);
    assert_eq!(kinds(ProvinceKind::SpecialAdministrativeRegion), 2);
    assert_eq!(kinds(ProvinceKind::Province), 23);
}

#[test]
fn every_prefecture_level_division_is_listed_once() {
    let c = cat();
    let prefecture_level = c
        .cities()
        .iter()
        .filter(|city| {
            matches!(
                city.kind,
                CityKind::PrefectureCity
                    | CityKind::Prefecture
                    | CityKind::AutonomousPrefecture
                    | CityKind::League
            )
        })
        .count();
    assert_eq!(prefecture_level, 333);

    let mut codes = HashSet::new();
    for city in c.cities() {
        if let Some(code) = &city.code {
            assert!(codes.insert(code.clone()), "duplicate code {code}");
            let province = c.province_by_id(&city.province).unwrap();
            assert_eq!(
                &province.gb_code[..2],
                code.province_digits(),
                "{}",
                city.name_zh
            );
        }
    }
}

#[test]
fn special_regions_and_directly_administered_units_are_present() {
    let c = cat();
    assert_eq!(
        c.cities_in(&pc("CN-HK"))
            .filter(|x| x.kind == CityKind::District)
            .count(),
        18
    );
    assert_eq!(c.cities_in(&pc("CN-TW")).count(), 22);
    assert!(
        c.cities_in(&pc("CN-MO"))
            .filter(|x| x.kind == CityKind::Parish)
            .count()
            >= 7
    );
    assert_eq!(
        c.cities_in(&pc("CN-BJ"))
            .filter(|x| x.kind == CityKind::District)
            .count(),
        16
    );
    assert_eq!(
        c.cities_in(&pc("CN-SH"))
            .filter(|x| x.kind == CityKind::District)
            .count(),
        16
    );
    assert_eq!(
        c.cities_in(&pc("CN-TJ"))
            .filter(|x| x.kind == CityKind::District)
            .count(),
        16
    );
    assert_eq!(
        c.cities_in(&pc("CN-CQ"))
            .filter(|x| x.kind != CityKind::Municipality)
            .count(),
        38
    );
    for (code, name) in [
        ("429004", "仙桃市"),
        ("429005", "潜江市"),
        ("429006", "天门市"),
        ("429021", "神农架林区"),
        ("419001", "济源市"),
        ("659001", "石河子市"),
        ("469002", "琼海市"),
    ] {
        let city = c.city_by_code(&CityCode::new(code).unwrap()).unwrap();
        assert_eq!(city.name_zh, name);
    }
}

#[test]
fn load_dir_on_repo_catalogs_equals_embedded() {
    let from_dir = Catalog::load_dir(repo_catalog_dir()).unwrap();
    assert_eq!(from_dir, cat());
}

// ───────────────────────────── provinces ─────────────────────────────

#[test]
fn guangdong_in_every_spelling() {
    let c = cat();
    for s in [
        "广东",
        "广东省",
        "Guangdong Sheng",
        "Guangdong",
        "GUANGDONG",
        "Guangdong Province",
        "  guangdong   province ",
        "GD",
        "gd",
        "44",
        "440000",
        "CN-GD",
        "cn-gd",
        "ＣＮ－ＧＤ",
        "粤",
        "广东省\u{3000}",
    ] {
        assert_eq!(c.province(s).map(|p| p.id.as_str()), Some("CN-GD"), "{s:?}");
    }
}

#[test]
fn maxmind_subdivision_forms_resolve() {
    let c = cat();
    // MaxMind's test City database: iso_code "22", name "Jilin Sheng", zh "吉林".
    for s in [
        "22",
        "Jilin Sheng",
        "吉林",
        "吉林省",
        "吉",
        "Jilin",
        "CN-JL",
        "JL",
    ] {
        assert_eq!(c.province(s).map(|p| p.id.as_str()), Some("CN-JL"), "{s:?}");
    }
}

#[test]
fn easily_confused_provinces_stay_apart() {
    let c = cat();
    let cases = [
        ("山西", "CN-SX"),
        ("山西省", "CN-SX"),
        ("Shanxi", "CN-SX"),
        ("Shanxi Sheng", "CN-SX"),
        ("晋", "CN-SX"),
        ("陕西", "CN-SN"),
        ("陕西省", "CN-SN"),
        ("Shaanxi", "CN-SN"),
        ("Shaanxi Sheng", "CN-SN"),
        ("陕", "CN-SN"),
        ("内蒙古", "CN-NM"),
        ("内蒙古自治区", "CN-NM"),
        ("Inner Mongolia", "CN-NM"),
        ("Nei Mongol Zizhiqu", "CN-NM"),
        ("Inner Mongolia Autonomous Region", "CN-NM"),
        ("黑龙江", "CN-HL"),
        ("黑龙江省", "CN-HL"),
        ("Heilongjiang Sheng", "CN-HL"),
        ("广西壮族自治区", "CN-GX"),
        ("广西", "CN-GX"),
        ("Guangxi Zhuangzu Zizhiqu", "CN-GX"),
        ("Guangxi Zhuang Autonomous Region", "CN-GX"),
        ("宁夏回族自治区", "CN-NX"),
        ("Ningxia Huizu Zizhiqu", "CN-NX"),
        ("新疆维吾尔自治区", "CN-XJ"),
        ("Xinjiang Uyghur Autonomous Region", "CN-XJ"),
        ("西藏", "CN-XZ"),
        ("Tibet", "CN-XZ"),
        ("Xizang", "CN-XZ"),
        ("香港特别行政区", "CN-HK"),
        ("Hong Kong SAR", "CN-HK"),
        ("HK", "CN-HK"),
        ("Macau", "CN-MO"),
        ("Macao", "CN-MO"),
        ("澳門", "CN-MO"),
        ("台湾", "CN-TW"),
        ("Taiwan Sheng", "CN-TW"),
        ("Tianjin Shi", "CN-TJ"),
        ("Peking", "CN-BJ"),
        ("重庆市", "CN-CQ"),
        ("渝", "CN-CQ"),
        ("河北", "CN-HE"),
        ("河南", "CN-HA"),
        ("湖北", "CN-HB"),
        ("湖南", "CN-HN"),
        ("海南", "CN-HI"),
    ];
    for (s, want) in cases {
        assert_eq!(c.province(s).map(|p| p.id.as_str()), Some(want), "{s:?}");
    }
    for s in ["Shaanxii", "CN-XX", "99", "广", "山", "Mongolia", "Sheng"] {
        assert!(c.province(s).is_none(), "{s:?} should not resolve");
    }
}

#[test]
fn province_choices_list_every_id() {
    let c = cat();
    let choices = c.province_choices();
    for id in c.province_ids() {
        assert!(choices.contains(id.as_str()), "{id} missing from {choices}");
    }
    assert!(choices.contains("CN-GD (广东省)"), "{choices}");
}

// ───────────────────────────── cities ─────────────────────────────

#[test]
fn guangzhou_in_every_spelling() {
    let c = cat();
    let gd = pc("CN-GD");
    for s in [
        "广州",
        "广州市",
        "Guangzhou",
        "Guangzhou Shi",
        "Guangzhou City",
        "GUANGZHOU",
        "440100",
        "Canton",
    ] {
        for province in [Some(&gd), None] {
            let city = c.city(province, s);
            assert_eq!(
                city.and_then(|x| x.code.as_ref()).map(CityCode::as_str),
                Some("440100"),
                "{s:?} in {province:?}"
            );
        }
    }
    assert_eq!(c.city(None, "广东省广州市").unwrap().name_zh, "广州市");
    assert_eq!(c.city(Some(&gd), "广东广州").unwrap().name_zh, "广州市");
    // The right name in the wrong province is no match.
    assert!(c.city(Some(&pc("CN-GX")), "广州").is_none());
    assert!(c.city(Some(&pc("CN-GX")), "440100").is_none());
}

#[test]
fn ambiguous_city_names_need_a_province() {
    let c = cat();
    let code = |p: Option<&ProvinceCode>, s: &str| {
        c.city(p, s).and_then(|x| x.code.clone()).map(String::from)
    };
    // 朝阳: a district of Beijing and a prefecture-level city of Liaoning.
    assert_eq!(code(None, "朝阳"), None);
    assert_eq!(code(None, "Chaoyang"), None);
    assert_eq!(code(Some(&pc("CN-BJ")), "朝阳"), Some("110105".into()));
    assert_eq!(code(Some(&pc("CN-LN")), "Chaoyang"), Some("211300".into()));
    // Suzhou: 苏州 (Jiangsu) and 宿州 (Anhui); Taizhou: 泰州 and 台州.
    assert_eq!(code(None, "Suzhou"), None);
    assert_eq!(code(Some(&pc("CN-JS")), "Suzhou"), Some("320500".into()));
    assert_eq!(code(Some(&pc("CN-AH")), "Suzhou"), Some("341300".into()));
    assert_eq!(
        code(Some(&pc("CN-ZJ")), "Taizhou Shi"),
        Some("331000".into())
    );
    // Unique names resolve without a province.
    assert_eq!(code(None, "吉林"), Some("220200".into()));
    assert_eq!(code(None, "长春"), Some("220100".into()));
    assert_eq!(code(None, "Changchun"), Some("220100".into()));
    assert_eq!(code(None, "Xi'an"), Some("610100".into()));
    assert_eq!(code(None, "Xian"), Some("610100".into()));
    assert_eq!(code(None, "Urumqi"), Some("650100".into()));
    assert_eq!(code(None, "Ürümqi"), Some("650100".into()));
    assert_eq!(code(None, "Lhasa"), Some("540100".into()));
    assert_eq!(code(None, "延边"), Some("222400".into()));
    assert_eq!(code(None, "延边朝鲜族自治州"), Some("222400".into()));
    assert_eq!(code(None, "Xilingol League"), Some("152500".into()));
    assert_eq!(code(None, "神农架"), Some("429021".into()));
}

#[test]
fn municipalities_resolve_as_cities() {
    let c = cat();
    for (p, s, want) in [
        ("CN-BJ", "北京", "110000"),
        ("CN-BJ", "Beijing", "110000"),
        ("CN-SH", "上海市", "310000"),
        ("CN-CQ", "Chongqing", "500000"),
        ("CN-TJ", "天津", "120000"),
        ("CN-HK", "Hong Kong", "810000"),
        ("CN-MO", "Macau", "820000"),
    ] {
        let city = c.city(Some(&pc(p)), s).unwrap();
        assert_eq!(city.code.as_ref().unwrap().as_str(), want, "{s}");
        assert_eq!(city.kind, CityKind::Municipality);
    }
    let pudong = c.city(Some(&pc("CN-SH")), "浦东").unwrap();
    assert_eq!(pudong.name_zh, "浦东新区");
    assert_eq!(
        c.city(Some(&pc("CN-BJ")), "Haidian District")
            .unwrap()
            .name_zh,
        "海淀区"
    );
}

#[test]
fn hong_kong_macao_and_taiwan_entries_resolve_without_codes() {
    let c = cat();
    let hk = pc("CN-HK");
    let wan_chai = c.city(Some(&hk), "Wan Chai").unwrap();
    assert_eq!(wan_chai.name_zh, "湾仔区");
    assert!(wan_chai.code.is_none());
    assert_eq!(c.city(Some(&hk), "灣仔").unwrap().name_zh, "湾仔区");
    assert_eq!(c.city(None, "Sha Tin").unwrap().name_zh, "沙田区");
    assert_eq!(
        c.city(Some(&pc("CN-MO")), "Taipa").unwrap().name_zh,
        "嘉模堂区"
    );
    assert_eq!(c.city(None, "São Lázaro").unwrap().name_zh, "望德堂区");
    assert_eq!(c.city(None, "Sao Lazaro").unwrap().name_zh, "望德堂区");
    assert_eq!(
        c.city(Some(&pc("CN-TW")), "臺北市").unwrap().name_en,
        "Taipei"
    );
    assert_eq!(c.city(None, "Kaohsiung").unwrap().name_zh, "高雄市");
}

// ───────────────────────────── carriers ─────────────────────────────

fn carrier_id(c: Option<&Carrier>) -> Option<&str> {
    c.map(|x| x.id.as_str())
}

#[test]
fn carrier_names_and_aliases_resolve() {
    let c = cat();
    let cases = [
        ("中国移动", "china_mobile"),
        ("移动", "china_mobile"),
        ("China Mobile", "china_mobile"),
        ("china mobile", "china_mobile"),
        ("CMCC", "china_mobile"),
        ("cmcc", "china_mobile"),
        ("铁通", "china_mobile"),
        ("中国铁通", "china_mobile"),
        ("China TieTong", "china_mobile"),
        ("China Mobile Tietong", "china_mobile"),
        ("中国移动铁通", "china_mobile"),
        ("移动铁通", "china_mobile"),
        ("中国移动通信集团有限公司", "china_mobile"),
        ("广东移动", "china_mobile"),
        ("移动宽带", "china_mobile"),
        ("CHINANET", "china_telecom"),
        ("中国电信", "china_telecom"),
        ("电信", "china_telecom"),
        ("电信宽带", "china_telecom"),
        ("China Telecom Guangdong", "china_telecom"),
        ("CN2", "china_telecom"),
        ("ＣＨＩＮＡＮＥＴ", "china_telecom"),
        ("中国联通", "china_unicom"),
        ("联通", "china_unicom"),
        ("网通", "china_unicom"),
        ("CNCGROUP", "china_unicom"),
        ("AS9929", "china_unicom"),
        ("China Unicom Group", "china_unicom"),
        ("广电", "china_broadnet"),
        ("歌华有线", "china_broadnet"),
        ("长城宽带", "drpeng"),
        ("电信通", "drpeng"),
        ("Great Wall Broadband", "drpeng"),
        ("Dr.Peng", "drpeng"),
        ("Dr Peng", "drpeng"),
        ("鹏博士", "drpeng"),
        ("教育网", "cernet"),
        ("CERNET", "cernet"),
        ("科技网", "cstnet"),
        ("阿里云", "alibaba_cloud"),
        ("china_mobile", "china_mobile"),
    ];
    for (s, want) in cases {
        assert_eq!(carrier_id(c.carrier(s)), Some(want), "{s:?}");
    }
    for s in ["Comcast", "Mobile", "China", "中国", "宽带"] {
        assert_eq!(carrier_id(c.carrier(s)), None, "{s:?}");
    }
}

#[test]
fn asns_map_to_their_carrier() {
    let c = cat();
    for (asn, want) in [
        (4134, "china_telecom"),
        (4809, "china_telecom"),
        (4837, "china_unicom"),
        (9929, "china_unicom"),
        (9808, "china_mobile"),
        (56040, "china_mobile"),
        (9394, "china_mobile"),
        (24138, "china_mobile"),
        (58453, "china_mobile"),
        (4538, "cernet"),
        (7497, "cstnet"),
        (17964, "drpeng"),
        (17429, "china_broadnet"),
        (37963, "alibaba_cloud"),
        (45090, "tencent_cloud"),
    ] {
        assert_eq!(carrier_id(c.carrier_by_asn(asn)), Some(want), "AS{asn}");
    }
    assert!(c.carrier_by_asn(64512).is_none());
    assert!(c.carrier_by_asn(15169).is_none());
    assert!(c.carrier_by_asn(37963).unwrap().is_hosting());
    assert!(!c.carrier_by_asn(4134).unwrap().is_hosting());
}

#[test]
fn mobile_network_codes_map_to_their_carrier() {
    let c = cat();
    assert_eq!(carrier_id(c.carrier_by_mnc("00")), Some("china_mobile"));
    assert_eq!(carrier_id(c.carrier_by_mnc("01")), Some("china_unicom"));
    assert_eq!(carrier_id(c.carrier_by_mnc("11")), Some("china_telecom"));
    assert_eq!(carrier_id(c.carrier_by_mnc("15")), Some("china_broadnet"));
    assert_eq!(carrier_id(c.carrier_by_mnc("99")), None);
}

#[test]
fn organisation_strings_match_the_right_carrier() {
    let c = cat();
    let cases = [
        ("CNCGROUP China169 Backbone", Some("china_unicom")),
        ("China Unicom Liaoning", Some("china_unicom")),
        (
            "CHINA UNICOM Industrial Internet Backbone",
            Some("china_unicom"),
        ),
        ("Chinanet", Some("china_telecom")),
        ("China Telecom FUJIAN", Some("china_telecom")),
        ("China Telecom SHANGHAI", Some("china_telecom")),
        (
            "IDC, China Telecommunications Corporation",
            Some("china_telecom"),
        ),
        (
            "Guangdong Mobile Communication Co.Ltd.",
            Some("china_mobile"),
        ),
        ("Guangdong Mobile", Some("china_mobile")),
        (
            "China Mobile Communications Corporation",
            Some("china_mobile"),
        ),
        (
            "China TieTong Telecommunications Corporation",
            Some("china_mobile"),
        ),
        ("China TieTong", Some("china_mobile")),
        ("China Education and Research Network", Some("cernet")),
        ("CNIC-CAS", Some("cstnet")),
        (
            "Beijing Gehua Catv Network Co., Ltd.",
            Some("china_broadnet"),
        ),
        (
            "Beijing Dian-Xin-Tong Network Technologies Co., Ltd.",
            Some("drpeng"),
        ),
        ("北京电信通", Some("drpeng")),
        ("中国电信", Some("china_telecom")),
        (
            "Hangzhou Alibaba Advertising Co.,Ltd.",
            Some("alibaba_cloud"),
        ),
        (
            "Beijing Baidu Netcom Science and Technology Co., Ltd.",
            Some("baidu_cloud"),
        ),
        (
            "Shenzhen Tencent Computer Systems Company Limited",
            Some("tencent_cloud"),
        ),
        ("ＣＨＩＮＡ ＴＥＬＥＣＯＭ", Some("china_telecom")),
        // Look-alikes that are no Chinese access carrier.
        ("Beijing Teletron Telecom Engineering Co., Ltd.", None),
        ("China Central Television", None),
        ("SmarTone Mobile Communications Limited", None),
        ("T-Mobile USA, Inc.", None),
        ("LGCNS China", None),
        ("Google LLC", None),
        ("", None),
    ];
    for (org, want) in cases {
        assert_eq!(carrier_id(c.carrier_by_org(org)), want, "{org:?}");
    }
}

#[test]
fn registry_names_never_match_another_carrier() {
    // Each ASN's own registry name, run through the patterns, names its carrier
    // or nothing — a pattern must not claim a sibling's AS.
    let c = cat();
    for carrier in c.carriers() {
        for asn in &carrier.asns {
            if let Some(other) = c.carrier_by_org(&asn.name) {
                assert_eq!(other.id, carrier.id, "AS{} {:?}", asn.asn, asn.name);
            }
        }
        assert_eq!(
            c.carrier_by_org(&carrier.name_en).map(|x| &x.id),
            Some(&carrier.id),
            "{} does not match its own English name",
            carrier.id
        );
    }
}

#[test]
fn expected_upstreams() {
    let c = cat();
    let up = |d: &str, a: &str| c.is_expected_upstream(&cid(d), &cid(a));
    assert!(up("drpeng", "china_telecom"));
    assert!(up("drpeng", "china_unicom"));
    assert!(up("china_broadnet", "china_telecom"));
    assert!(up("china_broadnet", "china_unicom"));
    assert!(!up("china_mobile", "china_telecom"));
    assert!(!up("china_telecom", "drpeng"));
    assert!(!up("drpeng", "china_mobile"));
    assert!(!up("china_mobile", "china_mobile"));
    assert!(!up("no_such_carrier", "china_telecom"));
    // Tietong is China Mobile itself, not an upstream relation.
    assert_eq!(
        carrier_id(c.carrier("铁通")),
        carrier_id(c.carrier_by_asn(9808))
    );
}

#[test]
fn carrier_choices_list_declarable_carriers_only() {
    let c = cat();
    let choices = c.carrier_choices();
    for id in [
        "china_telecom",
        "china_unicom",
        "china_mobile",
        "china_broadnet",
        "drpeng",
        "cernet",
        "cstnet",
    ] {
        assert!(choices.contains(id), "{id} missing from {choices}");
    }
    assert!(!choices.contains("alibaba_cloud"), "{choices}");
    let hosting: Vec<_> = c
        .carriers()
        .iter()
        .filter(|x| x.kind == CarrierKind::Hosting)
        .collect();
    assert!(hosting.len() >= 7);
    assert!(c.carrier_ids().count() > hosting.len());
}

// ───────────────────────────── validation ─────────────────────────────

/// A fresh folder holding the repo's catalogs with one file edited.
struct Fixture(PathBuf);

impl Fixture {
    fn new(file: &str, edit: impl Fn(String) -> String) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "lineprobe-catalog-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp folder");
        for name in ["provinces.toml", "cities.toml", "carriers.toml"] {
            let text =
                std::fs::read_to_string(repo_catalog_dir().join(name)).expect("repo catalog file");
            let text = if name == file {
                let edited = edit(text.clone());
                assert_ne!(edited, text, "the fixture edit changed nothing");
                edited
            } else {
                text
            };
            std::fs::write(dir.join(name), text).expect("write fixture");
        }
        Self(dir)
    }

    /// Loads the folder and returns the catalog error's file and reason.
    fn error(&self) -> (String, String) {
        match Catalog::load_dir(&self.0) {
            Err(Error::Catalog { file, reason }) => {
                eprintln!("catalog {file}: {reason}");
                (file, reason)
            }
            other => panic!("expected a catalog error, got {other:?}"),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_mentions(reason: &str, parts: &[&str]) {
    for part in parts {
        assert!(reason.contains(part), "`{part}` not in: {reason}");
    }
}

#[test]
fn duplicate_carrier_alias_is_refused() {
    let f = Fixture::new("carriers.toml", |t| {
        t.replacen("aliases = [\"联通\",", "aliases = [\"移动\", \"联通\",", 1)
    });
    let (file, reason) = f.error();
    assert!(file.ends_with("carriers.toml"), "{file}");
    assert_mentions(
        &reason,
        &["移动", "china_unicom", "china_mobile", "remove it from one"],
    );
}

#[test]
fn duplicate_province_spelling_is_refused() {
    let f = Fixture::new("provinces.toml", |t| {
        t.replacen("aliases = [\"山西\"", "aliases = [\"山西\", \"Shaanxi\"", 1)
    });
    let (file, reason) = f.error();
    assert!(file.ends_with("provinces.toml"), "{file}");
    assert_mentions(&reason, &["Shaanxi", "CN-SX", "CN-SN"]);
}

#[test]
fn duplicate_city_spelling_within_a_province_is_refused() {
    let f = Fixture::new("cities.toml", |t| {
        t.replacen(
            "aliases = [\"深圳\"]",
            "aliases = [\"深圳\", \"Canton\"]",
            1,
        )
    });
    let (_, reason) = f.error();
    assert_mentions(&reason, &["Canton", "广州市", "深圳市", "CN-GD"]);
}

#[test]
fn unknown_province_reference_is_refused() {
    let f = Fixture::new("cities.toml", |t| {
        t.replacen("id = \"CN-HI\"", "id = \"CN-XX\"", 1)
    });
    let (file, reason) = f.error();
    assert!(file.ends_with("cities.toml"), "{file}");
    assert_mentions(&reason, &["CN-XX", "use one of", "CN-HI"]);
}

#[test]
fn code_province_mismatch_is_refused() {
    let f = Fixture::new("cities.toml", |t| {
        t.replacen("code = \"440100\"", "code = \"450199\"", 1)
    });
    let (_, reason) = f.error();
    assert_mentions(&reason, &["450199", "starts with 45", "CN-GD", "440000"]);
}

#[test]
fn duplicate_city_code_is_refused() {
    let f = Fixture::new("cities.toml", |t| {
        t.replacen("code = \"440300\"", "code = \"440100\"", 1)
    });
    let (_, reason) = f.error();
    assert_mentions(&reason, &["440100", "already used by 广州市"]);
}

#[test]
fn unknown_upstream_is_refused() {
    let f = Fixture::new("carriers.toml", |t| {
        t.replacen(
            "expected_upstreams = [\"china_telecom\", \"china_unicom\", \"cstnet\"]",
            "expected_upstreams = [\"china_telcom\"]",
            1,
        )
    });
    let (_, reason) = f.error();
    assert_mentions(
        &reason,
        &["drpeng", "china_telcom", "not a carrier", "china_telecom"],
    );
}

#[test]
fn bad_regex_is_refused() {
    let f = Fixture::new("carriers.toml", |t| {
        t.replacen(
            "org_pattern = '(?i)(unicom|",
            "org_pattern = '(?i)((unicom|",
            1,
        )
    });
    let (_, reason) = f.error();
    assert_mentions(
        &reason,
        &[
            "china_unicom",
            "org_pattern",
            "not a valid regular expression",
        ],
    );
}

#[test]
fn pattern_matching_everything_is_refused() {
    let f = Fixture::new("carriers.toml", |t| {
        t.replacen(
            "org_pattern = '(?i)(tencent|腾讯)'",
            "org_pattern = '(?i)(tencent|)'",
            1,
        )
    });
    let (_, reason) = f.error();
    assert_mentions(&reason, &["tencent_cloud", "empty string"]);
}

#[test]
fn duplicate_asn_is_refused() {
    let f = Fixture::new("carriers.toml", |t| {
        t.replacen("asn = 17964,", "asn = 4134,", 1)
    });
    let (_, reason) = f.error();
    assert_mentions(&reason, &["AS4134", "china_telecom", "drpeng"]);
}

#[test]
fn unknown_keys_are_refused() {
    let f = Fixture::new("provinces.toml", |t| {
        t.replacen("id = \"CN-GD\"", "id = \"CN-GD\"\ncolour = \"red\"", 1)
    });
    let (file, reason) = f.error();
    assert!(file.ends_with("provinces.toml"), "{file}");
    assert_mentions(&reason, &["unknown field `colour`"]);

    let f = Fixture::new("carriers.toml", |t| {
        t.replacen("kind = \"hosting\"", "kind = \"cloud\"", 1)
    });
    let (_, reason) = f.error();
    assert_mentions(&reason, &["cloud", "hosting"]);
}

#[test]
fn malformed_ids_are_refused_at_parse_time() {
    let f = Fixture::new("carriers.toml", |t| {
        t.replacen("id = \"drpeng\"", "id = \"Dr.Peng\"", 1)
    });
    let (_, reason) = f.error();
    assert_mentions(&reason, &["Dr.Peng", "snake_case"]);
}

#[test]
fn missing_file_is_an_io_error() {
    let f = Fixture::new("cities.toml", |t| t + "\n");
    std::fs::remove_file(f.0.join("cities.toml")).unwrap();
    match Catalog::load_dir(&f.0) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("cities.toml"), "{path}"),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}

// ───────────────────────── reference cross-check ─────────────────────────

#[test]
fn provinces_agree_with_reference_csv() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/china_provinces.csv"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        assert!(
            std::env::var_os("LINEPROBE_REQUIRE_SAMPLES").is_none(),
            "LINEPROBE_REQUIRE_SAMPLES is set but {path} is missing"
        );
        println!("skipped: reference data {path} not present");
        return;
    };
    let c = cat();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (iso, legacy, gb, zh, short, en, official, cap_zh, cap_en, aliases) = (
        col("iso_3166_2"),
        col("legacy_numeric_code"),
        col("gb_t_2260_code"),
        col("name_zh"),
        col("short_zh"),
        col("name_en"),
        col("iso_official_name"),
        col("capital_zh"),
        col("capital_en"),
        col("aliases"),
    );
    let mut rows = 0;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        rows += 1;
        let p = c
            .province(f[iso])
            .unwrap_or_else(|| panic!("{} missing", f[iso]));
        assert_eq!(p.id.as_str(), f[iso]);
        assert_eq!(p.legacy_code.to_string(), f[legacy], "{}", f[iso]);
        assert_eq!(p.gb_code, f[gb], "{}", f[iso]);
        assert_eq!(p.name_zh, f[zh], "{}", f[iso]);
        assert_eq!(p.short_zh, f[short], "{}", f[iso]);
        assert_eq!(p.name_en, f[en], "{}", f[iso]);
        assert_eq!(p.capital_zh, f[cap_zh], "{}", f[iso]);
        assert_eq!(p.capital_en, f[cap_en], "{}", f[iso]);
        // The reference misspells Ningxia's ISO name ("Huizi"); ours is fixed.
        assert_eq!(
            p.iso_name,
            f[official].replace("Huizi", "Huizu"),
            "{}",
            f[iso]
        );
        // Every spelling in the reference resolves back to the same province.
        for s in [f[legacy], f[gb], f[zh], f[short], f[en], &p.iso_name]
            .into_iter()
            .chain(f[aliases].split('|'))
            .filter(|s| !s.is_empty())
        {
            assert_eq!(c.province(s).map(|x| &x.id), Some(&p.id), "{s:?}");
        }
        // The capital is a city of the province.
        let capital = c.city(Some(&p.id), f[cap_zh]);
        assert!(
            capital.is_some(),
            "capital {} of {} not found",
            f[cap_zh],
            f[iso]
        );
    }
    assert_eq!(rows, 34);
}

// ───────────────────────────── robustness ─────────────────────────────

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    #[test]
    fn lookups_never_panic(s in "\\PC{0,40}", asn in proptest::prelude::any::<u32>()) {
        thread_local!(static CAT: Catalog = cat());
        CAT.with(|c| {
            let _ = c.province(&s);
            let _ = c.city(None, &s);
            let _ = c.city(Some(&pc("CN-GD")), &s);
            let _ = c.carrier(&s);
            let _ = c.carrier_by_org(&s);
            let _ = c.carrier_by_mnc(&s);
            let _ = c.carrier_by_asn(asn);
        });
    }
}
