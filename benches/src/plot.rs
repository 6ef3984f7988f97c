//! Minimal SVG line plots (no plotting dependency): latency distributions as CDFs and the
//! particle-step scaling.

use std::fmt::Write as _;

/// One line of a plot.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// An empirical CDF of `sorted` samples (ascending), scaled by `scale` on x, thinned to at most
/// about 400 points.
pub fn cdf(name: impl Into<String>, sorted: &[f64], scale: f64) -> Series {
    let n = sorted.len();
    let step = (n / 400).max(1);
    let mut points: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (sorted[i] * scale, (i + 1) as f64 / n as f64))
        .collect();
    if let Some(&last) = sorted.last() {
        points.push((last * scale, 1.0));
    }
    Series {
        name: name.into(),
        points,
    }
}

/// An axis: its range and whether it is logarithmic.
#[derive(Debug, Clone, Copy)]
pub struct Axis<'a> {
    pub label: &'a str,
    pub log: bool,
}

const W: f64 = 720.0;
const H: f64 = 440.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn ticks(lo: f64, hi: f64, log: bool) -> Vec<f64> {
    if log {
        let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        (a..=b).map(|e| 10f64.powi(e)).collect()
    } else {
        let span = (hi - lo).max(1e-12);
        let raw = span / 5.0;
        let mag = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| span / s <= 6.0)
            .unwrap_or(10.0 * mag);
        let first = (lo / step).floor() as i64;
        let last = (hi / step).ceil() as i64;
        (first..=last).map(|k| k as f64 * step).collect()
    }
}

fn label(v: f64) -> String {
    // Rounded to a few significant digits, so that tick arithmetic's float noise (0.6000000001)
    // never shows.
    let tidy = |x: f64| format!("{}", (x * 1e4).round() / 1e4);
    if v == 0.0 {
        "0".to_owned()
    } else if v.abs() >= 1e6 {
        format!("{}M", tidy(v / 1e6))
    } else if v.abs() >= 1e3 {
        format!("{}k", tidy(v / 1e3))
    } else {
        tidy(v)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A line plot of `series` as an SVG document.
pub fn line_plot(title: &str, x: Axis<'_>, y: Axis<'_>, series: &[Series]) -> String {
    let finite = |v: f64, log: bool| v.is_finite() && (!log || v > 0.0);
    let pts = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|&(a, b)| finite(a, x.log) && finite(b, y.log))
    };
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (a, b) in pts() {
        (x0, x1, y0, y1) = (x0.min(a), x1.max(a), y0.min(b), y1.max(b));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (1.0, 10.0, 0.0, 1.0);
    }
    if !y.log {
        y0 = y0.min(0.0);
    }
    let xt = ticks(x0, x1, x.log);
    let yt = ticks(y0, y1, y.log);
    let (x0, x1) = (xt[0].min(x0), xt[xt.len() - 1].max(x1));
    let (y0, y1) = (yt[0].min(y0), yt[yt.len() - 1].max(y1));
    let map = |v: f64, lo: f64, hi: f64, log: bool| {
        if log {
            (v.log10() - lo.log10()) / (hi.log10() - lo.log10()).max(1e-12)
        } else {
            (v - lo) / (hi - lo).max(1e-12)
        }
    };
    let px = |v: f64| LEFT + map(v, x0, x1, x.log) * (W - LEFT - RIGHT);
    let py = |v: f64| H - BOTTOM - map(v, y0, y1, y.log) * (H - TOP - BOTTOM);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        escape(title)
    );
    for &t in &xt {
        let p = px(t);
        let _ = writeln!(
            s,
            r##"<line x1="{p:.1}" y1="{TOP}" x2="{p:.1}" y2="{:.1}" stroke="#ddd"/><text x="{p:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 16.0,
            label(t)
        );
    }
    for &t in &yt {
        let p = py(t);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{p:.1}" x2="{:.1}" y2="{p:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            p + 4.0,
            label(t)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 18.0,
        escape(x.label)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"#,
        (TOP + H - BOTTOM) / 2.0,
        (TOP + H - BOTTOM) / 2.0,
        escape(y.label)
    );
    for (k, ser) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let path: Vec<String> = ser
            .points
            .iter()
            .filter(|&&(a, b)| finite(a, x.log) && finite(b, y.log))
            .map(|&(a, b)| format!("{:.1},{:.1}", px(a), py(b)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        if ser.points.len() <= 12 {
            for p in &path {
                let (a, b) = p.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(s, r#"<circle cx="{a}" cy="{b}" r="3" fill="{color}"/>"#);
            }
        }
        let ly = TOP + 10.0 + 20.0 * k as f64;
        let lx = W - RIGHT + 12.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 20.0,
            lx + 26.0,
            ly + 4.0,
            escape(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}
