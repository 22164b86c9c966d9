//! The configuration file and the declared values.

mod support;

use std::path::PathBuf;

use lineprobe_agent::{AgentConfig, AgentOptions, EndpointSpec, Error};
use lineprobe_shared::LocationSource;

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/agent.example.toml")
}

#[test]
fn the_example_config_parses_and_means_what_it_says() {
    let config = AgentConfig::load(&example_path()).expect("example config");
    assert_eq!(config.endpoints.urls.len(), 3);
    assert!(matches!(
        &config.endpoints.urls[2],
        EndpointSpec::Fronted { sni: Some(sni), .. } if sni == "static.example-cdn.net"
    ));
    assert_eq!(
        config.endpoints.path_patterns,
        lineprobe_agent::DEFAULT_PATH_PATTERNS
            .map(str::to_owned)
            .to_vec()
    );
    assert_eq!(config.schedule.interval_secs, 21600);
    assert_eq!(config.declared.carrier.as_deref(), Some("china_mobile"));
    let location = config.declared.location.expect("location");
    assert_eq!(location.source, LocationSource::User);
    // Every default written in the example is the real default.
    let defaults = AgentConfig::default();
    assert_eq!(config.schedule, defaults.schedule);
    assert_eq!(config.spool, defaults.spool);
    assert_eq!(config.trace, defaults.trace);
    assert_eq!(config.consent, defaults.consent);
    assert_eq!(config.device, defaults.device);
    assert_eq!(config.signing, defaults.signing);
    assert_eq!(
        config.endpoints.connect_timeout_secs,
        defaults.endpoints.connect_timeout_secs
    );
    assert_eq!(
        config.endpoints.request_timeout_secs,
        defaults.endpoints.request_timeout_secs
    );

    // And an agent starts with it (declared values resolve in the catalog).
    let state = tempfile::tempdir().expect("tempdir");
    let agent = lineprobe_agent::Agent::with_engines(
        AgentOptions {
            config,
            state_dir: Some(state.path().to_path_buf()),
            ..AgentOptions::default()
        },
        Vec::new(),
    )
    .expect("agent from the example");
    let urls: Vec<_> = agent
        .settings()
        .expect("settings")
        .endpoints
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect();
    assert_eq!(urls[1], "https://198.51.100.24:8443");
}

#[test]
fn unknown_keys_and_bad_values_are_errors_naming_the_key() {
    let err = AgentConfig::from_toml("[endpoints]\nurl = []\n", "t")
        .expect_err("unknown key")
        .to_string();
    assert!(
        err.contains("unknown field") && err.contains("url"),
        "{err}"
    );
    let err = AgentConfig::from_toml("[endpoints]\nurls = [\"http://c.example.net\"]\n", "t")
        .expect_err("http")
        .to_string();
    assert!(
        err.contains("endpoints.urls") && err.contains("https://"),
        "{err}"
    );
    let err = AgentConfig::from_toml("[endpoints]\npath_patterns = [\"/a*/b\"]\n", "t")
        .expect_err("pattern")
        .to_string();
    assert!(err.contains("path_patterns"), "{err}");
    let err = AgentConfig::from_toml("[schedule]\ninterval_secs = 5\n", "t")
        .expect_err("interval")
        .to_string();
    assert!(err.contains("schedule.interval_secs"), "{err}");

    // Every value rule names the key that breaks it.
    for (toml, key) in [
        (
            "[endpoints]\npath_patterns = []\n",
            "endpoints.path_patterns",
        ),
        (
            "[endpoints]\nconnect_timeout_secs = 0\n",
            "endpoints.connect_timeout_secs",
        ),
        (
            "[endpoints]\nrequest_timeout_secs = 0\n",
            "endpoints.request_timeout_secs",
        ),
        (
            "[schedule]\nretry_base_secs = 0\n",
            "schedule.retry_base_secs",
        ),
        (
            "[schedule]\nretry_base_secs = 600\nretry_max_secs = 60\n",
            "schedule.retry_base_secs",
        ),
        ("[spool]\nmax_reports = 0\n", "spool.max_reports"),
        ("[trace]\nmax_ttl = 0\n", "trace.max_ttl"),
        ("[trace]\nrounds = 0\n", "trace.rounds"),
        // One RTT a round: a report holds at most 16 a hop.
        ("[trace]\nrounds = 17\n", "trace.rounds"),
        // 0 leaves no engine any time; a huge one never ends a stuck trace.
        ("[trace]\ndeadline_secs = 0\n", "trace.deadline_secs"),
        ("[trace]\ndeadline_secs = 3601\n", "trace.deadline_secs"),
        (
            "[schedule]\nretry_max_secs = 99999999\n",
            "schedule.retry_max_secs",
        ),
        (
            "[schedule]\ninterval_secs = 9223372036854775807\n",
            "schedule.interval_secs",
        ),
        (
            "[schedule]\ninterval_secs = 3600\njitter_secs = 7200\n",
            "schedule.jitter_secs",
        ),
        (
            "[schedule]\nmanifest_check_secs = 0\n",
            "schedule.manifest_check_secs",
        ),
        (
            "[schedule]\nmanifest_check_secs = 99999999999\n",
            "schedule.manifest_check_secs",
        ),
        ("[consent]\ntext_version = \" \"\n", "consent.text_version"),
    ] {
        let err = AgentConfig::from_toml(toml, "t")
            .expect_err(toml)
            .to_string();
        assert!(err.contains(key), "{toml}: {err}");
    }
}

/// What goes into every report is held to the report's rules when the
/// config is read: otherwise every probe would be refused, unseen.
#[test]
fn config_values_a_report_would_refuse_are_errors_naming_the_key() {
    let long_address = format!("[declared]\naddress = \"{}\"\n", "巷".repeat(300));
    let long_account = format!("[declared]\naccount = \"{}\"\n", "1".repeat(65));
    let long_version = format!("[consent]\ntext_version = \"{}\"\n", "v".repeat(65));
    for (toml, key) in [
        ("[declared]\naddress = \"a\\nb\"\n", "declared.address"),
        (&long_address, "declared.address"),
        (
            "[declared]\naccount = \"0755\\t1234\"\n",
            "declared.account",
        ),
        (&long_account, "declared.account"),
        (
            "[declared]\naccount = \"0755\\u200B1234\"\n",
            "declared.account",
        ),
        (&long_version, "consent.text_version"),
        (
            "[declared.location]\nlatitude = nan\nlongitude = 114.0\n",
            "declared.location.latitude",
        ),
        (
            "[declared.location]\nlatitude = 22.5\nlongitude = 200.0\n",
            "declared.location.longitude",
        ),
        (
            "[declared.location]\nlatitude = 22.5\nlongitude = 114.0\naccuracy_m = -1.0\n",
            "declared.location.accuracy_m",
        ),
    ] {
        let err = AgentConfig::from_toml(toml, "t")
            .expect_err(toml)
            .to_string();
        assert!(err.contains(key), "{toml}: {err}");
        // The same checks guard an agent built from a config in code.
        let config: AgentConfig = toml::from_str(toml).expect("parses");
        let state = tempfile::tempdir().expect("tempdir");
        let options = AgentOptions {
            config,
            state_dir: Some(state.path().to_path_buf()),
            ..AgentOptions::default()
        };
        let err = lineprobe_agent::Agent::with_engines(options, Vec::new())
            .expect_err(toml)
            .to_string();
        assert!(err.contains(key), "{toml}: {err}");
    }
}

fn agent_with(declared: &str) -> Result<lineprobe_agent::Agent, Error> {
    let config = AgentConfig::from_toml(&format!("[declared]\n{declared}\n"), "t").expect("parses");
    let state = tempfile::tempdir().expect("tempdir");
    lineprobe_agent::Agent::with_engines(
        AgentOptions {
            config,
            state_dir: Some(state.path().to_path_buf()),
            ..AgentOptions::default()
        },
        Vec::new(),
    )
}

#[test]
fn a_wrong_declared_value_is_an_error_listing_the_valid_choices() {
    let err = agent_with("carrier = \"China Mobil\"")
        .expect_err("typo")
        .to_string();
    assert!(
        err.contains("carrier") && err.contains("China Mobil"),
        "{err}"
    );
    assert!(
        err.contains("china_mobile (中国移动)") && err.contains("china_telecom (中国电信)"),
        "{err}"
    );

    let err = agent_with("province = \"Atlantis\"")
        .expect_err("province")
        .to_string();
    assert!(
        err.contains("CN-GD (广东省)") && err.contains("CN-BJ"),
        "{err}"
    );

    let err = agent_with("province = \"广东\"\ncity = \"杭州\"")
        .expect_err("city elsewhere")
        .to_string();
    assert!(
        err.contains("city") && err.contains("深圳市") && !err.contains("杭州市 ("),
        "{err}"
    );

    // Spellings the catalog knows are fine.
    agent_with("province = \"Guangdong\"\ncity = \"440300\"\ncarrier = \"CMCC\"").expect("valid");
    agent_with("").expect("nothing declared is fine");
}

#[test]
fn endpoint_overrides_replace_the_configured_list() {
    let config = AgentConfig::load(&example_path()).expect("example config");
    let state = tempfile::tempdir().expect("tempdir");
    let agent = lineprobe_agent::Agent::with_engines(
        AgentOptions {
            config: config.clone(),
            state_dir: Some(state.path().to_path_buf()),
            endpoints: vec!["https://192.0.2.1:9443".to_owned()],
            insecure_skip_verify: false,
        },
        Vec::new(),
    )
    .expect("agent");
    let urls: Vec<_> = agent
        .settings()
        .expect("settings")
        .endpoints
        .iter()
        .map(|e| e.as_str().to_owned())
        .collect();
    assert_eq!(urls, vec!["https://192.0.2.1:9443".to_owned()]);
    let bad = lineprobe_agent::Agent::with_engines(
        AgentOptions {
            config,
            state_dir: Some(state.path().to_path_buf()),
            endpoints: vec!["ftp://x".to_owned()],
            insecure_skip_verify: false,
        },
        Vec::new(),
    );
    assert!(bad.is_err());
}

#[test]
fn a_fronted_endpoint_with_a_wrong_key_names_it() {
    let err = AgentConfig::from_toml(
        "[endpoints]\nurls = [{ url = \"https://203.0.113.7\", snii = \"cdn.example.com\" }]\n",
        "t",
    )
    .expect_err("unknown key")
    .to_string();
    assert!(err.contains("snii") && err.contains("sni"), "{err}");
    let err = AgentConfig::from_toml("[endpoints]\nurls = [{ sni = \"cdn.example.com\" }]\n", "t")
        .expect_err("missing url")
        .to_string();
    assert!(err.contains("url"), "{err}");
    let ok = AgentConfig::from_toml(
        "[endpoints]\nurls = [\"https://198.51.100.1\", { url = \"https://203.0.113.7\", sni = \"cdn.example.com\" }]\n",
        "t",
    );
    assert!(ok.is_ok(), "{ok:?}");
}

#[test]
fn a_ca_file_that_is_missing_or_holds_no_certificate_says_so() {
    use lineprobe_agent::TransportOptions;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let err = TransportOptions::load_pinned(&missing)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("endpoints.ca_file") && err.contains("missing.pem"),
        "{err}"
    );

    // A private key given by mistake: PEM, but no certificate in it.
    let key = dir.path().join("key.pem");
    let pair = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(&key, pair.signing_key.serialize_pem()).unwrap();
    let err = TransportOptions::load_pinned(&key).unwrap_err();
    assert!(matches!(&err, Error::Config { key, .. } if key == "endpoints.ca_file"));
    assert!(err.to_string().contains("no PEM certificate"), "{err}");

    let cert = dir.path().join("ca.pem");
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    assert_eq!(TransportOptions::load_pinned(&cert).unwrap().len(), 1);
}

#[test]
fn a_multi_line_address_says_to_write_one_line() {
    let err = AgentConfig::from_toml("[declared]\naddress = \"3 巷\\n7 号\"\n", "t")
        .expect_err("two lines")
        .to_string();
    assert!(
        err.contains("declared.address") && err.contains("single line"),
        "{err}"
    );
}

/// A platform whose proxy setting spans several lines, as a system tool's
/// output may.
#[derive(Debug)]
struct MultiLineProxy;

impl lineprobe_agent::Platform for MultiLineProxy {
    fn os_version(&self) -> String {
        "10.0".to_owned()
    }
    fn default_route_mac(&self) -> Option<lineprobe_shared::MacAddress> {
        None
    }
    fn local_addrs(&self) -> Vec<std::net::IpAddr> {
        Vec::new()
    }
    fn system_proxy(&self) -> Option<String> {
        Some(format!(
            "ProxyServer=proxy:3128\r\nProxyOverride=<local>\t{}",
            "x".repeat(600)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_line_proxy_setting_still_makes_a_valid_report() {
    let state = tempfile::tempdir().expect("tempdir");
    let (agent, _) = support::agent(
        state.path(),
        support::agent_config(&[support::dead_endpoint()], None),
        3,
    );
    let agent = agent.with_platform(std::sync::Arc::new(MultiLineProxy));
    agent.accept_consent().expect("consent");
    // `make_report` checks the report against the submission rules.
    let report = agent.make_report().await.expect("a valid report");
    report.validate_submitted().expect("valid");
    let details = report.device.proxy.details.expect("details");
    assert!(
        details.starts_with("ProxyServer=proxy:3128  ProxyOverride=<local> x"),
        "{details}"
    );
    assert!(details.chars().count() <= lineprobe_shared::ReportLimits::MAX_DETAIL_LEN);
}

/// `LINEPROBE_AGENT__SECTION__KEY` sets `section.key` over the file, and is
/// checked like the file; other variables are left alone.
#[test]
fn environment_variables_override_keys() {
    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let config = AgentConfig::from_toml_with_env(
        "[schedule]\ninterval_secs = 3600\n",
        "t",
        env(&[
            ("LINEPROBE_AGENT__SCHEDULE__INTERVAL_SECS", "7200"),
            ("LINEPROBE_AGENT__DECLARED__ACCOUNT", "0755123"),
            ("PATH", "/usr/bin"),
        ]),
    )
    .expect("overridden");
    assert_eq!(config.schedule.interval_secs, 7200);
    assert_eq!(config.declared.account, "0755123");

    let err = AgentConfig::from_toml_with_env(
        "",
        "t",
        env(&[("LINEPROBE_AGENT__SCHEDULE__INTERVAL_SECS", "5")]),
    )
    .expect_err("checked")
    .to_string();
    assert!(err.contains("schedule.interval_secs"), "{err}");
    let err = AgentConfig::from_toml_with_env("", "t", env(&[("LINEPROBE_AGENT__SCHEDULE", "1")]))
        .expect_err("not a key")
        .to_string();
    assert!(err.contains("expected struct ScheduleConfig"), "{err}");
    let err =
        AgentConfig::from_toml_with_env("", "t", env(&[("LINEPROBE_AGENT__SCHEDULE____X", "1")]))
            .expect_err("empty part")
            .to_string();
    assert!(err.contains("double underscores"), "{err}");
}
