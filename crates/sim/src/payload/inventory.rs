//! The engines' metric inventories (`inventory/*.tsv`, AST-extracted from the
//! engine wheels): parsing their rows and resolving their HELP texts.

/// One inventory row (one metric definition).
pub(super) struct Row<'a> {
    /// Name as defined in the engine source.
    pub(super) name: &'a str,
    /// `counter`, `gauge`, `histogram` or `summary`.
    pub(super) kind: &'a str,
    /// Label names, with `[,optional]` groups and `<placeholders>`.
    pub(super) labels: &'a str,
    /// Bucket expression (literal list or Python expression).
    pub(super) buckets: &'a str,
    /// HELP text, verbatim.
    pub(super) help: &'a str,
    /// Defining source file and line.
    pub(super) file: &'a str,
}

/// Parses a tab-separated inventory, locating columns through its `# columns:` header.
pub(super) fn parse_inventory(text: &str) -> Vec<Row<'_>> {
    // Column indices of name, type, labels, buckets, help, file (the documented layout).
    let mut cols = [0usize, 1, 3, 4, 5, 6];
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(header) = line.strip_prefix("# columns:") {
            for (i, col) in header.trim_start().split('\t').enumerate() {
                let slot = match col {
                    c if c.starts_with("defined_name") => 0,
                    c if c.starts_with("type") => 1,
                    c if c.starts_with("labels") => 2,
                    c if c.starts_with("buckets") => 3,
                    c if c.starts_with("help") => 4,
                    c if c.starts_with("file") => 5,
                    _ => continue,
                };
                cols[slot] = i;
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let get = |slot: usize| fields.get(cols[slot]).copied().unwrap_or("");
        let name = get(0).trim();
        if name.is_empty() {
            continue;
        }
        rows.push(Row {
            name,
            kind: get(1).trim(),
            labels: get(2).trim(),
            buckets: get(3).trim(),
            // HELP is kept verbatim, trailing spaces included.
            help: get(4).trim_end_matches(['\r', '\n']),
            file: get(5).trim(),
        });
    }
    rows
}

/// Turns the few f-string HELP texts of the inventory into the text the engine exposes.
pub(super) fn resolve_help(raw: &str) -> String {
    let Some(inner) = raw.strip_prefix("f\"").and_then(|s| s.strip_suffix('"')) else {
        return raw.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut rest = inner;
    while let Some(open) = rest.find('{') {
        let Some(len) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        let expr = &rest[open + 1..open + len];
        if expr.contains("FORWARD_OVERLAP_CATEGORIES") {
            out.push_str("full, partial, none");
        }
        rest = &rest[open + len + 1..];
    }
    out.push_str(rest);
    out
}
