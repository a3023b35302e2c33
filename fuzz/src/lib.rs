//! The checks behind the fuzz targets of `qkv`, one module per target. Each `run(&[u8])`
//! decodes any input into a case and panics if `qkv` breaks its contract on it.
//!
//! `tests/regressions.rs` in the main crate includes these modules by path and replays the
//! seed corpus and every recorded failure, so `cargo test` checks them too.

pub mod api;
pub mod bytes;
pub mod capi_check;
pub mod capi_split_check;
/// The main crate's test kit (problems, levels, the comparison with the reference), shared
/// by path: a crate depending on `qkv` cannot be one of `qkv`'s dev-dependencies.
#[path = "../../tests/common/mod.rs"]
pub mod common;
pub mod differential;
pub mod exp_check;
