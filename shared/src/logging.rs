//! Structured JSON logs through `tracing`, on stderr so that stdout carries only EMF metric lines.
//!
//! Every line carries its spans (`"spans":[…]`): the runtime's `Lambda runtime invoke` span with the
//! invocation's `requestId` (and `xrayTraceId`), then the function's own (ingest's `batch`, with its
//! shard and first sequence number), so that any line can be matched to its invocation.

use tracing_subscriber::EnvFilter;

/// Installs the JSON subscriber once; the level comes from `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`.
pub fn init() {
    init_with_default("info");
}

/// [`init`], with `default_filter` (an `EnvFilter` directive) when neither variable is set.
pub fn init_with_default(default_filter: &str) {
    let filter = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .and_then(|level| EnvFilter::try_new(level.to_lowercase()).ok())
        .unwrap_or_else(|| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(true)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .try_init();
}
