//! Lines in URLs without their accounts.
//!
//! A line's key is its broadband account (`account:07552660101`), which is
//! personal data. Page links that named it put it into every proxy's and
//! web server's access log and the browser's history. Links name a line by
//! a reference instead: the key encrypted with AES-256-GCM-SIV under the
//! back office's own secret (kept in the database, made on first use) and a
//! fixed nonce. The same line always gets the same reference (a link can be
//! bookmarked and shared among the team), only the back office can read it,
//! and one made up or altered is refused. A raw key still opens its page
//! (links from before), by way of a redirect to the reference.

use aes_gcm_siv::aead::{Aead, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The name of the secret in the database.
pub(super) const SECRET_NAME: &str = "line_refs";

/// What starts every reference (a line key never does: it starts with
/// `account:` or `install:`).
const PREFIX: &str = "r";

/// Encrypts and decrypts line references.
#[derive(Clone)]
pub(crate) struct LineRefs {
    cipher: Aes256GcmSiv,
}

impl std::fmt::Debug for LineRefs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineRefs")
    }
}

impl LineRefs {
    /// References under `secret` (32 bytes); `None` for another length.
    pub(super) fn new(secret: &[u8]) -> Option<Self> {
        Aes256GcmSiv::new_from_slice(secret)
            .ok()
            .map(|cipher| Self { cipher })
    }

    /// The reference of `line_key`.
    pub(super) fn encode(&self, line_key: &str) -> String {
        // Deterministic on purpose: one nonce, so a line keeps its
        // reference. GCM-SIV stays safe with a repeated nonce; it tells
        // only whether two references name the same line.
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&[0; 12]), line_key.as_bytes())
            .unwrap_or_default();
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The line key `reference` names; `None` when it is no reference this
    /// back office made.
    pub(super) fn decode(&self, reference: &str) -> Option<String> {
        let sealed = URL_SAFE_NO_PAD
            .decode(reference.strip_prefix(PREFIX)?)
            .ok()?;
        let key = self
            .cipher
            .decrypt(Nonce::from_slice(&[0; 12]), sealed.as_slice())
            .ok()?;
        String::from_utf8(key).ok()
    }
}

/// What a page was given for a line: a reference, or (from a link made
/// before references) the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Named {
    /// A reference this back office made, with the key it names.
    Reference(String),
    /// A line key as it is.
    Key(String),
    /// Neither.
    Nothing,
}

impl Named {
    /// The line key named, if any.
    pub(super) fn key(self) -> Option<String> {
        match self {
            Self::Reference(key) | Self::Key(key) => Some(key),
            Self::Nothing => None,
        }
    }
}

impl LineRefs {
    /// What `given` names.
    pub(super) fn read(&self, given: &str) -> Named {
        if let Some(key) = self.decode(given) {
            return Named::Reference(key);
        }
        if given.starts_with("account:") || given.starts_with("install:") {
            return Named::Key(given.to_owned());
        }
        Named::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_names_its_line_and_hides_the_account() {
        let refs = LineRefs::new(&[7; 32]).expect("32 bytes");
        let key = "account:07552660101";
        let reference = refs.encode(key);
        assert!(!reference.contains("0755"), "{reference}");
        assert!(reference.starts_with('r'));
        assert!(
            reference
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{reference}"
        );
        assert_eq!(refs.encode(key), reference, "stable, for bookmarks");
        assert_ne!(refs.encode("account:07552660102"), reference);
        assert_eq!(refs.decode(&reference).as_deref(), Some(key));
        assert_eq!(refs.read(&reference), Named::Reference(key.to_owned()));

        // Another back office's secret, an altered reference, and other
        // text are refused.
        let other = LineRefs::new(&[8; 32]).expect("32 bytes");
        assert_eq!(other.decode(&reference), None);
        let mut altered = reference.clone().into_bytes();
        let last = altered.len() - 1;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(refs.decode(&String::from_utf8(altered).unwrap()), None);
        assert_eq!(refs.decode("r"), None);
        assert_eq!(refs.decode("account:1"), None);
        assert_eq!(refs.read("account:1"), Named::Key("account:1".to_owned()));
        assert_eq!(
            refs.read("install:GD-1"),
            Named::Key("install:GD-1".to_owned())
        );
        assert_eq!(refs.read("nonsense"), Named::Nothing);
        assert!(LineRefs::new(&[1; 16]).is_none());
    }
}
