//! How the internal side reads a report's trust at arrival.
//!
//! The collector scores each report's sources (its installation, its source
//! prefix, its signature) and writes the scores into the envelope. Here a
//! policy turns them into one mark: a verdict from a low-trust source is
//! kept, listed and counted like any other, but marked, so the compliance
//! team sees it apart and does not act on it alone.

use lineprobe_shared::{ArrivalTrust, SignatureCheck, TrustReason};
use serde::Serialize;

/// When a report's trust at arrival counts as low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Scores below this are low (0–100; 0 marks nothing by score).
    pub low_below: u8,
    /// A probe whose key changed is low-trust whatever its score: the
    /// install id may have been taken over.
    pub key_changed_is_low: bool,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        Self {
            low_below: 50,
            key_changed_is_low: true,
        }
    }
}

/// The mark a verdict carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrustMark {
    /// The score at arrival; `None` when the receiver did not score (older
    /// collectors), which is never low.
    pub score: Option<u8>,
    /// Whether the source counts as low-trust.
    pub low: bool,
    /// The signature check at arrival.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureCheck>,
    /// The receiver's reasons for a score below full.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<TrustReason>,
    /// Why the mark is low, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_low: Option<String>,
}

impl TrustMark {
    /// The mark of a report that arrived without trust scores.
    pub const UNSCORED: Self = Self {
        score: None,
        low: false,
        signature: None,
        reasons: Vec::new(),
        why_low: None,
    };
}

impl TrustPolicy {
    /// The mark of a report with this trust at arrival.
    pub fn mark(&self, trust: Option<&ArrivalTrust>) -> TrustMark {
        let Some(trust) = trust else {
            return TrustMark::UNSCORED;
        };
        let score = trust.score.get();
        let why_low = if score < self.low_below {
            let reasons: Vec<&str> = trust.reasons.iter().map(|r| r.as_str()).collect();
            Some(if reasons.is_empty() {
                format!("trust score {score} at arrival is below {}", self.low_below)
            } else {
                format!(
                    "trust score {score} at arrival is below {} ({})",
                    self.low_below,
                    reasons.join(", ")
                )
            })
        } else if self.key_changed_is_low && trust.signature == SignatureCheck::KeyChanged {
            Some("the probe's signing key changed".to_owned())
        } else {
            None
        };
        TrustMark {
            score: Some(score),
            low: why_low.is_some(),
            signature: Some(trust.signature),
            reasons: trust.reasons.clone(),
            why_low,
        }
    }
}

#[cfg(test)]
mod tests {
    use lineprobe_shared::TrustScore;

    use super::*;

    fn trust(score: u8, signature: SignatureCheck, reasons: Vec<TrustReason>) -> ArrivalTrust {
        let s = TrustScore::new(score).unwrap();
        ArrivalTrust {
            score: s,
            install: s,
            prefix: s,
            signature,
            reasons,
        }
    }

    #[test]
    fn unscored_reports_are_not_low() {
        assert_eq!(TrustPolicy::default().mark(None), TrustMark::UNSCORED);
    }

    #[test]
    fn a_score_below_the_threshold_is_low_with_the_receivers_reasons() {
        let policy = TrustPolicy::default();
        let mark = policy.mark(Some(&trust(
            20,
            SignatureCheck::Unsigned,
            vec![TrustReason::AnomalyEpisode, TrustReason::Unsigned],
        )));
        assert!(mark.low);
        assert_eq!(mark.score, Some(20));
        assert_eq!(
            mark.why_low.as_deref(),
            Some("trust score 20 at arrival is below 50 (anomaly_episode, unsigned)")
        );
        let fine = policy.mark(Some(&trust(50, SignatureCheck::Verified, Vec::new())));
        assert!(!fine.low, "{fine:?}");
        assert_eq!(fine.why_low, None);
    }

    #[test]
    fn a_changed_key_is_low_unless_the_policy_says_otherwise() {
        let t = trust(
            90,
            SignatureCheck::KeyChanged,
            vec![TrustReason::KeyChanged],
        );
        assert!(TrustPolicy::default().mark(Some(&t)).low);
        let lenient = TrustPolicy {
            key_changed_is_low: false,
            ..TrustPolicy::default()
        };
        assert!(!lenient.mark(Some(&t)).low);
    }
}
