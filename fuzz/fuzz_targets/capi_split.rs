#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qkv_fuzz::capi_split_check::run(data));
