//! Cold start: read the configuration, build the clients once, then serve the Lambda Runtime API.

use lambda_runtime::{service_fn, Error, LambdaEvent};
use pipeline::config::CompactConfig;

// glibc malloc was a third of the CPU profile: every record allocates a handful of small strings.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// Before mimalloc starts, which reserves its first arena and decides how that arena commits
// (`pipeline::allocator`). Priority 100 runs before mimalloc's own constructor (priority 101 when
// built by clang, as `cargo lambda` builds with zig; none with gcc) and after std's (99).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array.00100"]
static ALLOCATOR_OPTIONS: extern "C" fn() = pipeline::allocator::for_compaction;

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
