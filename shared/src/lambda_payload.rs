//! The JSON Lambda hands a Kinesis-triggered function (`{"Records":[...]}`), built from plain data:
//! what the local event source mapping sends, and what tests and sample payloads are made of.

use base64::Engine as _;
use serde_json::{json, Value};

/// One Kinesis record as the event source mapping sees it.
#[derive(Debug, Clone)]
pub struct StreamRecord {
    pub shard_id: String,
    pub sequence_number: String,
    pub partition_key: String,
    /// Epoch milliseconds, as Kinesis stamps it.
    pub approximate_arrival_ms: i64,
    pub data: Vec<u8>,
}

pub const DEFAULT_STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/events";

impl StreamRecord {
    pub fn to_json(&self, stream_arn: &str) -> Value {
        let region = stream_arn.split(':').nth(3).unwrap_or("us-east-1");
        json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": self.partition_key,
                "sequenceNumber": self.sequence_number,
                "data": base64::engine::general_purpose::STANDARD.encode(&self.data),
                // Seconds with millisecond precision, as Lambda sends it.
                "approximateArrivalTimestamp": self.approximate_arrival_ms as f64 / 1000.0,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": format!("{}:{}", self.shard_id, self.sequence_number),
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::000000000000:role/ingest",
            "awsRegion": region,
            "eventSourceARN": stream_arn,
        })
    }
}

/// `{"Records":[...]}` for `records`, in the order given.
pub fn kinesis_event(records: &[StreamRecord], stream_arn: &str) -> Value {
    json!({ "Records": records.iter().map(|r| r.to_json(stream_arn)).collect::<Vec<_>>() })
}
