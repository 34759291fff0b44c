//! Cold start: read the configuration, build the clients once, then serve the Lambda Runtime API.

use ingest::Deadline;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use pipeline::config::IngestConfig;
use pipeline::lambda_payload::KinesisBatch;

// glibc malloc was a third of the CPU profile: every record allocates a handful of small strings.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pipeline::logging::init();
    let config = IngestConfig::from_env().unwrap_or_else(|error| {
        eprintln!("ingest: configuration error: {error}");
        std::process::exit(2)
    });
    let ingest = ingest::Ingest::from_config(&config).await;
    let ingest = &ingest;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<KinesisBatch>| async move {
            let deadline = Deadline::at_epoch_ms(event.context.deadline);
            Ok::<_, Error>(ingest.handle(&event.payload, deadline).await)
        },
    ))
    .await
}
