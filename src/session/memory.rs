//! `session.store: memory`: one process, bounded (moka), entries expire by TTL.

use super::{AccessRecord, Store, StoreError};
use async_trait::async_trait;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Expiring;

impl moka::Expiry<String, (Vec<u8>, Duration)> for Expiring {
    fn expire_after_create(&self, _k: &String, v: &(Vec<u8>, Duration), _now: Instant) -> Option<Duration> {
        Some(v.1)
    }
    fn expire_after_update(
        &self,
        _k: &String,
        v: &(Vec<u8>, Duration),
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(v.1)
    }
}

#[derive(Default)]
struct Access {
    rows: std::collections::HashMap<(String, String), (i64, i64, u64)>,
    idents: std::collections::HashMap<String, AccessRecord>,
}

pub struct MemoryStore {
    values: moka::sync::Cache<String, (Vec<u8>, Duration)>,
    sets: moka::sync::Cache<String, std::sync::Arc<Mutex<BTreeSet<String>>>>,
    /// Access evidence: per (sub, route) the times and count; per sub the identity's
    /// latest facts (joined on scan). Bounded by `capacity`.
    access: Mutex<Access>,
    capacity: u64,
}

impl MemoryStore {
    pub fn new(capacity: u64) -> MemoryStore {
        MemoryStore {
            values: moka::sync::Cache::builder().max_capacity(capacity).expire_after(Expiring).build(),
            sets: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(Duration::from_secs(7 * 24 * 3600))
                .build(),
            access: Mutex::new(Access::default()),
            capacity,
        }
    }

    pub fn len(&self) -> u64 {
        self.values.run_pending_tasks();
        self.values.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.values.get(key).map(|v| v.0))
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        self.values.insert(key.to_string(), (value, ttl));
        Ok(())
    }

    async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.values.remove(key).map(|v| v.0))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.values.invalidate(key);
        self.sets.invalidate(key);
        Ok(())
    }

    async fn set_if_absent(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<bool, StoreError> {
        // moka runs one initialiser per key and hands every concurrent caller the same
        // entry: only the caller whose value went in sees a fresh entry.
        let entry = self.values.entry(key.to_string()).or_insert_with(|| (value, ttl));
        Ok(entry.is_fresh())
    }

    async fn add_member(&self, key: &str, member: &str, _ttl: Duration) -> Result<(), StoreError> {
        let set = self.sets.get_with(key.to_string(), Default::default);
        set.lock().map_err(|_| StoreError::Corrupt)?.insert(member.to_string());
        Ok(())
    }

    async fn members(&self, key: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .sets
            .get(key)
            .map(|s| s.lock().map(|s| s.iter().cloned().collect()).unwrap_or_default())
            .unwrap_or_default())
    }

    async fn remove_member(&self, key: &str, member: &str) -> Result<bool, StoreError> {
        match self.sets.get(key) {
            Some(s) => Ok(s.lock().map_err(|_| StoreError::Corrupt)?.remove(member)),
            None => Ok(false),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn record_access(&self, records: &[AccessRecord]) -> Result<(), StoreError> {
        let mut a = self.access.lock().map_err(|_| StoreError::Corrupt)?;
        // Retention is applied on the way in too (not only by reports), and the batch is
        // checked as a whole before anything is merged: a refused batch is retried by the
        // caller, so a half-merged one would count its first records twice.
        if a.rows.len() as u64 + records.len() as u64 > self.capacity {
            let cutoff = crate::providers::now_secs() - super::ACCESS_RETENTION.as_secs() as i64;
            a.rows.retain(|_, r| r.1 >= cutoff);
            a.idents.retain(|_, r| r.last_seen >= cutoff);
        }
        let new_rows = records.iter().filter(|r| !a.rows.contains_key(&(r.sub.clone(), r.route.clone()))).count();
        if a.rows.len() as u64 + new_rows as u64 > self.capacity {
            return Err(StoreError::Unavailable("memory store: access evidence is full".into()));
        }
        for r in records {
            let key = (r.sub.clone(), r.route.clone());
            let row = a.rows.entry(key).or_insert((r.first_seen, r.last_seen, 0));
            *row = (row.0.min(r.first_seen), row.1.max(r.last_seen), row.2 + r.count);
            match a.idents.get_mut(&r.sub) {
                Some(i) if i.last_seen > r.last_seen => {}
                Some(i) => *i = r.clone(),
                None => {
                    a.idents.insert(r.sub.clone(), r.clone());
                }
            }
        }
        Ok(())
    }

    async fn scan_access(&self) -> Result<Vec<AccessRecord>, StoreError> {
        let cutoff = crate::providers::now_secs() - super::ACCESS_RETENTION.as_secs() as i64;
        let mut a = self.access.lock().map_err(|_| StoreError::Corrupt)?;
        a.rows.retain(|_, r| r.1 >= cutoff);
        a.idents.retain(|_, r| r.last_seen >= cutoff);
        Ok(a.rows
            .iter()
            .filter_map(|((sub, route), &(first_seen, last_seen, count))| {
                let i = a.idents.get(sub)?;
                Some(AccessRecord { route: route.clone(), first_seen, last_seen, count, ..i.clone() })
            })
            .collect())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
