//! Enrolled probe keys, kept in the staging database beside the reports so
//! that they are as durable as the reports they vouch for.
//!
//! Writes go through the single writer like everything else; lookups use
//! the read-only connections. The policy — what an enrolment of a new key
//! for a known `install_id` means — lives in [`crate::enrol`]; this module
//! only records facts: the keys enrolled (as many as an installation may
//! keep), when, and from where.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
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
    New,
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

/// Which installations ever enrolled a key, as fingerprints in memory.
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
/// saved. Enrolments are never deleted, so nothing is ever removed.
pub(super) struct EnrolledIndex {
    hasher: RandomState,
    fingerprints: RwLock<HashSet<u64>>,
}

impl EnrolledIndex {
    /// The index of every installation in `probe_installs`.
    pub(super) fn load(conn: &rusqlite::Connection) -> Result<Self, Error> {
        let what = "loading the enrolled installations";
        let index = Self {
            hasher: RandomState::new(),
            fingerprints: RwLock::new(HashSet::new()),
        };
        let mut stmt = conn
            .prepare("SELECT install_id FROM probe_installs")
            .map_err(|e| sql_error(what, &e))?;
        let ids = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| sql_error(what, &e))?;
        for id in ids {
            index.insert(&id.map_err(|e| sql_error(what, &e))?);
        }
        Ok(index)
    }

    /// Remembers that `install_id` enrolled (or is about to).
    pub(super) fn insert(&self, install_id: &str) {
        let fingerprint = self.hasher.hash_one(install_id);
        self.fingerprints
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(fingerprint);
    }

    /// False only when `install_id` certainly never enrolled.
    pub(super) fn may_contain(&self, install_id: &str) -> bool {
        let fingerprint = self.hasher.hash_one(install_id);
        self.fingerprints
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&fingerprint)
    }
}

impl Staging {
    /// Records `key` for `install_id`, enrolled from `from`; at most
    /// `max_keys` distinct keys are kept per installation.
    pub async fn enrol_key(
        &self,
        install_id: &InstallId,
        key: ProbePublicKey,
        from: IpAddr,
        max_keys: usize,
    ) -> Result<EnrolOutcome, Error> {
        let enrolment = Enrolment {
            install_id: install_id.as_str().to_owned(),
            key_id: key.key_id(),
            public_key: key.to_bytes(),
            from: from.to_string(),
            max_keys,
            now_us: Utc::now().timestamp_micros(),
        };
        self.request(|reply| Request::Enrol { enrolment, reply })
            .await
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
    now_us: i64,
}

/// Records one enrolment inside the writer's transaction.
pub(super) fn enrol(
    tx: &rusqlite::Transaction<'_>,
    e: &Enrolment,
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
        tx.execute(
            "INSERT INTO probe_installs (install_id, first_seen_us, current_key_id) \
             VALUES (?1, ?2, ?3)",
            params![e.install_id, e.now_us, e.key_id],
        )
        .map_err(sql("recording an installation"))?;
        insert_key(tx, e)?;
        return Ok(EnrolOutcome::New);
    };
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
