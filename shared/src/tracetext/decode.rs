//! Console bytes to text.
//!
//! `tracert` writes in the console's code page: the OEM page of the display
//! language (GBK for zh-CN, CP850 for French or German, CP866 for Russian…)
//! when piped or redirected by `cmd.exe`, UTF-16LE when PowerShell 5
//! redirects it, UTF-8 when a newer shell or a user converted it. Nothing in
//! the bytes names the code page, so after the unambiguous cases (byte order
//! marks, NUL patterns, valid UTF-8) every candidate is decoded and the most
//! plausible text wins: known `tracert` sentences first, then whether the
//! letters form words of one script.

use std::borrow::Cow;

use encoding_rs::{
    BIG5, EUC_KR, Encoding, GBK, IBM866, SHIFT_JIS, UTF_16BE, UTF_16LE, WINDOWS_1250, WINDOWS_1251,
    WINDOWS_1252, WINDOWS_1254,
};

/// Text decoded from console bytes, with the encoding that was used.
#[derive(Debug, Clone)]
pub struct DecodedText<'a> {
    /// The decoded text.
    pub text: Cow<'a, str>,
    /// The encoding recognised: `UTF-8`, `UTF-16LE`, `UTF-16BE`, `GBK`,
    /// `Big5`, `Shift_JIS`, `EUC-KR`, `windows-1252`, `IBM850`, `IBM852`,
    /// `IBM857`, `IBM866`, `windows-1251`…
    pub encoding: &'static str,
    /// True when some bytes were not valid in that encoding and were
    /// replaced with U+FFFD.
    pub lossy: bool,
}

/// A code page to try.
#[derive(Clone, Copy)]
enum Candidate {
    Rs(&'static Encoding),
    /// An OEM single-byte page that `encoding_rs` lacks: name and the
    /// characters of bytes 0x80..=0xFF.
    Oem(&'static str, &'static [char; 128]),
}

impl Candidate {
    fn name(self) -> &'static str {
        match self {
            Self::Rs(e) => e.name(),
            Self::Oem(name, _) => name,
        }
    }

    fn decode(self, raw: &[u8]) -> (String, bool) {
        match self {
            Self::Rs(e) => {
                let (text, errors) = e.decode_without_bom_handling(raw);
                (text.into_owned(), errors)
            }
            Self::Oem(_, table) => (decode_oem(raw, table), false),
        }
    }
}

/// Tried in this order; on equal scores the earlier wins, so the most common
/// consoles come first.
const CANDIDATES: &[Candidate] = &[
    Candidate::Rs(GBK),
    Candidate::Oem("IBM850", &CP850_HIGH),
    Candidate::Rs(WINDOWS_1252),
    Candidate::Rs(IBM866),
    Candidate::Rs(SHIFT_JIS),
    Candidate::Rs(BIG5),
    Candidate::Rs(EUC_KR),
    Candidate::Oem("IBM852", &CP852_HIGH),
    Candidate::Oem("IBM857", &CP857_HIGH),
    Candidate::Rs(WINDOWS_1251),
    Candidate::Rs(WINDOWS_1250),
    Candidate::Rs(WINDOWS_1254),
];

/// Decodes bytes captured from a console, guessing the code page.
pub fn decode_console_bytes(raw: &[u8]) -> DecodedText<'_> {
    if let Some(rest) = raw.strip_prefix(b"\xef\xbb\xbf") {
        return utf8(rest);
    }
    if let Some(rest) = raw.strip_prefix(b"\xff\xfe") {
        return with(UTF_16LE, rest);
    }
    if let Some(rest) = raw.strip_prefix(b"\xfe\xff") {
        return with(UTF_16BE, rest);
    }
    if let Some(enc) = utf16_by_nuls(raw) {
        return with(enc, raw);
    }
    if std::str::from_utf8(raw).is_ok() || raw.is_ascii() {
        return utf8(raw);
    }
    let mut best: Option<(i64, Candidate, String, bool)> = None;
    for &cand in CANDIDATES {
        let (text, errors) = cand.decode(raw);
        let score = plausibility(&text, cand);
        if best.as_ref().is_none_or(|(s, ..)| score > *s) {
            best = Some((score, cand, text, errors));
        }
    }
    // UTF-8 with a few broken bytes (a cut multi-byte character) still beats
    // a legacy page when it reads better.
    let lossy_utf8 = String::from_utf8_lossy(raw);
    let utf8_score = plausibility(&lossy_utf8, Candidate::Rs(encoding_rs::UTF_8));
    match best {
        Some((score, cand, text, errors)) if score >= utf8_score => DecodedText {
            text: Cow::Owned(text),
            encoding: cand.name(),
            lossy: errors,
        },
        _ => DecodedText {
            text: lossy_utf8,
            encoding: "UTF-8",
            lossy: true,
        },
    }
}

fn utf8(raw: &[u8]) -> DecodedText<'_> {
    let text = String::from_utf8_lossy(raw);
    let lossy = matches!(text, Cow::Owned(_));
    DecodedText {
        text,
        encoding: "UTF-8",
        lossy,
    }
}

fn with(enc: &'static Encoding, raw: &[u8]) -> DecodedText<'static> {
    let (text, errors) = enc.decode_without_bom_handling(raw);
    DecodedText {
        text: Cow::Owned(text.into_owned()),
        encoding: enc.name(),
        lossy: errors,
    }
}

/// UTF-16 without a byte order mark: `tracert` output is mostly ASCII
/// (digits, spaces, `ms`), so one byte of most code units is NUL, always on
/// the same side.
fn utf16_by_nuls(raw: &[u8]) -> Option<&'static Encoding> {
    if raw.len() < 4 {
        return None;
    }
    let (mut even, mut odd) = (0usize, 0usize);
    for (i, &b) in raw.iter().enumerate() {
        if b == 0 {
            if i % 2 == 0 {
                even += 1;
            } else {
                odd += 1;
            }
        }
    }
    let units = raw.len() / 2;
    if odd * 10 >= units * 3 && even * 10 <= odd {
        Some(UTF_16LE)
    } else if even * 10 >= units * 3 && odd * 10 <= even {
        Some(UTF_16BE)
    } else {
        None
    }
}

fn decode_oem(raw: &[u8], table: &[char; 128]) -> String {
    raw.iter()
        .map(|&b| {
            if b < 0x80 {
                char::from(b)
            } else {
                table
                    .get(usize::from(b - 0x80))
                    .copied()
                    .unwrap_or('\u{fffd}')
            }
        })
        .collect()
}

/// Script classes of letters, for the word test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    Ascii,
    Latin,
    Cyrillic,
    Greek,
    Cjk,
    Other,
}

fn script(c: char) -> Script {
    match c {
        'a'..='z' | 'A'..='Z' => Script::Ascii,
        '\u{c0}'..='\u{24f}' if c != '\u{d7}' && c != '\u{f7}' => Script::Latin,
        '\u{400}'..='\u{4ff}' => Script::Cyrillic,
        '\u{370}'..='\u{3ff}' => Script::Greek,
        '\u{3040}'..='\u{30ff}' | '\u{4e00}'..='\u{9fff}' | '\u{ac00}'..='\u{d7a3}' => Script::Cjk,
        _ => Script::Other,
    }
}

/// How much a CJK character looks like ordinary text in the candidate's
/// language rather than a rare character produced by decoding bytes with
/// the wrong page.
fn cjk_weight(c: char, cand: Candidate) -> i64 {
    let Candidate::Rs(enc) = cand else {
        return -4;
    };
    let kana = ('\u{3040}'..='\u{30ff}').contains(&c);
    let hangul = ('\u{ac00}'..='\u{d7a3}').contains(&c);
    let mut buf = [0u8; 4];
    let (bytes, _, unmappable) = enc.encode(c.encode_utf8(&mut buf));
    if unmappable {
        return 0;
    }
    let lead = bytes.first().copied().unwrap_or(0);
    let trail = bytes.get(1).copied().unwrap_or(0);
    let common = if enc == GBK {
        // GB2312 level 1, the 3,755 most frequent hanzi.
        (0xb0..=0xd7).contains(&lead) && trail >= 0xa1
    } else if enc == BIG5 {
        // The frequently used hanzi block.
        (0xa4..=0xc6).contains(&lead)
    } else if enc == SHIFT_JIS {
        // Kana and JIS level 1 kanji.
        kana || (0x88..=0x98).contains(&lead)
    } else if enc == EUC_KR {
        hangul
    } else {
        // UTF-8 fallback: any CJK character is as likely as any other.
        true
    };
    if common { 3 } else { -1 }
}

/// Higher is more like real console text.
fn plausibility(text: &str, cand: Candidate) -> i64 {
    #[allow(clippy::cast_possible_wrap)] // a count of phrases in a bounded input
    let phrases = super::tracert::localized_phrase_count(text) as i64;
    let mut score = phrases * 200;
    let mut word: Vec<char> = Vec::new();
    for c in text.chars().chain(std::iter::once(' ')) {
        if c.is_alphabetic() {
            word.push(c);
            continue;
        }
        score += word_score(&word, cand);
        word.clear();
        score += match c {
            '\u{0}'..='\u{7f}' | '\u{a0}' | '\u{2019}' | '\u{ab}' | '\u{bb}' => 0,
            '\u{fffd}' => -30,
            '\u{80}'..='\u{9f}' => -20,
            '\u{3000}'..='\u{303f}' | '\u{ff01}'..='\u{ff60}' => 1,
            // Box drawing: what a wrong OEM page makes of letters.
            '\u{2500}'..='\u{25ff}' => -6,
            // Halfwidth katakana, symbols: likewise, from other pages.
            _ => -3,
        };
    }
    score
}

fn word_score(word: &[char], cand: Candidate) -> i64 {
    if word.is_empty() {
        return 0;
    }
    let has = |s: Script| word.iter().any(|&c| script(c) == s);
    #[allow(clippy::cast_possible_wrap)] // a word's length
    let non_ascii = word.iter().filter(|c| !c.is_ascii()).count() as i64;
    if non_ascii == 0 {
        return 0;
    }
    let kinds = [
        Script::Ascii,
        Script::Latin,
        Script::Cyrillic,
        Script::Greek,
        Script::Cjk,
        Script::Other,
    ]
    .iter()
    .filter(|&&s| has(s))
    .count();
    let latin_only = kinds <= 2
        && !has(Script::Cyrillic)
        && !has(Script::Greek)
        && !has(Script::Cjk)
        && !has(Script::Other);
    if latin_only {
        // Accented letters live inside words with plain letters; a run of
        // nothing but accented letters is mojibake (`ÇëÇó`), unless short.
        return if has(Script::Ascii) || word.len() == 1 {
            3 * non_ascii
        } else {
            -2 * non_ascii
        };
    }
    if kinds == 1 && (has(Script::Cyrillic) || has(Script::Greek)) {
        return 3 * non_ascii;
    }
    if kinds == 1 && has(Script::Cjk) {
        return word.iter().map(|&c| cjk_weight(c, cand)).sum();
    }
    -4 * non_ascii
}

const CP850_HIGH: [char; 128] = [
    '\u{00C7}', '\u{00FC}', '\u{00E9}', '\u{00E2}', '\u{00E4}', '\u{00E0}', '\u{00E5}', '\u{00E7}',
    '\u{00EA}', '\u{00EB}', '\u{00E8}', '\u{00EF}', '\u{00EE}', '\u{00EC}', '\u{00C4}', '\u{00C5}',
    '\u{00C9}', '\u{00E6}', '\u{00C6}', '\u{00F4}', '\u{00F6}', '\u{00F2}', '\u{00FB}', '\u{00F9}',
    '\u{00FF}', '\u{00D6}', '\u{00DC}', '\u{00F8}', '\u{00A3}', '\u{00D8}', '\u{00D7}', '\u{0192}',
    '\u{00E1}', '\u{00ED}', '\u{00F3}', '\u{00FA}', '\u{00F1}', '\u{00D1}', '\u{00AA}', '\u{00BA}',
    '\u{00BF}', '\u{00AE}', '\u{00AC}', '\u{00BD}', '\u{00BC}', '\u{00A1}', '\u{00AB}', '\u{00BB}',
    '\u{2591}', '\u{2592}', '\u{2593}', '\u{2502}', '\u{2524}', '\u{00C1}', '\u{00C2}', '\u{00C0}',
    '\u{00A9}', '\u{2563}', '\u{2551}', '\u{2557}', '\u{255D}', '\u{00A2}', '\u{00A5}', '\u{2510}',
    '\u{2514}', '\u{2534}', '\u{252C}', '\u{251C}', '\u{2500}', '\u{253C}', '\u{00E3}', '\u{00C3}',
    '\u{255A}', '\u{2554}', '\u{2569}', '\u{2566}', '\u{2560}', '\u{2550}', '\u{256C}', '\u{00A4}',
    '\u{00F0}', '\u{00D0}', '\u{00CA}', '\u{00CB}', '\u{00C8}', '\u{0131}', '\u{00CD}', '\u{00CE}',
    '\u{00CF}', '\u{2518}', '\u{250C}', '\u{2588}', '\u{2584}', '\u{00A6}', '\u{00CC}', '\u{2580}',
    '\u{00D3}', '\u{00DF}', '\u{00D4}', '\u{00D2}', '\u{00F5}', '\u{00D5}', '\u{00B5}', '\u{00FE}',
    '\u{00DE}', '\u{00DA}', '\u{00DB}', '\u{00D9}', '\u{00FD}', '\u{00DD}', '\u{00AF}', '\u{00B4}',
    '\u{00AD}', '\u{00B1}', '\u{2017}', '\u{00BE}', '\u{00B6}', '\u{00A7}', '\u{00F7}', '\u{00B8}',
    '\u{00B0}', '\u{00A8}', '\u{00B7}', '\u{00B9}', '\u{00B3}', '\u{00B2}', '\u{25A0}', '\u{00A0}',
];
const CP852_HIGH: [char; 128] = [
    '\u{00C7}', '\u{00FC}', '\u{00E9}', '\u{00E2}', '\u{00E4}', '\u{016F}', '\u{0107}', '\u{00E7}',
    '\u{0142}', '\u{00EB}', '\u{0150}', '\u{0151}', '\u{00EE}', '\u{0179}', '\u{00C4}', '\u{0106}',
    '\u{00C9}', '\u{0139}', '\u{013A}', '\u{00F4}', '\u{00F6}', '\u{013D}', '\u{013E}', '\u{015A}',
    '\u{015B}', '\u{00D6}', '\u{00DC}', '\u{0164}', '\u{0165}', '\u{0141}', '\u{00D7}', '\u{010D}',
    '\u{00E1}', '\u{00ED}', '\u{00F3}', '\u{00FA}', '\u{0104}', '\u{0105}', '\u{017D}', '\u{017E}',
    '\u{0118}', '\u{0119}', '\u{00AC}', '\u{017A}', '\u{010C}', '\u{015F}', '\u{00AB}', '\u{00BB}',
    '\u{2591}', '\u{2592}', '\u{2593}', '\u{2502}', '\u{2524}', '\u{00C1}', '\u{00C2}', '\u{011A}',
    '\u{015E}', '\u{2563}', '\u{2551}', '\u{2557}', '\u{255D}', '\u{017B}', '\u{017C}', '\u{2510}',
    '\u{2514}', '\u{2534}', '\u{252C}', '\u{251C}', '\u{2500}', '\u{253C}', '\u{0102}', '\u{0103}',
    '\u{255A}', '\u{2554}', '\u{2569}', '\u{2566}', '\u{2560}', '\u{2550}', '\u{256C}', '\u{00A4}',
    '\u{0111}', '\u{0110}', '\u{010E}', '\u{00CB}', '\u{010F}', '\u{0147}', '\u{00CD}', '\u{00CE}',
    '\u{011B}', '\u{2518}', '\u{250C}', '\u{2588}', '\u{2584}', '\u{0162}', '\u{016E}', '\u{2580}',
    '\u{00D3}', '\u{00DF}', '\u{00D4}', '\u{0143}', '\u{0144}', '\u{0148}', '\u{0160}', '\u{0161}',
    '\u{0154}', '\u{00DA}', '\u{0155}', '\u{0170}', '\u{00FD}', '\u{00DD}', '\u{0163}', '\u{00B4}',
    '\u{00AD}', '\u{02DD}', '\u{02DB}', '\u{02C7}', '\u{02D8}', '\u{00A7}', '\u{00F7}', '\u{00B8}',
    '\u{00B0}', '\u{00A8}', '\u{02D9}', '\u{0171}', '\u{0158}', '\u{0159}', '\u{25A0}', '\u{00A0}',
];
const CP857_HIGH: [char; 128] = [
    '\u{00C7}', '\u{00FC}', '\u{00E9}', '\u{00E2}', '\u{00E4}', '\u{00E0}', '\u{00E5}', '\u{00E7}',
    '\u{00EA}', '\u{00EB}', '\u{00E8}', '\u{00EF}', '\u{00EE}', '\u{0131}', '\u{00C4}', '\u{00C5}',
    '\u{00C9}', '\u{00E6}', '\u{00C6}', '\u{00F4}', '\u{00F6}', '\u{00F2}', '\u{00FB}', '\u{00F9}',
    '\u{0130}', '\u{00D6}', '\u{00DC}', '\u{00F8}', '\u{00A3}', '\u{00D8}', '\u{015E}', '\u{015F}',
    '\u{00E1}', '\u{00ED}', '\u{00F3}', '\u{00FA}', '\u{00F1}', '\u{00D1}', '\u{011E}', '\u{011F}',
    '\u{00BF}', '\u{00AE}', '\u{00AC}', '\u{00BD}', '\u{00BC}', '\u{00A1}', '\u{00AB}', '\u{00BB}',
    '\u{2591}', '\u{2592}', '\u{2593}', '\u{2502}', '\u{2524}', '\u{00C1}', '\u{00C2}', '\u{00C0}',
    '\u{00A9}', '\u{2563}', '\u{2551}', '\u{2557}', '\u{255D}', '\u{00A2}', '\u{00A5}', '\u{2510}',
    '\u{2514}', '\u{2534}', '\u{252C}', '\u{251C}', '\u{2500}', '\u{253C}', '\u{00E3}', '\u{00C3}',
    '\u{255A}', '\u{2554}', '\u{2569}', '\u{2566}', '\u{2560}', '\u{2550}', '\u{256C}', '\u{00A4}',
    '\u{00BA}', '\u{00AA}', '\u{00CA}', '\u{00CB}', '\u{00C8}', '\u{20AC}', '\u{00CD}', '\u{00CE}',
    '\u{00CF}', '\u{2518}', '\u{250C}', '\u{2588}', '\u{2584}', '\u{00A6}', '\u{00CC}', '\u{2580}',
    '\u{00D3}', '\u{00DF}', '\u{00D4}', '\u{00D2}', '\u{00F5}', '\u{00D5}', '\u{00B5}', '\u{00D7}',
    '\u{00D7}', '\u{00DA}', '\u{00DB}', '\u{00D9}', '\u{00EC}', '\u{00FF}', '\u{00AF}', '\u{00B4}',
    '\u{00AD}', '\u{00B1}', '\u{FFFD}', '\u{00BE}', '\u{00B6}', '\u{00A7}', '\u{00F7}', '\u{00B8}',
    '\u{00B0}', '\u{00A8}', '\u{00B7}', '\u{00B9}', '\u{00B3}', '\u{00B2}', '\u{25A0}', '\u{00A0}',
];
