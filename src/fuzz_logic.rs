//! The properties the fuzz targets check, kept in the library so that the
//! targets stay a few lines and the properties compile (and run in unit
//! tests) with everything else.
//!
//! One module per fuzz target (`fuzz/fuzz_targets/<name>.rs`), each
//! holding that target's property; the functions the targets call are
//! re-exported here under the targets' names.

mod filter_output;
mod json_body;
mod kv_events;
mod relabel;
mod request;
mod s3_listing;

pub use filter_output::{FILTER_SCRAPE, filter_output};
pub use json_body::json_body;
pub use kv_events::kv_events;
pub use relabel::relabel;
pub use request::request;
pub use s3_listing::s3_listing;

#[cfg(test)]
mod tests;
