//! The frame-time plot: an SVG of every host frame's length and the pump time inside it, against
//! the 16.7 ms a 60 Hz frame has.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

/// One host frame: how long it lasted and how much of it the pumps took, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct FrameSample {
    pub frame_ms: f64,
    pub pump_ms: f64,
}

/// Writes the plot, with dashed lines at the frame period and the pump budget. `title` goes
/// above it (plain text).
pub fn write(
    path: &Path,
    frames: &[FrameSample],
    period_ms: f64,
    budget_ms: f64,
    title: &str,
) -> io::Result<()> {
    std::fs::write(path, svg(frames, period_ms, budget_ms, title))
}

fn svg(frames: &[FrameSample], period_ms: f64, budget_ms: f64, title: &str) -> String {
    let (w, h) = (960.0, 400.0);
    let (left, right, top, bottom) = (64.0, 150.0, 48.0, 56.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    // The y axis shows at least two frame periods, more if a frame ran longer.
    let worst = frames
        .iter()
        .map(|f| f.frame_ms.max(f.pump_ms))
        .fold(0.0, f64::max);
    let y_max = nice_ceiling(worst.max(2.0 * period_ms) * 1.05);
    let n = frames.len().max(2) as f64;
    let x = |i: usize| left + pw * i as f64 / (n - 1.0);
    let y = |ms: f64| top + ph * (1.0 - ms.min(y_max) / y_max);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="{w}" height="{h}" fill="#0b0d12"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="26" fill="#d6dae2" font-size="15">{}</text>"##,
        escape(title)
    );
    // Grid and y labels.
    let step = nice_step(y_max / 5.0);
    let decimals = if step >= 1.0 { 0 } else { 1 };
    for k in 0..=(y_max / step).round() as usize {
        let v = k as f64 * step;
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#232833"/><text x="{:.1}" y="{:.1}" fill="#808694" text-anchor="end">{v:.decimals$} ms</text>"##,
            left + pw,
            left - 8.0,
            yy + 4.0
        );
    }
    // x labels: frame numbers.
    let xstep = nice_step(n / 8.0).max(1.0) as usize;
    for i in (0..frames.len()).step_by(xstep) {
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" fill="#808694" text-anchor="middle">{i}</text>"##,
            x(i),
            top + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" fill="#808694" text-anchor="middle">host frame</text>"##,
        left + pw / 2.0,
        h - 14.0
    );
    // The frame budget.
    let yb = y(period_ms);
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{yb:.1}" x2="{:.1}" y2="{yb:.1}" stroke="#5a6e8c" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" fill="#8aa0c0">{period_ms:.1} ms (60 Hz)</text>"##,
        left + pw,
        left + pw + 8.0,
        yb + 4.0
    );
    let yp = y(budget_ms);
    let _ = writeln!(
        s,
        r##"<line x1="{left}" y1="{yp:.1}" x2="{:.1}" y2="{yp:.1}" stroke="#2f6b5a" stroke-dasharray="3 4"/><text x="{:.1}" y="{:.1}" fill="#4fc3a1">{budget_ms:.1} ms pump budget</text>"##,
        left + pw,
        left + pw + 8.0,
        yp + 4.0
    );
    for (color, label, pick) in [
        ("#f5922a", "frame time", 0),
        ("#4fc3a1", "pump time in the frame", 1),
    ] {
        let mut points = String::new();
        for (i, f) in frames.iter().enumerate() {
            let ms = if pick == 0 { f.frame_ms } else { f.pump_ms };
            let _ = write!(points, "{:.1},{:.1} ", x(i), y(ms));
        }
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"##,
            points.trim_end()
        );
        let lx = left + 12.0 + pick as f64 * 150.0;
        let _ = writeln!(
            s,
            r##"<rect x="{lx}" y="{:.1}" width="14" height="3" fill="{color}"/><text x="{:.1}" y="{:.1}" fill="#d6dae2">{label}</text>"##,
            top + 8.0,
            lx + 20.0,
            top + 13.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#343a46"/>"##
    );
    s.push_str("</svg>\n");
    s
}

/// The smallest of 1, 2, 5 × 10^k that is at least `v`.
fn nice_step(v: f64) -> f64 {
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
    }

    #[test]
    fn the_plot_has_one_polyline_per_series_and_the_budget_line() {
        let frames = vec![
            FrameSample {
                frame_ms: 16.6,
                pump_ms: 1.0
            };
            10
        ];
        let s = svg(&frames, 16.7, 2.0, "a < b");
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("16.7 ms (60 Hz)") && s.contains("2.0 ms pump budget"));
        assert!(s.contains("a &lt; b"));
        assert!(s.starts_with("<svg") && s.ends_with("</svg>\n"));
    }
}
