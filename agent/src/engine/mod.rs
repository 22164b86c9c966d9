//! Trace engines: four ways to trace the route, from the best (raw sockets)
//! to the most portable (the platform's own tool), behind one trait so that
//! `auto` can pick the best one the device allows and say why it skipped
//! the others.
//!
//! Engines are synchronous: trippy-core is, and a blocking engine is the
//! easiest thing for the Android app and the Windows service to host. The
//! async agent runs them on a blocking thread.

mod unprivileged;

pub use unprivileged::UnprivilegedEngine;

mod auto;
mod system;
mod trippy;

pub use auto::{engine_named, engines_for_platform, trace_auto, trace_auto_platform};
#[cfg_attr(
    any(target_os = "linux", target_os = "android"),
    allow(
        unused_imports,
        reason = "Linux and Android read their facts from files"
    )
)]
pub(crate) use system::helper_output;
pub use system::{SystemEngine, SystemTool};
pub use trippy::TrippyEngine;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lineprobe_shared::{Hop, TraceEngine, TraceFormat, TraceProtocol};

use crate::Error;

mod windows_icmp;

pub use windows_icmp::WindowsIcmpEngine;

/// What to trace and how hard to try.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceRequest {
    /// The destination address (already resolved).
    pub target: IpAddr,
    /// The destination as the user or config named it (host name or address).
    pub target_name: String,
    /// Probe protocol. Engines that cannot send it fall back to one they can
    /// and say so in [`TraceOutcome::protocol`].
    pub protocol: TraceProtocol,
    /// First TTL probed (at least 1: trippy-core panics on 0).
    pub first_ttl: u8,
    /// Last TTL probed.
    pub max_ttl: u8,
    /// Probes sent per TTL (one round sends one probe to every TTL).
    pub rounds: u8,
    /// How long the first round waits for replies after its last probe;
    /// later rounds wait less once the answering routers' round-trip times
    /// are known (see `later_round_wait`).
    pub grace: Duration,
    /// Hard limit on the whole trace, whatever the engine.
    pub deadline: Duration,
    /// Destination port for UDP/TCP probes.
    pub port: u16,
}

impl TraceRequest {
    /// The defaults: ICMP, TTL 1–30, one round, 1 s grace, 10 s deadline.
    pub fn new(target: IpAddr, target_name: impl Into<String>) -> Self {
        Self {
            target,
            target_name: target_name.into(),
            protocol: TraceProtocol::Icmp,
            first_ttl: 1,
            max_ttl: 30,
            rounds: 1,
            grace: Duration::from_secs(1),
            deadline: Duration::from_secs(10),
            port: 33434,
        }
    }
}

/// The least a round after the first waits for its answers.
const LATER_ROUND_MIN_WAIT: Duration = Duration::from_millis(100);

/// Added to twice the slowest answer for a later round's wait: scheduling
/// and a router's slow path for ICMP.
const LATER_ROUND_MARGIN: Duration = Duration::from_millis(50);

/// How long a round after the first waits for its answers.
///
/// The first round waits the whole grace period: nothing is known yet. By
/// its end every router that answers has shown how far away it is, so a
/// later round waits twice the slowest answer seen plus a margin (at least
/// 100 ms, at most the grace period). A destination that never answers — a
/// firewalled receiver is common — then costs one grace period in all, not
/// one a round, and the extra rounds add their probes' samples for little.
pub(crate) fn later_round_wait(grace: Duration, slowest: Option<Duration>) -> Duration {
    slowest
        .map_or(LATER_ROUND_MIN_WAIT, |s| {
            s.saturating_mul(2).saturating_add(LATER_ROUND_MARGIN)
        })
        .max(LATER_ROUND_MIN_WAIT)
        .min(grace)
}

/// Where a deadline falls when `Instant + Duration` cannot say: far
/// enough that no trace reaches it, near enough for every platform's clock.
const FAR_AWAY: Duration = Duration::from_hours(100 * 365 * 24);

/// The instant `budget` after `start`. A request built in code may carry
/// `Duration::MAX` as "no limit", and adding that to an `Instant` panics;
/// it means a far instant instead.
pub(crate) fn deadline_after(start: Instant, budget: Duration) -> Instant {
    start
        .checked_add(budget)
        .or_else(|| start.checked_add(FAR_AWAY))
        // A clock that cannot go a century ahead: as far as it can go is
        // not knowable, so no wait at all beats a panic.
        .unwrap_or(start)
}

/// What an engine found.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceOutcome {
    /// The engine that ran.
    pub engine: TraceEngine,
    /// The protocol actually used.
    pub protocol: TraceProtocol,
    /// One entry per TTL up to the destination (or `max_ttl`), silent hops
    /// included, in TTL order.
    pub hops: Vec<Hop>,
    /// Whether the destination itself answered.
    pub reached: bool,
    /// How long the trace took.
    pub duration: Duration,
    /// The tool's output, for the `system` engine.
    pub raw_text: Option<String>,
    /// The format of `raw_text`.
    pub raw_format: Option<TraceFormat>,
}

/// A way of tracing.
pub trait Engine: Send + Sync {
    /// The engine's name in reports.
    fn kind(&self) -> TraceEngine;

    /// `Ok` when this engine can run here now, else why not — the reason
    /// goes into the report's `engine_fallbacks`, so it should say what
    /// would make it available ("needs `CAP_NET_RAW` or root").
    fn check_available(&self) -> Result<(), String>;

    /// Traces; blocks for at most `request.deadline` (plus a little).
    fn trace(&self, request: &TraceRequest) -> Result<TraceOutcome, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_round_waits_twice_the_slowest_answer_within_bounds() {
        let grace = Duration::from_secs(1);
        let ms = Duration::from_millis;
        assert_eq!(later_round_wait(grace, Some(ms(40))), ms(130));
        // Near routers: the floor; nothing answered: the floor too.
        assert_eq!(later_round_wait(grace, Some(ms(1))), ms(100));
        assert_eq!(later_round_wait(grace, None), ms(100));
        // Far routers: never more than the first round's grace.
        assert_eq!(later_round_wait(grace, Some(ms(700))), grace);
        assert_eq!(later_round_wait(ms(50), None), ms(50));
        assert_eq!(later_round_wait(grace, Some(Duration::MAX)), grace);
    }

    #[test]
    fn a_deadline_past_what_an_instant_holds_is_far_away_instead_of_a_panic() {
        let start = Instant::now();
        let far = deadline_after(start, Duration::MAX);
        assert!(far.duration_since(start) >= Duration::from_hours(365 * 24));
        let ten = Duration::from_secs(10);
        assert_eq!(deadline_after(start, ten), start + ten);
        assert_eq!(deadline_after(start, Duration::ZERO), start);
    }
}
