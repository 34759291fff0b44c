//! The decoding half of a run, on a thread of its own: staging objects come in, in list order;
//! each line is checked against the redelivery filter and gathered into its partition's rows; full
//! record batches go out to the writing half ([`crate::run`]), which encodes and uploads them while
//! the next lines are decoded. With two cores a run takes about as long as the slower half, which
//! is decoding (`bench/NOTES.md`).
//!
//! The order of everything sent is the order one thread would have done it in, so the files a run
//! writes do not depend on how the two halves interleave.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use foldhash::{HashMap, HashMapExt as _};
use pipeline::catalogue::Catalogue;
use pipeline::lake::RowBuilder;
use pipeline::layout::{self, MinuteKey};
use pipeline::position::RedeliveryFilter;
use pipeline::quarantine_line::{Origin, QuarantineLine};
use pipeline::staging_line::decode_staging_line;
use pipeline::time::Date;
use pipeline::validate::Reason;
use tokio::sync::mpsc;

use crate::partition::PartitionKey;

/// One staging object, fetched.
pub struct Fetched {
    pub key: String,
    pub body: Vec<u8>,
}

/// What the decoding half hands the writing half, in order.
pub enum Work {
    /// Rows for a partition's file; `held` counts their bytes until they are encoded.
    Rows {
        partition: PartitionKey,
        batch: RecordBatch,
        held: Held,
    },
    /// The unreadable lines of one staging object, as quarantine NDJSON.
    Quarantine { staging_key: String, lines: Vec<u8> },
}

/// What the decoding half counted.
#[derive(Debug, Default)]
pub struct Counts {
    pub input_events: u64,
    pub duplicates_removed: u64,
    pub rows_written: u64,
    pub quarantined_lines: u64,
    /// The most bytes of rows held at once: gathered, plus sent and not yet encoded.
    pub peak_buffered_bytes: usize,
}

/// When the decoding half sends rows on.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A partition's rows are sent at this many rows...
    pub batch_rows: usize,
    /// ...or at this many bytes of staging lines (events can be up to 1 MiB each).
    pub batch_bytes: usize,
    /// Past this many bytes gathered over all partitions, the biggest partition's rows are sent.
    pub gathered_bytes: usize,
    /// Bytes of rows sent and not yet encoded: past it, decoding waits for the encoder.
    pub in_flight_bytes: usize,
}

/// Bytes of rows sent to the writing half and not yet encoded, bounded: the decoder waits for
/// room, and each batch's [`Held`] gives its bytes back when the batch is dropped (encoded, or
/// thrown away with a failed run).
pub struct InFlight {
    capacity: usize,
    used: Mutex<usize>,
    // The same as `used`, read on every line without taking the lock.
    used_now: AtomicUsize,
    freed: Condvar,
}

pub struct Held {
    bytes: usize,
    in_flight: Arc<InFlight>,
}

impl InFlight {
    pub fn new(capacity: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            capacity,
            used: Mutex::new(0),
            used_now: AtomicUsize::new(0),
            freed: Condvar::new(),
        })
    }

    pub fn used(&self) -> usize {
        self.used_now.load(Ordering::Relaxed)
    }

    /// Waits until `bytes` more fit (a batch bigger than the capacity waits for none in flight).
    fn hold(self: &Arc<Self>, bytes: usize) -> Held {
        let mut used = self
            .used
            .lock()
            .expect("never poisoned: no panics while held");
        while *used > 0 && *used + bytes > self.capacity {
            used = self.freed.wait(used).expect("never poisoned");
        }
        *used += bytes;
        self.used_now.store(*used, Ordering::Relaxed);
        Held {
            bytes,
            in_flight: self.clone(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut used = self.in_flight.used.lock().expect("never poisoned");
        *used -= self.bytes;
        self.in_flight.used_now.store(*used, Ordering::Relaxed);
        self.in_flight.freed.notify_all();
    }
}

/// The writing half is gone (it failed): stop decoding.
struct Stopped;

/// One partition's rows being gathered.
struct Gathering {
    key: PartitionKey,
    rows: RowBuilder,
}

pub struct Decoder {
    catalogue: Catalogue,
    schema: SchemaRef,
    limits: Limits,
    partitions: HashMap<PartitionKey, Gathering>,
    redeliveries: RedeliveryFilter,
    counts: Counts,
    /// Bytes of rows gathered over all partitions and not yet sent.
    gathered: usize,
    in_flight: Arc<InFlight>,
    out: mpsc::Sender<Work>,
}

impl Decoder {
    pub fn new(
        catalogue: Catalogue,
        schema: SchemaRef,
        limits: Limits,
        out: mpsc::Sender<Work>,
    ) -> Decoder {
        Decoder {
            catalogue,
            schema,
            limits,
            partitions: HashMap::new(),
            redeliveries: RedeliveryFilter::default(),
            counts: Counts::default(),
            gathered: 0,
            in_flight: InFlight::new(limits.in_flight_bytes),
            out,
        }
    }

    /// Decodes every object `input` brings, then sends every partition's remaining rows (in
    /// partition order); blocks, so it runs on a blocking thread. Stops early, with what it
    /// counted, when the writing half is gone.
    pub fn run(mut self, mut input: mpsc::Receiver<Fetched>) -> Counts {
        // Stopped: the writing half failed, and reports why.
        let _: Result<(), Stopped> = (|| {
            while let Some(object) = input.blocking_recv() {
                self.object(&object.key, &object.body)?;
            }
            let mut keys: Vec<PartitionKey> = self.partitions.keys().cloned().collect();
            keys.sort();
            for key in keys {
                self.send_rows(&key)?;
            }
            Ok(())
        })();
        self.counts
    }

    fn object(&mut self, key: &str, body: &[u8]) -> Result<(), Stopped> {
        let object = MinuteKey::parse(key).map(|k| k.object_start());
        let mut bad_lines = Vec::new();
        let ends = memchr::memchr_iter(b'\n', body).chain([body.len()]);
        let mut start = 0;
        for (index, end) in ends.enumerate() {
            let raw = &body[start..end];
            start = end + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.counts.input_events += 1;
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
                    self.counts.quarantined_lines += 1;
                    continue;
                }
            };
            if !self.redeliveries.first_sight(object, line.source()) {
                self.counts.duplicates_removed += 1;
                continue;
            }
            let partition_key = PartitionKey {
                event_day: Date::of_micros(line.created_at),
                language: layout::language_partition(line.language()),
            };
            let (catalogue, schema) = (&self.catalogue, &self.schema);
            let gathering = self
                .partitions
                .entry(partition_key)
                .or_insert_with_key(|key| Gathering {
                    key: key.clone(),
                    rows: RowBuilder::new(catalogue, schema.clone()),
                });
            gathering.rows.append(catalogue, &line, raw.len());
            let full = (gathering.rows.rows() >= self.limits.batch_rows
                || gathering.rows.bytes() >= self.limits.batch_bytes)
                .then(|| gathering.key.clone());
            self.counts.rows_written += 1;
            self.gathered += raw.len();
            self.counts.peak_buffered_bytes = self
                .counts
                .peak_buffered_bytes
                .max(self.gathered + self.in_flight.used());
            if let Some(full) = full {
                self.send_rows(&full)?;
            }
            if self.gathered >= self.limits.gathered_bytes {
                // Many partitions each below their own bound: send the biggest.
                let biggest = self
                    .partitions
                    .iter()
                    .filter(|(_, gathering)| gathering.rows.rows() > 0)
                    .max_by_key(|(_, gathering)| gathering.rows.bytes())
                    .map(|(key, _)| key.clone());
                if let Some(biggest) = biggest {
                    self.send_rows(&biggest)?;
                }
            }
        }
        if !bad_lines.is_empty() {
            self.send(Work::Quarantine {
                staging_key: key.to_string(),
                lines: bad_lines,
            })?;
        }
        Ok(())
    }

    /// Sends a partition's gathered rows to be encoded (waiting for room in flight).
    fn send_rows(&mut self, key: &PartitionKey) -> Result<(), Stopped> {
        let rows = &mut self.partitions.get_mut(key).expect("partition exists").rows;
        if rows.rows() == 0 {
            return Ok(());
        }
        let bytes = rows.bytes();
        let batch = rows.finish();
        self.gathered -= bytes;
        let held = self.in_flight.hold(bytes);
        self.send(Work::Rows {
            partition: key.clone(),
            batch,
            held,
        })
    }

    fn send(&self, work: Work) -> Result<(), Stopped> {
        self.out.blocking_send(work).map_err(|_| Stopped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_bytes_wait_for_room_and_come_back_when_dropped() {
        let in_flight = InFlight::new(10);
        let first = in_flight.hold(6);
        assert_eq!(in_flight.used(), 6);
        // A batch bigger than the capacity still goes when nothing else is in flight.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let waiter = {
            let in_flight = in_flight.clone();
            std::thread::spawn(move || {
                let held = in_flight.hold(20);
                done_tx.send(in_flight.used()).unwrap();
                drop(held);
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(done_rx.try_recv().is_err(), "no room: it must wait");
        drop(first);
        assert_eq!(done_rx.recv().unwrap(), 20);
        waiter.join().unwrap();
        assert_eq!(in_flight.used(), 0);
    }
}
