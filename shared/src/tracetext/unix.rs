//! `traceroute` as printed on Linux (Debian/modern 2.x and the older LBL
//! code), FreeBSD, OpenBSD, NetBSD, macOS and `BusyBox`.
//!
//! All of them descend from the LBL tool and print one line per TTL: the TTL,
//! then for each probe either `*` or the replying address (printed again only
//! when it changes) followed by its round-trip time and any `!` mark. BSD and
//! macOS print a further responder of the same TTL on a continuation line that
//! starts with whitespace instead of a TTL. The line is read token by token,
//! so spacing differences between the implementations do not matter; the
//! spacing is only used to tell `BusyBox` apart.
//!
//! The helpers at the end (address tokens, round-trip times, putting hops in
//! order) are shared with the `tracepath` and `mtr` parsers.

use std::net::IpAddr;

use super::{ParsedTrace, TraceFormat};
use crate::{Error, Hop};

/// True when the text looks like `traceroute` output: it has the header, or,
/// when the header was cut off, hop lines that list the address before the
/// round-trip times (Windows `tracert` prints them the other way round).
pub(super) fn looks_like(text: &str) -> bool {
    let mut address_first = 0usize;
    for raw in text.lines() {
        let line = clean_line(raw);
        if Header::parse(line.trim_start()).is_some() {
            return true;
        }
        let Some((_, rest)) = split_ttl(line) else {
            continue;
        };
        let tokens: Vec<&str> = rest.split_whitespace().collect();
        let Some(first) = tokens
            .iter()
            .position(|t| *t != "*" && !(t.starts_with('[') && t.ends_with(']')))
        else {
            continue;
        };
        let Some(token) = tokens.get(first) else {
            continue;
        };
        if token.starts_with('<') || token.parse::<f64>().is_ok() || rtt_value(token).is_some() {
            // A round-trip time right after the TTL. BusyBox does that for a
            // reply whose address it already printed, but an address after
            // the times is Windows `tracert`.
            if tokens
                .iter()
                .skip(first + 1)
                .any(|t| parse_addr(t).is_some())
            {
                return false;
            }
            continue;
        }
        let next = tokens.get(first + 1).copied().unwrap_or("");
        let named = paren_inner(next).and_then(parse_addr).is_some();
        if parse_addr(token).is_some() || named {
            address_first += 1;
        }
    }
    address_first > 0
}

/// Parses `traceroute` output.
pub(super) fn parse(text: &str) -> Result<ParsedTrace, Error> {
    let mut trace = ParsedTrace {
        format: TraceFormat::Traceroute,
        target: None,
        target_addr: None,
        max_hops: None,
        locale: None,
        hops: Vec::new(),
    };
    let mut header: Option<Header> = None;
    let mut hops: Vec<Hop> = Vec::new();
    let mut current: Option<usize> = None;
    let mut spacing = Spacing::default();

    // Whatever precedes the header (a prompt, the command, `ping` output
    // pasted with it) is not part of the trace, even when it starts with a
    // number.
    let first_line = text
        .lines()
        .position(|l| Header::parse(clean_line(l).trim_start()).is_some())
        .unwrap_or(0);
    for (index, raw) in text.lines().enumerate().skip(first_line) {
        let line_no = index + 1;
        let line = clean_line(raw);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(found) = Header::parse(line.trim_start()) {
            // A second header means a second run was pasted; the first one
            // names the trace, its hops simply continue the list.
            if header.is_none() {
                header = Some(found);
            }
            current = None;
            continue;
        }
        if let Some((ttl_text, rest)) = split_ttl(line) {
            if ttl_text.bytes().all(|b| b == b'0') {
                // Some builds print a `0` line for the local host before
                // the first hop; it is not a hop.
                current = None;
                continue;
            }
            let ttl = parse_ttl(ttl_text).ok_or_else(|| {
                malformed(
                    line_no,
                    format!("the hop number {ttl_text:?} is not between 1 and 255"),
                )
            })?;
            spacing.observe(rest);
            let mut hop = Hop::new(ttl);
            read_probes(&mut hop, rest).map_err(|reason| malformed(line_no, reason))?;
            hops.push(hop);
            current = Some(hops.len() - 1);
            continue;
        }
        let is_indented = line.starts_with(char::is_whitespace);
        let continued = current.and_then(|at| hops.get_mut(at));
        if let (true, Some(hop)) = (is_indented, continued)
            && is_continuation(line.trim_start())
        {
            read_probes(hop, line).map_err(|reason| malformed(line_no, reason))?;
        }
        // Anything else is noise around the output: a shell prompt and the
        // command, `traceroute: Warning: ...` from stderr, blank lines.
    }

    if header.is_none() && hops.is_empty() {
        return Err(Error::UnrecognizedTrace {
            expected: super::EXPECTED_FORMATS,
            detail: "no `traceroute to` header and no hop lines were found".to_owned(),
        });
    }
    if let Some(h) = &header {
        trace.target.clone_from(&h.target);
        trace.target_addr = h.target_addr;
        trace.max_hops = h.max_hops;
    }
    let cisco = header.as_ref().is_some_and(|h| h.cisco);
    if !cisco && spacing.is_busybox(header.as_ref()) {
        trace.format = TraceFormat::BusyboxTraceroute;
    }
    trace.hops = finish_hops(hops);
    Ok(trace)
}

fn malformed(line: usize, reason: String) -> Error {
    Error::MalformedTrace {
        format: TraceFormat::Traceroute,
        line,
        reason,
    }
}

/// What the `traceroute to host (addr), 30 hops max, 60 byte packets` line says.
#[derive(Debug, Clone, PartialEq)]
struct Header {
    target: Option<String>,
    target_addr: Option<IpAddr>,
    max_hops: Option<u8>,
    packet_bytes: Option<u32>,
    has_from: bool,
    /// Cisco IOS pads its timeouts like `BusyBox` does.
    cisco: bool,
}

impl Header {
    fn parse(line: &str) -> Option<Self> {
        // tcptraceroute and Cisco IOS print their own headers; the hop lines
        // are the LBL ones.
        let rest = [
            "traceroute to ",
            "traceroute6 to ",
            "Tracing the path to ",
            "Tracing the route to ",
        ]
        .iter()
        .find_map(|p| line.strip_prefix(p))?;
        // `host (addr),`, or `host(addr),` as some routers print it.
        let target = rest
            .split(|c: char| c.is_whitespace() || c == '(' || c == ',')
            .next()
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        let target_addr = rest
            .split_once('(')
            .and_then(|(_, after)| after.split_once(')'))
            .and_then(|(inner, _)| parse_addr(inner))
            .or_else(|| target.as_deref().and_then(parse_addr));
        let tokens: Vec<&str> = rest
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|t| !t.is_empty())
            .collect();
        let number_before = |word: &str| {
            tokens
                .windows(2)
                .find(|w| w.get(1) == Some(&word))
                .and_then(|w| w.first())
                .and_then(|n| n.parse::<u32>().ok())
        };
        Some(Self {
            target: target.or_else(|| target_addr.map(|a| a.to_string())),
            target_addr,
            max_hops: number_before("hops").and_then(|n| u8::try_from(n).ok()),
            packet_bytes: number_before("byte"),
            has_from: tokens.contains(&"from"),
            cisco: line.starts_with("Tracing the route to "),
        })
    }
}

/// Spacing clues that tell `BusyBox` from the other implementations.
///
/// `BusyBox` prints every timeout as `"  *"` (two spaces), so a silent hop is
/// `*  *  *` and a timeout before a reply is `*  10.0.0.1`; the LBL, Linux 2.x,
/// BSD and macOS code prints `" *"`, giving `* * *`, `* 10.0.0.1` and `ms *`.
#[derive(Debug, Default)]
struct Spacing {
    busybox: bool,
    other: bool,
}

impl Spacing {
    fn observe(&mut self, rest: &str) {
        let body = rest.trim_start();
        if rest.contains("*  *") || (body.starts_with("*  ") && !body.starts_with("*   ")) {
            self.busybox = true;
        }
        if rest.contains("* *")
            || rest.contains("ms *")
            || rest.contains(" msec")
            || starts_single_spaced_star(body)
        {
            self.other = true;
        }
    }

    fn is_busybox(&self, header: Option<&Header>) -> bool {
        if self.other {
            return false;
        }
        if self.busybox {
            return true;
        }
        // No timeout printed: fall back on the default probe size, which
        // differs (BusyBox 38 or 46 bytes over IPv4, 72 over IPv6; Linux 2.x
        // 60/80, BSD 40/20, macOS 52/12). Old LBL builds for Linux also used
        // 38, so this is a best guess only when nothing better is printed.
        header.is_some_and(|h| {
            !h.has_from
                && matches!(
                    (h.packet_bytes, h.target_addr),
                    (Some(38 | 46), Some(IpAddr::V4(_)) | None) | (Some(72), Some(IpAddr::V6(_)))
                )
        })
    }
}

fn starts_single_spaced_star(body: &str) -> bool {
    let mut chars = body.chars();
    chars.next() == Some('*')
        && chars.next() == Some(' ')
        && chars.next().is_some_and(|c| !c.is_whitespace())
}

/// Reads the probes of one hop line (after the TTL) or of a continuation
/// line into `hop`. The error is the reason, for [`Error::MalformedTrace`].
fn read_probes(hop: &mut Hop, text: &str) -> Result<(), String> {
    let tokens: Vec<&str> = text.split_whitespace().collect();
    let mut i = 0usize;
    while let Some(&token) = tokens.get(i) {
        i += 1;
        if token == "*" {
            hop.sent = hop.sent.saturating_add(1);
            continue;
        }
        if token == "traceroute:" || token == "traceroute6:" {
            // `sendto` failures are printed by the tool into the hop line;
            // the rest of the line is that message.
            hop.sent = hop.sent.saturating_add(1);
            break;
        }
        if let Some(ms) = rtt_value(token) {
            push_rtt(hop, ms);
            continue;
        }
        // Some locales print `1,234 ms`.
        let decimal = token.replace(',', ".");
        if let Ok(ms) = decimal.parse::<f64>() {
            if tokens.get(i).is_some_and(|u| is_ms_unit(u)) {
                if !ms.is_finite() || ms < 0.0 {
                    return Err(format!("{token:?} is not a round-trip time"));
                }
                i += 1;
                push_rtt(hop, ms);
                continue;
            }
            if token.contains('.') && parse_addr(token).is_none() && ms.is_finite() && ms >= 0.0 {
                // A time printed without its unit.
                push_rtt(hop, ms);
                continue;
            }
        }
        if token.starts_with('!') {
            push_annotation(hop, token);
            continue;
        }
        if token.starts_with('[') {
            let (inner, used) = group(&tokens, i - 1, '[', ']')
                .ok_or_else(|| format!("{token:?} opens a `[` that is never closed"))?;
            i += used - 1;
            let inner = inner.trim();
            if let Some(addr) = parse_addr(inner) {
                hop.push_addr(addr);
            } else if inner != "*" && !inner.is_empty() {
                // `[AS4134]` from -A (`[*]`: no AS known, which says
                // nothing), tcptraceroute's `[open]`, Cisco's `[MPLS: …]`.
                push_annotation(hop, inner);
            }
            continue;
        }
        if token.starts_with('<') {
            // Linux -e extensions such as `<MPLS:L=24001,E=0,S=1,T=1>`.
            let (inner, used) = group(&tokens, i - 1, '<', '>')
                .ok_or_else(|| format!("{token:?} opens a `<` that is never closed"))?;
            i += used - 1;
            push_annotation(hop, &format!("<{}>", inner.trim()));
            continue;
        }
        if token.starts_with('(') {
            let (inner, used) = group(&tokens, i - 1, '(', ')')
                .ok_or_else(|| format!("{token:?} opens a `(` that is never closed"))?;
            i += used - 1;
            let inner = inner.trim();
            match parse_addr(inner) {
                Some(addr) => hop.push_addr(addr),
                // `name (name)`: a responder printed without an address.
                None => hop.push_name(inner),
            }
            continue;
        }
        if let Some(addr) = parse_addr(token) {
            hop.push_addr(addr);
            continue;
        }
        if is_ms_unit(token) {
            return Err(format!(
                "{token:?} stands without a number; expected a round-trip time such as `1.234 ms`"
            ));
        }
        if is_flag_token(token) {
            // Linux `F=1500` (--mtu) and `'-3'` (--back).
            push_annotation(hop, token);
            continue;
        }
        if is_name_like(token) {
            // The name before its `(address)`, or alone when the tool had
            // only a name to print. Reverse DNS can hold odd characters, so
            // anything without brackets or marks is taken as a name.
            hop.push_name(token);
            continue;
        }
        return Err(format!(
            "unexpected {token:?}; expected an address, a host name, a round-trip time \
             such as `1.234 ms`, `*` or a mark such as `!H`"
        ));
    }
    Ok(())
}

/// Joins tokens from `start` up to the one that closes `open`, returning the
/// text inside and how many tokens were used.
fn group(tokens: &[&str], start: usize, open: char, close: char) -> Option<(String, usize)> {
    let mut text = String::new();
    for (used, token) in tokens.iter().skip(start).enumerate() {
        if used > 0 {
            text.push(' ');
        }
        text.push_str(token);
        if token.ends_with(close) && (used > 0 || token.len() > 1) {
            let inner = text.strip_prefix(open)?.strip_suffix(close)?;
            return Some((inner.to_owned(), used + 1));
        }
    }
    None
}

fn push_rtt(hop: &mut Hop, ms: f64) {
    hop.rtt_ms.push(ms);
    hop.sent = hop.sent.saturating_add(1);
    hop.received = hop.received.saturating_add(1);
}

fn is_ms_unit(token: &str) -> bool {
    matches!(token, "ms" | "msec" | "msecs")
}

fn is_flag_token(token: &str) -> bool {
    let quoted = token.len() > 2 && token.starts_with('\'') && token.ends_with('\'');
    let keyed = token.split_once('=').is_some_and(|(k, v)| {
        !k.is_empty() && k.chars().all(|c| c.is_ascii_uppercase()) && !v.is_empty()
    });
    quoted || keyed
}

/// A continuation line (BSD/macOS): a further responder of the hop above.
fn is_continuation(body: &str) -> bool {
    let mut tokens = body.split_whitespace();
    let Some(first) = tokens.next() else {
        return false;
    };
    if first.starts_with('[') || first.starts_with('<') {
        return true;
    }
    if parse_addr(first).is_some() || paren_inner(first).and_then(parse_addr).is_some() {
        return true;
    }
    is_host_name(first)
        && tokens
            .next()
            .and_then(paren_inner)
            .and_then(parse_addr)
            .is_some()
}

/// Splits `" 12  rest"` into `("12", "  rest")`: a line that starts (after
/// indentation) with a number followed by whitespace or nothing.
fn split_ttl(line: &str) -> Option<(&str, &str)> {
    let (ttl, rest) = super::leading_number(line)?;
    super::stands_apart(rest).then_some((ttl, rest))
}

/// A line without its line ending, `^C` echoes or trailing spaces.
fn clean_line(raw: &str) -> &str {
    let line = raw.trim_end();
    line.strip_suffix("^C").unwrap_or(line).trim_end()
}

// ---------------------------------------------------------------------------
// Helpers shared with the tracepath and mtr parsers.

/// A TTL in 1..=255.
pub(super) fn parse_ttl(text: &str) -> Option<u8> {
    text.trim().parse::<u8>().ok().filter(|t| *t > 0)
}

/// An address as the tools print it: IPv4, IPv6, an IPv6 with a `%zone`, or
/// one in brackets.
pub(super) fn parse_addr(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let text = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    let text = text.split_once('%').map_or(text, |(addr, _)| addr);
    text.parse().ok()
}

/// The inside of a `(...)` token.
pub(super) fn paren_inner(token: &str) -> Option<&str> {
    token.strip_prefix('(')?.strip_suffix(')')
}

/// A round-trip time written as one token: `0.512ms`.
pub(super) fn rtt_value(token: &str) -> Option<f64> {
    let number = token.strip_suffix("ms")?;
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0 && number.starts_with(|c: char| c.is_ascii_digit()))
        .then_some(value)
}

/// Something a resolver could have printed as a host name (including the odd
/// `http://name` some wrappers print).
pub(super) fn is_host_name(token: &str) -> bool {
    !token.is_empty()
        && !token.starts_with(['(', ')', '[', ']', '<', '>', '!', '*', '\'', '"', '-'])
        && token.chars().all(|c| {
            c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '/' | '%' | '~' | '@' | '+')
        })
        && token.chars().any(char::is_alphanumeric)
}

/// A token that can only be a name: no brackets, marks or control characters.
fn is_name_like(token: &str) -> bool {
    !token.starts_with(['!', '*', '\'', '"'])
        && !token.contains(['(', ')', '[', ']', '<', '>'])
        && !token.chars().any(char::is_control)
        && token.chars().any(char::is_alphanumeric)
}

/// Adds an annotation once.
pub(super) fn push_annotation(hop: &mut Hop, text: &str) {
    let text = text.trim();
    if !text.is_empty() && !hop.annotations.iter().any(|a| a == text) {
        hop.annotations.push(text.to_owned());
    }
}

/// Puts hops in TTL order, merging lines printed for the same TTL.
///
/// Addresses stay in the canonical order [`Hop::push_addr`] keeps: several
/// addresses at one TTL are load-balanced paths, and the order the probes
/// happened to hit them changes from run to run.
pub(super) fn finish_hops(hops: Vec<Hop>) -> Vec<Hop> {
    let mut merged: Vec<Hop> = Vec::new();
    for hop in hops {
        match merged.iter_mut().find(|h| h.ttl == hop.ttl) {
            Some(into) => {
                for addr in hop.addrs {
                    into.push_addr(addr);
                }
                for name in &hop.names {
                    into.push_name(name);
                }
                into.rtt_ms.extend(hop.rtt_ms);
                into.sent = into.sent.saturating_add(hop.sent);
                into.received = into.received.saturating_add(hop.received);
                for a in &hop.annotations {
                    push_annotation(into, a);
                }
            }
            None => merged.push(hop),
        }
    }
    merged.sort_by_key(|h| h.ttl);
    merged
}

/// The target named on a command line echoed before the output
/// (`user@host:~# tracepath -n 192.0.2.1`), for tools whose output does not
/// name it.
pub(super) fn target_from_command_echo(text: &str, tools: &[&str]) -> Option<String> {
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| {
            let base = w.rsplit('/').next().unwrap_or(w);
            tools.contains(&base)
        }) else {
            continue;
        };
        let args = words.get(at + 1..).unwrap_or(&[]);
        if args.is_empty() {
            continue;
        }
        // The target is the last argument that is not an option; options
        // that take a value are not distinguished, so a lone word is required.
        let last = args.last()?;
        if !last.starts_with('-') && (is_host_name(last) || parse_addr(last).is_some()) {
            return Some((*last).to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_variants() {
        let h =
            Header::parse("traceroute to example.com (192.0.2.7), 30 hops max, 60 byte packets")
                .expect("header");
        assert_eq!(h.target.as_deref(), Some("example.com"));
        assert_eq!(h.target_addr, Some("192.0.2.7".parse().expect("ip")));
        assert_eq!(h.max_hops, Some(30));
        assert_eq!(h.packet_bytes, Some(60));
        let h = Header::parse(
            "traceroute6 to h.example (2001:db8::1) from 2001:db8::2, 64 hops max, 20 byte packets",
        )
        .expect("header");
        assert!(h.has_from);
        assert_eq!(h.max_hops, Some(64));
        assert!(Header::parse("traceroute 192.0.2.1").is_none());
    }

    #[test]
    fn split_ttl_needs_whitespace_after_the_number() {
        assert_eq!(split_ttl(" 3  * * *"), Some(("3", "  * * *")));
        assert_eq!(split_ttl("12"), Some(("12", "")));
        assert_eq!(split_ttl(" 1:  10.0.0.1"), None);
        assert_eq!(split_ttl("  1.|-- 10.0.0.1"), None);
        assert_eq!(split_ttl("    10.0.0.1  1 ms"), None);
    }

    #[test]
    fn addresses_with_zone_or_brackets() {
        assert!(parse_addr("fe80::1%eth0").is_some());
        assert!(parse_addr("[2001:db8::1]").is_some());
        assert!(parse_addr("10.0.0").is_none());
    }

    #[test]
    fn spacing_tells_busybox() {
        let mut s = Spacing::default();
        s.observe("  *  *  *");
        assert!(s.is_busybox(None));
        let mut s = Spacing::default();
        s.observe("  * 10.0.0.1  1.0 ms");
        assert!(!s.is_busybox(None));
    }

    /// Each detector claims its own tool's output and nobody else's.
    #[test]
    fn detectors_do_not_claim_each_other() {
        use super::super::{mtr, tracepath};
        macro_rules! fixtures {
            ($dir:literal: $($name:literal),* $(,)?) => {
                [$(include_str!(concat!("../../tests/fixtures/", $dir, "/", $name))),*]
            };
        }
        let traceroute = fixtures!("traceroute":
            "linux_names_asn.txt", "linux_n_bang.txt", "linux_icmp_ipv6.txt",
            "macos_continuation.txt", "freebsd_traceroute6.txt", "openbsd_lbl.txt",
            "busybox_router.txt", "busybox_n_ipv6.txt", "busybox_no_timeouts.txt",
            "no_header.txt", "tcptraceroute_open.txt", "cisco_ios.txt");
        let tracepath_out = fixtures!("tracepath":
            "names_pmtu.txt", "ipv6_n.txt", "both_b.txt", "localized_fr.txt");
        let reports = fixtures!("mtr":
            "report_names_multipath.txt", "report_wide_asn.txt", "report_ipv6_fields.txt",
            "interactive_screen.txt");
        let json =
            fixtures!("mtr": "json_new.json", "json_old_strings.json", "json_flat_hops.json");
        let windows = "Tracing route to host.example [192.0.2.5]\r\nover a maximum of 30 hops:\r\n\r\n  \
                       1    <1 ms    <1 ms    <1 ms  192.168.1.1\r\n  \
                       2     *        *        *     Request timed out.\r\n  \
                       3    12 ms    11 ms    12 ms  host.example [192.0.2.5]\r\n";
        let claims = |t: &str| {
            [
                mtr::looks_like_json(t),
                mtr::looks_like_report(t),
                tracepath::looks_like(t),
                looks_like(t),
            ]
        };
        for t in traceroute {
            assert_eq!(claims(t), [false, false, false, true], "{t}");
        }
        for t in tracepath_out {
            assert_eq!(claims(t), [false, false, true, false], "{t}");
        }
        for t in reports {
            assert_eq!(claims(t), [false, true, false, false], "{t}");
        }
        for t in json {
            assert_eq!(claims(t), [true, false, false, false], "{t}");
        }
        assert_eq!(claims(windows), [false; 4]);
    }

    #[test]
    fn command_echo_target() {
        let t = "root@r1:~# tracepath -n 192.0.2.9\n 1:  x\n";
        assert_eq!(
            target_from_command_echo(t, &["tracepath"]).as_deref(),
            Some("192.0.2.9")
        );
    }
}
