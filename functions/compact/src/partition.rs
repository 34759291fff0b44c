//! One partition of the lake being written: the Parquet file its rows are being encoded into,
//! rolled over to the next `part-{day}-NNNNN` when it reaches its size, as delta-rs keeps one writer
//! per partition.

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use parquet::arrow::AsyncArrowWriter;
use parquet::file::properties::WriterProperties;
use pipeline::layout::{self, Prefixes};
use pipeline::ports::ObjectStore;
use pipeline::time::Date;

use crate::sink::ObjectFile;
use crate::CompactError;

/// Which partition a row goes to: the event's day and its language folder (escaped).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey {
    pub event_day: Date,
    pub language: String,
}

/// What every partition of one run writes with.
pub struct FileSettings<'a> {
    pub objects: &'a Arc<dyn ObjectStore>,
    pub prefixes: &'a Prefixes,
    pub schema: &'a SchemaRef,
    pub properties: &'a WriterProperties,
    /// The arrival day being compacted: it names the files (`part-{day}-…`).
    pub arrival_day: Date,
    pub part_size: usize,
    /// A file is closed, and the next part started, past this size.
    pub file_bytes: u64,
}

/// A file this run completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    pub key: String,
    pub bytes: u64,
}

/// The partition's current file.
enum File {
    /// None open: the next rows start part `next_part`.
    Closed,
    Open(Box<AsyncArrowWriter<ObjectFile>>),
}

pub struct PartitionWriter {
    key: PartitionKey,
    file: File,
    next_part: u32,
    /// One past the last part number of this run's bank.
    end_part: u32,
}

impl PartitionWriter {
    /// A partition whose files are numbered from `first_part`, within one bank.
    pub fn new(key: PartitionKey, first_part: u32) -> Self {
        PartitionWriter {
            key,
            file: File::Closed,
            next_part: first_part,
            end_part: first_part + layout::PART_BANK_SIZE,
        }
    }

    /// Bytes encoded into the open file's unfinished row group (0 when no file is open).
    pub fn in_progress_size(&self) -> usize {
        match &self.file {
            File::Open(writer) => writer.in_progress_size(),
            File::Closed => 0,
        }
    }

    /// Encodes rows into the partition's file, opening the next part if none is open; returns the
    /// file when this made it reach its size and closed it.
    pub async fn encode(
        &mut self,
        batch: &RecordBatch,
        settings: &FileSettings<'_>,
    ) -> Result<Option<WrittenFile>, CompactError> {
        let writer = match &mut self.file {
            File::Open(writer) => writer,
            File::Closed => {
                let writer = self.open(settings)?;
                self.file = File::Open(Box::new(writer));
                let File::Open(writer) = &mut self.file else {
                    unreachable!("just opened")
                };
                writer
            }
        };
        writer.write(batch).await?;
        if writer.bytes_written() as u64 + writer.in_progress_size() as u64 >= settings.file_bytes {
            return self.close().await;
        }
        Ok(None)
    }

    fn open(
        &mut self,
        settings: &FileSettings<'_>,
    ) -> Result<AsyncArrowWriter<ObjectFile>, CompactError> {
        if self.next_part >= self.end_part {
            return Err(CompactError::Refused {
                day: settings.arrival_day,
                why: format!(
                    "partition language={} of {} needs more than {} files; raise the file size",
                    self.key.language,
                    self.key.event_day,
                    layout::PART_BANK_SIZE
                ),
            });
        }
        let object_key = settings.prefixes.processed_key(
            self.key.event_day,
            &self.key.language,
            settings.arrival_day,
            self.next_part,
        );
        self.next_part += 1;
        let sink = ObjectFile::new(settings.objects.clone(), object_key, settings.part_size);
        Ok(AsyncArrowWriter::try_new(
            sink,
            settings.schema.clone(),
            Some(settings.properties.clone()),
        )?)
    }

    /// Writes out the open file's unfinished row group early (the memory budget asks for it).
    pub async fn flush_row_group(&mut self) -> Result<(), CompactError> {
        if let File::Open(writer) = &mut self.file {
            writer.flush().await?;
        }
        Ok(())
    }

    /// Completes the open file, if any.
    pub async fn close(&mut self) -> Result<Option<WrittenFile>, CompactError> {
        let File::Open(mut writer) = std::mem::replace(&mut self.file, File::Closed) else {
            return Ok(None);
        };
        writer.finish().await?;
        let sink = (*writer).into_inner();
        Ok(Some(WrittenFile {
            key: sink.key().to_string(),
            bytes: sink.bytes(),
        }))
    }

    /// After a failure: drops the unfinished upload so it leaves no parts behind.
    pub async fn abort(&mut self) {
        if let File::Open(writer) = std::mem::replace(&mut self.file, File::Closed) {
            (*writer).into_inner().abort().await;
        }
    }
}
