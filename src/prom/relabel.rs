//! The relabeler: every engine line out as it came in, plus one standardized
//! copy of each family the standard table names.
//!
//! Original bytes are written through as soon as the scanner has cut them
//! into lines, so the response streams while the engine is still sending;
//! they go out as runs of whole lines, slices of the engine's chunk, not
//! line by line.
//! Copies cannot stream the same way: a family must be contiguous and
//! declared once, yet the preferred source of a standard name may come
//! after its fallback, and a family may be split into several groups
//! (multiprocess exposition). So each standard name collects the copy of
//! the one source it uses in a small buffer, and [`Relabeler::finish`]
//! writes the buffers after the last engine line. Only the few families in
//! the table are ever copied; everything else costs one classification.
//!
//! The relabeler writes through a [`FamilySink`]: it announces each family
//! as it starts and hands over its lines; the sink emits them or diverts
//! them (the filter stage, [`crate::filter::Routes`]). A plain `Vec<u8>`
//! emits everything.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::ops::Range;

use super::line::{Line, MetricType, classify, classify_head, labels_end, sample_of};
use super::name_hash::{Prehashed, name_hash};
use super::scan::{LineScanner, Piece};
use super::standard::{self, StandardName};

/// Default cap on one standard family's copy; a source family larger than
/// this is not copied in that scrape (its original lines still are).
pub const DEFAULT_MAX_COPY_BYTES: usize = 8 * 1024 * 1024;

/// The longest run of lines written in one piece. Uncapped, a run was a
/// whole family (hundreds of KB for a large histogram), copied long after
/// its lines were read and out of the cache: the 1 MB payload relabeled
/// 7% slower than line by line. Capped, 100 KB payloads relabel 8-12%
/// faster than line by line and 1 MB ones as fast (`relabel` benchmark).
const MAX_RUN: usize = 16 * 1024;

/// Streams one exposition through the standardization rules.
///
/// A `Relabeler` is reused across scrapes: [`Relabeler::reset`] clears its
/// state but keeps its buffers, so a warm worker allocates nothing per
/// scrape.
#[derive(Debug)]
pub struct Relabeler {
    scanner: LineScanner,
    state: State,
}

#[derive(Debug)]
struct State {
    sources: standard::Sources,
    family: Family,
    /// One per entry of `table`, in table order.
    copies: Vec<Copy>,
    /// Which copy buffer the rest of a long line goes to, if any.
    long_copy: Option<(usize, Part)>,
    /// Lines of the chunk being fed that go out as they came, not written
    /// yet: a range of the chunk, written in one piece when a line breaks
    /// the run (another family, a held `# EOF`, a line not in the chunk)
    /// or the chunk ends. A line is passed on as a slice of the chunk,
    /// never copied alone.
    run: Range<usize>,
    /// A `# EOF` line, held back so that it stays the last line.
    eof: Vec<u8>,
    /// Whether the output so far ends at a line boundary.
    at_line_start: bool,
    max_copy_bytes: usize,
    dropped_copies: u64,
}

/// Where the relabeler's output goes, family by family.
pub trait FamilySink {
    /// The family called `name` starts: the lines written until the next
    /// call belong to it.
    fn family(&mut self, name: &[u8]);
    /// Appends bytes of the current family's lines; true when they went
    /// to the output, false when they were diverted.
    fn write(&mut self, bytes: &[u8]) -> bool;
    /// The output itself, for what belongs to no family (a held `# EOF`,
    /// the newline after an unterminated last line).
    fn output(&mut self) -> &mut Vec<u8>;
    /// The engine's lines are over (the standardized copies follow):
    /// whatever was diverted must end with a newline, so that a copy does
    /// not run on from an unterminated last line.
    fn end_of_lines(&mut self) {}
}

/// Everything to the output.
impl FamilySink for Vec<u8> {
    #[inline]
    fn family(&mut self, _name: &[u8]) {}

    #[inline]
    fn write(&mut self, bytes: &[u8]) -> bool {
        self.extend_from_slice(bytes);
        true
    }

    #[inline]
    fn output(&mut self) -> &mut Vec<u8> {
        self
    }
}

/// The family the current line belongs to.
#[derive(Debug, Default)]
struct Family {
    /// Its name as declared, or the bare sample name for a family without
    /// metadata. Empty before the first family.
    name: Vec<u8>,
    kind: Option<MetricType>,
    has_help: bool,
    /// Started by a HELP or TYPE line rather than by a bare sample.
    declared: bool,
    /// Where its standardized copy goes.
    target: Option<Target>,
}

#[derive(Clone, Copy, Debug)]
struct Target {
    slot: usize,
    /// The family name the copy carries.
    family: &'static str,
}

/// The standardized copy of one standard name, being collected.
#[derive(Debug, Default)]
struct Copy {
    /// Preference rank of the source being copied; `None` before one is seen.
    rank: Option<usize>,
    /// The family name the copy carries.
    family: &'static str,
    help: Vec<u8>,
    type_line: Vec<u8>,
    samples: Vec<u8>,
    /// Hashes of the series already copied, so that a source repeating a
    /// series (a split family, a misbehaving engine) cannot make the
    /// standard family carry duplicates.
    series: HashSet<u64, BuildHasherDefault<Prehashed>>,
    overflowed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Help,
    Type,
    Samples,
}

impl Relabeler {
    /// A relabeler for one engine's table.
    pub fn new(table: &'static [StandardName]) -> Relabeler {
        Relabeler::with_window(table, super::scan::DEFAULT_WINDOW)
    }

    /// A relabeler whose scanner collects lines of up to `window` bytes;
    /// longer lines stream through in pieces (see [`LineScanner`]).
    pub fn with_window(table: &'static [StandardName], window: usize) -> Relabeler {
        Relabeler {
            scanner: LineScanner::new(window),
            state: State {
                sources: standard::Sources::new(table),
                family: Family::default(),
                copies: table.iter().map(|_| Copy::default()).collect(),
                long_copy: None,
                run: 0..0,
                eof: Vec::new(),
                at_line_start: true,
                max_copy_bytes: DEFAULT_MAX_COPY_BYTES,
                dropped_copies: 0,
            },
        }
    }

    /// Sets the cap on one standard family's copy.
    pub fn max_copy_bytes(&mut self, bytes: usize) -> &mut Relabeler {
        self.state.max_copy_bytes = bytes;
        self
    }

    /// Prepares for the next scrape, keeping allocations.
    pub fn reset(&mut self) {
        self.scanner.reset();
        let s = &mut self.state;
        s.family.name.clear();
        s.family.kind = None;
        s.family.has_help = false;
        s.family.declared = false;
        s.family.target = None;
        for copy in &mut s.copies {
            copy.clear();
        }
        s.long_copy = None;
        s.run = 0..0;
        s.eof.clear();
        s.at_line_start = true;
        s.dropped_copies = 0;
    }

    /// Feeds the next chunk of the engine's body; the original lines it
    /// completes are written to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut impl FamilySink) {
        let state = &mut self.state;
        self.scanner
            .feed(chunk, |piece| state.piece(piece, chunk, out));
        state.flush(chunk, out);
    }

    /// Ends the body: writes any unterminated last line, the standardized
    /// families, whatever `append` writes (the sidecar's own metrics), and
    /// a held `# EOF` last.
    pub fn finish(&mut self, out: &mut impl FamilySink, append: impl FnOnce(&mut Vec<u8>)) {
        self.finish_body(out);
        append(out.output());
        self.close(out.output());
    }

    /// Ends the engine's body: its unterminated last line, then the
    /// standardized families, each announced to `out` like any other. What
    /// the caller appends next is followed by [`close`].
    ///
    /// [`close`]: Relabeler::close
    pub fn finish_body(&mut self, out: &mut impl FamilySink) {
        let state = &mut self.state;
        // The unterminated last line is the scanner's, in no chunk.
        self.scanner.finish(|piece| state.piece(piece, &[], out));
        if !state.at_line_start {
            out.output().push(b'\n');
            state.at_line_start = true;
        }
        out.end_of_lines();
        for copy in &state.copies {
            if copy.rank.is_none() || copy.overflowed {
                continue;
            }
            out.family(copy.family.as_bytes());
            out.write(&copy.help);
            out.write(&copy.type_line);
            out.write(&copy.samples);
        }
    }

    /// Writes a held `# EOF` (the last line of an OpenMetrics body).
    pub fn close(&mut self, out: &mut Vec<u8>) {
        let eof = &self.state.eof;
        if !eof.is_empty() {
            out.extend_from_slice(eof);
            if eof.last() != Some(&b'\n') {
                out.push(b'\n');
            }
        }
    }

    /// Standard families left out of this scrape because their source was
    /// larger than the copy cap.
    pub fn dropped_copies(&self) -> u64 {
        self.state.dropped_copies
    }
}

/// Relabels a whole payload at once (tests, benchmarks, fuzzing).
///
/// ```
/// use matrixinfer_runtime::prom::{relabel_all, standard::VLLM};
///
/// let engine = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 3.0\n";
/// let out = String::from_utf8(relabel_all(VLLM, engine.as_bytes())).unwrap();
/// let copy = "# TYPE matrixinfer:num_requests_waiting gauge\nmatrixinfer:num_requests_waiting{model_name=\"m\"} 3.0\n";
/// assert_eq!(out, format!("{engine}{copy}"));
/// ```
pub fn relabel_all(table: &'static [StandardName], input: &[u8]) -> Vec<u8> {
    let mut relabeler = Relabeler::new(table);
    let mut out = Vec::with_capacity(input.len() + input.len() / 8);
    relabeler.feed(input, &mut out);
    relabeler.finish(&mut out, |_| {});
    out
}

// === impl State ===

impl State {
    /// Takes one piece of `chunk` (or of the scanner's own buffer).
    fn piece(&mut self, piece: Piece<'_>, chunk: &[u8], out: &mut impl FamilySink) {
        match piece {
            Piece::Line(line) => {
                let content = line.strip_suffix(b"\n").unwrap_or(line);
                if let Some(name_end) = self.continues_family(content) {
                    // The common case, kept short: one more sample of the
                    // current family.
                    if !self.eof.is_empty() {
                        self.flush(chunk, out);
                        self.release_eof(out);
                    }
                    self.pass(line, chunk, out);
                    if self.family.target.is_some() {
                        self.copy_sample(content, line, 0, name_end, true);
                    }
                    return;
                }
                // What follows may start a family or write out of turn:
                // the run so far goes first.
                self.flush(chunk, out);
                let kind = classify(content);
                if kind == Line::Eof {
                    self.release_eof(out);
                    self.eof.extend_from_slice(line);
                    return;
                }
                self.release_eof(out);
                self.apply(content, line, kind, true, out);
                self.pass(line, chunk, out);
            }
            Piece::Head(head) => {
                self.flush(chunk, out);
                self.release_eof(out);
                self.apply(head, head, classify_head(head), false, out);
                self.write(head, out);
            }
            Piece::Tail { bytes, end } => {
                self.flush(chunk, out);
                self.write(bytes, out);
                if let Some((slot, part)) = self.long_copy {
                    let copy = &mut self.copies[slot];
                    let buf = copy.part(part);
                    buf.extend_from_slice(bytes);
                    if end && buf.last() != Some(&b'\n') {
                        buf.push(b'\n');
                    }
                    self.check_size(slot);
                }
                if end {
                    self.long_copy = None;
                }
            }
        }
    }

    /// Passes `line` on as it came: into the run when it is the next line
    /// of `chunk`, otherwise (the run is long enough, or the line is one
    /// the scanner put together across chunks) after the run is written.
    #[inline(always)]
    fn pass(&mut self, line: &[u8], chunk: &[u8], out: &mut impl FamilySink) {
        let at = (line.as_ptr() as usize).wrapping_sub(chunk.as_ptr() as usize);
        // The run lies in the chunk, so a line starting where it ends and
        // no longer than what is left of the chunk is the chunk's next line.
        if at == self.run.end && line.len() <= chunk.len() - at && self.run.len() < MAX_RUN {
            self.run.end += line.len();
        } else {
            self.start_run(line, chunk, out);
        }
    }

    #[inline(never)]
    fn start_run(&mut self, line: &[u8], chunk: &[u8], out: &mut impl FamilySink) {
        self.flush(chunk, out);
        match offset_in(chunk, line) {
            Some(at) => self.run = at..at + line.len(),
            None => self.write(line, out),
        }
    }

    /// Writes the run of lines of `chunk` not written yet.
    #[inline]
    fn flush(&mut self, chunk: &[u8], out: &mut impl FamilySink) {
        if !self.run.is_empty() {
            let run = std::mem::replace(&mut self.run, 0..0);
            self.write(&chunk[run], out);
        }
    }

    /// If `content` is a sample of the current family, where its name ends.
    #[inline]
    fn continues_family(&self, content: &[u8]) -> Option<usize> {
        let kind = self.family.kind.unwrap_or(MetricType::Untyped);
        sample_of(content, &self.family.name, kind)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8], out: &mut impl FamilySink) {
        if out.write(bytes)
            && let Some(&last) = bytes.last()
        {
            self.at_line_start = last == b'\n';
        }
    }

    /// Lines after a `# EOF` are not OpenMetrics, but they must keep their
    /// order: the terminator goes out where it was.
    fn release_eof(&mut self, out: &mut impl FamilySink) {
        if !self.eof.is_empty() {
            out.output().extend_from_slice(&self.eof);
            self.at_line_start = self.eof.last() == Some(&b'\n');
            self.eof.clear();
        }
    }

    /// Updates the family state with one line and copies it if its family
    /// is being standardized. `content` is the line without its `\n`;
    /// `line` is what was written out; `whole` is false for the head of a
    /// long line.
    fn apply(
        &mut self,
        content: &[u8],
        line: &[u8],
        kind: Line,
        whole: bool,
        out: &mut impl FamilySink,
    ) {
        match kind {
            Line::Help { name } => {
                let same = self.family.declared
                    && !self.family.has_help
                    && self.family.name == content[name.clone()];
                if !same {
                    self.enter(&content[name.clone()], true, out);
                }
                self.family.has_help = true;
                self.copy_metadata(Part::Help, line, name.start, name.end, whole);
            }
            Line::Type { name, kind } => {
                let same = self.family.declared
                    && self.family.kind.is_none()
                    && self.family.name == content[name.clone()];
                if !same {
                    self.enter(&content[name.clone()], true, out);
                }
                self.family.kind = Some(kind);
                self.copy_metadata(Part::Type, line, name.start, name.end, whole);
            }
            Line::Sample { name } => {
                let sample = &content[name.clone()];
                let kind = self.family.kind.unwrap_or(MetricType::Untyped);
                if self.family.name.is_empty() || !kind.owns(&self.family.name, sample) {
                    self.enter(sample, false, out);
                }
                self.copy_sample(content, line, name.start, name.end, whole);
            }
            Line::Blank | Line::Comment | Line::Eof | Line::Malformed => {}
        }
    }

    /// Starts a new family called `name`, and decides whether it is the
    /// source whose copy a standard name will carry.
    fn enter(&mut self, name: &[u8], declared: bool, out: &mut impl FamilySink) {
        out.family(name);
        let family = &mut self.family;
        family.name.clear();
        family.name.extend_from_slice(name);
        family.kind = None;
        family.has_help = false;
        family.declared = declared;
        family.target = self.sources.lookup(name).and_then(|m| {
            let copy = &mut self.copies[m.slot];
            match copy.rank {
                // A more preferred source than the one collected so far:
                // it replaces it, wherever it comes in the payload.
                Some(rank) if m.rank < rank => copy.clear(),
                // The same source again: its family was split.
                Some(rank) if m.rank == rank => {}
                Some(_) => return None,
                None => {}
            }
            copy.rank = Some(m.rank);
            copy.family = m.family;
            Some(Target {
                slot: m.slot,
                family: m.family,
            })
        });
    }

    fn copy_metadata(&mut self, part: Part, line: &[u8], start: usize, end: usize, whole: bool) {
        let Some(target) = self.family.target else {
            return;
        };
        let copy = &mut self.copies[target.slot];
        if copy.overflowed || !copy.part(part).is_empty() {
            // Declared once: a split family's second HELP/TYPE is not copied.
            return;
        }
        copy_renamed(copy.part(part), line, start, end, target.family, whole);
        if !whole {
            self.long_copy = Some((target.slot, part));
        }
        self.check_size(target.slot);
    }

    fn copy_sample(&mut self, content: &[u8], line: &[u8], start: usize, end: usize, whole: bool) {
        let Some(target) = self.family.target else {
            return;
        };
        let copy = &mut self.copies[target.slot];
        if copy.overflowed {
            return;
        }
        // The series is the sample name's suffix after the family name
        // plus its label set.
        let suffix = start + self.family.name.len();
        if whole {
            if !copy
                .series
                .insert(name_hash(&content[suffix..labels_end(content, end)]))
            {
                return;
            }
        } else {
            self.long_copy = Some((target.slot, Part::Samples));
        }
        copy_renamed(&mut copy.samples, line, start, suffix, target.family, whole);
        self.check_size(target.slot);
    }

    fn check_size(&mut self, slot: usize) {
        let copy = &mut self.copies[slot];
        if copy.help.len() + copy.type_line.len() + copy.samples.len() > self.max_copy_bytes {
            copy.overflowed = true;
            copy.help.clear();
            copy.type_line.clear();
            copy.samples = Vec::new();
            self.dropped_copies += 1;
            if self.long_copy.is_some_and(|(s, _)| s == slot) {
                self.long_copy = None;
            }
        }
    }
}

/// Where `line` starts in `chunk`, if it is a slice of it (a line the
/// scanner cut out of the chunk rather than one it put together).
#[inline]
fn offset_in(chunk: &[u8], line: &[u8]) -> Option<usize> {
    let at = (line.as_ptr() as usize).wrapping_sub(chunk.as_ptr() as usize);
    (at <= chunk.len() && line.len() <= chunk.len() - at && !line.is_empty()).then_some(at)
}

/// Appends `line` to `buf` with `line[start..end]` replaced by `name`. A
/// whole line always ends with `\n` in the copy, even the stream's last
/// line that had none; the head of a long line does not, its tail follows.
fn copy_renamed(buf: &mut Vec<u8>, line: &[u8], start: usize, end: usize, name: &str, whole: bool) {
    buf.extend_from_slice(&line[..start]);
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(&line[end..]);
    if whole && buf.last() != Some(&b'\n') {
        buf.push(b'\n');
    }
}

// === impl Copy ===

impl Copy {
    fn clear(&mut self) {
        self.rank = None;
        self.help.clear();
        self.type_line.clear();
        self.samples.clear();
        self.series.clear();
        self.overflowed = false;
    }

    fn part(&mut self, part: Part) -> &mut Vec<u8> {
        match part {
            Part::Help => &mut self.help,
            Part::Type => &mut self.type_line,
            Part::Samples => &mut self.samples,
        }
    }
}

#[cfg(test)]
mod tests;
