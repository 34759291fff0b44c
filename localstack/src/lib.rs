//! Running the pipeline on one machine, with no cloud. The crate's name is the design card's; its
//! modules say what each part is:
//!
//! - [`lambda_runtime_api`]: a Lambda Runtime API on loopback that runs the real `ingest` and
//!   `compact` binaries as Lambda does (cold start, invocations with deadlines, errors, kills);
//! - [`event_source_mapping`]: a Kinesis event source mapping as Lambda's (batch size and window,
//!   `ReportBatchItemFailures`, bisection, retries, the S3 on-failure destination, checkpoints);
//! - [`embedded_emulators`]: Kinesis and DynamoDB emulators embedded in the process, fast enough
//!   for the demo's volume;
//! - [`provision`]: the bucket, dedup table and stream the pipeline expects, on any emulator;
//! - [`demo`]: `make demo`, the whole pipeline end to end, checked against the producer's ledger
//!   (the `demo` binary is its command line).

pub mod demo;
pub mod embedded_emulators;
pub mod event_source_mapping;
pub mod lambda_runtime_api;
pub mod provision;
