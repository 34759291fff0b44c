//! Cold start: read the configuration, build the clients once, then serve the Lambda Runtime API.

use ingest::raw_payload::{self, PayloadError, RawPayloadLayer};
use ingest::Deadline;
use lambda_runtime::{layers::TracingLayer, service_fn, Error, LambdaEvent, Runtime};
use pipeline::config::IngestConfig;
use pipeline::lambda_payload::KinesisBatch;

// glibc malloc was a third of the CPU profile: every record allocates a handful of small strings.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Freed memory kept, set before mimalloc starts (`pipeline::allocator`; the priority as in compact's
// main.rs: after std's constructor, before mimalloc's).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array.00100"]
static ALLOCATOR_OPTIONS: extern "C" fn() = pipeline::allocator::for_ingest;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pipeline::logging::init();
    let config = IngestConfig::from_env().unwrap_or_else(|error| {
        eprintln!("ingest: configuration error: {error}");
        std::process::exit(2)
    });
    let ingest = ingest::Ingest::from_config(&config).await;
    let ingest = &ingest;
    // The payload's bytes reach the handler as sent (raw_payload); the tracing layer, added last,
    // runs first, so every log line is inside the invocation's request-id span.
    let handler = service_fn(move |event: LambdaEvent<()>| async move {
        let deadline = Deadline::at_epoch_ms(event.context.deadline);
        let bytes = raw_payload::payload()?;
        let batch = KinesisBatch::parse(&bytes)?;
        Ok::<_, PayloadError>(ingest.handle(&batch, deadline).await)
    });
    Runtime::new(handler)
        .layer(RawPayloadLayer)
        .layer(TracingLayer::new())
        .run()
        .await
}
