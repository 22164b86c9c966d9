//! The resolver cache in the internal database: what the lookup services
//! (the `http` sources) answered survives a restart, so a paid or
//! rate-limited service is not asked again for an address it answered within
//! its TTL.
//!
//! Each source's answers are kept under `name#fingerprint`: the fingerprint
//! changes with the source's URL and field mapping and with the catalog,
//! and answers given under another are not reused. Expired answers are
//! deleted whenever the cache is saved.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::{CacheEntry, CachedAnswer, Chain, Error, IpFacts, Store};

/// Preloads every caching source of `chain` with its unexpired answers from
/// the database; returns how many answers were taken.
pub async fn load_resolver_cache(chain: &Chain, store: &Store) -> Result<usize, Error> {
    let now_ms = Utc::now().timestamp_millis();
    let mut taken = 0;
    for source in chain.sources() {
        let Some(cache) = source.answer_cache() else {
            continue;
        };
        let key = cache_key(source.name(), cache.fingerprint());
        let rows = store.cache_load(&key, now_ms).await?;
        let entries = rows.into_iter().filter_map(|row| from_row(&row));
        taken += cache.preload(entries);
    }
    Ok(taken)
}

/// Writes every caching source's current answers to the database.
pub async fn save_resolver_cache(chain: &Chain, store: &Store) -> Result<usize, Error> {
    let mut rows = Vec::new();
    for source in chain.sources() {
        let Some(cache) = source.answer_cache() else {
            continue;
        };
        let key = cache_key(source.name(), cache.fingerprint());
        for entry in cache.entries() {
            rows.push(CachedAnswer {
                source: key.clone(),
                ip: entry.ip.to_string(),
                facts_json: entry
                    .facts
                    .as_ref()
                    .map(serde_json::to_string)
                    .transpose()
                    .map_err(|e| Error::Output(e.into()))?,
                fetched_at_ms: entry.fetched_at.timestamp_millis(),
                expires_at_ms: entry.expires_at.timestamp_millis(),
            });
        }
    }
    if !rows.is_empty() {
        store.cache_put(&rows).await?;
    }
    // The table would otherwise keep every address ever asked about, under
    // every fingerprint ever used.
    store
        .cache_purge_expired(Utc::now().timestamp_millis())
        .await?;
    Ok(rows.len())
}

fn cache_key(name: &str, fingerprint: &str) -> String {
    format!("{name}#{fingerprint}")
}

/// A stored answer back as a cache entry; a row that no longer reads (an
/// older format) is skipped — the service is simply asked again.
fn from_row(row: &CachedAnswer) -> Option<CacheEntry> {
    let ip: IpAddr = row.ip.parse().ok()?;
    let facts: Option<IpFacts> = match &row.facts_json {
        Some(json) => Some(serde_json::from_str(json).ok()?),
        None => None,
    };
    Some(CacheEntry {
        ip,
        facts,
        fetched_at: DateTime::from_timestamp_millis(row.fetched_at_ms)?,
        expires_at: DateTime::from_timestamp_millis(row.expires_at_ms)?,
    })
}
