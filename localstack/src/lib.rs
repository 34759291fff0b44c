//! Running the pipeline on one machine, with no cloud: a Lambda Runtime API for the real binaries,
//! resource provisioning for a local emulator, and (with the demo) a local Kinesis event source
//! mapping and embedded Kinesis and DynamoDB emulators.

pub mod embedded;
pub mod esm;
pub mod provision;
pub mod runtime_api;
