//! The pipeline's shared library.
//!
//! Pure domain logic, with no AWS types: [`catalogue`], [`validate`], [`time`], [`kpl`],
//! [`position`] (Kinesis positions), [`layout`] (S3 keys), the line formats [`staging_line`] and
//! [`quarantine_line`], [`lambda_payload`] and [`given_up`] (what Lambda hands and keeps),
//! [`config`] and [`metric_names`]; [`json_scan`], the borrowed JSON reader of the hot paths. The AWS boundary as small traits in [`ports`].
//!
//! Features, so that each binary compiles only what it needs:
//! - `allocator`: mimalloc's options as each Lambda binary sets them at start-up, `allocator`;
//! - `aws`: the real adapters behind the ports (S3, DynamoDB, CloudWatch), `aws`;
//! - `lake`: the Parquet lake's Arrow schema and row builder (arrow, parquet), `lake`;
//! - `test-util`: in-memory twins of the ports (`memory`), small deterministic inputs
//!   (`fixtures`), and the Lambda payload writer (`lambda_payload::kinesis_event`): for tests, the
//!   benchmarks and the local runner, never the Lambda binaries.

#[cfg(feature = "allocator")]
pub mod allocator;
#[cfg(feature = "aws")]
pub mod aws;
pub mod catalogue;
pub mod config;
#[cfg(feature = "test-util")]
pub mod fixtures;
pub mod given_up;
pub mod json_scan;
pub mod kpl;
#[cfg(feature = "lake")]
pub mod lake;
pub mod lambda_payload;
pub mod layout;
pub mod logging;
#[cfg(feature = "test-util")]
pub mod memory;
pub mod metric_names;
pub mod ports;
pub mod position;
pub mod quarantine_line;
pub mod staging_line;
pub mod time;
pub mod validate;
