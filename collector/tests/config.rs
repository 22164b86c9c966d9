//! The collector configuration: the example file, defaults, environment
//! overrides, flags, and the messages that say what to fix.

use std::path::PathBuf;

use lineprobe_collector::{CollectorConfig, Overrides};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/collector.example.toml")
}

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn err(text: &str) -> String {
    CollectorConfig::from_toml_with_env(text, "test.toml", no_env(), &Overrides::default())
        .expect_err("should be refused")
        .to_string()
}

#[test]
fn example_file_parses_and_equals_the_defaults() {
    let from_file = CollectorConfig::load(Some(&example()), no_env(), &Overrides::default())
        .expect("config/collector.example.toml is valid");
    let defaults = CollectorConfig::load(None, no_env(), &Overrides::default()).expect("defaults");
    assert_eq!(
        from_file, defaults,
        "the example must document the defaults exactly"
    );
}

#[test]
fn example_file_documents_every_key() {
    let text = std::fs::read_to_string(example()).expect("read example");
    let defaults = toml::Value::try_from(CollectorConfig::default()).expect("serialize defaults");
    let mut missing = Vec::new();
    let toml::Value::Table(sections) = defaults else {
        panic!("table")
    };
    for (section, value) in sections {
        match value {
            toml::Value::Table(keys) => {
                assert!(
                    text.contains(&format!("[{section}]")),
                    "section [{section}] missing"
                );
                for key in keys.keys() {
                    if !text.contains(&format!("{key} =")) && !text.contains(&format!("# {key} ="))
                    {
                        missing.push(format!("{section}.{key}"));
                    }
                }
            }
            _ => {
                if !text.contains(&format!("{section} =")) {
                    missing.push(section);
                }
            }
        }
    }
    // Optional keys with no default are shown commented out.
    for optional in ["client_ca", "cert", "key"] {
        assert!(
            text.contains(&format!("# {optional} =")),
            "{optional} not documented"
        );
    }
    assert!(
        missing.is_empty(),
        "keys not documented in the example: {missing:?}"
    );
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let e = err("[public]\nlisten_addr = \"0.0.0.0:1\"\n");
    assert!(e.contains("listen_addr"), "{e}");
    let e = err("colour = true\n");
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn environment_overrides_keys_and_the_token() {
    let env = vec![
        (
            "LINEPROBE_COLLECTOR__PUBLIC__LISTEN".to_owned(),
            "127.0.0.1:18443".to_owned(),
        ),
        (
            "LINEPROBE_COLLECTOR__LIMITS__MAX_CONNECTIONS".to_owned(),
            "77".to_owned(),
        ),
        (
            "LINEPROBE_COLLECTOR__NODE_ID".to_owned(),
            "edge-7".to_owned(),
        ),
        ("LINEPROBE_EXPORT_TOKEN".to_owned(), "t".repeat(40)),
        ("UNRELATED".to_owned(), "x".to_owned()),
    ];
    let c =
        CollectorConfig::from_toml_with_env("", "test", env, &Overrides::default()).expect("valid");
    assert_eq!(c.public.listen.to_string(), "127.0.0.1:18443");
    assert_eq!(c.limits.max_connections, 77);
    assert_eq!(c.node_id, "edge-7");
    assert_eq!(c.export.token.len(), 40);
}

#[test]
fn an_unknown_environment_key_is_an_error() {
    let env = vec![(
        "LINEPROBE_COLLECTOR__PUBLIC__LISTN".to_owned(),
        "x".to_owned(),
    )];
    let e = CollectorConfig::from_toml_with_env("", "test", env, &Overrides::default())
        .expect_err("typo")
        .to_string();
    assert!(e.contains("listn"), "{e}");
}

#[test]
fn a_malformed_environment_key_is_a_configuration_error_naming_it() {
    for (name, says) in [
        (
            "LINEPROBE_COLLECTOR__PUBLIC____LISTEN",
            "LINEPROBE_COLLECTOR__PUBLIC__LISTEN",
        ),
        (
            "LINEPROBE_COLLECTOR__NODE_ID__X",
            "`node_id` is not a section",
        ),
    ] {
        let env = vec![(name.to_owned(), "1".to_owned())];
        let toml = "node_id = \"edge-7\"\n";
        let e = CollectorConfig::from_toml_with_env(toml, "test", env, &Overrides::default())
            .expect_err("malformed");
        assert!(
            matches!(e, lineprobe_collector::Error::Config { .. }),
            "{e}"
        );
        let e = e.to_string();
        assert!(e.contains(name) && e.contains(says), "{e}");
    }
}

#[test]
fn flags_win_over_file_and_environment() {
    let env = vec![(
        "LINEPROBE_COLLECTOR__PUBLIC__LISTEN".to_owned(),
        "127.0.0.1:1".to_owned(),
    )];
    let o = Overrides {
        listen: Some("127.0.0.1:2".parse().expect("addr")),
        export_listen: Some("127.0.0.1:3".parse().expect("addr")),
        data_dir: Some(PathBuf::from("/tmp/x")),
        plain_http: true,
    };
    let c =
        CollectorConfig::from_toml_with_env("[public]\nlisten = \"127.0.0.1:9\"\n", "t", env, &o)
            .expect("valid");
    assert_eq!(c.public.listen.port(), 2);
    assert_eq!(c.export.listen.port(), 3);
    assert!(c.public.plain_http && c.export.plain_http);
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
}

#[test]
fn validation_messages_say_what_to_do() {
    for (text, says) in [
        ("[public]\nplain_http = true\n", "behind_proxy = true"),
        ("[export]\nlisten = \"0.0.0.0:8443\"\n", "must not share"),
        ("[export]\ntoken = \"short\"\n", "at least 32 characters"),
        ("[public]\npaths = []\n", "at least one path"),
        ("[public]\npaths = [\"/a/b*\"]\n", "public.paths[0]"),
        ("[public]\nproxy_protocol = true\n", "trusted_proxies"),
        (
            "[public]\nbehind_proxy = true\n",
            "every report would record the proxy's address",
        ),
        ("[tls]\ncert = \"/x.pem\"\n", "tls.key"),
        ("[limits]\nheader_read_timeout_ms = 0\n", "10 to 600000"),
        ("[limits]\nmax_body_bytes = 10\n", "at least 1024"),
        (
            "[limits]\nmax_body_bytes = 100000000\n",
            "`limits.max_body_bytes`: 100000000 bytes is above",
        ),
        (
            "[limits]\nmax_decompressed_bytes = 100000000\n",
            "`limits.max_decompressed_bytes`: 100000000 bytes is above",
        ),
        // The schema's own limit leaves no room for the envelope.
        (
            "[limits]\nmax_decompressed_bytes = 1048576\n",
            "`limits.max_decompressed_bytes`: 1048576 bytes is above the largest report that \
             can be stored",
        ),
        (
            "[limits]\nmax_decompressed_bytes = 1048576\n",
            "use at most 983040",
        ),
        (
            "[limits]\nmax_connections = 2000000\n",
            "`limits.max_connections`: 2000000 is out of range: use 1 to 1000000",
        ),
        (
            "[limits]\nmax_concurrent_requests = 2305843009213693952\n",
            "`limits.max_concurrent_requests`: 2305843009213693952 is out of range",
        ),
        (
            "[limits]\nmax_connections_per_prefix = 1000001\n",
            "`limits.max_connections_per_prefix`: 1000001 is out of range",
        ),
        (
            "[limits]\nmax_connections_per_prefix = 0\n",
            "`limits.max_connections_per_prefix`: 0 is too small",
        ),
        ("[export]\nmax_batch = 0\n", "export.max_batch"),
        ("node_id = \"bad id!\"\n", "node name"),
        ("[staging]\nmax_reports = 0\n", "staging.max_reports"),
        ("[public\n", "not valid TOML"),
    ] {
        let e = err(text);
        assert!(
            e.contains(says),
            "{text:?} gave {e:?}, expected it to mention {says:?}"
        );
    }
}

/// Durations that would overflow a timer's deadline (or that are zero where
/// zero breaks something) are refused with the range to use; the bounds
/// themselves are accepted.
#[test]
fn duration_knobs_are_bounded_both_ways() {
    let max = i64::MAX;
    for (text, says) in [
        (
            format!("[tls]\nreload_check_secs = {max}\n"),
            format!("`tls.reload_check_secs`: {max} s is out of range: use 1 to 86400"),
        ),
        (
            "[tls]\nreload_check_secs = 86401\n".to_owned(),
            "`tls.reload_check_secs`: 86401 s is out of range: use 1 to 86400".to_owned(),
        ),
        (
            "[tls]\nreload_check_secs = 0\n".to_owned(),
            "`tls.reload_check_secs`: 0 s is out of range: use 1 to 86400".to_owned(),
        ),
        (
            format!("[shutdown]\ngrace_secs = {max}\n"),
            format!("`shutdown.grace_secs`: {max} s is out of range: use 0 to 3600"),
        ),
        (
            "[staging]\nretention_hours = 0\n".to_owned(),
            "`staging.retention_hours`: use at least 1".to_owned(),
        ),
        (
            "[staging]\nfull_retry_after_secs = 0\n".to_owned(),
            "`staging.full_retry_after_secs`: 0 s is out of range: use 1 to 86400".to_owned(),
        ),
        (
            format!("[staging]\nfull_retry_after_secs = {max}\n"),
            format!("`staging.full_retry_after_secs`: {max} s is out of range: use 1 to 86400"),
        ),
    ] {
        let e = err(&text);
        assert!(
            e.contains(&says),
            "{text:?} gave {e:?}, expected it to mention {says:?}"
        );
    }
    // From the environment too.
    let e = CollectorConfig::from_toml_with_env(
        "",
        "test.toml",
        vec![(
            "LINEPROBE_COLLECTOR__TLS__RELOAD_CHECK_SECS".to_owned(),
            max.to_string(),
        )],
        &Overrides::default(),
    )
    .expect_err("should be refused")
    .to_string();
    assert!(e.contains("tls.reload_check_secs"), "{e}");

    let edges = "[tls]\nreload_check_secs = 86400\n[shutdown]\ngrace_secs = 3600\n\
                 [staging]\nretention_hours = 1\nfull_retry_after_secs = 86400\n";
    CollectorConfig::from_toml_with_env(edges, "test.toml", no_env(), &Overrides::default())
        .expect("the bounds themselves are accepted");
    let low = "[tls]\nreload_check_secs = 1\n[shutdown]\ngrace_secs = 0\n\
               [staging]\nfull_retry_after_secs = 1\n";
    CollectorConfig::from_toml_with_env(low, "test.toml", no_env(), &Overrides::default())
        .expect("the lower bounds are accepted");
}

/// `limits.max_header_bytes` is also hyper's per-connection buffer limit:
/// bounded both ways, the bounds themselves accepted.
#[test]
fn the_header_limit_is_bounded_both_ways() {
    for value in [65_537, 1 << 30, i64::MAX, 0, 1023] {
        let e = err(&format!("[limits]\nmax_header_bytes = {value}\n"));
        let says =
            format!("`limits.max_header_bytes`: {value} bytes is out of range: use 1024 to 65536");
        assert!(e.contains(&says), "{value} gave {e:?}, expected {says:?}");
    }
    for value in [1024, 8192, 65_536] {
        CollectorConfig::from_toml_with_env(
            &format!("[limits]\nmax_header_bytes = {value}\n"),
            "test.toml",
            no_env(),
            &Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{value} is accepted: {e}"));
    }
}

#[test]
fn enrolment_paths_that_overlap_report_paths_either_way_are_refused() {
    for (report_paths, enrol_paths) in [
        // The report path is matched by an enrolment pattern: the router
        // would take every report posted there for an enrolment.
        ("[\"/api/v1/abc/enrol\"]", "[\"/api/v1/*/enrol\"]"),
        ("[\"/api/v1/x/enrol/y\"]", "[\"/api/**/enrol/*\"]"),
        // Neither pattern's text matches the other, yet /a/b/c is both.
        ("[\"/a/*/c\"]", "[\"/a/b/*\"]"),
        // The old check's case: an enrolment literal that is a report path.
        ("[\"/api/v1/*\"]", "[\"/api/v1/enrol\"]"),
    ] {
        let text =
            format!("[public]\npaths = {report_paths}\n[signing]\nenrol_paths = {enrol_paths}\n");
        let e = err(&text);
        assert!(
            e.contains("signing.enrol_paths[0]") && e.contains("also a report path"),
            "{text:?} gave {e:?}"
        );
    }
    // Patterns that share no path are fine.
    let text = "[public]\npaths = [\"/a/*/c\", \"/api/**/report\"]\n[signing]\nenrol_paths = [\"/a/b/d\", \"/api/*/enrol\"]\n";
    CollectorConfig::from_toml_with_env(text, "test", no_env(), &Overrides::default())
        .expect("valid");
}

#[test]
fn check_config_command_reports_valid_and_invalid_files() {
    let bin = env!("CARGO_BIN_EXE_lineprobe-collector");
    let ok = std::process::Command::new(bin)
        .args(["check-config", "--config"])
        .arg(example())
        .output()
        .expect("run");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid"));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\nmax_conections = 5\n").expect("write");
    let out = std::process::Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_conections"));
}

#[test]
fn check_config_refuses_a_manifest_key_that_serve_would_refuse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.pem");
    for text in [
        "[manifest]\npublic_key = \"not-a-key\"\n".to_owned(),
        format!("[manifest]\npublic_key = \"file:{}\"\n", missing.display()),
    ] {
        let e = err(&text);
        assert!(e.contains("manifest.public_key"), "{text:?} gave {e:?}");
    }

    let bin = env!("CARGO_BIN_EXE_lineprobe-collector");
    let bad = dir.path().join("bad-key.toml");
    std::fs::write(&bad, "[manifest]\npublic_key = \"not-a-key\"\n").expect("write");
    let out = std::process::Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("manifest.public_key"));

    // A good key still passes.
    let key = lineprobe_shared::ManifestSigningKey::generate().verifying_key();
    let text = format!("[manifest]\npublic_key = \"{}\"\n", key.to_base64());
    CollectorConfig::from_toml_with_env(&text, "test.toml", no_env(), &Overrides::default())
        .expect("a valid key is accepted");
}
