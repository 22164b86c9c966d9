//! The network lab itself, then the `unprivileged` engine run in it as a
//! user with no capabilities.
#![cfg(target_os = "linux")]

mod lab;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use lab::{Lab, run_bounded};

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
