//! The ingest path patterns: probes post to a path drawn at random from a
//! configured set, so that a meddling gateway does not see one fixed URL.

/// One path pattern: literal segments, `*` for exactly one segment and `**`
/// for any number of segments (zero or more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Any,
}

impl PathPattern {
    /// Parses a pattern such as `/api/v1/*/report`; the error says what to write.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(format!("{pattern:?} must start with '/'"));
        };
        if pattern.len() > 200 {
            return Err(format!("{pattern:?} is longer than 200 characters"));
        }
        let mut segments = Vec::new();
        for seg in rest.split('/') {
            segments.push(match seg {
                "" => {
                    return Err(format!(
                        "{pattern:?} has an empty segment ('//' or a trailing '/')"
                    ));
                }
                "*" => Segment::One,
                "**" => Segment::Any,
                s if s.contains('*') => {
                    return Err(format!(
                        "{pattern:?}: '*' must be a whole segment (`/a/*/b`), not part of {s:?}"
                    ));
                }
                s if s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._~".contains(c)) =>
                {
                    Segment::Literal(s.to_owned())
                }
                s => {
                    return Err(format!(
                        "{pattern:?}: segment {s:?} may use only letters, digits and '-._~'"
                    ));
                }
            });
        }
        // `/**/**` accepts every path as surely as `/**` does.
        if segments.iter().all(|s| *s == Segment::Any) {
            return Err(format!(
                "{pattern:?} would accept every path; add a literal segment"
            ));
        }
        Ok(Self { segments })
    }

    /// Whether some path matches both `self` and `other`.
    ///
    /// Decided on the patterns themselves, not on their literal forms:
    /// `/api/v1/*/enrol` and `/api/v1/x/enrol` overlap although neither
    /// matches the other's text as a path, and so do `/a/*/c` and `/a/b/*`.
    pub fn overlaps(&self, other: &Self) -> bool {
        let (a, b) = (&self.segments, &other.segments);
        // both[i][j]: some path matches both a[i..] and b[j..]. Filled from
        // the ends; each cell reads only cells to its right and below.
        let mut both = vec![vec![false; b.len() + 1]; a.len() + 1];
        for i in (0..=a.len()).rev() {
            for j in (0..=b.len()).rev() {
                let cell = |i: usize, j: usize| {
                    both.get(i).and_then(|row| row.get(j)).copied() == Some(true)
                };
                let (x, y) = (a.get(i), b.get(j));
                let value = match (x, y) {
                    (None, None) => true,
                    // `**` takes nothing, or the segment the other side's
                    // next segment takes (and maybe more after it).
                    (Some(Segment::Any), _) | (_, Some(Segment::Any)) => {
                        (x == Some(&Segment::Any)
                            && (cell(i + 1, j) || (y.is_some() && cell(i, j + 1))))
                            || (y == Some(&Segment::Any)
                                && (cell(i, j + 1) || (x.is_some() && cell(i + 1, j))))
                    }
                    (Some(x), Some(y)) => x.compatible(y) && cell(i + 1, j + 1),
                    (None, Some(_)) | (Some(_), None) => false,
                };
                if let Some(slot) = both.get_mut(i).and_then(|row| row.get_mut(j)) {
                    *slot = value;
                }
            }
        }
        both.first().and_then(|row| row.first()).copied() == Some(true)
    }

    /// True when `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        self.match_counting(path).0
    }

    /// Whether `path` matches, and how many steps deciding it took.
    fn match_counting(&self, path: &str) -> (bool, usize) {
        let Some(rest) = path.strip_prefix('/') else {
            return (false, 0);
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return (false, 0);
        }
        match_segments(&self.segments, &parts)
    }
}

impl std::fmt::Display for PathPattern {
    /// The pattern as it is written in the configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => write!(f, "/{l}")?,
                Segment::One => f.write_str("/*")?,
                Segment::Any => f.write_str("/**")?,
            }
        }
        Ok(())
    }
}

impl Segment {
    /// Whether some one segment is taken by both `self` and `other`
    /// (neither of them `**`).
    fn compatible(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Literal(a), Self::Literal(b)) => a == b,
            (Self::Any, _) | (_, Self::Any) => false,
            _ => true,
        }
    }

    /// Whether this segment, other than `**`, takes `part`.
    fn takes(&self, part: &str) -> bool {
        match self {
            Self::Literal(l) => l == part,
            Self::One => true,
            Self::Any => false,
        }
    }
}

/// Matches `parts` against `pattern`, returning the answer and the number
/// of steps taken.
///
/// The path comes from the internet and is matched before anything else is
/// done with the request: trying every split for every `**` in turn took
/// time growing with the path length to the power of the number of `**`
/// (a 5000-segment path against `/a/**/b/**/c` took 12 million steps). This
/// is the greedy glob algorithm instead: each `**` first takes nothing, and
/// on a mismatch only the most recent `**` takes one more segment. Going
/// back to an earlier `**` never helps — the later one can take whatever
/// the earlier one would have — so the steps stay within the pattern's
/// length times the path's (and near the path's length in practice).
fn match_segments(pattern: &[Segment], parts: &[&str]) -> (bool, usize) {
    let (mut p, mut s) = (0, 0);
    let mut steps = 0;
    // The last `**` seen, and the first part it does not take yet.
    let mut star: Option<(usize, usize)> = None;
    while let Some(part) = parts.get(s) {
        steps += 1;
        match pattern.get(p) {
            Some(Segment::Any) => {
                star = Some((p, s));
                p += 1;
            }
            Some(seg) if seg.takes(part) => {
                p += 1;
                s += 1;
            }
            _ => match star {
                Some((star_p, star_s)) => {
                    star = Some((star_p, star_s + 1));
                    p = star_p + 1;
                    s = star_s + 1;
                }
                None => return (false, steps),
            },
        }
    }
    let rest = pattern.get(p..).unwrap_or_default();
    (
        rest.iter().all(|seg| *seg == Segment::Any),
        steps + rest.len(),
    )
}

/// The configured patterns, checked together.
#[derive(Debug, Clone)]
pub struct PathSet {
    patterns: Vec<PathPattern>,
}

impl PathSet {
    /// Parses every pattern; the error names the first bad one.
    pub fn parse(patterns: &[String]) -> Result<Self, String> {
        Ok(Self {
            patterns: patterns
                .iter()
                .map(|p| PathPattern::parse(p))
                .collect::<Result<_, _>>()?,
        })
    }

    /// True when any pattern matches `path`.
    pub fn matches(&self, path: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(path))
    }

    /// The first pattern that some path matches together with `pattern`.
    pub fn overlapping(&self, pattern: &PathPattern) -> Option<&PathPattern> {
        self.patterns.iter().find(|p| p.overlaps(pattern))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_one_and_any_segments() {
        let p = PathPattern::parse("/api/v1/*/report").unwrap();
        assert!(p.matches("/api/v1/abc/report"));
        assert!(!p.matches("/api/v1/report"));
        assert!(!p.matches("/api/v1/a/b/report"));
        let p = PathPattern::parse("/cdn/**/collect").unwrap();
        assert!(p.matches("/cdn/collect"));
        assert!(p.matches("/cdn/a/b/c/collect"));
        assert!(!p.matches("/cdn/a/b/c/collect/x"));
        assert!(!p.matches("/cdn//collect"));
        assert!(!p.matches("cdn/collect"));
    }

    #[test]
    fn many_any_segments_match_correctly() {
        let p = PathPattern::parse("/a/**/b/**/c").unwrap();
        for (path, expected) in [
            ("/a/b/c", true),
            ("/a/x/b/y/z/c", true),
            ("/a/b/b/b/c", true),
            ("/a/c", false),
            ("/a/b/c/x", false),
            ("/a/b/x/c/c", true),
            ("/a/x/y", false),
        ] {
            assert_eq!(p.matches(path), expected, "{path}");
        }
        let p = PathPattern::parse("/**/x/*/**").unwrap();
        assert!(p.matches("/x/1"));
        assert!(p.matches("/q/x/1/2/3"));
        assert!(!p.matches("/q/x"));
        let p = PathPattern::parse("/x/**/**/y").unwrap();
        assert!(p.matches("/x/y") && p.matches("/x/1/2/y") && !p.matches("/x/1/2"));
    }

    #[test]
    fn a_long_path_against_several_any_segments_takes_few_steps() {
        let b5000 = "/b".repeat(5000);
        let p = PathPattern::parse("/a/**/b/**/c").unwrap();
        let (matched, steps) = p.match_counting(&format!("/a{b5000}/x"));
        assert!(!matched);
        // Trying every split took some 12 million steps here.
        assert!(steps < 4 * 5002, "{steps} steps");
        let (matched, steps) = p.match_counting(&format!("/a{b5000}/c"));
        assert!(matched);
        assert!(steps < 4 * 5002, "{steps} steps");

        // More `**` than a backtracking matcher could ever get through.
        let p = PathPattern::parse("/a/**/b/**/b/**/b/**/b/**/c").unwrap();
        let (matched, steps) = p.match_counting(&format!("/a{b5000}/x"));
        assert!(!matched);
        assert!(steps < 12 * 5002, "{steps} steps");
        let (matched, _) = p.match_counting(&format!("/a{b5000}/c"));
        assert!(matched);
        // The bound holds whatever the path: pattern length times path length.
        let p = PathPattern::parse("/**/b/b/b/b/b/b/b/b/c").unwrap();
        let (matched, steps) = p.match_counting(&b5000);
        assert!(!matched);
        assert!(steps <= 11 * 5001, "{steps} steps");
    }

    /// Tries every split for every `**`: obviously right, and slow.
    fn reference(pattern: &[Segment], parts: &[&str]) -> bool {
        match pattern.split_first() {
            None => parts.is_empty(),
            Some((Segment::Any, rest)) => {
                (0..=parts.len()).any(|skip| reference(rest, &parts[skip..]))
            }
            Some((seg, rest)) => parts
                .split_first()
                .is_some_and(|(part, tail)| seg.takes(part) && reference(rest, tail)),
        }
    }

    proptest::proptest! {
        #[test]
        fn greedy_matching_agrees_with_trying_every_split(
            pattern in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "*", "**"]), 1..7),
            path in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "c"]), 1..10),
        ) {
            let pattern = PathPattern::parse(&format!("/{}", pattern.join("/")));
            proptest::prop_assume!(pattern.is_ok());
            let pattern = pattern.unwrap();
            let parts: Vec<&str> = path.iter().map(|p| &**p).collect();
            proptest::prop_assert_eq!(
                pattern.matches(&format!("/{}", path.join("/"))),
                reference(&pattern.segments, &parts)
            );
        }
    }

    /// Every path of one to `max` segments over `alphabet`.
    fn every_path(alphabet: &[&str], max: usize) -> Vec<String> {
        let mut all = Vec::new();
        let mut level = vec![String::new()];
        for _ in 0..max {
            level = level
                .iter()
                .flat_map(|p| alphabet.iter().map(move |s| format!("{p}/{s}")))
                .collect();
            all.extend(level.iter().cloned());
        }
        all
    }

    #[test]
    fn overlap_examples() {
        let p = |s: &str| PathPattern::parse(s).unwrap();
        assert!(p("/api/v1/*/enrol").overlaps(&p("/api/v1/x/enrol")));
        assert!(p("/api/v1/x/enrol").overlaps(&p("/api/v1/*/enrol")));
        assert!(p("/a/*/c").overlaps(&p("/a/b/*")));
        assert!(p("/cdn/**/collect").overlaps(&p("/cdn/x/**")));
        assert!(!p("/api/v1/*/report").overlaps(&p("/api/v1/*/enrol")));
        assert!(!p("/api/v1/enrol").overlaps(&p("/api/v1/*/report")));
        assert!(!p("/a/**/b").overlaps(&p("/a/**/c")));
        assert_eq!(p("/a/*/b/**").to_string(), "/a/*/b/**");
    }

    proptest::proptest! {
        #[test]
        fn overlap_agrees_with_trying_every_path(
            a in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "*", "**"]), 1..4),
            b in proptest::collection::vec(proptest::sample::select(vec!["a", "b", "*", "**"]), 1..4),
        ) {
            let (Ok(a), Ok(b)) = (
                PathPattern::parse(&format!("/{}", a.join("/"))),
                PathPattern::parse(&format!("/{}", b.join("/"))),
            ) else {
                return Ok(());
            };
            // A shortest common path has at most one segment for each
            // segment of the two patterns that is not `**`.
            let common = every_path(&["a", "b", "c"], 6)
                .iter()
                .any(|path| a.matches(path) && b.matches(path));
            proptest::prop_assert_eq!(a.overlaps(&b), common, "{} {}", a, b);
        }
    }

    #[test]
    fn bad_patterns_say_what_to_write() {
        for (bad, says) in [
            ("api", "must start with '/'"),
            ("/a//b", "empty segment"),
            ("/a/b*", "whole segment"),
            ("/**", "every path"),
            ("/**/**", "every path"),
            ("/**/**/**", "every path"),
            ("/a/b c", "letters, digits"),
        ] {
            let e = PathPattern::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn set_matches_any() {
        let s = PathSet::parse(&["/a".to_owned(), "/b/*".to_owned()]).unwrap();
        assert!(s.matches("/a") && s.matches("/b/x") && !s.matches("/c"));
    }
}
