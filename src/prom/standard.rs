//! The standard `matrixinfer:*` vocabulary and where each name comes from.
//!
//! This table is the product contract of DESIGN.md section 3: for each
//! standard name, the engine families that may feed it, in order of
//! preference. Exactly one of them is used per scrape.

/// A standard metric name and its sources, most preferred first.
#[derive(Debug)]
pub struct StandardName {
    /// The engine-neutral name, as exposed.
    pub name: &'static str,
    /// Source families as their samples are named (counters with `_total`).
    pub sources: &'static [&'static str],
}

/// vLLM, every version in use (V0 and V1).
pub const VLLM: &[StandardName] = &[
    StandardName {
        name: "matrixinfer:generation_tokens_total",
        sources: &["vllm:generation_tokens_total"],
    },
    StandardName {
        name: "matrixinfer:num_requests_waiting",
        sources: &["vllm:num_requests_waiting"],
    },
    StandardName {
        name: "matrixinfer:time_to_first_token_seconds",
        sources: &["vllm:time_to_first_token_seconds"],
    },
    StandardName {
        name: "matrixinfer:time_per_output_token_seconds",
        // Current vLLM dropped the first name; 0.10 emits both.
        sources: &[
            "vllm:time_per_output_token_seconds",
            "vllm:inter_token_latency_seconds",
        ],
    },
    StandardName {
        name: "matrixinfer:e2e_request_latency_seconds",
        sources: &["vllm:e2e_request_latency_seconds"],
    },
];

/// SGLang, 0.4 and 0.5.
pub const SGLANG: &[StandardName] = &[
    StandardName {
        name: "matrixinfer:generation_tokens_total",
        sources: &["sglang:generation_tokens_total"],
    },
    StandardName {
        name: "matrixinfer:num_requests_waiting",
        sources: &["sglang:num_queue_reqs"],
    },
    StandardName {
        name: "matrixinfer:time_to_first_token_seconds",
        sources: &["sglang:time_to_first_token_seconds"],
    },
    StandardName {
        name: "matrixinfer:time_per_output_token_seconds",
        // 0.5 renamed the histogram; 0.4 only has the second name.
        sources: &[
            "sglang:inter_token_latency_seconds",
            "sglang:time_per_output_token_seconds",
        ],
    },
    StandardName {
        name: "matrixinfer:e2e_request_latency_seconds",
        sources: &["sglang:e2e_request_latency_seconds"],
    },
];

/// Where a family's standardized copy goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// Index of the standard name in its table.
    pub slot: usize,
    /// Index of the source in that name's preference list (0 = preferred).
    pub rank: usize,
    /// The family name the copy carries: the standard name, without
    /// `_total` when the source family was declared without it.
    pub family: &'static str,
}

/// Finds the standard name that `family` (a family name as a TYPE/HELP line
/// or a bare sample spells it) feeds, if any.
pub fn lookup(table: &'static [StandardName], family: &[u8]) -> Option<Match> {
    for (slot, standard) in table.iter().enumerate() {
        for (rank, source) in standard.sources.iter().enumerate() {
            let source = source.as_bytes();
            if family == source {
                return Some(Match {
                    slot,
                    rank,
                    family: standard.name,
                });
            }
            // `# TYPE vllm:generation_tokens counter` with `_total` samples.
            if source.strip_suffix(b"_total") == Some(family) {
                let name = standard.name;
                let family = name.strip_suffix("_total").unwrap_or(name);
                return Some(Match { slot, rank, family });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let m = |f: &str| lookup(VLLM, f.as_bytes()).map(|m| (m.slot, m.rank, m.family));
        assert_eq!(
            m("vllm:generation_tokens_total"),
            Some((0, 0, "matrixinfer:generation_tokens_total"))
        );
        assert_eq!(
            m("vllm:generation_tokens"),
            Some((0, 0, "matrixinfer:generation_tokens"))
        );
        assert_eq!(
            m("vllm:inter_token_latency_seconds"),
            Some((3, 1, "matrixinfer:time_per_output_token_seconds"))
        );
        assert_eq!(m("vllm:generation_tokens_created"), None);
        assert_eq!(m("vllm:num_requests_waiting_by_reason"), None);
        assert_eq!(m("vllm:num_requests"), None);
        let s = |f: &str| lookup(SGLANG, f.as_bytes()).map(|m| (m.slot, m.rank));
        assert_eq!(s("sglang:num_queue_reqs"), Some((1, 0)));
        assert_eq!(s("sglang:time_per_output_token_seconds"), Some((3, 1)));
        assert_eq!(s("vllm:num_requests_waiting"), None);
    }

    #[test]
    fn every_table_is_complete() {
        for table in [VLLM, SGLANG] {
            let names: Vec<_> = table.iter().map(|s| s.name).collect();
            assert_eq!(
                names,
                [
                    "matrixinfer:generation_tokens_total",
                    "matrixinfer:num_requests_waiting",
                    "matrixinfer:time_to_first_token_seconds",
                    "matrixinfer:time_per_output_token_seconds",
                    "matrixinfer:e2e_request_latency_seconds",
                ]
            );
        }
    }
}
