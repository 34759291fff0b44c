//! What one compaction of an arrival day consumed and wrote, kept at
//! [`Prefixes::manifest_key`](pipeline::layout::Prefixes::manifest_key). It lets a later run tell
//! whether that day's staging changed since (late data: compact again) or lost objects (expired:
//! refuse, so the lake never shrinks).

use std::collections::HashMap;

use pipeline::ports::ObjectInfo;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The arrival day, `YYYY-MM-DD`.
    pub day: String,
    pub compacted_at: String,
    /// Every staging object read, with its size.
    pub staging: Vec<ConsumedObject>,
    /// The Parquet files written.
    pub files: Vec<String>,
    pub rows_written: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumedObject {
    pub key: String,
    pub size: u64,
}

/// How a day's staging now compares with what its last compaction consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StagingChange {
    /// Objects that are new, or whose size changed (rewritten by a redelivery).
    pub new_or_changed: usize,
    /// Objects consumed then and gone now (expired, or deleted by hand).
    pub gone: usize,
}

impl Manifest {
    pub fn new(
        day: String,
        compacted_at: String,
        staging: &[ObjectInfo],
        files: Vec<String>,
        rows_written: u64,
    ) -> Manifest {
        Manifest {
            day,
            compacted_at,
            staging: staging
                .iter()
                .map(|o| ConsumedObject {
                    key: o.key.clone(),
                    size: o.size,
                })
                .collect(),
            files,
            rows_written,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn compare(&self, staging_now: &[ObjectInfo]) -> StagingChange {
        let then: HashMap<&str, u64> = self
            .staging
            .iter()
            .map(|o| (o.key.as_str(), o.size))
            .collect();
        let new_or_changed = staging_now
            .iter()
            .filter(|o| then.get(o.key.as_str()) != Some(&o.size))
            .count();
        let now: std::collections::HashSet<&str> =
            staging_now.iter().map(|o| o.key.as_str()).collect();
        let gone = self
            .staging
            .iter()
            .filter(|o| !now.contains(o.key.as_str()))
            .count();
        StagingChange {
            new_or_changed,
            gone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, size: u64) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size,
        }
    }

    #[test]
    fn round_trips_and_tells_new_changed_and_gone_objects() {
        let consumed = [object("a", 1), object("b", 2), object("c", 3)];
        let manifest = Manifest::new(
            "2024-04-11".into(),
            "2024-04-12T00:15:00.000000Z".into(),
            &consumed,
            vec!["processed/x.parquet".into()],
            6,
        );
        assert_eq!(Manifest::from_json(&manifest.to_json()).unwrap(), manifest);
        assert_eq!(manifest.compare(&consumed), StagingChange::default());
        let now = [object("a", 1), object("b", 5), object("d", 4)];
        assert_eq!(
            manifest.compare(&now),
            StagingChange {
                new_or_changed: 2,
                gone: 1
            }
        );
    }
}
