//! The `filter_output` target's property: whatever a filter outputs, what
//! is served is valid exposition by the whole-scrape rules.

use crate::prom::Relabeler;
use crate::prom::standard::VLLM;

/// The engine's side of the filter-boundary property: a small scrape of
/// real shape (a gauge, a counter, histograms, a `_created` family), whose
/// `vllm:` families go to the one filter.
pub const FILTER_SCRAPE: &[u8] = b"# HELP vllm:num_requests_waiting Requests waiting.\n\
# TYPE vllm:num_requests_waiting gauge\n\
vllm:num_requests_waiting{model_name=\"m\"} 3.0\n\
# HELP vllm:generation_tokens_total Generated tokens.\n\
# TYPE vllm:generation_tokens_total counter\n\
vllm:generation_tokens_total{model_name=\"m\"} 7.0\n\
# HELP vllm:e2e_request_latency_seconds Latency.\n\
# TYPE vllm:e2e_request_latency_seconds histogram\n\
vllm:e2e_request_latency_seconds_bucket{le=\"1.0\",model_name=\"m\"} 1.0\n\
vllm:e2e_request_latency_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 2.0\n\
vllm:e2e_request_latency_seconds_count{model_name=\"m\"} 2.0\n\
vllm:e2e_request_latency_seconds_sum{model_name=\"m\"} 1.5\n\
# HELP vllm:e2e_request_latency_seconds_created Latency.\n\
# TYPE vllm:e2e_request_latency_seconds_created gauge\n\
vllm:e2e_request_latency_seconds_created{model_name=\"m\"} 1.7e+09\n\
# HELP process_open_fds Open fds.\n\
# TYPE process_open_fds gauge\n\
process_open_fds 12.0\n\
# HELP lat Not the filter's.\n\
# TYPE lat histogram\n\
lat_bucket{le=\"+Inf\"} 1.0\n\
lat_count 1.0\n\
lat_sum 0.5\n";

/// Serves `output` as a filter's answer over [`FILTER_SCRAPE`]: checked as
/// the filter chain checks it, the families served unfiltered when it is
/// refused, the runtime's own metrics after. Asserts that what is served
/// is valid exposition by the whole-scrape rules, and returns it (for
/// `promtool`, an independent parser, in the suite).
pub fn filter_output(output: &[u8]) -> Vec<u8> {
    use std::collections::HashMap;

    use crate::filter::validate::{Checker, Presence, Scope};
    use crate::prom::FamilySink;

    /// The routes of one filter selecting `vllm:*`.
    #[derive(Default)]
    struct ToFilter {
        served: Vec<u8>,
        input: Vec<u8>,
        current: bool,
        seen: HashMap<Vec<u8>, bool>,
    }
    impl FamilySink for ToFilter {
        fn family(&mut self, name: &[u8]) {
            self.current = name.starts_with(b"vllm:");
            self.seen.insert(name.to_vec(), self.current);
        }
        fn write(&mut self, bytes: &[u8]) -> bool {
            match self.current {
                true => self.input.extend_from_slice(bytes),
                false => self.served.extend_from_slice(bytes),
            }
            !self.current
        }
        fn output(&mut self) -> &mut Vec<u8> {
            &mut self.served
        }
    }
    struct Scrape<'r>(&'r ToFilter);
    impl Scope for Scrape<'_> {
        fn selects(&self, family: &[u8]) -> bool {
            family.starts_with(b"vllm:")
        }
        fn presence(&self, family: &[u8]) -> Presence {
            match self.0.seen.get(family) {
                None => Presence::New,
                Some(true) => Presence::Mine,
                Some(false) => Presence::Elsewhere,
            }
        }
    }
    struct Everything;
    impl Scope for Everything {
        fn selects(&self, _: &[u8]) -> bool {
            true
        }
        fn presence(&self, _: &[u8]) -> Presence {
            Presence::New
        }
        fn is_runtime(&self) -> bool {
            true
        }
    }

    let mut relabeler = Relabeler::new(VLLM);
    let mut routes = ToFilter::default();
    relabeler.feed(FILTER_SCRAPE, &mut routes);
    relabeler.finish_body(&mut routes);
    if routes.input.last().is_some_and(|&b| b != b'\n') {
        routes.input.push(b'\n');
    }
    let accepted = Checker::default()
        .check(output, &Scrape(&routes), |_, _| {})
        .is_ok();
    let (mut served, input) = (std::mem::take(&mut routes.served), routes.input);
    served.extend_from_slice(if accepted { output } else { &input });
    served.extend_from_slice(
        b"# HELP matrixinfer_runtime_up 1.\n# TYPE matrixinfer_runtime_up gauge\nmatrixinfer_runtime_up 1\n",
    );
    relabeler.close(&mut served);
    if let Err(violation) = Checker::default().check(&served, &Everything, |_, _| {}) {
        panic!(
            "served exposition is invalid ({violation}); the filter's output was {}:\n{}",
            if accepted { "accepted" } else { "refused" },
            String::from_utf8_lossy(&served)
        );
    }
    served
}
