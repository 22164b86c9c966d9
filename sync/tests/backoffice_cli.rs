//! `lineprobe-sync user …` as an operator runs it (the binary, the password
//! piped in), and the `[backoffice]` configuration section.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use lineprobe_sync::{BackofficeConfig, Store, SyncConfig};

/// Runs the binary with `args` on `db`, `stdin` piped in.
fn sync(db: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lineprobe-sync"))
        .arg("--database")
        .arg(db)
        .args(args)
        .env("USER", "operator")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused before it reads its password exits without reading
    // standard input: the pipe may be closed by the time it is written.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines, reason = "one operator session, step by step")]
async fn users_are_managed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("sync.db").display());

    let added = sync(
        &db,
        &["user", "add", "ann", "--role", "admin"],
        "correct horse battery\n",
    );
    assert!(added.status.success(), "{}", text(&added.stderr));
    assert_eq!(text(&added.stdout), "user ann added (admin)\n");

    // Mistakes are refused with exit code 2 and a reason.
    let cases = [
        (
            &["user", "add", "ann", "--role", "viewer"][..],
            "another long password\n",
            "exists",
        ),
        (
            &["user", "add", "ANN", "--role", "viewer"][..],
            "another long password\n",
            "user \"ann\" exists",
        ),
        (
            &["user", "add", "bo", "--role", "viewer"][..],
            "short\n",
            "at least 12",
        ),
        (
            &["user", "add", "b o", "--role", "viewer"][..],
            "long enough password\n",
            "not a user name",
        ),
        (
            &["user", "add", "bo", "--role", "viewer"][..],
            "",
            "no password on standard input",
        ),
        (
            &["user", "passwd", "nobody"][..],
            "long enough password\n",
            "no user \"nobody\"",
        ),
        (&["user", "disable", "nobody"][..], "", "no user \"nobody\""),
    ];
    for (args, stdin, want) in cases {
        let out = sync(&db, args, stdin);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let bad_role = sync(&db, &["user", "add", "bo", "--role", "root"], "x\n");
    assert_eq!(bad_role.status.code(), Some(2));

    let store = Store::open(&db).await.unwrap();
    let before = store.user_by_name("ann").await.unwrap().unwrap();
    assert!(before.password_hash.starts_with("$argon2id$"));
    store.close().await;

    let changed = sync(&db, &["user", "passwd", "ann"], "a new long passphrase\r\n");
    assert!(changed.status.success(), "{}", text(&changed.stderr));
    // Ann is the only admin: disabling her is refused without --force,
    // and nothing changes.
    let refused = sync(&db, &["user", "disable", "ann"], "");
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused.stdout));
    for want in ["\"ann\" is the last enabled admin", "--force"] {
        assert!(
            text(&refused.stderr).contains(want),
            "{want}: {}",
            text(&refused.stderr)
        );
    }
    let store = Store::open(&db).await.unwrap();
    assert!(!store.user_by_name("ann").await.unwrap().unwrap().disabled);
    store.close().await;
    let disabled = sync(&db, &["user", "disable", "ann", "--force"], "");
    assert!(disabled.status.success(), "{}", text(&disabled.stderr));
    assert!(text(&disabled.stdout).contains("no enabled admin is left"));
    let viewer = sync(
        &db,
        &["user", "add", "vic", "--role", "viewer"],
        "viewer password 1\n",
    );
    assert!(viewer.status.success());
    let role = sync(&db, &["user", "role", "vic", "admin"], "");
    assert!(role.status.success());
    let enabled = sync(&db, &["user", "enable", "ann"], "");
    assert!(enabled.status.success());

    let listed = sync(&db, &["user", "list"], "");
    let users: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let users = users.as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert_eq!(users[0]["name"], "ann");
    assert_eq!(users[0]["disabled"], false);
    assert_eq!(users[1]["role"], "admin");
    assert!(
        !text(&listed.stdout).contains("argon2"),
        "hashes stay out of listings"
    );

    let store = Store::open(&db).await.unwrap();
    let after = store.user_by_name("ann").await.unwrap().unwrap();
    assert_ne!(after.password_hash, before.password_hash);
    let log = store.audit_page(None, None, 20).await.unwrap();
    let actions: Vec<&str> = log.iter().rev().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "user_add",
            "user_passwd",
            "user_disable",
            "user_add",
            "user_role",
            "user_enable"
        ]
    );
    assert!(log.iter().all(|r| r.actor == "cli:operator"));
    store.close().await;
}

/// Starts `lineprobe-sync ARGS` with `config`, waits until its back office
/// answers on `port`, and returns the child.
fn start_serving(config: &std::path::Path, args: &[&str], port: u16) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_lineprobe-sync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the back office did not start listening"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child
}

/// `GET path` over plain HTTP/1.1; the status line and headers.
fn http_get(port: u16, path: &str) -> String {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Sends SIGTERM and waits; the exit status and standard error.
fn stop(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status, stderr)
}

#[test]
fn serve_and_run_answer_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    for (args, enabled) in [(&["serve"][..], false), (&["run"][..], true)] {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.path().join("sync.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"data\"\n[pull]\ninterval_s = 3600\n[backoffice]\nenabled = \
                 {enabled}\nlisten = \"127.0.0.1:{port}\"\nallow_plain_http = true\n"
            ),
        )
        .unwrap();
        let child = start_serving(&config, args, port);
        let login = http_get(port, "/login");
        assert!(login.starts_with("HTTP/1.1 200"), "{args:?}: {login}");
        // Plain HTTP was asked for: the cookies say so (no Secure, no
        // __Host- prefix), still HttpOnly and SameSite=Strict.
        assert!(
            login.contains("set-cookie: lp_login=") && login.contains("HttpOnly; SameSite=Strict"),
            "{login}"
        );
        assert!(!login.contains("Secure"));
        let lines = http_get(port, "/lines");
        assert!(lines.starts_with("HTTP/1.1 303"), "{lines}");
        let (status, stderr) = stop(child);
        assert!(status.success(), "{args:?}: {status} {stderr}");
        assert!(
            stderr.contains("no back-office user exists yet"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn the_backoffice_section_is_checked() {
    let load = |text: &str| {
        SyncConfig::from_toml_with_env(text, "test.toml", [])
            .and_then(|c| c.validate().map(|()| c))
            .map_err(|e| e.to_string())
    };
    let config = load("").unwrap();
    assert!(!config.backoffice.enabled);
    assert!(!config.backoffice.allow_plain_http);
    let bad = [
        ("[backoffice]\ntls_cert = \"a.pem\"\n", "tls_key"),
        (
            "[backoffice]\nallow_plain_http = true\nlisten = \"0.0.0.0:8450\"\n",
            "loopback",
        ),
        (
            "[backoffice]\nallow_plain_http = true\nbehind_proxy = true\n",
            "choose one",
        ),
        ("[backoffice]\nsession_ttl_s = 10\n", "session_ttl_s"),
        ("[backoffice]\nsession_idle_s = 100000\n", "session_idle_s"),
        ("[backoffice]\nmanifest_validity_days = 401\n", "400"),
        ("[backoffice]\npage_size = 5\n", "page_size"),
        (
            "[backoffice]\nutc_offset_minutes = 9999\n",
            "utc_offset_minutes",
        ),
        ("[backoffice]\nlisten = \"nowhere\"\n", "socket address"),
        ("[backoffice]\nsesion_ttl_s = 60\n", "sesion_ttl_s"),
        (
            "[backoffice]\nbehind_proxy = true\ntls_cert = \"a.pem\"\ntls_key = \"b.pem\"\n",
            "remove tls_cert",
        ),
        (
            "[backoffice]\nlogin_free_failures = 21\n",
            "login_free_failures",
        ),
        ("[backoffice]\nlogin_backoff_s = 0\n", "login_backoff_s"),
        (
            "[backoffice]\nlogin_backoff_s = 120\nlogin_backoff_max_s = 60\n",
            "login_backoff_s",
        ),
        (
            "[backoffice]\nlogin_backoff_max_s = 90000\n",
            "login_backoff_max_s",
        ),
        (
            "[backoffice]\nlogin_failure_window_s = 10\n",
            "login_failure_window_s",
        ),
        ("[backoffice]\nexport_max_rows = 0\n", "export_max_rows"),
        (
            "[backoffice]\ndashboard_max_age_s = 0\n",
            "dashboard_max_age_s",
        ),
        (
            "[backoffice]\ntraffic_max_age_s = 601\n",
            "traffic_max_age_s",
        ),
        (
            "[pipeline]\nlow_trust_below = 101\n",
            "pipeline.low_trust_below",
        ),
        (
            "[pipeline]\nsource_retry_minutes = 10081\n",
            "pipeline.source_retry_minutes",
        ),
    ];
    for (text, want) in bad {
        let error = load(text).unwrap_err();
        assert!(error.contains(want), "{text}: {error}");
    }
    let plain =
        load("[backoffice]\nallow_plain_http = true\nlisten = \"127.0.0.1:9000\"\n").unwrap();
    assert_eq!(plain.backoffice.listen.port(), 9000);
}

#[test]
fn the_example_configuration_documents_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sync.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let config = SyncConfig::from_toml_with_env(&text, path, []).unwrap();
    let shown = config.backoffice;
    let default = BackofficeConfig::default();
    assert_eq!(format!("{shown:?}"), format!("{default:?}"));
}

/// Demoting the last enabled admin, like disabling them, is refused
/// unless `--force` (the back office's users page would be out of
/// everyone's reach), in the same guarded update the users page makes;
/// with another enabled admin it is done, and with `--force` it is done
/// with a warning.
#[test]
fn demoting_the_last_admin_needs_force() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("sync.db").display());
    for (name, role) in [("ann", "admin"), ("bob", "admin"), ("vic", "viewer")] {
        let added = sync(
            &db,
            &["user", "add", name, "--role", role],
            "correct horse battery\n",
        );
        assert!(added.status.success(), "{}", text(&added.stderr));
    }
    // Bob remains: Ann is demoted without a word about admins.
    let demoted = sync(&db, &["user", "role", "ann", "viewer"], "");
    assert!(demoted.status.success(), "{}", text(&demoted.stderr));
    assert!(!text(&demoted.stdout).contains("no enabled admin"));
    // Bob is the last one now.
    for args in [
        &["user", "role", "bob", "viewer"][..],
        &["user", "disable", "bob"][..],
    ] {
        let refused = sync(&db, args, "");
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        let said = text(&refused.stderr);
        assert!(said.contains("\"bob\" is the last enabled admin"), "{said}");
        assert!(said.contains("--force"), "{said}");
    }
    // A viewer is still disabled freely, and an admin still made.
    let disabled = sync(&db, &["user", "disable", "vic"], "");
    assert!(disabled.status.success(), "{}", text(&disabled.stderr));
    let listed = sync(&db, &["user", "list"], "");
    let users: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let bob = &users.as_array().unwrap()[1];
    assert_eq!(
        (&bob["name"], &bob["role"], &bob["disabled"]),
        (&"bob".into(), &"admin".into(), &false.into())
    );

    let forced = sync(&db, &["user", "role", "bob", "viewer", "--force"], "");
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert!(
        text(&forced.stdout).contains("no enabled admin is left"),
        "{}",
        text(&forced.stdout)
    );
    let promoted = sync(&db, &["user", "role", "ann", "admin"], "");
    assert!(promoted.status.success(), "{}", text(&promoted.stderr));
    assert!(!text(&promoted.stdout).contains("no enabled admin"));
}
