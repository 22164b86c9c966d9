//! Findings of a review of the address classifier, the first public hop and
//! the catalogs: each test failed before its fix.

use std::net::IpAddr;

use ipnet::IpNet;
use lineprobe_shared::{Classifier, ClassifierConfig, Error};

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test address {s}: {e}"))
}

fn net(s: &str) -> IpNet {
    s.parse()
        .unwrap_or_else(|e| panic!("bad test CIDR {s}: {e}"))
}

fn lab(cidrs: &[&str]) -> Result<Classifier, Error> {
    Classifier::new(&ClassifierConfig {
        extra_public: cidrs.iter().map(|s| net(s)).collect(),
    })
}

/// An extra-public IPv6 CIDR over a form that carries IPv4 addresses makes
/// the embedded addresses public: `64:ff9b::/96` was accepted and made
/// NAT64's 127.0.0.1 and 100.64.0.1 public, although `127.0.0.0/8`,
/// `100.64.0.0/10` and their IPv4-mapped forms are refused.
#[test]
fn extra_public_refuses_wrapped_forms_of_what_is_never_public() {
    for (cidr, words) in [
        ("64:ff9b::/96", "loopback"),
        ("64:ff9b::7f00:0/104", "loopback"),
        ("64:ff9b::6440:0/106", "carrier-grade NAT"),
        ("64:ff9b::e000:0/100", "multicast"),
        ("64:ff9b::/128", "unspecified"),
        ("2002::/16", "loopback"),
        ("2002:6440::/26", "carrier-grade NAT"),
        ("2002:7f00:1::/48", "loopback"),
        ("2002:7f00:1:2::/64", "loopback"),
        // Teredo keeps the client's address inverted: 127.0.0.0/8 is
        // 80ff:ffff and below.
        ("2001::/32", "loopback"),
        ("2001:0:4136:e378::80ff:0/112", "loopback"),
        // Wider CIDRs that hold a whole wrapper.
        ("2000::/3", "loopback"),
        ("::/1", "loopback"),
    ] {
        let err = lab(&["203.0.113.0/24", cidr]).expect_err(cidr);
        let Error::Config { key, reason } = &err else {
            panic!("{cidr}: expected a configuration error, got {err}");
        };
        assert_eq!(key, "extra_public[1]", "{cidr}");
        assert!(reason.contains(words), "{cidr}: {reason}");
        assert!(reason.contains(&net(cidr).to_string()), "{cidr}: {reason}");
    }
}

#[test]
fn extra_public_accepts_wrapped_forms_of_a_lab_range() {
    // NAT64, 6to4 and Teredo forms of TEST-NET-3 (Teredo inverted).
    for cidr in [
        "64:ff9b::cb00:7100/120",
        // Not unwrapped without a configured NAT64 prefix (tests/nat64.rs
        // checks these against configured ones).
        "64:ff9b:1::/48",
        "64:ff9b:1:abcd::cb00:7100/120",
        "2002:cb00:7100::/40",
        "2002:cb00:7105:1::/64",
        "2001:0:4136:e378::34ff:8e00/120",
        "2001:db8::/32",
    ] {
        let classifier = lab(&[cidr]).unwrap_or_else(|e| panic!("{cidr}: {e}"));
        assert!(!classifier.extra_public().is_empty());
    }
    let classifier = lab(&["64:ff9b::cb00:7100/120"]).unwrap();
    assert!(classifier.classify(ip("64:ff9b::203.0.113.9")).is_public());
    assert!(!classifier.classify(ip("64:ff9b::127.0.0.1")).is_public());
    assert!(!classifier.classify(ip("64:ff9b::100.64.0.1")).is_public());
}
