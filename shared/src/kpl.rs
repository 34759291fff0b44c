//! Kinesis Producer Library aggregation: magic `F3 89 9A C2`, a protobuf `AggregatedRecord`, and the MD5
//! of that protobuf as a 16-byte trailer.
//!
//! ```protobuf
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//! The format is small and fixed, so it is read by hand rather than through generated code.

use md5::{Digest, Md5};

pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AggregateError(pub String);

/// One user record of an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord<'a> {
    pub partition_key: &'a str,
    pub data: &'a [u8],
}

pub fn is_aggregated(data: &[u8]) -> bool {
    data.starts_with(&MAGIC)
}

/// Unpacks an aggregated record. Call only when [`is_aggregated`] holds.
pub fn deaggregate(data: &[u8]) -> Result<Vec<UserRecord<'_>>, AggregateError> {
    if data.len() < MAGIC.len() + DIGEST_LEN {
        return Err(AggregateError(format!(
            "aggregate of {} bytes is shorter than its magic and digest",
            data.len()
        )));
    }
    let body = &data[MAGIC.len()..data.len() - DIGEST_LEN];
    let digest = &data[data.len() - DIGEST_LEN..];
    if Md5::digest(body).as_slice() != digest {
        return Err(AggregateError(
            "MD5 trailer does not match the protobuf body".into(),
        ));
    }
    let mut partition_keys: Vec<&str> = Vec::new();
    let mut explicit_hash_keys = 0usize;
    let mut raw_records: Vec<&[u8]> = Vec::new();
    let mut reader = Reader::new(body);
    while !reader.done() {
        let (field, wire) = reader.key()?;
        match (field, wire) {
            (1, WIRE_LEN) => {
                let bytes = reader.len_delimited()?;
                let key = std::str::from_utf8(bytes)
                    .map_err(|_| AggregateError("partition key is not UTF-8".into()))?;
                partition_keys.push(key);
            }
            (2, WIRE_LEN) => {
                reader.len_delimited()?;
                explicit_hash_keys += 1;
            }
            (3, WIRE_LEN) => raw_records.push(reader.len_delimited()?),
            (1..=3, _) => {
                return Err(AggregateError(format!(
                    "field {field} has wire type {wire}"
                )))
            }
            _ => reader.skip(wire)?,
        }
    }
    raw_records
        .into_iter()
        .enumerate()
        .map(|(index, bytes)| parse_record(index, bytes, &partition_keys, explicit_hash_keys))
        .collect()
}

fn parse_record<'a>(
    index: usize,
    bytes: &'a [u8],
    partition_keys: &[&'a str],
    explicit_hash_keys: usize,
) -> Result<UserRecord<'a>, AggregateError> {
    let mut partition_key_index = None;
    let mut data = None;
    let mut reader = Reader::new(bytes);
    while !reader.done() {
        let (field, wire) = reader.key()?;
        match (field, wire) {
            (1, WIRE_VARINT) => partition_key_index = Some(reader.varint()?),
            (2, WIRE_VARINT) => {
                let i = reader.varint()?;
                if i >= explicit_hash_keys as u64 {
                    return Err(AggregateError(format!(
                        "user record {index}: explicit hash key index {i} is outside the table"
                    )));
                }
            }
            (3, WIRE_LEN) => data = Some(reader.len_delimited()?),
            (1..=3, _) => {
                return Err(AggregateError(format!(
                    "user record {index}: field {field} has wire type {wire}"
                )))
            }
            _ => reader.skip(wire)?,
        }
    }
    let key_index = partition_key_index
        .ok_or_else(|| AggregateError(format!("user record {index} has no partition key index")))?;
    let partition_key = usize::try_from(key_index)
        .ok()
        .and_then(|i| partition_keys.get(i))
        .ok_or_else(|| {
            AggregateError(format!(
                "user record {index}: partition key index {key_index} is outside the table"
            ))
        })?;
    let data = data.ok_or_else(|| AggregateError(format!("user record {index} has no data")))?;
    Ok(UserRecord {
        partition_key,
        data,
    })
}

const WIRE_VARINT: u64 = 0;
const WIRE_I64: u64 = 1;
const WIRE_LEN: u64 = 2;
const WIRE_I32: u64 = 5;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> Result<u64, AggregateError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| AggregateError("protobuf ends inside a varint".into()))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7F) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(AggregateError(
            "protobuf varint is longer than 10 bytes".into(),
        ))
    }

    fn key(&mut self) -> Result<(u64, u64), AggregateError> {
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 {
            return Err(AggregateError("protobuf field number 0".into()));
        }
        Ok((field, key & 7))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], AggregateError> {
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| self.pos.checked_add(len))
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| AggregateError("protobuf length runs past the end".into()))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], AggregateError> {
        let len = self.varint()?;
        self.take(len)
    }

    fn skip(&mut self, wire: u64) -> Result<(), AggregateError> {
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_I64 => self.take(8).map(drop),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_I32 => self.take(4).map(drop),
            other => Err(AggregateError(format!(
                "unsupported protobuf wire type {other}"
            ))),
        }
    }
}

/// Builds an aggregated record, as the KPL does. Used by the producer and by tests.
pub fn aggregate<'a>(records: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            out.push((value as u8) | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    fn len_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
        varint(out, (field << 3) | WIRE_LEN);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
    let mut keys: Vec<&str> = Vec::new();
    let mut body_records = Vec::new();
    for (key, data) in records {
        let index = keys.iter().position(|k| *k == key).unwrap_or_else(|| {
            keys.push(key);
            keys.len() - 1
        });
        let mut record = Vec::with_capacity(data.len() + 8);
        varint(&mut record, (1 << 3) | WIRE_VARINT);
        varint(&mut record, index as u64);
        len_field(&mut record, 3, data);
        body_records.push(record);
    }
    let mut body = Vec::new();
    for key in &keys {
        len_field(&mut body, 1, key.as_bytes());
    }
    for record in &body_records {
        len_field(&mut body, 3, record);
    }
    let mut out = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_user_records_in_order() {
        let blob = aggregate([("k1", &b"one"[..]), ("k2", b"two"), ("k1", b"three")]);
        assert!(is_aggregated(&blob));
        let records = deaggregate(&blob).unwrap();
        let got: Vec<_> = records.iter().map(|r| (r.partition_key, r.data)).collect();
        assert_eq!(
            got,
            vec![("k1", &b"one"[..]), ("k2", b"two"), ("k1", b"three")]
        );
    }

    #[test]
    fn rejects_a_bad_digest() {
        let mut blob = aggregate([("k", &b"x"[..])]);
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert!(deaggregate(&blob).unwrap_err().0.contains("MD5"));
    }

    #[test]
    fn rejects_truncated_and_malformed_bodies() {
        assert!(deaggregate(&MAGIC).is_err());
        // A body whose length prefix runs past the end, with a correct digest.
        let body = [0x1A, 0x10, 0x01];
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&body);
        blob.extend_from_slice(&Md5::digest(body));
        assert!(deaggregate(&blob).unwrap_err().0.contains("past the end"));
    }

    #[test]
    fn rejects_a_partition_key_index_outside_the_table() {
        // records { partition_key_index: 3, data: "x" } with an empty key table.
        let record = [0x08, 0x03, 0x1A, 0x01, b'x'];
        let mut body = vec![0x1A, record.len() as u8];
        body.extend_from_slice(&record);
        let mut blob = MAGIC.to_vec();
        blob.extend_from_slice(&body);
        blob.extend_from_slice(&Md5::digest(&body));
        assert!(deaggregate(&blob)
            .unwrap_err()
            .0
            .contains("outside the table"));
    }
}
