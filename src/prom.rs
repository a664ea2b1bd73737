//! The Prometheus text format, streamed and rewritten without a parsed model.
//!
//! - [`scan`] cuts a chunked byte stream into lines (stage 2 of the metrics
//!   path);
//! - [`line`] classifies one line: comment, HELP, TYPE, sample, malformed;
//! - [`relabel`] writes every line through a [`FamilySink`] and collects
//!   the standardized copies that [`standard`] asks for (stage 3);
//! - [`name_hash`]: hashed family names and series, for per-scrape sets;
//! - [`expo`] writes the sidecar's own metrics.

pub mod expo;
pub mod line;
pub mod name_hash;
pub mod relabel;
pub mod scan;
pub mod standard;
#[cfg(test)]
pub(crate) mod testutil;

pub use relabel::{FamilySink, Relabeler, relabel_all};
