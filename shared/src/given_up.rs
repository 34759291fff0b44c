//! Batches the event source mapping gave up on, as Lambda keeps them in an S3 on-failure
//! destination: one JSON object per discarded batch, under
//! `aws/lambda/{mapping UUID}/{shardId}/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-{random UUID}`, holding the
//! invocation record (request and response context, `KinesisBatchInfo`) and, only for S3
//! destinations, `payload`: the whole `{"Records":[...]}` the function was last invoked with, as an
//! escaped JSON string (Lambda developer guide, "Retain discarded batch records for a Kinesis Data
//! Streams event source"). The local event source mapping writes the same objects, and `redrive`
//! reads them back; writer and reader live here together.

use serde::{Deserialize, Serialize};

use crate::time::{self, Instant};

/// Where Lambda puts every on-failure object in the destination bucket (not configurable).
pub const GIVEN_UP_PREFIX: &str = "aws/lambda/";

/// The only condition AWS documents for a stream's discarded batch.
pub const RETRY_ATTEMPTS_EXHAUSTED: &str = "RetryAttemptsExhausted";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RequestContext {
    pub request_id: String,
    pub function_arn: String,
    pub condition: String,
    pub approximate_invoke_count: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ResponseContext {
    pub status_code: u16,
    pub executed_version: String,
    pub function_error: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KinesisBatchInfo {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    /// ISO 8601, milliseconds (`2019-11-14T00:38:04.835Z`).
    pub approximate_arrival_of_first_record: String,
    pub approximate_arrival_of_last_record: String,
    pub batch_size: u64,
    pub stream_arn: String,
}

/// One on-failure object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GivenUpBatch {
    #[serde(rename = "requestContext")]
    pub request_context: RequestContext,
    #[serde(rename = "responseContext")]
    pub response_context: ResponseContext,
    pub version: String,
    /// When Lambda gave up (ISO 8601, milliseconds).
    pub timestamp: String,
    #[serde(rename = "KinesisBatchInfo")]
    pub kinesis_batch_info: KinesisBatchInfo,
    /// The invocation payload (`{"Records":[...]}`) as JSON text; absent outside S3 destinations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

impl GivenUpBatch {
    pub fn parse(body: &[u8]) -> Result<GivenUpBatch, serde_json::Error> {
        serde_json::from_slice(body)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain strings and numbers serialize")
    }
}

/// `2019-11-14T00:38:04.835Z`: the millisecond timestamps of the invocation record.
pub fn iso_millis(micros: i64) -> String {
    let full = time::format_rfc3339_micros(micros);
    // `…:04.835123Z` → `…:04.835Z`
    format!("{}Z", &full[..full.len() - 4])
}

/// `aws/lambda/{mapping}/{shard}/YYYY/MM/DD/YYYY-MM-DDTHH.MM.SS-{unique}`
pub fn given_up_key(mapping_uuid: &str, shard_id: &str, at_micros: i64, unique: &str) -> String {
    let t = Instant::of_micros(at_micros);
    let d = t.date;
    format!(
        "{GIVEN_UP_PREFIX}{mapping_uuid}/{shard_id}/{:04}/{:02}/{:02}/{d}T{:02}.{:02}.{:02}-{unique}",
        d.year, d.month, d.day, t.hour, t.minute, t.second
    )
}

/// `(mapping UUID, shardId)` from an on-failure key; `None` for a key of another shape.
pub fn parse_given_up_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(GIVEN_UP_PREFIX)?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [mapping, shard, year, month, day, name] = parts.as_slice() else {
        return None;
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let named = name.starts_with(&format!("{year}-{month}-{day}T"));
    (!mapping.is_empty()
        && !shard.is_empty()
        && digits(year, 4)
        && digits(month, 2)
        && digits(day, 2)
        && named)
        .then_some((*mapping, *shard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_lambdas_naming_and_parse_back() {
        let at = time::parse_rfc3339("2019-11-14T00:38:06.021Z").unwrap();
        let key = given_up_key(
            "a1b2c3d4-0000-4000-8000-000000000000",
            "shardId-000000000001",
            at,
            "5f0c9e1a-1111-4111-8111-111111111111",
        );
        assert_eq!(
            key,
            "aws/lambda/a1b2c3d4-0000-4000-8000-000000000000/shardId-000000000001/2019/11/14/\
             2019-11-14T00.38.06-5f0c9e1a-1111-4111-8111-111111111111"
        );
        assert_eq!(
            parse_given_up_key(&key),
            Some((
                "a1b2c3d4-0000-4000-8000-000000000000",
                "shardId-000000000001"
            ))
        );
        assert_eq!(parse_given_up_key("aws/lambda/x/y/2019/11/14"), None);
        assert_eq!(parse_given_up_key("staging/year=2019/x.ndjson"), None);
    }

    #[test]
    fn the_documented_record_reads_and_writes_back() {
        // The example of the Lambda developer guide, with the S3 destination's payload.
        let documented = r#"{
            "requestContext": {"requestId": "c9b8fa9f-5a7f-xmpl-af9c-0c604cde93a5",
                "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
                "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 1},
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
            "version": "1.0",
            "timestamp": "2019-11-14T00:38:06.021Z",
            "KinesisBatchInfo": {"shardId": "shardId-000000000001",
                "startSequenceNumber": "49601189658422359378836298521827638475320189012309704722",
                "endSequenceNumber": "49601189658422359378836298522902373528957594348623495186",
                "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
                "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
                "batchSize": 500,
                "streamArn": "arn:aws:kinesis:us-east-2:123456789012:stream/mystream"},
            "payload": "{\"Records\":[]}"
        }"#;
        let batch = GivenUpBatch::parse(documented.as_bytes()).unwrap();
        assert_eq!(batch.request_context.condition, RETRY_ATTEMPTS_EXHAUSTED);
        assert_eq!(batch.kinesis_batch_info.batch_size, 500);
        assert_eq!(batch.payload.as_deref(), Some("{\"Records\":[]}"));
        assert_eq!(
            GivenUpBatch::parse(batch.to_json().as_bytes()).unwrap(),
            batch
        );
        // An SQS or SNS destination's record has no payload.
        let without: GivenUpBatch = serde_json::from_str(r#"{"version":"1.0"}"#).unwrap();
        assert_eq!(without.payload, None);
        assert_eq!(
            iso_millis(time::parse_rfc3339("2019-11-14T00:38:04.835999Z").unwrap()),
            "2019-11-14T00:38:04.835Z"
        );
    }
}
