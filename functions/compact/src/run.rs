//! One compaction of one arrival day, in two halves that run at once: staging objects are fetched
//! ahead (in list order) and decoded on a thread of their own ([`crate::decode`]), lines checked
//! against the redelivery filter and gathered into rows per (event day, language); this half
//! encodes those rows into one [`PartitionWriter`] per partition and uploads them, while all
//! writers together stay within the memory budget.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use pipeline::ports::ObjectInfo;
use pipeline::time::Date;
use tokio::sync::mpsc;

use crate::decode::{Counts, Decoder, Fetched, Limits, Work};
use crate::fetch::{AbortOnDrop, Prefetcher};
use crate::partition::{FileSettings, PartitionKey, PartitionWriter, WrittenFile};
use crate::{Compact, CompactError};

/// Fetched objects waiting for the decoder, beyond those the fetch window holds.
const OBJECTS_QUEUED: usize = 4;

/// Batches of rows decoded and not yet encoded, at most (in `batch_bytes`): encoding is bursty, and
/// with room for one batch only, the decoder spent much of a two-core run waiting for the encoder.
pub const BATCHES_IN_FLIGHT: usize = 3;

/// What a task returned; its panic, if it panicked, goes on in this one.
fn finished<T>(joined: Result<T, tokio::task::JoinError>, what: &str) -> T {
    match joined {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("the {what} was cancelled: {error}"),
    }
}

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
    pub parquet_bytes: u64,
    /// What the decoding half counted.
    pub counts: Counts,
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
    outcome: Outcome,
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
            .set_data_page_size_limit(settings.page_bytes)
            .set_dictionary_page_size_limit(settings.page_bytes)
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
            outcome: Outcome::default(),
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

    /// Fetches, decodes (on a blocking thread) and encodes at once; returns when every object is
    /// decoded and every row encoded, or at the first failure of either half.
    async fn read_all(&mut self, staging: &[ObjectInfo]) -> Result<(), CompactError> {
        let compact = self.compact;
        let settings = &compact.settings;
        let (objects_tx, objects_rx) = mpsc::channel::<Fetched>(OBJECTS_QUEUED);
        let (work_tx, work_rx) = mpsc::channel::<Work>(OBJECTS_QUEUED);
        let decoder = Decoder::new(
            compact.catalogue.clone(),
            compact.schema.clone(),
            Limits {
                batch_rows: settings.batch_rows,
                batch_bytes: settings.batch_bytes,
                gathered_bytes: settings.memory_budget / 2,
                in_flight_bytes: BATCHES_IN_FLIGHT * settings.batch_bytes,
            },
            work_tx,
        );
        let decoding = tokio::task::spawn_blocking(move || decoder.run(objects_rx));

        // Its own task: the fetches keep the decoder fed while this one is busy encoding.
        let staging: Arc<[ObjectInfo]> = staging.into();
        let objects = compact.objects.clone();
        let window = settings.fetch;
        let mut fetching = AbortOnDrop(tokio::spawn(async move {
            let mut fetches = Prefetcher::new(objects, staging, window);
            while let Some(fetched) = fetches.next().await {
                let (info, body) = fetched?;
                let object = Fetched {
                    key: info.key,
                    body,
                };
                if objects_tx.send(object).await.is_err() {
                    break; // the decoder is gone: the write half has the reason
                }
            }
            Ok::<_, CompactError>(fetches.widest())
        }));
        let feed = async { finished((&mut fetching.0).await, "fetching task") };
        let write = async {
            // Owned by this future: when it is dropped (the other half failed), so is the
            // channel, and the decoder stops.
            let mut work_rx = work_rx;
            while let Some(work) = work_rx.recv().await {
                self.take(work).await?;
            }
            Ok(())
        };
        // Either half failing drops the other, and with it the channels: the decoder stops too.
        let joined = tokio::try_join!(feed, write);
        drop(fetching);
        let counts = finished(decoding.await, "decoding thread");
        let (widest, ()) = joined?;
        self.outcome.widest_fetch_window = widest;
        self.outcome.counts = counts;
        Ok(())
    }

    /// Encodes one batch of rows into its partition's file, or stores a staging object's
    /// unreadable lines in quarantine.
    async fn take(&mut self, work: Work) -> Result<(), CompactError> {
        match work {
            Work::Rows {
                partition,
                batch,
                held,
            } => {
                let settings = file_settings(self.compact, &self.properties, self.day);
                let first_part = self.first_part;
                let writer = self
                    .partitions
                    .entry(partition)
                    .or_insert_with_key(|key| PartitionWriter::new(key.clone(), first_part));
                let closed = writer.encode(&batch, &settings).await?;
                // Encoded: the decoder may gather the next batch's bytes in their place.
                drop((batch, held));
                self.written(closed);
                self.stay_within_budget().await
            }
            Work::Quarantine { staging_key, lines } => {
                let quarantine_key = self
                    .compact
                    .prefixes
                    .compaction_quarantine_key(&staging_key);
                tracing::warn!(
                    staging_key,
                    quarantine_key,
                    "staging object has unreadable lines"
                );
                let put = self
                    .compact
                    .objects
                    .put(&quarantine_key, Bytes::from(lines));
                Ok(put.await?)
            }
        }
    }

    fn written(&mut self, files: impl IntoIterator<Item = WrittenFile>) {
        for file in files {
            self.outcome.parquet_bytes += file.bytes;
            self.outcome.files.push(file.key);
        }
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

    /// Completes every file (every row was encoded by now), all at once: each completion waits on
    /// the store (the last part, then CompleteMultipartUpload), and a day has a file per partition.
    async fn finish(&mut self) -> Result<(), CompactError> {
        let closing = self.partitions.values_mut().map(PartitionWriter::close);
        let closed = futures::future::join_all(closing).await;
        // Every completed file is counted before a failure is returned: the abort deletes them.
        let mut failure = None;
        for file in closed {
            match file {
                Ok(file) => self.written(file),
                Err(error) => failure = failure.or(Some(error)),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// After a failure: drop unfinished uploads so they leave no parts behind, and delete the files
    /// this run completed (a partition past its file size), so readers do not see half a run next
    /// to the files it was to replace. Both are in the bank no current file is in, so nothing the
    /// lake holds is touched; what a failed delete leaves, the next run's replacement removes.
    async fn abort(&mut self) {
        for partition in self.partitions.values_mut() {
            partition.abort().await;
        }
        if self.outcome.files.is_empty() {
            return;
        }
        if let Err(error) = self.compact.objects.delete(&self.outcome.files).await {
            tracing::warn!(%error, files = self.outcome.files.len(), "could not delete the failed run's files");
        }
    }
}
