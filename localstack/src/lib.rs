//! Running the pipeline on one machine, with no cloud: a Lambda Runtime API for the real binaries,
//! and (with the demo) a local Kinesis event source mapping and resource provisioning.

pub mod runtime_api;
