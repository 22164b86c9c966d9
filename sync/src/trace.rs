//! `lineprobe-sync trace …`: the shared trace-text parsers and the first
//! public hop, for operators checking a pasted traceroute by hand.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::Path;

use lineprobe_shared::{Hop, ParsedTrace, TraceFormat, parse_trace_bytes};
use serde::Serialize;

use crate::Error;

/// Reads all of `file`, or standard input for `None` / `-`.
fn read_input(file: Option<&Path>, stdin: &mut dyn Read) -> Result<Vec<u8>, Error> {
    match file {
        Some(path) if path != Path::new("-") => std::fs::read(path).map_err(|source| Error::Input {
            what: path.display().to_string(),
            source,
        }),
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
    serde_json::to_writer_pretty(&mut *stdout, value)
        .map_err(|e| Error::Output(std::io::Error::other(e)))?;
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

/// `trace first-hop`: prints the first public hop and every hop's class.
pub(crate) fn first_hop(
    file: Option<&Path>,
    public_cidrs: &[String],
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> Result<(), Error> {
    let _ = (file, public_cidrs, stdin, stdout);
    Err(Error::NotBuiltYet { command: "trace first-hop", issue: 2 })
}
