//! MatrixInfer Runtime: the sidecar beside an LLM inference engine.
//!
//! # The metrics path, in five stages
//!
//! A Prometheus scrape of `GET /metrics` flows through [`pipeline`], which
//! wires the stages together in one function:
//!
//! 1. [`upstream`]: the [`upstream::EngineClient`] GETs the engine's
//!    metrics over a reused connection and yields the body as it arrives,
//!    de-chunked and inflated;
//! 2. [`prom::scan`]: the [`prom::scan::LineScanner`] cuts the chunks into
//!    lines (memchr), carrying only an unfinished line between chunks;
//! 3. [`prom::relabel`]: the [`prom::Relabeler`] writes every line through
//!    byte for byte, into a [`prom::FamilySink`], and collects one
//!    standardized copy of each family the table in [`prom::standard`]
//!    names;
//! 4. [`filter`]: the sink is the filter stage's [`filter::Routes`]: WASM
//!    filters get the families they select, once per scrape, and their
//!    output replaces them;
//! 5. [`http::response`]: the answer streams out chunked, gzipped when the
//!    client asked, followed by the standard families and the sidecar's
//!    own metrics ([`stats`]).
//!
//! ```
//! use matrixinfer_runtime::prom::{relabel_all, standard::SGLANG};
//!
//! let engine = "# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name=\"m\"} 2.0\n";
//! let out = String::from_utf8(relabel_all(SGLANG, engine.as_bytes())).unwrap();
//! assert!(out.starts_with(engine));
//! assert!(out.ends_with("matrixinfer:num_requests_waiting{model_name=\"m\"} 2.0\n"));
//! ```
//!
//! # Around it
//!
//! - [`config`]: flags and environment; [`engine`]: what differs per engine;
//! - [`runtime`]: thread-per-core workers on monoio, io_uring or epoll;
//! - [`http`]: the HTTP/1.1 server and the codecs the client shares;
//! - [`app`]: the routes; [`access`]: the API token and where writes may
//!   go; [`sidecar`]: the process, start to drain;
//! - [`net`]: every outbound call's URL, HTTP/1.1 codec, blocking client,
//!   retry policy, TLS trust and route;
//! - [`offload`]: work off the workers, capped; [`secret`]: the one
//!   secret type; [`errors`]: cause chains for people;
//! - [`download`]: model downloads from HuggingFace, S3, OBS and PVCs;
//! - [`lora`]: LoRA adapters downloaded, loaded into the engine, unloaded;
//! - [`kv_events`]: the engine's KV-cache events kept as an index in Redis.
//!
//! Not in the library: the simulated engine is the `sim` crate
//! (`crates/sim`), and the binary's `demo` and `bench` commands are
//! modules of the binary (`src/demo.rs`, `src/bench.rs`).
#![deny(unsafe_code)]

pub mod access;
pub mod app;
pub mod config;
pub mod download;
pub mod engine;
pub mod errors;
pub mod filter;
#[cfg(any(fuzzing, test))]
pub mod fuzz_logic;
pub mod http;
pub mod kv_events;
pub mod lora;
pub mod net;
pub mod offload;
pub mod pipeline;
pub mod prom;
pub mod runtime;
pub mod secret;
pub mod shutdown;
pub mod sidecar;
pub mod startup;
pub mod stats;
pub mod upstream;
