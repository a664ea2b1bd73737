//! The Prometheus text format, streamed and rewritten without a parsed model.
//!
//! - [`scan`] cuts a chunked byte stream into lines (stage 2 of the metrics
//!   path);
//! - [`line`] classifies one line: comment, HELP, TYPE, sample, malformed;
//! - [`relabel`] writes every line through and collects the standardized
//!   copies that [`standard`] asks for (stage 3);
//! - [`expo`] writes the sidecar's own metrics.

pub mod expo;
pub mod line;
pub mod relabel;
pub mod scan;
pub mod standard;
#[cfg(test)]
pub(crate) mod testutil;

pub use relabel::{Relabeler, relabel_all};
