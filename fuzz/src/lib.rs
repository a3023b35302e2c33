//! The checks behind the fuzz targets of `qkv`, one module per target. Each `run(&[u8])`
//! decodes any input into a case and panics if `qkv` breaks its contract on it.
//!
//! `tests/regressions.rs` in the main crate includes these modules by path and replays the
//! seed corpus and every input that ever failed, so `cargo test` checks them too.

pub mod api;
pub mod bytes;
pub mod capi_check;
pub mod capi_split_check;
pub mod differential;
pub mod exp_check;
