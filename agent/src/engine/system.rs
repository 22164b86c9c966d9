//! The `system` engine: the platform's own traceroute tool.
//!
//! The most portable engine and the last resort: it runs `tracert -d` on
//! Windows, else `traceroute -n`, `tracepath -n` or BusyBox `traceroute -n`
//! (the first one installed), bounded by the request's deadline, and reads
//! the text with the shared parsers. The text itself goes into the report,
//! so the collector can re-read it if a parser improves. At the deadline the
//! tool is killed and what it printed so far is still parsed: a slow
//! `tracepath` through a silent stretch still yields the hops before it.
//!
//! The tools are run with their default probe protocol (UDP for the Unix
//! tools, ICMP for `tracert`), which needs no privilege; the outcome's
//! `protocol` says which one was used.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use lineprobe_shared::{
    TraceEngine, TraceFormat, TraceProtocol, decode_console_bytes, parse_trace_text_as,
};

use super::{Engine, TraceOutcome, TraceRequest};
use crate::Error;

/// The most output kept from a tool; a trace is a few kilobytes.
const MAX_OUTPUT: usize = 1 << 20;

/// The most probes per hop Linux `traceroute -q` accepts.
const LINUX_TRACEROUTE_MAX_QUERIES: u8 = 10;

/// How often the child is polled while it runs.
const POLL: Duration = Duration::from_millis(10);

/// A traceroute tool the `system` engine can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SystemTool {
    /// Windows `tracert -d`.
    Tracert,
    /// `traceroute -n` (Linux, BSD, macOS).
    Traceroute,
    /// iputils `tracepath -n`.
    Tracepath,
    /// `busybox traceroute -n`.
    BusyboxTraceroute,
}

impl SystemTool {
    /// The tools worth trying on this platform, best first.
    pub fn for_platform() -> &'static [SystemTool] {
        if cfg!(windows) {
            &[Self::Tracert]
        } else {
            &[Self::Traceroute, Self::Tracepath, Self::BusyboxTraceroute]
        }
    }

    /// The program run (also the name in `system:<command>`).
    pub fn program(self) -> &'static str {
        match self {
            Self::Tracert => "tracert",
            Self::Traceroute => "traceroute",
            Self::Tracepath => "tracepath",
            Self::BusyboxTraceroute => "busybox",
        }
    }

    /// The engine name recorded in reports.
    pub fn engine(self) -> TraceEngine {
        TraceEngine::System(self.program().to_owned())
    }

    /// The format of the tool's output. The text is read as that format,
    /// not detected: BSD and macOS traceroute print their header to
    /// standard error, and the headerless rest can be ambiguous.
    pub fn format(self) -> TraceFormat {
        match self {
            Self::Tracert => TraceFormat::WindowsTracert,
            Self::Traceroute => TraceFormat::Traceroute,
            Self::Tracepath => TraceFormat::Tracepath,
            Self::BusyboxTraceroute => TraceFormat::BusyboxTraceroute,
        }
    }

    /// The probe protocol the tool sends with the arguments we give it.
    pub fn protocol(self) -> TraceProtocol {
        match self {
            Self::Tracert => TraceProtocol::Icmp,
            Self::Traceroute | Self::Tracepath | Self::BusyboxTraceroute => TraceProtocol::Udp,
        }
    }

    /// The arguments for `request`: numeric output, one probe per round,
    /// the grace period as the per-probe wait, the TTL range.
    pub fn args(self, request: &TraceRequest) -> Vec<String> {
        let first = request.first_ttl.max(1);
        let max = request.max_ttl.max(first);
        let queries = request.rounds.max(1);
        let target = request.target.to_string();
        let family = if request.target.is_ipv6() { "-6" } else { "-4" };
        let mut args: Vec<String> = Vec::new();
        match self {
            Self::Tracert => {
                // tracert always sends three probes per TTL and cannot
                // start above TTL 1.
                let wait_ms = request.grace.as_millis().clamp(1, u128::from(u32::MAX));
                args.extend([
                    "-d".to_owned(),
                    "-w".to_owned(),
                    wait_ms.to_string(),
                    "-h".to_owned(),
                    max.to_string(),
                ]);
                if request.target.is_ipv6() {
                    args.push("-6".to_owned());
                }
            }
            Self::Traceroute | Self::BusyboxTraceroute => {
                if self == Self::BusyboxTraceroute {
                    args.push("traceroute".to_owned());
                }
                // Linux traceroute takes fractional seconds; BusyBox and the
                // BSDs want whole ones.
                let wait = if self == Self::Traceroute && cfg!(target_os = "linux") {
                    format!("{:.1}", request.grace.as_secs_f64().max(0.1))
                } else {
                    request.grace.as_secs_f64().ceil().max(1.0).to_string()
                };
                if cfg!(target_os = "linux") || self == Self::BusyboxTraceroute {
                    args.push(family.to_owned());
                }
                // Linux traceroute (and inetutils') refuses more than 10
                // probes per hop and traces nothing; the BSDs and BusyBox
                // take any number.
                let queries = if self == Self::Traceroute && cfg!(target_os = "linux") {
                    queries.min(LINUX_TRACEROUTE_MAX_QUERIES)
                } else {
                    queries
                };
                args.extend([
                    "-n".to_owned(),
                    "-q".to_owned(),
                    queries.to_string(),
                    "-w".to_owned(),
                    wait,
                    "-f".to_owned(),
                    first.to_string(),
                    "-m".to_owned(),
                    max.to_string(),
                    "-p".to_owned(),
                    request.port.to_string(),
                ]);
            }
            Self::Tracepath => {
                // tracepath has no first TTL or wait option.
                args.extend([
                    family.to_owned(),
                    "-n".to_owned(),
                    "-m".to_owned(),
                    max.to_string(),
                    "-p".to_owned(),
                    request.port.to_string(),
                ]);
            }
        }
        args.push(target);
        args
    }
}

/// The `system` engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemEngine {
    /// The tools to look for, best first.
    tools: Vec<SystemTool>,
    /// Extra folders searched after `PATH`.
    extra_dirs: Vec<PathBuf>,
}

impl Default for SystemEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl SystemEngine {
    /// The first installed tool of [`SystemTool::for_platform`].
    pub fn new() -> Self {
        Self::with_tools(SystemTool::for_platform())
    }

    /// Only `tool`.
    pub fn with_tool(tool: SystemTool) -> Self {
        Self::with_tools(&[tool])
    }

    /// The first installed of `tools`.
    pub fn with_tools(tools: &[SystemTool]) -> Self {
        // traceroute lives in /usr/sbin on Debian, which is not on an
        // ordinary user's PATH.
        let extra_dirs = if cfg!(unix) {
            [
                "/usr/sbin",
                "/sbin",
                "/usr/bin",
                "/bin",
                "/system/bin",
                "/system/xbin",
            ]
            .iter()
            .map(PathBuf::from)
            .collect()
        } else {
            Vec::new()
        };
        Self {
            tools: tools.to_vec(),
            extra_dirs,
        }
    }

    /// The tool that would run, with its path, or why none can.
    pub fn pick(&self) -> Result<(SystemTool, PathBuf), String> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        self.tools
            .iter()
            .find_map(|&tool| {
                find_program(tool.program(), &path, &self.extra_dirs).map(|p| (tool, p))
            })
            .ok_or_else(|| {
                let names: Vec<&str> = self.tools.iter().map(|t| t.program()).collect();
                if cfg!(windows) {
                    format!("{} was not found on PATH", names.join(", "))
                } else {
                    format!(
                        "none of {} is installed (install the `traceroute` package)",
                        names.join(", ")
                    )
                }
            })
    }
}

impl Engine for SystemEngine {
    fn kind(&self) -> TraceEngine {
        match self.pick() {
            Ok((tool, _)) => tool.engine(),
            Err(_) => self.tools.first().map_or_else(
                || TraceEngine::System("traceroute".to_owned()),
                |t| t.engine(),
            ),
        }
    }

    fn check_available(&self) -> Result<(), String> {
        self.pick().map(|_| ())
    }

    fn trace(&self, request: &TraceRequest) -> Result<TraceOutcome, Error> {
        let (tool, program) = self.pick().map_err(|reason| Error::EngineUnavailable {
            engine: self.kind().to_string(),
            reason,
        })?;
        run_tool(tool, &program, request)
    }
}

fn find_program(name: &str, path: &std::ffi::OsStr, extra: &[PathBuf]) -> Option<PathBuf> {
    let file_names: Vec<OsString> = if cfg!(windows) {
        vec![OsString::from(format!("{name}.exe")), OsString::from(name)]
    } else {
        vec![OsString::from(name)]
    };
    std::env::split_paths(path)
        .chain(extra.iter().cloned())
        .flat_map(|dir| file_names.iter().map(move |f| dir.join(f)))
        .find(|candidate| is_executable(candidate))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// What a tool printed and how it ended.
#[derive(Debug)]
struct ToolRun {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// `None` when it was killed at the deadline.
    status: Option<ExitStatus>,
}

fn run_tool(
    tool: SystemTool,
    program: &Path,
    request: &TraceRequest,
) -> Result<TraceOutcome, Error> {
    let started = Instant::now();
    let mut command = line_buffered(program);
    command
        .args(tool.args(request))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if cfg!(unix) {
        // Untranslated messages; the parsers know every language of
        // tracert but only the C locale of the Unix tools' few words.
        command.env("LC_ALL", "C");
    }
    let child = spawn_quiet(&mut command).map_err(|e| Error::EngineUnavailable {
        engine: tool.engine().to_string(),
        reason: format!("cannot run {}: {e}", program.display()),
    })?;
    let run = wait_bounded(child, request.deadline).map_err(|e| Error::Io {
        what: format!("running {}", program.display()),
        source: e,
    })?;

    let decoded = decode_console_bytes(&run.stdout);
    let text = decoded.text.into_owned();
    let failed = |why: String| Error::TraceFailed {
        engine: tool.engine().to_string(),
        reason: why,
    };
    let parsed = match parse_trace_text_as(&text, tool.format()) {
        Ok(parsed) if !parsed.hops.is_empty() => parsed,
        Ok(_) | Err(_) => {
            return Err(failed(explain_failure(tool, &run, &text, request.deadline)));
        }
    };
    let reached = parsed
        .hops
        .last()
        .is_some_and(|hop| hop.addrs.contains(&request.target));
    Ok(TraceOutcome {
        engine: tool.engine(),
        protocol: tool.protocol(),
        hops: parsed.hops,
        reached,
        duration: started.elapsed(),
        raw_text: Some(text),
        raw_format: Some(parsed.format),
    })
}

/// A command for `program` whose standard output is line-buffered where
/// coreutils' `stdbuf` exists: the Unix tools buffer a pipe in blocks, so a
/// tool killed at the deadline would otherwise lose everything it printed.
fn line_buffered(program: &Path) -> Command {
    if cfg!(unix) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if let Some(stdbuf) = find_program("stdbuf", &path, &[PathBuf::from("/usr/bin")]) {
            let mut command = Command::new(stdbuf);
            command.arg("-oL").arg(program);
            return command;
        }
    }
    Command::new(program)
}

/// Why a run gave no hops, for the report: the tool's own complaint first.
fn explain_failure(tool: SystemTool, run: &ToolRun, text: &str, deadline: Duration) -> String {
    let stderr = decode_console_bytes(&run.stderr);
    let complaint = stderr
        .text
        .lines()
        .chain(text.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect::<String>();
    let ending = match run.status {
        None => format!(
            "was stopped at the {:.1} s deadline",
            deadline.as_secs_f64()
        ),
        Some(status) if status.success() => "exited".to_owned(),
        Some(status) => format!("failed ({status})"),
    };
    if complaint.is_empty() {
        format!("{} {ending} without printing a hop", tool.program())
    } else {
        format!(
            "{} {ending} without printing a hop: {complaint}",
            tool.program()
        )
    }
}

/// Waits for `child` until `deadline`, killing it then; collects what it
/// printed either way.
fn wait_bounded(mut child: Child, deadline: Duration) -> std::io::Result<ToolRun> {
    let started = Instant::now();
    let stdout = child.stdout.take().map(spawn_reader);
    let stderr = child.stderr.take().map(spawn_reader);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() >= deadline {
            kill_group(&child);
            // Already exited between the two calls is fine too.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL);
    };
    // The pipes close when the child ends, but a grandchild that inherited
    // them keeps them open: wait a little for the end, then take what was
    // read so far.
    Ok(ToolRun {
        stdout: stdout.map(Reader::finish).unwrap_or_default(),
        stderr: stderr.map(Reader::finish).unwrap_or_default(),
        status,
    })
}

/// Runs a short helper command for a fact the platform tells only a
/// program (`cmd /C ver`, `reg query`): no console window, stopped at
/// `deadline` like a trace tool; its standard output when it ended by
/// itself, `None` when it could not run or was stopped.
#[cfg_attr(
    any(target_os = "linux", target_os = "android"),
    allow(dead_code, reason = "Linux and Android read their facts from files")
)]
pub(crate) fn helper_output(mut command: Command, deadline: Duration) -> Option<Vec<u8>> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let child = spawn_quiet(&mut command).ok()?;
    let run = wait_bounded(child, deadline).ok()?;
    run.status.is_some().then_some(run.stdout)
}

/// Starts a tool or helper command as every run of one is started: no
/// console window, in a process group of its own (for [`wait_bounded`]'s
/// kill at the deadline).
fn spawn_quiet(command: &mut Command) -> std::io::Result<Child> {
    hide_console(command);
    own_process_group(command);
    command.spawn()
}

/// Starts the tool as the leader of a process group of its own, so that at
/// the deadline [`kill_group`] ends whatever it started too: a tool that is
/// a wrapper script, or runs a helper, leaves processes of its own, which
/// killing the child alone would leave tracing on (and holding the output
/// pipes) after the trace has ended.
fn own_process_group(command: &mut Command) {
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(command, 0);
    #[cfg(not(unix))]
    let _ = command;
}

/// Kills the process group `child` leads (see [`own_process_group`]);
/// already gone is fine.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn kill_group(child: &Child) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Elsewhere only the tool itself is killed (`Child::kill`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn kill_group(_child: &Child) {}

/// A pipe read to its end on a thread, into a buffer that can be taken
/// before the end (capped at [`MAX_OUTPUT`]).
struct Reader {
    buffer: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

impl Reader {
    fn finish(self) -> Vec<u8> {
        let _ = self.done.recv_timeout(Duration::from_millis(200));
        std::mem::take(&mut *self.buffer.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

fn spawn_reader<R: Read + Send + 'static>(mut pipe: R) -> Reader {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buffer);
    let (tx, done) = mpsc::channel();
    thread::spawn(move || {
        let mut chunk = [0_u8; 4096];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    let mut out = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    let room = MAX_OUTPUT.saturating_sub(out.len());
                    out.extend_from_slice(chunk.get(..n.min(room)).unwrap_or_default());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    Reader { buffer, done }
}

#[cfg(windows)]
fn hide_console(command: &mut Command) {
    use std::os::windows::process::CommandExt;
    // CREATE_NO_WINDOW: a service or GUI host must not flash a console.
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;
    command.creation_flags(CREATE_NO_WINDOW);
}

#[cfg(not(windows))]
fn hide_console(_command: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn request() -> TraceRequest {
        TraceRequest::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), "192.0.2.7")
    }

    #[test]
    fn traceroute_args_are_numeric_bounded_and_end_with_the_target() {
        let mut req = request();
        req.first_ttl = 0;
        req.max_ttl = 12;
        let args = SystemTool::Traceroute.args(&req);
        assert!(args.contains(&"-n".to_owned()));
        let at = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        assert_eq!(at("-q").as_deref(), Some("1"));
        assert_eq!(at("-f").as_deref(), Some("1"), "first TTL 0 is raised to 1");
        assert_eq!(at("-m").as_deref(), Some("12"));
        assert!(at("-w").is_some());
        assert_eq!(args.last().map(String::as_str), Some("192.0.2.7"));
    }

    #[test]
    fn traceroute_probes_per_hop_stay_within_what_the_tool_accepts() {
        let queries = |tool: SystemTool, rounds: u8| {
            let mut req = request();
            req.rounds = rounds;
            let args = tool.args(&req);
            args.iter()
                .position(|a| a == "-q")
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let expected = if cfg!(target_os = "linux") {
            "10"
        } else {
            "16"
        };
        assert_eq!(
            queries(SystemTool::Traceroute, 16).as_deref(),
            Some(expected)
        );
        assert_eq!(
            queries(SystemTool::BusyboxTraceroute, 16).as_deref(),
            Some("16")
        );
        assert_eq!(queries(SystemTool::Traceroute, 7).as_deref(), Some("7"));
    }

    #[test]
    fn tracert_args() {
        let mut req = request();
        req.grace = Duration::from_millis(750);
        let args = SystemTool::Tracert.args(&req);
        assert_eq!(args, ["-d", "-w", "750", "-h", "30", "192.0.2.7"]);
    }

    #[test]
    fn busybox_runs_its_traceroute_applet_with_whole_seconds() {
        let mut req = request();
        req.grace = Duration::from_millis(300);
        let args = SystemTool::BusyboxTraceroute.args(&req);
        assert_eq!(args.first().map(String::as_str), Some("traceroute"));
        let wait = args
            .iter()
            .position(|a| a == "-w")
            .and_then(|i| args.get(i + 1));
        assert_eq!(wait.map(String::as_str), Some("1"));
    }

    #[test]
    fn engine_names_are_valid_system_names() {
        for tool in [
            SystemTool::Tracert,
            SystemTool::Traceroute,
            SystemTool::Tracepath,
            SystemTool::BusyboxTraceroute,
        ] {
            let name = tool.engine().to_string();
            assert_eq!(TraceEngine::parse(&name).ok(), Some(tool.engine()));
        }
    }

    #[cfg(unix)]
    #[test]
    fn programs_are_found_only_when_executable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lineprobe-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let tool = dir.join("tracepath");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        let set_mode = |mode| {
            std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(mode)).expect("chmod");
        };
        let empty = std::ffi::OsStr::new("");
        set_mode(0o644);
        assert_eq!(
            find_program("tracepath", empty, std::slice::from_ref(&dir)),
            None
        );
        set_mode(0o755);
        assert_eq!(
            find_program("tracepath", empty, std::slice::from_ref(&dir)),
            Some(tool.clone())
        );
        assert_eq!(find_program("tracepath", dir.as_os_str(), &[]), Some(tool));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_tool_installed_says_what_to_install() {
        let engine = SystemEngine {
            tools: Vec::new(),
            extra_dirs: Vec::new(),
        };
        let why = engine.check_available().expect_err("nothing to run");
        assert!(!why.is_empty());
        assert!(engine.kind().is_system());
    }

    /// An executable `name` in a fresh temporary folder that prints `out`.
    #[cfg(unix)]
    fn fake_tool(name: &str, out: &str) -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\nprintf '%s' '{out}'\n")).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        (dir, path)
    }

    #[cfg(unix)]
    #[test]
    fn a_tool_is_read_as_its_own_format_even_without_a_header() {
        // BSD traceroute behind a firewall: the header went to stderr and
        // no hop answered, which no format detector recognises.
        let (_dir, program) = fake_tool("traceroute", " 1  * * *\n 2  * * *\n");
        let outcome = run_tool(SystemTool::Traceroute, &program, &request()).expect("traced");
        assert_eq!(outcome.raw_format, Some(TraceFormat::Traceroute));
        let ttls: Vec<u8> = outcome.hops.iter().map(|h| h.ttl).collect();
        assert_eq!(ttls, [1, 2]);
        assert!(outcome.hops.iter().all(|h| h.addrs.is_empty()));

        let text =
            " 1  192.0.2.1  1.1 ms  0.9 ms  0.8 ms  0.7 ms\n 2  * * * 198.51.100.1  12.345 ms !H\n";
        let (_dir, program) = fake_tool("traceroute", text);
        let outcome = run_tool(SystemTool::Traceroute, &program, &request()).expect("traced");
        assert_eq!(outcome.raw_format, Some(TraceFormat::Traceroute));
        let hop = outcome.hops.get(1).expect("hop 2");
        assert_eq!(hop.rtt_ms, [12.345]);
        assert_eq!(hop.annotations, ["!H"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_tool_is_killed_at_the_deadline_and_its_output_kept() {
        let child = Command::new("/bin/sh")
            .args(["-c", "echo first; sleep 5; echo never"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let started = Instant::now();
        let run = wait_bounded(child, Duration::from_millis(300)).expect("waits");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(run.status.is_none(), "killed, not exited");
        assert_eq!(String::from_utf8_lossy(&run.stdout), "first\n");
    }

    #[cfg(unix)]
    #[test]
    fn a_helper_command_is_bounded_in_time() {
        let mut echo = Command::new("/bin/sh");
        echo.args(["-c", "echo 10.0.22631"]);
        assert_eq!(
            helper_output(echo, Duration::from_secs(10)).as_deref(),
            Some(&b"10.0.22631\n"[..])
        );
        // A helper that hangs (a registry query on a wedged machine) is
        // stopped, not waited for: the probe would hang with it.
        let started = Instant::now();
        let mut hang = Command::new("/bin/sh");
        hang.args(["-c", "sleep 30"]);
        assert_eq!(helper_output(hang, Duration::from_millis(200)), None);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            helper_output(Command::new("/nonexistent/tool"), Duration::from_secs(1)),
            None
        );
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn what_a_tool_started_is_killed_with_it_at_the_deadline() {
        // A wrapper script: the tracing goes on in a process of its own.
        let mut command = Command::new("/bin/sh");
        command
            .args(["-c", "echo first; sleep 30 & echo $! >&2; wait"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = spawn_quiet(&mut command).expect("sh runs");
        let run = wait_bounded(child, Duration::from_millis(300)).expect("waits");
        assert!(run.status.is_none(), "killed, not exited");
        let grandchild: u32 = String::from_utf8_lossy(&run.stderr)
            .trim()
            .parse()
            .expect("the script printed its helper's pid");
        // Gone, or a zombie until whoever inherited it reaps it.
        let alive = || {
            std::fs::read_to_string(format!("/proc/{grandchild}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next())
                    .is_some_and(|state| state != "Z")
            })
        };
        let started = Instant::now();
        while alive() && started.elapsed() < Duration::from_secs(2) {
            thread::sleep(Duration::from_millis(20));
        }
        let still = alive();
        if still {
            let _ = Command::new("kill")
                .args(["-KILL", &grandchild.to_string()])
                .status();
        }
        assert!(
            !still,
            "the tool's helper {grandchild} outlived the deadline"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_quick_tool_is_waited_for() {
        let child = Command::new("/bin/sh")
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh runs");
        let run = wait_bounded(child, Duration::from_secs(5)).expect("waits");
        assert_eq!(run.status.and_then(|s| s.code()), Some(3));
        assert_eq!(run.stdout, b"out\n");
        assert_eq!(run.stderr, b"err\n");
        let text = String::from_utf8_lossy(&run.stdout).into_owned();
        let why = explain_failure(SystemTool::Traceroute, &run, &text, Duration::from_secs(5));
        assert!(why.contains("err"), "{why}");
    }
}
