//! Enrolled probe keys, kept in the staging database beside the reports so
//! that they are as durable as the reports they vouch for.
//!
//! Writes go through the single writer like everything else; lookups use
//! the read-only connections. The policy — what an enrolment of a new key
//! for a known `install_id` means — lives in [`crate::enrol`]; this module
//! only records facts: the keys enrolled (as many as an installation may
//! keep), when, and from where.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use chrono::{DateTime, Utc};
use lineprobe_shared::{InstallId, ProbePublicKey};
use rusqlite::{OptionalExtension, params};

use super::Staging;
use super::schema::sql_error;
use super::writer::{Request, TxError, sql};
use crate::Error;

/// One key in an installation's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledKey {
    /// Its id (first 8 bytes of the SHA-256 of the raw key, hex).
    pub key_id: String,
    /// The key.
    pub public_key: ProbePublicKey,
    /// When it was first enrolled.
    pub enrolled_at: DateTime<Utc>,
}

/// What the store knows about one installation's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallKeys {
    /// When the installation first enrolled.
    pub first_seen: DateTime<Utc>,
    /// The key it enrolled most recently.
    pub current_key_id: String,
    /// When a different key was last enrolled for it; `None` while it has
    /// only ever had one key.
    pub key_changed_at: Option<DateTime<Utc>>,
    /// Every key ever enrolled for it, oldest first.
    pub keys: Vec<EnrolledKey>,
}

impl InstallKeys {
    /// The enrolled key with `key_id`, current or earlier.
    pub fn key(&self, key_id: &str) -> Option<&EnrolledKey> {
        self.keys.iter().find(|k| k.key_id == key_id)
    }
}

/// What an enrolment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrolOutcome {
    /// The installation was new; the key is its first.
    New {
        /// The installations forgotten to make room for it, the node
        /// keeping as many as `signing.max_enrolled_installs` allows: those
        /// heard from least recently.
        forgotten: Vec<ForgottenInstall>,
    },
    /// The installation had enrolled exactly this key (a repeat enrolment,
    /// e.g. at another collector node first, or after lost state).
    Same,
    /// The installation had another key; the new one is now current, the
    /// history keeps both.
    Changed {
        /// The key that was current before.
        previous_key_id: String,
        /// The key retired to make room, the installation having as many
        /// keys as it may keep: the one enrolled least recently.
        retired: Option<RetiredKey>,
    },
}

/// A key an installation no longer keeps: it verifies nothing any more (a
/// probe still holding it is answered `unknown_key` and enrols again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKey {
    /// Its id.
    pub key_id: String,
    /// When it was first enrolled.
    pub enrolled_at: DateTime<Utc>,
    /// When it was last enrolled.
    pub last_enrolled_at: DateTime<Utc>,
    /// The address it was first enrolled from.
    pub enrolled_from: String,
}

/// An installation no longer kept, with its keys: its reports are taken as
/// an installation's that never enrolled (unsigned ones accepted, signed
/// ones answered `unknown_key`, on which its probe enrols again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgottenInstall {
    /// Its id.
    pub install_id: String,
    /// When it first enrolled.
    pub first_seen: DateTime<Utc>,
    /// When it was last heard from.
    pub last_active: DateTime<Utc>,
}

/// The bounds an enrolment is recorded within (from `[signing]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrolmentBounds {
    /// Most keys one installation keeps (`max_keys_per_install`).
    pub max_keys_per_install: usize,
    /// Most installations the node keeps (`max_enrolled_installs`).
    pub max_enrolled_installs: u64,
    /// How long an installation whose key changed stays contested, and so
    /// is never forgotten (`key_change_flag_days`): forgetting it would
    /// let whoever contests it enrol afresh, unflagged.
    pub contested_for: chrono::Duration,
}

/// Which installations have enrolled a key, as fingerprints in memory,
/// with the day each was last heard from.
///
/// Every report, signed or not, asks whether its installation enrolled: an
/// unsigned report from one that did is refused. Asking the database costs
/// a hop to the blocking pool and a read transaction per report, most of
/// them for installations that never enrolled (probes that predate
/// signing). The index answers "never enrolled" without either; only
/// installations it may hold are looked up. It is loaded when the store
/// opens and the writer adds an installation before committing its first
/// enrolment, so it never misses one; a fingerprint collision or an
/// enrolment that failed to commit only costs the lookup it would have
/// saved. A fingerprint is counted, so that forgetting one installation
/// never hides another that shares it.
///
/// The day an installation was last heard from is kept here too, so that
/// only its first verified report of a day costs a write to the store
/// (`Staging::note_active`): the bound on enrolled installations forgets
/// the one silent longest, and a day is fine enough for that.
pub(super) struct EnrolledIndex {
    hasher: RandomState,
    fingerprints: RwLock<HashMap<u64, Fingerprint>>,
    /// Rows in `probe_installs`; kept by the writer.
    installs: AtomicU64,
}

/// What the index keeps per fingerprint.
#[derive(Debug, Clone, Copy)]
struct Fingerprint {
    /// Installations with it: more than one only on a hash collision (or
    /// after an enrolment that failed to commit).
    count: u32,
    /// The latest day (since the epoch, UTC) an installation with it was
    /// heard from.
    active_day: i64,
}

/// The day of `us` µs since the epoch.
const fn day_of(us: i64) -> i64 {
    us.div_euclid(86_400_000_000)
}

impl EnrolledIndex {
    /// The index of every installation in `probe_installs`.
    pub(super) fn load(conn: &rusqlite::Connection) -> Result<Self, Error> {
        let what = "loading the enrolled installations";
        let index = Self {
            hasher: RandomState::new(),
            fingerprints: RwLock::new(HashMap::new()),
            installs: AtomicU64::new(0),
        };
        let mut stmt = conn
            .prepare("SELECT install_id, last_active_us FROM probe_installs")
            .map_err(|e| sql_error(what, &e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(|e| sql_error(what, &e))?;
        let mut installs = 0;
        for row in rows {
            let (install_id, active_us) = row.map_err(|e| sql_error(what, &e))?;
            index.insert(&install_id, active_us);
            installs += 1;
        }
        index.installs.store(installs, Ordering::Relaxed);
        Ok(index)
    }

    /// Remembers that `install_id` enrolled (or is about to), heard from
    /// at `now_us`.
    pub(super) fn insert(&self, install_id: &str, now_us: i64) {
        let fingerprint = self.hasher.hash_one(install_id);
        let mut fingerprints = self
            .fingerprints
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = fingerprints.entry(fingerprint).or_insert(Fingerprint {
            count: 0,
            active_day: i64::MIN,
        });
        entry.count = entry.count.saturating_add(1);
        entry.active_day = entry.active_day.max(day_of(now_us));
    }

    /// Forgets `install_id`, whose rows were deleted.
    pub(super) fn remove(&self, install_id: &str) {
        let fingerprint = self.hasher.hash_one(install_id);
        let mut fingerprints = self
            .fingerprints
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = fingerprints.get_mut(&fingerprint) {
            entry.count = entry.count.saturating_sub(1);
            if entry.count == 0 {
                fingerprints.remove(&fingerprint);
            }
        }
    }

    /// False only when `install_id` certainly never enrolled.
    pub(super) fn may_contain(&self, install_id: &str) -> bool {
        let fingerprint = self.hasher.hash_one(install_id);
        self.fingerprints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&fingerprint)
    }

    /// Notes that `install_id` was heard from at `now_us`: true when that
    /// is the first time on its day, so that the store should be told.
    /// False for an installation the index does not hold.
    pub(super) fn mark_active(&self, install_id: &str, now_us: i64) -> bool {
        let fingerprint = self.hasher.hash_one(install_id);
        let day = day_of(now_us);
        let due = self
            .fingerprints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fingerprint)
            .is_some_and(|entry| entry.active_day < day);
        if !due {
            return false;
        }
        // Looked at again under the write lock: of two reports on the
        // same new day, one tells the store.
        let mut fingerprints = self
            .fingerprints
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match fingerprints.get_mut(&fingerprint) {
            Some(entry) if entry.active_day < day => {
                entry.active_day = day;
                true
            }
            _ => false,
        }
    }

    /// Rows in `probe_installs`.
    pub(super) fn installs(&self) -> u64 {
        self.installs.load(Ordering::Relaxed)
    }

    /// Records what a committed enrolment did to the number of rows.
    pub(super) fn counted(&self, added: u64, forgotten: u64) {
        // Only the writer changes the count, so load and store do not race.
        let now = self
            .installs()
            .saturating_add(added)
            .saturating_sub(forgotten);
        self.installs.store(now, Ordering::Relaxed);
    }
}

impl Staging {
    /// Records `key` for `install_id`, enrolled from `from`, within
    /// `bounds`. Errors: `EnrolmentsFull` when the node keeps as many
    /// installations as it may and every one is contested; the errors of
    /// [`Staging::stage`] otherwise.
    pub async fn enrol_key(
        &self,
        install_id: &InstallId,
        key: ProbePublicKey,
        from: IpAddr,
        bounds: EnrolmentBounds,
    ) -> Result<EnrolOutcome, Error> {
        let now = Utc::now();
        let enrolment = Enrolment {
            install_id: install_id.as_str().to_owned(),
            key_id: key.key_id(),
            public_key: key.to_bytes(),
            from: from.to_string(),
            max_keys: bounds.max_keys_per_install,
            max_installs: bounds.max_enrolled_installs,
            contested_after_us: now
                .checked_sub_signed(bounds.contested_for)
                .map_or(i64::MIN, |t| t.timestamp_micros()),
            now_us: now.timestamp_micros(),
        };
        self.request(|reply| Request::Enrol { enrolment, reply })
            .await
    }

    /// Notes that `install_id` was heard from at `at`: a report verified
    /// with one of its keys. Only an installation's first such report of a day
    /// reaches the store, and never waits for it (when the writer's queue
    /// is full the day is noted in memory only); the bound on enrolled
    /// installations forgets the one silent longest.
    pub fn note_active(&self, install_id: &InstallId, at: DateTime<Utc>) {
        self.note_active_at(install_id.as_str(), at.timestamp_micros());
    }

    fn note_active_at(&self, install_id: &str, now_us: i64) {
        if !self.inner.enrolled.mark_active(install_id, now_us) {
            return;
        }
        let sender = self
            .inner
            .sender
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(sender) = sender {
            let _ = sender.try_send(Request::Touch {
                install_id: install_id.to_owned(),
                at_us: now_us,
            });
        }
    }

    /// How many installations have enrolled keys at this node.
    pub fn enrolled_installs(&self) -> u64 {
        self.inner.enrolled.installs()
    }

    /// The keys enrolled for `install_id`; `None` when it never enrolled.
    pub async fn install_keys(&self, install_id: &InstallId) -> Result<Option<InstallKeys>, Error> {
        if !self.inner.enrolled.may_contain(install_id.as_str()) {
            self.check_open()?;
            return Ok(None);
        }
        let install_id = install_id.as_str().to_owned();
        self.read(move |conn| {
            let what = "reading enrolled probe keys";
            let install: Option<(i64, String, Option<i64>)> = conn
                .prepare_cached(
                    "SELECT first_seen_us, current_key_id, key_changed_at_us FROM probe_installs \
                     WHERE install_id = ?1",
                )
                .and_then(|mut stmt| {
                    stmt.query_row([&install_id], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .optional()
                })
                .map_err(|e| sql_error(what, &e))?;
            let Some((first_seen_us, current_key_id, changed_us)) = install else {
                return Ok(None);
            };
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key_id, public_key, enrolled_at_us FROM probe_keys \
                     WHERE install_id = ?1 ORDER BY enrolled_at_us, key_id",
                )
                .map_err(|e| sql_error(what, &e))?;
            let rows = stmt
                .query_map([&install_id], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Vec<u8>>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(|e| sql_error(what, &e))?;
            let mut keys = Vec::new();
            for row in rows {
                let (key_id, raw, at_us) = row.map_err(|e| sql_error(what, &e))?;
                let raw: [u8; 32] = raw
                    .try_into()
                    .map_err(|_| damaged("a key is not 32 bytes"))?;
                let public_key = ProbePublicKey::from_bytes(&raw)
                    .map_err(|e| damaged(&format!("a stored key is unusable: {e}")))?;
                keys.push(EnrolledKey {
                    key_id,
                    public_key,
                    enrolled_at: at(at_us),
                });
            }
            Ok(Some(InstallKeys {
                first_seen: at(first_seen_us),
                current_key_id,
                key_changed_at: changed_us.map(at),
                keys,
            }))
        })
        .await
    }
}

fn at(us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default()
}

fn damaged(what: &str) -> Error {
    Error::Staging(format!(
        "the enrolled probe keys are damaged ({what}); restore the staging database or move it aside"
    ))
}

/// One enrolment for the writer.
pub(super) struct Enrolment {
    pub(super) install_id: String,
    key_id: String,
    public_key: [u8; 32],
    from: String,
    max_keys: usize,
    max_installs: u64,
    /// Installations whose key changed after this are contested and kept.
    contested_after_us: i64,
    pub(super) now_us: i64,
}

/// Most installations one enrolment forgets. Normally one; more only after
/// `signing.max_enrolled_installs` was lowered, and then the store comes
/// down to the new bound this many at a time rather than in one long
/// transaction that reports would wait behind.
const FORGET_AT_ONCE: u64 = 256;

/// Records one enrolment inside the writer's transaction; `installs` is
/// how many installations the store holds.
pub(super) fn enrol(
    tx: &rusqlite::Transaction<'_>,
    e: &Enrolment,
    installs: u64,
) -> Result<EnrolOutcome, TxError> {
    let current: Option<String> = tx
        .query_row(
            "SELECT current_key_id FROM probe_installs WHERE install_id = ?1",
            [&e.install_id],
            |row| row.get(0),
        )
        .optional()
        .map_err(sql("reading an enrolment"))?;
    let known: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM probe_keys WHERE install_id = ?1 AND key_id = ?2)",
            params![e.install_id, e.key_id],
            |row| row.get(0),
        )
        .map_err(sql("reading an enrolment"))?;
    let Some(current) = current else {
        let forgotten = make_room(tx, e, installs)?;
        tx.execute(
            "INSERT INTO probe_installs (install_id, first_seen_us, current_key_id, \
             last_active_us) VALUES (?1, ?2, ?3, ?2)",
            params![e.install_id, e.now_us, e.key_id],
        )
        .map_err(sql("recording an installation"))?;
        insert_key(tx, e)?;
        return Ok(EnrolOutcome::New { forgotten });
    };
    touch(tx, &e.install_id, e.now_us)?;
    if current == e.key_id {
        tx.execute(
            "UPDATE probe_keys SET last_enrolled_at_us = ?3 WHERE install_id = ?1 AND key_id = ?2",
            params![e.install_id, e.key_id, e.now_us],
        )
        .map_err(sql("recording an enrolment"))?;
        return Ok(EnrolOutcome::Same);
    }
    let mut retired = None;
    if known {
        tx.execute(
            "UPDATE probe_keys SET last_enrolled_at_us = ?3 WHERE install_id = ?1 AND key_id = ?2",
            params![e.install_id, e.key_id, e.now_us],
        )
        .map_err(sql("recording an enrolment"))?;
    } else {
        let count: i64 = tx
            .query_row(
                "SELECT count(*) FROM probe_keys WHERE install_id = ?1",
                [&e.install_id],
                |row| row.get(0),
            )
            .map_err(sql("counting an installation's keys"))?;
        if usize::try_from(count).unwrap_or(usize::MAX) >= e.max_keys {
            retired = Some(retire_one(tx, &e.install_id, &current)?);
        }
        insert_key(tx, e)?;
    }
    tx.execute(
        "UPDATE probe_installs SET current_key_id = ?2, key_changed_at_us = ?3 \
         WHERE install_id = ?1",
        params![e.install_id, e.key_id, e.now_us],
    )
    .map_err(sql("recording a key change"))?;
    Ok(EnrolOutcome::Changed {
        previous_key_id: current,
        retired,
    })
}

/// Retires the key of `install_id` enrolled least recently, the current
/// one only when it is the only one (`max_keys_per_install = 1`). Refusing
/// the enrolment instead let anyone who knew an install id (it is no
/// secret) enrol throwaway keys for it at a node before its probe did and
/// lock the probe out there for good; now the probe's next enrolment (on
/// `unknown_key`) retires one of theirs, and every change stays flagged.
fn retire_one(
    tx: &rusqlite::Transaction<'_>,
    install_id: &str,
    current: &str,
) -> Result<RetiredKey, TxError> {
    let (key_id, enrolled_at_us, last_us, from): (String, i64, i64, String) = tx
        .query_row(
            "SELECT key_id, enrolled_at_us, last_enrolled_at_us, enrolled_from FROM probe_keys \
             WHERE install_id = ?1 \
             ORDER BY key_id = ?2, last_enrolled_at_us, key_id LIMIT 1",
            params![install_id, current],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .map_err(sql("choosing a key to retire"))?;
    tx.execute(
        "DELETE FROM probe_keys WHERE install_id = ?1 AND key_id = ?2",
        params![install_id, key_id],
    )
    .map_err(sql("retiring a probe key"))?;
    Ok(RetiredKey {
        key_id,
        enrolled_at: at(enrolled_at_us),
        last_enrolled_at: at(last_us),
        enrolled_from: from,
    })
}

/// Forgets the installations heard from least recently, as many as the
/// store holds beyond `e.max_installs` with the new one counted (at most
/// [`FORGET_AT_ONCE`]), skipping contested ones: forgetting one whose key
/// changed lately would let whoever contests it enrol afresh, unflagged.
/// Refuses the enrolment when none can be forgotten.
fn make_room(
    tx: &rusqlite::Transaction<'_>,
    e: &Enrolment,
    installs: u64,
) -> Result<Vec<ForgottenInstall>, TxError> {
    if installs < e.max_installs {
        return Ok(Vec::new());
    }
    let wanted = (installs + 1 - e.max_installs).min(FORGET_AT_ONCE);
    let what = "choosing installations to forget";
    let mut stmt = tx
        .prepare_cached(
            "SELECT install_id, first_seen_us, last_active_us FROM probe_installs \
             WHERE key_changed_at_us IS NULL OR key_changed_at_us <= ?1 \
             ORDER BY last_active_us, install_id LIMIT ?2",
        )
        .map_err(sql(what))?;
    let victims = stmt
        .query_map(
            params![e.contested_after_us, i64::try_from(wanted).unwrap_or(1)],
            |row| {
                Ok(ForgottenInstall {
                    install_id: row.get(0)?,
                    first_seen: at(row.get(1)?),
                    last_active: at(row.get(2)?),
                })
            },
        )
        .map_err(sql(what))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql(what))?;
    if victims.is_empty() {
        return Err(TxError::Op(Error::EnrolmentsFull {
            max: e.max_installs,
        }));
    }
    for victim in &victims {
        tx.execute(
            "DELETE FROM probe_keys WHERE install_id = ?1",
            [&victim.install_id],
        )
        .map_err(sql("forgetting an installation's keys"))?;
        tx.execute(
            "DELETE FROM probe_installs WHERE install_id = ?1",
            [&victim.install_id],
        )
        .map_err(sql("forgetting an installation"))?;
    }
    Ok(victims)
}

/// Notes that `install_id` was heard from at `at_us`; nothing for an
/// installation the store does not hold (forgotten meanwhile).
pub(super) fn touch(
    tx: &rusqlite::Transaction<'_>,
    install_id: &str,
    at_us: i64,
) -> Result<(), TxError> {
    tx.prepare_cached(
        "UPDATE probe_installs SET last_active_us = ?2 \
         WHERE install_id = ?1 AND last_active_us < ?2",
    )
    .and_then(|mut stmt| stmt.execute(params![install_id, at_us]))
    .map_err(sql("noting an installation's activity"))?;
    Ok(())
}

fn insert_key(tx: &rusqlite::Transaction<'_>, e: &Enrolment) -> Result<(), TxError> {
    tx.execute(
        "INSERT INTO probe_keys (install_id, key_id, public_key, enrolled_at_us, \
         last_enrolled_at_us, enrolled_from) VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
        params![
            e.install_id,
            e.key_id,
            e.public_key.as_slice(),
            e.now_us,
            e.from
        ],
    )
    .map_err(sql("recording a probe key"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use lineprobe_shared::ProbeSigningKey;

    use super::super::tests::open;
    use super::*;

    const DAY_US: i64 = 86_400_000_000;

    fn bounds(max_enrolled_installs: u64) -> EnrolmentBounds {
        EnrolmentBounds {
            max_keys_per_install: 8,
            max_enrolled_installs,
            contested_for: chrono::Duration::days(30),
        }
    }

    fn id(s: &str) -> InstallId {
        InstallId::parse(s).expect("install id")
    }

    async fn enrol(
        staging: &Staging,
        install: &str,
        key: &ProbeSigningKey,
        bounds: EnrolmentBounds,
    ) -> Result<EnrolOutcome, Error> {
        staging
            .enrol_key(
                &id(install),
                key.public_key(),
                "192.0.2.7".parse().expect("address"),
                bounds,
            )
            .await
    }

    fn forgotten(outcome: &EnrolOutcome) -> Vec<&str> {
        match outcome {
            EnrolOutcome::New { forgotten } => {
                forgotten.iter().map(|f| f.install_id.as_str()).collect()
            }
            other => panic!("not a new installation: {other:?}"),
        }
    }

    async fn kept(staging: &Staging, install: &str) -> bool {
        let held = staging
            .install_keys(&id(install))
            .await
            .expect("read")
            .is_some();
        assert_eq!(
            held,
            staging.inner.enrolled.may_contain(install),
            "the index and the store disagree on {install}"
        );
        held
    }

    /// One installation more than the bound forgets the one heard from
    /// least recently: a repeated enrolment or a verified report on a later
    /// day counts as heard from, so an installation that keeps reporting
    /// outlives ones that went silent.
    #[tokio::test]
    async fn the_bound_forgets_the_installation_heard_from_least_recently() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = open(dir.path());
        let keys: Vec<ProbeSigningKey> = (0..4).map(|_| ProbeSigningKey::generate()).collect();
        for (install, key) in ["probe-a", "probe-b", "probe-c"].iter().zip(&keys) {
            let outcome = enrol(&staging, install, key, bounds(3))
                .await
                .expect("enrol");
            assert!(forgotten(&outcome).is_empty());
        }
        assert_eq!(staging.enrolled_installs(), 3);
        // a reports the next day; b enrols its key again.
        let tomorrow = Utc::now().timestamp_micros() + DAY_US;
        staging.note_active_at("probe-a", tomorrow);
        // Once a day: a second report that day writes nothing.
        assert!(!staging.inner.enrolled.mark_active("probe-a", tomorrow + 1));
        let again = enrol(&staging, "probe-b", &keys[1], bounds(3)).await;
        assert_eq!(again.expect("enrol"), EnrolOutcome::Same);
        let outcome = enrol(&staging, "probe-d", &keys[3], bounds(3))
            .await
            .expect("enrol");
        assert_eq!(forgotten(&outcome), ["probe-c"]);
        for (install, expected) in [
            ("probe-a", true),
            ("probe-b", true),
            ("probe-c", false),
            ("probe-d", true),
        ] {
            assert_eq!(kept(&staging, install).await, expected, "{install}");
        }
        assert_eq!(staging.enrolled_installs(), 3);
        // The next one goes by the same order: b (enrolled again today)
        // before a (heard from tomorrow).
        let outcome = enrol(&staging, "probe-c", &keys[2], bounds(3))
            .await
            .expect("enrol");
        assert_eq!(forgotten(&outcome), ["probe-b"]);

        // The count and the index come back from the store.
        staging.close().await.expect("close");
        let staging = open(dir.path());
        assert_eq!(staging.enrolled_installs(), 3);
        for (install, expected) in [
            ("probe-a", true),
            ("probe-b", false),
            ("probe-c", true),
            ("probe-d", true),
        ] {
            assert_eq!(kept(&staging, install).await, expected, "{install}");
        }
        staging.close().await.expect("close");
    }

    /// An installation whose key changed lately is never forgotten: a
    /// flood of enrolments must not wash a contest out. When every
    /// installation is contested the enrolment is refused, and nothing
    /// changes.
    #[tokio::test]
    async fn contested_installations_are_kept_and_a_full_node_refuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = open(dir.path());
        let (first, second, other) = (
            ProbeSigningKey::generate(),
            ProbeSigningKey::generate(),
            ProbeSigningKey::generate(),
        );
        enrol(&staging, "contested", &first, bounds(2))
            .await
            .expect("enrol");
        let changed = enrol(&staging, "contested", &second, bounds(2))
            .await
            .expect("enrol");
        assert!(
            matches!(changed, EnrolOutcome::Changed { .. }),
            "{changed:?}"
        );
        enrol(&staging, "quiet", &other, bounds(2))
            .await
            .expect("enrol");
        let outcome = enrol(
            &staging,
            "newcomer",
            &ProbeSigningKey::generate(),
            bounds(2),
        )
        .await
        .expect("enrol");
        assert_eq!(forgotten(&outcome), ["quiet"]);
        assert!(kept(&staging, "contested").await);

        // At a bound of one, each newcomer forgets whoever is not
        // contested, and the count never grows past where it stands.
        for (newcomer, gone) in [("one-more", "newcomer"), ("last", "one-more")] {
            let outcome = enrol(&staging, newcomer, &ProbeSigningKey::generate(), bounds(1))
                .await
                .expect("enrol");
            assert_eq!(forgotten(&outcome), [gone]);
            assert_eq!(staging.enrolled_installs(), 2);
        }
        // Once `last`'s key changes too, every installation is contested.
        let changed = enrol(&staging, "last", &ProbeSigningKey::generate(), bounds(1)).await;
        assert!(
            matches!(changed, Ok(EnrolOutcome::Changed { .. })),
            "{changed:?}"
        );
        let before = staging.enrolled_installs();
        let refused = enrol(&staging, "refused", &ProbeSigningKey::generate(), bounds(1)).await;
        let Err(Error::EnrolmentsFull { max: 1 }) = refused else {
            panic!("not refused: {refused:?}");
        };
        assert!(!kept(&staging, "refused").await);
        assert_eq!(staging.enrolled_installs(), before);
        // A contest that is over no longer protects.
        let mut over = bounds(1);
        over.contested_for = chrono::Duration::zero();
        let outcome = enrol(&staging, "refused", &ProbeSigningKey::generate(), over)
            .await
            .expect("enrol");
        assert_eq!(forgotten(&outcome).len(), 2, "{outcome:?}");
        assert_eq!(staging.enrolled_installs(), 1);
        staging.close().await.expect("close");
    }

    /// After the bound is lowered, each new enrolment forgets the excess
    /// (up to `FORGET_AT_ONCE`), oldest first.
    #[tokio::test]
    async fn a_lowered_bound_is_reached_at_the_next_enrolment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let staging = open(dir.path());
        for i in 0..5 {
            enrol(
                &staging,
                &format!("probe-{i}"),
                &ProbeSigningKey::generate(),
                bounds(10),
            )
            .await
            .expect("enrol");
        }
        let outcome = enrol(&staging, "probe-5", &ProbeSigningKey::generate(), bounds(2))
            .await
            .expect("enrol");
        assert_eq!(
            forgotten(&outcome),
            ["probe-0", "probe-1", "probe-2", "probe-3"]
        );
        assert_eq!(staging.enrolled_installs(), 2);
        staging.close().await.expect("close");
    }

    #[test]
    fn days_are_utc_days_before_the_epoch_too() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(DAY_US - 1), 0);
        assert_eq!(day_of(DAY_US), 1);
        assert_eq!(day_of(-1), -1);
    }
}
