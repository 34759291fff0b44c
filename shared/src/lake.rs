//! The processed lake's rows: decoded staging lines ([`crate::staging_line`]) into Arrow record
//! batches whose schema comes from the event catalogue (contract: Processed).
//!
//! Columns: `event_uuid`, `event_name`, `event_type`, `event_subtype` (strings), `created_at`,
//! `received_at` (TIMESTAMP micros, UTC), one nullable column per catalogue field of its declared type,
//! and `extra_specifics` (JSON of the fields the event's catalogue entry does not declare, or null).

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::catalogue::{Catalogue, EventSpec, FieldType};
use crate::json_scan;
use crate::staging_line::DecodedLine;
use crate::validate::{for_each_entry, json_kind};

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Parquet/Arrow schema of the processed lake.
pub fn arrow_schema(catalogue: &Catalogue) -> SchemaRef {
    let mut fields = vec![
        Field::new("event_uuid", DataType::Utf8, false),
        Field::new("event_name", DataType::Utf8, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("event_subtype", DataType::Utf8, false),
        Field::new("created_at", timestamp_type(), false),
        Field::new("received_at", timestamp_type(), false),
    ];
    for field in &catalogue.fields {
        let data_type = match field.spec.field_type {
            FieldType::String => DataType::Utf8,
            FieldType::Integer => DataType::Int64,
            FieldType::Number => DataType::Float64,
            FieldType::Boolean => DataType::Boolean,
        };
        fields.push(Field::new(&field.name, data_type, true));
    }
    fields.push(Field::new("extra_specifics", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

enum Column {
    Utf8(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Boolean(BooleanBuilder),
}

/// Accumulates rows of one partition and hands them out as record batches.
pub struct RowBuilder {
    schema: SchemaRef,
    event_uuid: StringBuilder,
    event_name: StringBuilder,
    event_type: StringBuilder,
    event_subtype: StringBuilder,
    created_at: TimestampMicrosecondBuilder,
    received_at: TimestampMicrosecondBuilder,
    fields: Vec<Column>,
    extra: StringBuilder,
    rows: usize,
    /// The staging-line bytes appended since the last `finish`: what the builders hold, roughly.
    bytes: usize,
    // Reused per row, so appending allocates nothing in the steady state: for each catalogue
    // field, the byte range of its value inside the line's `event_specifics` text.
    slots: Vec<Option<std::ops::Range<usize>>>,
    extra_json: String,
}

/// Where each entry of one row's `event_specifics` goes: a declared field's value to its slot,
/// anything else to the row's `extra_specifics` JSON.
struct Entries<'r, 's> {
    catalogue: &'r Catalogue,
    spec: Option<&'r EventSpec>,
    specifics: &'s str,
    slots: &'r mut [Option<std::ops::Range<usize>>],
    extra_json: &'r mut String,
}

impl Entries<'_, '_> {
    fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.extra_json.clear();
    }

    /// `value` is a slice of `specifics`.
    fn place(&mut self, key: &str, value: &str) {
        let declared = self
            .spec
            .and_then(|spec| self.catalogue.declared_type(spec, key));
        match declared {
            // A declared field whose value no longer fits (the catalogue changed since ingest) is
            // kept as an extra rather than dropped.
            Some((index, field_type)) if json_kind(value).is_none_or(|k| k.fits(field_type)) => {
                let start = value.as_ptr() as usize - self.specifics.as_ptr() as usize;
                self.slots[index] = Some(start..start + value.len());
            }
            _ => {
                let extra = &mut *self.extra_json;
                extra.push(if extra.is_empty() { '{' } else { ',' });
                extra.push_str(&serde_json::to_string(key).expect("a str serialises"));
                extra.push(':');
                extra.push_str(value);
            }
        }
    }
}

impl RowBuilder {
    pub fn new(catalogue: &Catalogue, schema: SchemaRef) -> RowBuilder {
        let fields = catalogue
            .fields
            .iter()
            .map(|f| match f.spec.field_type {
                FieldType::String => Column::Utf8(StringBuilder::new()),
                FieldType::Integer => Column::Int64(Int64Builder::new()),
                FieldType::Number => Column::Float64(Float64Builder::new()),
                FieldType::Boolean => Column::Boolean(BooleanBuilder::new()),
            })
            .collect();
        let timestamps = || TimestampMicrosecondBuilder::new().with_timezone("UTC");
        RowBuilder {
            schema,
            event_uuid: StringBuilder::new(),
            event_name: StringBuilder::new(),
            event_type: StringBuilder::new(),
            event_subtype: StringBuilder::new(),
            created_at: timestamps(),
            received_at: timestamps(),
            fields,
            extra: StringBuilder::new(),
            rows: 0,
            bytes: 0,
            slots: vec![None; catalogue.fields.len()],
            extra_json: String::new(),
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends one row, counting `line_bytes` (the staging line's length) towards [`Self::bytes`].
    pub fn append(&mut self, catalogue: &Catalogue, decoded: &DecodedLine, line_bytes: usize) {
        self.bytes += line_bytes;
        let line = &decoded.line;
        self.event_uuid.append_value(&line.event_uuid);
        self.event_name.append_value(&line.event_name);
        self.event_type.append_value(&line.event_type);
        self.event_subtype.append_value(&line.event_subtype);
        self.created_at.append_value(decoded.created_at);
        self.received_at.append_value(decoded.received_at);

        let spec = catalogue.event(&line.event_name);
        let specifics = line.event_specifics.unwrap_or("{}");
        let mut slots = std::mem::take(&mut self.slots);
        let mut entries = Entries {
            catalogue,
            spec,
            specifics,
            slots: &mut slots,
            extra_json: &mut self.extra_json,
        };
        entries.clear();
        // The borrowed walk first; serde_json reads what it declines (escaped keys, say).
        if json_scan::entries(specifics, |key, value| entries.place(key, value)).is_none() {
            entries.clear();
            let _ = for_each_entry(specifics, |key, value| entries.place(&key, value.get()));
        }
        for (column, slot) in self.fields.iter_mut().zip(slots.iter_mut()) {
            let value = slot
                .take()
                .map(|range| &specifics[range])
                .filter(|v| *v != "null");
            match column {
                Column::Utf8(b) => match value {
                    Some(v) if !v.contains('\\') => b.append_value(&v[1..v.len() - 1]),
                    Some(v) => b.append_option(serde_json::from_str::<String>(v).ok()),
                    None => b.append_null(),
                },
                Column::Int64(b) => b.append_option(value.and_then(|v| v.parse().ok())),
                Column::Float64(b) => b.append_option(value.and_then(|v| v.parse().ok())),
                Column::Boolean(b) => b.append_option(value.and_then(|v| v.parse().ok())),
            }
        }
        self.slots = slots;
        if self.extra_json.is_empty() {
            self.extra.append_null();
        } else {
            self.extra_json.push('}');
            self.extra.append_value(&self.extra_json);
        }
        self.rows += 1;
    }

    /// The rows so far as one batch; the builder starts empty again.
    pub fn finish(&mut self) -> RecordBatch {
        // Each builder starts again at the size this batch reached: the next batch of a partition
        // is most likely as big, and growing from nothing copied every column several times.
        let rows = self.rows;
        let strings = |b: &mut StringBuilder| -> ArrayRef {
            let bytes = b.values_slice().len();
            Arc::new(std::mem::replace(b, StringBuilder::with_capacity(rows, bytes)).finish())
        };
        let timestamps = |b: &mut TimestampMicrosecondBuilder| -> ArrayRef {
            let next = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
            Arc::new(std::mem::replace(b, next).finish())
        };
        let mut columns: Vec<ArrayRef> = vec![
            strings(&mut self.event_uuid),
            strings(&mut self.event_name),
            strings(&mut self.event_type),
            strings(&mut self.event_subtype),
            timestamps(&mut self.created_at),
            timestamps(&mut self.received_at),
        ];
        for column in &mut self.fields {
            columns.push(match column {
                Column::Utf8(b) => strings(b),
                Column::Int64(b) => {
                    Arc::new(std::mem::replace(b, Int64Builder::with_capacity(rows)).finish())
                }
                Column::Float64(b) => {
                    Arc::new(std::mem::replace(b, Float64Builder::with_capacity(rows)).finish())
                }
                Column::Boolean(b) => {
                    Arc::new(std::mem::replace(b, BooleanBuilder::with_capacity(rows)).finish())
                }
            });
        }
        columns.push(strings(&mut self.extra));
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(self.schema.clone(), columns)
            .expect("builders follow the schema they were made from")
    }
}
