//! The `compact` function: one arrival day of staging NDJSON → Parquet by event day and language.
//!
//! - Staging objects are read shard by shard in first-sequence order. Within a shard, sequence
//!   numbers grow with arrival, so a line not beyond the highest position already emitted for its
//!   shard is a redelivery and is skipped: memory per shard, not per event.
//! - Rows go to one writer per (event day, language); each writes zstd Parquet through a multipart
//!   upload, so neither the day nor a file is ever held whole. Row groups close at
//!   [`Settings::row_group_bytes`]; when the writers together hold more than
//!   [`Settings::memory_budget`], the largest closes its row group early.
//! - Output names are deterministic (`part-{day}-{NNNNN}` per partition) and only after every new
//!   file is complete are the day's other `part-{day}-*` files deleted: a re-run, or a re-run after a
//!   crash, leaves exactly one copy of each event.

mod sink;

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::SchemaRef;
use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use pipeline::catalogue::Catalogue;
use pipeline::config::CommonConfig;
use pipeline::lake::{self, Position, RowBuilder};
use pipeline::layout::{self, compare_sequence_numbers, Prefixes};
use pipeline::ports::{publish_metrics, Metric, MetricsSink, ObjectInfo, ObjectStore, StoreError};
use pipeline::time::{self, Date};
use serde::Serialize;

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

/// The contract's response, plus the count of staging lines sent to quarantine.
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
    #[serde(skip)]
    pub parquet_bytes: u64,
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
    /// Multipart part size.
    pub part_size: usize,
    /// Staging objects fetched ahead of the one being decoded.
    pub prefetch: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            batch_rows: 8192,
            row_group_rows: 1 << 20,
            row_group_bytes: 128 << 20,
            file_bytes: 1 << 30,
            memory_budget: 64 << 20,
            part_size: pipeline::ports::MIN_PART_SIZE,
            prefetch: 8,
        }
    }
}

/// Which arrival day an invocation compacts: `{"day":"YYYY-MM-DD"}`, or a scheduled event whose
/// `time` is in the day after.
pub fn requested_day(payload: &serde_json::Value) -> Result<Date, CompactError> {
    if let Some(day) = payload.get("day") {
        return day.as_str().and_then(Date::parse).ok_or_else(|| {
            CompactError::BadRequest(format!("`day` must be \"YYYY-MM-DD\", got {day}"))
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
        return Ok(Date::of_micros(micros).pred());
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
    pub metrics: Arc<dyn MetricsSink>,
    pub settings: Settings,
}

impl Compact {
    pub fn new(
        prefixes: Prefixes,
        objects: Arc<dyn ObjectStore>,
        metrics: Arc<dyn MetricsSink>,
    ) -> Compact {
        let catalogue = Catalogue::embedded();
        Compact {
            schema: lake::arrow_schema(&catalogue),
            catalogue,
            prefixes,
            objects,
            metrics,
            settings: Settings::default(),
        }
    }

    /// Builds the real adapters once, at cold start.
    pub async fn from_config(config: &CommonConfig) -> Compact {
        let sdk = pipeline::aws::load_sdk_config().await;
        Compact::new(
            config.prefixes.clone(),
            Arc::new(pipeline::aws::S3ObjectStore::new(&sdk, config)),
            Arc::from(pipeline::aws::metrics_sink(&sdk, config)),
        )
    }

    pub async fn handle(&self, payload: &serde_json::Value) -> Result<Report, CompactError> {
        let day = requested_day(payload)?;
        let started = std::time::Instant::now();
        let report = self.run(day).await.inspect_err(|error| {
            tracing::error!(%error, day = %day, "compaction failed");
        })?;
        tracing::info!(
            day = report.day,
            input_objects = report.input_objects,
            input_events = report.input_events,
            duplicates_removed = report.duplicates_removed,
            rows_written = report.rows_written,
            files = report.files.len(),
            parquet_bytes = report.parquet_bytes,
            quarantined_lines = report.quarantined_lines,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compaction done"
        );
        publish_metrics(
            self.metrics.as_ref(),
            &[
                Metric::count("EventsCompacted", report.rows_written),
                Metric::count("DuplicatesRemoved", report.duplicates_removed),
                Metric::count("ParquetFilesWritten", report.files.len() as u64),
                Metric::bytes("ParquetBytesWritten", report.parquet_bytes),
            ],
        )
        .await;
        Ok(report)
    }

    /// Compacts arrival day `day`.
    pub async fn run(&self, day: Date) -> Result<Report, CompactError> {
        let staging = self.staging_objects(day).await?;
        let processed_prefix = format!("{}/", self.prefixes.processed);
        let earlier_parts: Vec<String> = self
            .objects
            .list(&processed_prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .filter(|key| layout::is_part_of_day(key, day))
            .collect();
        if staging.is_empty() && !earlier_parts.is_empty() {
            // Most likely staging expired under its lifecycle rule: deleting the lake's copy
            // would lose the day.
            return Err(CompactError::Refused {
                day,
                why: format!(
                    "no staging objects under {} but {} Parquet files from an earlier run exist; \
                     delete them by hand if the day is really empty",
                    self.prefixes.staging_day_prefix(day),
                    earlier_parts.len()
                ),
            });
        }

        let mut run = Run::new(self, day);
        let result = run.compact(&staging).await;
        let files = match result {
            Ok(()) => run.finish().await,
            Err(error) => {
                run.abort().await;
                return Err(error);
            }
        }?;

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
        Ok(Report {
            day: day.to_string(),
            input_objects: staging.len() as u64,
            input_events: run.input_events,
            duplicates_removed: run.duplicates_removed,
            rows_written: run.rows_written,
            files,
            quarantined_lines: run.quarantined_lines,
            parquet_bytes: run.parquet_bytes,
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

/// `(shardId, firstSequenceNumber)` from `…/{shardId}-{firstSequenceNumber}.ndjson`.
fn shard_and_first_sequence(key: &str) -> (&str, &str) {
    let name = key.rsplit('/').next().unwrap_or(key);
    let stem = name.strip_suffix(".ndjson").unwrap_or(name);
    stem.rsplit_once('-').unwrap_or((stem, ""))
}

/// One partition's output: rows being gathered, and the file they are being written to.
struct Partition {
    event_day: Date,
    language: String,
    rows: RowBuilder,
    file: Option<AsyncArrowWriter<ObjectFile>>,
    next_part: u32,
}

/// The state of one compaction.
struct Run<'c> {
    compact: &'c Compact,
    day: Date,
    properties: WriterProperties,
    partitions: HashMap<(Date, String), Partition>,
    /// Per shard, the highest position emitted so far.
    watermarks: HashMap<String, Position>,
    files: Vec<String>,
    input_events: u64,
    duplicates_removed: u64,
    rows_written: u64,
    quarantined_lines: u64,
    parquet_bytes: u64,
}

impl<'c> Run<'c> {
    fn new(compact: &'c Compact, day: Date) -> Run<'c> {
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
            properties,
            partitions: HashMap::new(),
            watermarks: HashMap::new(),
            files: Vec::new(),
            input_events: 0,
            duplicates_removed: 0,
            rows_written: 0,
            quarantined_lines: 0,
            parquet_bytes: 0,
        }
    }

    async fn compact(&mut self, staging: &[ObjectInfo]) -> Result<(), CompactError> {
        let objects = self.compact.objects.clone();
        let fetches: Vec<_> = staging
            .iter()
            .map(|info| {
                let objects = objects.clone();
                async move {
                    let mut body = Vec::with_capacity(info.size as usize);
                    let mut stream = objects.get(&info.key).await?;
                    while let Some(chunk) = stream.try_next().await? {
                        body.extend_from_slice(&chunk);
                    }
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
            let (sequence, sub) = (line.sequence_number(), line.sub_sequence_number());
            match self.watermarks.get_mut(line.shard_id()) {
                Some(position) if !position.is_before(sequence, sub) => {
                    self.duplicates_removed += 1;
                    continue;
                }
                Some(position) => position.set(sequence, sub),
                None => {
                    let mut position = Position {
                        sequence_number: String::new(),
                        sub_sequence_number: None,
                    };
                    position.set(sequence, sub);
                    self.watermarks
                        .insert(line.shard_id().to_string(), position);
                }
            }
            let event_day = Date::of_micros(line.created_at);
            let language = layout::language_partition(line.language().as_deref());
            let partition = self
                .partitions
                .entry((event_day, language))
                .or_insert_with_key(|(event_day, language)| Partition {
                    event_day: *event_day,
                    language: language.clone(),
                    rows: RowBuilder::new(&compact.catalogue, compact.schema.clone()),
                    file: None,
                    next_part: 0,
                });
            partition.rows.append(&compact.catalogue, &line);
            self.rows_written += 1;
            if partition.rows.rows() >= compact.settings.batch_rows {
                let key = (partition.event_day, partition.language.clone());
                self.encode(&key).await?;
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
        let batch = partition.rows.finish();
        if partition.file.is_none() {
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
        let keys: Vec<(Date, String)> = self.partitions.keys().cloned().collect();
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
