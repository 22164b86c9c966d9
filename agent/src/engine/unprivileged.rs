//! The `unprivileged` engine: traceroute without root, for Linux and Android.
//!
//! Raw sockets need `CAP_NET_RAW`, which an app on a phone never has (and
//! Android refuses trippy-core even as root). Ordinary datagram sockets can
//! still set the TTL, and with `IP_RECVERR` / `IPV6_RECVERR` the kernel
//! queues the ICMP time-exceeded and unreachable messages that come back for
//! them, offender address included — the tracepath technique. Unlike
//! tracepath, every TTL of a round is probed at once, each from its own
//! socket, so a trace costs one round trip plus the grace period however
//! many hops stay silent.
//!
//! Probes are ICMP echo requests on datagram ICMP sockets where
//! `net.ipv4.ping_group_range` admits the user (Android admits apps), else
//! UDP datagrams to the traceroute ports. The destination is reached when it
//! answers the echo or says its port is unreachable.

#[cfg(any(target_os = "linux", target_os = "android"))]
mod sys;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use lineprobe_shared::{Hop, TraceEngine};

use super::{Engine, TraceOutcome, TraceRequest};
use crate::Error;

/// Traces with unprivileged datagram sockets and the kernel's error queue
/// (Linux and Android only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnprivilegedEngine;

impl UnprivilegedEngine {
    /// The engine.
    pub fn new() -> Self {
        Self
    }
}

impl Engine for UnprivilegedEngine {
    fn kind(&self) -> TraceEngine {
        TraceEngine::Unprivileged
    }

    fn check_available(&self) -> Result<(), String> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            sys::check_available()
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            Err("needs Linux or Android (the kernel's IP_RECVERR error queue)".to_owned())
        }
    }

    fn trace(&self, request: &TraceRequest) -> Result<TraceOutcome, Error> {
        check_request(request)?;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            sys::trace(request)
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            Err(Error::EngineUnavailable {
                engine: TraceEngine::Unprivileged.to_string(),
                reason: "needs Linux or Android (the kernel's IP_RECVERR error queue)".to_owned(),
            })
        }
    }
}

/// Refuses requests no round could honour.
fn check_request(request: &TraceRequest) -> Result<(), Error> {
    let reason = if request.first_ttl == 0 {
        "first_ttl must be at least 1"
    } else if request.first_ttl > request.max_ttl {
        "first_ttl must not exceed max_ttl"
    } else if request.rounds == 0 {
        "rounds must be at least 1"
    } else {
        return Ok(());
    };
    Err(Error::TraceFailed {
        engine: TraceEngine::Unprivileged.to_string(),
        reason: reason.to_owned(),
    })
}

/// What one probe's answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android")),
    allow(dead_code, reason = "only the Linux socket code builds replies")
)]
enum ReplyKind {
    /// A router on the way: the TTL ran out there.
    TimeExceeded,
    /// The probe arrived at a host that answered as its destination (echo
    /// reply, port unreachable, or data).
    Arrived,
    /// Some other unreachable: nothing goes further. Holds the traceroute
    /// mark (`!H`, `!N`, `!X`, `!F-1400`, `!<code>`…).
    Unreachable(String),
}

/// One answered probe.
#[derive(Debug, Clone, PartialEq)]
struct Reply {
    /// The probe's TTL.
    ttl: u8,
    /// Who answered.
    from: IpAddr,
    /// From sending the probe to reading the answer.
    rtt: Duration,
    kind: ReplyKind,
}

/// What an ICMP error in the error queue means for a trace; `None` for
/// messages that say nothing about the path (redirects, parameter problems).
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android")),
    allow(dead_code, reason = "only the Linux socket code reads ICMP errors")
)]
fn icmp_reply_kind(v6: bool, icmp_type: u8, code: u8, info: u32) -> Option<ReplyKind> {
    let mark = |m: &str| Some(ReplyKind::Unreachable(m.to_owned()));
    if v6 {
        match (icmp_type, code) {
            (3, _) => Some(ReplyKind::TimeExceeded),
            (1, 4) => Some(ReplyKind::Arrived),
            (1, 0) => mark("!N"),
            (1, 1) => mark("!X"),
            (1, 2) => mark("!S"),
            (1, 3) => mark("!H"),
            (1, c) => mark(&format!("!<{c}>")),
            (2, _) => mark(&format!("!F-{info}")),
            _ => None,
        }
    } else {
        match (icmp_type, code) {
            (11, _) => Some(ReplyKind::TimeExceeded),
            (3, 3) => Some(ReplyKind::Arrived),
            (3, 0 | 6 | 11) => mark("!N"),
            (3, 1 | 7 | 12) => mark("!H"),
            (3, 2) => mark("!P"),
            (3, 4) => mark(&format!("!F-{info}")),
            (3, 5) => mark("!S"),
            (3, 9 | 10 | 13) => mark("!X"),
            (3, 14) => mark("!V"),
            (3, 15) => mark("!C"),
            (3, c) => mark(&format!("!<{c}>")),
            _ => None,
        }
    }
}

/// The lowest TTL whose probe went no further (it arrived, or was refused):
/// nothing beyond it is worth probing or reporting.
fn end_ttl(replies: &[Reply]) -> Option<u8> {
    replies
        .iter()
        .filter(|r| r.kind != ReplyKind::TimeExceeded)
        .map(|r| r.ttl)
        .min()
}

/// True when a round need wait no longer: the probes ended at some TTL and
/// every TTL sent before it has answered.
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android")),
    allow(dead_code, reason = "only the Linux socket code runs rounds")
)]
fn round_complete(sent: &[u8], replies: &[Reply]) -> bool {
    let Some(end) = end_ttl(replies) else {
        return false;
    };
    sent.iter()
        .filter(|&&ttl| ttl < end)
        .all(|&ttl| replies.iter().any(|r| r.ttl == ttl))
}

/// The hops of a trace, from `first_ttl` to the TTL where the probes ended
/// (or `max_ttl`), silent ones included, and whether the target answered at
/// that last TTL. `sent` counts the probes sent per TTL; `replies` are in
/// the order they were read.
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android")),
    allow(dead_code, reason = "only the Linux socket code assembles traces")
)]
fn assemble(
    target: IpAddr,
    first_ttl: u8,
    max_ttl: u8,
    sent: &BTreeMap<u8, u16>,
    replies: &[Reply],
) -> (Vec<Hop>, bool) {
    let last = end_ttl(replies).map_or(max_ttl, |end| end.min(max_ttl));
    let hops: Vec<Hop> = (first_ttl..=last)
        .map(|ttl| {
            let mut hop = Hop::new(ttl);
            hop.sent = sent.get(&ttl).copied().unwrap_or(0);
            for reply in replies.iter().filter(|r| r.ttl == ttl) {
                hop.push_addr(reply.from);
                hop.rtt_ms.push(millis(reply.rtt));
                hop.received = hop.received.saturating_add(1);
                if let ReplyKind::Unreachable(mark) = &reply.kind
                    && !hop.annotations.contains(mark)
                {
                    hop.annotations.push(mark.clone());
                }
            }
            hop
        })
        .collect();
    let target = target.to_canonical();
    let reached = replies
        .iter()
        .any(|r| r.ttl == last && r.kind == ReplyKind::Arrived && r.from.to_canonical() == target);
    (hops, reached)
}

/// Milliseconds to the microsecond, as traceroute prints them.
#[cfg_attr(
    not(any(target_os = "linux", target_os = "android")),
    allow(dead_code, reason = "only the Linux socket code assembles traces")
)]
fn millis(d: Duration) -> f64 {
    let micros = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
    f64::from(micros) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn reply(ttl: u8, from: &str, ms: u64, kind: ReplyKind) -> Reply {
        Reply {
            ttl,
            from: ip(from),
            rtt: Duration::from_millis(ms),
            kind,
        }
    }

    fn sent(ttls: std::ops::RangeInclusive<u8>, n: u16) -> BTreeMap<u8, u16> {
        ttls.map(|t| (t, n)).collect()
    }

    #[test]
    fn silent_hops_stay_in_place_up_to_max_ttl() {
        let target = ip("203.0.113.10");
        let replies = [
            reply(3, "198.51.100.2", 3, ReplyKind::TimeExceeded),
            reply(1, "192.168.7.1", 1, ReplyKind::TimeExceeded),
            reply(5, "198.51.100.10", 5, ReplyKind::TimeExceeded),
            reply(2, "100.64.7.1", 2, ReplyKind::TimeExceeded),
        ];
        let (hops, reached) = assemble(target, 1, 8, &sent(1..=8, 1), &replies);
        assert!(!reached);
        let addrs: Vec<Option<IpAddr>> = hops.iter().map(|h| h.addrs.first().copied()).collect();
        assert_eq!(
            addrs,
            [
                Some(ip("192.168.7.1")),
                Some(ip("100.64.7.1")),
                Some(ip("198.51.100.2")),
                None,
                Some(ip("198.51.100.10")),
                None,
                None,
                None
            ]
        );
        assert_eq!(
            hops.iter().map(|h| h.ttl).collect::<Vec<_>>(),
            (1..=8).collect::<Vec<_>>()
        );
        assert!(hops[3].is_silent());
        assert_eq!((hops[3].sent, hops[3].received), (1, 0));
        assert_eq!((hops[4].sent, hops[4].received), (1, 1));
        assert_eq!(hops[4].rtt_ms, [5.0]);
    }

    #[test]
    fn the_trace_ends_at_the_first_ttl_that_arrived() {
        let target = ip("198.51.100.10");
        let replies = [
            reply(7, "198.51.100.10", 7, ReplyKind::Arrived),
            reply(5, "198.51.100.10", 5, ReplyKind::Arrived),
            reply(6, "198.51.100.10", 6, ReplyKind::Arrived),
            reply(1, "192.168.7.1", 1, ReplyKind::TimeExceeded),
        ];
        let (hops, reached) = assemble(target, 1, 30, &sent(1..=30, 1), &replies);
        assert!(reached);
        assert_eq!(hops.len(), 5);
        assert_eq!(hops[4].addrs, [target]);
        assert!(hops[1].is_silent());
    }

    #[test]
    fn arriving_elsewhere_than_the_target_is_not_reaching_it() {
        let replies = [reply(4, "198.51.100.9", 4, ReplyKind::Arrived)];
        let (hops, reached) = assemble(ip("203.0.113.10"), 1, 30, &sent(1..=30, 1), &replies);
        assert!(!reached);
        assert_eq!(hops.len(), 4);
    }

    #[test]
    fn ipv4_mapped_replies_count_as_the_target() {
        let replies = [reply(2, "::ffff:203.0.113.10", 2, ReplyKind::Arrived)];
        let (_, reached) = assemble(ip("203.0.113.10"), 1, 30, &sent(1..=30, 1), &replies);
        assert!(reached);
    }

    #[test]
    fn an_unreachable_router_ends_the_trace_with_its_mark() {
        let replies = [
            reply(3, "198.51.100.2", 3, ReplyKind::Unreachable("!X".into())),
            reply(3, "198.51.100.2", 4, ReplyKind::Unreachable("!X".into())),
            reply(4, "198.51.100.2", 4, ReplyKind::Unreachable("!X".into())),
        ];
        let (hops, reached) = assemble(ip("203.0.113.10"), 1, 30, &sent(1..=30, 2), &replies);
        assert!(!reached);
        assert_eq!(hops.len(), 3);
        assert_eq!(hops[2].annotations, ["!X"]);
        assert_eq!((hops[2].sent, hops[2].received), (2, 2));
        assert_eq!(hops[2].rtt_ms, [3.0, 4.0]);
        assert_eq!(hops[2].addrs.len(), 1);
    }

    #[test]
    fn several_rounds_merge_per_ttl_with_distinct_sorted_addresses() {
        let replies = [
            reply(1, "192.168.7.1", 1, ReplyKind::TimeExceeded),
            reply(2, "198.51.100.9", 2, ReplyKind::TimeExceeded),
            reply(1, "192.168.7.1", 2, ReplyKind::TimeExceeded),
            reply(2, "198.51.100.10", 3, ReplyKind::TimeExceeded),
        ];
        let (hops, _) = assemble(ip("203.0.113.10"), 1, 2, &sent(1..=2, 3), &replies);
        assert_eq!(hops[0].addrs, [ip("192.168.7.1")]);
        assert_eq!(hops[0].received, 2);
        assert_eq!(hops[0].sent, 3);
        assert_eq!(hops[1].addrs, [ip("198.51.100.10"), ip("198.51.100.9")]);
    }

    #[test]
    fn first_ttl_above_one_starts_the_hop_list_there() {
        let (hops, reached) = assemble(ip("203.0.113.10"), 3, 5, &sent(3..=5, 1), &[]);
        assert!(!reached);
        assert_eq!(hops.iter().map(|h| h.ttl).collect::<Vec<_>>(), [3, 4, 5]);
        assert!(hops.iter().all(Hop::is_silent));
    }

    #[test]
    fn a_round_is_complete_once_every_ttl_before_the_end_answered() {
        let sent: Vec<u8> = (1..=30).collect();
        let mut replies = vec![
            reply(1, "192.168.7.1", 1, ReplyKind::TimeExceeded),
            reply(3, "198.51.100.10", 3, ReplyKind::Arrived),
        ];
        assert!(!round_complete(&sent, &replies), "TTL 2 is still out");
        replies.push(reply(2, "100.64.7.1", 2, ReplyKind::TimeExceeded));
        assert!(round_complete(&sent, &replies));
        // Without an end, a silent TTL keeps the round waiting.
        let open = &replies[..1];
        assert!(!round_complete(&sent, open));
        // TTLs that were never sent (send failed) are not waited for.
        assert!(round_complete(&[1, 3], &replies[..2]));
    }

    #[test]
    fn icmp_errors_map_to_what_they_mean_for_the_path() {
        assert_eq!(
            icmp_reply_kind(false, 11, 0, 0),
            Some(ReplyKind::TimeExceeded)
        );
        assert_eq!(
            icmp_reply_kind(true, 3, 0, 0),
            Some(ReplyKind::TimeExceeded)
        );
        assert_eq!(icmp_reply_kind(false, 3, 3, 0), Some(ReplyKind::Arrived));
        assert_eq!(icmp_reply_kind(true, 1, 4, 0), Some(ReplyKind::Arrived));
        let mark = |m: &str| Some(ReplyKind::Unreachable(m.to_owned()));
        assert_eq!(icmp_reply_kind(false, 3, 1, 0), mark("!H"));
        assert_eq!(icmp_reply_kind(false, 3, 13, 0), mark("!X"));
        assert_eq!(icmp_reply_kind(false, 3, 4, 1400), mark("!F-1400"));
        assert_eq!(icmp_reply_kind(false, 3, 8, 0), mark("!<8>"));
        assert_eq!(icmp_reply_kind(true, 1, 1, 0), mark("!X"));
        assert_eq!(icmp_reply_kind(true, 1, 3, 0), mark("!H"));
        assert_eq!(icmp_reply_kind(true, 2, 0, 1280), mark("!F-1280"));
        // Redirects and parameter problems say nothing about the path.
        assert_eq!(icmp_reply_kind(false, 5, 1, 0), None);
        assert_eq!(icmp_reply_kind(true, 4, 0, 0), None);
    }

    #[test]
    fn impossible_requests_are_refused() {
        let mut request = TraceRequest::new(ip("203.0.113.10"), "x");
        request.first_ttl = 0;
        assert!(check_request(&request).is_err());
        request.first_ttl = 31;
        assert!(check_request(&request).is_err());
        request.first_ttl = 1;
        request.rounds = 0;
        assert!(check_request(&request).is_err());
        request.rounds = 1;
        assert!(check_request(&request).is_ok());
    }

    #[test]
    fn rtts_are_in_milliseconds_to_the_microsecond() {
        assert!((millis(Duration::from_micros(1234)) - 1.234).abs() < 1e-9);
        assert!((millis(Duration::from_secs(2)) - 2000.0).abs() < 1e-9);
    }
}
