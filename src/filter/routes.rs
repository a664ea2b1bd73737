//! Where each family of a scrape goes: the filter stage's side of the
//! relabeler's output.
//!
//! [`Routes`] is the per-scrape state (the filter set the scrape uses, the
//! lines diverted to each filter, where every family went); [`Routed`]
//! is the [`FamilySink`] the relabeler writes through: a family that a
//! filter selects goes to the first filter that selects it, everything
//! else straight to the response. Without filters every byte goes out.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use super::select::FilterSet;
use crate::prom::FamilySink;
use crate::prom::name_hash::{Prehashed, name_hash};

/// One scrape's routing state, reused by the next.
#[derive(Debug, Default)]
pub struct Routes {
    set: Option<Arc<FilterSet>>,
    /// Per filter: the lines of the families sent to it.
    diverted: Vec<Vec<u8>>,
    /// Where each family name of this scrape went (`None`: the output), by
    /// a hash of the name. Kept only while filtering.
    seen: HashMap<u64, Option<usize>, BuildHasherDefault<Prehashed>>,
    /// The filter the current family goes to.
    current: Option<usize>,
}

impl Routes {
    /// Starts a scrape that uses `set` (none: no filters), keeping the
    /// buffers of the last.
    pub fn begin(&mut self, set: Option<Arc<FilterSet>>) {
        let filters = set.as_ref().map_or(0, |s| s.filters.len());
        self.diverted.iter_mut().for_each(Vec::clear);
        self.diverted.resize_with(filters, Vec::new);
        self.diverted.truncate(filters);
        self.seen.clear();
        self.current = None;
        self.set = set;
    }

    /// The filter set of this scrape.
    pub fn set(&self) -> Option<&Arc<FilterSet>> {
        self.set.as_ref()
    }

    /// The sink the relabeler writes through, emitting into `out`.
    pub fn sink<'a>(&'a mut self, out: &'a mut Vec<u8>) -> Routed<'a> {
        Routed { routes: self, out }
    }

    /// The engine's body is over: each filter's input ends with a newline.
    pub fn end_of_body(&mut self) {
        for buf in &mut self.diverted {
            if buf.last().is_some_and(|&b| b != b'\n') {
                buf.push(b'\n');
            }
        }
    }

    /// The lines sent to filter `i` in this scrape.
    pub fn diverted(&mut self, i: usize) -> &mut Vec<u8> {
        &mut self.diverted[i]
    }

    /// Where the family `name` went in this scrape: `None` if it did not
    /// appear, `Some(None)` if it went to the output.
    pub fn seen(&self, name: &[u8]) -> Option<Option<usize>> {
        self.seen.get(&name_hash(name)).copied()
    }

    /// Sends a family produced by filter `after`'s output on: to the next
    /// filter that selects it, or to `out`.
    pub fn forward(&mut self, after: usize, name: &[u8], lines: &[u8], out: &mut Vec<u8>) {
        let next = self
            .set
            .as_ref()
            .and_then(|set| set.route_from(Some(after), name));
        self.seen.insert(name_hash(name), next);
        match next {
            Some(j) => self.diverted[j].extend_from_slice(lines),
            None => out.extend_from_slice(lines),
        }
    }
}

/// The relabeler's output during a scrape: families a filter selects are
/// diverted to it, the rest written to the response.
#[derive(Debug)]
pub struct Routed<'a> {
    routes: &'a mut Routes,
    out: &'a mut Vec<u8>,
}

impl FamilySink for Routed<'_> {
    #[inline]
    fn family(&mut self, name: &[u8]) {
        let Some(set) = &self.routes.set else {
            return;
        };
        let route = set.route_from(None, name);
        self.routes.seen.insert(name_hash(name), route);
        self.routes.current = route;
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) -> bool {
        match self.routes.current {
            Some(i) => {
                self.routes.diverted[i].extend_from_slice(bytes);
                false
            }
            None => {
                self.out.extend_from_slice(bytes);
                true
            }
        }
    }

    #[inline]
    fn output(&mut self) -> &mut Vec<u8> {
        self.out
    }

    fn end_of_lines(&mut self) {
        self.routes.end_of_body();
    }
}
