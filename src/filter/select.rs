//! Which families a filter wants: exact names or prefixes ending in `*`.

use std::sync::Arc;

use super::host::CompiledFilter;

/// One selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Exactly this family.
    Exact(Vec<u8>),
    /// Every family starting with this (possibly empty: everything).
    Prefix(Vec<u8>),
}

impl Selector {
    /// Parses one line of a filter's selectors; blank lines give `None`.
    pub fn parse(line: &str) -> Option<Selector> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        Some(match line.strip_suffix('*') {
            Some(prefix) => Selector::Prefix(prefix.as_bytes().to_vec()),
            None => Selector::Exact(line.as_bytes().to_vec()),
        })
    }

    /// Whether it selects `family`.
    pub fn matches(&self, family: &[u8]) -> bool {
        match self {
            Selector::Exact(name) => name == family,
            // `*` is common; no compare for it.
            Selector::Prefix(prefix) => prefix.is_empty() || family.starts_with(prefix),
        }
    }
}

/// Whether any of `selectors` selects `family`. The runtime's own families
/// are never selected.
pub fn selects(selectors: &[Selector], family: &[u8]) -> bool {
    !expo::is_reserved(family) && selectors.iter().any(|s| s.matches(family))
}

/// The filters scrapes use, in order: what a reload swaps whole. It routes
/// each family to the first filter (still on) that selects it.
#[derive(Debug, Default)]
pub struct FilterSet {
    /// The filters, in order.
    pub filters: Vec<Arc<CompiledFilter>>,
    /// Whether switched-off filters still get their families (to drop
    /// them, or fail the scrape), rather than letting them pass.
    pub route_off: bool,
}

impl FilterSet {
    /// The first filter after `after` (or from the start) that selects
    /// `family`.
    pub fn route_from(&self, after: Option<usize>, family: &[u8]) -> Option<usize> {
        let start = after.map_or(0, |i| i + 1);
        (start..self.filters.len()).find(|&i| {
            let filter = &self.filters[i];
            (self.route_off || filter.health.is_on()) && selects(&filter.selectors, family)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection() {
        let selectors: Vec<Selector> = ["vllm:*", "matrixinfer:num_requests_waiting", "", "  "]
            .iter()
            .filter_map(|s| Selector::parse(s))
            .collect();
        assert_eq!(selectors.len(), 2);
        assert!(selects(&selectors, b"vllm:anything"));
        assert!(selects(&selectors, b"matrixinfer:num_requests_waiting"));
        assert!(!selects(
            &selectors,
            b"matrixinfer:num_requests_waiting_total"
        ));
        assert!(!selects(&selectors, b"sglang:x"));
        let everything = [Selector::parse("*").unwrap()];
        assert!(selects(&everything, b"anything"));
        assert!(
            !selects(&everything, b"matrixinfer_runtime_info"),
            "own metrics are never selected"
        );
    }
}
