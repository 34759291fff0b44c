//! The `compact` function: one arrival day of staging NDJSON → Parquet by event day and language.
//!
//! - Staging objects are read shard by shard in first-sequence order. A line is a redelivery only
//!   when its exact (shard, sequence, sub-sequence) was already emitted ([`RedeliveryFilter`]); one
//!   shard's objects may interleave, and the filter remembers only positions later objects can
//!   still overlap.
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
pub mod lease;
mod manifest;
mod sink;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt;
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use pipeline::catalogue::Catalogue;
use pipeline::config::{CompactConfig, DEFAULT_STAGING_RETENTION_DAYS};
use pipeline::lake::{self, RowBuilder};
use pipeline::layout::{self, Prefixes};
use pipeline::ports::{
    publish_metrics, read_all, ConditionalStore, Metric, MetricsSink, ObjectInfo, ObjectStore,
    StoreError,
};
use pipeline::position::{compare_sequence_numbers, RedeliveryFilter};
use pipeline::time::{self, Date};
use serde::Serialize;

use crate::manifest::Manifest;
use crate::sink::ObjectFile;

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("refusing to compact {day}: {why}")]
    Refused { day: Date, why: String },
}

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
    /// Staging objects fetched ahead of the one being decoded.
    pub prefetch: usize,
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
            memory_budget: 64 << 20,
            batch_bytes: 8 << 20,
            part_size: pipeline::ports::MIN_PART_SIZE,
            prefetch: 8,
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

    pub async fn handle(&self, payload: &serde_json::Value) -> Result<Report, CompactError> {
        let request = parse_request(payload)?;
        self.leased(request.day, || self.handle_leased(request))
            .await
            .inspect_err(|error| {
                tracing::error!(%error, day = %request.day, "compaction failed");
            })
    }

    /// Runs `work` holding the lease, and refuses if another run holds it.
    async fn leased<T, W, F>(&self, day: Date, work: W) -> Result<T, CompactError>
    where
        W: FnOnce() -> F,
        F: std::future::Future<Output = Result<T, CompactError>>,
    {
        let key = self.prefixes.compaction_lease_key();
        let now = time::now_micros();
        let holder = format!(
            "{} at {}",
            std::env::var("AWS_LAMBDA_LOG_STREAM_NAME")
                .unwrap_or_else(|_| format!("process {}", std::process::id())),
            time::format_rfc3339_micros(now)
        );
        let lease = match lease::acquire(
            self.leases.as_ref(),
            &key,
            &holder,
            now,
            self.settings.lease_micros,
        )
        .await?
        {
            lease::Acquired::Held(lease) => lease,
            lease::Acquired::Busy(other) => {
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
        if let Err(error) = lease::release(self.leases.as_ref(), lease).await {
            tracing::warn!(%error, "could not release the compaction lease: it expires by itself");
        }
        result
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
                Metric::count("EventsCompacted", total(|r| r.rows_written)),
                Metric::count("DuplicatesRemoved", total(|r| r.duplicates_removed)),
                Metric::count("ParquetFilesWritten", total(|r| r.files.len() as u64)),
                Metric::bytes("ParquetBytesWritten", total(|r| r.parquet_bytes)),
                Metric::count("LinesQuarantined", total(|r| r.quarantined_lines)),
                Metric::count("DaysRecompacted", report.recompacted.len() as u64),
                Metric::count("LateObjectsFound", report.late_objects),
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
        self.leased(day, || async {
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
        for object in self.objects.list(&processed_prefix).await? {
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
        let mut run = Run::new(self, day, first_part);
        let result = run.compact(&staging).await;
        let files = match result {
            Ok(()) => run.finish().await,
            Err(error) => {
                run.abort().await;
                return Err(error);
            }
        }?;

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
        let mut files = files;
        files.sort();
        // Last: a crash before this leaves the old manifest, and the next scheduled run sees the
        // change again.
        let manifest = Manifest::new(
            day.to_string(),
            time::format_rfc3339_micros(time::now_micros()),
            &staging,
            files.clone(),
            run.rows_written,
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
            input_events: run.input_events,
            duplicates_removed: run.duplicates_removed,
            rows_written: run.rows_written,
            files,
            quarantined_lines: run.quarantined_lines,
            recompacted: Vec::new(),
            not_recompacted: Vec::new(),
            late_objects: 0,
            parquet_bytes: run.parquet_bytes,
            peak_buffered_bytes: run.peak_buffered_bytes,
        })
    }

    /// The day's staging objects, shard by shard, each shard's in first-sequence order.
    async fn staging_objects(&self, day: Date) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut objects: Vec<ObjectInfo> = self
            .objects
            .list(&self.prefixes.staging_day_prefix(day))
            .await?
            .into_iter()
            .filter(|o| o.key.ends_with(".ndjson"))
            .collect();
        objects.sort_by(|a, b| {
            let (shard_a, seq_a) = shard_and_first_sequence(&a.key);
            let (shard_b, seq_b) = shard_and_first_sequence(&b.key);
            shard_a
                .cmp(shard_b)
                .then_with(|| compare_sequence_numbers(seq_a, seq_b))
                .then_with(|| a.key.cmp(&b.key))
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

/// A staging object's shard and first sequence number from its name; a name of another shape
/// sorts by itself, before the named ones.
fn shard_and_first_sequence(key: &str) -> (&str, &str) {
    layout::parse_minute_object_name(key).unwrap_or(("", ""))
}

/// What `processed/` held when the invocation started: the Parquet part files, and every other key
/// (the manifests among them).
#[derive(Default)]
struct LakeListing {
    parts: Vec<String>,
    other: std::collections::HashSet<String>,
}

/// One partition's output: rows being gathered, and the file they are being written to.
struct Partition {
    event_day: Date,
    language: String,
    rows: RowBuilder,
    file: Option<AsyncArrowWriter<ObjectFile>>,
    next_part: u32,
}

impl Partition {
    fn buffered_bytes(&self) -> usize {
        self.rows.bytes()
    }
}

/// The state of one compaction.
struct Run<'c> {
    compact: &'c Compact,
    day: Date,
    /// Where this run's part numbers start: [`layout::first_part_of_next_run`].
    first_part: u32,
    properties: WriterProperties,
    partitions: HashMap<(Date, String), Partition>,
    redeliveries: RedeliveryFilter,
    files: Vec<String>,
    input_events: u64,
    duplicates_removed: u64,
    rows_written: u64,
    quarantined_lines: u64,
    parquet_bytes: u64,
    /// Bytes of rows gathered but not yet encoded, over all partitions, and the most at once.
    buffered_bytes: usize,
    peak_buffered_bytes: usize,
}

impl<'c> Run<'c> {
    fn new(compact: &'c Compact, day: Date, first_part: u32) -> Run<'c> {
        let settings = &compact.settings;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_max_row_group_row_count(Some(settings.row_group_rows))
            .set_max_row_group_bytes(Some(settings.row_group_bytes))
            .set_created_by(format!(
                "event-pipeline compact {}",
                env!("CARGO_PKG_VERSION")
            ))
            .build();
        Run {
            compact,
            day,
            first_part,
            properties,
            partitions: HashMap::new(),
            redeliveries: RedeliveryFilter::default(),
            files: Vec::new(),
            input_events: 0,
            duplicates_removed: 0,
            rows_written: 0,
            quarantined_lines: 0,
            parquet_bytes: 0,
            buffered_bytes: 0,
            peak_buffered_bytes: 0,
        }
    }

    async fn compact(&mut self, staging: &[ObjectInfo]) -> Result<(), CompactError> {
        let objects = self.compact.objects.clone();
        let fetches: Vec<_> = staging
            .iter()
            .map(|info| {
                let objects = objects.clone();
                async move {
                    let body = read_all(objects.as_ref(), &info.key, info.size as usize).await?;
                    Ok::<_, StoreError>((info.key.as_str(), body))
                }
            })
            .collect();
        let mut bodies =
            futures::stream::iter(fetches).buffered(self.compact.settings.prefetch.max(1));
        while let Some(fetched) = bodies.next().await {
            let (key, body) = fetched?;
            self.compact_object(key, &body).await?;
        }
        Ok(())
    }

    async fn compact_object(&mut self, key: &str, body: &[u8]) -> Result<(), CompactError> {
        let compact = self.compact;
        if let Some((shard, first)) = layout::parse_minute_object_name(key) {
            self.redeliveries.start_object(shard, first);
        }
        let mut bad_lines = Vec::new();
        for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.input_events += 1;
            let decoded = std::str::from_utf8(raw)
                .map_err(|e| format!("not UTF-8: {e}"))
                .and_then(lake::decode_staging_line);
            let line = match decoded {
                Ok(line) => line,
                Err(detail) => {
                    push_bad_line(&mut bad_lines, key, index + 1, &detail, raw);
                    self.quarantined_lines += 1;
                    continue;
                }
            };
            if !self.redeliveries.first_sight(
                line.shard_id(),
                line.sequence_number(),
                line.sub_sequence_number(),
            ) {
                self.duplicates_removed += 1;
                continue;
            }
            let event_day = Date::of_micros(line.created_at);
            let language = layout::language_partition(&line.language());
            let partition = self
                .partitions
                .entry((event_day, language))
                .or_insert_with_key(|(event_day, language)| Partition {
                    event_day: *event_day,
                    language: language.clone(),
                    rows: RowBuilder::new(&compact.catalogue, compact.schema.clone()),
                    file: None,
                    next_part: self.first_part,
                });
            partition.rows.append(&compact.catalogue, &line, raw.len());
            self.rows_written += 1;
            self.buffered_bytes += raw.len();
            self.peak_buffered_bytes = self.peak_buffered_bytes.max(self.buffered_bytes);
            if partition.rows.rows() >= compact.settings.batch_rows
                || partition.buffered_bytes() >= compact.settings.batch_bytes
            {
                let key = (partition.event_day, partition.language.clone());
                self.encode(&key).await?;
            }
            if self.buffered_bytes >= compact.settings.memory_budget / 2 {
                // Many partitions each below their own bound: encode the biggest.
                let biggest = self
                    .partitions
                    .iter()
                    .filter(|(_, p)| p.rows.rows() > 0)
                    .max_by_key(|(_, p)| p.buffered_bytes())
                    .map(|(key, _)| key.clone());
                if let Some(key) = biggest {
                    self.encode(&key).await?;
                }
            }
        }
        if !bad_lines.is_empty() {
            let quarantine_key = compact.prefixes.compaction_quarantine_key(key);
            tracing::warn!(
                staging_key = key,
                quarantine_key,
                "staging object has unreadable lines"
            );
            compact
                .objects
                .put(&quarantine_key, Bytes::from(bad_lines))
                .await?;
        }
        Ok(())
    }

    /// Encodes a partition's gathered rows into its file, then keeps files and memory in bounds.
    async fn encode(&mut self, key: &(Date, String)) -> Result<(), CompactError> {
        let compact = self.compact;
        let partition = self.partitions.get_mut(key).expect("partition exists");
        self.buffered_bytes -= partition.buffered_bytes();
        let batch = partition.rows.finish();
        if partition.file.is_none() {
            if partition.next_part >= self.first_part + layout::PART_BANK_SIZE {
                return Err(CompactError::Refused {
                    day: self.day,
                    why: format!(
                        "partition language={} of {} needs more than {} files; raise the file size",
                        partition.language,
                        partition.event_day,
                        layout::PART_BANK_SIZE
                    ),
                });
            }
            let object_key = compact.prefixes.processed_key(
                partition.event_day,
                &partition.language,
                self.day,
                partition.next_part,
            );
            partition.next_part += 1;
            let sink = ObjectFile::new(
                compact.objects.clone(),
                object_key,
                compact.settings.part_size,
            );
            partition.file = Some(AsyncArrowWriter::try_new(
                sink,
                compact.schema.clone(),
                Some(self.properties.clone()),
            )?);
        }
        let writer = partition.file.as_mut().expect("just opened");
        writer.write(&batch).await?;
        if writer.bytes_written() as u64 + writer.in_progress_size() as u64
            >= compact.settings.file_bytes
        {
            let writer = partition.file.take().expect("open");
            self.close_file(writer).await?;
        }
        self.stay_within_budget().await
    }

    /// Flushes the biggest unfinished row groups until the writers fit the memory budget.
    async fn stay_within_budget(&mut self) -> Result<(), CompactError> {
        loop {
            let mut total = 0usize;
            let mut largest: Option<(&(Date, String), usize)> = None;
            for (key, partition) in &self.partitions {
                if let Some(writer) = &partition.file {
                    let size = writer.in_progress_size();
                    total += size;
                    if largest.is_none_or(|(_, s)| size > s) {
                        largest = Some((key, size));
                    }
                }
            }
            let Some((key, size)) = largest else {
                return Ok(());
            };
            if total <= self.compact.settings.memory_budget || size == 0 {
                return Ok(());
            }
            let key = key.clone();
            let writer = self
                .partitions
                .get_mut(&key)
                .and_then(|p| p.file.as_mut())
                .expect("largest is open");
            writer.flush().await?;
        }
    }

    async fn close_file(
        &mut self,
        mut writer: AsyncArrowWriter<ObjectFile>,
    ) -> Result<(), CompactError> {
        writer.finish().await?;
        let sink = writer.into_inner();
        self.parquet_bytes += sink.bytes();
        self.files.push(sink.key().to_string());
        Ok(())
    }

    /// Writes what is still gathered and completes every file; returns every file written.
    async fn finish(&mut self) -> Result<Vec<String>, CompactError> {
        // In key order, so what a crash part-way leaves does not depend on hashing.
        let mut keys: Vec<(Date, String)> = self.partitions.keys().cloned().collect();
        keys.sort();
        for key in keys {
            if self.partitions[&key].rows.rows() > 0 {
                self.encode(&key).await?;
            }
            if let Some(writer) = self.partitions.get_mut(&key).and_then(|p| p.file.take()) {
                self.close_file(writer).await?;
            }
        }
        Ok(std::mem::take(&mut self.files))
    }

    /// After a failure: drop unfinished uploads so they leave no parts behind.
    async fn abort(&mut self) {
        for partition in self.partitions.values_mut() {
            if let Some(writer) = partition.file.take() {
                writer.into_inner().abort().await;
            }
        }
    }
}

/// A quarantine line for a staging line compaction could not read.
fn push_bad_line(out: &mut Vec<u8>, key: &str, line_number: usize, detail: &str, raw: &[u8]) {
    let line = serde_json::json!({
        "reason": pipeline::validate::Reason::InvalidStagingLine.code(),
        "detail": detail,
        "source_key": key,
        "line_number": line_number,
        "data_base64": base64::engine::general_purpose::STANDARD.encode(raw),
    });
    serde_json::to_writer(&mut *out, &line).expect("writing to a Vec cannot fail");
    out.push(b'\n');
}

#[cfg(test)]
mod tests;
