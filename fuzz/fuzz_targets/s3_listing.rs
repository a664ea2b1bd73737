//! Arbitrary bytes as an S3 listing: no panic, no file lands outside the
//! output directory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    matrixinfer_runtime::fuzz_logic::s3_listing(data);
});
