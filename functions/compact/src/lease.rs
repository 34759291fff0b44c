//! One compaction at a time, without reserved concurrency: a run holds a lease, an object written
//! only if absent (or, once expired, only if unchanged since it was read), and deletes it, only if
//! it is still its own, when it ends. Two runs of a day would otherwise race on its part files.
//!
//! A run that dies keeps the lease until it expires: [`LEASE_MICROS`] is longer than Lambda's
//! 15-minute cap on an invocation, so an expired lease's holder is certainly gone.

use bytes::Bytes;
use pipeline::ports::{ConditionalStore, Precondition, StoreError};
use pipeline::time::{self, Date};

use crate::{Compact, CompactError};
use serde::{Deserialize, Serialize};

/// Lambda's longest invocation (15 minutes) and a minute of margin for clock skew.
pub const LEASE_MICROS: i64 = 16 * 60 * 1_000_000;
const _: () = assert!(
    LEASE_MICROS > 15 * 60 * 1_000_000,
    "a lease outlives any invocation"
);

/// The lease object's body: who holds it, since and until when (RFC 3339, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub holder: String,
    pub acquired_at: String,
    pub expires_at: String,
}

impl LeaseRecord {
    pub fn new(holder: &str, now_micros: i64, lease_micros: i64) -> LeaseRecord {
        LeaseRecord {
            holder: holder.to_string(),
            acquired_at: time::format_rfc3339_micros(now_micros),
            expires_at: time::format_rfc3339_micros(now_micros + lease_micros),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a lease record serialises")
    }

    pub fn from_json(body: &[u8]) -> Result<LeaseRecord, String> {
        let record: LeaseRecord = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        record.expires_at_micros()?;
        Ok(record)
    }

    fn expires_at_micros(&self) -> Result<i64, String> {
        time::parse_rfc3339(&self.expires_at)
            .map_err(|e| format!("expires_at {:?}: {e:?}", self.expires_at))
    }

    fn is_live(&self, now_micros: i64) -> bool {
        self.expires_at_micros()
            .is_ok_and(|expires| expires > now_micros)
    }
}

/// A lease this run holds.
#[derive(Debug)]
pub struct Lease {
    key: String,
    etag: String,
}

#[derive(Debug)]
pub enum Acquired {
    Held(Lease),
    /// Another run holds the lease.
    Busy(LeaseRecord),
}

/// Takes the lease at `key` unless another holder's is live.
pub async fn acquire(
    store: &dyn ConditionalStore,
    key: &str,
    holder: &str,
    now_micros: i64,
    lease_micros: i64,
) -> Result<Acquired, StoreError> {
    let body = Bytes::from(LeaseRecord::new(holder, now_micros, lease_micros).to_json());
    let held = |etag| {
        Ok(Acquired::Held(Lease {
            key: key.to_string(),
            etag,
        }))
    };
    // Each round loses only to a run that changed the lease in between; three rounds are plenty.
    let mut last_seen = None;
    for _ in 0..3 {
        if let Some(etag) = store
            .put_if(key, body.clone(), Precondition::Absent)
            .await?
        {
            return held(etag);
        }
        let Some((current, etag)) = store.get_tagged(key).await? else {
            continue; // released in between
        };
        let record = LeaseRecord::from_json(&current).map_err(|e| {
            StoreError::new(
                format!("reading the lease {key}"),
                format!("unreadable ({e}); delete it if no compaction is running"),
            )
        })?;
        if record.is_live(now_micros) {
            return Ok(Acquired::Busy(record));
        }
        // Expired: take it over, unless someone else just did.
        if let Some(etag) = store
            .put_if(key, body.clone(), Precondition::Matches(&etag))
            .await?
        {
            tracing::warn!(key, previous = ?record, "took over an expired compaction lease");
            return held(etag);
        }
        last_seen = Some(record);
    }
    match last_seen {
        Some(record) => Ok(Acquired::Busy(record)),
        None => Err(StoreError::new(
            format!("acquiring the lease {key}"),
            "it kept changing under this run",
        )),
    }
}

/// Gives the lease back, unless it is no longer ours (it expired and another run took it over).
pub async fn release(store: &dyn ConditionalStore, lease: Lease) -> Result<(), StoreError> {
    if !store.delete_if_match(&lease.key, &lease.etag).await? {
        tracing::warn!(
            key = lease.key,
            "the compaction lease was no longer this run's"
        );
    }
    Ok(())
}

/// Runs `work` holding the lease, and refuses if another run holds it.
pub(crate) async fn run_leased<T, W, F>(
    compact: &Compact,
    day: Date,
    work: W,
) -> Result<T, CompactError>
where
    W: FnOnce() -> F,
    F: std::future::Future<Output = Result<T, CompactError>>,
{
    let key = compact.prefixes.compaction_lease_key();
    let now = time::now_micros();
    let holder = format!(
        "{} at {}",
        std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
            .unwrap_or_else(|_| format!("process {}", std::process::id())),
        time::format_rfc3339_micros(now)
    );
    let lease = match acquire(
        compact.leases.as_ref(),
        &key,
        &holder,
        now,
        compact.settings.lease_micros,
    )
    .await?
    {
        Acquired::Held(lease) => lease,
        Acquired::Busy(other) => {
            return Err(CompactError::Refused {
                day,
                why: format!(
                    "another compaction ({}) holds the lease {key} since {}, until {} at the \
                     latest; two runs would race on the same files, so try again after it",
                    other.holder, other.acquired_at, other.expires_at
                ),
            })
        }
    };
    let result = work().await;
    if let Err(error) = release(compact.leases.as_ref(), lease).await {
        tracing::warn!(%error, "could not release the compaction lease: it expires by itself");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::memory::MemoryObjectStore;
    use pipeline::ports::ObjectStore;

    const KEY: &str = "processed/_lease/compact.json";
    const NOW: i64 = 1_712_844_606_000_000;
    const MINUTE: i64 = 60_000_000;

    #[test]
    fn a_record_survives_its_round_trip() {
        let record = LeaseRecord::new("sandbox-1", NOW, LEASE_MICROS);
        assert_eq!(record.acquired_at, "2024-04-11T14:10:06.000000Z");
        assert_eq!(record.expires_at, "2024-04-11T14:26:06.000000Z");
        assert_eq!(LeaseRecord::from_json(&record.to_json()), Ok(record));
        assert!(
            LeaseRecord::from_json(br#"{"holder":"x","acquired_at":"","expires_at":"soon"}"#)
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_live_lease_keeps_everyone_else_out_until_it_is_released() {
        let store = MemoryObjectStore::default();
        let Acquired::Held(first) = acquire(&store, KEY, "a", NOW, 16 * MINUTE).await.unwrap()
        else {
            panic!("a free lease was not taken")
        };
        let later = NOW + 15 * MINUTE;
        let Acquired::Busy(holder) = acquire(&store, KEY, "b", later, 16 * MINUTE).await.unwrap()
        else {
            panic!("a live lease was taken over")
        };
        assert_eq!(holder.holder, "a");
        release(&store, first).await.unwrap();
        assert!(store.object(KEY).is_none());
        assert!(matches!(
            acquire(&store, KEY, "b", later, 16 * MINUTE).await.unwrap(),
            Acquired::Held(_)
        ));
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_old_holder_cannot_release_the_new_one() {
        let store = MemoryObjectStore::default();
        let Acquired::Held(crashed) = acquire(&store, KEY, "a", NOW, 16 * MINUTE).await.unwrap()
        else {
            panic!()
        };
        let later = NOW + 17 * MINUTE;
        let Acquired::Held(_) = acquire(&store, KEY, "b", later, 16 * MINUTE).await.unwrap() else {
            panic!("an expired lease was not taken over")
        };
        // The old holder wakes up and releases: the new holder's lease stays.
        release(&store, crashed).await.unwrap();
        let record = LeaseRecord::from_json(&store.object(KEY).unwrap()).unwrap();
        assert_eq!(record.holder, "b");
    }

    #[tokio::test]
    async fn of_runs_that_start_together_exactly_one_holds_the_lease() {
        let store = MemoryObjectStore::default();
        let runs = (0..8).map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                acquire(&store, KEY, &format!("run-{n}"), NOW, 16 * MINUTE)
                    .await
                    .unwrap()
            })
        });
        let outcomes = futures::future::join_all(runs).await;
        let held = outcomes
            .iter()
            .filter(|o| matches!(o.as_ref().unwrap(), Acquired::Held(_)))
            .count();
        assert_eq!(held, 1);
    }

    #[tokio::test]
    async fn an_unreadable_lease_is_an_error_that_says_what_to_do() {
        let store = MemoryObjectStore::default();
        store.put(KEY, Bytes::from_static(b"{}")).await.unwrap();
        let error = acquire(&store, KEY, "a", NOW, MINUTE).await.unwrap_err();
        assert!(error
            .to_string()
            .contains("delete it if no compaction is running"));
    }
}
