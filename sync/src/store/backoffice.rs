//! What the compliance back office keeps and reads: accounts, sessions,
//! login throttling, the audit log, the probe manifests it signed and where
//! they were published, and the fast listings its pages show (lines by
//! keyset, the dashboard's breakdown, probes, quarantine).
//!
//! Both backends run the same SQL text here; the store's `on_reader!` and
//! `on_writer!` macros pick the pool (on SQLite, the read-only pool or the
//! single writer).

use std::fmt::Write as _;

use serde::Serialize;
use sqlx::AssertSqlSafe;

use super::queries::{self, LINE_COLUMNS, LINE_HISTORY, LINE_VERDICTS, Param};
use super::{
    Backend, LineFilter, LineHistoryRow, LineRow, ObservationRow, QuarantineRow, Store, VerdictRow,
    Wanted,
};
use crate::Error;

/// A back-office account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct UserRow {
    /// The account's row.
    pub id: i64,
    /// The sign-in name.
    pub name: String,
    /// `viewer` or `admin`.
    pub role: String,
    /// The argon2id PHC string (never shown).
    #[serde(skip)]
    pub password_hash: String,
    /// A disabled account cannot sign in.
    pub disabled: bool,
    /// When it was created (Unix ms).
    pub created_at_ms: i64,
    /// Its last change (Unix ms).
    pub updated_at_ms: i64,
    /// Its last successful sign-in (Unix ms).
    pub last_login_at_ms: Option<i64>,
}

const USER_COLUMNS: &str = "id, name, role, password_hash, disabled, created_at AS created_at_ms, \
     updated_at AS updated_at_ms, last_login_at AS last_login_at_ms";

/// One change to a back-office account.
#[derive(Debug, Clone, Copy)]
enum UserChange<'a> {
    Password(&'a str),
    Disabled(bool),
    Role(&'a str),
}

/// The condition a change that may take an enabled admin away is made
/// under: the account is no enabled admin, or another enabled admin
/// remains (`$2` is the account's name).
const ANOTHER_ADMIN_REMAINS: &str = " AND (role <> 'admin' OR disabled OR EXISTS ( \
     SELECT 1 FROM users other WHERE other.role = 'admin' AND NOT other.disabled \
     AND other.name <> $2))";

impl UserChange<'_> {
    /// The update, binding the new value, the account's name and the time;
    /// with `keep_an_admin`, made only while another enabled admin remains
    /// when the change can take one away.
    fn statement(self, keep_an_admin: bool) -> String {
        let set = match self {
            Self::Password(_) => "password_hash = $1",
            Self::Disabled(_) => "disabled = $1",
            Self::Role(_) => "role = $1",
        };
        let guard = if keep_an_admin && self.may_remove_an_admin() {
            ANOTHER_ADMIN_REMAINS
        } else {
            ""
        };
        format!("UPDATE users SET {set}, updated_at = $3 WHERE name = $2{guard} RETURNING id")
    }

    /// Whether the change can leave one enabled admin fewer.
    fn may_remove_an_admin(self) -> bool {
        match self {
            Self::Password(_) | Self::Disabled(false) => false,
            Self::Disabled(true) => true,
            Self::Role(role) => role != "admin",
        }
    }

    /// A new password or role invalidates the sessions signed in under the
    /// old one; enabling an account has no session to end.
    fn ends_sessions(self) -> bool {
        !matches!(self, Self::Disabled(false))
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Password(_) => "change the password of",
            Self::Disabled(true) => "disable",
            Self::Disabled(false) => "enable",
            Self::Role(_) => "change the role of",
        }
    }
}

/// What a change to an account's role or enabled state did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserChanged {
    /// It was made.
    Changed,
    /// There is no such account.
    NoSuchUser,
    /// Refused: it would have left no enabled admin.
    LastAdmin,
}

/// A new session, as stored: the token itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession<'a> {
    /// Hex SHA-256 of the cookie's token.
    pub token_hash: &'a str,
    /// The account signed in.
    pub user_id: i64,
    /// The session's anti-forgery token, put in every form.
    pub csrf_token: &'a str,
    /// When it was made (Unix ms).
    pub created_at_ms: i64,
    /// When it ends regardless of use (Unix ms).
    pub expires_at_ms: i64,
    /// The address it was made from.
    pub source_ip: &'a str,
    /// The browser's User-Agent, cut short.
    pub user_agent: &'a str,
    /// The password hash the sign-in was checked against: the session is
    /// made only while the account still has it (and is enabled).
    pub password_hash: &'a str,
}

/// A live session with its account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionUser {
    /// The account's row.
    pub user_id: i64,
    /// The sign-in name.
    pub name: String,
    /// `viewer` or `admin`.
    pub role: String,
    /// Whether the account was disabled since.
    pub disabled: bool,
    /// The session's anti-forgery token.
    pub csrf_token: String,
    /// When the session was made (Unix ms).
    pub created_at_ms: i64,
    /// Its last use (Unix ms).
    pub last_seen_at_ms: i64,
    /// When it ends regardless of use (Unix ms).
    pub expires_at_ms: i64,
}

/// Failed sign-ins under one throttling key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ThrottleState {
    /// Failures counted.
    pub failures: i64,
    /// The last one (Unix ms).
    pub last_failure_ms: i64,
    /// No sign-in under this key before this time (Unix ms).
    pub locked_until_ms: i64,
}

/// What [`Store::throttle_reserve`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ThrottleReservation {
    /// A key is locked until then (Unix ms); nothing was counted.
    Locked { until_ms: i64 },
    /// The check may run and is counted as a failure under every key.
    Reserved(Vec<ReservedFailure>),
}

/// A failure counted ahead of a password check, under one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReservedFailure {
    /// The throttling key.
    pub(crate) key: String,
    /// Its state before (failures 0 when it had none).
    pub(crate) before: ThrottleState,
    /// Its state with the failure counted.
    pub(crate) after: ThrottleState,
}

/// One audit log entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry<'a> {
    /// When (Unix ms).
    pub at_ms: i64,
    /// Who: the account name, `cli:<user>` for the command line, or the
    /// name tried in a failed sign-in.
    pub actor: &'a str,
    /// What: `login`, `login_failed`, `logout`, `user_add`, `export_csv`,
    /// `manifest_publish`…
    pub action: &'a str,
    /// From where.
    pub source_ip: &'a str,
    /// The particulars, as JSON.
    pub detail: &'a serde_json::Value,
}

/// A stored audit log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    /// Its row (increasing).
    pub id: i64,
    /// When (Unix ms).
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// From where.
    pub source_ip: String,
    /// The particulars, as JSON.
    pub detail_json: String,
}

/// A probe manifest signed by the back office.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ManifestRow {
    /// Its serial.
    pub serial: i64,
    /// The manifest JSON, exactly as signed.
    pub manifest_json: String,
    /// The signed wire form (`SignedManifest` JSON).
    pub signed_json: String,
    /// The id of the key that signed it.
    pub key_id: String,
    /// When it was signed (Unix ms).
    pub created_at_ms: i64,
    /// Who signed it.
    pub created_by: String,
}

/// One attempt to publish a manifest to a collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PublicationRow {
    /// The manifest's serial.
    pub serial: i64,
    /// The collector's configured name.
    pub collector: String,
    /// When (Unix ms).
    pub at_ms: i64,
    /// Whether the collector holds the manifest now.
    pub accepted: bool,
    /// The collector's HTTP status, when it answered.
    pub http_status: Option<i64>,
    /// The serial the collector said it holds, when it refused an older one.
    pub collector_serial: Option<i64>,
    /// What happened, in words.
    pub message: String,
}

/// Lines by declared province, declared and actual carrier and verdict:
/// the dashboard's breakdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct BreakdownRow {
    /// Declared province.
    pub province: Option<String>,
    /// Declared carrier.
    pub carrier: Option<String>,
    /// Actual carrier.
    pub actual_carrier: Option<String>,
    /// Current verdict.
    pub verdict: String,
    /// Lines.
    pub lines: i64,
}

/// Lines last seen on one day with one verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TrendRow {
    /// Days since 1970-01-01 (at the offset asked for).
    pub day: i64,
    /// Current verdict.
    pub verdict: String,
    /// Lines.
    pub lines: i64,
}

/// A probe installation, from the line it reported last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ProbeRow {
    /// The installation.
    pub install_id: String,
    /// The line it reports.
    pub line_key: String,
    /// Its last report (Unix ms).
    pub last_seen_ms: i64,
    /// The trace engine of its current observation.
    pub engine: String,
    /// Its agent version.
    pub agent_version: String,
    /// Its operating system.
    pub os: String,
    /// The id of its last report.
    pub last_report_id: String,
    /// Reports of the line.
    pub reports: i64,
}

/// Where a keyset page of lines starts: after this line in the order
/// `last_seen DESC, line_key DESC`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineCursor {
    /// The last line's `last_seen` (Unix ms).
    pub last_seen_ms: i64,
    /// The last line's key.
    pub line_key: String,
}

/// Which index a page of lines should walk, when the caller knows better
/// than the database's statistics: each names the filter (or pair) whose
/// index leads, the other filters being checked on the rows it yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineLead {
    /// Declared province.
    Province,
    /// Declared city.
    City,
    /// Declared carrier.
    DeclaredCarrier,
    /// Actual carrier.
    ActualCarrier,
    /// Declared and actual carrier together.
    Carriers,
    /// Verdict.
    Verdict,
}

impl LineLead {
    fn leads(self, column: &str) -> bool {
        matches!(
            (self, column),
            (Self::Province, "l.declared_province")
                | (Self::City, "l.declared_city")
                | (Self::DeclaredCarrier | Self::Carriers, "l.declared_carrier")
                | (Self::ActualCarrier | Self::Carriers, "l.actual_carrier")
                | (Self::Verdict, "l.verdict")
        )
    }
}

/// `WHERE` conditions for the filter's set fields (limit and offset are
/// not used), appended to `sql` with their parameters. With `lead` on
/// SQLite, the other equality filters are written `+column` (SQLite's way
/// of keeping a term from choosing the index), so that the index `lead`
/// names is walked: SQLite's statistics cannot see that, say, one verdict
/// is rare, and walking the wrong index for two filters no line meets at
/// once reads every line of one of them.
pub(super) fn line_conditions<'a>(
    filter: &'a LineFilter,
    lead: Option<LineLead>,
    sqlite: bool,
    sql: &mut String,
    params: &mut Vec<Param<'a>>,
) {
    let columns = [
        ("l.declared_province", filter.wanted_province()),
        ("l.declared_city", Wanted::exact(filter.city.as_deref())),
        ("l.declared_carrier", filter.wanted_declared_carrier()),
        (
            "l.actual_carrier",
            Wanted::exact(filter.actual_carrier.as_deref()),
        ),
        ("l.verdict", Wanted::exact(filter.verdict.as_deref())),
    ];
    for (column, wanted) in columns {
        let plus = match lead {
            Some(lead) if sqlite && !lead.leads(column) => "+",
            _ => "",
        };
        match wanted {
            Wanted::Any => {}
            Wanted::Is(value) => {
                params.push(Param::Text(value));
                let _ = write!(sql, " AND {plus}{column} = ${}", params.len());
            }
            Wanted::Missing => {
                let _ = write!(sql, " AND {plus}{column} IS NULL");
            }
        }
    }
    match filter.low_trust {
        // Written `= TRUE` on both backends: the very expression of the
        // partial index that lists low-trust lines.
        Some(true) => sql.push_str(" AND l.low_trust = TRUE"),
        Some(false) => sql.push_str(" AND l.low_trust = FALSE"),
        None => {}
    }
    if let Some(since) = filter.seen_since_ms {
        params.push(Param::Int(since));
        let _ = write!(sql, " AND l.last_seen >= ${}", params.len());
    }
    if let Some(until) = filter.seen_until_ms {
        params.push(Param::Int(until));
        let _ = write!(sql, " AND l.last_seen <= ${}", params.len());
    }
}

impl Store {
    // ----- accounts -----

    /// Creates an account; `None` when the name is taken.
    pub async fn user_insert(
        &self,
        name: &str,
        role: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<Option<i64>, Error> {
        let context = || format!("cannot create back-office user `{name}`");
        let sql = "INSERT INTO users (name, role, password_hash, disabled, created_at, updated_at) \
                   VALUES ($1, $2, $3, FALSE, $4, $4) ON CONFLICT (name) DO NOTHING RETURNING id";
        on_writer!(self, pool => sqlx::query_scalar(sql)
            .bind(name)
            .bind(role)
            .bind(password_hash)
            .bind(now_ms)
            .fetch_optional(pool)
            .await)
        .map_err(self.db(context))
    }

    /// The account named `name`.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRow>, Error> {
        let context = || format!("cannot read back-office user `{name}`");
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1");
        on_reader!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(name)
            .fetch_optional(pool)
            .await)
        .map_err(self.db(context))
    }

    /// The ids and names of the accounts whose name is `name` but for
    /// letter case (`name`'s own account among them), by id. New names are
    /// refused when another differs only so, but a database from before
    /// may hold such pairs.
    pub async fn users_named_alike(&self, name: &str) -> Result<Vec<(i64, String)>, Error> {
        let context = || format!("cannot read the back-office users named like `{name}`");
        on_reader!(self, pool => sqlx::query_as(
            "SELECT id, name FROM users WHERE lower(name) = lower($1) ORDER BY id",
        )
        .bind(name)
        .fetch_all(pool)
        .await)
        .map_err(self.db(context))
    }

    /// Every account, by name.
    pub async fn users(&self) -> Result<Vec<UserRow>, Error> {
        let context = || "cannot list the back-office users".to_owned();
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY name");
        on_reader!(self, pool => sqlx::query_as(AssertSqlSafe(sql)).fetch_all(pool).await)
            .map_err(self.db(context))
    }

    /// Sets an account's password hash and ends its sessions; `false` when
    /// there is no such account.
    pub async fn user_set_password(
        &self,
        name: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> Result<bool, Error> {
        self.user_change(name, UserChange::Password(password_hash), now_ms, false)
            .await
            .map(|changed| changed == UserChanged::Changed)
    }

    /// Disables (ending its sessions) or enables an account; `false` when
    /// there is no such account. It may disable the last enabled admin (the
    /// command line's `--force`, which says so); the pages' change and the
    /// command line's without `--force` keep one.
    pub async fn user_set_disabled(
        &self,
        name: &str,
        disabled: bool,
        now_ms: i64,
    ) -> Result<bool, Error> {
        self.user_change(name, UserChange::Disabled(disabled), now_ms, false)
            .await
            .map(|changed| changed == UserChanged::Changed)
    }

    /// Changes an account's role and ends its sessions (they carry the old
    /// role's forms); `false` when there is no such account. It may demote
    /// the last enabled admin (the command line's `--force`, which says
    /// so); the pages' change and the command line's without `--force` keep
    /// one.
    pub async fn user_set_role(&self, name: &str, role: &str, now_ms: i64) -> Result<bool, Error> {
        self.user_change(name, UserChange::Role(role), now_ms, false)
            .await
            .map(|changed| changed == UserChanged::Changed)
    }

    /// Like [`Store::user_set_disabled`], but refused
    /// ([`UserChanged::LastAdmin`]) when it would leave no enabled admin,
    /// in the same guarded step as the change itself.
    pub(crate) async fn user_set_disabled_keeping_an_admin(
        &self,
        name: &str,
        disabled: bool,
        now_ms: i64,
    ) -> Result<UserChanged, Error> {
        self.user_change(name, UserChange::Disabled(disabled), now_ms, true)
            .await
    }

    /// Like [`Store::user_set_role`], but refused
    /// ([`UserChanged::LastAdmin`]) when it would leave no enabled admin,
    /// in the same guarded step as the change itself.
    pub(crate) async fn user_set_role_keeping_an_admin(
        &self,
        name: &str,
        role: &str,
        now_ms: i64,
    ) -> Result<UserChanged, Error> {
        self.user_change(name, UserChange::Role(role), now_ms, true)
            .await
    }

    /// Makes one change to an account and, where the change calls for it,
    /// ends the account's sessions in the same transaction, so that no
    /// session outlives the change it should not survive.
    ///
    /// With `keep_an_admin`, a change that can take an enabled admin away
    /// is made only while another enabled admin remains, checked in the
    /// update itself and under a lock, so that two admins disabling or
    /// demoting each other at the same moment cannot both succeed: on
    /// PostgreSQL the transaction first locks every enabled admin's row
    /// (in id order, so two such changes cannot wait on each other), and a
    /// change waiting there sees the other's outcome once it has its locks
    /// (the update's own snapshot is taken after them); on SQLite the
    /// transaction holds the single write lock from its start.
    async fn user_change(
        &self,
        name: &str,
        change: UserChange<'_>,
        now_ms: i64,
        keep_an_admin: bool,
    ) -> Result<UserChanged, Error> {
        let context = || format!("cannot {} back-office user `{name}`", change.describe());
        let guarded = keep_an_admin && change.may_remove_an_admin();
        let sqlite = matches!(self.backend, Backend::Sqlite(_));
        let statement = change.statement(keep_an_admin);
        on_writer!(self, pool => async {
            let mut tx = if guarded && sqlite {
                pool.begin_with("BEGIN IMMEDIATE").await?
            } else {
                pool.begin().await?
            };
            if guarded && !sqlite {
                sqlx::query(
                    "SELECT id FROM users WHERE role = 'admin' AND NOT disabled \
                     ORDER BY id FOR UPDATE",
                )
                .execute(&mut *tx)
                .await?;
            }
            let update = sqlx::query_scalar(AssertSqlSafe(statement.as_str()));
            let update = match change {
                UserChange::Password(text) | UserChange::Role(text) => update.bind(text),
                UserChange::Disabled(disabled) => update.bind(disabled),
            };
            let id: Option<i64> = update
                .bind(name)
                .bind(now_ms)
                .fetch_optional(&mut *tx)
                .await?;
            let changed = match id {
                Some(id) => {
                    if change.ends_sessions() {
                        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                            .bind(id)
                            .execute(&mut *tx)
                            .await?;
                    }
                    UserChanged::Changed
                }
                None if guarded => {
                    let exists: Option<i64> =
                        sqlx::query_scalar("SELECT id FROM users WHERE name = $1")
                            .bind(name)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if exists.is_some() {
                        UserChanged::LastAdmin
                    } else {
                        UserChanged::NoSuchUser
                    }
                }
                None => UserChanged::NoSuchUser,
            };
            tx.commit().await?;
            Ok::<_, sqlx::Error>(changed)
        }.await)
        .map_err(self.db(context))
    }

    /// How many enabled admins there are.
    pub async fn active_admins(&self) -> Result<i64, Error> {
        self.count(
            "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = FALSE",
            "the back-office admins",
        )
        .await
    }

    /// Runs a `SELECT COUNT(*)` on a reader; a failure says it could not
    /// count `what`.
    async fn count(&self, sql: &'static str, what: &'static str) -> Result<i64, Error> {
        let context = || format!("cannot count {what}");
        on_reader!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await)
            .map_err(self.db(context))
    }

    // ----- sessions -----

    /// Stores a new session and records the account's sign-in: `false`,
    /// and nothing stored, when the account no longer has the password the
    /// sign-in was checked against or was disabled meanwhile (a password
    /// change ends the account's sessions; one made from a check that
    /// began before it must not outlive it).
    pub async fn session_insert(&self, session: &NewSession<'_>) -> Result<bool, Error> {
        let context = || "cannot store a back-office session".to_owned();
        on_writer!(self, pool => async {
            let mut tx = pool.begin().await?;
            let made = sqlx::query(
                "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, \
                 last_seen_at, expires_at, source_ip, user_agent) \
                 SELECT $1, $2, $3, $4, $4, $5, $6, $7 WHERE EXISTS ( \
                   SELECT 1 FROM users WHERE id = $2 AND password_hash = $8 AND NOT disabled)",
            )
            .bind(session.token_hash)
            .bind(session.user_id)
            .bind(session.csrf_token)
            .bind(session.created_at_ms)
            .bind(session.expires_at_ms)
            .bind(session.source_ip)
            .bind(session.user_agent)
            .bind(session.password_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if made {
                sqlx::query("UPDATE users SET last_login_at = $2 WHERE id = $1")
                    .bind(session.user_id)
                    .bind(session.created_at_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await.map(|()| made)
        }.await)
        .map_err(self.db(context))
    }

    /// The session whose token hashes to `token_hash`, with its account,
    /// expired or not (the caller decides).
    pub async fn session_user(&self, token_hash: &str) -> Result<Option<SessionUser>, Error> {
        let context = || "cannot read a back-office session".to_owned();
        on_reader!(self, pool => sqlx::query_as(
            "SELECT u.id AS user_id, u.name, u.role, u.disabled, s.csrf_token, \
             s.created_at AS created_at_ms, s.last_seen_at AS last_seen_at_ms, \
             s.expires_at AS expires_at_ms \
             FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await)
        .map_err(self.db(context))
    }

    /// Records that a session was used at `now_ms`.
    pub async fn session_touch(&self, token_hash: &str, now_ms: i64) -> Result<(), Error> {
        execute!(
            self,
            "cannot update a back-office session",
            "UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1",
            token_hash,
            now_ms,
        )
        .map(|_| ())
    }

    /// Ends a session.
    pub async fn session_delete(&self, token_hash: &str) -> Result<(), Error> {
        execute!(
            self,
            "cannot end a back-office session",
            "DELETE FROM sessions WHERE token_hash = $1",
            token_hash,
        )
        .map(|_| ())
    }

    /// Deletes sessions that expired before `now_ms` or were idle since
    /// before `idle_before_ms`; returns how many.
    pub async fn sessions_purge(&self, now_ms: i64, idle_before_ms: i64) -> Result<u64, Error> {
        execute!(
            self,
            "cannot purge expired back-office sessions",
            "DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at < $2",
            now_ms,
            idle_before_ms,
        )
    }

    // ----- login throttling -----

    /// The throttling state of `key`, if it has failures on record.
    pub async fn throttle_state(&self, key: &str) -> Result<Option<ThrottleState>, Error> {
        let context = || "cannot read the sign-in throttle".to_owned();
        on_writer!(self, pool => sqlx::query_as(
            "SELECT failures, last_failure AS last_failure_ms, locked_until AS locked_until_ms \
             FROM login_throttle WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(pool)
        .await)
        .map_err(self.db(context))
    }

    /// Reserves a password check under `keys`: in one transaction, either
    /// finds a key locked at `now_ms` (and changes nothing), or counts the
    /// check as a failure against every key, each key's state going to
    /// `after_failure` of its current one, and returns both.
    ///
    /// The check is counted before it runs, and the lock is read and the
    /// count written under the row's lock (PostgreSQL takes it with the
    /// upsert; SQLite has a single writer): checks sent at once each see
    /// the failures of the ones before, so a wave of them is locked out
    /// after the free failures instead of all passing a lock nobody had
    /// written yet, and none overwrites another's count. Every check takes
    /// its keys in the order given, so two cannot wait on each other.
    /// A check that did not fail gives its failure back with
    /// [`Store::throttle_release`] (or clears the key).
    pub(crate) async fn throttle_reserve(
        &self,
        keys: &[String],
        now_ms: i64,
        after_failure: impl Fn(ThrottleState) -> ThrottleState,
    ) -> Result<ThrottleReservation, Error> {
        let context = || "cannot update the sign-in throttle".to_owned();
        on_writer!(self, pool => async {
            let mut tx = pool.begin().await?;
            let mut before = Vec::with_capacity(keys.len());
            for key in keys {
                // A new key starts at no failures; a known one is locked
                // (a no-op update) and read as it is now.
                let state: ThrottleState = sqlx::query_as(
                    "INSERT INTO login_throttle (key, failures, last_failure, locked_until) \
                     VALUES ($1, 0, $2, 0) ON CONFLICT (key) DO UPDATE SET \
                     failures = login_throttle.failures \
                     RETURNING failures, last_failure AS last_failure_ms, \
                     locked_until AS locked_until_ms",
                )
                .bind(key)
                .bind(now_ms)
                .fetch_one(&mut *tx)
                .await?;
                before.push(state);
            }
            let locked_until = before.iter().map(|s| s.locked_until_ms).max().unwrap_or(0);
            if locked_until > now_ms {
                tx.rollback().await?;
                return Ok(ThrottleReservation::Locked {
                    until_ms: locked_until,
                });
            }
            let mut reserved = Vec::with_capacity(keys.len());
            for (key, before) in keys.iter().zip(before) {
                let after = after_failure(before);
                sqlx::query(
                    "UPDATE login_throttle SET failures = $2, last_failure = $3, \
                     locked_until = $4 WHERE key = $1",
                )
                .bind(key)
                .bind(after.failures)
                .bind(after.last_failure_ms)
                .bind(after.locked_until_ms)
                .execute(&mut *tx)
                .await?;
                reserved.push(ReservedFailure {
                    key: key.clone(),
                    before,
                    after,
                });
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(ThrottleReservation::Reserved(reserved))
        }.await)
        .map_err(self.db(context))
    }

    /// Gives back a failure [`Store::throttle_reserve`] counted for a check
    /// that did not fail (the password was right, or never checked): one
    /// failure fewer, and the lock it set lifted unless a later failure has
    /// set another since.
    pub(crate) async fn throttle_release(&self, reserved: &ReservedFailure) -> Result<(), Error> {
        execute!(
            self,
            "cannot update the sign-in throttle",
            "UPDATE login_throttle SET \
             failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END, \
             locked_until = CASE WHEN locked_until = $2 THEN $3 ELSE locked_until END \
             WHERE key = $1",
            &reserved.key,
            reserved.after.locked_until_ms,
            reserved.before.locked_until_ms,
        )
        .map(|_| ())
    }

    /// Forgets the failures of `key`.
    pub async fn throttle_clear(&self, key: &str) -> Result<(), Error> {
        execute!(
            self,
            "cannot update the sign-in throttle",
            "DELETE FROM login_throttle WHERE key = $1",
            key,
        )
        .map(|_| ())
    }

    /// Forgets throttling state whose last failure is older than
    /// `before_ms` and whose lock has ended: names tried once long ago do
    /// not pile up.
    pub async fn throttle_purge(&self, before_ms: i64, now_ms: i64) -> Result<u64, Error> {
        execute!(
            self,
            "cannot purge the sign-in throttle",
            "DELETE FROM login_throttle WHERE last_failure < $1 AND locked_until <= $2",
            before_ms,
            now_ms,
        )
    }

    // ----- audit log -----

    /// Writes an audit log entry.
    pub async fn audit(&self, entry: &AuditEntry<'_>) -> Result<(), Error> {
        let detail = entry.detail.to_string();
        execute!(
            self,
            format!("cannot write the audit log entry `{}`", entry.action),
            "INSERT INTO audit_log (at, actor, action, source_ip, detail) \
             VALUES ($1, $2, $3, $4, $5)",
            entry.at_ms,
            entry.actor,
            entry.action,
            entry.source_ip,
            &detail,
        )
        .map(|_| ())
    }

    /// Audit log entries, newest first: below `before_id` when given, and
    /// only `action` when given.
    pub async fn audit_page(
        &self,
        before_id: Option<i64>,
        action: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditRow>, Error> {
        let context = || "cannot read the audit log".to_owned();
        on_reader!(self, pool => sqlx::query_as(
            "SELECT id, at AS at_ms, actor, action, source_ip, detail AS detail_json \
             FROM audit_log WHERE ($1 IS NULL OR id < $1) AND ($2 IS NULL OR action = $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(before_id)
        .bind(action)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)
        .map_err(self.db(context))
    }

    // ----- the back office's secrets -----

    /// The back office's secret named `name`: the stored one, or `fresh`,
    /// stored now when there is none (the first of several back offices
    /// starting at once wins, and all use its secret).
    pub async fn backoffice_secret(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, Error> {
        let context = || format!("cannot read or store the back office's {name} secret");
        on_writer!(self, pool => async {
            sqlx::query(
                "INSERT INTO backoffice_secrets (name, secret) VALUES ($1, $2) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(fresh)
            .execute(pool)
            .await?;
            sqlx::query_scalar("SELECT secret FROM backoffice_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(pool)
                .await
        }.await)
        .map_err(self.db(context))
    }

    // ----- probe manifests -----

    /// The manifest with the highest serial.
    pub async fn manifest_latest(&self) -> Result<Option<ManifestRow>, Error> {
        let context = || "cannot read the latest probe manifest".to_owned();
        on_reader!(self, pool => sqlx::query_as(
            "SELECT serial, manifest AS manifest_json, signed AS signed_json, key_id, \
             created_at AS created_at_ms, created_by FROM manifests ORDER BY serial DESC LIMIT 1",
        )
        .fetch_optional(pool)
        .await)
        .map_err(self.db(context))
    }

    /// The serial the next manifest must exceed: the highest signed here or
    /// reported held by a collector.
    pub async fn manifest_serial_floor(&self) -> Result<i64, Error> {
        let context = || "cannot read the probe manifest serials".to_owned();
        on_reader!(self, pool => sqlx::query_scalar(
            "SELECT MAX(s) FROM (SELECT COALESCE(MAX(serial), 0) AS s FROM manifests \
             UNION ALL SELECT COALESCE(MAX(collector_serial), 0) FROM manifest_publications) t",
        )
        .fetch_one(pool)
        .await)
        .map(|s: Option<i64>| s.unwrap_or(0))
        .map_err(self.db(context))
    }

    /// Stores a signed manifest; `false` when its serial is taken (another
    /// admin signed one at the same moment).
    pub async fn manifest_insert(&self, row: &ManifestRow) -> Result<bool, Error> {
        execute!(
            self,
            format!("cannot store probe manifest {}", row.serial),
            "INSERT INTO manifests (serial, manifest, signed, key_id, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (serial) DO NOTHING",
            row.serial,
            &row.manifest_json,
            &row.signed_json,
            &row.key_id,
            row.created_at_ms,
            &row.created_by,
        )
        .map(|n| n == 1)
    }

    /// Stores a signed manifest and, in the same transaction, the audit
    /// entry of the attempt to publish it: the manifest is never stored
    /// (and so never sent) without a record of who signed it for
    /// publication, and the entry never names a serial that was not
    /// stored. `false`, and neither written, when the serial is taken
    /// (another admin signed one at the same moment).
    pub async fn manifest_insert_audited(
        &self,
        row: &ManifestRow,
        entry: &AuditEntry<'_>,
    ) -> Result<bool, Error> {
        let context = || {
            format!(
                "cannot store probe manifest {} and its audit entry",
                row.serial
            )
        };
        let detail = entry.detail.to_string();
        on_writer!(self, pool => async {
            let mut tx = pool.begin().await?;
            let stored = sqlx::query(
                "INSERT INTO manifests (serial, manifest, signed, key_id, created_at, \
                 created_by) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (serial) DO NOTHING",
            )
            .bind(row.serial)
            .bind(&row.manifest_json)
            .bind(&row.signed_json)
            .bind(&row.key_id)
            .bind(row.created_at_ms)
            .bind(&row.created_by)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !stored {
                tx.rollback().await?;
                return Ok::<_, sqlx::Error>(false);
            }
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, source_ip, detail) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(entry.at_ms)
            .bind(entry.actor)
            .bind(entry.action)
            .bind(entry.source_ip)
            .bind(&detail)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(true)
        }.await)
        .map_err(self.db(context))
    }

    /// Records an attempt to publish a manifest to a collector.
    pub async fn publication_insert(&self, row: &PublicationRow) -> Result<(), Error> {
        execute!(
            self,
            format!(
                "cannot record the publication of manifest {} to `{}`",
                row.serial, row.collector
            ),
            "INSERT INTO manifest_publications (serial, collector, at, accepted, http_status, \
             collector_serial, message) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            row.serial,
            &row.collector,
            row.at_ms,
            row.accepted,
            row.http_status,
            row.collector_serial,
            &row.message,
        )
        .map(|_| ())
    }

    /// Every publication attempt of manifest `serial`, oldest first.
    pub async fn publications(&self, serial: i64) -> Result<Vec<PublicationRow>, Error> {
        let context = || format!("cannot read the publications of manifest {serial}");
        on_reader!(self, pool => sqlx::query_as(
            "SELECT serial, collector, at AS at_ms, accepted, http_status, collector_serial, \
             message FROM manifest_publications WHERE serial = $1 ORDER BY id",
        )
        .bind(serial)
        .fetch_all(pool)
        .await)
        .map_err(self.db(context))
    }

    // ----- pages -----

    /// One page of the current lines that pass `filter` (its `limit`; its
    /// `offset` is not used), in the order `last_seen DESC, line_key DESC`,
    /// after `cursor` when given. Keyset paging: a deep page costs what the
    /// first one does. `lead` picks the index to walk (see [`LineLead`]);
    /// PostgreSQL's own statistics see skew and choose for themselves.
    pub async fn line_page(
        &self,
        filter: &LineFilter,
        cursor: Option<&LineCursor>,
        lead: Option<LineLead>,
    ) -> Result<Vec<LineRow>, Error> {
        let context = || "cannot list the lines".to_owned();
        let mut sql = format!("SELECT {LINE_COLUMNS} FROM lines l WHERE TRUE");
        let mut params = Vec::new();
        let sqlite = matches!(self.backend, Backend::Sqlite(_));
        line_conditions(filter, lead, sqlite, &mut sql, &mut params);
        if let Some(cursor) = cursor {
            params.push(Param::Int(cursor.last_seen_ms));
            params.push(Param::Text(&cursor.line_key));
            let _ = write!(
                sql,
                " AND (l.last_seen, l.line_key) < (${}, ${})",
                params.len() - 1,
                params.len()
            );
        }
        params.push(Param::Int(i64::from(filter.limit)));
        let _ = write!(
            sql,
            " ORDER BY l.last_seen DESC, l.line_key DESC LIMIT ${}",
            params.len()
        );
        on_reader!(self, pool => bind_all!(sqlx::query_as(AssertSqlSafe(sql)), params)
            .fetch_all(pool)
            .await)
        .map_err(self.db(context))
    }

    /// The newest `limit` verdicts of a line, newest first, and its current
    /// verdict `current_id` wherever it stands (last when older): what the
    /// case view shows. A line's verdicts are not few by nature: every new
    /// observation (an egress address or a path changed, or a probe varying
    /// them on purpose under any account it names) adds one, with its
    /// evidence, and reading them all made the page's cost the attacker's
    /// choice.
    pub async fn case_verdicts(
        &self,
        line_key: &str,
        current_id: i64,
        limit: u32,
    ) -> Result<Vec<VerdictRow>, Error> {
        let context = || format!("cannot list the verdicts of line `{line_key}`");
        self.newest_and_current(
            LINE_VERDICTS,
            (line_key, current_id),
            limit,
            |v: &VerdictRow| v.id,
            context,
        )
        .await
    }

    /// The newest `limit` observations of a line (by last seen), and its
    /// current observation `current_id` wherever it stands (last when
    /// older): the case view's, bounded as [`Store::case_verdicts`] is.
    pub async fn case_observations(
        &self,
        line_key: &str,
        current_id: i64,
        limit: u32,
    ) -> Result<Vec<ObservationRow>, Error> {
        let context = || format!("cannot list the observations of line `{line_key}`");
        let all = queries::line_observations();
        self.newest_and_current(
            &all,
            (line_key, current_id),
            limit,
            |o: &ObservationRow| o.id,
            context,
        )
        .await
    }

    /// The first `limit` rows of `base` (a query of one line's rows, `$1`
    /// its key, in the case view's order), and the row `current` of
    /// them wherever it stands (last when further down).
    async fn newest_and_current<T>(
        &self,
        base: &str,
        (line_key, current): (&str, i64),
        limit: u32,
        id: impl Fn(&T) -> i64,
        context: impl Fn() -> String,
    ) -> Result<Vec<T>, Error>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + Send
            + Unpin,
    {
        let newest = format!("{base} LIMIT $2");
        let mut rows: Vec<T> = on_reader!(self, pool => sqlx::query_as(AssertSqlSafe(newest))
            .bind(line_key)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
        .map_err(self.db(&context))?;
        if !rows.iter().any(|row| id(row) == current) {
            let one = format!("SELECT * FROM ({base}) r WHERE r.id = $2");
            let row: Option<T> = on_reader!(self, pool => sqlx::query_as(AssertSqlSafe(one))
                .bind(line_key)
                .bind(current)
                .fetch_optional(pool)
                .await)
            .map_err(self.db(&context))?;
            rows.extend(row);
        }
        Ok(rows)
    }

    /// The newest `limit` replaced verdicts of a line, newest first: the
    /// case view's, bounded as [`Store::case_verdicts`] is.
    pub async fn case_history(
        &self,
        line_key: &str,
        limit: u32,
    ) -> Result<Vec<LineHistoryRow>, Error> {
        let context = || format!("cannot list the history of line `{line_key}`");
        let newest = format!("{LINE_HISTORY} LIMIT $2");
        on_reader!(self, pool => sqlx::query_as(AssertSqlSafe(newest))
            .bind(line_key)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
        .map_err(self.db(context))
    }

    /// The reasons and the filled attributes (both JSON) of the verdicts
    /// `ids`, by id: what the line list shows of each line's verdict.
    pub async fn verdict_reasons(&self, ids: &[i64]) -> Result<Vec<(i64, String, String)>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let context = || format!("cannot read the reasons of {} verdicts", ids.len());
        match &self.backend {
            Backend::Sqlite(p) => {
                let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned());
                sqlx::query_as(
                    "SELECT id, reasons, filled FROM verdicts \
                     WHERE id IN (SELECT value FROM json_each($1))",
                )
                .bind(list)
                .fetch_all(&p.readers)
                .await
            }
            Backend::Postgres(p) => {
                sqlx::query_as("SELECT id, reasons, filled FROM verdicts WHERE id = ANY($1)")
                    .bind(ids)
                    .fetch_all(p)
                    .await
            }
        }
        .map_err(self.db(context))
    }

    /// Every current line by declared province, declared carrier, actual
    /// carrier and verdict, in one pass over an index.
    pub async fn line_breakdown(&self) -> Result<Vec<BreakdownRow>, Error> {
        let context = || "cannot count the lines by province, carrier and verdict".to_owned();
        on_reader!(self, pool => sqlx::query_as(
            "SELECT declared_province AS province, declared_carrier AS carrier, actual_carrier, \
             verdict, COUNT(*) AS lines FROM lines \
             GROUP BY declared_province, declared_carrier, actual_carrier, verdict",
        )
        .fetch_all(pool)
        .await)
        .map_err(self.db(context))
    }

    /// Lines last seen at or after `since_ms`, by day and verdict; days
    /// are counted at `offset_ms` from UTC.
    pub async fn line_trend(&self, since_ms: i64, offset_ms: i64) -> Result<Vec<TrendRow>, Error> {
        let context = || "cannot count the lines by day".to_owned();
        on_reader!(self, pool => sqlx::query_as(
            "SELECT (last_seen + $2) / 86400000 AS day, verdict, COUNT(*) AS lines FROM lines \
             WHERE last_seen >= $1 GROUP BY 1, 2",
        )
        .bind(since_ms)
        .bind(offset_ms)
        .fetch_all(pool)
        .await)
        .map_err(self.db(context))
    }

    /// Reports in quarantine.
    pub async fn quarantine_count(&self) -> Result<i64, Error> {
        self.count("SELECT COUNT(*) FROM quarantine", "the quarantined reports")
            .await
    }

    /// Pulled reports the pipeline has not processed yet.
    pub async fn pending_count(&self) -> Result<i64, Error> {
        self.count("SELECT COUNT(*) FROM raw_pending", "the pending reports")
            .await
    }

    /// Quarantined reports, newest first, below quarantine row `before_id`
    /// when given.
    pub async fn quarantine_page(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<QuarantineRow>, Error> {
        let context = || "cannot list the quarantined reports".to_owned();
        on_reader!(self, pool => sqlx::query_as(
            "SELECT q.id, q.raw_id, r.collector, r.node_id, r.seq, q.report_id, q.install_id, \
             q.reasons AS reasons_json, q.summary, q.quarantined_at AS quarantined_at_ms \
             FROM quarantine q JOIN raw_reports r ON r.id = q.raw_id \
             WHERE ($1 IS NULL OR q.id < $1) ORDER BY q.id DESC LIMIT $2",
        )
        .bind(before_id)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await)
        .map_err(self.db(context))
    }

    /// Probe installations by their line's last report, newest first,
    /// after `cursor` when given; only `install_id` when given.
    pub async fn probe_page(
        &self,
        install_id: Option<&str>,
        cursor: Option<&LineCursor>,
        limit: u32,
    ) -> Result<Vec<ProbeRow>, Error> {
        let context = || "cannot list the probes".to_owned();
        let mut sql = "SELECT l.install_id, l.line_key, l.last_seen AS last_seen_ms, o.engine, \
                       o.agent_version, o.os, o.last_report_id, l.reports \
                       FROM lines l JOIN observations o ON o.id = l.observation_id WHERE TRUE"
            .to_owned();
        let mut params = Vec::new();
        if let Some(install) = install_id {
            params.push(Param::Text(install));
            let _ = write!(sql, " AND l.install_id = ${}", params.len());
        }
        if let Some(cursor) = cursor {
            params.push(Param::Int(cursor.last_seen_ms));
            params.push(Param::Text(&cursor.line_key));
            let _ = write!(
                sql,
                " AND (l.last_seen, l.line_key) < (${}, ${})",
                params.len() - 1,
                params.len()
            );
        }
        params.push(Param::Int(i64::from(limit)));
        let _ = write!(
            sql,
            " ORDER BY l.last_seen DESC, l.line_key DESC LIMIT ${}",
            params.len()
        );
        on_reader!(self, pool => bind_all!(sqlx::query_as(AssertSqlSafe(sql)), params)
            .fetch_all(pool)
            .await)
        .map_err(self.db(context))
    }

    /// The body of the report `report_id`, exactly as pulled (the newest
    /// copy when a re-pull stored it twice).
    pub async fn raw_body_by_report_id(&self, report_id: &str) -> Result<Option<Vec<u8>>, Error> {
        let context = || format!("cannot read report {report_id}");
        on_reader!(self, pool => sqlx::query_scalar(
            "SELECT body FROM raw_reports WHERE report_id = $1 ORDER BY id DESC LIMIT 1",
        )
        .bind(report_id)
        .fetch_optional(pool)
        .await)
        .map_err(self.db(context))
    }
}
