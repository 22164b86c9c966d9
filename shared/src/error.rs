use std::fmt;

/// The one error type of `lineprobe-shared`.
///
/// Every message says what was wrong and, where it can, what to do about it:
/// these errors reach users of the CLI, probe authors and operators.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A report broke the schema: every violation found is listed.
    #[error("invalid report: {0}")]
    InvalidReport(Violations),

    /// The input is not the output of any traceroute tool we know.
    #[error("unrecognized trace text: expected {expected}; {detail}")]
    UnrecognizedTrace {
        /// The formats that were tried, in words.
        expected: &'static str,
        /// What was seen instead.
        detail: String,
    },

    /// The input was recognised as one format but could not be read as it.
    #[error("malformed {format} output at line {line}: {reason}")]
    MalformedTrace {
        /// The format the input was recognised as.
        format: crate::TraceFormat,
        /// 1-based line number of the offending line (0 when not line-based).
        line: usize,
        /// What was wrong, and what was expected instead.
        reason: String,
    },

    /// A catalog file is missing, unreadable or inconsistent.
    #[error("catalog {file}: {reason}")]
    Catalog {
        /// The catalog file (or embedded catalog name) at fault.
        file: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A configuration value is invalid.
    #[error("invalid configuration `{key}`: {reason}")]
    Config {
        /// The configuration key at fault.
        key: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that could not be read.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// JSON could not be decoded.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),

    /// An identifier or code (province code, city code, carrier id) is not
    /// well-formed.
    #[error("invalid {kind} `{value}`: expected {expected}")]
    InvalidId {
        /// What kind of identifier, in words: "province code".
        kind: &'static str,
        /// The value given (cut to a reasonable length).
        value: String,
        /// What would be accepted, with an example.
        expected: &'static str,
    },

    /// A signed manifest (or a manifest key) was refused; nothing was applied.
    #[error("manifest: {reason}")]
    Manifest {
        /// Why, for callers that answer each cause differently.
        fault: crate::ManifestFault,
        /// What was wrong and what to do about it.
        reason: String,
    },

    /// A probe's request signature, its header or a probe key was refused.
    #[error("signature: {reason}")]
    Signature {
        /// Why, for callers that answer each cause differently.
        fault: crate::SignatureFault,
        /// What was wrong and what to do about it.
        reason: String,
    },
}

/// One way in which a value broke the schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Violation {
    /// Where, as a dotted path with indexes: `trace.hops[3].addrs`.
    pub field: String,
    /// Why, in a sentence that says what would be accepted.
    pub reason: String,
}

/// All the violations found in one value, in the order they were found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Violations(pub Vec<Violation>);

impl Violations {
    /// Records one violation.
    pub fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            reason: reason.into(),
        });
    }

    /// True when nothing was wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when empty, else the violations as an [`Error::InvalidReport`].
    pub fn into_result(self) -> Result<(), Error> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidReport(self))
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.reason)?;
        }
        Ok(())
    }
}
