//! The evidence document of a verdict (the verdict's `evidence` column):
//! everything the verdict rests on — what was declared, the device's proxy
//! settings, the receiver's envelope, the egress address and the public hops
//! with what the address sources said about each, the line's actual
//! attributes with where each came from, and the trust at arrival.
//!
//! # Version 2 (written now)
//!
//! Resolved facts are shared by reference instead of being repeated per hop
//! and per attribute:
//!
//! ```json
//! {"v":2,
//!  "sources":[["ipplan","2026-11"],["geolite2-city","2026-11-01"]],
//!  "facts":[{"carrier":["china_mobile",0],"province":["CN-GD",0],"asn":[9808,0]},{}],
//!  "public_hops":[{"ttl":3,"ip":"120.196.1.1","f":0}],
//!  "egress":{"ip":"120.196.2.7","public":true,"f":0},
//!  "actual":{"carrier":{"value":"china_mobile","name":"中国移动 China Mobile",
//!            "provenance":{"role":"first_public_hop","ip":"120.196.1.1","ttl":3,"src":0}}},
//!  "target_carrier":["china_telecom",1],
//!  "declared":{…},"declared_ids":{…},"device_proxy":{…},"envelope":{…},
//!  "hops_from_raw":false,"parsed_format":null,"target":"…","warnings":[]}
//! ```
//!
//! - `sources` lists each (source, data version) pair once; an attribute is
//!   `[value, i]`, `i` indexing `sources`;
//! - `facts` lists each distinct set of resolved attributes of an address
//!   once (absent attributes left out; `failures` as in version 1, only when
//!   a source failed); a hop and the egress point into it with `f`;
//! - an actual attribute's provenance names its source with `src`;
//! - an actual attribute or target carrier that is not known is left out.
//!
//! # Version 1 (rows written before)
//!
//! No `v`; every hop and the egress carry their `resolved` attributes as
//! `{"value", "source", "version"}` objects (absent ones `null`), actual
//! provenances carry `source` and `version`.
//!
//! Readers take either with [`read_evidence`] or [`expand_evidence`], which
//! give the version 1 shape: a version 2 document says exactly what the
//! version 1 document of the same verdict said.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use lineprobe_shared::{CarrierId, CityCode, ProvinceCode, Report, TraceFormat};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{
    ActualValue, Anonymous, Attributed, DeclaredFacts, Error, IpRole, IpType, LineEvidence, Reason,
    Resolved, SourceFailure, TrustMark, Verdict,
};

/// The version the pipeline writes.
pub const EVIDENCE_VERSION: u64 = 2;

/// The resolved attributes in the order version 1 wrote them.
const RESOLVED_KEYS: [&str; 8] = [
    "carrier",
    "province",
    "city",
    "asn",
    "org",
    "ip_type",
    "customer",
    "anonymous",
];

/// The actual attributes.
const ACTUAL_KEYS: [&str; 3] = ["carrier", "province", "city"];

// ───────────────────────────── writing (v2) ──────────────────────────────

/// An attribute as `[value, source index]`.
#[derive(Serialize, PartialEq)]
struct AttrRef<'a, T>(&'a T, usize);

/// One distinct set of resolved attributes.
#[derive(Serialize, PartialEq)]
struct FactsDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    carrier: Option<AttrRef<'a, CarrierId>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    province: Option<AttrRef<'a, ProvinceCode>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<AttrRef<'a, CityCode>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    asn: Option<AttrRef<'a, u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    org: Option<AttrRef<'a, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ip_type: Option<AttrRef<'a, IpType>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer: Option<AttrRef<'a, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous: Option<AttrRef<'a, Anonymous>>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    failures: &'a [SourceFailure],
}

/// The tables a document's parts point into, filled while it is built.
#[derive(Default)]
struct Tables<'a> {
    sources: Vec<(&'a str, &'a str)>,
    facts: Vec<FactsDoc<'a>>,
}

impl<'a> Tables<'a> {
    fn source(&mut self, source: &'a str, version: &'a str) -> usize {
        if let Some(i) = self
            .sources
            .iter()
            .position(|(s, v)| *s == source && *v == version)
        {
            return i;
        }
        self.sources.push((source, version));
        self.sources.len() - 1
    }

    fn attr<T>(&mut self, a: Option<&'a Attributed<T>>) -> Option<AttrRef<'a, T>> {
        a.map(|a| AttrRef(&a.value, self.source(&a.source, &a.version)))
    }

    fn facts(&mut self, r: &'a Resolved) -> usize {
        let doc = FactsDoc {
            carrier: self.attr(r.carrier.as_ref()),
            province: self.attr(r.province.as_ref()),
            city: self.attr(r.city.as_ref()),
            asn: self.attr(r.asn.as_ref()),
            org: self.attr(r.org.as_ref()),
            ip_type: self.attr(r.ip_type.as_ref()),
            customer: self.attr(r.customer.as_ref()),
            anonymous: self.attr(r.anonymous.as_ref()),
            failures: &r.failures,
        };
        if let Some(i) = self.facts.iter().position(|f| *f == doc) {
            return i;
        }
        self.facts.push(doc);
        self.facts.len() - 1
    }

    fn actual(&mut self, a: Option<&'a ActualValue>) -> Option<ActualDoc<'a>> {
        a.map(|a| ActualDoc {
            value: &a.value,
            name: &a.name,
            provenance: ProvenanceDoc {
                role: a.provenance.role,
                ip: a.provenance.ip,
                ttl: a.provenance.ttl,
                src: self.source(&a.provenance.source, &a.provenance.version),
            },
        })
    }
}

/// The document, keys in alphabetical order after `v`.
#[derive(Serialize)]
struct EvidenceDoc<'a> {
    v: u64,
    actual: ActualLineDoc<'a>,
    declared: DeclaredDoc<'a>,
    declared_ids: &'a DeclaredFacts,
    device_proxy: DeviceProxyDoc<'a>,
    egress: Option<EgressDoc>,
    envelope: Option<EnvelopeDoc<'a>>,
    facts: Vec<FactsDoc<'a>>,
    hops_from_raw: bool,
    parsed_format: Option<TraceFormat>,
    public_hops: Vec<HopDoc>,
    sources: Vec<(&'a str, &'a str)>,
    target: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_carrier: Option<AttrRef<'a, CarrierId>>,
    /// The trust at arrival, when the receiver scored it.
    #[serde(skip_serializing_if = "Option::is_none")]
    trust: Option<&'a TrustMark>,
    warnings: &'a [Reason],
}

#[derive(Serialize)]
struct ActualLineDoc<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    carrier: Option<ActualDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    province: Option<ActualDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<ActualDoc<'a>>,
}

#[derive(Serialize)]
struct ActualDoc<'a> {
    value: &'a str,
    name: &'a str,
    provenance: ProvenanceDoc,
}

#[derive(Serialize)]
struct ProvenanceDoc {
    role: IpRole,
    ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u8>,
    src: usize,
}

/// What the subscriber declared, as sent.
#[derive(Serialize)]
struct DeclaredDoc<'a> {
    address: &'a str,
    carrier: Option<&'a str>,
    city: Option<&'a str>,
    province: Option<&'a str>,
}

#[derive(Serialize)]
struct DeviceProxyDoc<'a> {
    details: Option<&'a str>,
    env_configured: bool,
    system_configured: bool,
}

#[derive(Serialize)]
struct EgressDoc {
    f: usize,
    ip: IpAddr,
    public: bool,
}

#[derive(Serialize)]
struct EnvelopeDoc<'a> {
    node_id: &'a str,
    path: &'a str,
    peer_ip: IpAddr,
    peer_port: Option<u16>,
    received_at: DateTime<Utc>,
    seq: u64,
}

#[derive(Serialize)]
struct HopDoc {
    f: usize,
    ip: IpAddr,
    ttl: u8,
}

/// The evidence document of `verdict` (version 2), serialized straight from
/// the pipeline's values.
pub(crate) fn evidence_json(
    verdict: &Verdict,
    evidence: &LineEvidence<'_>,
    report: &Report,
    extracted: &crate::Extracted,
    trust: &TrustMark,
) -> Result<String, Error> {
    let mut t = Tables::default();
    let public_hops = evidence
        .public_hops
        .iter()
        .map(|h| HopDoc {
            f: t.facts(&h.resolved),
            ip: h.ip,
            ttl: h.ttl,
        })
        .collect();
    let egress = evidence.egress.as_ref().map(|e| EgressDoc {
        f: t.facts(&e.resolved),
        ip: e.ip,
        public: e.public,
    });
    let target_carrier = t.attr(evidence.target_carrier.as_ref());
    let actual = ActualLineDoc {
        carrier: t.actual(verdict.actual.carrier.as_ref()),
        province: t.actual(verdict.actual.province.as_ref()),
        city: t.actual(verdict.actual.city.as_ref()),
    };
    let declared = &report.declared;
    let proxy = &report.device.proxy;
    let doc = EvidenceDoc {
        v: EVIDENCE_VERSION,
        actual,
        declared: DeclaredDoc {
            address: &declared.address,
            carrier: declared.carrier.as_deref(),
            city: declared.city.as_deref(),
            province: declared.province.as_deref(),
        },
        declared_ids: &extracted.declared,
        device_proxy: DeviceProxyDoc {
            details: proxy.details.as_deref(),
            env_configured: proxy.env_configured,
            system_configured: proxy.system_configured,
        },
        egress,
        envelope: report.envelope.as_ref().map(|e| EnvelopeDoc {
            node_id: &e.node_id,
            path: &e.path,
            peer_ip: e.peer_ip,
            peer_port: e.peer_port,
            received_at: e.received_at,
            seq: e.seq,
        }),
        facts: t.facts,
        hops_from_raw: extracted.hops_from_raw,
        parsed_format: extracted.parsed_format,
        public_hops,
        sources: t.sources,
        target: report.trace.target_addr,
        target_carrier,
        trust: trust.score.is_some().then_some(trust),
        warnings: &extracted.warnings,
    };
    serde_json::to_string(&doc).map_err(|e| Error::Output(e.into()))
}

// ──────────────────────────────── reading ────────────────────────────────

/// A stored evidence document of either version, in the version 1 shape;
/// `None` when it is not JSON.
pub fn read_evidence(json: &str) -> Option<Value> {
    serde_json::from_str(json).ok().map(expand_evidence)
}

/// A parsed evidence document of either version, in the version 1 shape
/// (see the module documentation). A version 1 document is given back as
/// it is; a reference that points nowhere reads as `null`.
pub fn expand_evidence(doc: Value) -> Value {
    if doc.get("v").and_then(Value::as_u64) != Some(EVIDENCE_VERSION) {
        return doc;
    }
    let Value::Object(mut map) = doc else {
        return doc;
    };
    map.remove("v");
    let sources: Vec<(Value, Value)> = match map.remove("sources") {
        Some(Value::Array(list)) => list
            .into_iter()
            .map(|pair| match pair {
                Value::Array(mut p) if p.len() == 2 => {
                    let version = p.pop().unwrap_or(Value::Null);
                    let source = p.pop().unwrap_or(Value::Null);
                    (source, version)
                }
                _ => (Value::Null, Value::Null),
            })
            .collect(),
        _ => Vec::new(),
    };
    let source_at = |i: Option<&Value>| {
        i.and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| sources.get(i))
    };
    let attr = |a: Option<&Value>| -> Value {
        let Some(Value::Array(pair)) = a else {
            return Value::Null;
        };
        let (Some(value), Some((source, version))) = (pair.first(), source_at(pair.get(1))) else {
            return Value::Null;
        };
        let mut out = Map::new();
        out.insert("value".to_owned(), value.clone());
        out.insert("source".to_owned(), source.clone());
        out.insert("version".to_owned(), version.clone());
        Value::Object(out)
    };
    let facts: Vec<Value> = match map.remove("facts") {
        Some(Value::Array(list)) => list
            .iter()
            .map(|f| {
                let mut out = Map::new();
                for key in RESOLVED_KEYS {
                    out.insert(key.to_owned(), attr(f.get(key)));
                }
                if let Some(failures) = f.get("failures") {
                    out.insert("failures".to_owned(), failures.clone());
                }
                Value::Object(out)
            })
            .collect(),
        _ => Vec::new(),
    };
    let resolve_ref = |item: &mut Value| {
        if let Value::Object(o) = item {
            let f = o
                .remove("f")
                .and_then(|f| f.as_u64())
                .and_then(|f| usize::try_from(f).ok())
                .and_then(|f| facts.get(f))
                .cloned()
                .unwrap_or(Value::Null);
            o.insert("resolved".to_owned(), f);
        }
    };
    if let Some(Value::Array(hops)) = map.get_mut("public_hops") {
        hops.iter_mut().for_each(resolve_ref);
    }
    if let Some(egress) = map.get_mut("egress").filter(|e| !e.is_null()) {
        resolve_ref(egress);
    }
    let target_carrier = attr(map.get("target_carrier"));
    map.insert("target_carrier".to_owned(), target_carrier);
    let mut actual = match map.remove("actual") {
        Some(Value::Object(a)) => a,
        _ => Map::new(),
    };
    for key in ACTUAL_KEYS {
        let mut value = actual.remove(key).unwrap_or(Value::Null);
        if let Some(Value::Object(p)) = value.get_mut("provenance") {
            let (source, version) = source_at(p.remove("src").as_ref())
                .cloned()
                .unwrap_or((Value::Null, Value::Null));
            p.insert("source".to_owned(), source);
            p.insert("version".to_owned(), version);
        }
        actual.insert(key.to_owned(), value);
    }
    map.insert("actual".to_owned(), Value::Object(actual));
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A version 1 document as the pipeline stored it before version 2
    /// (a China Mobile line running over China Telecom).
    const V1: &str = r#"{"actual":{"carrier":{"value":"china_telecom","name":"中国电信 China Telecom","provenance":{"role":"first_public_hop","ip":"113.116.32.1","ttl":3,"source":"ipplan","version":"2025-01"}},"province":{"value":"CN-GD","name":"广东省 (CN-GD)","provenance":{"role":"egress","ip":"113.116.33.7","source":"regions","version":"demo-2026.11"}},"city":null},"declared":{"address":"龙岗区 1 号","carrier":"中国移动","city":"深圳","province":"广东"},"declared_ids":{"province":"CN-GD","city":"深圳","city_code":"440300","carrier":"china_mobile"},"device_proxy":{"details":null,"env_configured":false,"system_configured":false},"egress":{"ip":"113.116.33.7","public":true,"resolved":{"carrier":{"value":"china_telecom","source":"ipplan","version":"2025-01"},"province":{"value":"CN-GD","source":"regions","version":"demo-2026.11"},"city":null,"asn":{"value":4134,"source":"asn","version":"demo-2026.11"},"org":null,"ip_type":null,"customer":null,"anonymous":null}},"envelope":{"node_id":"n1","path":"/api/v1/report","peer_ip":"113.116.33.7","peer_port":40000,"received_at":"2026-11-21T08:00:00Z","seq":7},"hops_from_raw":false,"parsed_format":null,"public_hops":[{"ip":"113.116.32.1","resolved":{"carrier":{"value":"china_telecom","source":"ipplan","version":"2025-01"},"province":{"value":"CN-GD","source":"regions","version":"demo-2026.11"},"city":null,"asn":null,"org":null,"ip_type":null,"customer":null,"anonymous":null},"ttl":3}],"target":"203.0.113.9","target_carrier":null,"warnings":[]}"#;

    #[test]
    fn a_version_1_document_reads_as_it_was_stored() {
        let read = read_evidence(V1).unwrap();
        assert_eq!(read, serde_json::from_str::<Value>(V1).unwrap());
        assert_eq!(
            read.pointer("/actual/carrier/provenance/source"),
            Some(&json!("ipplan"))
        );
        assert_eq!(
            read.pointer("/public_hops/0/resolved/carrier/value"),
            Some(&json!("china_telecom"))
        );
    }

    /// The same verdict's version 2 document.
    const V2: &str = r#"{"v":2,"actual":{"carrier":{"value":"china_telecom","name":"中国电信 China Telecom","provenance":{"role":"first_public_hop","ip":"113.116.32.1","ttl":3,"src":0}},"province":{"value":"CN-GD","name":"广东省 (CN-GD)","provenance":{"role":"egress","ip":"113.116.33.7","src":1}}},"declared":{"address":"龙岗区 1 号","carrier":"中国移动","city":"深圳","province":"广东"},"declared_ids":{"province":"CN-GD","city":"深圳","city_code":"440300","carrier":"china_mobile"},"device_proxy":{"details":null,"env_configured":false,"system_configured":false},"egress":{"f":1,"ip":"113.116.33.7","public":true},"envelope":{"node_id":"n1","path":"/api/v1/report","peer_ip":"113.116.33.7","peer_port":40000,"received_at":"2026-11-21T08:00:00Z","seq":7},"facts":[{"carrier":["china_telecom",0],"province":["CN-GD",1]},{"carrier":["china_telecom",0],"province":["CN-GD",1],"asn":[4134,2]}],"hops_from_raw":false,"parsed_format":null,"public_hops":[{"f":0,"ip":"113.116.32.1","ttl":3}],"sources":[["ipplan","2025-01"],["regions","demo-2026.11"],["asn","demo-2026.11"]],"target":"203.0.113.9","warnings":[]}"#;

    #[test]
    fn a_version_2_document_says_what_version_1_said() {
        assert!(V2.len() < V1.len());
        assert_eq!(
            read_evidence(V2).unwrap(),
            serde_json::from_str::<Value>(V1).unwrap()
        );
    }

    #[test]
    fn references_that_point_nowhere_read_as_null() {
        let doc = json!({
            "v": 2,
            "sources": [["ipplan", "2025-01"]],
            "facts": [{"carrier": ["china_telecom", 5]}],
            "public_hops": [{"ttl": 3, "ip": "113.116.32.1", "f": 9}],
            "egress": {"ip": "113.116.33.7", "public": true, "f": 0},
            "actual": {"carrier": {"value": "x", "name": "x", "provenance": {"role": "egress", "ip": "113.116.33.7", "src": 4}}},
        });
        let read = expand_evidence(doc);
        assert_eq!(read["public_hops"][0]["resolved"], Value::Null);
        assert_eq!(read["egress"]["resolved"]["carrier"], Value::Null);
        assert_eq!(
            read["actual"]["carrier"]["provenance"]["source"],
            Value::Null
        );
        assert_eq!(read["actual"]["city"], Value::Null);
        assert_eq!(read["target_carrier"], Value::Null);
    }
}
