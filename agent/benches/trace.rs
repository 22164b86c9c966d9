//! The agent against `traceroute -n` and `mtr -r -c1 -n`, tracing from the
//! lab's subscriber to its receiver, which never answers.
//!
//! `cargo bench -p lineprobe-agent --bench trace` (as root, on Linux; set
//! `LINEPROBE_BENCH_V6=1` to also run over IPv6). Prints each tool's wall
//! time and responding hops, and the ratios to the agent's engines against
//! the goal (at least 15× faster than `traceroute`, at most 1.5 s). A slow
//! machine only prints MISS; different responding hops fail the run.

#[cfg(target_os = "linux")]
#[path = "../tests/lab/mod.rs"]
mod lab;

#[cfg(not(target_os = "linux"))]
fn main() {
    println!("SKIPPED trace benchmark: the network lab needs Linux network namespaces");
}

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    bench::main()
}

#[cfg(target_os = "linux")]
mod bench {
    use std::net::IpAddr;
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    use lineprobe_agent::{TraceRequest, engines_for_platform};
    use lineprobe_shared::{Hop, parse_trace_bytes};

    use super::lab::{self, Lab};

    /// How much faster than `traceroute` the agent should be.
    const GOAL_RATIO: f64 = 15.0;
    /// The bound on a trace to a silent destination with the defaults.
    const GOAL_SECONDS: f64 = 1.5;

    /// One tool's run.
    struct Run {
        name: String,
        seconds: f64,
        hops: Vec<(u8, IpAddr)>,
        agent: bool,
    }

    fn responding(hops: &[Hop]) -> Vec<(u8, IpAddr)> {
        hops.iter()
            .flat_map(|h| h.addrs.iter().map(move |a| (h.ttl, *a)))
            .collect()
    }

    fn show(hops: &[(u8, IpAddr)]) -> String {
        hops.iter()
            .map(|(ttl, addr)| format!("{ttl}:{addr}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The agent's engines other than `system` (that one runs the tools
    /// measured here), each run with the default request.
    fn agent_runs(lab: &Lab, target: IpAddr) -> Vec<Run> {
        let mut runs = Vec::new();
        for engine in engines_for_platform() {
            let kind = engine.kind();
            if kind.is_system() {
                continue;
            }
            let request = TraceRequest::new(target, target.to_string());
            let result = lab.in_netns("sub", || {
                engine.check_available().map_err(|reason| reason.clone())?;
                let started = Instant::now();
                let outcome = engine.trace(&request).map_err(|e| e.to_string())?;
                Ok::<_, String>((outcome, started.elapsed()))
            });
            match result {
                Ok((outcome, took)) => runs.push(Run {
                    name: format!("agent {kind}"),
                    seconds: took.as_secs_f64(),
                    hops: responding(&outcome.hops),
                    agent: true,
                }),
                Err(reason) => println!("  (agent {kind} not measured: {reason})"),
            }
        }
        runs
    }

    fn tool_run(lab: &Lab, name: &str, args: &[&str]) -> Option<Run> {
        let program = args.first()?;
        if lab::which(program).is_none() {
            println!("  ({name} not measured: `{program}` is not installed)");
            return None;
        }
        let started = Instant::now();
        let out = match lab::run_bounded(lab.exec("sub", args), Duration::from_mins(3)) {
            Ok(out) => out,
            Err(e) => {
                println!("  ({name} not measured: {e})");
                return None;
            }
        };
        let seconds = started.elapsed().as_secs_f64();
        match parse_trace_bytes(&out.stdout) {
            Ok(parsed) => Some(Run {
                name: name.to_owned(),
                seconds,
                hops: responding(&parsed.hops),
                agent: false,
            }),
            Err(e) => {
                println!(
                    "  ({name} not measured: its output did not parse: {e}\n{})",
                    String::from_utf8_lossy(&out.stdout)
                );
                None
            }
        }
    }

    /// Runs every tool to the silent receiver in one family; false when a
    /// tool's responding hops differ from the lab's.
    fn family(lab: &Lab, v6: bool) -> bool {
        let target = lab.silent_target(v6);
        let text = target.to_string();
        let expected: Vec<(u8, IpAddr)> = lab
            .expected_hops(v6)
            .into_iter()
            .zip(1_u8..)
            .filter_map(|(addr, ttl)| addr.map(|a| (ttl, a)))
            .collect();
        let label = if v6 { "IPv6" } else { "IPv4" };
        println!(
            "\n{label}: sub -> {target} (never answers); responding hops expected: {}",
            show(&expected)
        );

        let mut runs = agent_runs(lab, target);
        let family_flag = if v6 { "-6" } else { "-4" };
        runs.extend(tool_run(
            lab,
            "traceroute -n",
            &["traceroute", family_flag, "-n", &text],
        ));
        runs.extend(tool_run(
            lab,
            "mtr -r -c1 -n",
            &["mtr", family_flag, "-r", "-c1", "-n", &text],
        ));

        println!("  {:<24} {:>8}  responding hops", "tool", "seconds");
        let mut same = true;
        for run in &runs {
            let verdict = if run.hops == expected {
                "same"
            } else {
                same = false;
                "DIFFERENT"
            };
            println!(
                "  {:<24} {:>8.2}  {} ({verdict})",
                run.name,
                run.seconds,
                show(&run.hops)
            );
        }
        for agent in runs.iter().filter(|r| r.agent) {
            let bound = if agent.seconds <= GOAL_SECONDS {
                "PASS"
            } else {
                "MISS"
            };
            println!(
                "  {}: {:.2} s, goal <= {GOAL_SECONDS} s: {bound}",
                agent.name, agent.seconds
            );
            for tool in runs.iter().filter(|r| !r.agent) {
                let ratio = tool.seconds / agent.seconds.max(f64::EPSILON);
                let goal = if tool.name.starts_with("traceroute") {
                    let verdict = if ratio >= GOAL_RATIO { "PASS" } else { "MISS" };
                    format!(" (goal >= {GOAL_RATIO}x: {verdict})")
                } else {
                    String::new()
                };
                println!("  {} / {}: {ratio:.1}x faster{goal}", tool.name, agent.name);
            }
        }
        same
    }

    pub(super) fn main() -> ExitCode {
        let lab = match Lab::start() {
            Ok(lab) => lab,
            Err(reason) => {
                println!("SKIPPED trace benchmark: {reason}");
                return ExitCode::SUCCESS;
            }
        };
        let mut families = vec![false];
        if std::env::var("LINEPROBE_BENCH_V6").is_ok_and(|v| v == "1") {
            families.push(true);
        }
        let mut same = true;
        for v6 in families {
            same &= family(&lab, v6);
        }
        if same {
            println!("\nall tools found the same responding hops");
            ExitCode::SUCCESS
        } else {
            println!("\nFAIL: the tools' responding hops differ");
            ExitCode::FAILURE
        }
    }
}
