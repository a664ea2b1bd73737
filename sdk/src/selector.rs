//! Selectors: which families a filter wants.
//!
//! A selector is an exact family name, or a prefix ending with `*`; `*`
//! alone selects everything. The runtime matches them against each family's
//! name; filters can use [`matches`] to re-check, and [`parse_list`] to read
//! a list of selectors from their config.

/// Whether `family` matches any of `selectors`.
///
/// ```
/// use matrixinfer_filter::matches;
/// assert!(matches(&["vllm:*"], "vllm:num_requests_running"));
/// assert!(matches(&["*"], "anything"));
/// assert!(matches(&["a", "b"], "b"));
/// assert!(!matches(&["vllm:num_requests"], "vllm:num_requests_running"));
/// assert!(!matches::<&str>(&[], "a"));
/// ```
pub fn matches<S: AsRef<str>>(selectors: &[S], family: &str) -> bool {
    selectors
        .iter()
        .any(|s| match s.as_ref().strip_suffix('*') {
            Some(prefix) => family.starts_with(prefix),
            None => s.as_ref() == family,
        })
}

/// Splits a list of selectors separated by newlines or commas, trimming
/// blanks and skipping empty entries; `["*"]` when none is left.
///
/// ```
/// use matrixinfer_filter::parse_list;
/// assert_eq!(parse_list("vllm:*, sglang:*\nx\n"), ["vllm:*", "sglang:*", "x"]);
/// assert_eq!(parse_list("  "), ["*"]);
/// ```
pub fn parse_list(text: &str) -> Vec<String> {
    let list: Vec<String> = text
        .split(['\n', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        vec!["*".to_owned()]
    } else {
        list
    }
}

/// Checks that `selector` is a metric name, optionally followed by `*`, or
/// `*`; the `Err` says what is wrong.
pub(crate) fn check(selector: &str) -> Result<(), String> {
    let name = selector.strip_suffix('*').unwrap_or(selector);
    let name_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    let prefix_ok = name.is_empty() || !name.starts_with(|c: char| c.is_ascii_digit());
    if selector.is_empty() || !name_chars || !prefix_ok {
        return Err(format!(
            "invalid selector {selector:?}: expected a family name, a prefix ending with *, or *"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let s = ["vllm:*".to_owned(), "sglang:num_queue_reqs".to_owned()];
        assert!(matches(&s, "vllm:"));
        assert!(matches(&s, "vllm:x"));
        assert!(matches(&s, "sglang:num_queue_reqs"));
        assert!(!matches(&s, "sglang:num_queue_reqs_total"));
        assert!(!matches(&s, "vll"));
        assert!(matches(&["*"], ""));
    }

    #[test]
    fn checking() {
        for ok in ["*", "a", "vllm:*", "vllm:num_requests_running", "_x*"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in ["", "**", "a*b", "a b", "1a", "a\n", "vllm:*x", "a-b"] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
    }
}
