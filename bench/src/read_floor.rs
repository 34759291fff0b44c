//! `bench read-floor`: the payload read by a SIMD JSON crate and nothing else, as the lower bound
//! of what a handler built on that crate could cost (and ingest's own readers doing the same). Each record's envelope fields are read,
//! its data base64-decoded (with `base64-simd`, as ingest does) and its event's four fields read;
//! nothing is checked (no UUID, timestamp or catalogue), claimed, or written. An event the crate
//! cannot read into these borrowed fields (escapes, a wrong type) is skipped, which only makes
//! the floor lower.

use std::time::Instant;

use anyhow::Context;
use pipeline::json_scan::Scanner;
use pipeline::lambda_payload::{Envelope, KinesisBatch};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::json;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Reader {
    SonicRs,
    SimdJson,
    /// Ingest's own readers doing the same: `KinesisBatch::parse`, then the borrowed walk over
    /// each event (`json_scan`) with the UTF-8 check that precedes it, for a like-for-like figure.
    Ours,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<Record<'a>>,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(rename = "eventID", borrow)]
    event_id: &'a str,
    #[serde(borrow)]
    kinesis: Kinesis<'a>,
}

#[derive(Deserialize)]
struct Kinesis<'a> {
    #[serde(rename = "sequenceNumber", borrow)]
    sequence_number: &'a str,
    #[serde(borrow)]
    data: &'a str,
    #[serde(rename = "approximateArrivalTimestamp")]
    arrival: f64,
}

/// The event's fields, their values only skipped over (read, not kept) where ingest would check them.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    event_uuid: &'a str,
    #[allow(dead_code)]
    created_at: IgnoredAny,
    #[serde(borrow)]
    event_name: &'a str,
    #[allow(dead_code)]
    event_specifics: Option<IgnoredAny>,
}

/// What one record read leaves, summed so that the compiler cannot drop the reads (and the same
/// for every reader that read the same records): the record's part.
fn weight(record: &Record) -> usize {
    record.event_id.len() + record.kinesis.sequence_number.len() + record.kinesis.arrival as usize
}

/// The event's part of [`weight`].
fn event_weight(event: Event) -> usize {
    event.event_uuid.len() + event.event_name.len()
}

/// Each record's data decoded into `data` and its event read by `read_event` (its weight, `None`
/// when the crate declines it): `(records, events read, weight)`.
fn read_records(
    batch: &Payload,
    data: &mut Vec<u8>,
    mut read_event: impl FnMut(&mut [u8]) -> Option<usize>,
) -> anyhow::Result<(usize, usize, usize)> {
    let (mut events, mut sum) = (0, 0);
    for record in &batch.records {
        data.clear();
        base64_simd::STANDARD
            .decode_append(record.kinesis.data.as_bytes(), &mut *data)
            .context("base64")?;
        let event = read_event(data);
        events += usize::from(event.is_some());
        sum += weight(record) + event.unwrap_or(0);
    }
    Ok((batch.records.len(), events, sum))
}

/// One read of the whole payload: `(records, events read, weight)`.
fn read_sonic(payload: &[u8], data: &mut Vec<u8>) -> anyhow::Result<(usize, usize, usize)> {
    let batch: Payload = sonic_rs::from_slice(payload).context("sonic-rs: the payload")?;
    read_records(&batch, data, |bytes| {
        sonic_rs::from_slice::<Event>(bytes).ok().map(event_weight)
    })
}

/// simd-json reads in place: the payload is copied into `copy` first (ingest owns the bytes
/// Lambda hands it, so in a handler this copy would not be needed; it is a memcpy a batch here).
fn read_simd(
    payload: &[u8],
    copy: &mut Vec<u8>,
    data: &mut Vec<u8>,
) -> anyhow::Result<(usize, usize, usize)> {
    copy.clear();
    copy.extend_from_slice(payload);
    let batch: Payload = simd_json::serde::from_slice(copy).context("simd-json: the payload")?;
    read_records(&batch, data, |bytes| {
        simd_json::serde::from_slice::<Event>(bytes)
            .ok()
            .map(event_weight)
    })
}

/// The four fields read by ingest's walk; `None` where the walk declines the event.
fn walk_event(data: &[u8]) -> Option<(&str, &str)> {
    let text = simdutf8::basic::from_utf8(data).ok()?;
    let mut scanner = Scanner::new(text);
    let (mut uuid, mut name) = (None, None);
    scanner.object(|key, scanner| {
        match key {
            "event_uuid" => uuid = Some(scanner.plain_string()?),
            "event_name" => name = Some(scanner.plain_string()?),
            _ => drop(scanner.value()?),
        }
        Some(())
    })?;
    scanner.end()?;
    Some((uuid?, name?))
}

fn read_ours(payload: &[u8]) -> anyhow::Result<(usize, usize, usize)> {
    let batch = KinesisBatch::parse(payload).context("the payload")?;
    let (mut events, mut sum) = (0, 0);
    for envelope in &batch.records {
        let Envelope::Record(record) = envelope else {
            continue;
        };
        // As `weight` sums them: the arrival in whole seconds.
        sum += record.event_id.len()
            + record.sequence_number.len()
            + (record.received_at / 1_000_000) as usize;
        if let Some((uuid, name)) = walk_event(&record.data) {
            events += 1;
            sum += uuid.len() + name.len();
        }
    }
    Ok((batch.records.len(), events, sum))
}

pub fn read_floor(
    reader: Reader,
    payload_in: std::path::PathBuf,
    iterations: u32,
) -> anyhow::Result<()> {
    let payload = std::fs::read(&payload_in)
        .with_context(|| format!("reading the payload {}", payload_in.display()))?;
    let (mut copy, mut data) = (Vec::new(), Vec::new());
    let mut read = || match reader {
        Reader::SonicRs => read_sonic(&payload, &mut data),
        Reader::SimdJson => read_simd(&payload, &mut copy, &mut data),
        Reader::Ours => read_ours(&payload),
    };
    // Warm-up, as `ingest-cpu` does.
    for _ in 0..3 {
        read()?;
    }
    let started = Instant::now();
    let (mut records, mut events, mut sum) = (0, 0, 0);
    for _ in 0..iterations {
        let (r, e, s) = read()?;
        (records, events, sum) = (r, e, sum + s);
    }
    let seconds = started.elapsed().as_secs_f64() / f64::from(iterations);
    println!(
        "{}",
        json!({
            "reader": format!("{reader:?}"),
            "records": records,
            "events_read": events,
            "iterations": iterations,
            "seconds_per_batch": seconds,
            "records_per_second": records as f64 / seconds,
            "weight": sum,
        })
    );
    Ok(())
}
