//! `make demo`: the whole pipeline on one machine (see `localstack::demo`). Exits non-zero if any
//! event is unaccounted for.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The embedded DynamoDB logs every ConditionalCheckFailed (each duplicate) as a warning.
    pipeline::logging::init_with_default("info,dynoxide=error,ferrokinesis=warn");
    localstack::demo::run(localstack::demo::Args::parse()).await
}
