//! The sockets: one datagram socket per TTL and round, its ICMP errors read
//! from the kernel's error queue.

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use lineprobe_shared::{TraceEngine, TraceProtocol};
use nix::errno::Errno;
use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockProtocol, SockType,
    SockaddrStorage, connect, recvfrom, recvmsg, send, setsockopt, socket, sockopt,
};

use super::{Reply, ReplyKind, assemble, end_ttl, icmp_reply_kind, round_complete};
use crate::Error;
use crate::engine::{TraceOutcome, TraceRequest};

/// Bytes after the probe's header: enough to look like a traceroute probe,
/// small enough never to need fragmenting.
const PAYLOAD: &[u8] = b"lineprobe unprivileged!!";

/// A socket that keeps reporting readiness without yielding anything is
/// given up after this many empty reads, so that polling never spins.
const MAX_EMPTY_READS: u8 = 8;

/// The kind of probe socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// `SOCK_DGRAM` + `IPPROTO_ICMP`/`IPPROTO_ICMPV6`: echo requests.
    Echo,
    /// Plain UDP.
    Udp,
}

impl Probe {
    fn protocol(self) -> TraceProtocol {
        match self {
            Self::Echo => TraceProtocol::Icmp,
            Self::Udp => TraceProtocol::Udp,
        }
    }
}

fn failed(reason: String) -> Error {
    Error::TraceFailed {
        engine: TraceEngine::Unprivileged.to_string(),
        reason,
    }
}

fn family(target: IpAddr) -> AddressFamily {
    if target.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

fn open(probe: Probe, target: IpAddr) -> nix::Result<OwnedFd> {
    let protocol = match (probe, target) {
        (Probe::Udp, _) => SockProtocol::Udp,
        (Probe::Echo, IpAddr::V4(_)) => SockProtocol::Icmp,
        (Probe::Echo, IpAddr::V6(_)) => SockProtocol::IcmpV6,
    };
    let fd = socket(
        family(target),
        SockType::Datagram,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        protocol,
    )?;
    if target.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6RecvErr, &true)?;
    } else {
        setsockopt(&fd, sockopt::Ipv4RecvErr, &true)?;
    }
    Ok(fd)
}

/// `Ok` when an unprivileged UDP socket with an error queue can be opened.
pub(super) fn check_available() -> Result<(), String> {
    let target = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    open(Probe::Udp, target)
        .map(drop)
        .map_err(|e| format!("cannot open a UDP socket with IP_RECVERR: {e}"))
}

/// Echo requests when the user may open ICMP datagram sockets
/// (`net.ipv4.ping_group_range`) and ICMP was asked for, else UDP.
fn choose(request: &TraceRequest, target: IpAddr) -> Probe {
    if request.protocol == TraceProtocol::Icmp && open(Probe::Echo, target).is_ok() {
        Probe::Echo
    } else {
        Probe::Udp
    }
}

pub(super) fn trace(request: &TraceRequest) -> Result<TraceOutcome, Error> {
    let started = Instant::now();
    let deadline = crate::engine::deadline_after(started, request.deadline);
    let target = request.target.to_canonical();
    let probe = choose(request, target);
    let mut sent: BTreeMap<u8, u16> = BTreeMap::new();
    let mut replies: Vec<Reply> = Vec::new();
    for round in 0..request.rounds {
        if Instant::now() >= deadline {
            break;
        }
        // Past the TTL where probes ended nothing more can be learnt.
        let last = end_ttl(&replies).map_or(request.max_ttl, |end| end.min(request.max_ttl));
        let grace = if round == 0 {
            request.grace
        } else {
            crate::engine::later_round_wait(request.grace, replies.iter().map(|r| r.rtt).max())
        };
        let mut new = Round {
            probe,
            target,
            port: request.port,
            index: round,
            grace,
            deadline,
        }
        .run(request.first_ttl, last)?;
        for ttl in new.sent {
            let count = sent.entry(ttl).or_insert(0);
            *count = count.saturating_add(1);
        }
        replies.append(&mut new.replies);
    }
    let (hops, reached) = assemble(target, request.first_ttl, request.max_ttl, &sent, &replies);
    Ok(TraceOutcome {
        engine: TraceEngine::Unprivileged,
        protocol: probe.protocol(),
        hops,
        reached,
        duration: started.elapsed(),
        raw_text: None,
        raw_format: None,
    })
}

/// One round: a probe to every TTL at once, then the answers.
struct Round {
    probe: Probe,
    target: IpAddr,
    port: u16,
    /// Which round, from 0: in the echo sequence number.
    index: u8,
    grace: Duration,
    deadline: Instant,
}

/// A probe in flight.
struct InFlight {
    ttl: u8,
    fd: OwnedFd,
    sent_at: Instant,
    empty_reads: u8,
}

/// What a round found.
struct RoundResult {
    /// The TTLs a probe was sent at.
    sent: Vec<u8>,
    /// The first answer to each probe, in the order read.
    replies: Vec<Reply>,
}

impl Round {
    fn run(&self, first_ttl: u8, last_ttl: u8) -> Result<RoundResult, Error> {
        let mut pending: Vec<InFlight> = Vec::new();
        let mut last_error = None;
        for ttl in first_ttl..=last_ttl {
            match self.send(ttl) {
                Ok(flight) => pending.push(flight),
                Err(e) => last_error = Some((ttl, e)),
            }
        }
        if pending.is_empty() {
            let why = last_error.map_or_else(String::new, |(ttl, e)| format!(" (TTL {ttl}: {e})"));
            return Err(failed(format!(
                "could not send any probe to {}{why}",
                self.target
            )));
        }
        let sent: Vec<u8> = pending.iter().map(|f| f.ttl).collect();
        let until = crate::engine::deadline_after(Instant::now(), self.grace).min(self.deadline);
        let mut replies: Vec<Reply> = Vec::new();
        while !pending.is_empty() && !round_complete(&sent, &replies) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let wait = PollTimeout::try_from(until - now).unwrap_or(PollTimeout::MAX);
            let ready: Vec<bool> = {
                let mut fds: Vec<PollFd<'_>> = pending
                    .iter()
                    .map(|f| PollFd::new(f.fd.as_fd(), PollFlags::POLLIN))
                    .collect();
                match poll(&mut fds, wait) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(failed(format!("poll: {e}"))),
                }
                fds.iter()
                    .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                    .collect()
            };
            let mut still = Vec::with_capacity(pending.len());
            for (mut flight, ready) in pending.into_iter().zip(ready) {
                if !ready {
                    still.push(flight);
                    continue;
                }
                if let Some(reply) = self.read(&flight) {
                    // The socket's probe is answered: later answers to it
                    // add nothing, so it is closed.
                    replies.push(reply);
                } else {
                    flight.empty_reads += 1;
                    if flight.empty_reads < MAX_EMPTY_READS {
                        still.push(flight);
                    }
                }
            }
            pending = still;
        }
        Ok(RoundResult { sent, replies })
    }

    fn send(&self, ttl: u8) -> nix::Result<InFlight> {
        let fd = open(self.probe, self.target)?;
        let hops = i32::from(ttl);
        if self.target.is_ipv6() {
            setsockopt(&fd, sockopt::Ipv6Ttl, &hops)?;
        } else {
            setsockopt(&fd, sockopt::Ipv4Ttl, &hops)?;
        }
        // The classic traceroute ports, one per TTL, for UDP; ICMP has no
        // ports (the kernel picks the echo identifier per socket).
        let port = match self.probe {
            Probe::Udp => self.port.saturating_add(u16::from(ttl.saturating_sub(1))),
            Probe::Echo => 0,
        };
        let to = SockaddrStorage::from(SocketAddr::new(self.target, port));
        connect(fd.as_raw_fd(), &to)?;
        let packet = self.packet(ttl);
        let sent_at = Instant::now();
        send(fd.as_raw_fd(), &packet, MsgFlags::empty())?;
        Ok(InFlight {
            ttl,
            fd,
            sent_at,
            empty_reads: 0,
        })
    }

    fn packet(&self, ttl: u8) -> Vec<u8> {
        match self.probe {
            Probe::Udp => PAYLOAD.to_vec(),
            Probe::Echo => {
                let kind = if self.target.is_ipv6() { 128 } else { 8 };
                // Type, code, checksum and identifier are the kernel's to
                // fill in; the sequence number says which round and TTL.
                let mut packet = vec![kind, 0, 0, 0, 0, 0, self.index, ttl];
                packet.extend_from_slice(PAYLOAD);
                packet
            }
        }
    }

    /// The socket's answer, if one is waiting: an ICMP error from the error
    /// queue, else a datagram (an echo reply, or UDP data from the target).
    fn read(&self, flight: &InFlight) -> Option<Reply> {
        loop {
            match read_error(flight) {
                Ok(Some(reply)) => return Some(reply),
                // An error that says nothing about the path: read on.
                Ok(None) => {}
                Err(_) => break,
            }
        }
        let mut buf = [0u8; 512];
        loop {
            match recvfrom::<SockaddrStorage>(flight.fd.as_raw_fd(), &mut buf) {
                Ok((len, from)) => {
                    let from = from.and_then(|a| socket_ip(&a));
                    if let Some(from) = from {
                        let echo_reply = if self.target.is_ipv6() { 129 } else { 0 };
                        if self.probe == Probe::Udp || (len > 0 && buf.first() == Some(&echo_reply))
                        {
                            return Some(Reply {
                                ttl: flight.ttl,
                                from,
                                rtt: flight.sent_at.elapsed(),
                                kind: ReplyKind::Arrived,
                            });
                        }
                    }
                }
                // A pending socket error (a connected UDP socket's
                // ECONNREFUSED…) is reported by the read that clears it;
                // the details came from the error queue.
                Err(Errno::EAGAIN) => return None,
                Err(_) => {
                    let _ = nix::sys::socket::getsockopt(&flight.fd, sockopt::SocketError);
                    return None;
                }
            }
        }
    }
}

/// One message from the error queue: `Ok(Some)` a reply, `Ok(None)` a
/// message to skip, `Err` when the queue is empty.
fn read_error(flight: &InFlight) -> nix::Result<Option<Reply>> {
    let mut data = [0u8; 512];
    let mut iov = [IoSliceMut::new(&mut data)];
    let mut cmsg = nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6);
    let msg = recvmsg::<SockaddrStorage>(
        flight.fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
    )?;
    let rtt = flight.sent_at.elapsed();
    let Ok(cmsgs) = msg.cmsgs() else {
        return Ok(None);
    };
    for c in cmsgs {
        let (v6, err, from) = match c {
            ControlMessageOwned::Ipv4RecvErr(err, from) => (
                false,
                err,
                from.map(|a| IpAddr::V4(nix::sys::socket::SockaddrIn::from(a).ip())),
            ),
            ControlMessageOwned::Ipv6RecvErr(err, from) => (
                true,
                err,
                from.map(|a| IpAddr::V6(nix::sys::socket::SockaddrIn6::from(a).ip())),
            ),
            _ => continue,
        };
        // Only errors an ICMP message brought; local ones (EMSGSIZE…)
        // are not hops.
        if err.ee_origin != libc::SO_EE_ORIGIN_ICMP && err.ee_origin != libc::SO_EE_ORIGIN_ICMP6 {
            continue;
        }
        let Some(from) = from else { continue };
        if let Some(kind) = icmp_reply_kind(v6, err.ee_type, err.ee_code, err.ee_info) {
            return Ok(Some(Reply {
                ttl: flight.ttl,
                from: from.to_canonical(),
                rtt,
                kind,
            }));
        }
    }
    Ok(None)
}

fn socket_ip(addr: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| IpAddr::V6(v6.ip()).to_canonical())
}
