//! Runs a relabel case under every chunking the network could produce.

use super::relabel::Relabeler;
use super::standard::StandardName;

/// Relabels `input` fed in the given chunks.
pub fn relabel_chunks<'a>(
    table: &'static [StandardName],
    window: usize,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<u8> {
    let mut relabeler = Relabeler::with_window(table, window);
    let mut out = Vec::new();
    for chunk in chunks {
        relabeler.feed(chunk, &mut out);
    }
    relabeler.finish(&mut out, |_| {});
    out
}

/// Relabels `input` whole, split in two at every byte offset, and one byte
/// at a time; asserts that every run gives the same output and returns it.
/// Bugs where a line is split across chunks are the classic failure of a
/// streaming rewriter.
pub fn relabel_every_split(table: &'static [StandardName], input: &[u8]) -> Vec<u8> {
    let window = super::scan::DEFAULT_WINDOW;
    let whole = relabel_chunks(table, window, [input]);
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        let split = relabel_chunks(table, window, [a, b]);
        assert_eq!(
            String::from_utf8_lossy(&split),
            String::from_utf8_lossy(&whole),
            "split at byte {at}"
        );
    }
    let bytewise = relabel_chunks(table, window, input.chunks(1));
    assert_eq!(
        String::from_utf8_lossy(&bytewise),
        String::from_utf8_lossy(&whole),
        "1-byte chunks"
    );
    whole
}
