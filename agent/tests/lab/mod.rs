//! A network lab for real traceroutes: Linux network namespaces wired as a
//! subscriber's line to a receiver on the internet.
//!
//! ```text
//! sub ── home (NAT) ── cgn (CGNAT) ── r1 ── r2 (silent) ── r3 ── recv
//!   192.168.7.0/24  100.64.7.0/30  198.51.100.0/30 .4/30   .8/30  203.0.113.0/24
//! ```
//!
//! IPv4 goes through two NATs (the home router masquerades the LAN into the
//! carrier's shared space, the CGN masquerades that to its public address
//! 198.51.100.1). IPv6 is routed without NAT from `2001:db8:0::/48` (the
//! subscriber's side) to `2001:db8:1::/48` (the carrier's "public" side). `r2`
//! never sends time-exceeded (v4 and v6), so hop 4 is silent. `recv` drops
//! UDP, TCP and echo requests, except TCP to [`Lab::RECV_TCP_PORT`], so a
//! trace to it never reaches it.
//!
//! [`Lab::add_ecmp`] adds two routers, `r2a` and `r2b`, as two more paths
//! from `r1` to `r3` (198.51.100.16/28, `2001:db8:1:10::/62`), over which `r1`
//! balances per flow.
//!
//! Every namespace is named uniquely per run (`lp<pid>x<n>-<node>`), every
//! command is bounded in time, and [`Lab`]'s `Drop` removes everything it
//! made, also when a test panics. Namespaces left by a killed test run (whose
//! process is gone) are removed by the next [`Lab::start`].
//!
//! Needs root and iproute2, iptables/ip6tables, sysctl and setpriv. Without
//! them [`Lab::start_or_skip`] prints why and the test skips — unless
//! `LINEPROBE_REQUIRE_LAB=1` (set by `.ci/run`), when it fails.

#![allow(
    dead_code,
    unreachable_pub,
    reason = "a harness shared by several test crates, each using part of it"
)]
#![allow(
    clippy::unused_self,
    reason = "addresses are asked of a lab so that they may differ per lab later"
)]

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ipnet::IpNet;

/// The lab's nodes, from the subscriber to the receiver.
pub const NODES: [&str; 7] = ["sub", "home", "cgn", "r1", "r2", "r3", "recv"];

/// The routers [`Lab::add_ecmp`] adds between `r1` and `r3`.
pub const ECMP_NODES: [&str; 2] = ["r2a", "r2b"];

/// How long any one setup or tear-down command may take.
const COMMAND_LIMIT: Duration = Duration::from_secs(10);

/// The unprivileged user commands run as (`nobody`).
pub const NOBODY: u32 = 65534;

/// Why the lab cannot run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkipReason(pub String);

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One end of a link: node, interface, IPv4/prefix, IPv6/prefix.
struct End {
    node: &'static str,
    ifname: &'static str,
    v4: &'static str,
    v6: &'static str,
}

const fn end(node: &'static str, ifname: &'static str, v4: &'static str, v6: &'static str) -> End {
    End {
        node,
        ifname,
        v4,
        v6,
    }
}

/// The links, subscriber side first.
const LINKS: [(End, End); 6] = [
    (
        end("sub", "lan0", "192.168.7.2/24", "2001:db8:0:1::2/64"),
        end("home", "lan0", "192.168.7.1/24", "2001:db8:0:1::1/64"),
    ),
    (
        end("home", "wan0", "100.64.7.2/30", "2001:db8:0:2::2/64"),
        end("cgn", "in0", "100.64.7.1/30", "2001:db8:0:2::1/64"),
    ),
    (
        end("cgn", "out0", "198.51.100.1/30", "2001:db8:1:3::1/64"),
        end("r1", "down0", "198.51.100.2/30", "2001:db8:1:3::2/64"),
    ),
    (
        end("r1", "up0", "198.51.100.5/30", "2001:db8:1:4::1/64"),
        end("r2", "down0", "198.51.100.6/30", "2001:db8:1:4::2/64"),
    ),
    (
        end("r2", "up0", "198.51.100.9/30", "2001:db8:1:5::1/64"),
        end("r3", "down0", "198.51.100.10/30", "2001:db8:1:5::2/64"),
    ),
    (
        end("r3", "up0", "203.0.113.1/24", "2001:db8:1:6::1/64"),
        end("recv", "eth0", "203.0.113.10/24", "2001:db8:1:6::2/64"),
    ),
];

/// The links [`Lab::add_ecmp`] adds: two more paths from `r1` to `r3`.
const ECMP_LINKS: [(End, End); 4] = [
    (
        end("r1", "ea0", "198.51.100.17/30", "2001:db8:1:10::1/64"),
        end("r2a", "down0", "198.51.100.18/30", "2001:db8:1:10::2/64"),
    ),
    (
        end("r2a", "up0", "198.51.100.21/30", "2001:db8:1:11::1/64"),
        end("r3", "ea0", "198.51.100.22/30", "2001:db8:1:11::2/64"),
    ),
    (
        end("r1", "eb0", "198.51.100.25/30", "2001:db8:1:12::1/64"),
        end("r2b", "down0", "198.51.100.26/30", "2001:db8:1:12::2/64"),
    ),
    (
        end("r2b", "up0", "198.51.100.29/30", "2001:db8:1:13::1/64"),
        end("r3", "eb0", "198.51.100.30/30", "2001:db8:1:13::2/64"),
    ),
];

/// The routes of [`ECMP_NODES`]: on to `r3`, back to the subscriber's side
/// through `r1`.
const ECMP_ROUTES: &[(&str, &str, &str)] = &[
    ("r2a", "default", "198.51.100.22"),
    ("r2a", "198.51.100.0/30", "198.51.100.17"),
    ("r2a", "default", "2001:db8:1:11::2"),
    ("r2a", "2001:db8::/48", "2001:db8:1:10::1"),
    ("r2a", "2001:db8:1:3::/64", "2001:db8:1:10::1"),
    ("r2b", "default", "198.51.100.30"),
    ("r2b", "198.51.100.0/30", "198.51.100.25"),
    ("r2b", "default", "2001:db8:1:13::2"),
    ("r2b", "2001:db8::/48", "2001:db8:1:12::1"),
    ("r2b", "2001:db8:1:3::/64", "2001:db8:1:12::1"),
];

/// Routes per node: (node, destination, gateway).
const ROUTES: &[(&str, &str, &str)] = &[
    ("sub", "default", "192.168.7.1"),
    ("sub", "default", "2001:db8:0:1::1"),
    ("home", "default", "100.64.7.1"),
    ("home", "default", "2001:db8:0:2::1"),
    ("cgn", "default", "198.51.100.2"),
    ("cgn", "default", "2001:db8:1:3::2"),
    ("cgn", "2001:db8:0:1::/64", "2001:db8:0:2::2"),
    ("r1", "default", "198.51.100.6"),
    ("r1", "default", "2001:db8:1:4::2"),
    ("r1", "2001:db8::/48", "2001:db8:1:3::1"),
    ("r2", "default", "198.51.100.10"),
    ("r2", "198.51.100.0/30", "198.51.100.5"),
    ("r2", "default", "2001:db8:1:5::2"),
    ("r2", "2001:db8::/48", "2001:db8:1:4::1"),
    ("r2", "2001:db8:1:3::/64", "2001:db8:1:4::1"),
    ("r3", "default", "198.51.100.9"),
    ("r3", "default", "2001:db8:1:5::1"),
    ("recv", "default", "203.0.113.1"),
    ("recv", "default", "2001:db8:1:6::1"),
];

/// The address each node answers a trace from `sub` with (the interface
/// facing the subscriber), IPv4 then IPv6.
const FACING: [(&str, Ipv4Addr, Ipv6Addr); 7] = [
    (
        "sub",
        Ipv4Addr::new(192, 168, 7, 2),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 2),
    ),
    (
        "home",
        Ipv4Addr::new(192, 168, 7, 1),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1),
    ),
    (
        "cgn",
        Ipv4Addr::new(100, 64, 7, 1),
        Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, 1),
    ),
    (
        "r1",
        Ipv4Addr::new(198, 51, 100, 2),
        Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 2),
    ),
    (
        "r2",
        Ipv4Addr::new(198, 51, 100, 6),
        Ipv6Addr::new(0x2001, 0xdb8, 1, 4, 0, 0, 0, 2),
    ),
    (
        "r3",
        Ipv4Addr::new(198, 51, 100, 10),
        Ipv6Addr::new(0x2001, 0xdb8, 1, 5, 0, 0, 0, 2),
    ),
    (
        "recv",
        Ipv4Addr::new(203, 0, 113, 10),
        Ipv6Addr::new(0x2001, 0xdb8, 1, 6, 0, 0, 0, 2),
    ),
];

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// A running lab. Dropping it removes every namespace it made.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    /// Namespaces made so far, in order of creation.
    made: Vec<String>,
}

impl Lab {
    /// The TCP port `recv` accepts (for a collector); everything else sent to
    /// `recv` is dropped.
    pub const RECV_TCP_PORT: u16 = 8443;

    /// Builds the lab, or says why it cannot run here.
    pub fn start() -> Result<Self, SkipReason> {
        check_prerequisites()?;
        remove_stale();
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let mut lab = Lab {
            prefix: format!("lp{}x{n}", std::process::id()),
            made: Vec::new(),
        };
        // On failure `lab` is dropped here, removing what was made.
        lab.build()
            .map_err(|e| SkipReason(format!("building the network lab failed: {e}")))?;
        Ok(lab)
    }

    /// Builds the lab, or prints why not and returns `None` so the test can
    /// return early. With `LINEPROBE_REQUIRE_LAB=1` a missing prerequisite
    /// panics instead: in CI the lab tests must run.
    pub fn start_or_skip(test: &str) -> Option<Self> {
        match Self::start() {
            Ok(lab) => Some(lab),
            Err(reason) if lab_required() => {
                panic!("{test}: LINEPROBE_REQUIRE_LAB=1 but the network lab cannot run: {reason}")
            }
            Err(reason) => {
                eprintln!("SKIPPED {test}: {reason} (set LINEPROBE_REQUIRE_LAB=1 to fail instead)");
                None
            }
        }
    }

    /// The namespace name of a node (`lp<pid>x<n>-r1`).
    pub fn ns(&self, node: &str) -> String {
        assert!(is_node(node), "no lab node `{node}`");
        format!("{}-{node}", self.prefix)
    }

    /// A command run inside a node's namespace, as root.
    pub fn exec(&self, node: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(node)]).args(args);
        cmd
    }

    /// A command run inside a node's namespace as `nobody` with no
    /// capabilities at all (none permitted, inheritable or in the bounding
    /// set): what an app on a phone can do.
    pub fn exec_unprivileged(&self, node: &str, args: &[&str]) -> Command {
        let uid = format!("--reuid={NOBODY}");
        let gid = format!("--regid={NOBODY}");
        self.exec(
            node,
            &[
                &["setpriv", &uid, &gid, "--clear-groups", "--inh-caps=-all"][..],
                &["--bounding-set=-all", "--"],
                args,
            ]
            .concat(),
        )
    }

    /// Runs `f` on a thread whose network namespace is the node's and
    /// returns its result. Sockets made in `f` stay in that namespace
    /// whichever thread uses them later: a listener on `recv`, say.
    pub fn in_netns<T, F>(&self, node: &str, f: F) -> T
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let path = format!("/run/netns/{}", self.ns(node));
        thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {path}: {e}"));
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// The address a node answers a trace from `sub` with: its interface
    /// facing the subscriber (for `sub`, its own address).
    pub fn addr(&self, node: &str) -> IpAddr {
        IpAddr::V4(facing(node).1)
    }

    /// [`Lab::addr`] for IPv6.
    pub fn addr6(&self, node: &str) -> IpAddr {
        IpAddr::V6(facing(node).2)
    }

    /// The node's address in the given family.
    pub fn addr_of(&self, node: &str, v6: bool) -> IpAddr {
        if v6 {
            self.addr6(node)
        } else {
            self.addr(node)
        }
    }

    /// The receiver: it answers nothing, so traces to it never reach it.
    pub fn silent_target(&self, v6: bool) -> IpAddr {
        self.addr_of("recv", v6)
    }

    /// A target that does answer (r3 sends port-unreachable and echo
    /// replies): traces to it reach it at TTL 5.
    pub fn answering_target(&self, v6: bool) -> IpAddr {
        self.addr_of("r3", v6)
    }

    /// The hops a trace from `sub` to `recv` must show, by TTL from 1: the
    /// home router, the CGN, r1, nothing (r2 is silent), r3. `recv` (TTL 6)
    /// never answers.
    pub fn expected_hops(&self, v6: bool) -> Vec<Option<IpAddr>> {
        ["home", "cgn", "r1", "r2", "r3"]
            .into_iter()
            .map(|node| (node != "r2").then(|| self.addr_of(node, v6)))
            .collect()
    }

    /// The CGN's public address: the IPv4 source the receiver sees for
    /// anything `sub` sends.
    pub fn cgn_public_addr(&self) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))
    }

    /// The source address the receiver sees for traffic from `sub`: the
    /// CGN's public address over IPv4, `sub`'s own over IPv6 (no NAT).
    pub fn egress_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.addr6("sub")
        } else {
            self.cgn_public_addr()
        }
    }

    /// The lab's "public" (carrier and internet) ranges, for
    /// `ClassifierConfig::extra_public`. The home LAN, the CGN's shared
    /// space and the subscriber's IPv6 side (`2001:db8:0::/48`) are not public.
    pub fn public_cidrs(&self) -> Vec<IpNet> {
        ["198.51.100.0/24", "203.0.113.0/24", "2001:db8:1::/48"]
            .into_iter()
            .map(|s| s.parse().expect("a valid CIDR"))
            .collect()
    }

    /// Opens (`true`, all groups) or closes (`false`, the kernel default)
    /// unprivileged ICMP echo sockets in `sub` (`net.ipv4.ping_group_range`,
    /// which governs IPv6 too). The lab starts with them open.
    pub fn set_ping_allowed(&self, allowed: bool) {
        let range = if allowed { "0 2147483647" } else { "1 0" };
        self.sysctl("sub", &[&format!("net.ipv4.ping_group_range={range}")])
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Lets `recv` talk to itself over loopback (IPv4 and IPv6), which its
    /// firewall otherwise drops like everything but [`Lab::RECV_TCP_PORT`]:
    /// for a service there that only listens on loopback (a collector's
    /// export API) and a client run inside `recv` too.
    pub fn open_recv_loopback(&self) {
        for tool in ["iptables", "ip6tables"] {
            run_ok(self.exec(
                "recv",
                &[tool, "-I", "INPUT", "1", "-i", "lo", "-j", "ACCEPT"],
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    fn sysctl(&self, node: &str, settings: &[&str]) -> Result<(), String> {
        run_ok(self.exec(node, &[&["sysctl", "-q", "-w"][..], settings].concat()))
    }

    fn ip(&self, node: &str, args: &[&str]) -> Result<(), String> {
        let ns = self.ns(node);
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &ns]).args(args);
        run_ok(cmd)
    }

    fn build(&mut self) -> Result<(), String> {
        self.build_nodes()?;
        self.build_links()?;
        self.build_firewalls()?;
        self.set_ping_allowed(true);
        Ok(())
    }

    fn build_nodes(&mut self) -> Result<(), String> {
        for node in NODES {
            self.add_node(node)?;
        }
        Ok(())
    }

    fn add_node(&mut self, node: &str) -> Result<(), String> {
        let ns = self.ns(node);
        run_ok(command("ip", &["netns", "add", &ns]))?;
        self.made.push(ns);
        // Before any interface exists so that every one inherits it:
        // no duplicate address detection (addresses usable at once), no
        // ICMP rate limits (several traces run back to back).
        self.sysctl(
            node,
            &[
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.icmp.ratelimit=0",
            ],
        )?;
        if node != "sub" && node != "recv" {
            self.sysctl(
                node,
                &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
            )?;
        }
        self.ip(node, &["link", "set", "lo", "up"])
    }

    fn build_links(&self) -> Result<(), String> {
        self.add_links(&LINKS, ROUTES)
    }

    fn add_links(&self, links: &[(End, End)], routes: &[(&str, &str, &str)]) -> Result<(), String> {
        for (a, b) in links {
            let peer_ns = self.ns(b.node);
            self.ip(
                a.node,
                &[
                    "link", "add", a.ifname, "type", "veth", "peer", "name", b.ifname, "netns",
                    &peer_ns,
                ],
            )?;
            for e in [a, b] {
                self.ip(e.node, &["addr", "add", e.v4, "dev", e.ifname])?;
                self.ip(e.node, &["addr", "add", e.v6, "dev", e.ifname, "nodad"])?;
                self.ip(e.node, &["link", "set", e.ifname, "up"])?;
            }
        }
        for (node, dst, via) in routes {
            let family = if via.contains(':') { "-6" } else { "-4" };
            self.ip(node, &[family, "route", "add", dst, "via", via])?;
        }
        Ok(())
    }

    /// Adds two routers, `r2a` and `r2b`, as two more paths from `r1` to
    /// `r3`, and makes `r1` balance per flow over them (a multipath default
    /// route hashed on addresses and ports, IPv4 and IPv6): a probe to `r3`
    /// passes `r2a` or `r2b` at TTL 4 by its ports, and always the same one
    /// for the same ports. Both answer time-exceeded.
    pub fn add_ecmp(&mut self) {
        self.build_ecmp()
            .unwrap_or_else(|e| panic!("adding the ECMP paths to the lab failed: {e}"));
    }

    fn build_ecmp(&mut self) -> Result<(), String> {
        for node in ECMP_NODES {
            self.add_node(node)?;
        }
        self.add_links(&ECMP_LINKS, ECMP_ROUTES)?;
        self.sysctl(
            "r1",
            &[
                "net.ipv4.fib_multipath_hash_policy=1",
                "net.ipv6.fib_multipath_hash_policy=1",
            ],
        )?;
        for (family, a, b) in [
            ("-4", "198.51.100.18", "198.51.100.26"),
            ("-6", "2001:db8:1:10::2", "2001:db8:1:12::2"),
        ] {
            self.ip(
                "r1",
                &[
                    family, "route", "replace", "default", "nexthop", "via", a, "nexthop", "via", b,
                ],
            )?;
        }
        Ok(())
    }

    /// The addresses `r2a` and `r2b` answer a trace from `sub` with.
    pub fn ecmp_addrs(&self, v6: bool) -> [IpAddr; 2] {
        [&ECMP_LINKS[0].1, &ECMP_LINKS[2].1].map(|e| {
            let cidr = if v6 { e.v6 } else { e.v4 };
            cidr.split('/')
                .next()
                .and_then(|a| a.parse().ok())
                .expect("a valid address")
        })
    }

    fn build_firewalls(&self) -> Result<(), String> {
        let rules: &[(&str, &[&str])] = &[
            (
                "home",
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "wan0",
                    "-j",
                    "MASQUERADE",
                ],
            ),
            (
                "cgn",
                &[
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-o",
                    "out0",
                    "-j",
                    "MASQUERADE",
                ],
            ),
            (
                "r2",
                &[
                    "iptables",
                    "-A",
                    "OUTPUT",
                    "-p",
                    "icmp",
                    "--icmp-type",
                    "time-exceeded",
                    "-j",
                    "DROP",
                ],
            ),
            (
                "r2",
                &[
                    "ip6tables",
                    "-A",
                    "OUTPUT",
                    "-p",
                    "icmpv6",
                    "--icmpv6-type",
                    "time-exceeded",
                    "-j",
                    "DROP",
                ],
            ),
            (
                "recv",
                &[
                    "iptables",
                    "-A",
                    "INPUT",
                    "-p",
                    "icmp",
                    "--icmp-type",
                    "echo-request",
                    "-j",
                    "DROP",
                ],
            ),
            (
                "recv",
                &[
                    "ip6tables",
                    "-A",
                    "INPUT",
                    "-p",
                    "icmpv6",
                    "--icmpv6-type",
                    "echo-request",
                    "-j",
                    "DROP",
                ],
            ),
        ];
        for (node, rule) in rules {
            run_ok(self.exec(node, rule))?;
        }
        let port = Self::RECV_TCP_PORT.to_string();
        for tool in ["iptables", "ip6tables"] {
            for rule in [
                &["-A", "INPUT", "-p", "tcp", "--dport", &port, "-j", "ACCEPT"][..],
                &["-A", "INPUT", "-p", "tcp", "-j", "DROP"],
                &["-A", "INPUT", "-p", "udp", "-j", "DROP"],
            ] {
                run_ok(self.exec("recv", &[&[tool][..], rule].concat()))?;
            }
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            // Processes a test started in the lab and left behind: ours.
            if let Ok(out) = run_bounded(command("ip", &["netns", "pids", ns]), COMMAND_LIMIT) {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = run_bounded(command("kill", &["-KILL", pid]), COMMAND_LIMIT);
                }
            }
            if let Err(e) = run_ok(command("ip", &["netns", "del", ns])) {
                eprintln!("network lab: could not remove namespace {ns}: {e}");
            }
        }
    }
}

fn facing(node: &str) -> (&'static str, Ipv4Addr, Ipv6Addr) {
    *FACING
        .iter()
        .find(|(n, _, _)| *n == node)
        .unwrap_or_else(|| panic!("no lab node `{node}`"))
}

fn is_node(node: &str) -> bool {
    NODES.contains(&node) || ECMP_NODES.contains(&node)
}

/// True when `LINEPROBE_REQUIRE_LAB=1`: a lab that cannot run is a failure.
pub fn lab_required() -> bool {
    std::env::var("LINEPROBE_REQUIRE_LAB").is_ok_and(|v| v == "1")
}

fn check_prerequisites() -> Result<(), SkipReason> {
    if !cfg!(target_os = "linux") {
        return Err(SkipReason("the network lab needs Linux".into()));
    }
    if !nix::unistd::Uid::effective().is_root() {
        return Err(SkipReason(
            "the network lab needs root (network namespaces, iptables)".into(),
        ));
    }
    for (tool, package) in [
        ("ip", "iproute2"),
        ("iptables", "iptables"),
        ("ip6tables", "iptables"),
        ("sysctl", "procps"),
        ("setpriv", "util-linux"),
        ("kill", "procps"),
    ] {
        if which(tool).is_none() {
            return Err(SkipReason(format!(
                "the network lab needs `{tool}` (Debian package {package})"
            )));
        }
    }
    Ok(())
}

/// Whether `tool` is installed; when it is not, prints why `test` skips and
/// says `false`, or panics with `LINEPROBE_REQUIRE_LAB=1`.
pub fn tool_or_skip(test: &str, tool: &str, package: &str) -> bool {
    if which(tool).is_some() {
        return true;
    }
    let reason = format!("`{tool}` is not installed (Debian package {package})");
    assert!(!lab_required(), "LINEPROBE_REQUIRE_LAB=1 but {reason}");
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// The environment variable naming the agent built for
/// `x86_64-pc-windows-gnu`, for the tests that run it under Wine in the lab.
pub const WINDOWS_AGENT_ENV: &str = "LINEPROBE_WINDOWS_AGENT";

/// The agent built for Windows, or `None` after printing why `test` skips:
/// `.ci/run` builds it and runs the Windows lab tests with it; the README's
/// test command builds nothing for Windows.
pub fn windows_agent_or_skip(test: &str) -> Option<PathBuf> {
    let Some(agent) = std::env::var_os(WINDOWS_AGENT_ENV).map(PathBuf::from) else {
        eprintln!(
            "SKIPPED {test}: {WINDOWS_AGENT_ENV} does not name the agent built for \
             x86_64-pc-windows-gnu (.ci/run builds it and runs this test with it)"
        );
        return None;
    };
    assert!(
        agent.is_file(),
        "{WINDOWS_AGENT_ENV}={}: no such file",
        agent.display()
    );
    Some(agent)
}

/// `.ci/wine-run`, which runs a Windows program under Wine in the prefix
/// `WINEPREFIX` names (made on first use: 10-20 s).
pub fn wine_runner() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/wine-run")
}

/// A Linux path as a Windows program under Wine reads it (Wine maps the
/// root to drive Z:).
pub fn wine_path(path: &Path) -> String {
    format!("Z:{}", path.display())
}

/// Where a program is on `PATH`, if it is.
pub fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// Removes namespaces left by lab runs whose process is gone (a test killed
/// before its `Drop` ran).
fn remove_stale() {
    let Ok(out) = run_bounded(command("ip", &["netns", "list"]), COMMAND_LIMIT) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = stale_lab_pid(name) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run_ok(command("ip", &["netns", "del", name]));
        }
    }
}

/// The pid in a lab namespace name `lp<pid>x<n>-<node>`.
pub fn stale_lab_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("lp")?;
    let (pid, rest) = rest.split_once('x')?;
    let (n, node) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    is_node(node).then_some(())?;
    pid.parse().ok()
}

/// A command with arguments.
pub fn command(program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// Runs a command to completion within [`COMMAND_LIMIT`]; `Err` unless it
/// exits 0.
fn run_ok(cmd: Command) -> Result<(), String> {
    let what = format!("{cmd:?}");
    let out = run_bounded(cmd, COMMAND_LIMIT)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a command, killing it after `limit`. Standard input is closed;
/// standard output and error are captured.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < limit => thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not finish within {limit:?}; killed it"));
            }
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// A binary (`kind` = `--bin`) or example (`--example`) of this workspace,
/// built — or found up to date — in the running test's target folder and
/// profile, so that it can be run inside a namespace.
pub fn workspace_binary(package: &str, kind: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // <target>/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the profile directory")
        .to_path_buf();
    let binary = if kind == "--example" {
        profile_dir.join("examples").join(name)
    } else {
        profile_dir.join(name)
    };
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "-p", package, kind, name])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if let Some(target_dir) = profile_dir.parent() {
        cargo.env("CARGO_TARGET_DIR", target_dir);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    match run_bounded(cargo, Duration::from_mins(10)) {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "building {name} failed, using {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => eprintln!("building {name} failed, using {}: {e}", binary.display()),
    }
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build -p {package} {kind} {name}`",
        binary.display()
    );
    binary
}
