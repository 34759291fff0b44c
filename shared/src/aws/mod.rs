//! The real adapters behind the ports: S3 ([`s3`]), DynamoDB ([`dynamodb`]), CloudWatch and EMF log
//! lines ([`metrics`]). Every SDK failure becomes a [`StoreError`] here, transient or permanent
//! as the failure says ([`store_error`]).

pub mod dynamodb;
pub mod metrics;
pub mod s3;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

pub use dynamodb::{DynamoDedupStore, CLAIM_CONDITION};
pub use metrics::{metrics_sink, CloudWatchMetrics, EmfMetrics, NoMetrics};
pub use s3::S3ObjectStore;

use crate::ports::{FailureKind, StoreError};

/// The shared SDK configuration, loaded once at cold start. The SDK reads `AWS_ENDPOINT_URL`
/// itself, so that the standard per-service variables (`AWS_ENDPOINT_URL_DYNAMODB`, …) can still
/// send one service elsewhere, as with every AWS SDK; setting the URL here in code would override
/// them.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        // Transient errors (throttling, 5xx, time-outs) are retried with backoff before a record
        // is reported as failed.
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await
}

/// An SDK error with its whole chain of causes, on one line.
pub fn context(error: impl std::error::Error) -> String {
    DisplayErrorContext(error).to_string()
}

/// Error codes that say "slow down" or "try later" rather than "no": the standard retry
/// classifier's throttling and transient codes, as S3, DynamoDB and CloudWatch use them.
const TRANSIENT_CODES: [&str; 14] = [
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "LimitExceededException",
    "TransactionInProgressException",
    "SlowDown",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
];

fn is_transient_code(code: Option<&str>) -> bool {
    code.is_some_and(|code| TRANSIENT_CODES.contains(&code))
}

/// Whether a service's answer can change if asked again: throttling, a 5xx or a transient code
/// can; any other 4xx (access denied, no such bucket or table, a rejected request) cannot.
pub fn service_failure_kind(status: u16, code: Option<&str>) -> FailureKind {
    if status >= 500 || status == 429 || is_transient_code(code) {
        FailureKind::Transient
    } else {
        FailureKind::Permanent
    }
}

/// A failed SDK call of any AWS SDK crate (after the SDK's own retries) as a [`StoreError`] that keeps whether asking
/// again can help: time-outs, lost connections and unreadable answers can; a request the SDK could
/// not even build cannot.
pub fn store_error<E>(operation: impl Into<String>, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let kind = match &error {
        SdkError::ServiceError(service) => {
            service_failure_kind(service.raw().status().as_u16(), service.err().code())
        }
        SdkError::ConstructionFailure(_) => FailureKind::Permanent,
        _ => FailureKind::Transient,
    };
    StoreError::new(operation, context(error)).with_kind(kind)
}

#[cfg(test)]
mod tests;
