//! Console bytes to text. (Skeleton: the tracert helper fills this in.)

use std::borrow::Cow;

/// Text decoded from console bytes, with the encoding that was used.
#[derive(Debug, Clone)]
pub struct DecodedText<'a> {
    /// The decoded text.
    pub text: Cow<'a, str>,
    /// The encoding recognised: `UTF-8`, `UTF-16LE`, `GBK`, `windows-1252`, `IBM850`, `IBM866`…
    pub encoding: &'static str,
}

/// Decodes bytes captured from a console, guessing the code page.
pub fn decode_console_bytes(raw: &[u8]) -> DecodedText<'_> {
    DecodedText {
        text: String::from_utf8_lossy(raw),
        encoding: "UTF-8",
    }
}
