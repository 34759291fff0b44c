//! One compaction of one arrival day: staging objects streamed in (fetched ahead, decoded in order),
//! each line checked against the redelivery filter, and rows handed to one [`PartitionWriter`] per
//! (event day, language) while all writers together stay within the memory budget.

use std::collections::HashMap;

use bytes::Bytes;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use pipeline::layout::{self, MinuteKey};
use pipeline::ports::ObjectInfo;
use pipeline::position::RedeliveryFilter;
use pipeline::quarantine_line::{Origin, QuarantineLine};
use pipeline::staging_line::decode_staging_line;
use pipeline::time::Date;
use pipeline::validate::Reason;

use crate::fetch::Prefetcher;
use crate::partition::{FileSettings, PartitionKey, PartitionWriter, WrittenFile};
use crate::{Compact, CompactError};

fn file_settings<'a>(
    compact: &'a Compact,
    properties: &'a WriterProperties,
    arrival_day: Date,
) -> FileSettings<'a> {
    FileSettings {
        objects: &compact.objects,
        prefixes: &compact.prefixes,
        schema: &compact.schema,
        properties,
        arrival_day,
        part_size: compact.settings.part_size,
        file_bytes: compact.settings.file_bytes,
    }
}

/// What a run counted and wrote.
#[derive(Debug, Default)]
pub struct Outcome {
    pub files: Vec<String>,
    pub input_events: u64,
    pub duplicates_removed: u64,
    pub rows_written: u64,
    pub quarantined_lines: u64,
    pub parquet_bytes: u64,
    /// The most bytes of undecoded rows held at once, for the memory bound's tests.
    pub peak_buffered_bytes: usize,
    /// The most staging fetches the run had in flight at once.
    pub widest_fetch_window: usize,
}

pub struct Run<'c> {
    compact: &'c Compact,
    day: Date,
    /// Where this run's part numbers start: [`layout::first_part_of_next_run`].
    first_part: u32,
    properties: WriterProperties,
    partitions: HashMap<PartitionKey, PartitionWriter>,
    redeliveries: RedeliveryFilter,
    outcome: Outcome,
    /// Bytes of rows gathered but not yet encoded, over all partitions.
    buffered_bytes: usize,
}

impl<'c> Run<'c> {
    pub fn new(compact: &'c Compact, day: Date, first_part: u32) -> Run<'c> {
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
            outcome: Outcome::default(),
            buffered_bytes: 0,
        }
    }

    /// Reads every staging object (in the order given: shard by shard, first sequence first),
    /// then completes every file. After a failure, unfinished uploads are aborted.
    pub async fn compact(mut self, staging: &[ObjectInfo]) -> Result<Outcome, CompactError> {
        let result = match self.read_all(staging).await {
            Ok(()) => self.finish().await,
            Err(error) => Err(error),
        };
        if result.is_err() {
            self.abort().await;
        }
        result.map(|()| self.outcome)
    }

    async fn read_all(&mut self, staging: &[ObjectInfo]) -> Result<(), CompactError> {
        let mut fetches = Prefetcher::new(
            self.compact.objects.clone(),
            staging,
            self.compact.settings.fetch,
        );
        while let Some(fetched) = fetches.next().await {
            let (info, body) = fetched?;
            self.read_object(&info.key, &body).await?;
        }
        self.outcome.widest_fetch_window = fetches.widest();
        Ok(())
    }

    async fn read_object(&mut self, key: &str, body: &[u8]) -> Result<(), CompactError> {
        let compact = self.compact;
        let object = MinuteKey::parse(key).map(|k| k.object_start());
        let mut bad_lines = Vec::new();
        for (index, raw) in body.split(|&b| b == b'\n').enumerate() {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.outcome.input_events += 1;
            let decoded = std::str::from_utf8(raw)
                .map_err(|e| format!("not UTF-8: {e}"))
                .and_then(decode_staging_line);
            let line = match decoded {
                Ok(line) => line,
                Err(detail) => {
                    QuarantineLine {
                        reason: Reason::InvalidStagingLine,
                        detail: detail.into(),
                        origin: Origin::StagingLine {
                            source_key: key.into(),
                            line_number: index as u64 + 1,
                        },
                        data: raw.into(),
                    }
                    .push_to(&mut bad_lines);
                    self.outcome.quarantined_lines += 1;
                    continue;
                }
            };
            if !self.redeliveries.first_sight(object, line.source()) {
                self.outcome.duplicates_removed += 1;
                continue;
            }
            let key = PartitionKey {
                event_day: Date::of_micros(line.created_at),
                language: layout::language_partition(&line.language()),
            };
            let partition = self.partitions.entry(key).or_insert_with_key(|key| {
                PartitionWriter::new(
                    key.clone(),
                    &compact.catalogue,
                    compact.schema.clone(),
                    self.first_part,
                )
            });
            partition.append(&compact.catalogue, &line, raw.len());
            self.outcome.rows_written += 1;
            self.buffered_bytes += raw.len();
            self.outcome.peak_buffered_bytes =
                self.outcome.peak_buffered_bytes.max(self.buffered_bytes);
            if partition.rows() >= compact.settings.batch_rows
                || partition.gathered_bytes() >= compact.settings.batch_bytes
            {
                let key = partition.key().clone();
                self.encode(&key).await?;
            }
            if self.buffered_bytes >= compact.settings.memory_budget / 2 {
                // Many partitions each below their own bound: encode the biggest.
                let biggest = self
                    .partitions
                    .iter()
                    .filter(|(_, p)| p.rows() > 0)
                    .max_by_key(|(_, p)| p.gathered_bytes())
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

    fn written(&mut self, files: impl IntoIterator<Item = WrittenFile>) {
        for file in files {
            self.outcome.parquet_bytes += file.bytes;
            self.outcome.files.push(file.key);
        }
    }

    /// Encodes a partition's gathered rows into its file, then keeps files and memory in bounds.
    async fn encode(&mut self, key: &PartitionKey) -> Result<(), CompactError> {
        let settings = file_settings(self.compact, &self.properties, self.day);
        let partition = self.partitions.get_mut(key).expect("partition exists");
        self.buffered_bytes -= partition.gathered_bytes();
        let closed = partition.encode(&settings).await?;
        self.written(closed);
        self.stay_within_budget().await
    }

    /// Flushes the biggest unfinished row groups until the writers fit the memory budget.
    async fn stay_within_budget(&mut self) -> Result<(), CompactError> {
        loop {
            // In a block: no borrow of a writer may live across the flush's await (the run's
            // future must stay Send).
            let (total, largest) = {
                let sizes = self
                    .partitions
                    .iter()
                    .map(|(k, p)| (k, p.in_progress_size()));
                let total: usize = sizes.clone().map(|(_, size)| size).sum();
                let largest = sizes
                    .max_by_key(|(_, size)| *size)
                    .map(|(key, size)| (key.clone(), size));
                (total, largest)
            };
            let Some((key, size)) = largest else {
                return Ok(());
            };
            if total <= self.compact.settings.memory_budget || size == 0 {
                return Ok(());
            }
            let partition = self.partitions.get_mut(&key).expect("largest exists");
            partition.flush_row_group().await?;
        }
    }

    /// Writes what is still gathered and completes every file.
    async fn finish(&mut self) -> Result<(), CompactError> {
        // In key order, so what a crash part-way leaves does not depend on hashing.
        let mut keys: Vec<PartitionKey> = self.partitions.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let settings = file_settings(self.compact, &self.properties, self.day);
            let partition = self.partitions.get_mut(&key).expect("listed");
            let files = partition.finish(&settings).await?;
            self.written(files);
        }
        Ok(())
    }

    /// After a failure: drop unfinished uploads so they leave no parts behind.
    async fn abort(&mut self) {
        for partition in self.partitions.values_mut() {
            partition.abort().await;
        }
    }
}
