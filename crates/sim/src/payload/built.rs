//! Expanded families (static line prefixes built once, values as state) and
//! the sizing that picks how many label sets land near the target size.

use super::*;

/// Byte range in [`Built::text`].
pub(super) type Span = (usize, usize);

/// One label set of a family.
pub(super) struct Series {
    /// Index in [`Built::spans`] of the series' first line prefix.
    pub(super) line: usize,
    /// Index of the label row in the template (models key on it).
    pub(super) row: usize,
    /// Counter/gauge value, or the histogram/summary `_sum`.
    pub(super) value: f64,
    /// `_created` timestamp.
    pub(super) created: f64,
    /// Histogram/summary observation count.
    pub(super) count: u64,
    /// Histogram per-bucket (non-cumulative) counts, `+Inf` last.
    pub(super) buckets: Vec<u64>,
}

/// A family expanded for a replica count.
pub(super) struct Family {
    /// Index of the template, for size estimates.
    pub(super) template: usize,
    pub(super) kind: Kind,
    pub(super) model: Model,
    /// `# HELP` and `# TYPE` lines.
    pub(super) header: Span,
    /// Header of the `_created` family (single-process counters, histograms, summaries).
    pub(super) created_header: Option<Span>,
    /// Histogram bounds, `+Inf` last.
    pub(super) bounds: Vec<f64>,
    pub(super) series: Vec<Series>,
}

/// All families of a payload: every static byte prebuilt in one arena.
pub(super) struct Built {
    pub(super) multiprocess: bool,
    /// Headers and line prefixes (`name{labels} `).
    pub(super) text: Vec<u8>,
    pub(super) spans: Vec<Span>,
    pub(super) families: Vec<Family>,
}

/// Expands the included templates for `n` replicas.
pub(super) fn instantiate(
    templates: &[Template],
    include: &[bool],
    n: usize,
    ctx: &Ctx,
    mp: bool,
) -> Built {
    let mut b = Built {
        multiprocess: mp,
        text: Vec::new(),
        spans: Vec::new(),
        families: Vec::new(),
    };
    for (ti, t) in templates.iter().enumerate() {
        if !include.get(ti).copied().unwrap_or(false) {
            continue;
        }
        let header = b.push_header(&t.name, &t.help, t.kind.type_name());
        let with_created = t.created && !mp && t.kind != Kind::Gauge;
        let created_name = format!("{}_created", t.base);
        let created_header = with_created.then(|| b.push_header(&created_name, &t.help, "gauge"));
        let mut bounds = Vec::new();
        if t.kind == Kind::Histogram {
            bounds = t.buckets.clone();
            bounds.push(f64::INFINITY);
        }
        let le: Vec<String> = bounds.iter().map(|&v| go_float_string(v)).collect();
        let (bucket, count, sum) = (
            format!("{}_bucket", t.name),
            format!("{}_count", t.name),
            format!("{}_sum", t.name),
        );
        let mut series = Vec::new();
        for (si, set) in t.label_sets(n, ctx, mp).into_iter().enumerate() {
            let line = b.spans.len();
            let pairs = &set.pairs;
            match t.kind {
                Kind::Gauge => b.push_prefix(&t.name, pairs, None),
                Kind::Counter => b.push_prefix(&t.name, pairs, None),
                Kind::Histogram => {
                    for le in &le {
                        b.push_prefix(&bucket, pairs, Some(le));
                    }
                    b.push_prefix(&count, pairs, None);
                    b.push_prefix(&sum, pairs, None);
                }
                Kind::Summary => {
                    b.push_prefix(&count, pairs, None);
                    b.push_prefix(&sum, pairs, None);
                }
            }
            if with_created {
                b.push_prefix(&created_name, pairs, None);
            }
            // Children are created right after one another when the engine starts.
            let created = ctx.base_ts + ti as f64 * 0.000_731 + si as f64 * 0.000_013_7;
            let mut s = Series {
                line,
                row: set.row,
                value: 0.0,
                created,
                count: 0,
                buckets: vec![0; bounds.len()],
            };
            let mut rng = Rng::new(mix(ctx.seed, ti as u64, si as u64));
            t.model.init(&mut s, &bounds, t.kind, &mut rng, ctx.base_ts);
            series.push(s);
        }
        b.families.push(Family {
            template: ti,
            kind: t.kind,
            model: t.model,
            header,
            created_header,
            bounds,
            series,
        });
    }
    if mp {
        // MultiProcessCollector merges the mmap files one kind after the other.
        b.families.sort_by_key(|f| f.kind.mmap_file_rank());
    }
    b
}

impl Built {
    pub(super) fn push_header(&mut self, name: &str, help: &str, type_name: &str) -> Span {
        let start = self.text.len();
        self.text.extend_from_slice(b"# HELP ");
        self.text.extend_from_slice(name.as_bytes());
        self.text.push(b' ');
        escape_help(&mut self.text, help);
        self.text.extend_from_slice(b"\n# TYPE ");
        self.text.extend_from_slice(name.as_bytes());
        self.text.push(b' ');
        self.text.extend_from_slice(type_name.as_bytes());
        self.text.push(b'\n');
        (start, self.text.len())
    }

    /// Stores `name{labels} ` with the labels sorted by name, as `generate_latest` writes them.
    pub(super) fn push_prefix(&mut self, name: &str, pairs: &[(String, String)], le: Option<&str>) {
        let start = self.text.len();
        self.text.extend_from_slice(name.as_bytes());
        let mut labels: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        if let Some(le) = le {
            labels.push(("le", le));
        }
        labels.sort_by(|a, b| a.0.cmp(b.0));
        if !labels.is_empty() {
            self.text.push(b'{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(b',');
                }
                self.text.extend_from_slice(k.as_bytes());
                self.text.extend_from_slice(b"=\"");
                escape_label_value(&mut self.text, v);
                self.text.push(b'"');
            }
            self.text.push(b'}');
        }
        self.text.push(b' ');
        self.spans.push((start, self.text.len()));
    }

    pub(super) fn advance(&mut self, rng: &mut Rng) {
        for f in &mut self.families {
            for s in &mut f.series {
                f.model.advance(s, &f.bounds, f.kind, rng);
            }
        }
    }

    pub(super) fn rendered_len(&self) -> usize {
        let mut out = Vec::new();
        self.write(&mut out);
        out.len()
    }

    pub(super) fn write(&self, out: &mut Vec<u8>) {
        for f in &self.families {
            self.write_family(f, out);
        }
    }

    pub(super) fn span(&self, (start, end): Span) -> &[u8] {
        &self.text[start..end]
    }

    pub(super) fn line(&self, out: &mut Vec<u8>, index: usize, value: f64) {
        out.extend_from_slice(self.span(self.spans[index]));
        write_go_float(out, value);
        out.push(b'\n');
    }

    pub(super) fn write_family(&self, f: &Family, out: &mut Vec<u8>) {
        out.extend_from_slice(self.span(f.header));
        let nb = f.bounds.len();
        // Index of the `_created` prefix within a series' lines.
        let created_at = match f.kind {
            Kind::Gauge | Kind::Counter => 1,
            Kind::Histogram => nb + 2,
            Kind::Summary => 2,
        };
        match f.kind {
            Kind::Gauge | Kind::Counter => {
                for s in &f.series {
                    self.line(out, s.line, s.value);
                }
            }
            Kind::Histogram if self.multiprocess => {
                // MultiProcessCollector: every `_sum` first (read from the mmap files), then
                // each label set's accumulated buckets and the `_count` derived from them.
                for s in &f.series {
                    self.line(out, s.line + nb + 1, s.value);
                }
                for s in &f.series {
                    self.write_buckets(out, s);
                }
            }
            Kind::Histogram => {
                for s in &f.series {
                    self.write_buckets(out, s);
                    self.line(out, s.line + nb + 1, s.value);
                }
            }
            Kind::Summary => {
                for s in &f.series {
                    self.line(out, s.line, s.count as f64);
                    self.line(out, s.line + 1, s.value);
                }
            }
        }
        if let Some(header) = f.created_header {
            out.extend_from_slice(self.span(header));
            for s in &f.series {
                self.line(out, s.line + created_at, s.created);
            }
        }
    }

    /// Cumulative `_bucket` lines, then `_count` (equal to the `+Inf` bucket).
    pub(super) fn write_buckets(&self, out: &mut Vec<u8>, s: &Series) {
        let mut acc = 0u64;
        for (i, &c) in s.buckets.iter().enumerate() {
            acc += c;
            self.line(out, s.line + i, acc as f64);
        }
        self.line(out, s.line + s.buckets.len(), acc as f64);
    }
}

// ---------------------------------------------------------------------------------------------
// Sizing
// ---------------------------------------------------------------------------------------------

/// Measured cost of a template.
#[derive(Clone, Copy, Default)]
pub(super) struct Est {
    /// HELP/TYPE bytes (with the `_created` header).
    pub(super) header: f64,
    /// Average bytes per series (all its lines).
    pub(super) per_series: f64,
}

/// Measures each template's header and per-series cost in a probe expansion.
pub(super) fn estimate(templates: &[Template], probe: &Built) -> Vec<Est> {
    let mut ests = vec![Est::default(); templates.len()];
    let mut out = Vec::new();
    for f in &probe.families {
        out.clear();
        probe.write_family(f, &mut out);
        let header =
            (f.header.1 - f.header.0) + f.created_header.map_or(0, |(start, end)| end - start);
        let body = out.len().saturating_sub(header);
        ests[f.template] = Est {
            header: header as f64,
            per_series: body as f64 / f.series.len().max(1) as f64,
        };
    }
    ests
}

/// Picks the replica count and the families to include so the estimated size is closest to
/// `goal`: the smallest replica count whose full family set reaches the goal, trimmed of
/// optional families (by priority) to fit, or one replica fewer with everything.
pub(super) fn plan(
    templates: &[Template],
    ests: &[Est],
    goal: f64,
    mp: bool,
) -> (usize, Vec<bool>) {
    let est = |i: usize, n: usize| {
        ests[i].header + ests[i].per_series * templates[i].series_count(n, mp) as f64
    };
    let total_all = |n: usize| (0..templates.len()).map(|i| est(i, n)).sum::<f64>();
    let mut n = 1;
    while n < MAX_REPLICAS && total_all(n) < goal {
        n += 1;
    }
    let mut order: Vec<usize> = (0..templates.len()).collect();
    order.sort_by_key(|&i| (templates[i].priority, i));
    let greedy = |n: usize| {
        let mut include = vec![false; templates.len()];
        let mut total = 0.0;
        for &i in &order {
            let cost = est(i, n);
            if templates[i].priority == 0 || total + cost <= goal {
                include[i] = true;
                total += cost;
            }
        }
        (include, total)
    };
    let (include, total) = greedy(n);
    if n > 1 {
        let (fewer, fewer_total) = greedy(n - 1);
        if (fewer_total - goal).abs() < (total - goal).abs() {
            return (n - 1, fewer);
        }
    }
    (n, include)
}
