//! The relabeler's side of the `FamilySink`: families announced and
//! diverted whole, as the filter stage's routes take them, and lines
//! handed over as runs of the engine's chunk.

use super::*;

/// Diverts the families whose names start with a prefix, and records
/// every family announced, as the filter stage's routes do.
struct ByPrefix {
    prefix: &'static str,
    out: Vec<u8>,
    diverted: Vec<u8>,
    current: bool,
    seen: Vec<(String, bool)>,
}

impl FamilySink for ByPrefix {
    fn family(&mut self, name: &[u8]) {
        self.current = name.starts_with(self.prefix.as_bytes());
        self.seen
            .push((String::from_utf8_lossy(name).into_owned(), self.current));
    }
    fn write(&mut self, bytes: &[u8]) -> bool {
        match self.current {
            true => self.diverted.extend_from_slice(bytes),
            false => self.out.extend_from_slice(bytes),
        }
        !self.current
    }
    fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
    fn end_of_lines(&mut self) {
        if self.diverted.last().is_some_and(|&b| b != b'\n') {
            self.diverted.push(b'\n');
        }
    }
}

impl ByPrefix {
    fn seen_route(&self, name: &str) -> Option<Option<usize>> {
        self.seen
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|&(_, diverted)| diverted.then_some(0))
    }
}

#[test]
fn routed_families_are_diverted_whole() {
    let input = "\
# HELP vllm:num_requests_waiting Waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{a=\"1\"} 1
vllm:num_requests_waiting{a=\"2\"} 2
# TYPE other gauge
other 3
";
    for router in ["vllm:", "matrixinfer:"] {
        for chunk in [1, 7, 1000] {
            let mut relabeler = Relabeler::new(VLLM);
            let mut sink = ByPrefix {
                prefix: router,
                out: Vec::new(),
                diverted: Vec::new(),
                current: false,
                seen: Vec::new(),
            };
            for piece in input.as_bytes().chunks(chunk) {
                relabeler.feed(piece, &mut sink);
            }
            relabeler.finish_body(&mut sink);
            let out = String::from_utf8(sink.out.clone()).unwrap();
            let diverted = String::from_utf8(sink.diverted.clone()).unwrap();
            let original = &input[..input.find("# TYPE other").unwrap()];
            let copy = "# HELP matrixinfer:num_requests_waiting Waiting.\n# TYPE matrixinfer:num_requests_waiting gauge\n\
                        matrixinfer:num_requests_waiting{a=\"1\"} 1\nmatrixinfer:num_requests_waiting{a=\"2\"} 2\n";
            if router == "vllm:" {
                assert_eq!(diverted, original, "chunk {chunk}");
                assert_eq!(out, format!("# TYPE other gauge\nother 3\n{copy}"));
                assert_eq!(sink.seen_route("vllm:num_requests_waiting"), Some(Some(0)));
            } else {
                assert_eq!(diverted, copy);
                assert_eq!(out, input);
                assert_eq!(
                    sink.seen_route("matrixinfer:num_requests_waiting"),
                    Some(Some(0))
                );
            }
            assert_eq!(sink.seen_route("other"), Some(None));
            assert_eq!(sink.seen_route("absent"), None);
        }
    }
}

/// The rule the SDK shares (`expo::MetricType::owns`): a sample named
/// exactly like a histogram is not one of its samples, so the relabeler
/// announces it as a family of its own (as Prometheus reads it).
#[test]
fn a_histograms_bare_name_starts_a_family_of_its_own() {
    let input = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\nh 2\n";
    let mut sink = ByPrefix {
        prefix: "none",
        out: Vec::new(),
        diverted: Vec::new(),
        current: false,
        seen: Vec::new(),
    };
    let mut relabeler = Relabeler::new(VLLM);
    relabeler.feed(input.as_bytes(), &mut sink);
    relabeler.finish_body(&mut sink);
    let names: Vec<&str> = sink.seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["h", "h"]);
    assert_eq!(sink.out, input.as_bytes());
}

/// A diverted family whose last line has no newline: the standardized
/// copies that follow it into the same filter start on a line of their own.
#[test]
fn copies_never_run_on_from_an_unterminated_diverted_line() {
    let input = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 2";
    for chunk in [1, 5, 1000] {
        let mut sink = ByPrefix {
            prefix: "",
            out: Vec::new(),
            diverted: Vec::new(),
            current: false,
            seen: Vec::new(),
        };
        let mut relabeler = Relabeler::new(VLLM);
        for piece in input.as_bytes().chunks(chunk) {
            relabeler.feed(piece, &mut sink);
        }
        relabeler.finish_body(&mut sink);
        let diverted = String::from_utf8(sink.diverted).unwrap();
        assert_eq!(
            diverted,
            format!(
                "{input}\n# TYPE matrixinfer:num_requests_waiting gauge\nmatrixinfer:num_requests_waiting 2\n"
            ),
            "chunk {chunk}"
        );
        assert!(sink.out.is_empty());
    }
}

/// Records each write as the address and length it was given.
#[derive(Default)]
struct Writes {
    out: Vec<u8>,
    writes: Vec<(usize, usize)>,
}

impl FamilySink for Writes {
    fn family(&mut self, _name: &[u8]) {}

    fn write(&mut self, bytes: &[u8]) -> bool {
        self.writes.push((bytes.as_ptr() as usize, bytes.len()));
        self.out.extend_from_slice(bytes);
        true
    }

    fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
}

/// Lines go out as slices of the engine's chunk, a run of them per write,
/// not copied line by line; a run stops at a family's start, at the end of
/// the chunk and at its cap, and a line put together across chunks goes
/// out on its own. Whatever the chunking, the output is the input.
#[test]
fn lines_pass_as_runs_of_the_chunk() {
    let mut input = String::from("# TYPE a gauge\n");
    for i in 0..2000 {
        input.push_str(&format!("a{{i=\"{i}\"}} {i}\n"));
    }
    input.push_str("# TYPE b counter\nb_total 1\nb_total{x=\"y\"} 2\n");
    let bytes = input.as_bytes();

    let mut relabeler = Relabeler::new(VLLM);
    let mut sink = Writes::default();
    relabeler.feed(bytes, &mut sink);
    relabeler.finish_body(&mut sink);
    assert_eq!(sink.out, bytes);
    let chunk = bytes.as_ptr_range();
    for &(at, len) in &sink.writes {
        assert!(
            chunk.contains(&(at as *const u8)),
            "a write not from the chunk"
        );
        assert!(len <= MAX_RUN + 64, "a run of {len} bytes past the cap");
    }
    // Family a: its ~30 KB in runs of up to the cap; family b: one run.
    let expected = bytes.len().div_ceil(MAX_RUN) + 1;
    assert!(
        sink.writes.len() <= expected,
        "{} writes for {} bytes (at most {expected})",
        sink.writes.len(),
        bytes.len()
    );

    for size in [1, 7, 100, 4096] {
        let mut relabeler = Relabeler::new(VLLM);
        let mut sink = Writes::default();
        for piece in bytes.chunks(size) {
            relabeler.feed(piece, &mut sink);
        }
        relabeler.finish_body(&mut sink);
        assert_eq!(sink.out, bytes, "chunks of {size}");
    }
}
