//! Loopback ports for tests that need an address before anything listens
//! on it, or after it stopped. Shared by the test suites of several crates
//! (`#[path = "../../testsupport/ports.rs"] mod ports;`); plain `std`, so
//! it needs no dependency of its own.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};

/// A loopback address nothing listens on, with a port below the kernel's
/// range of ephemeral ports. A port bound to 0 and released comes from that
/// range, so an outgoing connection of a test running in parallel may take
/// it as its source port: a collector restarted there then fails with
/// "address in use", and a "down" endpoint may answer. Ports below the range
/// are only ever taken by an explicit bind.
pub(crate) fn unused_loopback_addr() -> SocketAddr {
    // Each call of this process starts its own sequence, so two tests asking
    // at the same moment are not handed the same port.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let (from, to) = (10_000_u16, ephemeral_low.max(10_100));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let mut state =
        ((u64::from(std::process::id()) << 32) ^ u64::from(nanos)).wrapping_add(call << 48);
    for _ in 0..1_000 {
        // splitmix64: parallel tests and processes spread over the range.
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let port = from + u16::try_from(z % u64::from(to - from)).unwrap_or(0);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no unused loopback port between {from} and {to}")
}
