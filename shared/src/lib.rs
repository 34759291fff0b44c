//! The pipeline's shared library.
//!
//! Pure domain logic, with no AWS types: [`catalogue`], [`validate`], [`time`], [`kpl`], [`layout`],
//! [`config`]. The AWS boundary as small traits in [`ports`], with real adapters in [`aws`] and
//! in-memory twins in [`memory`].

pub mod aws;
pub mod catalogue;
pub mod config;
pub mod fixtures;
pub mod given_up;
pub mod kpl;
pub mod lake;
pub mod lambda_payload;
pub mod layout;
pub mod logging;
pub mod memory;
pub mod ports;
pub mod position;
pub mod time;
pub mod validate;
