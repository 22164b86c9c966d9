//! The trace-text parsers: whatever a probe or a user uploads as traceroute
//! output, in any console encoding.
//!
//! Beyond "never panics", a parsed trace keeps the hop model's promises, since
//! it goes on into a report: TTLs from 1 and strictly increasing, addresses
//! distinct and in canonical (text) order, round-trip times finite and not
//! negative.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lineprobe_shared::{Error, ParsedTrace, parse_trace_bytes, parse_trace_text};

fn check(result: Result<ParsedTrace, Error>) {
    match result {
        Ok(trace) => {
            let mut previous = 0u8;
            for hop in &trace.hops {
                assert!(
                    hop.ttl > previous,
                    "TTL {} after {previous}: hops must be in strictly increasing TTL order",
                    hop.ttl
                );
                previous = hop.ttl;
                let texts: Vec<String> = hop.addrs.iter().map(ToString::to_string).collect();
                assert!(
                    texts.windows(2).all(|w| w[0] < w[1]),
                    "hop {} addresses not distinct and sorted: {texts:?}",
                    hop.ttl
                );
                assert!(
                    hop.rtt_ms.iter().all(|r| r.is_finite() && *r >= 0.0),
                    "hop {} has a bad round-trip time: {:?}",
                    hop.ttl,
                    hop.rtt_ms
                );
            }
        }
        Err(
            e @ (Error::UnrecognizedTrace { .. } | Error::MalformedTrace { .. } | Error::Json(_)),
        ) => {
            assert!(!e.to_string().is_empty());
        }
        Err(other) => panic!("unexpected error kind from a trace parser: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    check(parse_trace_bytes(data));
    if let Ok(text) = std::str::from_utf8(data) {
        check(parse_trace_text(text));
    }
});
