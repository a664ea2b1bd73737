//! Arbitrary bytes as a ZMQ payload of KV-cache events: no panic,
//! consistent blocks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    matrixinfer_runtime::fuzz_logic::kv_events(data);
});
