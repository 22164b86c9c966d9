//! The address-plan and range-table sources, and the chain over them.
#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::net::IpAddr;

use lineprobe_shared::Catalog;
use lineprobe_sync::{Chain, Error, IpPlanSource, IpSource, IpType, RangesSource};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn catalog() -> Catalog {
    Catalog::embedded().unwrap()
}

const PLAN: &str = "\
cidr,start,end,carrier,province,city,ip_type,customer
203.0.112.0/22,,,中国电信,广东,广州,家宽,
,203.0.113.10,203.0.113.20,China Telecom,Guangdong Sheng,Guangzhou Shi,enterprise,Example Trading Co.
203.0.113.16/30,,,电信,GD,440100,IDC,Example Hosting
2001:db8:100::/40,,,移动,吉林省,长春市,residential,
";

fn plan() -> IpPlanSource {
    IpPlanSource::from_reader("ipplan", "2026-11", "plan.csv", PLAN.as_bytes(), &catalog()).unwrap()
}

#[test]
fn plan_rows_are_normalised_and_the_narrowest_block_wins() {
    let plan = plan();
    assert_eq!(plan.len(), 4);
    let f = plan.lookup(ip("203.0.112.1")).unwrap().unwrap();
    assert_eq!(f.carrier.unwrap().as_str(), "china_telecom");
    assert_eq!(f.province.unwrap().as_str(), "CN-GD");
    assert_eq!(f.city.unwrap().as_str(), "440100");
    assert_eq!(f.ip_type, Some(IpType::Residential));
    assert_eq!(f.customer, None);

    let f = plan.lookup(ip("203.0.113.12")).unwrap().unwrap();
    assert_eq!(f.ip_type, Some(IpType::Enterprise));
    assert_eq!(f.customer.as_deref(), Some("Example Trading Co."));

    // The /30 inside the start–end range inside the /22.
    let f = plan.lookup(ip("203.0.113.17")).unwrap().unwrap();
    assert_eq!(f.ip_type, Some(IpType::Idc));
    assert_eq!(f.customer.as_deref(), Some("Example Hosting"));
    let f = plan.lookup(ip("203.0.113.20")).unwrap().unwrap();
    assert_eq!(f.ip_type, Some(IpType::Enterprise));
    let f = plan.lookup(ip("203.0.113.21")).unwrap().unwrap();
    assert_eq!(f.ip_type, Some(IpType::Residential));

    assert!(plan.lookup(ip("203.0.116.0")).unwrap().is_none());
    assert!(plan.lookup(ip("198.51.100.1")).unwrap().is_none());

    let f = plan.lookup(ip("2001:db8:1ff::1")).unwrap().unwrap();
    assert_eq!(f.carrier.unwrap().as_str(), "china_mobile");
    assert_eq!(f.province.unwrap().as_str(), "CN-JL");
    assert_eq!(f.city.unwrap().as_str(), "220100");
    assert!(plan.lookup(ip("2001:db8:200::1")).unwrap().is_none());
}

fn load_err(text: &str) -> String {
    let e = IpPlanSource::from_reader("ipplan", "v", "plan.csv", text.as_bytes(), &catalog())
        .unwrap_err();
    assert!(matches!(e, Error::SourceData { .. }), "{e:?}");
    e.to_string()
}

#[test]
fn unknown_values_fail_the_load_naming_file_line_and_choices() {
    let e = load_err(
        "cidr,carrier,province\n192.0.2.0/24,中国电信,广东\n198.51.100.0/24,电信,Atlantis\n",
    );
    assert!(e.starts_with("plan.csv:3:"), "{e}");
    assert!(e.contains("Atlantis") && e.contains("CN-GD"), "{e}");

    let e = load_err("cidr,carrier\n192.0.2.0/24,Acme Telecom Galaxy\n");
    assert!(e.starts_with("plan.csv:2:"), "{e}");
    assert!(e.contains("china_telecom"), "{e}");

    let e = load_err("cidr,ip_type\n192.0.2.0/24,spaceship\n");
    assert!(e.contains("residential"), "{e}");

    let e = load_err("cidr\n192.0.2.0/33\n");
    assert!(e.starts_with("plan.csv:2:"), "{e}");

    let e = load_err("start,end\n192.0.2.9,192.0.2.1\n");
    assert!(e.contains("after its end"), "{e}");

    let e = load_err("start,end\n192.0.2.1,2001:db8::1\n");
    assert!(e.contains("family"), "{e}");

    let e = load_err("carrier,province\n电信,广东\n");
    assert!(e.contains("cidr"), "{e}");
}

#[test]
fn errors_name_the_line_of_the_row_past_blank_and_comment_lines() {
    // csv reports where it began reading a record, before the blank and
    // comment lines it skipped: the message must name the row itself.
    let e = load_err(
        "cidr,carrier\n192.0.2.0/24,电信\n# block B\n# (confirmed)\n198.51.100.0/24,Nope\n",
    );
    assert!(e.starts_with("plan.csv:5:"), "{e}");
    let e = load_err("cidr,carrier\r\n192.0.2.0/24,电信\r\n\r\n\r\n198.51.100.0/24,Nope\r\n");
    assert!(e.starts_with("plan.csv:5:"), "{e}");
    // A row after a quoted field running over two lines.
    let e =
        load_err("cidr,customer,carrier\n192.0.2.0/24,\"A\nB\",电信\n\n198.51.100.0/24,,Nope\n");
    assert!(e.starts_with("plan.csv:5:"), "{e}");
    // The header after a comment block.
    let e = load_err("# our plan\n\ncarrier,province\n电信,广东\n");
    assert!(e.starts_with("plan.csv:3:") && e.contains("cidr"), "{e}");

    let ranges_err = |text: &str| {
        RangesSource::from_reader("asn", "v", "a.csv", text.as_bytes(), &catalog())
            .unwrap_err()
            .to_string()
    };
    let e = ranges_err("1.0.0.0,1.0.0.255,1,X\n\n\n1.0.1.0,nope,1,Y\n");
    assert!(e.starts_with("a.csv:4:"), "{e}");
    let e = ranges_err("start,end,asn,org\n# part two\n1.0.1.0,nope,1,Y\n");
    assert!(e.starts_with("a.csv:3:"), "{e}");
}

#[test]
fn a_range_table_may_open_with_comments_before_its_header() {
    let text = "# ASN table, built 2026-11-01\n# columns: start,end,asn,org\n\
                start,end,asn,org\n1.0.0.0,1.0.0.255,4134,Chinanet\n";
    let r = RangesSource::from_reader("asn", "v", "a.csv", text.as_bytes(), &catalog()).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r.lookup(ip("1.0.0.1")).unwrap().unwrap().asn, Some(4134));
}

const RANGES: &str = "\
start,end,asn,org
49.64.0.0,49.95.255.255,4134,Chinanet
111.0.0.0,111.63.255.255,AS9808,Guangdong Mobile Communication Co.Ltd.
47.96.0.0,47.127.255.255,37963,Hangzhou Alibaba Advertising Co.,Ltd.
100.64.0.0,100.64.0.255,64512,China Unicom Example Branch
240e::,240e:ff:ffff:ffff:ffff:ffff:ffff:ffff,4134,Chinanet
";

#[test]
fn ranges_map_asn_then_org_to_a_carrier() {
    let cat = catalog();
    let r =
        RangesSource::from_reader("asn", "2026-10", "asn.csv", RANGES.as_bytes(), &cat).unwrap();
    assert_eq!(r.len(), 5);
    let f = r.lookup(ip("49.70.1.2")).unwrap().unwrap();
    assert_eq!(
        (f.asn, f.carrier.unwrap().as_str()),
        (Some(4134), "china_telecom")
    );
    let f = r.lookup(ip("111.1.1.1")).unwrap().unwrap();
    assert_eq!(
        (f.asn, f.carrier.unwrap().as_str()),
        (Some(9808), "china_mobile")
    );
    let f = r.lookup(ip("47.100.0.1")).unwrap().unwrap();
    assert_eq!(f.carrier.unwrap().as_str(), "alibaba_cloud");
    assert_eq!(f.ip_type, Some(IpType::Idc));
    // A private ASN: the organisation names the carrier.
    let f = r.lookup(ip("100.64.0.9")).unwrap().unwrap();
    assert_eq!(f.carrier.unwrap().as_str(), "china_unicom");
    let f = r.lookup(ip("240e:a0::1")).unwrap().unwrap();
    assert_eq!(f.asn, Some(4134));
    assert!(r.lookup(ip("1.1.1.1")).unwrap().is_none());

    // No header is fine too; a bad row names its line.
    let r = RangesSource::from_reader(
        "asn",
        "v",
        "a.csv",
        "1.0.0.0,1.0.0.255,13335,Cloudflare\n".as_bytes(),
        &cat,
    )
    .unwrap();
    assert_eq!(r.lookup(ip("1.0.0.1")).unwrap().unwrap().asn, Some(13335));
    let e = RangesSource::from_reader(
        "asn",
        "v",
        "a.csv",
        "1.0.0.0,1.0.0.255,13335,X\n1.0.1.0,nope,1,Y\n".as_bytes(),
        &cat,
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("a.csv:2:"), "{e}");
}

#[test]
fn the_chain_takes_each_attribute_from_the_first_source_that_knows_it() {
    let cat = catalog();
    let plan = "cidr,province,city,customer\n49.64.1.0/24,江苏,南京,Example Ltd\n";
    let plan =
        IpPlanSource::from_reader("ipplan", "2026-11-01", "p.csv", plan.as_bytes(), &cat).unwrap();
    let ranges =
        RangesSource::from_reader("asn-table", "2026-10", "a.csv", RANGES.as_bytes(), &cat)
            .unwrap();
    let chain = Chain::new(vec![Box::new(plan), Box::new(ranges)]);
    let r = chain.resolve(&cat, ip("49.64.1.7")).unwrap();
    let p = r.province.unwrap();
    assert_eq!(
        (p.value.as_str(), p.source.as_str(), p.version.as_str()),
        ("CN-JS", "ipplan", "2026-11-01")
    );
    assert_eq!(r.city.unwrap().value.as_str(), "320100");
    let c = r.carrier.unwrap();
    assert_eq!(
        (c.value.as_str(), c.source.as_str(), c.version.as_str()),
        ("china_telecom", "asn-table", "2026-10")
    );
    assert_eq!(r.asn.unwrap().value, 4134);
    assert_eq!(r.customer.unwrap().value, "Example Ltd");
    assert!(r.anonymous.is_none());

    // Outside the plan, the table alone answers.
    let r = chain.resolve(&cat, ip("49.65.0.1")).unwrap();
    assert!(r.province.is_none());
    assert_eq!(r.carrier.unwrap().source, "asn-table");
    // Nobody knows.
    let r = chain.resolve(&cat, ip("192.0.2.1")).unwrap();
    assert_eq!(r, lineprobe_sync::Resolved::default());
}

#[test]
fn a_toml_chain_opens_csv_files_and_keeps_the_city_in_the_resolved_province() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("plan.csv"),
        "cidr,province\n49.64.0.0/16,广东\n",
    )
    .unwrap();
    // A later source placing the block in another province's city.
    std::fs::write(
        dir.path().join("geo.csv"),
        "cidr,province,city,carrier\n49.64.0.0/12,吉林,长春,电信\n",
    )
    .unwrap();
    let config = lineprobe_sync::ChainConfig::from_toml(
        "chain.toml",
        "[[source]]\nkind = \"ipplan\"\npath = \"plan.csv\"\nversion = \"p1\"\n\n\
         [[source]]\nkind = \"ipplan\"\nname = \"other\"\npath = \"geo.csv\"\n",
    )
    .unwrap();
    let cat = std::sync::Arc::new(catalog());
    let chain = config.build(dir.path(), &cat).unwrap();
    assert_eq!(chain.sources().len(), 2);
    let r = chain.resolve(&cat, ip("49.64.3.3")).unwrap();
    let p = r.province.unwrap();
    assert_eq!(
        (p.value.as_str(), p.source.as_str(), p.version.as_str()),
        ("CN-GD", "ipplan", "p1")
    );
    assert!(r.city.is_none(), "a Jilin city under a Guangdong province");
    assert_eq!(r.carrier.unwrap().source, "other");
    // Only the second source knows this one: its province and city together.
    let r = chain.resolve(&cat, ip("49.70.0.1")).unwrap();
    assert_eq!(r.city.unwrap().value.as_str(), "220100");

    let missing =
        lineprobe_sync::ChainConfig::from_toml("c.toml", "[[source]]\nkind = \"ranges\"\n")
            .unwrap()
            .build(dir.path(), &cat)
            .unwrap_err();
    assert!(missing.to_string().contains("path"), "{missing}");
}

#[test]
fn two_sources_may_not_share_a_name() {
    // A verdict records the data version of every source it read by the
    // source's name: two sources under one name (two unnamed mmdb sources,
    // a City and an ASN database) would leave one version unrecorded.
    let config = lineprobe_sync::ChainConfig::from_toml(
        "chain.toml",
        "[[source]]\nkind = \"mmdb\"\npath = \"GeoLite2-City.mmdb\"\n\n\
         [[source]]\nkind = \"ipplan\"\nname = \"plan\"\npath = \"plan.csv\"\n\n\
         [[source]]\nkind = \"mmdb\"\npath = \"GeoLite2-ASN.mmdb\"\n",
    )
    .unwrap();
    let e = config.validate().unwrap_err().to_string();
    assert!(
        e.starts_with("source #3 (mmdb):") && e.contains("#1") && e.contains("`name`"),
        "{e}"
    );
}

#[test]
fn the_reload_settling_time_is_bounded_and_defaults_to_two_seconds() {
    let parse = |toml: &str| lineprobe_sync::ChainConfig::from_toml("chain.toml", toml).unwrap();
    assert_eq!(parse("").reload_settle(), std::time::Duration::from_secs(2));
    let ten = parse("reload_settle_s = 10\n");
    ten.validate().unwrap();
    assert_eq!(ten.reload_settle(), std::time::Duration::from_secs(10));
    let e = parse("reload_settle_s = 3601\n")
        .validate()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("resolve.reload_settle_s") && e.contains("3600"),
        "{e}"
    );
}
