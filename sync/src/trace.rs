//! `lineprobe-sync trace …`: the shared trace-text parsers and the first
//! public hop, for operators checking a pasted traceroute by hand.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use lineprobe_shared::{
    Classification, ClassifiedHop, Classifier, ClassifierConfig, Hop, ParsedTrace, TraceFormat,
    parse_trace_bytes,
};
use serde::Serialize;

use crate::Error;

/// Reads all of `file`, or standard input for `None` / `-`.
fn read_input(file: Option<&Path>, stdin: &mut dyn Read) -> Result<Vec<u8>, Error> {
    match file {
        Some(path) if path != Path::new("-") => {
            std::fs::read(path).map_err(|source| Error::Input {
                what: path.display().to_string(),
                source,
            })
        }
        _ => {
            let mut buf = Vec::new();
            stdin.read_to_end(&mut buf).map_err(|source| Error::Input {
                what: "standard input".to_owned(),
                source,
            })?;
            Ok(buf)
        }
    }
}

fn write_json(stdout: &mut dyn Write, value: &impl Serialize) -> Result<(), Error> {
    serde_json::to_writer_pretty(&mut *stdout, value).map_err(|e| Error::Output(e.into()))?;
    writeln!(stdout).map_err(Error::Output)
}

/// The `trace parse` output: every list is present, even when empty, so that
/// scripts can index it without checking.
#[derive(Debug, Serialize)]
struct ParseOutput<'a> {
    format: TraceFormat,
    target: Option<&'a str>,
    target_addr: Option<IpAddr>,
    locale: Option<&'a str>,
    hops: Vec<HopOutput<'a>>,
}

#[derive(Debug, Serialize)]
struct HopOutput<'a> {
    ttl: u8,
    addrs: &'a [IpAddr],
    names: &'a [String],
    rtt_ms: &'a [f64],
    sent: u16,
    received: u16,
    annotations: &'a [String],
}

impl<'a> From<&'a Hop> for HopOutput<'a> {
    fn from(h: &'a Hop) -> Self {
        Self {
            ttl: h.ttl,
            addrs: &h.addrs,
            names: &h.names,
            rtt_ms: &h.rtt_ms,
            sent: h.sent,
            received: h.received,
            annotations: &h.annotations,
        }
    }
}

impl<'a> From<&'a ParsedTrace> for ParseOutput<'a> {
    fn from(t: &'a ParsedTrace) -> Self {
        Self {
            format: t.format,
            target: t.target.as_deref(),
            target_addr: t.target_addr,
            locale: t.locale.as_deref(),
            hops: t.hops.iter().map(HopOutput::from).collect(),
        }
    }
}

/// `trace parse`: prints the hops of any supported traceroute output.
pub(crate) fn parse(
    file: Option<&Path>,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> Result<(), Error> {
    let raw = read_input(file, stdin)?;
    let trace = parse_trace_bytes(&raw)?;
    write_json(stdout, &ParseOutput::from(&trace))
}

/// The `trace first-hop` output.
#[derive(Debug, Serialize)]
struct FirstHopOutput<'a> {
    format: TraceFormat,
    target: Option<&'a str>,
    target_addr: Option<IpAddr>,
    /// `{"ttl", "addr"}` of the first public hop, or null.
    first_public_hop: Option<FirstHopAddr>,
    /// The first public hop's classification, when there is one.
    first_public_class: Option<&'a Classification>,
    cgnat_seen: bool,
    ds_lite_seen: bool,
    tunnel_seen: bool,
    silent_skipped: usize,
    /// Every hop of the trace with its kind and per-address classification.
    hops: Vec<ClassifiedHop>,
}

#[derive(Debug, Serialize)]
struct FirstHopAddr {
    ttl: u8,
    addr: IpAddr,
}

/// Parses `--public-cidr` values, naming the bad one and the expected form.
fn classifier_for(public_cidrs: &[String]) -> Result<Classifier, Error> {
    let mut extra_public = Vec::with_capacity(public_cidrs.len());
    for (i, raw) in public_cidrs.iter().enumerate() {
        let net: IpNet = raw
            .trim()
            .parse()
            .map_err(|_| lineprobe_shared::Error::Config {
                key: format!("--public-cidr[{i}]"),
                reason: format!(
                    "{raw:?} is not a CIDR; write an address and prefix length such as \
                     203.0.113.0/24 or 2001:db8::/32"
                ),
            })?;
        extra_public.push(net);
    }
    Ok(Classifier::new(&ClassifierConfig { extra_public })?)
}

/// `trace first-hop`: prints the first public hop and every hop's class.
pub(crate) fn first_hop(
    file: Option<&Path>,
    public_cidrs: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> Result<(), Error> {
    // Validate the options before reading what may be a long standard input.
    let classifier = classifier_for(public_cidrs)?;
    let raw = read_input(file, stdin)?;
    let trace = parse_trace_bytes(&raw)?;
    let analysis = classifier.first_public_hop(&trace.hops, trace.target_addr);
    let out = FirstHopOutput {
        format: trace.format,
        target: trace.target.as_deref(),
        target_addr: trace.target_addr,
        first_public_hop: analysis.first_public.as_ref().map(|f| FirstHopAddr {
            ttl: f.ttl,
            addr: f.addr,
        }),
        first_public_class: analysis.first_public.as_ref().map(|f| &f.classification),
        cgnat_seen: analysis.cgnat_seen,
        ds_lite_seen: analysis.ds_lite_seen,
        tunnel_seen: analysis.tunnel_seen,
        silent_skipped: analysis.silent_skipped,
        hops: classifier.classify_hops(&trace.hops, trace.target_addr),
    };
    write_json(stdout, &out)
}
