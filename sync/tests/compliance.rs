//! The verdict: every finding code and every verdict, fill, the keys, and
//! gathering the evidence from an extracted report. `Resolved` values are
//! built by hand, as the resolver chain would give them.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::LazyLock;

use lineprobe_shared::{CarrierId, Catalog, CityCode, Classifier, ClassifierConfig, ProvinceCode};
use lineprobe_sync::{
    Anonymous, Attribute, Attributed, DeclaredFacts, DeviceProxy, Egress, Finding, FindingCode,
    IpRole, IpType, LineEvidence, Outcome, PublicHop, Resolved, Verdict, VerdictKind, extract,
    judge, line_key, observation_key,
};
use serde_json::{Value, json};

static CATALOG: LazyLock<Catalog> = LazyLock::new(|| Catalog::embedded().unwrap());

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn version(source: &str) -> String {
    match source {
        "ipplan" => "2026-01".to_owned(),
        "geolite2-asn" => "2026-02-10".to_owned(),
        "anon" => "2026-02-11".to_owned(),
        other => format!("{other}-v1"),
    }
}

fn at<T>(value: T, source: &str) -> Attributed<T> {
    Attributed {
        value,
        source: source.to_owned(),
        version: version(source),
    }
}

/// A `Resolved` built attribute by attribute.
#[derive(Default)]
struct R(Resolved);

impl R {
    fn carrier(mut self, id: &str) -> Self {
        self.0.carrier = Some(at(CarrierId::new(id).unwrap(), "geolite2-asn"));
        self
    }
    fn province(mut self, code: &str) -> Self {
        self.0.province = Some(at(ProvinceCode::new(code).unwrap(), "ipplan"));
        self
    }
    fn city(mut self, code: &str) -> Self {
        self.0.city = Some(at(CityCode::new(code).unwrap(), "ipplan"));
        self
    }
    fn asn(mut self, asn: u32) -> Self {
        self.0.asn = Some(at(asn, "geolite2-asn"));
        self
    }
    fn ip_type(mut self, t: IpType) -> Self {
        self.0.ip_type = Some(at(t, "ipplan"));
        self
    }
    fn anonymous(mut self, a: Anonymous) -> Self {
        self.0.anonymous = Some(at(a, "anon"));
        self
    }
    fn done(self) -> Resolved {
        self.0
    }
}

fn mobile_sz() -> Resolved {
    R::default()
        .carrier("china_mobile")
        .province("CN-GD")
        .city("440300")
        .done()
}

fn telecom_sz() -> Resolved {
    R::default()
        .carrier("china_telecom")
        .province("CN-GD")
        .city("440300")
        .done()
}

fn declared(province: Option<&str>, city: Option<&str>, carrier: Option<&str>) -> DeclaredFacts {
    DeclaredFacts {
        province: province.map(|p| ProvinceCode::new(p).unwrap()),
        city: city.map(str::to_owned),
        city_code: city.and_then(|c| CityCode::new(c).ok()),
        carrier: carrier.map(|c| CarrierId::new(c).unwrap()),
    }
}

fn hop(ttl: u8, addr: &str, resolved: Resolved) -> PublicHop {
    PublicHop {
        ttl,
        ip: ip(addr),
        resolved,
    }
}

#[allow(clippy::unnecessary_wraps)] // builds the `Option` field the evidence holds
fn egress(addr: &str, resolved: Resolved) -> Option<Egress> {
    Some(Egress {
        ip: ip(addr),
        public: true,
        resolved,
    })
}

/// A China Mobile line in Shenzhen, declared as such, and judged so.
fn mobile_line() -> LineEvidence<'static> {
    LineEvidence {
        catalog: &CATALOG,
        declared: declared(Some("CN-GD"), Some("440300"), Some("china_mobile")),
        device_proxy: DeviceProxy::default(),
        egress: egress("120.196.200.7", mobile_sz()),
        public_hops: vec![
            hop(3, "120.196.10.1", mobile_sz()),
            hop(
                4,
                "221.183.1.1",
                R::default().carrier("china_mobile").done(),
            ),
        ],
        target_carrier: None,
        first_public_after_silence: false,
    }
}

fn finding(v: &Verdict, code: FindingCode) -> &Finding {
    v.finding(code)
        .unwrap_or_else(|| panic!("no {code} in {:#?}", v.reasons))
}

fn outcome(v: &Verdict, code: FindingCode) -> Outcome {
    finding(v, code).outcome
}

fn codes(v: &Verdict) -> BTreeSet<FindingCode> {
    v.reasons.iter().map(|f| f.code).collect()
}

// ───────────────────────────── scenarios ─────────────────────────────

fn urban_village() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.public_hops = vec![
        hop(3, "183.56.1.1", telecom_sz()),
        hop(
            4,
            "202.97.12.1",
            R::default().carrier("china_telecom").done(),
        ),
    ];
    ev.egress = egress("183.56.200.9", telecom_sz());
    ev
}

fn tietong() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    // The resolver maps AS9394 (China TieTong) to china_mobile.
    let tt = R::default()
        .carrier("china_mobile")
        .asn(9394)
        .province("CN-GD")
        .city("440300")
        .done();
    ev.public_hops = vec![hop(3, "211.98.1.1", tt.clone())];
    ev.egress = egress("211.98.100.1", tt);
    ev
}

fn drpeng_over_telecom() -> LineEvidence<'static> {
    let mut ev = urban_village();
    ev.declared = declared(Some("CN-GD"), Some("440300"), Some("drpeng"));
    ev
}

fn other_province() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.egress = egress(
        "111.13.1.1",
        R::default()
            .carrier("china_mobile")
            .province("CN-BJ")
            .city("110000")
            .done(),
    );
    ev
}

fn other_city() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.egress = egress(
        "120.197.1.1",
        R::default()
            .carrier("china_mobile")
            .province("CN-GD")
            .city("440100")
            .done(),
    );
    ev
}

fn alibaba_egress() -> LineEvidence<'static> {
    let mut ev = urban_village();
    ev.declared = declared(Some("CN-GD"), Some("440300"), Some("china_telecom"));
    ev.egress = egress(
        "47.88.1.1",
        R::default()
            .carrier("alibaba_cloud")
            .province("CN-ZJ")
            .city("330100")
            .done(),
    );
    ev
}

fn device_proxy_alone() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.device_proxy = DeviceProxy {
        system_configured: true,
        env_configured: false,
    };
    ev
}

fn multi_level() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.public_hops = vec![
        hop(3, "120.196.10.1", mobile_sz()),
        hop(
            5,
            "202.97.12.1",
            R::default().carrier("china_telecom").done(),
        ),
        hop(
            7,
            "219.158.1.1",
            R::default().carrier("china_unicom").done(),
        ),
    ];
    ev
}

fn nothing_resolves() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.public_hops = vec![hop(3, "120.196.10.1", Resolved::default())];
    ev.egress = egress("120.196.200.7", Resolved::default());
    ev
}

fn first_hop_in_cloud() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.public_hops = vec![hop(
        2,
        "47.88.1.1",
        R::default().carrier("alibaba_cloud").done(),
    )];
    ev
}

fn anonymous_egress() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    let vpn = Anonymous {
        vpn: true,
        ..Anonymous::default()
    };
    let r = R::default()
        .carrier("china_mobile")
        .province("CN-GD")
        .city("440300")
        .anonymous(vpn)
        .done();
    ev.egress = egress("120.196.200.7", r);
    ev
}

fn idc_egress() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.egress = egress(
        "120.196.99.1",
        R::default().ip_type(IpType::Idc).province("CN-GD").done(),
    );
    ev
}

fn no_public_hop() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.public_hops = Vec::new();
    ev
}

fn private_egress() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.egress = Some(Egress {
        ip: ip("192.168.1.23"),
        public: false,
        resolved: Resolved::default(),
    });
    ev
}

fn no_egress() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.egress = None;
    ev
}

fn egress_without_region() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.egress = egress("120.196.200.7", R::default().carrier("china_mobile").done());
    ev
}

fn city_and_carrier_missing() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.declared = declared(Some("CN-GD"), None, None);
    ev
}

fn only_carrier_declared() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.declared = declared(None, None, Some("china_mobile"));
    ev
}

fn unknown_city_text() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.declared = declared(Some("CN-GD"), Some("某某镇"), Some("china_mobile"));
    ev
}

fn all_scenarios() -> Vec<(&'static str, LineEvidence<'static>)> {
    vec![
        ("mobile_line", mobile_line()),
        ("urban_village", urban_village()),
        ("tietong", tietong()),
        ("drpeng_over_telecom", drpeng_over_telecom()),
        ("other_province", other_province()),
        ("other_city", other_city()),
        ("alibaba_egress", alibaba_egress()),
        ("device_proxy_alone", device_proxy_alone()),
        ("multi_level", multi_level()),
        ("nothing_resolves", nothing_resolves()),
        ("first_hop_in_cloud", first_hop_in_cloud()),
        ("anonymous_egress", anonymous_egress()),
        ("idc_egress", idc_egress()),
        ("no_public_hop", no_public_hop()),
        ("private_egress", private_egress()),
        ("no_egress", no_egress()),
        ("egress_without_region", egress_without_region()),
        ("city_and_carrier_missing", city_and_carrier_missing()),
        ("only_carrier_declared", only_carrier_declared()),
        ("unknown_city_text", unknown_city_text()),
    ]
}

// ─────────────────────────────── verdicts ───────────────────────────────

#[test]
fn a_mobile_line_through_a_mobile_first_hop_is_compliant() {
    let v = judge(&mobile_line());
    assert_eq!(v.kind, VerdictKind::Compliant);
    assert_eq!(v.kind.as_str(), "compliant");
    assert_eq!(outcome(&v, FindingCode::CarrierMatch), Outcome::Pass);
    assert_eq!(outcome(&v, FindingCode::ProvinceMatch), Outcome::Pass);
    assert_eq!(outcome(&v, FindingCode::CityMatch), Outcome::Pass);
    for signal in [
        FindingCode::EgressCarrierDiffersFromFirstHop,
        FindingCode::EgressHosting,
        FindingCode::FirstHopHosting,
        FindingCode::DeviceProxy,
        FindingCode::MultiLevelPath,
    ] {
        assert_eq!(outcome(&v, signal), Outcome::Pass, "{signal}");
    }
    // No anonymity source answered: unknown, not pass.
    assert_eq!(outcome(&v, FindingCode::EgressAnonymous), Outcome::Unknown);
    let carrier = v.actual.carrier.as_ref().unwrap();
    assert_eq!(carrier.value, "china_mobile");
    assert_eq!(carrier.name, "中国移动 China Mobile");
    assert_eq!(carrier.provenance.role, IpRole::FirstPublicHop);
    assert_eq!(carrier.provenance.ip, ip("120.196.10.1"));
    assert_eq!(carrier.provenance.ttl, Some(3));
    assert_eq!(carrier.provenance.source, "geolite2-asn");
    assert_eq!(carrier.provenance.version, "2026-02-10");
    let province = v.actual.province.as_ref().unwrap();
    assert_eq!(province.value, "CN-GD");
    assert_eq!(province.provenance.role, IpRole::Egress);
    assert_eq!(v.actual.city.as_ref().unwrap().value, "440300");
    assert!(v.filled.is_empty());
    assert_eq!(
        v.data_versions.iter().collect::<Vec<_>>(),
        vec![
            (&"geolite2-asn".to_owned(), &"2026-02-10".to_owned()),
            (&"ipplan".to_owned(), &"2026-01".to_owned()),
        ]
    );
}

#[test]
fn an_urban_village_mobile_line_on_telecom_is_non_compliant() {
    let v = judge(&urban_village());
    assert_eq!(v.kind, VerdictKind::NonCompliant);
    let f = finding(&v, FindingCode::CarrierMismatch);
    assert_eq!(f.outcome, Outcome::Fail);
    assert!(
        f.message.contains("declared 中国移动 China Mobile"),
        "{}",
        f.message
    );
    assert!(
        f.message.contains("中国电信 China Telecom"),
        "{}",
        f.message
    );
    assert!(
        f.message.contains("first public hop 183.56.1.1 (TTL 3)"),
        "{}",
        f.message
    );
    assert_eq!(f.evidence.to_value()["declared"], "china_mobile");
    assert_eq!(f.evidence.to_value()["actual"], "china_telecom");
    assert_eq!(
        f.evidence.to_value()["provenance"]["source"],
        "geolite2-asn"
    );
    // The egress agrees with the line: no proxy.
    assert_eq!(
        outcome(&v, FindingCode::EgressCarrierDiffersFromFirstHop),
        Outcome::Pass
    );
    // The IP check still ran and passed.
    assert_eq!(outcome(&v, FindingCode::ProvinceMatch), Outcome::Pass);
}

#[test]
fn a_tietong_hop_is_china_mobile() {
    let v = judge(&tietong());
    assert_eq!(v.kind, VerdictKind::Compliant);
    let f = finding(&v, FindingCode::CarrierMatch);
    assert!(f.message.contains("AS9394"), "{}", f.message);
    assert!(f.message.contains("subsidiary"), "{}", f.message);
}

#[test]
fn a_drpeng_line_over_a_telecom_upstream_is_compliant() {
    let v = judge(&drpeng_over_telecom());
    assert_eq!(v.kind, VerdictKind::Compliant);
    assert_eq!(
        outcome(&v, FindingCode::CarrierViaExpectedUpstream),
        Outcome::Pass
    );
    assert!(v.finding(FindingCode::CarrierMismatch).is_none());

    // Hop on Telecom, egress on Unicom: both upstreams of Dr.Peng, no proxy.
    let mut ev = drpeng_over_telecom();
    ev.egress = egress(
        "221.4.1.1",
        R::default()
            .carrier("china_unicom")
            .province("CN-GD")
            .city("440300")
            .done(),
    );
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::Compliant);
    let f = finding(&v, FindingCode::EgressCarrierDiffersFromFirstHop);
    assert_eq!(f.outcome, Outcome::Pass);
    // Neither is an upstream of the other: the sentence says what relates
    // them (the declared carrier), not "an expected upstream relation".
    assert!(
        f.message
            .contains("both are expected upstreams of the declared 鹏博士"),
        "{}",
        f.message
    );
    // The same pair on a China Telecom line is a proxy signal.
    ev.declared = declared(Some("CN-GD"), Some("440300"), Some("china_telecom"));
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::ProxySuspected);
    assert_eq!(
        outcome(&v, FindingCode::EgressCarrierDiffersFromFirstHop),
        Outcome::Signal
    );
}

#[test]
fn a_cable_line_over_unicom_is_compliant() {
    let mut ev = mobile_line();
    ev.declared = declared(Some("CN-GD"), None, Some("china_broadnet"));
    let unicom = R::default()
        .carrier("china_unicom")
        .province("CN-GD")
        .city("440300")
        .done();
    ev.public_hops = vec![hop(3, "221.4.1.1", unicom.clone())];
    ev.egress = egress("221.4.2.2", unicom);
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::Compliant);
    assert_eq!(
        outcome(&v, FindingCode::CarrierViaExpectedUpstream),
        Outcome::Pass
    );
}

#[test]
fn an_egress_in_another_province_is_a_violating_ip() {
    let v = judge(&other_province());
    assert_eq!(v.kind, VerdictKind::ViolatingIp);
    let f = finding(&v, FindingCode::ProvinceMismatch);
    assert_eq!(f.outcome, Outcome::Fail);
    assert!(
        f.message.contains("declared 广东省 (CN-GD)"),
        "{}",
        f.message
    );
    assert!(f.message.contains("北京市 (CN-BJ)"), "{}", f.message);
    assert_eq!(f.evidence.to_value()["declared"], "CN-GD");
    assert_eq!(f.evidence.to_value()["actual"], "CN-BJ");
    assert_eq!(f.evidence.to_value()["source"], "ipplan");
    assert_eq!(outcome(&v, FindingCode::CityMismatch), Outcome::Fail);
    assert!(v.filled.is_empty());
    assert_eq!(v.actual.province.as_ref().unwrap().value, "CN-BJ");
}

#[test]
fn an_egress_in_another_city_of_the_province_is_a_violating_ip() {
    let v = judge(&other_city());
    assert_eq!(v.kind, VerdictKind::ViolatingIp);
    assert_eq!(outcome(&v, FindingCode::ProvinceMatch), Outcome::Pass);
    let f = finding(&v, FindingCode::CityMismatch);
    assert!(f.message.contains("深圳市 (440300)"), "{}", f.message);
    assert!(f.message.contains("广州市 (440100)"), "{}", f.message);
}

#[test]
fn districts_of_one_municipality_are_one_city() {
    let beijing = |city: &str| {
        R::default()
            .carrier("china_unicom")
            .province("CN-BJ")
            .city(city)
            .done()
    };
    let mut ev = mobile_line();
    ev.declared = declared(Some("CN-BJ"), Some("110105"), Some("china_unicom"));
    ev.egress = egress("123.112.0.9", beijing("110108"));
    ev.public_hops = vec![hop(3, "123.112.0.1", beijing("110108"))];
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::Compliant, "{:#?}", v.reasons);
    let f = finding(&v, FindingCode::CityMatch);
    assert!(f.message.contains("北京市 (110000)"), "{}", f.message);
    assert!(f.message.contains("海淀区 (110108)"), "{}", f.message);

    // Not across municipalities.
    ev.egress = egress(
        "123.112.0.9",
        R::default()
            .carrier("china_unicom")
            .province("CN-BJ")
            .city("120101")
            .done(),
    );
    assert_eq!(judge(&ev).kind, VerdictKind::ViolatingIp);
}

#[test]
fn a_declared_district_matches_its_city() {
    let mut ev = mobile_line();
    ev.declared = declared(Some("CN-GD"), Some("440305"), Some("china_mobile"));
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::Compliant);
    let f = finding(&v, FindingCode::CityMatch);
    assert!(f.message.contains("440305 (in 深圳市)"), "{}", f.message);
}

#[test]
fn non_compliance_wins_over_a_violating_ip() {
    let mut ev = urban_village();
    ev.egress = egress(
        "183.56.200.9",
        R::default()
            .carrier("china_telecom")
            .province("CN-HN")
            .done(),
    );
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::NonCompliant);
    assert_eq!(outcome(&v, FindingCode::ProvinceMismatch), Outcome::Fail);
}

#[test]
fn an_egress_in_a_cloud_behind_a_telecom_hop_is_a_proxy() {
    let v = judge(&alibaba_egress());
    assert_eq!(v.kind, VerdictKind::ProxySuspected);
    assert_eq!(v.kind.as_str(), "proxy_suspected");
    let f = finding(&v, FindingCode::EgressHosting);
    assert_eq!(f.outcome, Outcome::Signal);
    assert!(f.message.contains("阿里云 Alibaba Cloud"), "{}", f.message);
    assert_eq!(
        outcome(&v, FindingCode::EgressCarrierDiffersFromFirstHop),
        Outcome::Signal
    );
    // The proxied egress says nothing about the line: no IP check, no fill.
    assert_eq!(outcome(&v, FindingCode::IpCheckSkipped), Outcome::Unknown);
    assert!(v.finding(FindingCode::ProvinceMismatch).is_none());
    assert!(v.finding(FindingCode::ProvinceMatch).is_none());
    assert!(v.filled.is_empty());
    // The line is still the Telecom hop's, and where that hop is.
    assert_eq!(v.actual.carrier.as_ref().unwrap().value, "china_telecom");
    assert_eq!(outcome(&v, FindingCode::CarrierMatch), Outcome::Pass);
    let province = v.actual.province.as_ref().unwrap();
    assert_eq!(province.value, "CN-GD");
    assert_eq!(province.provenance.role, IpRole::FirstPublicHop);
}

#[test]
fn a_hop_in_the_receivers_network_does_not_place_a_proxied_line() {
    // The first hop knows its carrier but not where it is; the only hop
    // that knows a province is in the receiver's own network (Unicom,
    // Beijing), which ends every path: it places the receiver, not the line.
    let mut ev = alibaba_egress();
    ev.public_hops = vec![
        hop(
            3,
            "183.56.1.1",
            R::default().carrier("china_telecom").done(),
        ),
        hop(
            6,
            "123.112.0.1",
            R::default()
                .carrier("china_unicom")
                .province("CN-BJ")
                .city("110000")
                .done(),
        ),
    ];
    ev.target_carrier = Some(at(CarrierId::new("china_unicom").unwrap(), "geolite2-asn"));
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::ProxySuspected);
    assert_eq!(v.actual.carrier.as_ref().unwrap().value, "china_telecom");
    assert!(v.actual.province.is_none(), "{:?}", v.actual.province);
    assert!(v.actual.city.is_none(), "{:?}", v.actual.city);

    // A later hop of another network still stands in.
    ev.public_hops[1] = hop(
        5,
        "202.97.12.1",
        R::default()
            .carrier("china_telecom")
            .province("CN-GD")
            .done(),
    );
    let v = judge(&ev);
    let province = v.actual.province.as_ref().unwrap();
    assert_eq!(province.value, "CN-GD");
    assert_eq!(province.provenance.role, IpRole::PublicHop);
    assert_eq!(province.provenance.ttl, Some(5));
}

#[test]
fn proxy_suspicion_wins_over_non_compliance() {
    let mut ev = alibaba_egress();
    ev.declared = declared(Some("CN-GD"), Some("440300"), Some("china_mobile"));
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::ProxySuspected);
    assert_eq!(outcome(&v, FindingCode::CarrierMismatch), Outcome::Fail);
}

#[test]
fn an_idc_or_anonymous_egress_is_a_proxy() {
    let v = judge(&idc_egress());
    assert_eq!(v.kind, VerdictKind::ProxySuspected);
    let f = finding(&v, FindingCode::EgressHosting);
    assert_eq!(f.outcome, Outcome::Signal);
    assert!(f.message.contains("idc"), "{}", f.message);

    let v = judge(&anonymous_egress());
    assert_eq!(v.kind, VerdictKind::ProxySuspected);
    let f = finding(&v, FindingCode::EgressAnonymous);
    assert_eq!(f.outcome, Outcome::Signal);
    assert!(f.message.contains("anonymous VPN"), "{}", f.message);
    assert_eq!(f.evidence.to_value()["anonymous"]["value"]["vpn"], true);
    // Flags all clear: the check passes.
    let mut ev = anonymous_egress();
    ev.egress.as_mut().unwrap().resolved.anonymous = Some(at(Anonymous::default(), "anon"));
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::Compliant);
    assert_eq!(outcome(&v, FindingCode::EgressAnonymous), Outcome::Pass);
    assert_eq!(v.data_versions.get("anon").unwrap(), "2026-02-11");
}

#[test]
fn a_device_proxy_alone_is_only_a_signal() {
    let v = judge(&device_proxy_alone());
    assert_eq!(v.kind, VerdictKind::Compliant);
    let f = finding(&v, FindingCode::DeviceProxy);
    assert_eq!(f.outcome, Outcome::Signal);
    assert_eq!(f.evidence.to_value()["system_configured"], true);

    // With an egress that disagrees, it is a proxy (the strong signal decides).
    let mut ev = alibaba_egress();
    ev.device_proxy = DeviceProxy {
        system_configured: false,
        env_configured: true,
    };
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::ProxySuspected);
    assert_eq!(outcome(&v, FindingCode::DeviceProxy), Outcome::Signal);
}

#[test]
fn a_path_changing_carrier_twice_is_a_multi_level_proxy() {
    let v = judge(&multi_level());
    assert_eq!(v.kind, VerdictKind::ProxySuspected);
    let f = finding(&v, FindingCode::MultiLevelPath);
    assert_eq!(f.outcome, Outcome::Signal);
    assert_eq!(f.evidence.to_value()["carrier_changes"], 2);
    assert!(f.message.contains("→"), "{}", f.message);

    // The destination's own network ends the path and is no level.
    let mut ev = multi_level();
    ev.target_carrier = Some(at(CarrierId::new("china_unicom").unwrap(), "geolite2-asn"));
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::Compliant);
    assert_eq!(outcome(&v, FindingCode::MultiLevelPath), Outcome::Pass);
    assert_eq!(
        finding(&v, FindingCode::MultiLevelPath).evidence.to_value()["carrier_changes"],
        1
    );

    // Hops after the egress address are not counted either.
    let mut ev = multi_level();
    ev.egress = egress("202.97.12.1", mobile_sz());
    let v = judge(&ev);
    assert_eq!(outcome(&v, FindingCode::MultiLevelPath), Outcome::Pass);

    // Related carriers (a Dr.Peng line's upstreams) are no change.
    let mut ev = multi_level();
    ev.declared = declared(Some("CN-GD"), None, Some("drpeng"));
    ev.public_hops[0] = hop(3, "183.56.1.1", telecom_sz());
    ev.egress = egress("183.56.200.9", telecom_sz());
    let v = judge(&ev);
    assert_eq!(outcome(&v, FindingCode::MultiLevelPath), Outcome::Pass);
    assert_eq!(v.kind, VerdictKind::Compliant);
}

#[test]
fn a_first_hop_in_a_cloud_means_the_trace_was_tunnelled() {
    let v = judge(&first_hop_in_cloud());
    assert_eq!(v.kind, VerdictKind::ProxySuspected);
    assert_eq!(outcome(&v, FindingCode::FirstHopHosting), Outcome::Signal);
    // A hosting network is not the line's carrier, and the proxied egress
    // is not used in its place.
    assert!(v.actual.carrier.is_none());
    assert_eq!(outcome(&v, FindingCode::CarrierUnknown), Outcome::Unknown);
}

#[test]
fn nothing_resolving_is_indeterminate() {
    let v = judge(&nothing_resolves());
    assert_eq!(v.kind, VerdictKind::Indeterminate);
    assert_eq!(v.kind.as_str(), "indeterminate");
    assert_eq!(outcome(&v, FindingCode::CarrierUnknown), Outcome::Unknown);
    assert_eq!(outcome(&v, FindingCode::RegionUnknown), Outcome::Unknown);
    assert_eq!(outcome(&v, FindingCode::MultiLevelPath), Outcome::Unknown);
    assert_eq!(outcome(&v, FindingCode::EgressHosting), Outcome::Unknown);
    assert!(v.actual.carrier.is_none());
    assert!(v.filled.is_empty());
    assert!(v.data_versions.is_empty());
}

#[test]
fn without_a_public_hop_the_egress_gives_the_carrier() {
    let v = judge(&no_public_hop());
    assert_eq!(v.kind, VerdictKind::Compliant);
    assert_eq!(outcome(&v, FindingCode::NoPublicHop), Outcome::Unknown);
    let carrier = v.actual.carrier.as_ref().unwrap();
    assert_eq!(carrier.provenance.role, IpRole::Egress);
    assert_eq!(carrier.provenance.ttl, None);

    // A later public hop stands in for an unknown first one.
    let mut ev = mobile_line();
    ev.public_hops[0].resolved = Resolved::default();
    let v = judge(&ev);
    let carrier = v.actual.carrier.as_ref().unwrap();
    assert_eq!(carrier.provenance.role, IpRole::PublicHop);
    assert_eq!(carrier.provenance.ttl, Some(4));

    // Not a hop of the receiver's own network: the egress speaks then.
    let mut ev = mobile_line();
    ev.public_hops = vec![
        hop(3, "120.196.10.1", Resolved::default()),
        hop(
            4,
            "202.97.1.1",
            R::default().carrier("china_telecom").done(),
        ),
    ];
    ev.target_carrier = Some(at(CarrierId::new("china_telecom").unwrap(), "geolite2-asn"));
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::Compliant, "{:#?}", v.reasons);
    let carrier = v.actual.carrier.as_ref().unwrap();
    assert_eq!(carrier.value, "china_mobile");
    assert_eq!(carrier.provenance.role, IpRole::Egress);
}

/// A China Mobile line whose access hops stayed silent: the only public
/// hops that answered are China Telecom's, the receiver's own network.
fn silent_access_receiver_on_telecom() -> LineEvidence<'static> {
    let mut ev = mobile_line();
    ev.public_hops = vec![
        hop(
            7,
            "202.97.1.1",
            R::default()
                .carrier("china_telecom")
                .province("CN-SH")
                .done(),
        ),
        hop(
            8,
            "202.97.1.9",
            R::default().carrier("china_telecom").done(),
        ),
    ];
    ev.target_carrier = Some(at(CarrierId::new("china_telecom").unwrap(), "geolite2-asn"));
    ev.first_public_after_silence = true;
    ev
}

#[test]
fn a_research_network_hop_is_called_what_it_is() {
    let mut ev = mobile_line();
    ev.declared = declared(Some("CN-BJ"), None, Some("cernet"));
    ev.public_hops = vec![hop(3, "202.112.0.1", R::default().carrier("cernet").done())];
    let v = judge(&ev);
    let f = finding(&v, FindingCode::FirstHopHosting);
    assert_eq!(f.outcome, Outcome::Pass);
    assert!(
        f.message.contains("a research and education network"),
        "{}",
        f.message
    );
    let v = judge(&mobile_line());
    assert!(
        finding(&v, FindingCode::FirstHopHosting)
            .message
            .contains("an access network")
    );
}

#[test]
fn a_first_hop_in_the_receivers_network_after_silence_does_not_stand_for_the_line() {
    let v = judge(&silent_access_receiver_on_telecom());
    assert_eq!(v.kind, VerdictKind::Compliant, "{:#?}", v.reasons);
    let carrier = v.actual.carrier.as_ref().unwrap();
    assert_eq!(carrier.value, "china_mobile");
    assert_eq!(carrier.provenance.role, IpRole::Egress);
    let f = finding(&v, FindingCode::FirstHopInReceiverNetwork);
    assert_eq!(f.outcome, Outcome::Unknown);
    assert!(
        f.message.contains("202.97.1.1") && f.message.contains("TTL 7"),
        "{}",
        f.message
    );
    // No proxy signal from comparing the egress with the receiver's hop.
    assert_ne!(
        outcome(&v, FindingCode::EgressCarrierDiffersFromFirstHop),
        Outcome::Signal
    );

    // When the hop before it answered, the first public hop is the line's
    // (a line on the receiver's own carrier, leaving elsewhere).
    let mut ev = silent_access_receiver_on_telecom();
    ev.first_public_after_silence = false;
    let v = judge(&ev);
    assert!(v.finding(FindingCode::FirstHopInReceiverNetwork).is_none());
    assert_eq!(v.kind, VerdictKind::ProxySuspected, "{:#?}", v.reasons);

    // An egress on the receiver's carrier too: the line may well be on it.
    let mut ev = silent_access_receiver_on_telecom();
    ev.egress = egress(
        "202.96.1.7",
        R::default()
            .carrier("china_telecom")
            .province("CN-GD")
            .done(),
    );
    let v = judge(&ev);
    assert!(v.finding(FindingCode::FirstHopInReceiverNetwork).is_none());
    assert_eq!(v.actual.carrier.as_ref().unwrap().value, "china_telecom");
    assert_eq!(v.kind, VerdictKind::NonCompliant, "{:#?}", v.reasons);

    // A later hop on another network: the path does not only end there.
    let mut ev = silent_access_receiver_on_telecom();
    ev.public_hops.push(hop(
        9,
        "218.30.1.1",
        R::default().carrier("china_unicom").done(),
    ));
    let v = judge(&ev);
    assert!(v.finding(FindingCode::FirstHopInReceiverNetwork).is_none());
}

#[test]
fn gather_tells_whether_the_first_public_hop_came_after_silence() {
    let classifier = Classifier::new(&ClassifierConfig {
        extra_public: vec!["203.0.113.0/24".parse().unwrap()],
    })
    .unwrap();
    let after_silence = |hops: Value| {
        let mut doc = report_json();
        doc["trace"]["hops"] = hops;
        let report = extract(&serde_json::to_vec(&doc).unwrap(), "edge-sz-1", &CATALOG).unwrap();
        LineEvidence::gather(
            &report.report,
            report.declared.clone(),
            &CATALOG,
            &classifier,
            |_| Ok::<_, std::convert::Infallible>(Resolved::default()),
        )
        .unwrap()
        .first_public_after_silence
    };
    let private = |ttl: u8| json!({"ttl": ttl, "addrs": ["192.168.1.1"], "rtt_ms": [0.4]});
    let silent = |ttl: u8| json!({"ttl": ttl, "addrs": []});
    let public = |ttl: u8| json!({"ttl": ttl, "addrs": ["203.0.113.9"], "rtt_ms": [5.0]});
    assert!(!after_silence(json!([private(1), public(2)])));
    assert!(!after_silence(json!([public(1)])));
    assert!(after_silence(json!([private(1), silent(2), public(3)])));
    // TTLs missing from the trace answered nothing either.
    assert!(after_silence(json!([private(1), public(4)])));
    assert!(after_silence(json!([public(3)])));
    // Only the hop before the first public one counts.
    assert!(!after_silence(json!([
        silent(1),
        private(2),
        public(3),
        silent(4)
    ])));
}

#[test]
fn a_non_public_or_missing_egress_is_not_checked() {
    let v = judge(&private_egress());
    let f = finding(&v, FindingCode::EgressNotPublic);
    assert_eq!(f.outcome, Outcome::Unknown);
    assert!(f.message.contains("192.168.1.23"), "{}", f.message);
    assert_eq!(v.kind, VerdictKind::Compliant);
    assert!(v.finding(FindingCode::ProvinceMatch).is_none());
    // Where the line is comes from its first hop instead.
    let province = v.actual.province.as_ref().unwrap();
    assert_eq!(province.provenance.role, IpRole::FirstPublicHop);

    let v = judge(&no_egress());
    assert_eq!(outcome(&v, FindingCode::EgressMissing), Outcome::Unknown);
    assert_eq!(v.kind, VerdictKind::Compliant);
}

#[test]
fn an_egress_without_a_region_cannot_be_checked() {
    let v = judge(&egress_without_region());
    assert_eq!(outcome(&v, FindingCode::RegionUnknown), Outcome::Unknown);
    assert_eq!(v.kind, VerdictKind::Compliant);
    assert!(v.actual.province.is_none());
    assert!(v.filled.is_empty());
}

#[test]
fn a_violating_ip_wins_over_indeterminate() {
    let mut ev = nothing_resolves();
    ev.egress = egress("120.196.200.7", R::default().province("CN-BJ").done());
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::ViolatingIp);
}

// ───────────────────────────────── fill ─────────────────────────────────

#[test]
fn missing_city_and_carrier_are_filled_when_the_province_matches() {
    let v = judge(&city_and_carrier_missing());
    assert_eq!(v.kind, VerdictKind::Compliant);
    assert_eq!(
        outcome(&v, FindingCode::CarrierUndeclared),
        Outcome::Unknown
    );
    assert_eq!(outcome(&v, FindingCode::ProvinceMatch), Outcome::Pass);
    let filled: Vec<_> = v
        .filled
        .iter()
        .map(|f| (f.attribute, f.value.as_str(), f.provenance.role))
        .collect();
    assert_eq!(
        filled,
        vec![
            (Attribute::City, "440300", IpRole::Egress),
            (Attribute::Carrier, "china_mobile", IpRole::FirstPublicHop),
        ]
    );
    assert_eq!(v.filled[0].name, "深圳市 (440300)");
    assert_eq!(v.filled[0].provenance.source, "ipplan");
    assert_eq!(v.filled[0].provenance.version, "2026-01");
}

#[test]
fn nothing_is_filled_when_the_province_does_not_match() {
    let mut ev = other_province();
    ev.declared = declared(Some("CN-GD"), None, None);
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::ViolatingIp);
    assert!(v.filled.is_empty());
}

#[test]
fn a_line_declaring_only_its_carrier_gets_its_region_filled() {
    let v = judge(&only_carrier_declared());
    assert_eq!(v.kind, VerdictKind::Compliant);
    assert_eq!(outcome(&v, FindingCode::RegionUndeclared), Outcome::Unknown);
    let filled: Vec<_> = v.filled.iter().map(|f| f.attribute).collect();
    assert_eq!(filled, vec![Attribute::Province, Attribute::City]);
}

#[test]
fn a_matching_city_fills_the_missing_province() {
    let mut ev = mobile_line();
    ev.declared = declared(None, Some("440300"), Some("china_mobile"));
    let v = judge(&ev);
    assert_eq!(outcome(&v, FindingCode::CityMatch), Outcome::Pass);
    assert_eq!(v.filled.len(), 1);
    assert_eq!(v.filled[0].attribute, Attribute::Province);
    assert_eq!(v.filled[0].value, "CN-GD");
    assert_eq!(v.filled[0].name, "广东省 (CN-GD)");
}

#[test]
fn a_city_declared_without_its_province_places_the_line_in_that_province() {
    // Declared Shenzhen, no province; the egress is in Fujian and no source
    // knows its city: the city check cannot be made, the province check can.
    let mut ev = mobile_line();
    ev.declared = declared(None, Some("440300"), Some("china_mobile"));
    ev.egress = egress(
        "120.196.200.7",
        R::default()
            .carrier("china_mobile")
            .province("CN-FJ")
            .done(),
    );
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::ViolatingIp, "{:#?}", v.reasons);
    let f = finding(&v, FindingCode::ProvinceMismatch);
    assert!(
        f.message
            .contains("the declared city \"440300\" is in 广东省 (CN-GD)"),
        "{}",
        f.message
    );
    assert!(v.filled.is_empty(), "filled {:?}", v.filled);

    // In the city's province it passes, and the province is filled.
    ev.egress = egress(
        "120.196.200.7",
        R::default()
            .carrier("china_mobile")
            .province("CN-GD")
            .done(),
    );
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::Compliant, "{:#?}", v.reasons);
    assert_eq!(outcome(&v, FindingCode::ProvinceMatch), Outcome::Pass);
    let filled: Vec<_> = v
        .filled
        .iter()
        .map(|f| (f.attribute, f.value.as_str()))
        .collect();
    assert_eq!(filled, vec![(Attribute::Province, "CN-GD")]);
}

#[test]
fn an_uncomparable_city_is_unknown_and_blocks_nothing() {
    let v = judge(&unknown_city_text());
    assert_eq!(v.kind, VerdictKind::Compliant);
    let f = finding(&v, FindingCode::CityUnknown);
    assert!(f.message.contains("\"某某镇\""), "{}", f.message);
    assert!(v.filled.is_empty());
}

#[test]
fn a_hosting_carrier_is_never_filled() {
    let mut ev = first_hop_in_cloud();
    ev.declared = declared(Some("CN-GD"), None, None);
    let v = judge(&ev);
    assert!(v.filled.iter().all(|f| f.attribute != Attribute::Carrier));
}

// ───────────────────────────── coverage ─────────────────────────────

#[test]
fn every_finding_code_and_verdict_is_reached() {
    let mut seen_codes = BTreeSet::new();
    let mut seen_kinds = BTreeSet::new();
    for (name, ev) in all_scenarios() {
        let v = judge(&ev);
        // Every verdict carries each proxy signal and the carrier check.
        let c = codes(&v);
        for always in [
            FindingCode::EgressCarrierDiffersFromFirstHop,
            FindingCode::EgressHosting,
            FindingCode::EgressAnonymous,
            FindingCode::FirstHopHosting,
            FindingCode::DeviceProxy,
            FindingCode::MultiLevelPath,
        ] {
            assert!(c.contains(&always), "{name}: no {always}");
        }
        seen_kinds.insert(v.kind.as_str());
        seen_codes.extend(c.into_iter().map(FindingCode::as_str));
    }
    let all_codes = [
        "carrier_match",
        "carrier_via_expected_upstream",
        "carrier_mismatch",
        "carrier_unknown",
        "carrier_undeclared",
        "province_match",
        "province_mismatch",
        "city_match",
        "city_mismatch",
        "city_unknown",
        "region_unknown",
        "region_undeclared",
        "ip_check_skipped",
        "egress_carrier_differs_from_first_hop",
        "egress_hosting",
        "egress_anonymous",
        "first_hop_hosting",
        "device_proxy",
        "multi_level_path",
        "no_public_hop",
        "egress_not_public",
        "egress_missing",
    ];
    assert_eq!(seen_codes, all_codes.into_iter().collect());
    assert_eq!(
        seen_kinds,
        [
            "compliant",
            "indeterminate",
            "non_compliant",
            "proxy_suspected",
            "violating_ip"
        ]
        .into_iter()
        .collect()
    );
}

#[test]
fn verdicts_serialise_with_snake_case_names() {
    let v = judge(&alibaba_egress());
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["kind"], "proxy_suspected");
    assert_eq!(
        json["actual"]["carrier"]["provenance"]["role"],
        "first_public_hop"
    );
    let hosting = json["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "egress_hosting")
        .unwrap();
    assert_eq!(hosting["outcome"], "signal");
    assert_eq!(hosting["evidence"]["carrier"]["value"], "alibaba_cloud");
    assert_eq!(json["data_versions"]["ipplan"], "2026-01");
    let filled = serde_json::to_value(judge(&city_and_carrier_missing())).unwrap();
    assert_eq!(filled["filled"][0]["attribute"], "city");
    assert_eq!(json!(VerdictKind::ViolatingIp), json!("violating_ip"));
}

// ─────────────────────────────── keys ───────────────────────────────

#[test]
fn the_verdict_key_is_stable_and_sensitive() {
    let key = judge(&mobile_line()).verdict_key();
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(judge(&mobile_line()).verdict_key(), key);

    // A new dynamic address with the same facts: the same verdict.
    let mut ev = mobile_line();
    ev.egress.as_mut().unwrap().ip = ip("120.196.200.8");
    assert_eq!(judge(&ev).verdict_key(), key);

    // Anything that changes the verdict's content changes the key.
    let mut ev = mobile_line();
    ev.egress
        .as_mut()
        .unwrap()
        .resolved
        .province
        .as_mut()
        .unwrap()
        .version = "2026-02".to_owned();
    assert_ne!(judge(&ev).verdict_key(), key, "data version");
    let mut ev = mobile_line();
    ev.public_hops[0].resolved.carrier.as_mut().unwrap().source = "ipplan".to_owned();
    assert_ne!(judge(&ev).verdict_key(), key, "source");
    assert_ne!(
        judge(&device_proxy_alone()).verdict_key(),
        key,
        "finding outcome"
    );
    assert_ne!(judge(&urban_village()).verdict_key(), key, "kind");
    assert_ne!(
        judge(&city_and_carrier_missing()).verdict_key(),
        key,
        "filled"
    );
    // Distinct scenarios give distinct verdicts, except the Tietong line,
    // whose verdict is a Mobile line's in every hashed part (only its
    // message names AS9394).
    let tietong_key = judge(&tietong()).verdict_key();
    assert_eq!(tietong_key, key);
    let mut seen = BTreeSet::new();
    for (name, ev) in all_scenarios().into_iter().filter(|(n, _)| *n != "tietong") {
        assert!(
            seen.insert(judge(&ev).verdict_key()),
            "{name} repeats a key"
        );
    }
}

/// One edit to a report.
type Change = fn(&mut serde_json::Value);

const RID: &str = "01970a3c-5e2f-7b41-9c3d-2f6a8e1b4d70";

fn report_json() -> serde_json::Value {
    json!({
        "schema": 1,
        "report_id": RID,
        "install_id": "GD-SZ-0007731",
        "account": "07550012345678",
        "created_at": "2025-06-03T21:14:09+08:00",
        "declared": { "province": "CN-GD", "city": "440300", "carrier": "china_mobile", "address": "" },
        "device": {
            "os": "linux", "os_version": "6.1", "arch": "x86_64", "agent_version": "0.1.0",
            "proxy": { "system_configured": true, "env_configured": false }
        },
        "trace": {
            "target": "198.51.100.10",
            "target_addr": "198.51.100.10",
            "protocol": "udp",
            "engine": "trippy-core",
            "started_at": "2025-06-03T21:13:58+08:00",
            "duration_ms": 2000,
            "hops": [
                { "ttl": 1, "addrs": ["192.168.1.1"], "rtt_ms": [0.4] },
                { "ttl": 2, "addrs": ["100.64.0.1"], "rtt_ms": [2.0] },
                { "ttl": 3, "addrs": ["203.0.113.9"], "rtt_ms": [5.0] },
                { "ttl": 4, "addrs": [] },
                { "ttl": 5, "addrs": ["64:ff9b::cb00:710d"], "rtt_ms": [6.0] },
                { "ttl": 6, "addrs": ["198.51.100.10"], "rtt_ms": [9.0] }
            ]
        },
        "envelope": {
            "received_at": "2025-06-03T13:14:15Z",
            "peer_ip": "203.0.113.77",
            "peer_port": 40000,
            "path": "/v1/reports",
            "node_id": "edge-sz-1",
            "seq": 7
        }
    })
}

#[test]
fn the_observation_key_ignores_times_and_ids_but_not_the_path() {
    let e = |v: &serde_json::Value| {
        extract(&serde_json::to_vec(v).unwrap(), "edge-sz-1", &CATALOG)
            .unwrap()
            .report
    };
    let base = report_json();
    let key = observation_key(&e(&base));
    assert_eq!(key.len(), 64);

    let mut same = base.clone();
    same["report_id"] = json!("01970a3c-5e2f-7b41-9c3d-2f6a8e1b4d71");
    same["created_at"] = json!("2025-06-04T08:00:00+08:00");
    same["trace"]["hops"][2]["rtt_ms"] = json!([7.5]);
    same["envelope"]["seq"] = json!(8);
    same["envelope"]["peer_port"] = json!(40001);
    assert_eq!(observation_key(&e(&same)), key);

    let changes: [(&str, Change); 6] = [
        ("egress", |v| {
            v["envelope"]["peer_ip"] = json!("203.0.113.78");
        }),
        ("path", |v| {
            v["trace"]["hops"][2]["addrs"] = json!(["203.0.113.10"]);
        }),
        ("ttl", |v| {
            v["trace"]["hops"][5]["ttl"] = json!(7);
        }),
        ("city", |v| {
            v["declared"]["city"] = json!("440100");
        }),
        ("carrier", |v| {
            v["declared"]["carrier"] = json!("china_telecom");
        }),
        ("account", |v| {
            v["account"] = json!("");
        }),
    ];
    for (what, change) in changes {
        let mut v = base.clone();
        change(&mut v);
        assert_ne!(observation_key(&e(&v)), key, "{what}");
    }
    assert_eq!(line_key("", "GD-SZ-0007731"), "install:GD-SZ-0007731");
    assert_eq!(
        line_key("07550012345678", "GD-SZ-0007731"),
        "account:07550012345678"
    );
}

// ─────────────────────────────── gather ───────────────────────────────

#[test]
fn gather_walks_the_public_hops_and_resolves_each_address_once() {
    let report = extract(
        &serde_json::to_vec(&report_json()).unwrap(),
        "edge-sz-1",
        &CATALOG,
    )
    .unwrap();
    // The lab is numbered from documentation ranges, made public here.
    let classifier = Classifier::new(&ClassifierConfig {
        extra_public: vec![
            "203.0.113.0/24".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
        ],
    })
    .unwrap();
    let table: HashMap<IpAddr, Resolved> = [
        ("203.0.113.9", mobile_sz()),
        ("203.0.113.13", R::default().carrier("china_mobile").done()),
        ("203.0.113.77", mobile_sz()),
        (
            "198.51.100.10",
            R::default().carrier("alibaba_cloud").done(),
        ),
    ]
    .into_iter()
    .map(|(a, r)| (ip(a), r))
    .collect();
    let mut asked = Vec::new();
    let ev = LineEvidence::gather(
        &report.report,
        report.declared.clone(),
        &CATALOG,
        &classifier,
        |addr| {
            asked.push(addr);
            Ok::<_, std::convert::Infallible>(table.get(&addr).cloned().unwrap_or_default())
        },
    )
    .unwrap();
    // Private, CGNAT and silent hops are skipped; the NAT64 hop is looked up
    // by its embedded IPv4 address; the destination ends the path.
    let hops: Vec<(u8, String)> = ev
        .public_hops
        .iter()
        .map(|h| (h.ttl, h.ip.to_string()))
        .collect();
    assert_eq!(
        hops,
        vec![
            (3, "203.0.113.9".to_owned()),
            (5, "64:ff9b::cb00:710d".to_owned())
        ]
    );
    assert_eq!(
        ev.public_hops[1]
            .resolved
            .carrier
            .as_ref()
            .unwrap()
            .value
            .as_str(),
        "china_mobile"
    );
    let egress = ev.egress.as_ref().unwrap();
    assert!(egress.public);
    assert_eq!(egress.resolved, mobile_sz());
    assert_eq!(
        ev.target_carrier.as_ref().unwrap().value.as_str(),
        "alibaba_cloud"
    );
    assert!(ev.device_proxy.system_configured);
    assert_eq!(asked.len(), 4, "{asked:?}");
    let v = judge(&ev);
    assert_eq!(v.kind, VerdictKind::Compliant, "{:#?}", v.reasons);
    assert_eq!(outcome(&v, FindingCode::DeviceProxy), Outcome::Signal);

    // With the registries alone the lab's egress is documentation space.
    let ev = LineEvidence::gather(
        &report.report,
        report.declared.clone(),
        &CATALOG,
        &Classifier::default(),
        |addr| Ok::<_, std::convert::Infallible>(table.get(&addr).cloned().unwrap_or_default()),
    )
    .unwrap();
    assert!(ev.public_hops.is_empty());
    assert!(!ev.egress.as_ref().unwrap().public);
    let v = judge(&ev);
    assert_eq!(outcome(&v, FindingCode::EgressNotPublic), Outcome::Unknown);
    assert_eq!(outcome(&v, FindingCode::NoPublicHop), Outcome::Unknown);
    assert_eq!(v.kind, VerdictKind::Indeterminate);
}

#[test]
fn gather_passes_resolver_errors_on() {
    let report = extract(
        &serde_json::to_vec(&report_json()).unwrap(),
        "edge-sz-1",
        &CATALOG,
    )
    .unwrap();
    let classifier = Classifier::new(&ClassifierConfig {
        extra_public: vec!["203.0.113.0/24".parse().unwrap()],
    })
    .unwrap();
    let err = LineEvidence::gather(
        &report.report,
        report.declared,
        &CATALOG,
        &classifier,
        |_| Err::<Resolved, _>("source down"),
    )
    .unwrap_err();
    assert_eq!(err, "source down");
}
