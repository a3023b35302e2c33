//! Nothing: the package exists for its criterion bench, `attention.rs`
//! (`cargo bench -p qkv-bench`).
