//! The `compact` function: one arrival day of staging NDJSON → Parquet by event day and language.
//!
//! This file holds the request and the runs it asks for; [`run`] one day's pass over its staging,
//! [`partition`] one partition's files.
//!
//! - Staging objects are read shard by shard in first-sequence order. A line is a redelivery only
//!   when its exact (shard, sequence, sub-sequence) was already emitted
//!   ([`pipeline::position::RedeliveryFilter`]); one shard's objects may interleave, and the filter
//!   remembers only positions later objects can still overlap.
//! - Rows go to one writer per (event day, language); each writes zstd Parquet through a multipart
//!   upload, so neither the day nor a file is ever held whole. Row groups close at
//!   [`Settings::row_group_bytes`]; when the writers together hold more than
//!   [`Settings::memory_budget`], the largest closes its row group early.
//! - Output names are deterministic (`part-{day}-{NNNNN}` per partition). A run numbers its files
//!   in the bank (`00000`–`49999` or `50000`–`99999`) the day's current files are not in, so it
//!   overwrites none of them, and only after every new file is complete are the day's other
//!   `part-{day}-*` files deleted: a crash leaves the old files whole, and a re-run, or a re-run
//!   after a crash, leaves exactly one copy of each event.
//! - One compaction runs at a time: each holds a lease in S3 ([`lease`]) while it works, and a run
//!   that finds the lease held refuses rather than race the holder on the same files.
//! - Each run records what it consumed in a manifest. A later run refuses to rebuild a day whose
//!   consumed staging has partly gone (the lake never shrinks) unless forced, and the scheduled run
//!   compacts again every earlier day, within staging retention, whose staging changed since: late
//!   data reaches the lake by itself.

pub mod catalog;
mod decode;
mod error;
mod fetch;
pub mod lease;
mod manifest;
mod partition;
mod run;
mod sink;

use std::sync::Arc;

use arrow_schema::SchemaRef;
use bytes::Bytes;
use pipeline::catalogue::Catalogue;
use pipeline::config::{CompactConfig, DEFAULT_STAGING_RETENTION_DAYS};
use pipeline::lake;
use pipeline::layout::{self, MinuteKey, Prefixes};
use pipeline::metric_names::compact as names;
use pipeline::ports::{
    list_by_folder, publish_metrics, read_all, ConditionalStore, Metric, MetricsSink, ObjectInfo,
    ObjectStore, StoreError,
};
use pipeline::position::SequenceNumber;
use pipeline::time::{self, Date};
use serde::Serialize;
use tracing::Instrument as _;

pub use crate::error::CompactError;
pub use crate::fetch::FetchWindow;
use crate::manifest::Manifest;
use crate::run::Run;

/// The contract's response, plus the count of staging lines sent to quarantine and, for a
/// scheduled run, the earlier days it compacted again or had to leave alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    pub day: String,
    pub input_objects: u64,
    pub input_events: u64,
    pub duplicates_removed: u64,
    pub rows_written: u64,
    /// Keys of the Parquet files this run wrote, sorted.
    pub files: Vec<String>,
    pub quarantined_lines: u64,
    /// Earlier days compacted again because their staging changed (late data).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recompacted: Vec<Report>,
    /// Earlier days whose staging changed but that could not be compacted again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_recompacted: Vec<NotRecompacted>,
    /// Staging objects that were new or rewritten since the last compaction of their day.
    #[serde(skip_serializing_if = "is_zero")]
    pub late_objects: u64,
    #[serde(skip)]
    pub parquet_bytes: u64,
    /// The most bytes of undecoded rows held at once, for the memory bound's tests.
    #[serde(skip)]
    pub peak_buffered_bytes: usize,
    /// The most staging fetches in flight at once (the adaptive window's widest).
    #[serde(skip)]
    pub widest_fetch_window: usize,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotRecompacted {
    pub day: String,
    pub why: String,
}

/// What an invocation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The arrival day to compact.
    pub day: Date,
    /// Rebuild the day even if staging it compacted before is gone (the lake may shrink).
    pub force: bool,
    /// Also compact again the earlier days whose staging changed (the scheduled run).
    pub catch_up: bool,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Rows buffered per partition before they are encoded.
    pub batch_rows: usize,
    pub row_group_rows: usize,
    pub row_group_bytes: usize,
    /// A partition's file is closed, and the next part started, past this size.
    pub file_bytes: u64,
    /// Upper bound on the encoded-but-unflushed bytes of all writers together.
    pub memory_budget: usize,
    /// Undecoded row bytes buffered per partition before they are encoded: events can be up to
    /// 1 MiB each, so a row count alone does not bound memory.
    pub batch_bytes: usize,
    /// Multipart part size.
    pub part_size: usize,
    /// A column's open data page, and its dictionary, are this big at most: every column of every
    /// open partition holds one of each, so at Parquet's usual 1 MiB, 13 columns in 22 partitions
    /// could hold over 500 MiB.
    pub page_bytes: usize,
    /// Staging objects fetched ahead of the one being decoded.
    pub fetch: FetchWindow,
    /// How long a run's lease keeps other runs out if the run dies without releasing it.
    pub lease_micros: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_rows: 8192,
            row_group_rows: 1 << 20,
            row_group_bytes: 128 << 20,
            file_bytes: 1 << 30,
            // Twice these (and 32 MiB of fetches ahead) took as long and more memory: NOTES.md.
            memory_budget: 16 << 20,
            batch_bytes: 4 << 20,
            part_size: pipeline::ports::MIN_PART_SIZE,
            page_bytes: 256 << 10,
            fetch: FetchWindow {
                initial_fetches: 8,
                // Half of a Lambda process's 1,024 file descriptors: at 30 ms a GET, 256 left a
                // day of 66,667 small objects 7.8 s of fetching however fast it decoded.
                max_fetches: 512,
                max_bytes: 8 << 20,
            },
            lease_micros: lease::LEASE_MICROS,
        }
    }
}

/// Reads the payload: `{"day":"YYYY-MM-DD"}` (optionally `"force": true`), or a scheduled event
/// whose `time` is in the day after the one to compact (which also catches up on earlier days).
pub fn parse_request(payload: &serde_json::Value) -> Result<Request, CompactError> {
    let force = match payload.get("force") {
        None => false,
        Some(serde_json::Value::Bool(force)) => *force,
        Some(other) => {
            return Err(CompactError::BadRequest(format!(
                "`force` must be true or false, got {other}"
            )))
        }
    };
    if let Some(day) = payload.get("day") {
        let day = day.as_str().and_then(Date::parse).ok_or_else(|| {
            CompactError::BadRequest(format!("`day` must be \"YYYY-MM-DD\", got {day}"))
        })?;
        return Ok(Request {
            day,
            force,
            catch_up: false,
        });
    }
    if let Some(time) = payload.get("time") {
        let micros = time
            .as_str()
            .and_then(|t| time::parse_rfc3339(t).ok())
            .ok_or_else(|| {
                CompactError::BadRequest(format!(
                    "`time` must be an RFC 3339 timestamp, got {time}"
                ))
            })?;
        return Ok(Request {
            day: Date::of_micros(micros).pred(),
            force,
            catch_up: true,
        });
    }
    Err(CompactError::BadRequest(format!(
        "expected {{\"day\":\"YYYY-MM-DD\"}} or a scheduled event with a \"time\" field, got {}",
        pipeline::validate::shorten(&payload.to_string())
    )))
}

pub struct Compact {
    pub catalogue: Catalogue,
    pub schema: SchemaRef,
    pub prefixes: Prefixes,
    pub objects: Arc<dyn ObjectStore>,
    /// Where the lease lives: the same bucket, through its conditional writes.
    pub leases: Arc<dyn ConditionalStore>,
    pub metrics: Arc<dyn MetricsSink>,
    /// The table whose partitions each run registers (Glue), when one is configured.
    pub catalog: Option<Arc<dyn catalog::PartitionCatalog>>,
    pub settings: Settings,
    /// How many days back the scheduled run looks for late data.
    pub staging_retention_days: u32,
}

impl Compact {
    pub fn new<S: ObjectStore + ConditionalStore + 'static>(
        prefixes: Prefixes,
        store: Arc<S>,
        metrics: Arc<dyn MetricsSink>,
    ) -> Compact {
        let catalogue = Catalogue::embedded();
        Compact {
            schema: lake::arrow_schema(&catalogue),
            catalogue,
            prefixes,
            objects: store.clone(),
            leases: store,
            metrics,
            catalog: None,
            settings: Settings::default(),
            staging_retention_days: DEFAULT_STAGING_RETENTION_DAYS,
        }
    }

    /// Builds the real adapters once, at cold start.
    pub async fn from_config(config: &CompactConfig) -> Compact {
        let sdk = pipeline::aws::load_sdk_config().await;
        let common = &config.common;
        let mut compact = Compact::new(
            common.prefixes.clone(),
            Arc::new(pipeline::aws::S3ObjectStore::new(&sdk, common)),
            Arc::from(pipeline::aws::metrics_sink(&sdk, common)),
        );
        compact.staging_retention_days = config.staging_retention_days;
        compact.catalog = config.glue_table.as_ref().map(|glue| {
            Arc::new(catalog::GlueCatalog::new(
                &sdk,
                &glue.database,
                &glue.table,
                &common.bucket,
            )) as Arc<dyn catalog::PartitionCatalog>
        });
        compact
    }

    /// One invocation, its log lines inside a `compaction` span naming the day (within the
    /// runtime's span of the request id).
    pub async fn handle(&self, payload: &serde_json::Value) -> Result<Report, CompactError> {
        let request = parse_request(payload)
            .inspect_err(|error| tracing::error!(%error, "compaction refused its payload"))?;
        let span = tracing::info_span!("compaction", day = %request.day);
        lease::run_leased(self, request.day, || self.handle_leased(request))
            .instrument(span)
            .await
            .inspect_err(|error| {
                tracing::error!(%error, error_type = error.error_type(), day = %request.day, "compaction failed");
            })
    }

    async fn handle_leased(&self, request: Request) -> Result<Report, CompactError> {
        let started = std::time::Instant::now();
        // One listing of the lake serves every day this invocation compacts: compacting a day
        // touches only its own `part-{day}-*` files and manifest.
        let lake = self.list_lake().await?;
        let mut report = self.run_listed(request.day, request.force, &lake).await?;
        if request.catch_up {
            self.catch_up(request.day, &lake, &mut report).await?;
        }
        tracing::info!(
            day = report.day,
            input_objects = report.input_objects,
            input_events = report.input_events,
            duplicates_removed = report.duplicates_removed,
            rows_written = report.rows_written,
            files = report.files.len(),
            parquet_bytes = report.parquet_bytes,
            quarantined_lines = report.quarantined_lines,
            days_recompacted = report.recompacted.len(),
            late_objects = report.late_objects,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compaction done"
        );
        let all = || std::iter::once(&report).chain(&report.recompacted);
        let total = |field: fn(&Report) -> u64| all().map(field).sum::<u64>();
        publish_metrics(
            self.metrics.as_ref(),
            &[
                Metric::count(names::EVENTS_COMPACTED, total(|r| r.rows_written)),
                Metric::count(names::DUPLICATES_REMOVED, total(|r| r.duplicates_removed)),
                Metric::count(
                    names::PARQUET_FILES_WRITTEN,
                    total(|r| r.files.len() as u64),
                ),
                Metric::bytes(names::PARQUET_BYTES_WRITTEN, total(|r| r.parquet_bytes)),
                Metric::count(names::LINES_QUARANTINED, total(|r| r.quarantined_lines)),
                Metric::count(names::DAYS_RECOMPACTED, report.recompacted.len() as u64),
                Metric::count(names::LATE_OBJECTS_FOUND, report.late_objects),
            ],
        )
        .await;
        Ok(report)
    }

    /// Compacts arrival day `day` (refusing if staging it compacted before is gone).
    pub async fn run(&self, day: Date) -> Result<Report, CompactError> {
        self.run_with(day, false).await
    }

    /// Compacts arrival day `day`; with `force`, even if staging it compacted before is gone.
    pub async fn run_with(&self, day: Date, force: bool) -> Result<Report, CompactError> {
        lease::run_leased(self, day, || async {
            let lake = self.list_lake().await?;
            self.run_listed(day, force, &lake).await
        })
        .await
    }

    async fn run_listed(
        &self,
        day: Date,
        force: bool,
        lake: &LakeListing,
    ) -> Result<Report, CompactError> {
        let staging = self.staging_objects(day).await?;
        let manifest = self.manifest(day, lake).await?;
        self.compact_day(day, staging, manifest.as_ref(), force, &lake.parts)
            .await
    }

    /// Every Parquet part file and manifest in the lake (all arrival days), in one listing.
    async fn list_lake(&self) -> Result<LakeListing, CompactError> {
        let processed_prefix = format!("{}/", self.prefixes.processed);
        let mut lake = LakeListing::default();
        // By month (year= and month= folders): a year of the lake is thousands of keys.
        let listed = list_by_folder(self.objects.as_ref(), &processed_prefix, 2).await?;
        for object in listed {
            if object.key.ends_with(".parquet") {
                lake.parts.push(object.key);
            } else {
                lake.other.insert(object.key);
            }
        }
        Ok(lake)
    }

    /// The scheduled run's second half: every earlier day within staging retention whose staging
    /// changed since its last compaction (or that was never compacted) is compacted again. A day
    /// whose consumed staging is partly gone is left alone and reported: rebuilding it from what is
    /// left would shrink the lake.
    async fn catch_up(
        &self,
        today: Date,
        lake: &LakeListing,
        report: &mut Report,
    ) -> Result<(), CompactError> {
        let mut day = today;
        for _ in 1..self.staging_retention_days {
            day = day.pred();
            let staging = self.staging_objects(day).await?;
            if staging.is_empty() {
                continue;
            }
            let manifest = self.manifest(day, lake).await?;
            let late = match &manifest {
                Some(manifest) => manifest.compare(&staging).new_or_changed,
                None => staging.len(),
            };
            if late == 0 {
                continue;
            }
            tracing::info!(day = %day, late_objects = late, "staging changed since the day was compacted");
            match self
                .compact_day(day, staging, manifest.as_ref(), false, &lake.parts)
                .await
            {
                Ok(again) => {
                    report.late_objects += late as u64;
                    report.recompacted.push(again);
                }
                Err(CompactError::Refused { why, .. }) => {
                    tracing::error!(day = %day, why, "late data left in staging");
                    report.not_recompacted.push(NotRecompacted {
                        day: day.to_string(),
                        why,
                    });
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// The manifest of `day`'s last compaction, if the listing holds one.
    async fn manifest(
        &self,
        day: Date,
        lake: &LakeListing,
    ) -> Result<Option<Manifest>, CompactError> {
        let key = self.prefixes.manifest_key(day);
        if !lake.other.contains(&key) {
            return Ok(None);
        }
        let bytes = read_all(self.objects.as_ref(), &key, 0).await?;
        Manifest::from_json(&bytes)
            .map(Some)
            .map_err(|e| CompactError::Refused {
                day,
                why: format!(
                    "its manifest {key} is unreadable ({e}); delete it to compact the day afresh"
                ),
            })
    }

    async fn compact_day(
        &self,
        day: Date,
        staging: Vec<ObjectInfo>,
        manifest: Option<&Manifest>,
        force: bool,
        parts: &[String],
    ) -> Result<Report, CompactError> {
        let earlier_parts: Vec<String> = parts
            .iter()
            .filter(|key| layout::is_part_of_day(key, day))
            .cloned()
            .collect();
        if !force {
            refuse_to_shrink(self, day, &staging, manifest, &earlier_parts)?;
        }

        // New files go to the bank of part numbers the lake's current files are not in: until every
        // new file is complete, the old ones stay whole and nothing overwrites them.
        let first_part = layout::first_part_of_next_run(
            day,
            manifest.map(|m| m.files.as_slice()),
            &earlier_parts,
        );
        let mut run = Run::new(self, day, first_part).compact(&staging).await?;
        let mut files = std::mem::take(&mut run.files);
        files.sort();

        // Before the old files go and the manifest is written: if registering fails, the day is
        // compacted, and registered, again by the next run.
        if let Some(catalog) = &self.catalog {
            let partitions: std::collections::BTreeSet<_> = files
                .iter()
                .filter_map(|key| self.prefixes.parse_processed_partition(key))
                .collect();
            catalog
                .register(&partitions.into_iter().collect::<Vec<_>>())
                .await?;
        }
        let written: std::collections::HashSet<&str> = files.iter().map(String::as_str).collect();
        let leftovers: Vec<String> = earlier_parts
            .into_iter()
            .filter(|key| !written.contains(key.as_str()))
            .collect();
        if !leftovers.is_empty() {
            self.objects.delete(&leftovers).await?;
        }
        // Last: a crash before this leaves the old manifest, and the next scheduled run sees the
        // change again.
        let manifest = Manifest::new(
            day.to_string(),
            time::format_rfc3339_micros(time::now_micros()),
            &staging,
            files.clone(),
            run.counts.rows_written,
        );
        self.objects
            .put(
                &self.prefixes.manifest_key(day),
                Bytes::from(manifest.to_json()),
            )
            .await?;
        Ok(Report {
            day: day.to_string(),
            input_objects: staging.len() as u64,
            input_events: run.counts.input_events,
            duplicates_removed: run.counts.duplicates_removed,
            rows_written: run.counts.rows_written,
            files,
            quarantined_lines: run.counts.quarantined_lines,
            recompacted: Vec::new(),
            not_recompacted: Vec::new(),
            late_objects: 0,
            parquet_bytes: run.parquet_bytes,
            peak_buffered_bytes: run.counts.peak_buffered_bytes,
            widest_fetch_window: run.widest_fetch_window,
        })
    }

    /// The day's staging objects, shard by shard, each shard's in first-sequence order.
    async fn staging_objects(&self, day: Date) -> Result<Vec<ObjectInfo>, StoreError> {
        // By hour: a day is ~70 pages of 1,000 keys, each asked for after the last.
        let day_prefix = self.prefixes.staging_day_prefix(day);
        let mut objects: Vec<ObjectInfo> = list_by_folder(self.objects.as_ref(), &day_prefix, 1)
            .await?
            .into_iter()
            .filter(|o| o.key.ends_with(".ndjson"))
            .collect();
        // A key of another shape sorts by itself, before the named ones. Each key is parsed once:
        // a day can hold tens of thousands of objects.
        objects.sort_by_cached_key(|object| {
            let (shard, first) =
                MinuteKey::parse(&object.key).map_or(("", ""), |k| (k.shard_id, k.first_sequence));
            (
                shard.to_string(),
                SequenceNumber(first.to_string()),
                object.key.clone(),
            )
        });
        Ok(objects)
    }
}

/// Refuses a run that would rebuild a day from less staging than an earlier run consumed.
fn refuse_to_shrink(
    compact: &Compact,
    day: Date,
    staging: &[ObjectInfo],
    manifest: Option<&Manifest>,
    earlier_parts: &[String],
) -> Result<(), CompactError> {
    let gone = manifest.map_or(0, |m| m.compare(staging).gone);
    let why = if let (Some(manifest), true) = (manifest, gone > 0) {
        format!(
            "{gone} of the {} staging objects its compaction of {} consumed are gone \
             (expired?), so a rebuild would drop their events from the lake; \
             send {{\"day\":\"{day}\",\"force\":true}} to rebuild from what is left",
            manifest.staging.len(),
            manifest.compacted_at
        )
    } else if staging.is_empty() && !earlier_parts.is_empty() {
        // Also for days compacted before manifests existed.
        format!(
            "no staging objects under {} but {} Parquet files from an earlier run exist; \
             send {{\"day\":\"{day}\",\"force\":true}} if the day is really empty",
            compact.prefixes.staging_day_prefix(day),
            earlier_parts.len()
        )
    } else {
        return Ok(());
    };
    Err(CompactError::Refused { day, why })
}

/// What `processed/` held when the invocation started: the Parquet part files, and every other key
/// (the manifests among them).
#[derive(Default)]
struct LakeListing {
    parts: Vec<String>,
    other: std::collections::HashSet<String>,
}

#[cfg(test)]
mod tests;
