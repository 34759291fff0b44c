//! The invocation's payload handed to the handler as the bytes Lambda sent, so the batch is read
//! borrowed from them ([`KinesisBatch::parse`]) instead of deserialized by the runtime into owned
//! values first: at 10,000 records of ~1 KB, that first pass alone cost more than the rest of the
//! CPU path (bench/NOTES.md).
//!
//! A layer between the runtime's client and its handler takes the body out of the invocation
//! (leaving `null`, which the handler's `LambdaEvent<()>` reads) and keeps it in a task-local for
//! the handler's future, which runs inside the layer's.

use bytes::Bytes;
use lambda_runtime::tower::{Layer, Service};
use lambda_runtime::LambdaInvocation;
use pipeline::lambda_payload::KinesisBatch;
use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    static PAYLOAD: Bytes;
}

/// Add with `Runtime::layer`; the handler then calls [`payload`].
#[derive(Clone, Copy, Default)]
pub struct RawPayloadLayer;

impl<S> Layer<S> for RawPayloadLayer {
    type Service = RawPayloadService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RawPayloadService { inner }
    }
}

pub struct RawPayloadService<S> {
    inner: S,
}

impl<S: Service<LambdaInvocation>> Service<LambdaInvocation> for RawPayloadService<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Bytes, S::Future>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut invocation: LambdaInvocation) -> Self::Future {
        let body = std::mem::replace(&mut invocation.body, Bytes::from_static(b"null"));
        PAYLOAD.scope(body, self.inner.call(invocation))
    }
}

/// Why the payload could not be read as a Kinesis event: the invocation fails with it.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("the payload is not a Lambda Kinesis event ({{\"Records\":[...]}}): {0}")]
    NotAKinesisEvent(#[from] serde_json::Error),
    #[error("no payload: the handler runs outside RawPayloadLayer")]
    Missing,
}

impl From<PayloadError> for lambda_runtime::Diagnostic {
    fn from(error: PayloadError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: match error {
                PayloadError::NotAKinesisEvent(_) => "BadRequest",
                PayloadError::Missing => "Internal",
            }
            .into(),
            error_message: error.to_string(),
        }
    }
}

/// The current invocation's payload bytes.
pub fn payload() -> Result<Bytes, PayloadError> {
    PAYLOAD
        .try_with(Bytes::clone)
        .map_err(|_| PayloadError::Missing)
}

/// Reads the batch borrowed from `bytes`.
pub fn batch(bytes: &[u8]) -> Result<KinesisBatch<'_>, PayloadError> {
    Ok(KinesisBatch::parse(bytes)?)
}
