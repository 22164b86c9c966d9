//! The query strings of the pages, read by one extractor: [`PageQuery`].
//!
//! A value that does not fit its parameter (`/audit?before=x`, a line
//! number past `u64`, a parameter given twice) is answered with the back
//! office's own error page, a 400 in the usual frame (with the navigation
//! when signed in) that names the parameter and says what it should be,
//! instead of axum's plain-text rejection. The CSV export answers its
//! refused filters with the same page, so it does here too.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::auth::Viewer;
use super::layout;

/// A page's query string, as a struct.
pub(super) trait QueryParams: DeserializeOwned {
    /// Each parameter, and what it should be (in words that complete "it
    /// should be …").
    const PARAMS: &'static [(&'static str, &'static str)];
}

/// The query string of a page read into `T`, or the page saying which
/// parameter is wrong.
#[derive(Debug)]
pub(super) struct PageQuery<T>(pub(super) T);

impl<S, T> FromRequestParts<S> for PageQuery<T>
where
    S: Send + Sync,
    T: QueryParams,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        match serde_urlencoded::from_str::<T>(query) {
            Ok(value) => Ok(Self(value)),
            Err(e) => {
                tracing::debug!(error = %e, "query string refused");
                Err(layout::error_page(
                    StatusCode::BAD_REQUEST,
                    parts.extensions.get::<Viewer>(),
                    "Wrong page address",
                    &format!(
                        "{} Correct the address, or start again from the menu.",
                        problem::<T>(query)
                    ),
                ))
            }
        }
    }
}

/// Longest part of a refused value shown back.
const SHOWN_CHARS: usize = 40;

/// What is wrong with `query` (which `T` refused), naming the parameter:
/// the first whose value alone does not fit, or one given more than once.
fn problem<T: QueryParams>(query: &str) -> String {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let fits = |pairs: &[(&str, &str)]| {
        serde_urlencoded::to_string(pairs)
            .is_ok_and(|one| serde_urlencoded::from_str::<T>(&one).is_ok())
    };
    let should_be = |name: &str| {
        T::PARAMS
            .iter()
            .find(|(known, _)| *known == name)
            .map_or("absent (the page has no such parameter)", |(_, what)| *what)
    };
    // Every parameter is optional: a query of one value tells whether that
    // value fits.
    if fits(&[]) {
        for (name, value) in &pairs {
            if !fits(&[(name.as_str(), value.as_str())]) {
                return format!(
                    "The parameter \u{201c}{name}\u{201d} is {}: it should be {}.",
                    shown(value),
                    should_be(name)
                );
            }
        }
        for (name, _) in &pairs {
            let all: Vec<(&str, &str)> = pairs
                .iter()
                .filter(|(other, _)| other == name)
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            if all.len() > 1 && !fits(&all) {
                return format!(
                    "The parameter \u{201c}{name}\u{201d} is given more than once: give it once; \
                     it should be {}.",
                    should_be(name)
                );
            }
        }
    }
    "The page address holds a value this page cannot read.".to_owned()
}

/// A refused value as shown back: quoted, cut short, or "empty".
fn shown(value: &str) -> String {
    if value.is_empty() {
        return "empty".to_owned();
    }
    let mut cut: String = value.chars().take(SHOWN_CHARS).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code, reason = "only deserialized")]
    struct Example {
        before: Option<i64>,
        action: Option<String>,
    }

    impl QueryParams for Example {
        const PARAMS: &'static [(&'static str, &'static str)] = &[
            ("before", "a whole number"),
            ("action", "one of the listed actions"),
        ];
    }

    #[test]
    fn the_wrong_parameter_is_named_with_what_it_should_be() {
        assert_eq!(
            problem::<Example>("action=login&before=x"),
            "The parameter \u{201c}before\u{201d} is \"x\": it should be a whole number."
        );
        assert_eq!(
            problem::<Example>("before="),
            "The parameter \u{201c}before\u{201d} is empty: it should be a whole number."
        );
        assert!(problem::<Example>("action=a&action=b").starts_with(
            "The parameter \u{201c}action\u{201d} is given more than once: give it once; \
                 it should be one of the listed actions."
        ));
        let long = format!("before={}", "9".repeat(100));
        let said = problem::<Example>(&long);
        assert!(said.contains(&format!("\"{}…\"", "9".repeat(40))), "{said}");
    }
}
