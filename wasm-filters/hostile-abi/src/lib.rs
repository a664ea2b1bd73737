//! Hostile: claims filter ABI version 3 from `mi_abi_version`; otherwise a
//! harmless passthrough. Proves the runtime refuses, at start, a module
//! built for an ABI it does not speak (and names both versions).
//!
//! Its exports are written by hand, not by `export_raw_filter!`: this is
//! also what a filter built without the SDK's macro looks like.
//!
//! Config: selectors as for `passthrough` (default `*`).

#![deny(unsafe_code)]

use matrixinfer_filter::{RawFilter, parse_list};

/// The filter: a passthrough.
pub struct HostileAbi {
    selectors: Vec<String>,
}

impl RawFilter for HostileAbi {
    fn new(config: &str) -> Result<Self, String> {
        Ok(HostileAbi {
            selectors: parse_list(config),
        })
    }

    fn selectors(&self) -> Vec<String> {
        self.selectors.clone()
    }

    fn filter_raw(&mut self, input: &[u8], output: &mut Vec<u8>) {
        output.extend_from_slice(input);
    }
}

/// The ABI's five exports, by hand, with the wrong version.
#[allow(
    unsafe_code,
    reason = "#[unsafe(no_mangle)] on the hand-written exports"
)]
pub mod exports {
    use matrixinfer_filter::__private;

    use super::HostileAbi;

    /// The version this module claims: one no runtime speaks yet (the
    /// SDK's is 2).
    pub const CLAIMED_ABI_VERSION: i32 = 3;

    /// `mi_abi_version() -> i32`, the lie.
    #[unsafe(no_mangle)]
    pub extern "C" fn mi_abi_version() -> i32 {
        CLAIMED_ABI_VERSION
    }

    /// `mi_alloc(len: i32) -> i32`.
    #[unsafe(no_mangle)]
    pub extern "C" fn mi_alloc(len: i32) -> i32 {
        __private::alloc(len)
    }

    /// `mi_init(ptr: i32, len: i32) -> i32`.
    #[unsafe(no_mangle)]
    pub extern "C" fn mi_init(ptr: i32, len: i32) -> i32 {
        __private::init_raw::<HostileAbi>(ptr, len)
    }

    /// `mi_selectors() -> i64`.
    #[unsafe(no_mangle)]
    pub extern "C" fn mi_selectors() -> i64 {
        __private::selectors()
    }

    /// `mi_filter(ptr: i32, len: i32) -> i64`.
    #[unsafe(no_mangle)]
    pub extern "C" fn mi_filter(ptr: i32, len: i32) -> i64 {
        __private::filter(ptr, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_version_3() {
        assert_eq!(exports::mi_abi_version(), 3);
        assert_ne!(exports::mi_abi_version(), matrixinfer_filter::ABI_VERSION);
    }
}
