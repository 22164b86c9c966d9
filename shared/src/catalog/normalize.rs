//! Spelling keys: how a name typed by a user or given by a database is folded
//! before it is looked up.
//!
//! The same name reaches us as `广东省`, `Guangdong Sheng`, `GUANGDONG`,
//! `Guangdong Province`, in full-width letters from a Chinese input method, or
//! with `Xi'an`-style apostrophes. Folding keeps only letters and digits,
//! lower-cased, with full-width forms and accents mapped to plain ASCII; the
//! administrative suffixes are then peeled off one at a time until something
//! matches.

/// Folds a spelling to its lookup key.
pub(super) fn fold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = strip_accent(narrow_char(c));
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Maps full-width ASCII forms (as typed with a Chinese input method) and the
/// ideographic space to plain ASCII, leaving everything else as it is.
pub(super) fn narrow(s: &str) -> String {
    s.chars().map(narrow_char).collect()
}

fn narrow_char(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        _ => c,
    }
}

/// Maps the accented Latin letters of pinyin tone marks and Portuguese place
/// names (Macao) to their base letter.
fn strip_accent(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ǎ' | 'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Ā' => {
            'a'
        }
        'ç' | 'Ç' => 'c',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ě' | 'È' | 'É' | 'Ê' | 'Ë' | 'Ē' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'ǐ' | 'Ì' | 'Í' | 'Î' | 'Ï' | 'Ī' => 'i',
        'ñ' | 'Ñ' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ō' | 'ǒ' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ō' => {
            'o'
        }
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ǔ' | 'ǖ' | 'ǘ' | 'ǚ' | 'ǜ' | 'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ū' => {
            'u'
        }
        _ => c,
    }
}

/// Suffixes of province names, folded. Longer ones come first only for
/// readability: [`strip_suffix`] always takes the longest that fits.
pub(super) const PROVINCE_SUFFIXES: &[&str] = &[
    "维吾尔自治区",
    "壮族自治区",
    "回族自治区",
    "特别行政区",
    "特別行政區",
    "自治区",
    "省",
    "市",
    "specialadministrativeregion",
    "uyghurautonomousregion",
    "uygurautonomousregion",
    "zhuangautonomousregion",
    "huiautonomousregion",
    "autonomousregion",
    "tebiexingzhengqu",
    "weiwuerzizhiqu",
    "zhuangzuzizhiqu",
    "huizuzizhiqu",
    "uygurzizhiqu",
    "zizhiqu",
    "municipality",
    "province",
    "region",
    "sheng",
    "city",
    "shi",
    "sar",
];

/// Suffixes of city names, folded.
pub(super) const CITY_SUFFIXES: &[&str] = &[
    "自治州",
    "自治县",
    "林区",
    "新区",
    "地区",
    "市",
    "盟",
    "区",
    "县",
    "autonomousprefecture",
    "autonomouscounty",
    "prefecture",
    "district",
    "zizhizhou",
    "newarea",
    "county",
    "league",
    "city",
    "diqu",
    "xian",
    "meng",
    "shi",
    "qu",
];

/// Suffixes of carrier names, folded: company forms and service words that
/// users add ("电信宽带", "中国移动通信集团有限公司", "China Unicom Group").
pub(super) const CARRIER_SUFFIXES: &[&str] = &[
    "股份有限公司",
    "有限责任公司",
    "有限公司",
    "公司",
    "集团",
    "宽带",
    "光纤",
    "通信",
    "网络",
    "communications",
    "communication",
    "corporation",
    "broadband",
    "networks",
    "network",
    "company",
    "limited",
    "group",
    "coltd",
    "fiber",
    "fibre",
    "corp",
    "ltd",
    "inc",
];

/// Chinese suffixes dropped from a province's own name to derive its short
/// form (`广西壮族自治区` → `广西`).
pub(super) const PROVINCE_NAME_SUFFIXES: &[&str] = &[
    "维吾尔自治区",
    "壮族自治区",
    "回族自治区",
    "特别行政区",
    "自治区",
    "省",
    "市",
];

/// Chinese suffixes dropped from a city's own name to derive its short form
/// (`广州市` → `广州`, `浦东新区` → `浦东`).
pub(super) const CITY_NAME_SUFFIXES: &[&str] =
    &["林区", "新区", "堂区", "地区", "市", "盟", "区", "县"];

/// The longest suffix from `suffixes` that `key` ends with and that leaves
/// something before it, removed.
pub(super) fn strip_suffix<'k>(key: &'k str, suffixes: &[&str]) -> Option<&'k str> {
    suffixes
        .iter()
        .filter(|s| key.len() > s.len())
        .filter_map(|s| key.strip_suffix(s))
        .min_by_key(|rest| rest.len())
}

/// The short form of an official Chinese name: the first suffix in `suffixes`
/// whose removal leaves at least two characters (`东区` keeps its `区`: a
/// one-character name would collide with everything).
pub(super) fn short_name<'n>(name: &'n str, suffixes: &[&str]) -> Option<&'n str> {
    suffixes
        .iter()
        .filter_map(|s| name.strip_suffix(s))
        .find(|rest| rest.chars().count() >= 2)
}

/// Tries `key`, then `key` with suffixes peeled off one at a time (at most
/// `max_peel`), returning the first hit.
pub(super) fn peel<T>(
    key: &str,
    suffixes: &[&str],
    max_peel: usize,
    mut find: impl FnMut(&str) -> Option<T>,
) -> Option<T> {
    let mut key = key;
    for _ in 0..=max_peel {
        if key.is_empty() {
            return None;
        }
        if let Some(hit) = find(key) {
            return Some(hit);
        }
        key = strip_suffix(key, suffixes)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_space_punctuation_width_accents() {
        assert_eq!(fold(" Guangdong  Sheng "), "guangdongsheng");
        assert_eq!(fold("ＣＮ－ＧＤ"), "cngd");
        assert_eq!(fold("Xi'an"), "xian");
        assert_eq!(fold("Lüliang"), "luliang");
        assert_eq!(fold("São Lázaro"), "saolazaro");
        assert_eq!(fold("广东省\u{3000}"), "广东省");
        assert_eq!(fold("Dr. Peng"), "drpeng");
        assert_eq!(fold(""), "");
    }

    #[test]
    fn strips_longest_suffix_and_never_everything() {
        assert_eq!(
            strip_suffix("广西壮族自治区", PROVINCE_SUFFIXES),
            Some("广西")
        );
        assert_eq!(
            strip_suffix("tianjinshi", PROVINCE_SUFFIXES),
            Some("tianjin")
        );
        assert_eq!(strip_suffix("省", PROVINCE_SUFFIXES), None);
        assert_eq!(strip_suffix("guangdong", PROVINCE_SUFFIXES), None);
    }

    #[test]
    fn short_names_keep_two_characters() {
        assert_eq!(short_name("广州市", CITY_NAME_SUFFIXES), Some("广州"));
        assert_eq!(short_name("东区", CITY_NAME_SUFFIXES), None);
        assert_eq!(short_name("大堂区", CITY_NAME_SUFFIXES), Some("大堂"));
        assert_eq!(short_name("花地玛堂区", CITY_NAME_SUFFIXES), Some("花地玛"));
    }

    #[test]
    fn peel_tries_each_step() {
        let hit = peel(
            "中国移动通信集团有限公司",
            CARRIER_SUFFIXES,
            4,
            |k| (k == "中国移动").then_some(()),
        );
        assert!(hit.is_some());
        let miss = peel("xyz", CARRIER_SUFFIXES, 4, |_| None::<()>);
        assert!(miss.is_none());
    }
}
