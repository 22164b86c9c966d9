//! The network lab itself, then the `unprivileged` engine run in it as a
//! user with no capabilities.
#![cfg(target_os = "linux")]

mod lab;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lab::{Lab, run_bounded};
use lineprobe_shared::{Classifier, ClassifierConfig, Hop};

/// Parses `traceroute -n -q 1` output: one entry per TTL, `None` for `*`.
fn parse_traceroute(text: &str) -> Vec<Option<IpAddr>> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.next()?.parse::<u8>().ok()?;
            Some(words.next().and_then(|w| w.parse().ok()))
        })
        .collect()
}

#[test]
fn lab_namespace_names_parse_back_to_their_pid() {
    assert_eq!(lab::stale_lab_pid("lp1234x0-sub"), Some(1234));
    assert_eq!(lab::stale_lab_pid("lp77x12-recv"), Some(77));
    assert_eq!(lab::stale_lab_pid("lp77x12-other"), None);
    assert_eq!(lab::stale_lab_pid("lpx1-sub"), None);
    assert_eq!(lab::stale_lab_pid("docker0"), None);
}

#[test]
fn lab_traceroute_shows_every_hop_but_the_silent_one() {
    let Some(lab) = Lab::start_or_skip("lab_traceroute_shows_every_hop_but_the_silent_one") else {
        return;
    };
    if lab::which("traceroute").is_none() {
        let reason = "`traceroute` is not installed (Debian package traceroute)";
        assert!(!lab::lab_required(), "LINEPROBE_REQUIRE_LAB=1 but {reason}");
        eprintln!("SKIPPED lab_traceroute_shows_every_hop_but_the_silent_one: {reason}");
        return;
    }
    for v6 in [false, true] {
        let target = lab.silent_target(v6).to_string();
        let family = if v6 { "-6" } else { "-4" };
        let cmd = lab.exec(
            "sub",
            &[
                "traceroute",
                family,
                "-n",
                "-q",
                "1",
                "-w",
                "1",
                "-m",
                "7",
                &target,
            ],
        );
        let out = run_bounded(cmd, Duration::from_secs(20)).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "traceroute failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hops = parse_traceroute(&text);
        let mut expected = lab.expected_hops(v6);
        // recv (TTL 6) and beyond never answer.
        expected.extend([None, None]);
        assert_eq!(hops, expected, "traceroute {family} to {target}:\n{text}");
        assert_eq!(hops[3], None, "r2 must be silent:\n{text}");
    }
}

#[test]
fn lab_receiver_sees_the_cgn_public_address() {
    let Some(lab) = Lab::start_or_skip("lab_receiver_sees_the_cgn_public_address") else {
        return;
    };
    for v6 in [false, true] {
        let at = SocketAddr::new(lab.silent_target(v6), Lab::RECV_TCP_PORT);
        let listener = lab.in_netns("recv", || TcpListener::bind(at).unwrap());
        listener.set_nonblocking(true).unwrap();
        let mut client = lab.in_netns("sub", || {
            TcpStream::connect_timeout(&at, Duration::from_secs(5)).unwrap()
        });
        client.write_all(b"hi").unwrap();
        let started = Instant::now();
        let (mut conn, peer) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(started.elapsed() < Duration::from_secs(5), "no connection");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert_eq!(peer.ip(), lab.egress_addr(v6));
        conn.set_nonblocking(false).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0; 2];
        conn.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }
    assert_eq!(lab.egress_addr(false), lab.cgn_public_addr());
}

#[test]
fn lab_runs_commands_without_any_capability() {
    let Some(lab) = Lab::start_or_skip("lab_runs_commands_without_any_capability") else {
        return;
    };
    let cmd = lab.exec_unprivileged("sub", &["cat", "/proc/self/status"]);
    let out = run_bounded(cmd, Duration::from_secs(10)).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in:\n{status}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert!(field("Uid:").iter().all(|u| *u == "65534"), "{status}");
    assert!(field("Gid:").iter().all(|g| *g == "65534"), "{status}");
    for caps in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(caps), ["0000000000000000"], "{caps} in:\n{status}");
    }
    // And it really runs in the namespace: sub's own address is there.
    let cmd = lab.exec_unprivileged("sub", &["ip", "-o", "addr", "show", "dev", "lan0"]);
    let out = run_bounded(cmd, Duration::from_secs(10)).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&lab.addr("sub").to_string()), "{text}");
}

#[test]
fn lab_removes_its_namespaces_when_dropped() {
    let Some(lab) = Lab::start_or_skip("lab_removes_its_namespaces_when_dropped") else {
        return;
    };
    let names: Vec<String> = lab::NODES.iter().map(|n| lab.ns(n)).collect();
    let list = || {
        let out = run_bounded(
            lab::command("ip", &["netns", "list"]),
            Duration::from_secs(10),
        );
        String::from_utf8_lossy(&out.unwrap().stdout).into_owned()
    };
    let before = list();
    for name in &names {
        assert!(before.contains(name.as_str()), "{name} missing:\n{before}");
    }
    drop(lab);
    let after = list();
    for name in &names {
        assert!(
            !after.contains(name.as_str()),
            "{name} left behind:\n{after}"
        );
    }
}

// ---- the `unprivileged` engine in the lab ----

/// What `lab_trace` printed.
#[derive(Debug)]
struct Traced {
    protocol: String,
    reached: bool,
    duration_ms: u64,
    hops: Vec<Hop>,
    /// The whole run as the test saw it: process start to exit.
    wall: Duration,
}

/// The `lab_trace` example, built (or found up to date) next to this test.
fn lab_trace_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| lab::workspace_binary("lineprobe-agent", "--example", "lab_trace"))
        .clone()
}

/// Runs `lab_trace unprivileged <target> <extra…>` in `sub` as `nobody`
/// with no capabilities.
fn trace_unprivileged(lab: &Lab, target: IpAddr, extra: &[&str]) -> Traced {
    let binary = lab_trace_binary();
    let binary = binary.to_str().expect("a UTF-8 path");
    let target = target.to_string();
    let args = [&[binary, "unprivileged", &target][..], extra].concat();
    let cmd = lab.exec_unprivileged("sub", &args);
    let started = Instant::now();
    let out = run_bounded(cmd, Duration::from_secs(30)).expect("lab_trace runs");
    let wall = started.elapsed();
    assert!(
        out.status.success(),
        "lab_trace {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("lab_trace prints JSON");
    assert_eq!(json["engine"], "unprivileged", "{json}");
    Traced {
        protocol: json["protocol"].as_str().expect("a protocol").to_owned(),
        reached: json["reached"].as_bool().expect("reached"),
        duration_ms: json["duration_ms"].as_u64().expect("duration_ms"),
        hops: serde_json::from_value(json["hops"].clone()).expect("hops"),
        wall,
    }
}

/// The first address of each hop, `None` for silent ones.
fn first_addrs(hops: &[Hop]) -> Vec<Option<IpAddr>> {
    hops.iter().map(|h| h.addrs.first().copied()).collect()
}

fn lab_classifier(lab: &Lab) -> Classifier {
    Classifier::new(&ClassifierConfig {
        extra_public: lab.public_cidrs(),
    })
    .expect("the lab's public CIDRs are valid")
}

#[test]
fn unprivileged_engine_lists_every_answering_hop_within_the_time_bound() {
    let test = "unprivileged_engine_lists_every_answering_hop_within_the_time_bound";
    let Some(lab) = Lab::start_or_skip(test) else {
        return;
    };
    let classifier = lab_classifier(&lab);
    for ping_allowed in [true, false] {
        lab.set_ping_allowed(ping_allowed);
        for v6 in [false, true] {
            let target = lab.silent_target(v6);
            let traced = trace_unprivileged(&lab, target, &[]);
            let label = format!(
                "to {target} with ping sockets {}",
                if ping_allowed { "allowed" } else { "closed" }
            );
            println!(
                "unprivileged {label}: {} protocol, {} ms in the engine, {:?} wall time",
                traced.protocol, traced.duration_ms, traced.wall
            );
            let expected_protocol = if ping_allowed { "icmp" } else { "udp" };
            assert_eq!(traced.protocol, expected_protocol, "{label}");
            assert!(!traced.reached, "{label}: the receiver answers nothing");
            // Defaults: TTL 1 to 30, every TTL listed.
            assert_eq!(traced.hops.len(), 30, "{label}: {:?}", traced.hops);
            let expected = lab.expected_hops(v6);
            let addrs = first_addrs(&traced.hops);
            assert_eq!(
                addrs[..expected.len()],
                expected[..],
                "{label}: {:?}",
                traced.hops
            );
            assert!(
                addrs[expected.len()..].iter().all(Option::is_none),
                "{label}: nothing answers beyond r3: {:?}",
                traced.hops
            );
            for hop in &traced.hops {
                assert_eq!(hop.sent, 1, "{label}: one round: {hop:?}");
                assert_eq!(usize::from(hop.received), hop.rtt_ms.len());
                assert!(
                    hop.rtt_ms.iter().all(|&ms| ms > 0.0 && ms < 1000.0),
                    "{hop:?}"
                );
            }
            assert!(
                traced.wall <= Duration::from_millis(1500),
                "{label}: a trace to a silent receiver took {:?}; the bound is 1.5 s \
                 with the defaults",
                traced.wall
            );
            let analysis = classifier.first_public_hop(&traced.hops, Some(target));
            assert_eq!(
                analysis.first_public_addr(),
                Some((3, lab.addr_of("r1", v6))),
                "{label}: the first public hop is r1"
            );
            if !v6 {
                assert!(analysis.cgnat_seen, "{label}: the CGN's shared address");
            }
        }
    }
    // The agent's default rounds: the later ones wait for the routers that
    // answered, not a grace period each.
    let rounds = lineprobe_agent::AgentConfig::default().trace.rounds;
    assert!(rounds > 1, "the default sends several rounds: {rounds}");
    for v6 in [false, true] {
        let target = lab.silent_target(v6);
        let traced = trace_unprivileged(&lab, target, &["--rounds", &rounds.to_string()]);
        let expected = lab.expected_hops(v6);
        assert_eq!(first_addrs(&traced.hops)[..expected.len()], expected[..]);
        for hop in traced.hops.iter().filter(|h| !h.is_silent()) {
            assert_eq!(
                (hop.sent, hop.received),
                (rounds.into(), rounds.into()),
                "{hop:?}"
            );
        }
        println!(
            "unprivileged, {rounds} rounds, to {target}: {:?} wall time",
            traced.wall
        );
        assert!(
            traced.wall <= Duration::from_millis(1500),
            "{rounds} rounds to a silent receiver took {:?}; the bound is 1.5 s with the \
             agent's defaults",
            traced.wall
        );
    }
    // A deadline shorter than the grace period cuts the wait, not the hops
    // that already answered.
    let traced = trace_unprivileged(&lab, lab.silent_target(false), &["--deadline-ms", "300"]);
    println!(
        "unprivileged with a 300 ms deadline: {:?} wall time",
        traced.wall
    );
    assert!(
        traced.wall < Duration::from_millis(700),
        "{:?}",
        traced.wall
    );
    assert!(traced.duration_ms < 400, "{}", traced.duration_ms);
    let expected = lab.expected_hops(false);
    assert_eq!(first_addrs(&traced.hops)[..expected.len()], expected[..]);
}

#[test]
fn unprivileged_engine_stops_at_an_answering_target() {
    let Some(lab) = Lab::start_or_skip("unprivileged_engine_stops_at_an_answering_target") else {
        return;
    };
    for (ping_allowed, protocol, expected) in [
        (true, "icmp", "icmp"),
        (true, "udp", "udp"),
        (true, "tcp", "udp"),
        (false, "icmp", "udp"),
    ] {
        lab.set_ping_allowed(ping_allowed);
        for v6 in [false, true] {
            let target = lab.answering_target(v6);
            let traced = trace_unprivileged(
                &lab,
                target,
                &["--protocol", protocol, "--rounds", "2", "--grace-ms", "400"],
            );
            let label = format!("{protocol} to {target}, ping sockets allowed: {ping_allowed}");
            assert_eq!(traced.protocol, expected, "{label}");
            assert!(traced.reached, "{label}: {:?}", traced.hops);
            let mut hops = lab.expected_hops(v6);
            // r3 answers as the destination at TTL 5.
            *hops.last_mut().unwrap() = Some(target);
            assert_eq!(
                first_addrs(&traced.hops),
                hops,
                "{label}: {:?}",
                traced.hops
            );
            for hop in &traced.hops {
                assert_eq!(hop.sent, 2, "{label}: two rounds: {hop:?}");
                let answered = if hop.is_silent() { 0 } else { 2 };
                assert_eq!(hop.received, answered, "{label}: {hop:?}");
            }
            // Two rounds with r2 silent: two grace periods, no more.
            assert!(
                traced.wall < Duration::from_millis(1300),
                "{label}: {:?}",
                traced.wall
            );
        }
    }
}
