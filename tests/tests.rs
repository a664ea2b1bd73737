//! One integration binary: the real `matrixinfer-runtime`, started as a
//! process, against simulated and misbehaving engines.

// Processes, raw servers, an HTTP client, exposition checks.
mod util;
// A real S3 server (s3s-fs, SigV4 verified) in the test process.
mod s3;
// A local HuggingFace Hub and CDN, from the Hub's documented API.
mod hub;
// A local ModelScope hub and CDN, from the ModelScope SDK's hub API.
mod modelscope;
// Local STS, container credentials and IMDSv2, from AWS's documented APIs.
mod aws;
// A TCP proxy that counts, throttles and cuts; S3 fronts that misbehave.
mod proxy;
// A forward proxy that wants credentials and counts; an HTTPS front with a private CA.
mod forward_proxy;

// One policy for every outbound connection: proxies, NO_PROXY, private CAs.
mod outbound;
// The scrape-overhead harness, end to end on a tiny configuration.
mod bench;
// Command line: flags, exit codes and messages.
mod cli;
// As the Pod runs it: nobody, on a read-only root filesystem.
mod container;
// Caps on jobs and threads; the engine's name looked up off the workers.
mod bounded;
// Model downloads from S3, HuggingFace and PVCs, by API and command line.
mod download;
// Sources and disks that fail during a download.
mod download_faults;
// S3 integrity checks: SSE-KMS ETags, CRC64NVME, composite and multipart objects.
mod download_integrity;
// ModelScope downloads, beside the real ModelScope SDK.
mod download_modelscope;
// S3 with the AWS credential chain, anonymous access, regions, requester-pays.
mod download_s3_credentials;
// Engines that fail: down, slow, 500, truncated, garbage, huge.
mod faults;
// WASM filters: the examples' effects, the hostile ones contained.
mod filters;
// Raw modules that loop, break the scrape, keep state, or change on reload.
mod filter_containment;
// ABI versions: version 2's unchanged answer, version 1 modules as they were.
mod filter_abi;
// KV-cache events: a real ZMQ publisher and redis-server around the bridge.
mod kv_events;
// KV event replay: vLLM's replay buffer fills what the live stream lost.
mod kv_replay;
// Redis over TLS from a private CA, with ACL users; wrong CA, wrong password.
mod kv_redis_tls;
// The layout of src/: file sizes, import cycles, the network layer's edges.
mod layout;
// Thousands of idle connections, scrapes and a download at once.
mod load;
// The release binary's code layout: start-up functions together (build.rs).
mod code_layout;
// LoRA adapters: download, load, unload, against the engines' LoRA endpoints.
mod lora;
// Every standardization rule, on every engine version's payloads.
mod metrics;
// The dashboard and alerts of deploy/monitoring/, against a real Prometheus.
mod monitoring;
// The API token, allowed directories, the connection cap.
mod security;
// The suite itself: patience scaled with the machine, no process outliving it.
mod suite;
// No secret in any log line, answer, status or metric of a whole run.
mod secrets;
// The HTTP/1.1 server: keep-alive, pipelining, limits, timeouts, drivers, SIGTERM.
mod server;
