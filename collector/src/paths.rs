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
        if segments == [Segment::Any] {
            return Err(format!(
                "{pattern:?} would accept every path; add a literal segment"
            ));
        }
        Ok(Self { segments })
    }

    /// True when `path` (without query) matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return false;
        }
        match_from(&self.segments, &parts)
    }
}

fn match_from(pattern: &[Segment], parts: &[&str]) -> bool {
    match pattern.split_first() {
        None => parts.is_empty(),
        Some((Segment::Any, rest)) => {
            (0..=parts.len()).any(|skip| match_from(rest, &parts[skip..]))
        }
        Some((seg, rest)) => match parts.split_first() {
            None => false,
            Some((part, tail)) => {
                let ok = match seg {
                    Segment::Literal(l) => l == part,
                    Segment::One => true,
                    Segment::Any => unreachable!("handled above"),
                };
                ok && match_from(rest, tail)
            }
        },
    }
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
    fn bad_patterns_say_what_to_write() {
        for (bad, says) in [
            ("api", "must start with '/'"),
            ("/a//b", "empty segment"),
            ("/a/b*", "whole segment"),
            ("/**", "every path"),
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
