//! One integration binary: the real `matrixinfer-runtime`, started as a
//! process, against simulated and misbehaving engines.

// Processes, raw servers, an HTTP client, exposition checks.
mod util;

// Command line: flags, exit codes and messages.
mod cli;
// Engines that fail: down, slow, 500, truncated, garbage, huge.
mod faults;
// Every standardization rule, on every engine version's payloads.
mod metrics;
// The HTTP/1.1 server: keep-alive, pipelining, limits, timeouts, drivers, SIGTERM.
mod server;
