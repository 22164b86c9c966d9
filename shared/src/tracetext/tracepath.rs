//! iputils `tracepath` / `tracepath6`.
//!
//! Each line is one probe, ` 3:  host  1.234ms [notes]`; a TTL can take
//! several lines (one per probe, or again when the path MTU changed), which
//! are merged into one hop. ` 1?: [LOCALHOST]` reports the local MTU and is
//! not a hop; the `Resume:` footer and `Too many hops` are summaries. The
//! host is a name, an address, or (with `-b`) both as `name (addr)`. iputils
//! is translated, so only the layout is relied on, not the English words:
//! a line with an address or a time is a reply, any other hop line is a lost
//! probe (`no reply`, `send failed`, `keine Antwort`…).

use super::unix::{
    finish_hops, is_host_name, paren_inner, parse_addr, parse_ttl, push_annotation,
    target_from_command_echo,
};
use super::{ParsedTrace, TraceFormat};
use crate::{Error, Hop};

/// True for `tracepath` output: `N:` hop lines with a time or `no reply`,
/// the `[LOCALHOST]` line, or the `Resume:` footer.
pub(super) fn looks_like(text: &str) -> bool {
    text.lines().any(|line| {
        if line.trim_start().starts_with("Resume: pmtu ") {
            return true;
        }
        let Some((_, _, rest)) = split_ttl_colon(line) else {
            return false;
        };
        let rest = rest.trim();
        if rest.starts_with("[LOCALHOST]") || rest == "no reply" {
            return true;
        }
        let tokens: Vec<&str> = rest.split_whitespace().collect();
        (0..tokens.len()).any(|i| rtt_at(&tokens, i).is_some())
    })
}

/// Parses `tracepath` output.
pub(super) fn parse(text: &str) -> Result<ParsedTrace, Error> {
    let mut hops: Vec<Hop> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line_no = index + 1;
        let Some((ttl_text, guessed, rest)) = split_ttl_colon(raw) else {
            // The footer, `Too many hops`, a shell prompt, blank lines.
            continue;
        };
        let ttl = parse_ttl(ttl_text).ok_or_else(|| {
            malformed(
                line_no,
                format!("the hop number {ttl_text:?} is not between 1 and 255"),
            )
        })?;
        if rest.trim_start().starts_with("[LOCALHOST]") {
            continue;
        }
        let mut hop = Hop::new(ttl);
        read_line(&mut hop, rest).map_err(|reason| malformed(line_no, reason))?;
        if guessed && hop.addrs.is_empty() && hop.names.is_empty() {
            // `N?:` lines without a responder are tracepath's own notes
            // (`reply received 8)`), not probes of a known TTL.
            continue;
        }
        hops.push(hop);
    }
    if hops.is_empty() && !looks_like(text) {
        return Err(Error::UnrecognizedTrace {
            expected: super::EXPECTED_FORMATS,
            detail: "no tracepath hop lines (` 1:  host  0.123ms`) were found".to_owned(),
        });
    }
    let target = target_from_command_echo(text, &["tracepath", "tracepath6"]);
    Ok(ParsedTrace {
        format: TraceFormat::Tracepath,
        target_addr: target.as_deref().and_then(parse_addr),
        target,
        max_hops: None,
        locale: None,
        hops: finish_hops(hops),
    })
}

fn malformed(line: usize, reason: String) -> Error {
    Error::MalformedTrace {
        format: TraceFormat::Tracepath,
        line,
        reason,
    }
}

/// Reads one hop line after `N:`. Every line is one probe; it was answered
/// when it names a responder or shows a time.
fn read_line(hop: &mut Hop, rest: &str) -> Result<(), String> {
    let tokens: Vec<&str> = rest.split_whitespace().collect();
    let has_rtt = (0..tokens.len()).any(|i| rtt_at(&tokens, i).is_some());
    let mut i = 0usize;

    // The host column: `addr`, `name`, `name (addr)`, `addr (name)` or `???`.
    if let Some(&first) = tokens.first() {
        let paren = tokens.get(1).copied().and_then(paren_inner);
        if let Some(addr) = parse_addr(first) {
            hop.push_addr(addr);
            i = 1;
            if let Some(inner) = paren {
                hop.push_name(inner);
                i = 2;
            }
        } else if first == "???" {
            i = 1;
        } else if rtt_at(&tokens, 0).is_none()
            && is_host_name(first)
            && (has_rtt || paren.and_then(parse_addr).is_some())
        {
            hop.push_name(first);
            i = 1;
            if let Some(addr) = paren.and_then(parse_addr) {
                hop.push_addr(addr);
                i = 2;
            }
        }
    }
    let answered = i > 0 || has_rtt;
    hop.sent = 1;
    hop.received = u16::from(answered);
    if !answered {
        // A lost probe; the words are the tool's (possibly translated).
        if rest.trim() == "send failed" {
            push_annotation(hop, "send failed");
        }
        return Ok(());
    }

    while let Some(&token) = tokens.get(i) {
        if let Some((ms, used)) = rtt_at(&tokens, i) {
            hop.rtt_ms.push(ms);
            i += used;
            continue;
        }
        if token.starts_with('(') {
            // `(This broken router returned corrupted payload)`.
            let end = tokens
                .iter()
                .skip(i)
                .position(|t| t.ends_with(')'))
                .ok_or_else(|| format!("{token:?} opens a `(` that is never closed"))?;
            let note = tokens.get(i..=i + end).unwrap_or(&[]).join(" ");
            push_annotation(hop, note.trim_start_matches('(').trim_end_matches(')'));
            i += end + 1;
            continue;
        }
        if !is_note_word(token) {
            return Err(format!(
                "unexpected {token:?}; expected a time such as `0.123ms`, `asymm 2`, \
                 `pmtu 1492`, `reached` or a mark such as `!H`"
            ));
        }
        // `asymm  3` and `pmtu 1492` keep their number; `reached`, `!H`
        // (and their translations) stand alone.
        if let Some(number) = tokens.get(i + 1).filter(|n| n.parse::<u32>().is_ok()) {
            push_annotation(hop, &format!("{token} {number}"));
            i += 2;
        } else {
            push_annotation(hop, token);
            i += 1;
        }
    }
    Ok(())
}

fn is_note_word(token: &str) -> bool {
    token
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '!' | '.' | '-' | '_' | ':'))
}

/// The time at `tokens[i]`, and how many tokens it took: `0.400ms`,
/// `0,400 ms` (some translations), `0.400ミリ秒`.
fn rtt_at(tokens: &[&str], i: usize) -> Option<(f64, usize)> {
    let token = tokens.get(i)?;
    let split = token
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(token.len());
    let (number, unit) = token.split_at(split);
    // tracepath always prints three decimals, so a separator is required;
    // that keeps `asymm 3` and `pmtu 1500` out.
    if !number.contains(['.', ',']) || !number.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let value: f64 = number.replace(',', ".").parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    let is_unit =
        |u: &str| !u.is_empty() && u.chars().count() <= 4 && u.chars().all(char::is_alphabetic);
    if is_unit(unit) {
        return Some((value, 1));
    }
    if unit.is_empty() && tokens.get(i + 1).is_some_and(|u| is_unit(u)) {
        return Some((value, 2));
    }
    None
}

/// Splits ` 3:  rest` (also ` 3?: `, and French ` 3 :`) into the TTL, whether
/// it was marked `?`, and the rest.
fn split_ttl_colon(line: &str) -> Option<(&str, bool, &str)> {
    let (ttl, after) = super::leading_number(line)?;
    let (guessed, after) = match after.strip_prefix('?') {
        Some(a) => (true, a),
        None => (false, after),
    };
    let after = after.strip_prefix(' ').unwrap_or(after);
    let rest = after.strip_prefix(':')?;
    super::stands_apart(rest).then_some((ttl, guessed, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_colon_forms() {
        assert_eq!(
            split_ttl_colon(" 1?: [LOCALHOST]"),
            Some(("1", true, " [LOCALHOST]"))
        );
        assert_eq!(
            split_ttl_colon("12:  no reply"),
            Some(("12", false, "  no reply"))
        );
        assert_eq!(
            split_ttl_colon(" 3 :  aucune réponse"),
            Some(("3", false, "  aucune réponse"))
        );
        assert_eq!(split_ttl_colon(" 1  10.0.0.1  1.0 ms"), None);
        assert_eq!(split_ttl_colon("2024-01-01 10:00"), None);
    }

    #[test]
    fn rtt_forms() {
        assert_eq!(rtt_at(&["0.400ms"], 0), Some((0.4, 1)));
        assert_eq!(rtt_at(&["1,250", "ms"], 0), Some((1.25, 2)));
        assert_eq!(rtt_at(&["2.000ミリ秒"], 0), Some((2.0, 1)));
        assert_eq!(rtt_at(&["1500"], 0), None);
        assert_eq!(rtt_at(&["10.0.0.1"], 0), None);
    }
}
