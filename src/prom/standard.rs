//! The standard `matrixinfer:*` vocabulary and where each name comes from.
//!
//! This table is the product contract of DESIGN.md section 3: for each
//! standard name, the engine families that may feed it, in order of
//! preference. Exactly one of them is used per scrape. The prefix is a
//! setting (`--metric-prefix`): upstream renamed it `kthena`, with the same
//! five names and labels; [`with_prefix`] gives the table under another.

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

/// The prefix the tables above are written with (DESIGN.md's default).
pub const DEFAULT_PREFIX: &str = "matrixinfer";

/// A `--metric-prefix` that cannot start standard names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not the start of a metric name.
    #[error(
        "{0:?} cannot start a metric name: use letters, digits, '_' and ':', not starting with a digit"
    )]
    Invalid(String),
    /// It would put standard names among the runtime's own.
    #[error("{0:?} would name standard metrics like the runtime's own matrixinfer_runtime_*")]
    Reserved(String),
    /// A standard name would be an engine's own family (the copy would be
    /// a second family of the same name, and Prometheus rejects that).
    #[error("{prefix:?} would name a standard metric {name}, which the engine already exposes")]
    Collides {
        /// The prefix.
        prefix: String,
        /// The colliding name.
        name: String,
    },
}

/// Checks a `--metric-prefix` (a trailing `:` is allowed and dropped) and
/// returns it as standard names will carry it, without the `:`.
pub fn check_prefix(prefix: &str) -> Result<String, PrefixError> {
    let bare = prefix.strip_suffix(':').unwrap_or(prefix);
    let valid = !bare.is_empty()
        && !bare.as_bytes()[0].is_ascii_digit()
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
    if !valid {
        return Err(PrefixError::Invalid(prefix.to_owned()));
    }
    if bare.starts_with("matrixinfer_runtime") {
        return Err(PrefixError::Reserved(prefix.to_owned()));
    }
    for table in [VLLM, SGLANG] {
        for standard in table {
            let rest = &standard.name[DEFAULT_PREFIX.len() + 1..];
            let name = format!("{bare}:{rest}");
            if table
                .iter()
                .flat_map(|s| s.sources.iter())
                .any(|source| *source == name)
            {
                return Err(PrefixError::Collides {
                    prefix: prefix.to_owned(),
                    name,
                });
            }
        }
    }
    Ok(bare.to_owned())
}

/// `table` with its standard names under `prefix` (as [`check_prefix`]
/// returns it). Built once at start: the names live as long as the
/// process, as the built-in tables do.
pub fn with_prefix(table: &'static [StandardName], prefix: &str) -> &'static [StandardName] {
    if prefix == DEFAULT_PREFIX {
        return table;
    }
    let renamed: Vec<StandardName> = table
        .iter()
        .map(|standard| {
            let rest = standard
                .name
                .strip_prefix(DEFAULT_PREFIX)
                .and_then(|rest| rest.strip_prefix(':'))
                .unwrap_or(standard.name);
            StandardName {
                name: Box::leak(format!("{prefix}:{rest}").into_boxed_str()),
                sources: standard.sources,
            }
        })
        .collect();
    Box::leak(renamed.into_boxed_slice())
}

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

/// A table's sources and the lengths of the family names that can match
/// one, so that the families that feed no standard name (all but a few of
/// a payload's hundreds) are passed over with one bit test instead of a
/// compare with every source.
#[derive(Clone, Copy, Debug)]
pub struct Sources {
    table: &'static [StandardName],
    /// Bit `n % 64` set for each length `n` that [`lookup`] can match.
    lengths: u64,
}

impl Sources {
    /// The sources of `table`.
    pub fn new(table: &'static [StandardName]) -> Sources {
        let mut lengths = 0u64;
        for source in table.iter().flat_map(|s| s.sources.iter()) {
            lengths |= 1 << (source.len() % 64);
            if let Some(bare) = source.strip_suffix("_total") {
                lengths |= 1 << (bare.len() % 64);
            }
        }
        Sources { table, lengths }
    }

    /// [`lookup`] in this table.
    #[inline]
    pub fn lookup(&self, family: &[u8]) -> Option<Match> {
        if self.lengths & (1 << (family.len() % 64)) == 0 {
            return None;
        }
        lookup(self.table, family)
    }
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

    /// The length filter passes every name that matches and turns away
    /// names of other lengths, whatever the table.
    #[test]
    fn source_lengths() {
        for table in [VLLM, SGLANG, with_prefix(VLLM, "kthena")] {
            let sources = Sources::new(table);
            for source in table.iter().flat_map(|s| s.sources.iter()) {
                let bare = source.strip_suffix("_total").unwrap_or(source);
                for name in [*source, bare] {
                    assert!(sources.lookup(name.as_bytes()).is_some(), "{name}");
                    assert_eq!(
                        sources.lookup(name.as_bytes()),
                        lookup(table, name.as_bytes())
                    );
                }
            }
        }
        let sources = Sources::new(VLLM);
        let length_of_none = (1..64)
            .find(|n| {
                VLLM.iter().flat_map(|s| s.sources.iter()).all(|s| {
                    s.len() % 64 != *n
                        && s.strip_suffix("_total").is_none_or(|b| b.len() % 64 != *n)
                })
            })
            .unwrap();
        assert_eq!(sources.lengths & (1 << length_of_none), 0);
    }

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
    fn prefixes() {
        assert_eq!(check_prefix("kthena").unwrap(), "kthena");
        assert_eq!(check_prefix("kthena:").unwrap(), "kthena");
        assert_eq!(check_prefix("acme:llm").unwrap(), "acme:llm");
        assert_eq!(check_prefix("_x9").unwrap(), "_x9");
        for bad in ["", ":", "9x", "kthe na", "kthena-x", "ünï"] {
            assert!(
                matches!(check_prefix(bad), Err(PrefixError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            check_prefix("matrixinfer_runtime"),
            Err(PrefixError::Reserved(_))
        ));
        for engine in ["vllm", "sglang:"] {
            assert!(
                matches!(check_prefix(engine), Err(PrefixError::Collides { .. })),
                "{engine}"
            );
        }
        let kthena = with_prefix(VLLM, "kthena");
        assert_eq!(kthena[1].name, "kthena:num_requests_waiting");
        assert_eq!(kthena[1].sources, VLLM[1].sources);
        let m = lookup(kthena, b"vllm:generation_tokens").unwrap();
        assert_eq!(m.family, "kthena:generation_tokens");
        assert!(std::ptr::eq(with_prefix(SGLANG, DEFAULT_PREFIX), SGLANG));
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
