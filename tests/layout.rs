//! The shape of `src/` that docs/architecture.md describes, checked so it
//! cannot drift: files owning one concern (no file over ~600 lines), the
//! modules' imports free of cycles, the network layer free of domains, and
//! nothing outside `download/` reaching into a download source.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each file of `src/`: its top-level module and its code before any
/// `#[cfg(test)]` (unit tests may use what they like), comments dropped.
fn modules() -> Vec<(String, PathBuf, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(src()).unwrap();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let top = top.trim_end_matches(".rs").to_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let code: String = text
                .lines()
                .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            (top, path, code)
        })
        .collect()
}

/// Top-level modules each module names through `crate::` (in `use` lists
/// too: `crate::{a, b}`).
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (top, _, code) in modules() {
        if top == "lib" || top == "main" {
            continue;
        }
        let mut rest = code.as_str();
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names: Vec<&str> = if let Some(list) = rest.strip_prefix('{') {
                let end = list.find('}').unwrap_or(list.len());
                list[..end]
                    .split(',')
                    .map(|n| n.trim().split("::").next().unwrap_or("").trim())
                    .collect()
            } else {
                vec![
                    rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or(""),
                ]
            };
            for name in names {
                if !name.is_empty() && name != top && name != "self" {
                    edges
                        .entry(top.clone())
                        .or_default()
                        .insert(name.to_owned());
                }
            }
        }
    }
    edges
}

#[test]
fn no_file_in_src_is_over_600_lines() {
    let long: Vec<String> = modules()
        .into_iter()
        .filter_map(|(_, path, _)| {
            let lines = std::fs::read_to_string(&path).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these by concern: {long:?}");
}

#[test]
fn modules_import_each_other_without_cycles() {
    let edges = edges();
    // Depth-first search for a path back to where it started.
    fn reaches(
        edges: &BTreeMap<String, BTreeSet<String>>,
        from: &str,
        to: &str,
        seen: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> bool {
        for next in edges.get(from).into_iter().flatten() {
            path.push(next.clone());
            if next == to || (seen.insert(next.clone()) && reaches(edges, next, to, seen, path)) {
                return true;
            }
            path.pop();
        }
        false
    }
    for start in edges.keys() {
        let mut path = vec![start.clone()];
        let found = reaches(&edges, start, start, &mut BTreeSet::new(), &mut path);
        assert!(!found, "import cycle: {}", path.join(" -> "));
    }
    // The check sees imports at all: the metrics path names its stages.
    assert!(edges["pipeline"].contains("upstream") && edges["pipeline"].contains("filter"));
}

#[test]
fn the_network_layer_knows_no_domain_and_sources_stay_in_download() {
    let edges = edges();
    for domain in ["download", "lora", "kv_events", "app", "pipeline", "filter"] {
        assert!(
            !edges["net"].contains(domain),
            "net imports {domain}: the network layer must not know its users"
        );
    }
    let sources = [
        "download::fetch",
        "download::s3",
        "download::hf",
        "download::pvc",
    ];
    for (top, path, code) in modules() {
        // The fuzz properties exercise a source's parsing directly.
        if top == "download" || top == "fuzz_logic" {
            continue;
        }
        for source in sources {
            assert!(
                !code.contains(source),
                "{} reaches into {source}",
                path.display()
            );
        }
    }
}
