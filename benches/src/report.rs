//! Samples, medians, and the results table.

use std::fmt::{self, Write as _};

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

/// How a value is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Per second, scaled to k/M.
    Rate,
    /// A plain number with this many decimals.
    Count(usize),
}

/// What hostloop must achieve on a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// No target: the row is there for context.
    None,
    /// `hostloop / peer >= x`.
    RatioAtLeast(f64),
    /// `hostloop / peer > x`.
    RatioAbove(f64),
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
            Target::RatioAbove(x) => ratio.map(|r| r > x),
            Target::AtMost(x) => Some(hostloop <= x),
            Target::AtLeast(x) => Some(hostloop >= x),
            Target::Exactly(x) => Some(hostloop == x),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::None => f.write_str("-"),
            Target::RatioAtLeast(x) => write!(f, ">= {x:.2}x"),
            Target::RatioAbove(x) => write!(f, "> {x:.2}x"),
            Target::AtMost(x) => write!(f, "<= {x}"),
            Target::AtLeast(x) => write!(f, ">= {x}"),
            Target::Exactly(x) => write!(f, "= {x}"),
        }
    }
}

/// One line of the table: hostloop's median against one peer's.
#[derive(Debug, Clone)]
pub struct Row {
    benchmark: String,
    unit: Unit,
    hostloop: f64,
    /// The peer's median and the median per-round ratio; `None` when the row has no peer.
    peer: Option<(f64, f64)>,
    target: Target,
}

impl Row {
    /// hostloop against a peer measured in the same rounds.
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
            peer: Some((peer.median(), hostloop.ratio_median(peer))),
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
        Row {
            benchmark: benchmark.into(),
            unit,
            hostloop: hostloop.median(),
            peer: None,
            target,
        }
    }
}

fn format_value(value: f64, unit: Unit) -> String {
    match unit {
        Unit::Rate if value >= 1e6 => format!("{:.2} M/s", value / 1e6),
        Unit::Rate => format!("{:.1} k/s", value / 1e3),
        Unit::Count(decimals) => format!("{value:.decimals$}"),
    }
}

/// Prints `rows` as an aligned table.
pub fn print_table(rows: &[Row]) {
    const HEADER: [&str; 6] = ["benchmark", "hostloop", "peer", "ratio", "target", "met?"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|row| {
            let ratio = row.peer.map(|(_, ratio)| ratio);
            let met = match row.target.met(row.hostloop, ratio) {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "-",
            };
            [
                row.benchmark.clone(),
                format_value(row.hostloop, row.unit),
                row.peer
                    .map_or_else(|| "-".to_owned(), |(p, _)| format_value(p, row.unit)),
                ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.3}x")),
                row.target.to_string(),
                met.to_owned(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for line in &cells {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.len());
        }
    }
    println!("{}", format_line(&HEADER, &widths));
    println!("{}", format_line(&widths.map(|w| "-".repeat(w)), &widths));
    for line in &cells {
        println!("{}", format_line(line, &widths));
    }
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
