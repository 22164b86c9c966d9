//! Console bytes in the code pages Windows consoles use, decoded and parsed
//! back to the same hops as the UTF-8 fixture.

use std::net::IpAddr;

use encoding_rs::{
    BIG5, EUC_KR, Encoding, GBK, IBM866, SHIFT_JIS, WINDOWS_1250, WINDOWS_1252, WINDOWS_1254,
};
use lineprobe_shared::{decode_console_bytes, parse_trace_bytes, parse_trace_text};

/// Code page 850, bytes 0x80..=0xFF, typed out here independently of the
/// decoder's table.
const CP850: &str = "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜø£Ø×ƒáíóúñÑªº¿®¬½¼¡«»░▒▓│┤ÁÂÀ©╣║╗╝¢¥┐└┴┬├─┼ãÃ╚╔╩╦╠═╬¤ðÐÊËÈıÍÎÏ┘┌█▄¦Ì▀ÓßÔÒõÕµþÞÚÛÙýÝ¯´\u{ad}±‗¾¶§÷¸°¨·¹³²■\u{a0}";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/tracert/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// What cmd.exe does with characters the OEM page lacks: a best fit.
fn best_fit(text: &str) -> String {
    text.replace(['\u{2019}', '\u{2018}'], "'")
}

fn encode_cp850(text: &str) -> Vec<u8> {
    let table: Vec<char> = CP850.chars().collect();
    assert_eq!(table.len(), 128);
    text.chars()
        .map(|c| {
            if c.is_ascii() {
                u8::try_from(u32::from(c)).expect("ascii")
            } else {
                let i = table
                    .iter()
                    .position(|&t| t == c)
                    .unwrap_or_else(|| panic!("{c:?} is not in CP850"));
                0x80 + u8::try_from(i).expect("index below 128")
            }
        })
        .collect()
}

fn encode(enc: &'static Encoding, text: &str) -> Vec<u8> {
    let (bytes, _, unmappable) = enc.encode(text);
    assert!(!unmappable, "{} cannot encode the fixture", enc.name());
    bytes.into_owned()
}

fn utf16le(text: &str, bom: bool) -> Vec<u8> {
    let mut out = if bom { vec![0xff, 0xfe] } else { Vec::new() };
    for u in text.encode_utf16() {
        out.extend(u.to_le_bytes());
    }
    out
}

fn utf16be_bom(text: &str) -> Vec<u8> {
    let mut out = vec![0xfe, 0xff];
    for u in text.encode_utf16() {
        out.extend(u.to_be_bytes());
    }
    out
}

fn hops(text: &str) -> Vec<(u8, Vec<IpAddr>)> {
    parse_trace_text(text)
        .expect("fixture parses")
        .hops
        .into_iter()
        .map(|h| (h.ttl, h.addrs))
        .collect()
}

/// Encodes the fixture, decodes it, checks the encoding recognised, the text
/// and the hops parsed from the bytes.
fn round_trip(file: &str, bytes: &[u8], encoding: &str, locale: &str) {
    let text = best_fit(&fixture(file));
    let decoded = decode_console_bytes(bytes);
    assert_eq!(decoded.encoding, encoding, "{file}");
    assert_eq!(decoded.text, text, "{file} as {encoding}");
    let trace = parse_trace_bytes(bytes).unwrap_or_else(|e| panic!("{file} as {encoding}: {e}"));
    let got: Vec<(u8, Vec<IpAddr>)> = trace.hops.into_iter().map(|h| (h.ttl, h.addrs)).collect();
    assert_eq!(got, hops(&text), "{file} as {encoding}");
    assert_eq!(
        trace.locale.as_deref(),
        Some(locale),
        "{file} as {encoding}"
    );
}

#[test]
fn oem_and_ansi_code_pages_round_trip() {
    let cases: &[(&str, Option<&'static Encoding>, &str, &str)] = &[
        ("zh-CN_hostname.txt", Some(GBK), "GBK", "zh-CN"),
        ("zh-CN_ip_unreachable.txt", Some(GBK), "GBK", "zh-CN"),
        ("hops_only.txt", Some(GBK), "GBK", "zh-CN"),
        ("ru_hostname.txt", Some(IBM866), "IBM866", "ru"),
        ("ja_ip.txt", Some(SHIFT_JIS), "Shift_JIS", "ja"),
        ("zh-TW_hostname.txt", Some(BIG5), "Big5", "zh-TW"),
        ("ko_hostname.txt", Some(EUC_KR), "EUC-KR", "ko"),
        ("de_hostname.txt", Some(WINDOWS_1252), "windows-1252", "de"),
        ("es_hostname.txt", Some(WINDOWS_1252), "windows-1252", "es"),
        ("fr_hostname.txt", Some(WINDOWS_1252), "windows-1252", "fr"),
        ("pl_hostname.txt", Some(WINDOWS_1250), "windows-1250", "pl"),
        ("tr_hostname.txt", Some(WINDOWS_1254), "windows-1254", "tr"),
        ("fr_hostname.txt", None, "IBM850", "fr"),
        ("fr_ip_oldapostrophe.txt", None, "IBM850", "fr"),
        ("de_hostname.txt", None, "IBM850", "de"),
        ("es_hostname.txt", None, "IBM850", "es"),
        ("pt-BR_hostname.txt", None, "IBM850", "pt-BR"),
        ("pt-PT_hostname.txt", None, "IBM850", "pt-PT"),
    ];
    for &(file, enc, name, locale) in cases {
        let text = best_fit(&fixture(file));
        let bytes = match enc {
            Some(enc) => encode(enc, &text),
            None => encode_cp850(&text),
        };
        round_trip(file, &bytes, name, locale);
    }
}

#[test]
fn utf16_with_and_without_bom() {
    for (file, locale) in [
        ("zh-CN_hostname.txt", "zh-CN"),
        ("en_hostname.txt", "en"),
        ("ru_hostname.txt", "ru"),
        ("ja_ip.txt", "ja"),
    ] {
        let text = fixture(file);
        round_trip(file, &utf16le(&text, true), "UTF-16LE", locale);
        round_trip(file, &utf16le(&text, false), "UTF-16LE", locale);
        round_trip(file, &utf16be_bom(&text), "UTF-16BE", locale);
    }
}

#[test]
fn utf8_with_and_without_bom() {
    let text = fixture("ko_hostname.txt");
    let decoded = decode_console_bytes(text.as_bytes());
    assert_eq!(decoded.encoding, "UTF-8");
    assert!(!decoded.lossy);
    let mut with_bom = b"\xef\xbb\xbf".to_vec();
    with_bom.extend(text.as_bytes());
    let decoded = decode_console_bytes(&with_bom);
    assert_eq!(decoded.encoding, "UTF-8");
    assert_eq!(decoded.text, text);
    let trace = parse_trace_bytes(&with_bom).expect("parses");
    assert_eq!(trace.locale.as_deref(), Some("ko"));
}

#[test]
fn a_cut_utf8_character_stays_utf8() {
    let text = fixture("zh-CN_hostname.txt");
    let bytes = text.as_bytes();
    // Cut inside the final `。`.
    let cut = bytes.get(..bytes.len() - 3).expect("long enough");
    let decoded = decode_console_bytes(cut);
    assert_eq!(decoded.encoding, "UTF-8");
    assert!(decoded.lossy);
    assert_eq!(
        parse_trace_bytes(cut).expect("parses").hops.len(),
        hops(&text).len()
    );
}

#[test]
fn odd_inputs_decode_without_panicking() {
    for raw in [
        &b""[..],
        b"\xff",
        b"\xff\xfe",
        b"\xfe\xff\x00",
        b"\x00\x00\x00\x00\x00",
        b"\x81\x81\x81",
        b"a\x00b",
    ] {
        let _ = decode_console_bytes(raw);
    }
}
