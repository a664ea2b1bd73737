//! Write MatrixInfer Runtime metric filters in safe Rust.
//!
//! A filter is a WebAssembly module that the runtime calls once per scrape
//! with the metric families it selected, as Prometheus text, and whose
//! output it serves in their place (`docs/wasm-abi.md` is the contract).
//! This crate hides that contract:
//!
//! - [`Filter`] is what you implement: [`new`](Filter::new) reads the
//!   operator's config, [`selectors`](Filter::selectors) names the families
//!   you want, [`filter`](Filter::filter) edits them in place.
//!   [`RawFilter`] works on the bytes instead.
//! - [`Families`], [`Family`] and [`Sample`] are the parsed families, kept
//!   as spelled so untouched samples come out byte for byte; [`parse()`] and
//!   [`write()`] convert text to them and back.
//! - [`export_filter!`] (or [`export_raw_filter!`]) turns your type into
//!   the module's exports; [`log`] writes to the runtime's log.
//! - [`run`], [`selected`] and [`assert_testdata`] run a filter natively,
//!   for its tests.
//!
//! # What the runtime accepts
//!
//! The runtime refuses a filter's whole output for one line Prometheus
//! would not parse, or one family that breaks the format's rules (split in
//! two, a series twice, in its own `matrixinfer_runtime_` namespace, ...),
//! and then does what the operator's `--filter-on-error` says (by default,
//! serves that scrape unfiltered). The SDK shares the runtime's
//! implementation of those rules ([`expo`]): which samples belong to which
//! family ([`Family::owns`]; a histogram's samples always carry a suffix),
//! what a name is ([`is_metric_name`], [`is_label_name`], [`is_reserved`]).
//! [`write()`], which every [`Filter`]'s output goes through, escapes label
//! values and HELP text, ends every line, writes a split family as one, and
//! leaves out each family or sample the runtime would refuse, so that the
//! rest still counts. It returns a [`Refusal`] for each: the module logs
//! them as a warning on each call, and [`run`] (so [`assert_testdata`])
//! fails with them in tests. What it cannot see is the rest of the scrape:
//! output only families you selected, or new names.
//!
//! # Example
//!
//! ```
//! use matrixinfer_filter::{Families, Filter, export_filter};
//!
//! /// Adds `pod="<config>"` to every vLLM sample.
//! struct PodLabel(String);
//!
//! impl Filter for PodLabel {
//!     fn new(config: &str) -> Result<Self, String> {
//!         if config.is_empty() { return Err("config: the pod's name".into()); }
//!         Ok(PodLabel(config.to_owned()))
//!     }
//!     fn selectors(&self) -> Vec<String> { vec!["vllm:*".into()] }
//!     fn filter(&mut self, families: &mut Families) {
//!         for sample in families.iter_mut().flat_map(|f| &mut f.samples) {
//!             sample.set_label("pod", &self.0);
//!         }
//!     }
//! }
//!
//! export_filter!(PodLabel);
//!
//! // Natively, in the crate's tests:
//! let out = matrixinfer_filter::run::<PodLabel>("p-1", "vllm:x{engine=\"0\"} 3.0\n");
//! assert_eq!(out.unwrap(), "vllm:x{engine=\"0\",pod=\"p-1\"} 3.0\n");
//! ```
//!
//! Make the crate a `cdylib` (plus `rlib`, so native tests can link it),
//! build it with `cargo build --release --target wasm32-unknown-unknown`,
//! and give the runtime the `.wasm` file. Build with `panic = "abort"`: a
//! panic then traps, the runtime serves that scrape unfiltered and counts
//! the failure.
//!
//! # Unsafe code
//!
//! Only the `abi` module has it: the call of the host's `log` import, and
//! the `#[unsafe(no_mangle)]` exports the macros expand to. Filters written
//! with this crate need none (`#![forbid(unsafe_code)]` works in them).

#![deny(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(test, deny(warnings))]

#[allow(
    unsafe_code,
    reason = "the ABI glue: the log import and the no_mangle exports"
)]
mod abi;
mod filter;
mod harness;
mod model;
mod output;
mod selector;
mod text;

pub use abi::{ABI_VERSION, Level, log};
pub use filter::{Filter, RawFilter};
#[cfg(not(target_arch = "wasm32"))]
pub use harness::assert_testdata;
pub use harness::{run, run_raw, run_with_refusals, selected};
pub use model::{Families, Family, Sample};
pub use output::{Refusal, RefusalReason, write};
pub use selector::{matches, parse_list};
pub use text::{ParseError, is_label_name, is_metric_name, is_reserved, parse};

/// The exposition format's rules as the runtime checks them (the
/// `matrixinfer-expo` crate), for a [`RawFilter`]'s own checks and for
/// tests: [`expo::check_line`] is the runtime's check of one output line,
/// [`expo::check::Checker`] its check of a whole output.
pub use expo;

/// What the export macros call; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::abi::{abi_version, alloc, filter, init, init_raw, selectors};
}
