#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qkv_fuzz::exp_check::run(data));
