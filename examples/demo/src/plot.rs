//! The timing chart, an SVG in two panels over the same seconds of the host loop:
//!
//! - above, every pump that ran work, one dot each at the time hostloop measured for it
//!   (`hl_pump_report_t::elapsed_us`), against the budget of one pump: the budget limits each
//!   pump, so each pump is what is drawn against it;
//! - below, the length of every host frame against the frame period. A frame holds several
//!   pumps and has no pump budget, so this panel draws none.
//!
//! Each dot carries its value (`data-us`) and each series and line an `id`, so a test can read
//! the chart back.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// One pump that ran work.
#[derive(Debug, Clone, Copy)]
pub struct Pump {
    /// When it started, in seconds since the host loop began.
    pub at_s: f64,
    pub elapsed_us: u64,
    pub over_budget: bool,
}

/// One host frame: when it ended (seconds since the host loop began) and its length in ms.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub end_s: f64,
    pub ms: f64,
}

/// What the chart shows.
#[derive(Debug)]
pub struct Chart {
    /// Plain text, above the chart; `subtitle` under it.
    pub title: String,
    pub subtitle: String,
    pub pumps: Vec<Pump>,
    pub frames: Vec<Frame>,
    /// The budget of one pump, and the host's frame period.
    pub budget_us: u64,
    pub period_ms: f64,
    /// The length of the host loop.
    pub seconds: f64,
}

pub fn write(path: &Path, chart: &Chart) -> io::Result<()> {
    std::fs::write(path, svg(chart))
}

const WITHIN: &str = "#4fc3a1";
const OVER: &str = "#f5922a";
const FRAME: &str = "#8aa0c0";
const TEXT: &str = "#d6dae2";
const DIM: &str = "#808694";

/// A plot area: where it is, and the value range of its y axis (from 0).
struct Area {
    left: f64,
    top: f64,
    w: f64,
    h: f64,
    x_max: f64,
    y_max: f64,
}

impl Area {
    fn x(&self, s: f64) -> f64 {
        self.left + self.w * (s / self.x_max).clamp(0.0, 1.0)
    }

    fn y(&self, v: f64) -> f64 {
        self.top + self.h * (1.0 - (v / self.y_max).clamp(0.0, 1.0))
    }

    /// Grid, ticks with values on both axes, the axis names, and the frame.
    fn axes(&self, s: &mut String, y_name: &str, y_unit: &str, x_name: &str) {
        let (right, bottom) = (self.left + self.w, self.top + self.h);
        let step = nice_step(self.y_max / 5.0);
        let places = decimals(step);
        for v in ticks(self.y_max, step) {
            let yy = self.y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" y1="{yy:.1}" x2="{right:.1}" y2="{yy:.1}" stroke="#232833"/><line x1="{:.1}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#5c6372"/><text x="{:.1}" y="{:.1}" fill="{DIM}" text-anchor="end">{v:.places$} {y_unit}</text>"##,
                self.left,
                self.left - 5.0,
                self.left,
                self.left - 8.0,
                yy + 4.0
            );
        }
        let step = nice_step(self.x_max / 10.0);
        let places = decimals(step);
        for v in ticks(self.x_max, step) {
            let xx = self.x(v);
            let _ = writeln!(
                s,
                r##"<line x1="{xx:.1}" y1="{bottom:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#5c6372"/><text x="{xx:.1}" y="{:.1}" fill="{DIM}" text-anchor="middle">{v:.places$} s</text>"##,
                bottom + 5.0,
                bottom + 18.0
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="{DIM}" text-anchor="middle">{x_name}</text>"##,
            self.left + self.w / 2.0,
            bottom + 34.0
        );
        let (yx, yy) = (18.0, self.top + self.h / 2.0);
        let _ = writeln!(
            s,
            r##"<text x="{yx}" y="{yy:.1}" fill="{DIM}" text-anchor="middle" transform="rotate(-90 {yx} {yy:.1})">{y_name}</text>"##
        );
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#343a46"/>"##,
            self.left, self.top, self.w, self.h
        );
    }
}

/// A legend row: (marker, label) pairs from `x`, at `y`.
fn legend(s: &mut String, x: f64, y: f64, items: &[(Marker, String)]) {
    let mut x = x;
    for (marker, label) in items {
        match marker {
            Marker::Dot(color) => {
                let _ = write!(
                    s,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"##,
                    x + 5.0,
                    y - 4.0
                );
            }
            Marker::Line(color, dash) => {
                let _ = write!(
                    s,
                    r##"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>"##,
                    y - 4.0,
                    x + 18.0,
                    y - 4.0
                );
            }
        }
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{y:.1}" fill="{TEXT}">{}</text>"##,
            x + 24.0,
            escape(label)
        );
        // About 6.3 px per character at 12 px.
        x += 24.0 + 6.3 * label.chars().count() as f64 + 20.0;
    }
}

enum Marker {
    Dot(&'static str),
    /// A colour and an SVG dash pattern ("none" for solid).
    Line(&'static str, &'static str),
}

fn svg(c: &Chart) -> String {
    let (w, h) = (960.0, 620.0);
    let (left, right) = (76.0, 24.0);
    let budget_ms = c.budget_us as f64 / 1000.0;
    let budget = crate::budget::ms_text(c.budget_us);
    let x_max = c
        .seconds
        .max(c.frames.last().map_or(0.0, |f| f.end_s))
        .max(1e-3);
    let longest_pump = c
        .pumps
        .iter()
        .map(|p| p.elapsed_us as f64 / 1000.0)
        .fold(0.0, f64::max);
    let pumps = Area {
        left,
        top: 84.0,
        w: w - left - right,
        h: 260.0,
        x_max,
        y_max: nice_ceiling(longest_pump.max(2.0 * budget_ms) * 1.05),
    };
    let longest_frame = c.frames.iter().map(|f| f.ms).fold(0.0, f64::max);
    let frames = Area {
        top: 430.0,
        h: 130.0,
        y_max: nice_ceiling(longest_frame.max(1.5 * c.period_ms) * 1.05),
        ..pumps
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="{w}" height="{h}" fill="#0b0d12"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="24" fill="{TEXT}" font-size="15">{}</text>"##,
        escape(&c.title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="44" fill="{DIM}">{}</text>"##,
        escape(&c.subtitle)
    );

    // Above: each pump against the budget of one pump.
    let (within, over): (Vec<&Pump>, Vec<&Pump>) = c.pumps.iter().partition(|p| !p.over_budget);
    legend(
        &mut s,
        left,
        74.0,
        &[
            (
                Marker::Dot(WITHIN),
                format!("pump within its budget ({})", within.len()),
            ),
            (
                Marker::Dot(OVER),
                format!("pump over its budget ({})", over.len()),
            ),
            (
                Marker::Line(WITHIN, "4 3"),
                format!("budget of one pump: {budget}"),
            ),
        ],
    );
    pumps.axes(
        &mut s,
        "time of one pump (ms)",
        "ms",
        "seconds since the host loop started",
    );
    let yb = pumps.y(budget_ms);
    let _ = writeln!(
        s,
        r##"<line id="pump-budget" data-us="{}" x1="{left}" y1="{yb:.1}" x2="{:.1}" y2="{yb:.1}" stroke="{WITHIN}" stroke-width="1.5" stroke-dasharray="4 3"/>"##,
        c.budget_us,
        left + pumps.w,
    );
    for (id, color, series) in [
        ("pumps-within", WITHIN, &within),
        ("pumps-over", OVER, &over),
    ] {
        let _ = writeln!(s, r##"<g id="{id}" fill="{color}">"##);
        for p in series.iter() {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.2}" cy="{:.2}" r="2" data-us="{}"/>"##,
                pumps.x(p.at_s),
                pumps.y(p.elapsed_us as f64 / 1000.0),
                p.elapsed_us
            );
        }
        s.push_str("</g>\n");
    }
    // The line's name, over the dots, on a halo of the background.
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" fill="{WITHIN}" text-anchor="end" stroke="#0b0d12" stroke-width="4" paint-order="stroke">budget of one pump: {budget}</text>"##,
        left + pumps.w - 4.0,
        yb - 5.0
    );

    // Below: each host frame against the frame period.
    legend(
        &mut s,
        left,
        420.0,
        &[
            (
                Marker::Line(FRAME, "none"),
                "host frame: time from one frame tick to the next (it holds several pumps)".into(),
            ),
            (
                Marker::Line(FRAME, "6 4"),
                format!("one frame at 60 Hz: {:.1} ms", c.period_ms),
            ),
        ],
    );
    frames.axes(
        &mut s,
        "host frame (ms)",
        "ms",
        "seconds since the host loop started",
    );
    let yp = frames.y(c.period_ms);
    let _ = writeln!(
        s,
        r##"<line id="frame-period" x1="{left}" y1="{yp:.1}" x2="{:.1}" y2="{yp:.1}" stroke="{FRAME}" stroke-dasharray="6 4"/>"##,
        left + frames.w
    );
    let mut points = String::new();
    for f in &c.frames {
        let _ = write!(points, "{:.1},{:.1} ", frames.x(f.end_s), frames.y(f.ms));
    }
    let _ = writeln!(
        s,
        r##"<polyline id="frame-lengths" fill="none" stroke="{FRAME}" stroke-width="1.2" points="{}"/>"##,
        points.trim_end()
    );
    s.push_str("</svg>\n");
    s
}

/// 0, step, 2 × step, … up to `max`.
fn ticks(max: f64, step: f64) -> impl Iterator<Item = f64> {
    (0..=(max / step + 1e-9).floor() as usize).map(move |k| k as f64 * step)
}

/// Decimals enough to tell ticks `step` apart.
fn decimals(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    }
}

/// The smallest of 1, 2, 5 × 10^k that is at least `v`.
pub fn nice_step(v: f64) -> f64 {
    let p = 10f64.powf(v.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn nice_ceiling(v: f64) -> f64 {
    let step = nice_step(v / 5.0);
    (v / step).ceil() * step
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(12.0), 20.0);
        assert_eq!(nice_ceiling(35.0), 40.0);
        assert_eq!(
            ticks(10.0, 2.5).collect::<Vec<_>>(),
            [0.0, 2.5, 5.0, 7.5, 10.0]
        );
        assert_eq!((decimals(5.0), decimals(0.5), decimals(0.05)), (0, 1, 2));
    }

    fn chart() -> Chart {
        Chart {
            title: "a < b".into(),
            subtitle: "c & d".into(),
            pumps: vec![
                Pump {
                    at_s: 0.1,
                    elapsed_us: 900,
                    over_budget: false,
                },
                Pump {
                    at_s: 0.2,
                    elapsed_us: 2600,
                    over_budget: true,
                },
                Pump {
                    at_s: 0.3,
                    elapsed_us: 1200,
                    over_budget: false,
                },
            ],
            frames: (1..=18)
                .map(|i| Frame {
                    end_s: i as f64 / 60.0,
                    ms: 16.7,
                })
                .collect(),
            budget_us: 2000,
            period_ms: 16.7,
            seconds: 0.3,
        }
    }

    /// The `data-us` values and `cy` positions of the dots in group `id`.
    fn dots(s: &str, id: &str) -> Vec<(u64, f64)> {
        let g = &s[s.find(&format!(r#"<g id="{id}""#)).unwrap()..];
        let g = &g[..g.find("</g>").unwrap()];
        g.split("<circle")
            .skip(1)
            .map(|c| {
                let attr = |name: &str| {
                    let at = c.find(&format!(r#"{name}=""#)).unwrap() + name.len() + 2;
                    c[at..at + c[at..].find('"').unwrap()].to_string()
                };
                (
                    attr("data-us").parse().unwrap(),
                    attr("cy").parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn each_pump_is_one_dot_on_its_side_of_the_budget_line() {
        let s = svg(&chart());
        let within = dots(&s, "pumps-within");
        let over = dots(&s, "pumps-over");
        assert_eq!(within.iter().map(|d| d.0).collect::<Vec<_>>(), [900, 1200]);
        assert_eq!(over.iter().map(|d| d.0).collect::<Vec<_>>(), [2600]);
        let line = &s[s.find(r#"<line id="pump-budget""#).unwrap()..];
        let at = line.find(r#"y1=""#).unwrap() + 4;
        let yb: f64 = line[at..at + line[at..].find('"').unwrap()]
            .parse()
            .unwrap();
        assert!(within.iter().all(|d| d.1 > yb) && over.iter().all(|d| d.1 < yb));
        assert!(s.contains("budget of one pump: 2.0 ms"));
        assert!(s.contains("pump within its budget (2)") && s.contains("pump over its budget (1)"));
    }

    #[test]
    fn the_frame_panel_has_the_frame_period_and_no_budget_line() {
        let s = svg(&chart());
        assert_eq!(s.matches("<polyline").count(), 1);
        assert_eq!(s.matches(r#"id="pump-budget""#).count(), 1);
        assert!(s.contains(r#"id="frame-period""#) && s.contains("one frame at 60 Hz: 16.7 ms"));
        assert!(s.contains("a &lt; b") && s.contains("c &amp; d"));
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
    }
}
