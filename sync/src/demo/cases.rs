//! The demo's built-in reports: one line of each kind the compliance team
//! meets, with realistic routes. Each case names the egress address a
//! trusted reverse proxy in front of the demo collector reports for it
//! (`X-Forwarded-For`), and the verdict the pipeline should reach.
//!
//! The addresses are from blocks these carriers announce; the demo IP data in
//! `config/demo/` describes them. Only the loopback collector is contacted.

use std::net::IpAddr;

use chrono::{DateTime, Duration, FixedOffset};
use lineprobe_shared::{Report, ReportId};
use serde_json::{Value, json};

use crate::Error;

/// One built-in line.
#[derive(Debug, Clone)]
pub struct DemoCase {
    /// A short label for the table.
    pub label: &'static str,
    /// What the case shows.
    pub story: &'static str,
    /// The egress address the trusted proxy reports; `None` sends the report
    /// without `X-Forwarded-For`, so the collector records the socket peer.
    pub egress: Option<IpAddr>,
    /// The verdict the pipeline should reach, or `quarantined`.
    pub expect: &'static str,
    /// The report as a probe submits it.
    pub report: Report,
}

/// A hop written as `(ttl, address or "*")`.
type HopSpec<'a> = (u8, &'a str);

/// What varies between the demo reports.
struct Spec<'a> {
    install_id: &'a str,
    account: &'a str,
    province: Option<&'a str>,
    city: Option<&'a str>,
    carrier: Option<&'a str>,
    address: &'a str,
    os: &'a str,
    hops: &'a [HopSpec<'a>],
    system_proxy: Option<&'a str>,
    raw_tracert: Option<&'a str>,
}

/// The demo's built-in reports, made at `now` (each a few minutes apart).
#[allow(clippy::too_many_lines, reason = "a table of cases, one block each")]
pub fn demo_cases(now: DateTime<FixedOffset>) -> Result<Vec<DemoCase>, Error> {
    let mut cases = Vec::new();
    let mut at = now - Duration::minutes(30);
    let mut add = |label, story, egress: Option<&str>, expect, spec: &Spec<'_>| {
        at += Duration::minutes(2);
        let report = build(spec, at)?;
        cases.push(DemoCase {
            label,
            story,
            egress: egress
                .map(str::parse)
                .transpose()
                .map_err(|e| Error::Demo(format!("demo case {label}: {e}")))?,
            expect,
            report,
        });
        Ok::<(), Error>(())
    };

    add(
        "gd-mobile",
        "China Mobile home line in Shenzhen, routed through China Mobile",
        Some("120.229.16.77"),
        "compliant",
        &Spec {
            install_id: "SZ-NS-000101",
            account: "07552660101",
            province: Some("CN-GD"),
            city: Some("深圳"),
            carrier: Some("china_mobile"),
            address: "南山区科技园高新南一道 8 号",
            os: "android",
            hops: &[
                (1, "192.168.1.1"),
                (2, "10.142.0.1"),
                (3, "120.196.240.1"),
                (4, "221.183.46.250"),
                (5, "*"),
            ],
            system_proxy: None,
            raw_tracert: None,
        },
    )?;
    add(
        "bj-unicom",
        "China Unicom home line in Beijing",
        Some("123.113.52.9"),
        "compliant",
        &Spec {
            install_id: "BJ-CY-000202",
            account: "01062880202",
            province: Some("CN-BJ"),
            city: Some("北京"),
            carrier: Some("china_unicom"),
            address: "朝阳区望京街道 12 号院",
            os: "windows",
            hops: &[
                (1, "192.168.0.1"),
                (2, "100.67.0.1"),
                (3, "123.112.0.1"),
                (4, "219.158.4.1"),
            ],
            system_proxy: None,
            raw_tracert: None,
        },
    )?;
    add(
        "sh-telecom",
        "China Telecom home line in Shanghai",
        Some("101.86.33.10"),
        "compliant",
        &Spec {
            install_id: "SH-PD-000303",
            account: "02150880303",
            province: Some("CN-SH"),
            city: Some("上海"),
            carrier: Some("china_telecom"),
            address: "浦东新区张江路 99 弄",
            os: "windows",
            hops: &[(1, "192.168.1.1"), (2, "101.95.0.1"), (3, "202.97.33.1")],
            system_proxy: None,
            raw_tracert: None,
        },
    )?;
    add(
        "gz-tietong",
        "China Mobile line on a Tietong access network (Tietong is China Mobile)",
        Some("211.98.70.20"),
        "compliant",
        &Spec {
            install_id: "GZ-TH-000404",
            account: "02081230404",
            province: Some("CN-GD"),
            city: Some("广州"),
            carrier: Some("china_mobile"),
            address: "天河区石牌街道 5 号",
            os: "android",
            hops: &[
                (1, "192.168.31.1"),
                (2, "211.98.70.1"),
                (3, "221.183.46.250"),
            ],
            system_proxy: None,
            raw_tracert: None,
        },
    )?;
    add(
        "urban-village",
        "Sold as China Mobile in an urban village, but the line runs over China Telecom",
        Some("113.116.44.8"),
        "non_compliant",
        &Spec {
            install_id: "SZ-FT-000505",
            account: "07552660505",
            province: Some("CN-GD"),
            city: Some("深圳"),
            carrier: Some("china_mobile"),
            address: "福田区下沙村 3 巷 7 号",
            os: "android",
            hops: &[
                (1, "192.168.1.1"),
                (2, "100.72.0.1"),
                (3, "*"),
                (4, "113.116.32.1"),
                (5, "202.97.33.214"),
            ],
            system_proxy: None,
            raw_tracert: None,
        },
    )?;
    add(
        "proxied",
        "China Telecom line whose traffic leaves through a cloud server (a proxy)",
        Some("47.96.12.34"),
        "proxy_suspected",
        &Spec {
            install_id: "GZ-YX-000606",
            account: "02081230606",
            province: Some("CN-GD"),
            city: Some("广州"),
            carrier: Some("china_telecom"),
            address: "越秀区北京路 66 号",
            os: "windows",
            hops: &[
                (1, "192.168.1.1"),
                (2, "113.108.209.1"),
                (3, "202.97.33.214"),
            ],
            system_proxy: Some("47.96.12.34:3128"),
            raw_tracert: None,
        },
    )?;
    add(
        "other-province",
        "Declared in Beijing, used in Changsha, Hunan",
        Some("223.146.8.45"),
        "violating_ip",
        &Spec {
            install_id: "BJ-HD-000707",
            account: "01062880707",
            province: Some("CN-BJ"),
            city: Some("北京"),
            carrier: Some("china_mobile"),
            address: "海淀区中关村大街 1 号",
            os: "android",
            hops: &[
                (1, "192.168.1.1"),
                (2, "10.21.0.1"),
                (3, "223.144.0.1"),
                (4, "221.183.46.250"),
            ],
            system_proxy: None,
            raw_tracert: None,
        },
    )?;
    add(
        "drpeng",
        "Dr.Peng (Great Wall Broadband) line leaving through its China Telecom upstream",
        Some("106.37.80.12"),
        "compliant",
        &Spec {
            install_id: "BJ-FT-000808",
            account: "01062880808",
            province: Some("CN-BJ"),
            city: Some("北京"),
            carrier: Some("drpeng"),
            address: "丰台区方庄路 20 号",
            os: "windows",
            hops: &[
                (1, "192.168.1.1"),
                (2, "10.255.0.1"),
                (3, "106.37.0.1"),
                (4, "202.97.33.1"),
            ],
            system_proxy: None,
            raw_tracert: None,
        },
    )?;
    add(
        "unknown",
        "Addresses that no source knows: nothing resolves",
        Some("185.199.110.7"),
        "indeterminate",
        &Spec {
            install_id: "HZ-XH-000909",
            account: "",
            province: Some("CN-ZJ"),
            city: Some("杭州"),
            carrier: Some("china_telecom"),
            address: "西湖区文三路 88 号",
            os: "linux",
            hops: &[(1, "192.168.1.1"), (2, "185.199.108.1")],
            system_proxy: None,
            raw_tracert: None,
        },
    )?;
    add(
        "incomplete",
        "A report with no route and nothing declared but an address",
        Some("120.229.16.99"),
        "quarantined",
        &Spec {
            install_id: "SZ-LG-001010",
            account: "",
            province: None,
            city: None,
            carrier: None,
            address: "龙岗区",
            os: "android",
            hops: &[(1, "*"), (2, "*"), (3, "*")],
            system_proxy: None,
            raw_tracert: None,
        },
    )?;
    add(
        "tracert-zh",
        "Raw Windows tracert from a Chinese console, parsed on the internal side",
        Some("113.108.209.77"),
        "compliant",
        &Spec {
            install_id: "GZ-HZ-001111",
            account: "02081231111",
            province: Some("CN-GD"),
            city: Some("广州"),
            carrier: Some("china_telecom"),
            address: "海珠区江南大道中 100 号",
            os: "windows",
            hops: &[],
            system_proxy: None,
            raw_tracert: Some(TRACERT_ZH),
        },
    )?;
    Ok(cases)
}

/// A `tracert -d` from a Windows console set to Simplified Chinese, as the
/// probe's system engine carries it (decoded to UTF-8).
const TRACERT_ZH: &str = "\r
通过最多 30 个跃点跟踪到 203.0.113.80 的路由\r
\r
  1    <1 毫秒   <1 毫秒   <1 毫秒 192.168.1.1\r
  2     3 ms     2 ms     3 ms  100.72.0.1\r
  3     *        *        *     请求超时。\r
  4     5 ms     4 ms     6 ms  113.108.209.1\r
  5     7 ms     6 ms     7 ms  202.97.33.214\r
  6     *        *        *     请求超时。\r
\r
跟踪完成。\r
";

fn build(spec: &Spec<'_>, at: DateTime<FixedOffset>) -> Result<Report, Error> {
    let hops: Vec<Value> = spec
        .hops
        .iter()
        .map(|&(ttl, addr)| {
            if addr == "*" {
                json!({ "ttl": ttl, "addrs": [], "rtt_ms": [], "sent": 3, "received": 0 })
            } else {
                let base = f64::from(ttl) * 2.5;
                json!({
                    "ttl": ttl, "addrs": [addr],
                    "rtt_ms": [base + 0.4, base + 0.1, base + 0.7],
                    "sent": 3, "received": 3
                })
            }
        })
        .collect();
    let mut declared = json!({ "address": spec.address });
    for (key, value) in [
        ("province", spec.province),
        ("city", spec.city),
        ("carrier", spec.carrier),
    ] {
        if let Some(v) = value {
            declared[key] = json!(v);
        }
    }
    let engine = if spec.raw_tracert.is_some() {
        "system:tracert"
    } else {
        "unprivileged"
    };
    let mut trace = json!({
        "target": "probe.lineprobe.example",
        "target_addr": "203.0.113.80",
        "protocol": "icmp",
        "engine": engine,
        "started_at": (at - Duration::seconds(20)).to_rfc3339(),
        "duration_ms": 14_200,
        "hops": hops,
    });
    if let Some(raw) = spec.raw_tracert {
        trace["raw_text"] = json!(raw);
    }
    let mut proxy = json!({ "system_configured": false, "env_configured": false });
    if let Some(p) = spec.system_proxy {
        proxy = json!({ "system_configured": true, "env_configured": false, "details": p });
    }
    let (os_version, arch) = match spec.os {
        "windows" => ("10.0.22631", "x86_64"),
        "android" => ("14", "aarch64"),
        _ => ("6.1.0", "x86_64"),
    };
    let doc = json!({
        "schema": 1,
        "report_id": ReportId::new_v7().to_string(),
        "install_id": spec.install_id,
        "account": spec.account,
        "created_at": at.to_rfc3339(),
        "declared": declared,
        "device": {
            "os": spec.os,
            "os_version": os_version,
            "arch": arch,
            "agent_version": env!("CARGO_PKG_VERSION"),
            "local_addrs": ["192.168.1.23"],
            "proxy": proxy,
        },
        "trace": trace,
    });
    let bytes = serde_json::to_vec(&doc).map_err(|e| Error::Output(e.into()))?;
    Ok(Report::from_submitted_json(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_report_is_a_valid_submission() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T10:00:00+08:00").unwrap();
        let cases = demo_cases(now).unwrap();
        assert!(cases.len() >= 11);
        let mut labels: Vec<_> = cases.iter().map(|c| c.label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), cases.len(), "labels are unique");
        for case in &cases {
            case.report.validate_submitted().unwrap();
        }
    }
}
