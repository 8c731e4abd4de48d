#![no_main]
//! See `clerk_sync_fuzz::verify_signature` (fuzz/src/lib.rs) for what is checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| clerk_sync_fuzz::verify_signature(data));
