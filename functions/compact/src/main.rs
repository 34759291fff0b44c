//! Cold start: read the configuration, build the clients once, then serve the Lambda Runtime API.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use pipeline::config::CompactConfig;

// glibc malloc was a third of the CPU profile: every record allocates a handful of small strings.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Before anything allocates: mimalloc decides how its first arena commits when it reserves it
// (`compact::allocator`).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static ALLOCATOR_OPTIONS: extern "C" fn() = compact::allocator::before_main;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pipeline::logging::init();
    let config = CompactConfig::from_env().unwrap_or_else(|error| {
        eprintln!("compact: configuration error: {error}");
        std::process::exit(2)
    });
    let compact = compact::Compact::from_config(&config).await;
    let compact = &compact;
    // Failures reach Lambda typed (`errorType` BadRequest, Refused, Store or Parquet): see
    // `CompactError::error_type`.
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            compact.handle(&event.payload).await
        },
    ))
    .await
}
