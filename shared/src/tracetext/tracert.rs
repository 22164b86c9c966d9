//! Windows `tracert`, in any display language.
//!
//! Only the hop lines have a shape shared by every language: the TTL, then
//! one column per probe (`N ms`, `<1 ms`, `*`, with a localized unit such as
//! `毫秒` or `мс`), then the address (`name [addr]` or a bare address) or a
//! localized message. Header, timeout and footer sentences are translated;
//! the table below knows the common ones, which gives the locale, but parsing
//! never depends on it, so a language missing from the table still parses.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{ParsedTrace, TraceFormat};
use crate::{Error, Hop};

/// The sentences one display language prints, lower-cased, with `'` for
/// typographic apostrophes.
struct Locale {
    tag: &'static str,
    /// The first entry is specific enough to recognise `tracert` on its own.
    header: &'static [&'static str],
    timeout: &'static [&'static str],
    footer: &'static [&'static str],
}

const LOCALES: &[Locale] = &[
    Locale {
        tag: "en",
        header: &["tracing route to", "over a maximum of"],
        timeout: &["request timed out"],
        footer: &["trace complete"],
    },
    Locale {
        tag: "zh-CN",
        header: &["个跃点跟踪", "通过最多"],
        timeout: &["请求超时"],
        footer: &["跟踪完成"],
    },
    Locale {
        tag: "zh-TW",
        header: &["個躍點上", "在上限"],
        timeout: &["要求等候逾時"],
        footer: &["追蹤完成"],
    },
    Locale {
        tag: "ja",
        header: &["へのルートをトレース", "経由するホップ数は最大"],
        timeout: &["要求がタイムアウトしました"],
        footer: &["トレースを完了しました"],
    },
    Locale {
        tag: "ko",
        header: &["가는 경로 추적", "홉 이상의"],
        timeout: &["요청 시간이 만료되었습니다"],
        footer: &["추적을 완료했습니다"],
    },
    Locale {
        tag: "fr",
        header: &["détermination de l'itinéraire vers", "avec un maximum de"],
        timeout: &["délai d'attente de la demande dépassé"],
        footer: &["itinéraire déterminé"],
    },
    Locale {
        tag: "de",
        header: &["routenverfolgung zu", "über maximal"],
        timeout: &["zeitüberschreitung der anforderung"],
        footer: &["ablaufverfolgung beendet"],
    },
    Locale {
        tag: "es",
        header: &[
            "traza a la dirección",
            "sobre un máximo de",
            "sobre caminos de",
        ],
        timeout: &["tiempo de espera agotado"],
        footer: &["traza completa"],
    },
    Locale {
        tag: "pt-BR",
        header: &["rastreando a rota para", "com no máximo"],
        timeout: &["esgotado o tempo limite"],
        footer: &["rastreamento concluído"],
    },
    Locale {
        tag: "pt-PT",
        header: &[
            "rastreio da rota para",
            "a rastrear a rota para",
            "com um máximo de",
        ],
        timeout: &["pedido excedeu o tempo limite"],
        footer: &["rastreio concluído"],
    },
    Locale {
        tag: "ru",
        header: &["трассировка маршрута к", "с максимальным числом прыжков"],
        timeout: &["превышен интервал ожидания"],
        footer: &["трассировка завершена"],
    },
    Locale {
        tag: "uk",
        header: &["трасування маршруту до", "з максимальною кількістю"],
        timeout: &["перевищено інтервал очікування"],
        footer: &["трасування завершено"],
    },
    Locale {
        tag: "it",
        header: &[
            "instradamento verso",
            "su un massimo di",
            "punti di passaggio",
        ],
        timeout: &["richiesta scaduta"],
        footer: &["traccia completata", "rilevazione completata"],
    },
    Locale {
        tag: "pl",
        header: &[
            "śledzenie trasy do",
            "liczbę przeskoków",
            "liczba przeskoków",
            "liczbą przeskoków",
        ],
        timeout: &["upłynął limit czasu żądania"],
        footer: &["śledzenie zakończone"],
    },
    Locale {
        tag: "tr",
        header: &["yolu izleniyor", "izleniyor", "atlama üzerinden"],
        // Lower-casing drops the dot of `İstek`, hence the cut.
        timeout: &["stek zaman aşımına uğradı"],
        footer: &["zleme tamamlandı"],
    },
    Locale {
        tag: "nl",
        header: &[
            "route wordt getraceerd naar",
            "traceren van de route naar",
            "over maximaal",
        ],
        timeout: &["time-out bij opdracht", "time-out bij aanvraag"],
        footer: &["traceren voltooid", "trace voltooid"],
    },
    Locale {
        tag: "sv",
        header: &["spårar väg till", "över högst"],
        timeout: &["tidsgränsen för begäran överskreds"],
        footer: &["spårningen har slutförts", "spårning slutförd"],
    },
    Locale {
        tag: "cs",
        header: &["výpis trasy k", "s nejvýše"],
        timeout: &["vypršel časový limit žádosti"],
        footer: &["trasování bylo dokončeno", "trasování dokončeno"],
    },
    Locale {
        tag: "hu",
        header: &["útvonal követése", "legfeljebb"],
        timeout: &["kérés időtúllépés"],
        footer: &["nyomkövetés kész", "útvonal követése befejeződött"],
    },
    Locale {
        tag: "el",
        header: &["ανίχνευση διαδρομής προς", "με μέγιστο"],
        timeout: &["έληξε το χρονικό όριο"],
        footer: &["η ανίχνευση ολοκληρώθηκε"],
    },
];

/// Lower-cases a line and folds the variants Windows versions print: the
/// typographic apostrophe of recent French, no-break spaces, the combining
/// dot that lower-casing the Turkish `İ` leaves.
fn normalize(line: &str) -> String {
    line.chars()
        .flat_map(char::to_lowercase)
        .filter(|&c| c != '\u{307}')
        .map(|c| match c {
            '\u{2019}' | '\u{2018}' | '\u{b4}' | '`' => '\'',
            '\u{a0}' | '\u{202f}' | '\u{3000}' | '\t' => ' ',
            c => c,
        })
        .collect()
}

/// Which part of the output a phrase belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Header,
    Timeout,
    Footer,
}

/// The locale phrases found in a normalized line: `(locale index, part, is the
/// specific first header phrase)`.
fn phrase_hits(norm: &str) -> Vec<(usize, Part, bool)> {
    let mut hits = Vec::new();
    for (i, loc) in LOCALES.iter().enumerate() {
        for (j, p) in loc.header.iter().enumerate() {
            if norm.contains(p) {
                hits.push((i, Part::Header, j == 0));
            }
        }
        for p in loc.timeout {
            if norm.contains(p) {
                hits.push((i, Part::Timeout, false));
            }
        }
        for p in loc.footer {
            if norm.contains(p) {
                hits.push((i, Part::Footer, false));
            }
        }
    }
    hits
}

/// How many localized `tracert` sentences with non-ASCII letters appear in
/// `text`: the console decoder uses it to tell code pages apart.
pub(super) fn localized_phrase_count(text: &str) -> usize {
    let mut n = 0;
    for line in text.lines() {
        let norm = normalize(line);
        if norm.is_ascii() {
            continue;
        }
        for loc in LOCALES {
            n += loc
                .header
                .iter()
                .chain(loc.timeout)
                .chain(loc.footer)
                .filter(|p| !p.is_ascii() && norm.contains(*p))
                .count();
        }
    }
    n
}

/// One probe column of a hop line.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Col {
    Star,
    /// Milliseconds, and whether the tool printed an integer (it always does).
    Rtt(f64, bool),
}

/// `12`, `<1` (recorded as half the bound), tolerating decimals.
fn rtt_value(tok: &str) -> Option<(f64, bool)> {
    let (below, num) = match tok.strip_prefix('<') {
        Some(rest) => (true, rest),
        None => (false, tok),
    };
    let digits_ok = !num.is_empty()
        && num.len() <= 9
        && num.chars().all(|c| c.is_ascii_digit() || c == '.')
        && num.chars().next().is_some_and(|c| c.is_ascii_digit())
        && num.matches('.').count() <= 1;
    if !digits_ok {
        return None;
    }
    let v: f64 = num.parse().ok()?;
    let v = if below { v / 2.0 } else { v };
    Some((v, !num.contains('.')))
}

/// A time unit: `ms`, `毫秒`, `мс`, `밀리초`… short and made of letters.
fn is_unit(tok: &str) -> bool {
    let n = tok.chars().count();
    (1..=4).contains(&n) && tok.chars().all(char::is_alphabetic)
}

/// Reads the probe columns from the start of `toks`; returns them and how
/// many tokens they used.
fn read_columns(toks: &[&str]) -> (Vec<Col>, usize) {
    let mut cols = Vec::new();
    let mut i = 0;
    while let Some(&tok) = toks.get(i) {
        if cols.len() >= 16 {
            break;
        }
        if tok == "*" {
            cols.push(Col::Star);
            i += 1;
            continue;
        }
        if let Some((v, int)) = rtt_value(tok) {
            if toks.get(i + 1).is_some_and(|u| is_unit(u)) {
                cols.push(Col::Rtt(v, int));
                i += 2;
                continue;
            }
            break;
        }
        // A unit glued to the number: `12ms`, `<1毫秒`.
        let split = tok
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_digit() || c == '.' || c == '<'))
            .map(|(at, _)| at);
        if let Some(at) = split
            && let (Some(num), Some(unit)) = (tok.get(..at), tok.get(at..))
            && let Some((v, int)) = rtt_value(num)
            && is_unit(unit)
        {
            cols.push(Col::Rtt(v, int));
            i += 1;
            continue;
        }
        break;
    }
    (cols, i)
}

/// An address as tracert prints it, possibly with a zone id (`fe80::1%12`,
/// which [`IpAddr`] cannot hold, so the zone is dropped).
fn parse_addr(tok: &str) -> Option<IpAddr> {
    let tok = tok.trim_matches(|c| c == '[' || c == ']');
    let bare = tok.split('%').next().unwrap_or(tok);
    if let Ok(a) = bare.parse() {
        return Some(a);
    }
    let trimmed = bare.trim_end_matches(['.', ',', ':', ';', ')', '(']);
    trimmed.parse().ok()
}

/// The address at the start of a token followed by other text, as in the
/// Korean `8.8.8.8(으)로`.
fn leading_addr(tok: &str) -> Option<IpAddr> {
    if let Some(a) = parse_addr(tok) {
        return Some(a);
    }
    let end = tok
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_hexdigit() || c == '.' || c == ':' || c == '%'))
        .map_or(tok.len(), |(at, _)| at);
    tok.get(..end)
        .filter(|s| s.contains(['.', ':']))
        .and_then(parse_addr)
}

/// The replying host at the start of `rest`: `addr`, `name [addr]` or
/// `[addr]`; returns the address, the name and how many tokens were used
/// (plus any text glued after the closing bracket).
fn read_address<'a>(rest: &[&'a str]) -> Option<(IpAddr, Option<&'a str>, usize, &'a str)> {
    let first = *rest.first()?;
    if let Some(open) = first.find('[') {
        let inner = first.get(open + 1..)?;
        let close = inner.find(']').unwrap_or(inner.len());
        let addr = parse_addr(inner.get(..close)?)?;
        let name = first.get(..open).filter(|n| !n.is_empty());
        let after = inner.get(close + 1..).unwrap_or("");
        return Some((addr, name, 1, after));
    }
    if let Some(addr) = parse_addr(first) {
        return Some((addr, None, 1, ""));
    }
    let second = *rest.get(1)?;
    if second.starts_with('[') {
        let inner = second.get(1..)?;
        let close = inner.find(']').unwrap_or(inner.len());
        let addr = parse_addr(inner.get(..close)?)?;
        let after = inner.get(close + 1..).unwrap_or("");
        return Some((addr, Some(first), 2, after));
    }
    None
}

/// Maps the localized ICMP error a router reported to the mark Unix
/// traceroute would print. `None` when the message is not recognised.
fn error_mark(message: &str) -> Option<&'static str> {
    let norm = normalize(message);
    // Skip the localized "reports:" that precedes the message.
    let body = norm
        .split_once([':', '：'])
        .map_or(norm.as_str(), |(_, b)| b);
    let any = |words: &[&str]| words.iter().any(|w| body.contains(w));
    if any(&[
        "fragment",
        "df set",
        "фрагмент",
        "分段",
        "分片",
        "フラグメント",
        "조각",
    ]) {
        Some("!F")
    } else if any(&["prohibit", "administrativ", "запрещ", "禁止"]) {
        Some("!X")
    } else if any(&[
        "protoc",
        "protok",
        "протокол",
        "协议",
        "協定",
        "プロトコル",
        "프로토콜",
    ]) {
        Some("!P")
    } else if any(&["port", "порт", "端口", "連接埠", "ポート", "포트", "puerto"]) {
        // A port-unreachable reply is how Unix traceroute sees the target
        // answer: it prints no mark, and neither do we.
        Some("")
    } else if any(&[
        "host",
        "hôte",
        "хост",
        "узел",
        "вузол",
        "主机",
        "主機",
        "ホスト",
        "호스트",
        "ana bilgisayar",
        "gazdagép",
        "počítač",
        "värd",
        "κεντρικός",
    ]) {
        Some("!H")
    } else if any(&[
        "net",
        "réseau",
        "red de",
        "rede",
        "rete",
        "сеть",
        "мережа",
        "网络",
        "目标网",
        "目標網",
        "網路",
        "ネットワーク",
        "네트워크",
        "sieć",
        "síť",
        "hálózat",
        "hedef ağ",
        "no route",
        "δίκτυο",
    ]) {
        Some("!N")
    } else {
        None
    }
}

/// Whether `message`, found after a hop's address, is an ICMP error as
/// tracert reports it (`reports: Destination host unreachable.`, in any
/// known language) rather than the times and marks Unix traceroute prints
/// after an address.
fn is_reported_error(message: &str) -> bool {
    error_mark(message).is_some()
        && !message
            .split_whitespace()
            .any(|tok| tok.starts_with('!') || rtt_value(tok).is_some())
}

/// What one line turned out to be.
#[derive(Debug)]
enum Line {
    /// Not a hop line: header, footer, prompt, blank or foreign text.
    Other,
    Hop(Hop),
    /// Probe columns with replies but nothing after them: a cut-off line.
    Truncated,
    /// Clearly a hop line, but unreadable; the reason says what was expected.
    Bad(String),
}

/// Reads one hop line; `strict` is the detector's stricter idea of a hop
/// line (integer times, exactly three columns, something after them).
fn read_hop_line(line: &str, strict: bool) -> Line {
    let toks: Vec<&str> = line.split_whitespace().collect();
    let Some(first) = toks.first() else {
        return Line::Other;
    };
    if !first.chars().all(|c| c.is_ascii_digit()) {
        return Line::Other;
    }
    let rest = toks.get(1..).unwrap_or(&[]);
    let (cols, used) = read_columns(rest);
    let after = rest.get(used..).unwrap_or(&[]);
    let ttl = first.parse::<u8>().ok().filter(|&t| t > 0);
    let Some(ttl) = ttl else {
        if cols.is_empty() {
            return Line::Other;
        }
        return Line::Bad(format!(
            "the hop number {first} is outside 1-255; expected the TTL of a hop"
        ));
    };
    if strict && (cols.len() != 3 || cols.iter().any(|c| matches!(c, Col::Rtt(_, false)))) {
        return Line::Other;
    }
    let answered = cols.iter().any(|c| matches!(c, Col::Rtt(..)));
    let mut hop = Hop::new(ttl);
    hop.sent = u16::try_from(cols.len()).unwrap_or(u16::MAX);
    for c in &cols {
        if let Col::Rtt(v, _) = c {
            hop.rtt_ms.push(*v);
            hop.received += 1;
        }
    }
    if let Some((addr, name, n, glued)) = read_address(after) {
        hop.push_addr(addr);
        if let Some(name) = name {
            hop.push_name(name);
        }
        let mut message: Vec<&str> = Vec::new();
        if !glued.is_empty() {
            message.push(glued);
        }
        message.extend(after.get(n..).unwrap_or(&[]));
        let message = message.join(" ");
        if strict && !message.is_empty() && !is_reported_error(&message) {
            // BSD and macOS traceroute print their header to stderr, so a
            // headerless ` 2  * * * 198.51.100.1  12.345 ms` (four probes,
            // three lost) reaches the detector; tracert puts only a router's
            // reported error after the address, never round-trip times.
            return Line::Other;
        }
        if !message.is_empty() || cols.is_empty() {
            // The router answered with an ICMP error instead of a time:
            // that probe was sent and answered, without a time.
            hop.sent += 1;
            hop.received += 1;
            if let Some(mark) = error_mark(&message).filter(|m| !m.is_empty()) {
                hop.annotations.push(mark.to_owned());
            }
        }
        return Line::Hop(hop);
    }
    if after.is_empty() {
        return match (cols.is_empty(), answered, strict) {
            (true, _, _) | (false, _, true) => Line::Other,
            (false, false, false) => Line::Hop(hop),
            (false, true, false) => Line::Truncated,
        };
    }
    let message = after.join(" ");
    if cols.is_empty() {
        // `  2  General failure.` and the like: a hop only when the text is
        // one tracert prints.
        let norm = normalize(&message);
        let is_timeout = phrase_hits(&norm).iter().any(|h| h.1 == Part::Timeout);
        return match error_mark(&message) {
            Some(mark) if !strict => {
                if !mark.is_empty() {
                    hop.annotations.push(mark.to_owned());
                }
                Line::Hop(hop)
            }
            _ if is_timeout && !strict => Line::Hop(hop),
            _ => Line::Other,
        };
    }
    if !answered {
        // All probes timed out; the text is the (localized) timeout message.
        return Line::Hop(hop);
    }
    if strict {
        return Line::Other;
    }
    Line::Bad(format!(
        "expected the replying address (`1.2.3.4` or `name [1.2.3.4]`) after the round-trip \
         times, found {:?}",
        shorten(&message)
    ))
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// The lines of `text` with their 1-based numbers, accepting `\n`, `\r\n`,
/// `\r\r\n` and lone `\r`.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n').enumerate().flat_map(|(i, l)| {
        l.trim_end_matches('\r')
            .split('\r')
            .map(move |seg| (i + 1, seg))
    })
}

/// A shell prompt, the echoed command or the console banner: never a header.
fn is_prompt(line: &str) -> bool {
    let t = line.trim();
    let lower = t.to_ascii_lowercase();
    lower.contains("tracert")
        || lower.starts_with("ps ")
        || lower.contains("microsoft")
        || t.starts_with(['$', '#', '>', '%'])
        || (t.len() > 2 && t.get(1..3) == Some(":\\") && t.contains('>'))
}

pub(super) fn looks_like(text: &str) -> bool {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut header = false;
    let mut hop_lines = 0usize;
    for (_, line) in numbered_lines(text) {
        let t = line.trim_start();
        if t.starts_with("traceroute to")
            || t.starts_with("traceroute6 to")
            || t.starts_with("HOST:")
            || t.contains("[LOCALHOST]")
        {
            return false;
        }
        if !header {
            let norm = normalize(line);
            header = phrase_hits(&norm)
                .iter()
                .any(|&(_, part, specific)| part == Part::Header && specific);
        }
        if matches!(read_hop_line(line, true), Line::Hop(_)) {
            hop_lines += 1;
        }
    }
    header || hop_lines > 0
}

pub(super) fn parse(text: &str) -> Result<ParsedTrace, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<(usize, &str)> = numbered_lines(text).collect();
    let last_content = lines.iter().rposition(|(_, l)| !l.trim().is_empty());

    let mut hops: BTreeMap<u8, Hop> = BTreeMap::new();
    let mut first_hop: Option<usize> = None;
    let mut tally = vec![0usize; LOCALES.len()];
    let mut header_lines: Vec<usize> = Vec::new();
    let mut header_phrase = false;

    for (idx, &(number, line)) in lines.iter().enumerate() {
        let norm = normalize(line);
        let hits = phrase_hits(&norm);
        for &(loc, part, specific) in &hits {
            if let Some(t) = tally.get_mut(loc) {
                *t += 1;
            }
            if part == Part::Header && first_hop.is_none() && !is_prompt(line) {
                header_lines.push(idx);
                header_phrase |= specific;
            }
        }
        match read_hop_line(line, false) {
            Line::Other => {}
            Line::Hop(hop) => {
                first_hop.get_or_insert(idx);
                merge(&mut hops, hop);
            }
            Line::Truncated if Some(idx) == last_content => {}
            Line::Truncated => {
                return Err(Error::MalformedTrace {
                    format: TraceFormat::WindowsTracert,
                    line: number,
                    reason: "the hop has round-trip times but no replying address; expected \
                             `1.2.3.4` or `name [1.2.3.4]` after the times"
                        .to_owned(),
                });
            }
            Line::Bad(reason) => {
                return Err(Error::MalformedTrace {
                    format: TraceFormat::WindowsTracert,
                    line: number,
                    reason,
                });
            }
        }
    }

    if hops.is_empty() && !header_phrase {
        return Err(Error::UnrecognizedTrace {
            expected: super::EXPECTED_FORMATS,
            detail: "the text has neither a tracert header nor tracert hop lines".to_owned(),
        });
    }

    header_lines.dedup();
    let end = first_hop.unwrap_or(lines.len());
    let header_lines = if header_lines.is_empty() {
        fallback_header(&lines, end)
    } else {
        header_block(&lines, &header_lines, end)
    };
    let header: Vec<&str> = header_lines
        .iter()
        .filter_map(|&i| lines.get(i).map(|&(_, l)| l))
        .collect();
    let (target, target_addr, max_hops) = read_header(&header);

    let best = tally
        .iter()
        .enumerate()
        .filter(|&(_, &n)| n > 0)
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
        .and_then(|(i, _)| LOCALES.get(i))
        .map(|l| l.tag.to_owned());

    Ok(ParsedTrace {
        format: TraceFormat::WindowsTracert,
        target,
        target_addr,
        max_hops,
        locale: best,
        hops: hops.into_values().collect(),
    })
}

/// The header lines around the ones with a known sentence: the other line of
/// a two-line header need not contain one (`到 host [addr] 的路由:`).
fn header_block(lines: &[(usize, &str)], hits: &[usize], end: usize) -> Vec<usize> {
    let usable = |i: usize| {
        i < end
            && lines
                .get(i)
                .is_some_and(|&(_, l)| !l.trim().is_empty() && !is_prompt(l))
    };
    let mut out: Vec<usize> = Vec::new();
    for &h in hits {
        let mut lo = h;
        while lo > 0 && h - lo < 2 && usable(lo - 1) {
            lo -= 1;
        }
        let mut hi = h;
        while hi - h < 2 && usable(hi + 1) {
            hi += 1;
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Without a known header sentence, the header is the block of text lines
/// just above the first hop (a language the table does not know).
fn fallback_header(lines: &[(usize, &str)], first_hop: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = first_hop;
    let mut seen_text = false;
    while i > 0 {
        i -= 1;
        let Some(&(_, line)) = lines.get(i) else {
            break;
        };
        if line.trim().is_empty() {
            if seen_text {
                break;
            }
            continue;
        }
        if is_prompt(line) || out.len() >= 3 {
            break;
        }
        seen_text = true;
        out.push(i);
    }
    out.reverse();
    out
}

/// Target name, target address and hop limit from the header lines.
fn read_header(header: &[&str]) -> (Option<String>, Option<IpAddr>, Option<u8>) {
    let mut target = None;
    let mut target_addr = None;
    let mut max_hops = None;
    // `name [addr]`, the two-line header of a hostname target.
    for line in header {
        let toks: Vec<&str> = line.split_whitespace().collect();
        for (i, tok) in toks.iter().enumerate() {
            if target_addr.is_some() {
                break;
            }
            let Some(open) = tok.find('[') else { continue };
            let inner = tok.get(open + 1..).unwrap_or("");
            let close = inner.find(']').unwrap_or(inner.len());
            if let Some(addr) = inner.get(..close).and_then(parse_addr) {
                target_addr = Some(addr);
                let glued = tok.get(..open).filter(|n| !n.is_empty());
                let before = if i > 0 {
                    toks.get(i - 1).copied()
                } else {
                    None
                };
                target = glued.or(before).map(str::to_owned);
            }
        }
    }
    // A bare address, the one-line header of an address target.
    if target_addr.is_none() {
        'outer: for line in header {
            for tok in line.split_whitespace() {
                if let Some(addr) = leading_addr(tok) {
                    target_addr = Some(addr);
                    target = Some(addr.to_string());
                    break 'outer;
                }
            }
        }
    }
    for line in header {
        for tok in line.split_whitespace() {
            if tok.contains('[') || leading_addr(tok).is_some() {
                continue;
            }
            let tok = tok.trim_start_matches(['(', '"']);
            let end = tok
                .char_indices()
                .find(|&(_, c)| !c.is_ascii_digit())
                .map_or(tok.len(), |(at, _)| at);
            let (digits, tail) = (tok.get(..end).unwrap_or(""), tok.get(end..).unwrap_or(""));
            let tail_ok = tail
                .trim_start_matches([':', '.', ',', ';', ')', '\u{a0}'])
                .is_empty()
                || !tail.starts_with(|c: char| c.is_ascii() && c != ':');
            if !digits.is_empty()
                && tail_ok
                && let Ok(n) = digits.parse::<u8>()
                && n > 0
            {
                max_hops = Some(n);
                break;
            }
        }
        if max_hops.is_some() {
            break;
        }
    }
    (target, target_addr, max_hops)
}

/// Adds a hop, folding a repeated TTL into the earlier entry.
fn merge(hops: &mut BTreeMap<u8, Hop>, hop: Hop) {
    match hops.get_mut(&hop.ttl) {
        None => {
            hops.insert(hop.ttl, hop);
        }
        Some(old) => {
            for a in hop.addrs {
                old.push_addr(a);
            }
            for n in &hop.names {
                old.push_name(n);
            }
            old.rtt_ms.extend(hop.rtt_ms);
            old.sent = old.sent.saturating_add(hop.sent);
            old.received = old.received.saturating_add(hop.received);
            for m in hop.annotations {
                if !old.annotations.contains(&m) {
                    old.annotations.push(m);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_accept_localized_and_glued_units() {
        let toks = ["<1", "毫秒", "2", "ms", "*", "10.0.0.1"];
        let (cols, used) = read_columns(&toks);
        assert_eq!(used, 5);
        assert_eq!(
            cols,
            vec![Col::Rtt(0.5, true), Col::Rtt(2.0, true), Col::Star]
        );
        let (cols, used) = read_columns(&["12ms", "<1мс", "x"]);
        assert_eq!(used, 2);
        assert_eq!(cols, vec![Col::Rtt(12.0, true), Col::Rtt(0.5, true)]);
    }

    #[test]
    fn error_marks_by_language() {
        assert_eq!(
            error_mark("reports: Destination host unreachable."),
            Some("!H")
        );
        assert_eq!(error_mark("报告: 无法访问目标主机。"), Some("!H"));
        assert_eq!(
            error_mark("reports: Destination net unreachable."),
            Some("!N")
        );
        assert_eq!(
            error_mark("reports: Destination protocol unreachable."),
            Some("!P")
        );
        assert_eq!(error_mark("meldet: Zielnetz nicht erreichbar."), Some("!N"));
        assert_eq!(error_mark("something else"), None);
    }

    #[test]
    fn header_numbers_and_targets() {
        let (t, a, m) = read_header(&[
            "최대 30홉 이상의",
            "example.kr [192.0.2.4](으)로 가는 경로 추적:",
        ]);
        assert_eq!(t.as_deref(), Some("example.kr"));
        assert_eq!(a, "192.0.2.4".parse().ok());
        assert_eq!(m, Some(30));
        let (t, a, m) = read_header(&["최대 20홉 이상의 2001:db8::9(으)로 가는 경로 추적"]);
        assert_eq!(t.as_deref(), Some("2001:db8::9"));
        assert_eq!(a, "2001:db8::9".parse().ok());
        assert_eq!(m, Some(20));
    }

    #[test]
    fn strict_shape_rejects_unix_lines() {
        for l in [
            " 1  10.0.1.1  0.438 ms  0.369 ms  0.351 ms",
            " 4  *  *  63.375 ms !H",
            " 3  * * *",
            " 1  *  10.0.1.1  0.009 ms  0.005 ms",
            // BSD traceroute -q 4, three probes lost: times after the address.
            " 2  * * * 198.51.100.1  12.345 ms",
            " 2  * * * 198.51.100.1  12.345 ms !H",
            " 2  * * * 198.51.100.1  12.345 ms  198.51.100.9  13.1 ms",
        ] {
            assert!(!matches!(read_hop_line(l, true), Line::Hop(_)), "{l}");
        }
        assert!(matches!(
            read_hop_line("  1    <1 ms     1 ms     1 ms  10.0.2.1", true),
            Line::Hop(_)
        ));
        assert!(matches!(
            read_hop_line(
                "  3     2 ms     *        *     10.0.2.1  reports: Destination host unreachable.",
                true
            ),
            Line::Hop(_)
        ));
    }
}
