//! The `windows-icmp` engine: traces with the IP Helper API's
//! `IcmpSendEcho2` / `Icmp6SendEcho2`, as `tracert` does. Windows lets any
//! user send ICMP echoes this way, so it works without Administrator rights
//! where raw sockets (trippy-core) do not.
//!
//! Each probe is one blocking echo with a TTL (hop limit) option, on its own
//! thread: all TTLs of a round are in flight at once, so a round takes about
//! one grace period instead of one per hop. Windows reports what came back as
//! an IP status: "TTL expired in transit" names the router at that TTL, an
//! echo reply means the destination answered, "unreachable" statuses end the
//! trace with the mark `traceroute` would print (`!H`, `!N`, `!P`…).
//!
//! # Why this module uses `unsafe`
//!
//! The workspace denies `unsafe_code`; this module alone allows it, because
//! the ICMP helper functions are only reachable through FFI to
//! `iphlpapi.dll` and no safe crate wraps `IcmpSendEcho2`. The unsafe code is
//! confined to the Windows-only `ffi` module at the bottom: opening and
//! closing the ICMP handle, the send call with buffers sized as Microsoft
//! documents (reply structure + request data + 8 bytes for an ICMP error +
//! an `IO_STATUS_BLOCK`), and reading the reply structure back. Everything
//! else — status mapping, hop assembly, the parallel fan-out — is safe code
//! behind the [`EchoSender`] trait and is unit-tested on every platform.
#![allow(unsafe_code)]
// FFI to the IP Helper API; see the module docs.
// The trace logic runs only on Windows; elsewhere only its tests use it.
#![cfg_attr(not(windows), allow(dead_code))]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lineprobe_shared::{Hop, TraceEngine, TraceProtocol};

use super::{Engine, TraceOutcome, TraceRequest};
use crate::Error;

/// Traces with `IcmpSendEcho2` / `Icmp6SendEcho2` (Windows, no privilege
/// needed). On other systems it exists so that `auto` can name it and say
/// why it was skipped.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowsIcmpEngine {
    _private: (),
}

impl WindowsIcmpEngine {
    /// The engine.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for WindowsIcmpEngine {
    fn kind(&self) -> TraceEngine {
        TraceEngine::WindowsIcmp
    }

    fn check_available(&self) -> Result<(), String> {
        #[cfg(windows)]
        {
            ffi::check_available()
        }
        #[cfg(not(windows))]
        {
            Err(NOT_WINDOWS.to_owned())
        }
    }

    fn trace(&self, request: &TraceRequest) -> Result<TraceOutcome, Error> {
        #[cfg(windows)]
        {
            run_trace(&ffi::IcmpApi, request)
        }
        #[cfg(not(windows))]
        {
            let _ = request;
            Err(Error::EngineUnavailable {
                engine: TraceEngine::WindowsIcmp.to_string(),
                reason: NOT_WINDOWS.to_owned(),
            })
        }
    }
}

#[cfg(not(windows))]
const NOT_WINDOWS: &str = "only on Windows: it uses the IP Helper API (`IcmpSendEcho2`); \
                           use `trippy-core`, `unprivileged` or a `system:` engine here";

/// The echo payload, as `tracert` sends it (32 bytes).
const PAYLOAD: &[u8; 32] = b"abcdefghijklmnopqrstuvwabcdefghi";

/// At most this many probes in flight (threads) at once. The default trace
/// (TTL 1–30) fits in one batch; a trace to TTL 255 does not start 255
/// threads.
const MAX_PARALLEL: usize = 32;

/// IP status codes from `ipexport.h`. They are part of the Windows ABI; the
/// `ffi` module checks at compile time that they match `windows-sys`.
mod status {
    pub(super) const SUCCESS: u32 = 0;
    pub(super) const BUF_TOO_SMALL: u32 = 11001;
    /// Net unreachable (v4); no route to destination (v6).
    pub(super) const DEST_NET_UNREACHABLE: u32 = 11002;
    /// Host unreachable (v4); address unreachable (v6).
    pub(super) const DEST_HOST_UNREACHABLE: u32 = 11003;
    /// Protocol unreachable (v4); administratively prohibited (v6).
    pub(super) const DEST_PROT_UNREACHABLE: u32 = 11004;
    pub(super) const DEST_PORT_UNREACHABLE: u32 = 11005;
    pub(super) const NO_RESOURCES: u32 = 11006;
    pub(super) const BAD_OPTION: u32 = 11007;
    pub(super) const HW_ERROR: u32 = 11008;
    pub(super) const PACKET_TOO_BIG: u32 = 11009;
    pub(super) const REQ_TIMED_OUT: u32 = 11010;
    pub(super) const BAD_REQ: u32 = 11011;
    pub(super) const BAD_ROUTE: u32 = 11012;
    pub(super) const TTL_EXPIRED_TRANSIT: u32 = 11013;
    pub(super) const TTL_EXPIRED_REASSEM: u32 = 11014;
    pub(super) const PARAM_PROBLEM: u32 = 11015;
    pub(super) const SOURCE_QUENCH: u32 = 11016;
    pub(super) const BAD_DESTINATION: u32 = 11018;
    /// Unreachable with a code Windows does not name.
    pub(super) const DEST_UNREACHABLE: u32 = 11040;
    pub(super) const TIME_EXCEEDED: u32 = 11041;
    pub(super) const BAD_HEADER: u32 = 11042;
    pub(super) const UNRECOGNIZED_NEXT_HEADER: u32 = 11043;
    pub(super) const ICMP_ERROR: u32 = 11044;
    /// Beyond the scope of the source address (v6).
    pub(super) const DEST_SCOPE_MISMATCH: u32 = 11045;
    pub(super) const GENERAL_FAILURE: u32 = 11050;
}

/// What one echo with a TTL brought back, as Windows reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EchoReply {
    /// The IP status (`IP_SUCCESS`, `IP_TTL_EXPIRED_TRANSIT`…), or the
    /// `GetLastError` code when the call returned no reply.
    status: u32,
    /// Who answered, when anyone did.
    address: Option<IpAddr>,
    /// Round-trip time in whole milliseconds as Windows measured it.
    rtt_ms: u32,
}

impl EchoReply {
    /// No reply: the call failed or timed out with `status`.
    fn none(status: u32) -> Self {
        Self {
            status,
            address: None,
            rtt_ms: 0,
        }
    }
}

/// Sends one echo request with a TTL and blocks until its answer or the
/// timeout. `Err` when the request could not even be made (no ICMP handle);
/// statuses, including local failures, come back as `Ok`.
trait EchoSender: Sync {
    fn send(&self, target: IpAddr, ttl: u8, timeout: Duration) -> Result<EchoReply, String>;
}

/// What a status means for the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// A router at this TTL answered (time exceeded).
    Transit,
    /// The destination answered the echo.
    Destination,
    /// The trace ends here: an unreachable answer. Holds the mark
    /// `traceroute` prints, `None` for port unreachable (its normal end).
    Unreachable(Option<&'static str>),
    /// A router answered with another ICMP error; noted, not final.
    OtherIcmp,
    /// Nothing came back in time.
    Silent,
    /// The probe could not be sent or its reply not received (no
    /// resources, bad destination…); nothing is known about the hop.
    LocalFailure,
}

/// Maps a Windows IP status to what it means for the hop. The same number
/// means different things for ICMP over IPv4 and over IPv6 (11004 is "protocol
/// unreachable" for one and "administratively prohibited" for the other), so
/// the family matters.
fn classify(code: u32, v6: bool) -> Verdict {
    use status as s;
    match code {
        s::SUCCESS => Verdict::Destination,
        s::TTL_EXPIRED_TRANSIT | s::TIME_EXCEEDED | s::TTL_EXPIRED_REASSEM => Verdict::Transit,
        s::DEST_NET_UNREACHABLE => Verdict::Unreachable(Some("!N")),
        s::DEST_HOST_UNREACHABLE => Verdict::Unreachable(Some("!H")),
        s::DEST_PROT_UNREACHABLE if v6 => Verdict::Unreachable(Some("!X")),
        s::DEST_PROT_UNREACHABLE => Verdict::Unreachable(Some("!P")),
        s::DEST_PORT_UNREACHABLE => Verdict::Unreachable(None),
        s::DEST_SCOPE_MISMATCH => Verdict::Unreachable(Some("!S")),
        // The MTU is not reported, so the mark has no `-<mtu>`.
        s::PACKET_TOO_BIG => Verdict::Unreachable(Some("!F")),
        // Windows does not tell which code; `traceroute` has no letter for
        // "unknown", `!U` keeps it apart from the named ones.
        s::DEST_UNREACHABLE => Verdict::Unreachable(Some("!U")),
        s::PARAM_PROBLEM
        | s::SOURCE_QUENCH
        | s::BAD_OPTION
        | s::BAD_ROUTE
        | s::BAD_HEADER
        | s::UNRECOGNIZED_NEXT_HEADER
        | s::ICMP_ERROR => Verdict::OtherIcmp,
        s::REQ_TIMED_OUT => Verdict::Silent,
        _ => Verdict::LocalFailure,
    }
}

/// A short name for a status, for error messages and annotations.
fn status_name(code: u32) -> String {
    use status as s;
    let name = match code {
        s::SUCCESS => "success",
        s::BUF_TOO_SMALL => "reply buffer too small",
        s::DEST_NET_UNREACHABLE => "network unreachable",
        s::DEST_HOST_UNREACHABLE => "host unreachable",
        s::DEST_PROT_UNREACHABLE => "protocol unreachable or prohibited",
        s::DEST_PORT_UNREACHABLE => "port unreachable",
        s::NO_RESOURCES => "no resources",
        s::BAD_OPTION => "bad option",
        s::HW_ERROR => "hardware error",
        s::PACKET_TOO_BIG => "packet too big",
        s::REQ_TIMED_OUT => "timed out",
        s::BAD_REQ => "bad request",
        s::BAD_ROUTE => "bad route",
        s::TTL_EXPIRED_TRANSIT => "TTL expired in transit",
        s::TTL_EXPIRED_REASSEM => "TTL expired during reassembly",
        s::PARAM_PROBLEM => "parameter problem",
        s::SOURCE_QUENCH => "source quench",
        s::BAD_DESTINATION => "bad destination",
        s::DEST_UNREACHABLE => "destination unreachable",
        s::TIME_EXCEEDED => "time exceeded",
        s::BAD_HEADER => "bad header",
        s::UNRECOGNIZED_NEXT_HEADER => "unrecognized next header",
        s::ICMP_ERROR => "ICMP error",
        s::DEST_SCOPE_MISMATCH => "beyond scope of source address",
        s::GENERAL_FAILURE => "general failure",
        _ => return format!("status {code}"),
    };
    format!("status {code} ({name})")
}

/// The hops of a trace being assembled, one slot per TTL from the first.
#[derive(Debug)]
struct HopTable {
    target: IpAddr,
    first_ttl: u8,
    hops: Vec<Hop>,
    /// The lowest TTL at which the trace ended (destination or unreachable).
    end_ttl: Option<u8>,
    /// The lowest TTL at which the target itself answered. Probes beyond
    /// the end are in flight with the others, so this only counts when it is
    /// not past [`HopTable::end_ttl`].
    reached_ttl: Option<u8>,
    /// Whether any probe brought an answer back.
    any_reply: bool,
    /// The first local failure, reported when nothing answered at all.
    first_failure: Option<u32>,
}

impl HopTable {
    fn new(target: IpAddr, first_ttl: u8, max_ttl: u8) -> Self {
        Self {
            target,
            first_ttl,
            hops: (first_ttl..=max_ttl).map(Hop::new).collect(),
            end_ttl: None,
            reached_ttl: None,
            any_reply: false,
            first_failure: None,
        }
    }

    /// The slowest answer so far.
    fn slowest(&self) -> Option<Duration> {
        self.hops
            .iter()
            .flat_map(|h| h.rtt_ms.iter())
            .copied()
            .reduce(f64::max)
            .map(|ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
    }

    /// The last TTL still worth probing.
    fn last_ttl(&self) -> u8 {
        let max = self.hops.last().map_or(self.first_ttl, |h| h.ttl);
        self.end_ttl.map_or(max, |end| end.min(max))
    }

    fn record(&mut self, ttl: u8, reply: EchoReply) {
        let Some(hop) = ttl
            .checked_sub(self.first_ttl)
            .and_then(|i| self.hops.get_mut(usize::from(i)))
        else {
            return;
        };
        hop.sent = hop.sent.saturating_add(1);
        let verdict = classify(reply.status, self.target.is_ipv6());
        let address = reply.address.filter(|a| !a.is_unspecified());
        if verdict == Verdict::LocalFailure {
            self.first_failure.get_or_insert(reply.status);
            return;
        }
        let Some(address) = address else {
            // Silent, or an answer without a usable source: nothing to show.
            return;
        };
        self.any_reply = true;
        hop.push_addr(address);
        hop.received = hop.received.saturating_add(1);
        // Windows rounds down to whole milliseconds; `tracert` prints 0 as
        // `<1 ms`, which the hop model records as 0.5.
        hop.rtt_ms.push(if reply.rtt_ms == 0 {
            0.5
        } else {
            f64::from(reply.rtt_ms)
        });
        let mark = match verdict {
            Verdict::Unreachable(mark) => mark.map(str::to_owned),
            Verdict::OtherIcmp => Some(status_name(reply.status)),
            _ => None,
        };
        if let Some(mark) = mark
            && !hop.annotations.contains(&mark)
        {
            hop.annotations.push(mark);
        }
        let (ends, reached) = match verdict {
            Verdict::Destination => (true, true),
            Verdict::Unreachable(_) => (true, address == self.target),
            _ => (false, false),
        };
        if ends {
            self.end_ttl = Some(self.end_ttl.map_or(ttl, |end| end.min(ttl)));
        }
        if reached {
            self.reached_ttl = Some(self.reached_ttl.map_or(ttl, |at| at.min(ttl)));
        }
    }

    /// The hops up to where the trace ended, or all of them.
    fn finish(mut self) -> (Vec<Hop>, bool) {
        let last = self.last_ttl();
        self.hops.retain(|h| h.ttl <= last);
        let reached = self.reached_ttl.is_some_and(|at| at <= last);
        (self.hops, reached)
    }
}

/// Sends one probe per TTL, all at once, each on its own thread, and
/// returns the answers in TTL order.
fn fan_out<S: EchoSender>(
    sender: &S,
    target: IpAddr,
    ttls: &[u8],
    timeout: Duration,
) -> Result<Vec<(u8, EchoReply)>, Error> {
    std::thread::scope(|scope| {
        let mut running = Vec::with_capacity(ttls.len());
        for &ttl in ttls {
            let spawned = std::thread::Builder::new()
                .name(format!("icmp-ttl-{ttl}"))
                .spawn_scoped(scope, move || sender.send(target, ttl, timeout));
            match spawned {
                Ok(handle) => running.push((ttl, handle)),
                // The threads already started are joined when the scope
                // ends; their probes time out on their own.
                Err(e) => {
                    return Err(Error::Io {
                        what: "starting a probe thread".to_owned(),
                        source: e,
                    });
                }
            }
        }
        let mut replies = Vec::with_capacity(running.len());
        for (ttl, handle) in running {
            let reply = handle
                .join()
                .map_err(|_| failed(format!("the probe thread for TTL {ttl} panicked")))?
                .map_err(failed)?;
            replies.push((ttl, reply));
        }
        Ok(replies)
    })
}

fn failed(reason: String) -> Error {
    Error::TraceFailed {
        engine: TraceEngine::WindowsIcmp.to_string(),
        reason,
    }
}

/// Checks the request's numbers; the engine needs at least one TTL and one
/// round.
fn check_request(request: &TraceRequest) -> Result<(), Error> {
    let problem = if request.first_ttl == 0 {
        Some(("first_ttl", "must be at least 1".to_owned()))
    } else if request.first_ttl > request.max_ttl {
        Some((
            "max_ttl",
            format!(
                "must be at least first_ttl ({}), is {}",
                request.first_ttl, request.max_ttl
            ),
        ))
    } else if request.rounds == 0 {
        Some(("rounds", "must be at least 1".to_owned()))
    } else {
        None
    };
    match problem {
        Some((key, reason)) => Err(Error::Config {
            key: key.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// The timeout handed to Windows for one batch: the grace period, cut to
/// what is left of the deadline.
fn probe_timeout(grace: Duration, left: Duration) -> Duration {
    grace.min(left).max(Duration::from_millis(1))
}

/// Runs a trace with any sender: rounds of parallel probes, each round
/// probing only up to where the previous ones found the end.
fn run_trace<S: EchoSender>(sender: &S, request: &TraceRequest) -> Result<TraceOutcome, Error> {
    check_request(request)?;
    let start = Instant::now();
    let mut table = HopTable::new(request.target, request.first_ttl, request.max_ttl);
    'rounds: for round in 0..request.rounds {
        let grace = if round == 0 {
            request.grace
        } else {
            super::later_round_wait(request.grace, table.slowest())
        };
        let mut next = request.first_ttl;
        loop {
            let last = table.last_ttl();
            if next > last {
                break;
            }
            let left = request.deadline.saturating_sub(start.elapsed());
            if left.is_zero() {
                break 'rounds;
            }
            let batch_end = usize::from(next)
                .saturating_add(MAX_PARALLEL - 1)
                .min(usize::from(last));
            let batch_end = u8::try_from(batch_end).unwrap_or(u8::MAX);
            let ttls: Vec<u8> = (next..=batch_end).collect();
            let timeout = probe_timeout(grace, left);
            for (ttl, reply) in fan_out(sender, request.target, &ttls, timeout)? {
                table.record(ttl, reply);
            }
            match batch_end.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
        }
    }
    if !table.any_reply
        && let Some(status) = table.first_failure
    {
        return Err(failed(format!(
            "Windows could not send or receive the ICMP echoes: {}",
            status_name(status)
        )));
    }
    let (hops, reached) = table.finish();
    Ok(TraceOutcome {
        engine: TraceEngine::WindowsIcmp,
        // ICMP echo is all this API sends; other protocols fall back to it.
        protocol: TraceProtocol::Icmp,
        hops,
        reached,
        duration: start.elapsed(),
        raw_text: None,
        raw_format: None,
    })
}

/// The calls into `iphlpapi.dll`. All of this module's `unsafe` is here.
#[cfg(windows)]
mod ffi {
    use std::marker::PhantomData;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::ptr;
    use std::time::Duration;

    use windows_sys::Win32::Foundation::{GetLastError, HANDLE, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::NetworkManagement::IpHelper::{
        ICMP_ECHO_REPLY, ICMPV6_ECHO_REPLY_LH, IP_OPTION_INFORMATION, Icmp6CreateFile,
        Icmp6ParseReplies, Icmp6SendEcho2, IcmpCloseHandle, IcmpCreateFile, IcmpSendEcho2,
    };
    use windows_sys::Win32::Networking::WinSock::{AF_INET6, IN6_ADDR, IN6_ADDR_0, SOCKADDR_IN6};
    use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

    use super::{EchoReply, EchoSender, PAYLOAD, status};

    // Our status constants must be Windows' own.
    const _: () = {
        use windows_sys::Win32::NetworkManagement::IpHelper as w;
        assert!(status::SUCCESS == w::IP_SUCCESS);
        assert!(status::BUF_TOO_SMALL == w::IP_BUF_TOO_SMALL);
        assert!(status::DEST_NET_UNREACHABLE == w::IP_DEST_NET_UNREACHABLE);
        assert!(status::DEST_NET_UNREACHABLE == w::IP_DEST_NO_ROUTE);
        assert!(status::DEST_HOST_UNREACHABLE == w::IP_DEST_HOST_UNREACHABLE);
        assert!(status::DEST_HOST_UNREACHABLE == w::IP_DEST_ADDR_UNREACHABLE);
        assert!(status::DEST_PROT_UNREACHABLE == w::IP_DEST_PROT_UNREACHABLE);
        assert!(status::DEST_PROT_UNREACHABLE == w::IP_DEST_PROHIBITED);
        assert!(status::DEST_PORT_UNREACHABLE == w::IP_DEST_PORT_UNREACHABLE);
        assert!(status::NO_RESOURCES == w::IP_NO_RESOURCES);
        assert!(status::BAD_OPTION == w::IP_BAD_OPTION);
        assert!(status::HW_ERROR == w::IP_HW_ERROR);
        assert!(status::PACKET_TOO_BIG == w::IP_PACKET_TOO_BIG);
        assert!(status::REQ_TIMED_OUT == w::IP_REQ_TIMED_OUT);
        assert!(status::BAD_REQ == w::IP_BAD_REQ);
        assert!(status::BAD_ROUTE == w::IP_BAD_ROUTE);
        assert!(status::TTL_EXPIRED_TRANSIT == w::IP_TTL_EXPIRED_TRANSIT);
        assert!(status::TTL_EXPIRED_REASSEM == w::IP_TTL_EXPIRED_REASSEM);
        assert!(status::PARAM_PROBLEM == w::IP_PARAM_PROBLEM);
        assert!(status::SOURCE_QUENCH == w::IP_SOURCE_QUENCH);
        assert!(status::BAD_DESTINATION == w::IP_BAD_DESTINATION);
        assert!(status::DEST_UNREACHABLE == w::IP_DEST_UNREACHABLE);
        assert!(status::TIME_EXCEEDED == w::IP_TIME_EXCEEDED);
        assert!(status::BAD_HEADER == w::IP_BAD_HEADER);
        assert!(status::UNRECOGNIZED_NEXT_HEADER == w::IP_UNRECOGNIZED_NEXT_HEADER);
        assert!(status::ICMP_ERROR == w::IP_ICMP_ERROR);
        assert!(status::DEST_SCOPE_MISMATCH == w::IP_DEST_SCOPE_MISMATCH);
        assert!(status::GENERAL_FAILURE == w::IP_GENERAL_FAILURE);
    };

    #[allow(clippy::cast_possible_truncation)] // 32 fits in u16.
    const PAYLOAD_LEN: u16 = PAYLOAD.len() as u16;

    /// The real sender.
    #[derive(Debug)]
    pub(super) struct IcmpApi;

    impl EchoSender for IcmpApi {
        fn send(&self, target: IpAddr, ttl: u8, timeout: Duration) -> Result<EchoReply, String> {
            let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
            match target {
                IpAddr::V4(addr) => send_v4(addr, ttl, timeout_ms),
                IpAddr::V6(addr) => send_v6(addr, ttl, timeout_ms),
            }
        }
    }

    pub(super) fn check_available() -> Result<(), String> {
        // Opening the handle is what fails when the ICMP service is missing
        // or blocked; a v4 handle stands for both families.
        IcmpHandle::open(false).map(drop)
    }

    /// An ICMP handle, closed on drop. One per probe: the handle is cheap and
    /// a thread of its own never shares it.
    struct IcmpHandle(HANDLE);

    impl IcmpHandle {
        fn open(v6: bool) -> Result<Self, String> {
            // SAFETY: both functions take no arguments and return a handle or
            // INVALID_HANDLE_VALUE; nothing is borrowed.
            let handle = unsafe {
                if v6 {
                    Icmp6CreateFile()
                } else {
                    IcmpCreateFile()
                }
            };
            if handle == INVALID_HANDLE_VALUE || handle.is_null() {
                let what = if v6 {
                    "Icmp6CreateFile"
                } else {
                    "IcmpCreateFile"
                };
                return Err(format!(
                    "{what} failed (Windows error {}): the IP Helper ICMP service is not usable",
                    last_error()
                ));
            }
            Ok(Self(handle))
        }
    }

    impl Drop for IcmpHandle {
        fn drop(&mut self) {
            // SAFETY: the handle came from Icmp(6)CreateFile, is valid and is
            // closed exactly once, here.
            unsafe {
                IcmpCloseHandle(self.0);
            }
        }
    }

    fn last_error() -> u32 {
        // SAFETY: reads the calling thread's last-error value; no arguments.
        unsafe { GetLastError() }
    }

    /// A reply buffer for reply structure `T`, aligned for it (the
    /// structures hold pointers) and sized as the `IcmpSendEcho2`
    /// documentation asks: one reply structure, the request data, 8 bytes
    /// for an ICMP error message and an `IO_STATUS_BLOCK`.
    struct ReplyBuffer<T> {
        words: Vec<u64>,
        reply: PhantomData<T>,
    }

    impl<T: Copy> ReplyBuffer<T> {
        fn new() -> Self {
            let bytes = size_of::<T>() + PAYLOAD.len() + 8 + size_of::<IO_STATUS_BLOCK>();
            Self {
                words: vec![0; bytes.div_ceil(size_of::<u64>())],
                reply: PhantomData,
            }
        }

        fn len_bytes(&self) -> u32 {
            u32::try_from(self.words.len() * size_of::<u64>()).unwrap_or(u32::MAX)
        }

        fn as_mut_ptr(&mut self) -> *mut core::ffi::c_void {
            self.words.as_mut_ptr().cast()
        }

        /// The reply structure at the start of the buffer.
        fn head(&self) -> T {
            // SAFETY: `new` made the buffer longer than size_of::<T>() and
            // zeroed it, so those bytes are initialised (then possibly
            // written by Windows); T is a plain C structure of integers and
            // raw pointers, for which any bit pattern is valid; and
            // read_unaligned needs no alignment.
            unsafe { self.words.as_ptr().cast::<T>().read_unaligned() }
        }
    }

    fn options(ttl: u8) -> IP_OPTION_INFORMATION {
        IP_OPTION_INFORMATION {
            Ttl: ttl,
            Tos: 0,
            Flags: 0,
            OptionsSize: 0,
            OptionsData: ptr::null_mut(),
        }
    }

    fn send_v4(target: Ipv4Addr, ttl: u8, timeout_ms: u32) -> Result<EchoReply, String> {
        let handle = IcmpHandle::open(false)?;
        let options = options(ttl);
        let mut buffer = ReplyBuffer::<ICMP_ECHO_REPLY>::new();
        let size = buffer.len_bytes();
        // SAFETY: synchronous call (no event, no APC): every pointer is only
        // used until it returns. The handle is open; the request data and
        // options outlive the call; the reply buffer is writable for `size`
        // bytes, which is at least what the documentation requires. The
        // destination is the address in network byte order.
        let count = unsafe {
            IcmpSendEcho2(
                handle.0,
                ptr::null_mut(),
                None,
                ptr::null(),
                u32::from_ne_bytes(target.octets()),
                PAYLOAD.as_ptr().cast(),
                PAYLOAD_LEN,
                &raw const options,
                buffer.as_mut_ptr(),
                size,
                timeout_ms,
            )
        };
        if count == 0 {
            return Ok(EchoReply::none(last_error()));
        }
        let reply = buffer.head();
        Ok(EchoReply {
            status: reply.Status,
            address: Some(IpAddr::V4(Ipv4Addr::from(reply.Address.to_ne_bytes()))),
            rtt_ms: reply.RoundTripTime,
        })
    }

    fn send_v6(target: Ipv6Addr, ttl: u8, timeout_ms: u32) -> Result<EchoReply, String> {
        let handle = IcmpHandle::open(true)?;
        let options = options(ttl);
        // The unspecified source lets Windows pick the outgoing address.
        let source = SOCKADDR_IN6 {
            sin6_family: AF_INET6,
            ..SOCKADDR_IN6::default()
        };
        let destination = SOCKADDR_IN6 {
            sin6_family: AF_INET6,
            sin6_addr: IN6_ADDR {
                u: IN6_ADDR_0 {
                    Byte: target.octets(),
                },
            },
            ..SOCKADDR_IN6::default()
        };
        let mut buffer = ReplyBuffer::<ICMPV6_ECHO_REPLY_LH>::new();
        let size = buffer.len_bytes();
        // SAFETY: as for IcmpSendEcho2: a synchronous call, so the handle,
        // both socket addresses, the request data, the options and the reply
        // buffer (writable for `size` bytes, at least the documented
        // minimum) are only used until it returns.
        let count = unsafe {
            Icmp6SendEcho2(
                handle.0,
                ptr::null_mut(),
                None,
                ptr::null(),
                &raw const source,
                &raw const destination,
                PAYLOAD.as_ptr().cast(),
                PAYLOAD_LEN,
                &raw const options,
                buffer.as_mut_ptr(),
                size,
                timeout_ms,
            )
        };
        if count == 0 {
            return Ok(EchoReply::none(last_error()));
        }
        // SAFETY: the buffer is the one Icmp6SendEcho2 just filled, `size`
        // bytes long; the function only reads it.
        let parsed = unsafe { Icmp6ParseReplies(buffer.as_mut_ptr(), size) };
        if parsed == 0 {
            return Ok(EchoReply::none(last_error()));
        }
        let reply = buffer.head();
        // A packed field: copy it out before use.
        let words = reply.Address.sin6_addr;
        let mut octets = [0u8; 16];
        for (pair, word) in octets.chunks_exact_mut(2).zip(words) {
            // The words are in network byte order as they lie in memory.
            pair.copy_from_slice(&word.to_ne_bytes());
        }
        Ok(EchoReply {
            status: reply.Status,
            address: Some(IpAddr::V6(Ipv6Addr::from(octets))),
            rtt_ms: reply.RoundTripTime,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn reply(status: u32, address: IpAddr, rtt_ms: u32) -> EchoReply {
        EchoReply {
            status,
            address: Some(address),
            rtt_ms,
        }
    }

    /// A pretend network: for each TTL what comes back, the same each time,
    /// plus a record of the probes sent.
    struct FakeNet {
        answers: HashMap<u8, EchoReply>,
        /// What TTLs beyond the table answer (the destination, usually).
        beyond: EchoReply,
        sent: Mutex<Vec<u8>>,
        /// The timeout each probe was given, in the order sent.
        timeouts: Mutex<Vec<Duration>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        /// How long each probe blocks, to observe parallelism.
        delay: Duration,
    }

    impl FakeNet {
        fn new(answers: &[(u8, EchoReply)], beyond: EchoReply) -> Self {
            Self {
                answers: answers.iter().copied().collect(),
                beyond,
                sent: Mutex::new(Vec::new()),
                timeouts: Mutex::new(Vec::new()),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
                delay: Duration::ZERO,
            }
        }

        fn sent(&self) -> Vec<u8> {
            let mut sent = self.sent.lock().map(|s| s.clone()).unwrap_or_default();
            sent.sort_unstable();
            sent
        }
    }

    impl EchoSender for FakeNet {
        fn send(&self, _target: IpAddr, ttl: u8, timeout: Duration) -> Result<EchoReply, String> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            if let Ok(mut sent) = self.sent.lock() {
                sent.push(ttl);
            }
            if let Ok(mut timeouts) = self.timeouts.lock() {
                timeouts.push(timeout);
            }
            std::thread::sleep(self.delay);
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(self.answers.get(&ttl).copied().unwrap_or(self.beyond))
        }
    }

    fn request(target: IpAddr) -> TraceRequest {
        let mut request = TraceRequest::new(target, target.to_string());
        request.max_ttl = 10;
        request.grace = Duration::from_millis(50);
        request
    }

    #[test]
    fn statuses_map_like_traceroute() {
        assert_eq!(classify(0, false), Verdict::Destination);
        assert_eq!(classify(11013, false), Verdict::Transit);
        assert_eq!(classify(11013, true), Verdict::Transit);
        assert_eq!(classify(11010, false), Verdict::Silent);
        assert_eq!(classify(11002, false), Verdict::Unreachable(Some("!N")));
        assert_eq!(classify(11003, true), Verdict::Unreachable(Some("!H")));
        assert_eq!(classify(11004, false), Verdict::Unreachable(Some("!P")));
        assert_eq!(classify(11004, true), Verdict::Unreachable(Some("!X")));
        assert_eq!(classify(11005, false), Verdict::Unreachable(None));
        assert_eq!(classify(11045, true), Verdict::Unreachable(Some("!S")));
        assert_eq!(classify(11009, true), Verdict::Unreachable(Some("!F")));
        assert_eq!(classify(11015, false), Verdict::OtherIcmp);
        assert_eq!(classify(11050, false), Verdict::LocalFailure);
        assert_eq!(classify(11018, false), Verdict::LocalFailure);
        // A Win32 error code from GetLastError is a local failure too.
        assert_eq!(classify(87, false), Verdict::LocalFailure);
    }

    #[test]
    fn status_names_carry_the_number() {
        assert_eq!(status_name(11050), "status 11050 (general failure)");
        assert_eq!(status_name(87), "status 87");
    }

    #[test]
    fn a_trace_stops_at_the_destination_with_silent_hops_kept() {
        let dest = v4(99);
        let net = FakeNet::new(
            &[
                (1, reply(11013, v4(1), 0)),
                (2, EchoReply::none(11010)),
                (3, reply(11013, v4(3), 7)),
            ],
            reply(0, dest, 12),
        );
        let out = run_trace(&net, &request(dest)).expect("trace");
        assert!(out.reached);
        assert_eq!(out.engine, TraceEngine::WindowsIcmp);
        assert_eq!(out.protocol, TraceProtocol::Icmp);
        let ttls: Vec<u8> = out.hops.iter().map(|h| h.ttl).collect();
        assert_eq!(ttls, [1, 2, 3, 4]);
        assert_eq!(out.hops[0].addrs, [v4(1)]);
        assert_eq!(out.hops[0].rtt_ms, [0.5]);
        assert!(out.hops[1].is_silent());
        assert_eq!((out.hops[1].sent, out.hops[1].received), (1, 0));
        assert_eq!(out.hops[2].rtt_ms, [7.0]);
        assert_eq!(out.hops[3].addrs, [dest]);
        assert_eq!(out.hops[3].rtt_ms, [12.0]);
        assert!(out.raw_text.is_none());
    }

    #[test]
    fn all_ttls_of_a_round_are_in_flight_together() {
        let dest = v4(99);
        let mut net = FakeNet::new(&[], EchoReply::none(11010));
        net.delay = Duration::from_millis(100);
        let out = run_trace(&net, &request(dest)).expect("trace");
        assert!(!out.reached);
        assert_eq!(out.hops.len(), 10);
        assert!(out.hops.iter().all(Hop::is_silent));
        assert_eq!(net.sent(), (1..=10).collect::<Vec<u8>>());
        assert_eq!(net.max_in_flight.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn big_ranges_go_in_batches() {
        let mut req = request(v4(99));
        req.max_ttl = 70;
        let mut net = FakeNet::new(&[], EchoReply::none(11010));
        net.delay = Duration::from_millis(20);
        let out = run_trace(&net, &req).expect("trace");
        assert_eq!(out.hops.len(), 70);
        assert_eq!(net.sent(), (1..=70).collect::<Vec<u8>>());
        assert!(net.max_in_flight.load(Ordering::SeqCst) <= MAX_PARALLEL);
    }

    #[test]
    fn later_rounds_probe_only_up_to_the_end_found() {
        let dest = v4(99);
        let net = FakeNet::new(&[(1, reply(11013, v4(1), 1))], reply(0, dest, 2));
        let mut req = request(dest);
        req.rounds = 3;
        let out = run_trace(&net, &req).expect("trace");
        // Round 1 probes 1..=10 and finds the destination at 2; rounds 2
        // and 3 probe only 1 and 2.
        assert_eq!(net.sent().len(), 10 + 2 + 2);
        assert_eq!(out.hops.len(), 2);
        assert_eq!((out.hops[1].sent, out.hops[1].received), (3, 3));
        assert_eq!(out.hops[1].rtt_ms, [2.0, 2.0, 2.0]);
        assert_eq!(out.hops[1].addrs, [dest]);
    }

    #[test]
    fn later_rounds_wait_for_the_routers_that_answered_not_the_grace() {
        // A silent destination behind two routers 3 and 40 ms away: the
        // first round waits the grace, the later ones 2 × 40 ms + 50 ms.
        let dest = v4(99);
        let net = FakeNet::new(
            &[(1, reply(11013, v4(1), 3)), (2, reply(11013, v4(2), 40))],
            EchoReply::none(11010),
        );
        let mut req = request(dest);
        req.grace = Duration::from_secs(1);
        req.rounds = 3;
        let out = run_trace(&net, &req).expect("trace");
        assert!(!out.reached);
        let timeouts = net.timeouts.lock().map(|t| t.clone()).unwrap_or_default();
        assert_eq!(timeouts.len(), 30);
        let first = Duration::from_secs(1);
        let later = Duration::from_millis(130);
        assert!(timeouts[..10].iter().all(|&t| t == first), "{timeouts:?}");
        assert!(timeouts[10..].iter().all(|&t| t == later), "{timeouts:?}");
        assert_eq!((out.hops[1].sent, out.hops[1].received), (3, 3));
    }

    #[test]
    fn unreachable_ends_the_trace_with_its_mark() {
        let dest = v4(99);
        let net = FakeNet::new(
            &[
                (1, reply(11013, v4(1), 1)),
                (2, reply(11003, v4(2), 3)),
                (3, reply(11013, v4(3), 1)),
            ],
            reply(0, dest, 2),
        );
        let mut req = request(dest);
        req.rounds = 2;
        let out = run_trace(&net, &req).expect("trace");
        assert!(
            !out.reached,
            "a router said unreachable, the target did not answer"
        );
        assert_eq!(out.hops.len(), 2);
        // The mark is listed once whatever the number of rounds.
        assert_eq!(out.hops[1].annotations, ["!H"]);
        assert_eq!(out.hops[1].addrs, [v4(2)]);
    }

    #[test]
    fn protocol_unreachable_from_the_target_counts_as_reached() {
        let dest = v4(99);
        let net = FakeNet::new(&[(1, reply(11013, v4(1), 1))], reply(11004, dest, 2));
        let out = run_trace(&net, &request(dest)).expect("trace");
        assert!(out.reached);
        assert_eq!(out.hops.len(), 2);
        assert_eq!(out.hops[1].annotations, ["!P"]);
    }

    #[test]
    fn ipv6_prohibited_is_x() {
        let dest = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99));
        let router = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let net = FakeNet::new(&[(1, reply(11004, router, 1))], reply(0, dest, 2));
        let out = run_trace(&net, &request(dest)).expect("trace");
        assert!(!out.reached);
        assert_eq!(out.hops.len(), 1);
        assert_eq!(out.hops[0].annotations, ["!X"]);
    }

    #[test]
    fn other_icmp_errors_are_noted_without_ending() {
        let dest = v4(99);
        let net = FakeNet::new(&[(1, reply(11015, v4(1), 1))], reply(0, dest, 2));
        let out = run_trace(&net, &request(dest)).expect("trace");
        assert!(out.reached);
        assert_eq!(
            out.hops[0].annotations,
            ["status 11015 (parameter problem)"]
        );
        assert_eq!(out.hops.len(), 2);
    }

    #[test]
    fn the_first_destination_ttl_wins_over_a_later_one() {
        // Replies come back in any order; TTL 5 answering last must not hide
        // that TTL 3 already reached the destination.
        let dest = v4(99);
        let net = FakeNet::new(
            &[(1, reply(11013, v4(1), 1)), (2, reply(11013, v4(2), 1))],
            reply(0, dest, 2),
        );
        let out = run_trace(&net, &request(dest)).expect("trace");
        assert_eq!(out.hops.len(), 3);
        assert_eq!(out.hops[2].addrs, [dest]);
    }

    #[test]
    fn nothing_but_local_failures_is_an_error() {
        let net = FakeNet::new(&[], EchoReply::none(11050));
        let err = run_trace(&net, &request(v4(99))).expect_err("fails");
        let text = err.to_string();
        assert!(text.contains("windows-icmp"), "{text}");
        assert!(text.contains("11050 (general failure)"), "{text}");
    }

    #[test]
    fn a_local_failure_among_answers_is_a_silent_hop() {
        let dest = v4(99);
        let net = FakeNet::new(&[(1, EchoReply::none(11006))], reply(0, dest, 2));
        let out = run_trace(&net, &request(dest)).expect("trace");
        assert!(out.reached);
        assert!(out.hops[0].is_silent());
        assert_eq!(out.hops[0].sent, 1);
    }

    #[test]
    fn a_sender_error_fails_the_trace() {
        struct NoHandle;
        impl EchoSender for NoHandle {
            fn send(&self, _: IpAddr, _: u8, _: Duration) -> Result<EchoReply, String> {
                Err("IcmpCreateFile failed".to_owned())
            }
        }
        let err = run_trace(&NoHandle, &request(v4(99))).expect_err("fails");
        assert!(err.to_string().contains("IcmpCreateFile failed"), "{err}");
    }

    #[test]
    fn an_unspecified_source_is_not_a_hop() {
        let dest = v4(99);
        let net = FakeNet::new(
            &[(1, reply(11013, IpAddr::V4(Ipv4Addr::UNSPECIFIED), 1))],
            reply(0, dest, 2),
        );
        let out = run_trace(&net, &request(dest)).expect("trace");
        assert!(out.hops[0].is_silent());
        assert_eq!(out.hops[0].received, 0);
    }

    #[test]
    fn first_ttl_above_one_starts_there() {
        let dest = v4(99);
        let net = FakeNet::new(&[], reply(0, dest, 2));
        let mut req = request(dest);
        req.first_ttl = 4;
        let out = run_trace(&net, &req).expect("trace");
        assert_eq!(out.hops.len(), 1);
        assert_eq!(out.hops[0].ttl, 4);
        assert!(net.sent().iter().all(|&t| t >= 4));
    }

    #[test]
    fn bad_requests_are_refused() {
        let net = FakeNet::new(&[], EchoReply::none(11010));
        for (first, max, rounds, key) in [
            (0, 10, 1, "first_ttl"),
            (5, 4, 1, "max_ttl"),
            (1, 10, 0, "rounds"),
        ] {
            let mut req = request(v4(99));
            req.first_ttl = first;
            req.max_ttl = max;
            req.rounds = rounds;
            match run_trace(&net, &req) {
                Err(Error::Config { key: k, .. }) => assert_eq!(k, key),
                other => panic!("expected a config error for {key}, got {other:?}"),
            }
        }
        assert!(net.sent().is_empty());
    }

    #[test]
    fn max_ttl_255_does_not_overflow() {
        let dest = v4(99);
        let net = FakeNet::new(&[], EchoReply::none(11010));
        let mut req = request(dest);
        req.first_ttl = 250;
        req.max_ttl = 255;
        let out = run_trace(&net, &req).expect("trace");
        assert_eq!(out.hops.len(), 6);
        assert_eq!(net.sent(), (250..=255).collect::<Vec<u8>>());
    }

    #[test]
    fn the_deadline_stops_further_batches() {
        let mut req = request(v4(99));
        req.max_ttl = 100;
        req.rounds = 5;
        req.deadline = Duration::from_millis(60);
        let mut net = FakeNet::new(&[], EchoReply::none(11010));
        net.delay = Duration::from_millis(40);
        let started = Instant::now();
        let out = run_trace(&net, &req).expect("trace");
        // Two batches of 32 fit in 60 ms of 40 ms probes at most; not all
        // five rounds of four batches.
        assert!(net.sent().len() <= 2 * MAX_PARALLEL, "{}", net.sent().len());
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(out.hops.len(), 100);
    }

    #[test]
    fn the_timeout_is_the_grace_cut_to_the_deadline() {
        let grace = Duration::from_secs(1);
        assert_eq!(probe_timeout(grace, Duration::from_secs(5)), grace);
        assert_eq!(
            probe_timeout(grace, Duration::from_millis(200)),
            Duration::from_millis(200)
        );
        assert_eq!(
            probe_timeout(grace, Duration::from_nanos(1)),
            Duration::from_millis(1)
        );
    }

    #[cfg(not(windows))]
    #[test]
    fn elsewhere_it_says_only_on_windows() {
        let engine = WindowsIcmpEngine::new();
        assert_eq!(engine.kind(), TraceEngine::WindowsIcmp);
        let reason = engine.check_available().expect_err("not on Windows");
        assert!(reason.starts_with("only on Windows"), "{reason}");
        let err = engine.trace(&request(v4(99))).expect_err("not on Windows");
        assert!(matches!(err, Error::EngineUnavailable { .. }), "{err:?}");
    }
}
