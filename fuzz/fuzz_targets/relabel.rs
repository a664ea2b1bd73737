//! Arbitrary bytes, split anywhere, through the relabeler: no panic, every
//! original byte out first and in order.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    matrixinfer_runtime::fuzz_logic::relabel(data);
});
