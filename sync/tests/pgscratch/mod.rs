//! Scratch PostgreSQL databases for the tests: a fresh database per test on
//! the server `LINEPROBE_TEST_PG` names, dropped afterwards. Without that
//! server the PostgreSQL half of a test is skipped with a printed reason,
//! unless `LINEPROBE_REQUIRE_LAB=1` (as in CI), which makes it a failure.
//!
//! Included by path from every test crate (and benchmark) that needs it.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)] // each user takes what it needs

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Connection as _;

/// Whether a missing lab prerequisite is a failure (CI) or a skip.
pub fn lab_required() -> bool {
    std::env::var("LINEPROBE_REQUIRE_LAB").is_ok_and(|v| v == "1")
}

/// A database created for one test.
#[derive(Debug, Clone)]
pub struct ScratchPg {
    /// The server's URL as `LINEPROBE_TEST_PG` gave it.
    pub admin_url: String,
    /// The database's name, `lp_t_<kind>_<pid>_<time>_<n>`.
    pub name: String,
    /// The URL of the new database.
    pub url: String,
}

impl ScratchPg {
    /// Creates a fresh database for `test`, named after `kind` (which suite
    /// made it, so a leftover says where it came from); `None` with the
    /// reason printed when no server can be had and the lab is not
    /// required.
    pub async fn create(test: &str, kind: &str) -> Option<ScratchPg> {
        let skip = |reason: String| {
            assert!(
                !lab_required(),
                "{test}: LINEPROBE_REQUIRE_LAB=1 but PostgreSQL cannot be used: {reason}"
            );
            eprintln!(
                "SKIPPED {test} on PostgreSQL: {reason} (set LINEPROBE_TEST_PG=postgres://… to \
                 run it, LINEPROBE_REQUIRE_LAB=1 to fail instead)"
            );
            None
        };
        let Ok(admin_url) = std::env::var("LINEPROBE_TEST_PG") else {
            return skip("LINEPROBE_TEST_PG is not set".to_owned());
        };
        let mut admin = match tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::PgConnection::connect(&admin_url),
        )
        .await
        {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return skip(format!("cannot connect to LINEPROBE_TEST_PG: {e}")),
            Err(_) => return skip("connecting to LINEPROBE_TEST_PG timed out".to_owned()),
        };
        let name = unique_name(kind);
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = with_database(&admin_url, &name);
        Some(ScratchPg {
            admin_url,
            name,
            url,
        })
    }

    /// Drops the database, whoever is still connected to it.
    pub async fn drop_database(&self) -> Result<(), sqlx::Error> {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await?;
        admin.close().await
    }
}

/// `lp_t_<kind>_<pid>_<time>_<n>`: unique across parallel tests and runs.
fn unique_name(kind: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "lp_t_{kind}_{}_{}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The URL with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{name}{query}", &base[..authority_end])
}
