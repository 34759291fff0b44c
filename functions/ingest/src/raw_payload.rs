//! The invocation's payload handed to the handler as the bytes Lambda sent, so the batch is read
//! borrowed from them ([`pipeline::lambda_payload::KinesisBatch::parse`]): the runtime's own
//! deserialisation wants a type that owns its data (`for<'de> Deserialize<'de>`), which would copy
//! every record out of the payload before reading it.
//!
//! A layer between the runtime's client and its handler takes the body out of the invocation
//! (leaving `null`, which the handler's `LambdaEvent<()>` reads) and keeps it in a task-local for
//! the handler's future, which runs inside the layer's.

use bytes::Bytes;
use lambda_runtime::tower::{Layer, Service};
use lambda_runtime::LambdaInvocation;
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
