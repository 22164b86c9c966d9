//! The `trippy` engine: trippy-core with raw sockets.
//!
//! The best engine where it may run (root or `CAP_NET_RAW` on Linux, root on
//! macOS, Administrator on Windows): it sends every TTL of a round at once,
//! so a trace to a destination that never answers takes one round plus the
//! grace period instead of traceroute's TTL-by-TTL timeouts.
//!
//! trippy-core is synchronous and cannot be cancelled, so it runs on its own
//! thread with a bounded number of rounds, and [`TrippyEngine::trace`] stops
//! waiting at the request's deadline (the thread is left to finish on its
//! own). It panics on a first TTL of 0 and in unprivileged mode on Windows;
//! neither is ever asked of it.

// Off the platforms trippy-core is built for, only the hop conversion's tests use it.
#![cfg_attr(
    not(any(target_os = "linux", target_os = "windows", target_os = "macos")),
    allow(dead_code)
)]

use std::net::IpAddr;
use std::time::Duration;

use lineprobe_shared::{Hop, TraceEngine};

use super::{Engine, TraceOutcome, TraceRequest};
use crate::Error;

/// How long trippy waits on its socket per loop turn. It sends one probe per
/// turn, so this bounds how long sending a whole round takes when nothing
/// answers (trippy's 10 ms default would stretch 30 TTLs over 300 ms).
#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
const READ_TIMEOUT: Duration = Duration::from_millis(2);

/// The most trippy waits after the last reply once the destination has
/// answered. Only replies from nearer routers can still be on their way
/// then, and they are not a grace period late; waiting the full grace would
/// make every reached trace a second slower for nothing.
#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
const REACHED_GRACE: Duration = Duration::from_millis(250);

/// Added to the grace period for a round that does not reach the
/// destination: the time to send the round's probes.
#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
const SEND_ALLOWANCE: Duration = Duration::from_millis(100);

/// Added to the later rounds' time for sending their (fewer) probes.
#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
const LATER_SEND_SLACK: Duration = Duration::from_millis(20);

/// TTLs probed in the later rounds past the last that answered in the first,
/// when the destination did not answer.
#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
const LATER_TTL_SLACK: u8 = 2;

/// The trippy-core engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrippyEngine {
    _private: (),
}

impl TrippyEngine {
    /// The engine; whether it can run is for [`Engine::check_available`].
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for TrippyEngine {
    fn kind(&self) -> TraceEngine {
        TraceEngine::TrippyCore
    }

    fn check_available(&self) -> Result<(), String> {
        platform::check_available()
    }

    fn trace(&self, request: &TraceRequest) -> Result<TraceOutcome, Error> {
        platform::trace(request)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "windows", target_os = "macos")))]
mod platform {
    //! trippy-core is not built here (it fails on Android).

    use super::{Error, TraceOutcome, TraceRequest};

    const REASON: &str = "trippy-core is not built for this platform (it needs raw sockets, \
                          which Android does not give apps)";

    pub(super) fn check_available() -> Result<(), String> {
        Err(REASON.to_owned())
    }

    pub(super) fn trace(_request: &TraceRequest) -> Result<TraceOutcome, Error> {
        Err(Error::EngineUnavailable {
            engine: "trippy-core".to_owned(),
            reason: REASON.to_owned(),
        })
    }
}

#[cfg(any(target_os = "linux", target_os = "windows", target_os = "macos"))]
mod platform {
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::{Arc, Mutex, PoisonError, mpsc};
    use std::thread;
    use std::time::{Duration, Instant};

    use lineprobe_shared::{TraceEngine, TraceProtocol};
    use trippy_core::{
        Builder, CompletionReason, IcmpPacketType, MultipathStrategy, Port, PortDirection,
        PrivilegeMode, ProbeStatus, Protocol, Round,
    };
    use trippy_privilege::Privilege;

    use super::{
        Error, LATER_SEND_SLACK, LATER_TTL_SLACK, ProbeRecord, REACHED_GRACE, READ_TIMEOUT,
        RoundRecord, SEND_ALLOWANCE, TraceOutcome, TraceRequest, end_ttl, hops_from_rounds,
        unreachable_mark,
    };

    #[cfg(target_os = "windows")]
    const NEEDS: &str = "needs Administrator rights (raw sockets)";
    #[cfg(not(target_os = "windows"))]
    const NEEDS: &str = "needs root or CAP_NET_RAW (raw sockets)";

    /// Raises `CAP_NET_RAW` into the effective set when it is permitted
    /// (Linux) and says whether raw sockets may be opened. Capabilities are
    /// per thread on Linux, so the tracing thread calls this itself.
    fn acquire() -> Result<(), String> {
        match Privilege::acquire_privileges() {
            Ok(privilege) if privilege.has_privileges() => Ok(()),
            Ok(_) => Err(NEEDS.to_owned()),
            Err(e) => Err(format!("{NEEDS}; checking privileges failed: {e}")),
        }
    }

    pub(super) fn check_available() -> Result<(), String> {
        acquire()
    }

    /// A trace identifier per trace, so that concurrent traces (tests, a
    /// daemon and a manual run) do not take each other's replies. 0 is
    /// avoided: trippy accepts it from any UDP/TCP reply.
    fn next_trace_id() -> u16 {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        #[allow(clippy::cast_possible_truncation, reason = "only mixing bits")]
        let pid = std::process::id() as u16;
        let id = pid
            .wrapping_mul(31)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        if id == 0 { 1 } else { id }
    }

    fn trippy_error(reason: impl Into<String>) -> Error {
        Error::TraceFailed {
            engine: TraceEngine::TrippyCore.to_string(),
            reason: reason.into(),
        }
    }

    fn record(round: &Round<'_>, target: IpAddr) -> RoundRecord {
        let probes = round
            .probes
            .iter()
            .filter_map(|status| match status {
                ProbeStatus::Awaited(probe) => Some(ProbeRecord {
                    ttl: probe.ttl.0,
                    reply: None,
                    unreachable: false,
                }),
                ProbeStatus::Complete(done) => {
                    let rtt = done.received.duration_since(done.sent).unwrap_or_default();
                    let unreachable =
                        matches!(done.icmp_packet_type, IcmpPacketType::Unreachable(_));
                    let mark = match done.icmp_packet_type {
                        // The destination's own port unreachable ends a UDP
                        // trace normally; other codes from a router are the
                        // `!H`/`!N`… marks traceroute prints.
                        IcmpPacketType::Unreachable(code) if done.host != target => {
                            unreachable_mark(code.0, target.is_ipv6())
                        }
                        _ => None,
                    };
                    Some(ProbeRecord {
                        ttl: done.ttl.0,
                        reply: Some((done.host, rtt, mark)),
                        unreachable,
                    })
                }
                // Never sent (or a TCP port clash re-sent under another
                // sequence): not a probe of this TTL.
                ProbeStatus::NotSent | ProbeStatus::Skipped | ProbeStatus::Failed(_) => None,
            })
            .collect();
        RoundRecord {
            probes,
            target_found: round.reason == CompletionReason::TargetFound,
            largest_ttl: round.largest_ttl.0,
        }
    }

    fn builder(request: &TraceRequest, first_ttl: u8, part: &RunPlan) -> Builder {
        let RunPlan {
            max_ttl,
            rounds,
            grace,
            send_allowance,
            sequence_offset,
            udp_src_port,
        } = *part;
        let builder = Builder::new(request.target)
            .privilege_mode(PrivilegeMode::Privileged)
            .trace_identifier(next_trace_id())
            .first_ttl(first_ttl)
            .max_ttl(max_ttl)
            // Every TTL of the round in flight at once: a silent stretch
            // must not hold back the TTLs after it.
            .max_inflight(max_ttl.saturating_add(1))
            .max_rounds(Some(usize::from(rounds)))
            .grace_duration(grace.min(REACHED_GRACE))
            .min_round_duration(Duration::ZERO)
            .max_round_duration(grace.saturating_add(send_allowance))
            .read_timeout(READ_TIMEOUT)
            .drop_privileges(false);
        match request.protocol {
            TraceProtocol::Icmp => builder.protocol(Protocol::Icmp),
            // Paris traceroute: every probe of the trace, in every round,
            // is one flow (the same source and destination port), and the
            // UDP checksum carries the probe's sequence number. A router
            // balancing per flow sends them all the same way, so the hops
            // are of one path; counting the destination port up (classic
            // traceroute) would show a mix of the paths at each TTL.
            TraceProtocol::Udp => builder
                .protocol(Protocol::Udp)
                .multipath_strategy(MultipathStrategy::Paris)
                .port_direction(PortDirection::FixedBoth(
                    Port(udp_src_port),
                    Port(request.port),
                ))
                .initial_sequence(
                    request
                        .port
                        .saturating_add(sequence_offset)
                        .min(trippy_initial_sequence_max()),
                ),
            TraceProtocol::Tcp => builder
                .protocol(Protocol::Tcp)
                .port_direction(PortDirection::FixedDest(Port(request.port)))
                .tcp_connect_timeout(grace),
        }
    }

    /// The UDP source port of a new trace: in the dynamic range, and
    /// different per process and per trace so that concurrent traces (two
    /// agents, a daemon and a manual run) do not take each other's
    /// replies. Every probe of the trace keeps it.
    fn udp_src_port() -> u16 {
        static NEXT: AtomicU16 = AtomicU16::new(0);
        let n = u32::from(NEXT.fetch_add(1, Ordering::Relaxed));
        #[allow(clippy::cast_possible_truncation, reason = "the modulo fits")]
        let offset = ((std::process::id() % 10_000 + n) % 10_000) as u16;
        50_000 + offset
    }

    const fn trippy_initial_sequence_max() -> u16 {
        // trippy-core's MAX_INITIAL_SEQUENCE (not exported).
        u16::MAX - 512 * 2
    }

    pub(super) fn trace(request: &TraceRequest) -> Result<TraceOutcome, Error> {
        let started = Instant::now();
        let deadline = crate::engine::deadline_after(started, request.deadline);
        // trippy-core panics on TTL 0 and rejects TTLs above 254.
        let first_ttl = request.first_ttl.clamp(1, trippy_core::MAX_TTL);
        let max_ttl = request.max_ttl.clamp(first_ttl, trippy_core::MAX_TTL);
        let rounds = request.rounds.max(1);
        // trippy waits the same time in every round; the first round needs
        // the whole grace period, the later ones only what the routers that
        // answered need (`later_round_wait`). So the first round runs alone
        // and the rest as a second trippy run with the shorter wait.
        let udp_src_port = udp_src_port();
        let first = RunPlan {
            max_ttl,
            rounds: 1,
            grace: request.grace,
            send_allowance: SEND_ALLOWANCE,
            sequence_offset: 0,
            udp_src_port,
        };
        let (mut rounds_seen, finished) = run(request, first_ttl, &first, deadline)?;
        if finished && rounds > 1 && Instant::now() < deadline {
            let slowest = rounds_seen
                .iter()
                .flat_map(|r| r.probes.iter())
                .filter_map(|p| p.reply.as_ref().map(|(_, rtt, _)| *rtt))
                .max();
            let wait = crate::engine::later_round_wait(request.grace, slowest);
            // Past the destination (or a router that refused the probes)
            // nothing more can be learnt; when neither answered, a little
            // past the last router that did (a TTL
            // silent through a whole grace period stays silent in a
            // shorter wait, and fewer probes make a shorter round).
            let last_answer = rounds_seen
                .iter()
                .flat_map(|r| r.probes.iter())
                .filter(|p| p.reply.is_some())
                .map(|p| p.ttl)
                .max();
            let last = end_ttl(&rounds_seen)
                .or_else(|| last_answer.map(|ttl| ttl.saturating_add(LATER_TTL_SLACK)))
                .map_or(max_ttl, |end| end.clamp(first_ttl, max_ttl));
            // The later UDP probes take the next sequence numbers (their
            // checksums), as they would in one run, so that a late answer
            // to the first round is not taken for theirs; they keep the
            // first round's flow (its ports).
            let offset = u16::from(max_ttl - first_ttl) + 1;
            let later = RunPlan {
                max_ttl: last,
                rounds: rounds - 1,
                grace: wait,
                // trippy sends one probe a loop turn.
                send_allowance: READ_TIMEOUT
                    .saturating_mul(u32::from(last - first_ttl) + 1)
                    .saturating_add(LATER_SEND_SLACK),
                sequence_offset: offset,
                udp_src_port,
            };
            match run(request, first_ttl, &later, deadline) {
                Ok((later, _)) => rounds_seen.extend(later),
                // The first round stands on its own.
                Err(e) => tracing::warn!(error = %e, "trippy-core's later rounds failed"),
            }
        }
        if rounds_seen.is_empty() {
            let why = if finished {
                "trippy-core finished without completing a round".to_owned()
            } else {
                format!(
                    "no round finished within the {:.1} s deadline",
                    request.deadline.as_secs_f64()
                )
            };
            return Err(trippy_error(why));
        }
        let (hops, reached) = hops_from_rounds(&rounds_seen, first_ttl);
        if hops.is_empty() {
            return Err(trippy_error(
                "no probe could be sent (is there a route to the target?)",
            ));
        }
        Ok(TraceOutcome {
            engine: TraceEngine::TrippyCore,
            protocol: request.protocol,
            hops,
            reached,
            duration: started.elapsed(),
            raw_text: None,
            raw_format: None,
        })
    }

    /// What one trippy-core run does: the first round, or the later ones.
    #[derive(Clone, Copy)]
    struct RunPlan {
        max_ttl: u8,
        rounds: u8,
        /// The wait of each of its rounds.
        grace: Duration,
        /// Added to the wait for sending a round's probes.
        send_allowance: Duration,
        /// Added to the first UDP sequence number.
        sequence_offset: u16,
        /// The trace's UDP source port (one flow for all its runs).
        udp_src_port: u16,
    }

    /// One trippy-core run on its own thread, waited for until `deadline`:
    /// the rounds it finished and whether it finished.
    fn run(
        request: &TraceRequest,
        first_ttl: u8,
        part: &RunPlan,
        deadline: Instant,
    ) -> Result<(Vec<RoundRecord>, bool), Error> {
        let tracer = builder(request, first_ttl, part)
            .build()
            .map_err(|e| trippy_error(format!("bad settings: {e}")))?;
        let target = request.target;
        let rounds_seen: Arc<Mutex<Vec<RoundRecord>>> = Arc::default();
        let sink = Arc::clone(&rounds_seen);
        let (done_tx, done_rx) = mpsc::channel::<Result<(), String>>();
        let spawned = thread::Builder::new()
            .name("trippy-trace".to_owned())
            .spawn(move || {
                let result = acquire().and_then(|()| {
                    tracer
                        .run_with(|round| {
                            sink.lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(record(round, target));
                        })
                        .map_err(|e| e.to_string())
                });
                // The caller may have stopped waiting; nothing to do then.
                let _ = done_tx.send(result);
            });
        if let Err(e) = spawned {
            return Err(Error::Io {
                what: "starting the trippy-core thread".to_owned(),
                source: e,
            });
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let finished = match done_rx.recv_timeout(left) {
            Ok(Ok(())) => true,
            Ok(Err(reason)) => {
                return Err(trippy_error(reason));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(trippy_error(
                    "trippy-core stopped unexpectedly (it panicked)",
                ));
            }
        };
        let seen = rounds_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Ok((seen, finished))
    }
}

/// One probe of a finished round, in our own terms so the conversion to
/// hops can be tested without raw sockets.
#[derive(Debug, Clone, PartialEq)]
struct ProbeRecord {
    ttl: u8,
    /// Who answered, after how long, and a traceroute-style mark (`!H`…)
    /// for an unreachable from a router.
    reply: Option<(IpAddr, Duration, Option<String>)>,
    /// Whether the answer was a destination unreachable (from a router or
    /// the destination): the probe went no further, nor will later ones.
    unreachable: bool,
}

/// The mark `traceroute` prints for an ICMP destination unreachable from a
/// router, by the message's code, which means different things over IPv4
/// and IPv6 (trippy-core passes either on as it came). `None` for port
/// unreachable, the normal end of a trace, which traceroute leaves unmarked.
fn unreachable_mark(code: u8, v6: bool) -> Option<String> {
    let mark = if v6 {
        match code {
            0 => "!N",
            1 => "!X",
            2 => "!S",
            3 => "!H",
            4 => return None,
            other => return Some(format!("!<{other}>")),
        }
    } else {
        match code {
            0 | 6 | 11 => "!N",
            1 | 7 | 12 => "!H",
            2 => "!P",
            3 => return None,
            // trippy-core does not pass the next hop's MTU on.
            4 => "!F",
            5 => "!S",
            9 | 10 | 13 => "!X",
            14 => "!V",
            15 => "!C",
            other => return Some(format!("!<{other}>")),
        }
    };
    Some(mark.to_owned())
}

/// Where the probes went no further: the lowest TTL at which the
/// destination answered, or a router or the destination said unreachable.
fn end_ttl(rounds: &[RoundRecord]) -> Option<u8> {
    let reached = rounds
        .iter()
        .filter(|r| r.target_found)
        .map(|r| r.largest_ttl);
    let refused = rounds
        .iter()
        .flat_map(|r| r.probes.iter())
        .filter(|p| p.unreachable && p.reply.is_some())
        .map(|p| p.ttl);
    reached.chain(refused).min()
}

/// A finished round.
#[derive(Debug, Clone, PartialEq)]
struct RoundRecord {
    /// The probes sent in the round, answered or not.
    probes: Vec<ProbeRecord>,
    /// Whether the destination answered in this round.
    target_found: bool,
    /// The destination's TTL when it answered; else trippy's guess (one past
    /// the last TTL that answered).
    largest_ttl: u8,
}

/// Folds the rounds into one hop per TTL from `first_ttl`: up to the
/// destination when it answered, or the first TTL where an unreachable
/// ended the probes' way (probes sent past it are dropped: a router that
/// refuses them answers every TTL beyond too), else up to the highest TTL
/// probed. Returns the hops and whether the destination answered.
fn hops_from_rounds(rounds: &[RoundRecord], first_ttl: u8) -> (Vec<Hop>, bool) {
    let reached_ttl = rounds
        .iter()
        .filter(|r| r.target_found)
        .map(|r| r.largest_ttl)
        .min();
    let last_ttl = end_ttl(rounds).or_else(|| {
        rounds
            .iter()
            .flat_map(|r| r.probes.iter().map(|p| p.ttl))
            .max()
    });
    let Some(last_ttl) = last_ttl else {
        return (Vec::new(), false);
    };
    let reached = reached_ttl.is_some_and(|at| at <= last_ttl);
    if last_ttl < first_ttl {
        return (Vec::new(), reached);
    }
    let mut hops: Vec<Hop> = (first_ttl..=last_ttl).map(Hop::new).collect();
    for round in rounds {
        for probe in &round.probes {
            let Some(index) = probe.ttl.checked_sub(first_ttl) else {
                continue;
            };
            let Some(hop) = hops.get_mut(usize::from(index)) else {
                continue;
            };
            hop.sent = hop.sent.saturating_add(1);
            if let Some((addr, rtt, mark)) = &probe.reply {
                hop.received = hop.received.saturating_add(1);
                hop.push_addr(*addr);
                hop.rtt_ms.push(rtt_ms(*rtt));
                if let Some(mark) = mark
                    && !hop.annotations.contains(mark)
                {
                    hop.annotations.push(mark.clone());
                }
            }
        }
    }
    (hops, reached)
}

/// Milliseconds, to the microsecond (finer is noise).
fn rtt_ms(rtt: Duration) -> f64 {
    #[allow(
        clippy::cast_precision_loss,
        reason = "microseconds of a round trip fit an f64 exactly"
    )]
    let micros = rtt.as_micros() as f64;
    micros / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn answered(ttl: u8, last: u8, ms: u64) -> ProbeRecord {
        ProbeRecord {
            ttl,
            reply: Some((ip(last), Duration::from_millis(ms), None)),
            unreachable: false,
        }
    }

    fn silent(ttl: u8) -> ProbeRecord {
        ProbeRecord {
            ttl,
            reply: None,
            unreachable: false,
        }
    }

    #[test]
    fn reached_trace_stops_at_the_destination() {
        let round = RoundRecord {
            probes: vec![
                answered(1, 1, 1),
                silent(2),
                answered(3, 9, 3),
                // Sent before the destination's reply came back.
                answered(4, 9, 4),
                silent(5),
            ],
            target_found: true,
            largest_ttl: 3,
        };
        let (hops, reached) = hops_from_rounds(&[round], 1);
        assert!(reached);
        assert_eq!(hops.len(), 3);
        assert_eq!(hops[0].addrs, vec![ip(1)]);
        assert!(hops[1].is_silent());
        assert_eq!(hops[1].sent, 1);
        assert_eq!(hops[1].received, 0);
        assert_eq!(hops[2].addrs, vec![ip(9)]);
        assert_eq!(hops[2].rtt_ms, vec![3.0]);
    }

    #[test]
    fn silent_destination_keeps_every_probed_ttl() {
        let round = RoundRecord {
            probes: (1..=30)
                .map(|ttl| {
                    if ttl <= 4 {
                        answered(ttl, ttl, 1)
                    } else {
                        silent(ttl)
                    }
                })
                .collect(),
            target_found: false,
            largest_ttl: 5,
        };
        let (hops, reached) = hops_from_rounds(&[round], 1);
        assert!(!reached);
        assert_eq!(hops.len(), 30);
        assert_eq!(hops.iter().filter(|h| !h.is_silent()).count(), 4);
        assert_eq!(hops.last().map(|h| h.ttl), Some(30));
    }

    #[test]
    fn rounds_add_up_and_addresses_are_sorted() {
        let first = RoundRecord {
            probes: vec![answered(2, 20, 2), answered(3, 9, 5)],
            target_found: true,
            largest_ttl: 3,
        };
        let second = RoundRecord {
            probes: vec![answered(2, 3, 1), silent(3)],
            target_found: false,
            largest_ttl: 3,
        };
        let (hops, reached) = hops_from_rounds(&[first, second], 2);
        assert!(reached);
        assert_eq!(hops.first().map(|h| h.ttl), Some(2));
        // "10.0.0.20" < "10.0.0.3" as text: the canonical order.
        assert_eq!(hops[0].addrs, vec![ip(20), ip(3)]);
        assert_eq!((hops[0].sent, hops[0].received), (2, 2));
        assert_eq!((hops[1].sent, hops[1].received), (2, 1));
        assert_eq!(hops[0].rtt_ms, vec![2.0, 1.0]);
    }

    #[test]
    fn marks_are_kept_once() {
        let mark = Some("!H".to_owned());
        let probe = ProbeRecord {
            ttl: 1,
            reply: Some((ip(1), Duration::from_micros(1500), mark)),
            unreachable: true,
        };
        let round = RoundRecord {
            probes: vec![probe.clone(), probe],
            target_found: false,
            largest_ttl: 2,
        };
        let (hops, _) = hops_from_rounds(&[round], 1);
        assert_eq!(hops[0].annotations, vec!["!H".to_owned()]);
        assert_eq!(hops[0].rtt_ms, vec![1.5, 1.5]);
    }

    #[test]
    fn a_router_refusing_the_probes_ends_the_trace_there() {
        // r refuses everything past it: every later TTL gets its
        // unreachable too, which is no hop of the path.
        let refused = |ttl: u8| ProbeRecord {
            ttl,
            reply: Some((ip(5), Duration::from_millis(1), Some("!X".to_owned()))),
            unreachable: true,
        };
        let round = RoundRecord {
            probes: vec![answered(1, 1, 1), silent(2), answered(3, 5, 1)]
                .into_iter()
                .chain((4..=30).map(refused))
                .collect(),
            target_found: false,
            largest_ttl: 30,
        };
        let (hops, reached) = hops_from_rounds(&[round], 1);
        assert!(!reached);
        assert_eq!(hops.len(), 4, "{hops:#?}");
        assert_eq!(hops[3].addrs, [ip(5)]);
        assert_eq!(hops[3].annotations, ["!X"]);
    }

    #[test]
    fn unreachable_marks_follow_the_family_as_traceroute_prints_them() {
        let mark = |code, v6| unreachable_mark(code, v6);
        assert_eq!(mark(13, false).as_deref(), Some("!X"));
        assert_eq!(mark(1, false).as_deref(), Some("!H"));
        assert_eq!(mark(0, false).as_deref(), Some("!N"));
        assert_eq!(mark(3, false), None);
        assert_eq!(mark(8, false).as_deref(), Some("!<8>"));
        // ICMPv6: 1 is administratively prohibited, 3 address unreachable,
        // 4 port unreachable.
        assert_eq!(mark(1, true).as_deref(), Some("!X"));
        assert_eq!(mark(3, true).as_deref(), Some("!H"));
        assert_eq!(mark(4, true), None);
        assert_eq!(mark(0, true).as_deref(), Some("!N"));
    }

    #[test]
    fn nothing_sent_gives_no_hops() {
        let round = RoundRecord {
            probes: Vec::new(),
            target_found: false,
            largest_ttl: 0,
        };
        assert_eq!(hops_from_rounds(&[round], 1), (Vec::new(), false));
        assert_eq!(hops_from_rounds(&[], 1), (Vec::new(), false));
    }

    #[test]
    fn kind_is_trippy_core() {
        assert_eq!(TrippyEngine::new().kind(), TraceEngine::TrippyCore);
    }
}
