//! The adapters against answers the emulators cannot be made to give, offline: each test answers the
//! real SDK client over HTTP with what S3 or DynamoDB would send, so the SDK's own parsing runs.

use aws_sdk_dynamodb::operation::put_item::PutItemInput;
use aws_sdk_s3::operation::delete_objects::{DeleteObjectsInput, DeleteObjectsOutput};
use aws_smithy_mocks::{mock, mock_client, RuleMode};

use aws_config::retry::RetryConfig;

use super::*;
use crate::ports::{Claim, ClaimOutcome, DedupStore, ObjectStore};

fn claim() -> Claim<'static> {
    Claim {
        event_uuid: "d7ca46d5-80b5-4b81-bf5b-c96a60c4c573",
        claimed_by: "shardId-000000000000:4954#2",
        now: 1_700_000_000,
        expires_at: 1_700_604_800,
    }
}

/// A DynamoDB (JSON protocol) error answer.
fn dynamodb_error(code: &str) -> Option<String> {
    Some(format!(
        r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"{code} (test)"}}"#
    ))
}

/// An S3 (REST-XML) error answer.
fn s3_error(code: &str) -> Option<String> {
    Some(format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{code} (test)</Message></Error>"
    ))
}

#[tokio::test]
async fn a_claim_sends_the_contracts_conditional_put_and_reads_a_failed_condition_as_a_duplicate() {
    let exact_request = |input: &PutItemInput| {
        let item = input.item().expect("an item");
        let values = input.expression_attribute_values().expect("values");
        let s = |v: Option<&aws_sdk_dynamodb::types::AttributeValue>| {
            v.and_then(|v| v.as_s().ok().or(v.as_n().ok())).cloned()
        };
        input.table_name() == Some("dedup")
            && input.condition_expression() == Some(CLAIM_CONDITION)
            && s(item.get("event_uuid")).as_deref() == Some("d7ca46d5-80b5-4b81-bf5b-c96a60c4c573")
            && s(item.get("claimed_by")).as_deref() == Some("shardId-000000000000:4954#2")
            && s(item.get("expires_at")).as_deref() == Some("1700604800")
            && s(values.get(":this_event_id")).as_deref() == Some("shardId-000000000000:4954#2")
            && s(values.get(":now")).as_deref() == Some("1700000000")
    };
    let owned = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(exact_request)
        .sequence()
        .http_status(400, dynamodb_error("ConditionalCheckFailedException"))
        .build();
    let claimed = mock!(aws_sdk_dynamodb::Client::put_item)
        .match_requests(exact_request)
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let client = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::Sequential,
        [&owned, &claimed],
        |c| c.retry_config(RetryConfig::disabled())
    );
    let store = DynamoDedupStore::from_client(client, "dedup");
    assert_eq!(store.claim(claim()).await, Ok(ClaimOutcome::OwnedByAnother));
    assert_eq!(store.claim(claim()).await, Ok(ClaimOutcome::Claimed));
}

#[tokio::test]
async fn a_throttled_claim_is_a_transient_failure_and_a_missing_table_a_permanent_one() {
    for (status, code, kind) in [
        (
            400,
            "ProvisionedThroughputExceededException",
            FailureKind::Transient,
        ),
        (400, "ThrottlingException", FailureKind::Transient),
        (500, "InternalServerError", FailureKind::Transient),
        (400, "ResourceNotFoundException", FailureKind::Permanent),
        (400, "AccessDeniedException", FailureKind::Permanent),
    ] {
        let rule = mock!(aws_sdk_dynamodb::Client::put_item)
            .sequence()
            .http_status(status, dynamodb_error(code))
            .build();
        let client = mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        let error = DynamoDedupStore::from_client(client, "dedup")
            .claim(claim())
            .await
            .expect_err(code);
        assert_eq!(error.kind, kind, "{code}: {error}");
        assert!(error.operation.starts_with("PutItem dedup "), "{error}");
        assert!(error.message.contains(code), "{error}");
    }
}

#[tokio::test]
async fn s3_access_denied_is_permanent_and_slow_down_transient() {
    for (status, code, kind) in [
        (403, "AccessDenied", FailureKind::Permanent),
        (404, "NoSuchBucket", FailureKind::Permanent),
        (503, "SlowDown", FailureKind::Transient),
        (500, "InternalError", FailureKind::Transient),
    ] {
        let rule = mock!(aws_sdk_s3::Client::put_object)
            .sequence()
            .http_status(status, s3_error(code))
            .build();
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        let store = S3ObjectStore::from_client(client, "lake");
        let error = store
            .put("staging/x.ndjson", bytes::Bytes::from_static(b"{}\n"))
            .await
            .expect_err(code);
        assert_eq!(error.kind, kind, "{code}: {error}");
        assert_eq!(error.operation, "PutObject s3://lake/staging/x.ndjson");
    }
}

#[tokio::test]
async fn a_delete_that_s3_answers_with_per_key_errors_fails() {
    let keys: Vec<String> = (0..3)
        .map(|n| format!("processed/part-{n}.parquet"))
        .collect();
    let partial = |code: &'static str| {
        move || {
            DeleteObjectsOutput::builder()
                .errors(
                    aws_sdk_s3::types::Error::builder()
                        .key("processed/part-1.parquet")
                        .code(code)
                        .message("We encountered an internal error (test)")
                        .build(),
                )
                .build()
        }
    };
    let all_keys_quietly = |input: &DeleteObjectsInput| {
        let delete = input.delete().expect("a delete");
        delete.quiet() == Some(true)
            && delete.objects().iter().map(|o| o.key()).collect::<Vec<_>>()
                == [
                    "processed/part-0.parquet",
                    "processed/part-1.parquet",
                    "processed/part-2.parquet",
                ]
    };
    for (code, kind) in [
        ("InternalError", FailureKind::Transient),
        ("AccessDenied", FailureKind::Permanent),
    ] {
        let rule = mock!(aws_sdk_s3::Client::delete_objects)
            .match_requests(all_keys_quietly)
            .then_output(partial(code));
        let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule], |c| c
            .retry_config(RetryConfig::disabled()));
        let error = S3ObjectStore::from_client(client, "lake")
            .delete(&keys)
            .await
            .expect_err("a partial failure is a failure");
        assert_eq!(error.kind, kind, "{error}");
        assert!(
            error
                .message
                .contains("1 errors, first: processed/part-1.parquet"),
            "{error}"
        );
    }
    let rule = mock!(aws_sdk_s3::Client::delete_objects)
        .match_requests(all_keys_quietly)
        .then_output(|| DeleteObjectsOutput::builder().build());
    let client = mock_client!(aws_sdk_s3, RuleMode::Sequential, [&rule], |c| c
        .retry_config(RetryConfig::disabled()));
    S3ObjectStore::from_client(client, "lake")
        .delete(&keys)
        .await
        .expect("no errors listed: deleted");
}

#[test]
fn service_answers_are_classified_by_status_and_code() {
    assert_eq!(service_failure_kind(503, None), FailureKind::Transient);
    assert_eq!(service_failure_kind(429, None), FailureKind::Transient);
    assert_eq!(
        service_failure_kind(400, Some("ThrottlingException")),
        FailureKind::Transient
    );
    assert_eq!(
        service_failure_kind(400, Some("ValidationException")),
        FailureKind::Permanent
    );
    assert_eq!(service_failure_kind(403, None), FailureKind::Permanent);
}
