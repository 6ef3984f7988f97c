//! Samples, medians, percentiles, and the results table.

use std::fmt::Write as _;

/// One contender's measurements, one per round.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    /// The measurements, in round order.
    pub fn values(&self) -> &[f64] {
        &self.0
    }

    /// The median of the rounds.
    pub fn median(&self) -> f64 {
        median(self.0.clone())
    }

    /// The median over rounds of `self / other` within each round. Pairing the runs of one round
    /// cancels noise that drifts between rounds (another process starting, the VM's neighbours).
    pub fn ratio_median(&self, other: &Samples) -> f64 {
        median(self.0.iter().zip(&other.0).map(|(a, b)| a / b).collect())
    }
}

/// The median (the mean of the middle two for an even count; NaN for none).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A latency distribution: every sample of every round, pooled.
#[derive(Debug, Clone, Default)]
pub struct Distribution {
    samples: Vec<f64>,
    sorted: bool,
}

impl Distribution {
    pub fn push(&mut self, value: f64) {
        self.samples.push(value);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.samples.sort_by(f64::total_cmp);
            self.sorted = true;
        }
    }

    /// The `q`-quantile (0 ≤ q ≤ 1), nearest rank; NaN when empty.
    pub fn quantile(&mut self, q: f64) -> f64 {
        self.sort();
        let n = self.samples.len();
        if n == 0 {
            return f64::NAN;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.samples[rank - 1]
    }

    /// The samples in ascending order.
    pub fn sorted(&mut self) -> &[f64] {
        self.sort();
        &self.samples
    }
}

/// How a value is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Per second, scaled to k/M.
    Rate,
    /// A plain number with this many decimals.
    Count(usize),
    /// Seconds, printed in ns/µs/ms/s.
    Time,
    /// Bytes with this many decimals.
    Bytes(usize),
}

/// What hostloop must achieve on a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// No target: the row is there for context.
    None,
    /// `hostloop / peer >= x`.
    RatioAtLeast(f64),
    /// `hostloop / peer <= x`.
    RatioAtMost(f64),
    /// `hostloop <= x`.
    AtMost(f64),
    /// `hostloop >= x`.
    AtLeast(f64),
    /// `hostloop == x`.
    Exactly(f64),
}

impl Target {
    fn met(self, hostloop: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Target::None => None,
            Target::RatioAtLeast(x) => ratio.map(|r| r >= x),
            Target::RatioAtMost(x) => ratio.map(|r| r <= x),
            Target::AtMost(x) => Some(hostloop <= x),
            Target::AtLeast(x) => Some(hostloop >= x),
            Target::Exactly(x) => Some(hostloop == x),
        }
    }

    fn format(self, unit: Unit) -> String {
        match self {
            Target::None => "-".to_owned(),
            Target::RatioAtLeast(x) => format!(">= {x:.2}x"),
            Target::RatioAtMost(x) => format!("<= {x:.2}x"),
            Target::AtMost(x) => format!("<= {}", format_target(x, unit)),
            Target::AtLeast(x) => format!(">= {}", format_target(x, unit)),
            Target::Exactly(x) => format!("= {}", format_target(x, unit)),
        }
    }
}

fn format_target(x: f64, unit: Unit) -> String {
    match unit {
        Unit::Count(_) => format!("{x}"),
        Unit::Bytes(_) => format!("{x} B"),
        other => format_value(x, other),
    }
}

/// One line of the table: hostloop's value against a peer's and/or a physical limit.
#[derive(Debug, Clone)]
pub struct Row {
    benchmark: String,
    unit: Unit,
    hostloop: f64,
    peer: Option<f64>,
    /// The machine's limit for this row, measured in the same run.
    limit: Option<f64>,
    /// hostloop / peer (or / limit when there is no peer).
    ratio: Option<f64>,
    target: Target,
}

impl Row {
    /// hostloop against a peer measured in the same rounds (ratio: median of per-round ratios).
    pub fn versus(
        benchmark: impl Into<String>,
        unit: Unit,
        hostloop: &Samples,
        peer: &Samples,
        target: Target,
    ) -> Self {
        Row {
            benchmark: benchmark.into(),
            unit,
            hostloop: hostloop.median(),
            peer: Some(peer.median()),
            limit: None,
            ratio: Some(hostloop.ratio_median(peer)),
            target,
        }
    }

    /// hostloop on its own.
    pub fn alone(
        benchmark: impl Into<String>,
        unit: Unit,
        hostloop: &Samples,
        target: Target,
    ) -> Self {
        Row::value(benchmark, unit, hostloop.median(), target)
    }

    /// A single hostloop value.
    pub fn value(benchmark: impl Into<String>, unit: Unit, hostloop: f64, target: Target) -> Self {
        Row {
            benchmark: benchmark.into(),
            unit,
            hostloop,
            peer: None,
            limit: None,
            ratio: None,
            target,
        }
    }

    /// hostloop's value against a peer's value (ratio hostloop / peer), e.g. two percentiles of
    /// pooled distributions.
    pub fn pair(
        benchmark: impl Into<String>,
        unit: Unit,
        hostloop: f64,
        peer: f64,
        target: Target,
    ) -> Self {
        Row {
            benchmark: benchmark.into(),
            unit,
            hostloop,
            peer: Some(peer),
            limit: None,
            ratio: Some(hostloop / peer),
            target,
        }
    }

    /// hostloop's value against the machine's limit (ratio hostloop / limit).
    pub fn limited(
        benchmark: impl Into<String>,
        unit: Unit,
        hostloop: f64,
        limit: f64,
        target: Target,
    ) -> Self {
        Row {
            benchmark: benchmark.into(),
            unit,
            hostloop,
            peer: None,
            limit: Some(limit),
            ratio: Some(hostloop / limit),
            target,
        }
    }

    /// Adds the machine's limit for this row (printed, not part of the ratio).
    pub fn with_limit(mut self, limit: f64) -> Self {
        self.limit = Some(limit);
        self
    }

    pub fn benchmark(&self) -> &str {
        &self.benchmark
    }

    /// Whether the target is met (`None`: the row has no target).
    pub fn met(&self) -> Option<bool> {
        self.target.met(self.hostloop, self.ratio)
    }

    fn cells(&self) -> [String; 7] {
        let met = match self.met() {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let value =
            |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format_value(v, self.unit));
        [
            self.benchmark.clone(),
            format_value(self.hostloop, self.unit),
            value(self.peer),
            value(self.limit),
            self.ratio
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.3}x")),
            self.target.format(self.unit),
            met.to_owned(),
        ]
    }
}

pub fn format_value(value: f64, unit: Unit) -> String {
    if value.is_nan() {
        return "n/a".to_owned();
    }
    match unit {
        Unit::Rate if value >= 1e6 => format!("{:.2} M/s", value / 1e6),
        Unit::Rate => format!("{:.1} k/s", value / 1e3),
        Unit::Count(decimals) => format!("{value:.decimals$}"),
        Unit::Bytes(decimals) => format!("{value:.decimals$} B"),
        Unit::Time if value < 1e-6 => format!("{:.0} ns", value * 1e9),
        Unit::Time if value < 1e-3 => format!("{:.1} us", value * 1e6),
        Unit::Time if value < 1.0 => format!("{:.2} ms", value * 1e3),
        Unit::Time => format!("{value:.2} s"),
    }
}

/// `rows` as an aligned text table.
pub fn table(rows: &[Row]) -> String {
    const HEADER: [&str; 7] = [
        "benchmark",
        "hostloop",
        "peer",
        "limit",
        "ratio",
        "target",
        "met?",
    ];
    let cells: Vec<[String; 7]> = rows.iter().map(Row::cells).collect();
    let mut widths = HEADER.map(str::len);
    for line in &cells {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    out.push_str(&format_line(&HEADER, &widths));
    out.push('\n');
    out.push_str(&format_line(&widths.map(|w| "-".repeat(w)), &widths));
    out.push('\n');
    for line in &cells {
        out.push_str(&format_line(line, &widths));
        out.push('\n');
    }
    out
}

/// The first cell left-aligned, the others right-aligned, two spaces apart.
fn format_line(cells: &[impl AsRef<str>], widths: &[usize]) -> String {
    let mut out = String::new();
    for (i, (cell, &w)) in cells.iter().zip(widths).enumerate() {
        let cell = cell.as_ref();
        // Writing to a `String` cannot fail.
        let _ = if i == 0 {
            write!(out, "{cell:<w$}")
        } else {
            write!(out, "  {cell:>w$}")
        };
    }
    out.trim_end().to_owned()
}
