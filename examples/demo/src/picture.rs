//! The particle picture, on a dark background, every pixel shaded by how many points (or
//! lines) fall on it, on a log scale, with a colour scale under each view saying so. Both views
//! name their axes as the simulation has them: Y up, the floor at y = 0 (as in Maya and
//! Houdini).
//!
//! - left, the height y of a sample of particles over the run, step by step, from the frames
//!   the host showed: each particle falls, bounces on the floor and loses speed per bounce;
//! - right, the top view of every particle of the final frame, looking down the y axis as a
//!   Y-up host's top view does: +x to the right, +z down, one scale for both axes.

use std::io;
use std::path::Path;

use crate::plot::nice_step;
use crate::png;

pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 572;

const BACKGROUND: u8 = 0;
const FRAME: u8 = 1;
const TEXT: u8 = 2;
const DIM: u8 = 3;
/// Palette entries `WARM..COOL` run from sparse to dense in warm colours, `COOL..=255` in cool.
const WARM: u8 = 16;
const COOL: u8 = 136;

/// Where the views start, and the left view's size.
const TOP: u32 = 88;
const CHART_X: u32 = 72;
const CHART_W: u32 = 456;
const CHART_H: u32 = 360;
/// The top view fits a square of `PLAN_EDGE` whose left edge is at `PLAN_X`; its text starts at
/// `PLAN_TEXT_X`.
const PLAN_X: u32 = 600;
const PLAN_EDGE: u32 = 336;
const PLAN_TEXT_X: u32 = 568;
/// The row of the colour scales' names; the bars are under them.
const LEGEND_Y: u32 = TOP + CHART_H + 40;

/// Heights of the same `particles` particles at several steps: `heights` holds `particles`
/// values per entry of `steps`.
#[derive(Debug, Default, Clone)]
pub struct Trails {
    pub particles: usize,
    pub steps: Vec<u64>,
    pub heights: Vec<f32>,
}

/// What the caption says.
#[derive(Debug)]
pub struct Caption<'a> {
    pub particles: usize,
    pub step: u64,
    pub kernel: &'a str,
}

/// Renders the final positions `xyz` (x, y, z per particle) and the height `trails`, and writes
/// them as a PNG.
pub fn write(path: &Path, xyz: &[f32], trails: &Trails, caption: &Caption<'_>) -> io::Result<()> {
    let mut canvas = Canvas::new(WIDTH, HEIGHT);
    let title = format!(
        "HOSTLOOP PARTICLES   {} PARTICLES   STEP {}   {} KERNEL",
        group(caption.particles as u64),
        group(caption.step),
        caption.kernel.to_uppercase()
    );
    canvas.text(24, 16, &title, TEXT, 2);
    height_chart(&mut canvas, trails);
    top_view(&mut canvas, xyz, caption);
    png::write_indexed(path, WIDTH, HEIGHT, &palette(), &canvas.px)
}

/// Left: the height y of the traced particles over the steps.
fn height_chart(canvas: &mut Canvas, trails: &Trails) {
    let chart = Panel {
        x0: CHART_X,
        y0: TOP,
        w: CHART_W,
        h: CHART_H,
    };
    let k = trails.particles;
    let frames = trails.heights.len().checked_div(k).unwrap_or(0);
    let (first, last) = (
        trails.steps.first().copied().unwrap_or(0),
        trails.steps.last().copied().unwrap_or(0),
    );
    let high = trails
        .heights
        .iter()
        .copied()
        .filter(|h| h.is_finite())
        .fold(1.0f32, f32::max)
        * 1.03;
    let span = (last - first).max(1) as f32;
    let at = |f: usize, j: usize| {
        let u = (trails.steps[f] - first) as f32 / span;
        let v = trails.heights[f * k + j] / high;
        chart.pixel(u, v)
    };
    let mut counts = vec![0u32; (chart.w * chart.h) as usize];
    for j in 0..k {
        for f in 1..frames {
            if let (Some(a), Some(b)) = (at(f - 1, j), at(f, j)) {
                chart.line(&mut counts, a, b);
            }
        }
    }
    let most = canvas.shade(&chart, &counts, COOL, 255);
    canvas.border(&chart);
    // y: height above the floor, up; x: the step.
    for (v, label) in ticks(0.0, f64::from(high), 8) {
        let row = chart.y0 + chart.h - 1 - ((v / f64::from(high)) * f64::from(chart.h - 1)) as u32;
        canvas.tick_left(&chart, row, &label);
    }
    let first_f = first as f64;
    for (v, label) in ticks(first_f, first_f + f64::from(span), 8) {
        let col = chart.x0 + ((v - first_f) / f64::from(span) * f64::from(chart.w - 1)) as u32;
        canvas.tick_below(&chart, col, &label);
    }
    canvas.text(24, 48, "HEIGHT OVER TIME", DIM, 2);
    canvas.text(
        24,
        TOP - 16,
        "Y: HEIGHT ABOVE THE FLOOR AT Y = 0 (UNITS)",
        DIM,
        1,
    );
    canvas.text_centered(
        chart.x0 + chart.w / 2,
        chart.y0 + chart.h + 22,
        "STEP (EACH 1/60 S OF SIMULATED TIME)",
        DIM,
    );
    canvas.scale_bar(
        chart.x0,
        "COLOUR: PARTICLE PATHS CROSSING A PIXEL (LOG SCALE)",
        COOL,
        255,
        most,
    );
    let y = LEGEND_Y + 48;
    canvas.text(
        24,
        y,
        &format!(
            "{} PARTICLES, STEPS {} TO {}, FROM THE FRAMES THE HOST SHOWED.",
            group(k as u64),
            group(first),
            group(last)
        ),
        DIM,
        1,
    );
    canvas.text(
        24,
        y + 12,
        "Y IS UP, AS IN MAYA AND HOUDINI (A Z-UP HOST SUCH AS BLENDER CALLS IT Z).",
        DIM,
        1,
    );
}

/// Right: the final frame from above, one scale for x and z, +z down.
fn top_view(canvas: &mut Canvas, xyz: &[f32], caption: &Caption<'_>) {
    let finite = |v: &f32| v.is_finite();
    let (mut half_x, mut half_z) = (1.0f32, 1.0f32);
    for p in xyz.chunks_exact(3).filter(|p| p.iter().all(finite)) {
        half_x = half_x.max(p[0].abs());
        half_z = half_z.max(p[2].abs());
    }
    let (half_x, half_z) = (half_x * 1.03, half_z * 1.03);
    let edge = PLAN_EDGE as f32;
    let scale = (edge / (2.0 * half_x)).min(edge / (2.0 * half_z));
    let (w, h) = ((2.0 * half_x * scale) as u32, (2.0 * half_z * scale) as u32);
    let plan = Panel {
        x0: PLAN_X + (PLAN_EDGE - w) / 2,
        y0: TOP + (CHART_H - h) / 2,
        w,
        h,
    };
    let mut counts = vec![0u32; (w * h) as usize];
    for p in xyz.chunks_exact(3) {
        let u = (p[0] + half_x) / (2.0 * half_x);
        // +z down: the top row is z = -half_z.
        let v = (half_z - p[2]) / (2.0 * half_z);
        if let Some((col, row)) = plan.pixel(u, v) {
            counts[(row * w + col) as usize] += 1;
        }
    }
    let most = canvas.shade(&plan, &counts, WARM, COOL - 1);
    canvas.border(&plan);
    let (hx, hz) = (f64::from(half_x), f64::from(half_z));
    for (v, label) in ticks(-hx, hx, 10) {
        let col = plan.x0 + ((v + hx) / (2.0 * hx) * f64::from(plan.w - 1)) as u32;
        canvas.tick_below(&plan, col, &label);
    }
    for (v, label) in ticks(-hz, hz, 10) {
        let row = plan.y0 + ((v + hz) / (2.0 * hz) * f64::from(plan.h - 1)) as u32;
        canvas.tick_left(&plan, row, &label);
    }
    canvas.text(PLAN_TEXT_X, 48, "TOP VIEW AT THE END", DIM, 2);
    canvas.text(PLAN_TEXT_X, TOP - 16, "Z (UNITS), +Z DOWN", DIM, 1);
    canvas.text_centered(
        plan.x0 + plan.w / 2,
        plan.y0 + plan.h + 22,
        "X (UNITS), +X RIGHT",
        DIM,
    );
    canvas.scale_bar(
        PLAN_X,
        "COLOUR: PARTICLES IN A PIXEL (LOG SCALE)",
        WARM,
        COOL - 1,
        most,
    );
    let y = LEGEND_Y + 48;
    canvas.text(
        PLAN_TEXT_X,
        y,
        &format!(
            "ALL {} PARTICLES, LOOKING DOWN THE Y AXIS AS A Y-UP",
            group(caption.particles as u64)
        ),
        DIM,
        1,
    );
    canvas.text(
        PLAN_TEXT_X,
        y + 12,
        &format!(
            "HOST'S TOP VIEW DOES.  {:.1} X {:.1} UNITS.",
            2.0 * half_x,
            2.0 * half_z
        ),
        DIM,
        1,
    );
}

/// Tick values from `lo` to `hi` about `n` apart at a 1-2-5 step, with their labels.
fn ticks(lo: f64, hi: f64, n: usize) -> Vec<(f64, String)> {
    let step = nice_step((hi - lo) / n as f64);
    let places = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let mut out = Vec::new();
    let mut k = (lo / step - 1e-9).ceil() as i64;
    while (k as f64) * step <= hi + 1e-9 {
        let v = k as f64 * step;
        // No "-0"; thousands grouped.
        let shown = if v.abs() < step / 2.0 { 0.0 } else { v };
        let label = if places == 0 && shown >= 1000.0 {
            group(shown as u64)
        } else {
            format!("{shown:.places$}")
        };
        out.push((v, label));
        k += 1;
    }
    out
}

/// A rectangle of the picture that shows a view.
struct Panel {
    x0: u32,
    y0: u32,
    w: u32,
    h: u32,
}

impl Panel {
    /// The pixel (column, row) of a place in the unit square (0,0 at the bottom left), or
    /// `None` outside it.
    fn pixel(&self, u: f32, v: f32) -> Option<(u32, u32)> {
        if !((0.0..=1.0).contains(&u) && (0.0..=1.0).contains(&v)) {
            return None;
        }
        let col = ((u * self.w as f32) as u32).min(self.w - 1);
        let row = self.h - 1 - ((v * self.h as f32) as u32).min(self.h - 1);
        Some((col, row))
    }

    /// Adds one to every pixel on the line from `a` to `b` (Bresenham), `b` excluded so that
    /// joined segments count their joints once.
    fn line(&self, counts: &mut [u32], a: (u32, u32), b: (u32, u32)) {
        let (mut x, mut y) = (a.0 as i64, a.1 as i64);
        let (x1, y1) = (b.0 as i64, b.1 as i64);
        let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
        let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        while (x, y) != (x1, y1) {
            counts[(y as u32 * self.w + x as u32) as usize] += 1;
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

struct Canvas {
    w: u32,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: u32, h: u32) -> Self {
        Canvas {
            w,
            px: vec![BACKGROUND; (w * h) as usize],
        }
    }

    fn set(&mut self, x: u32, y: u32, c: u8) {
        if x < self.w {
            if let Some(p) = self.px.get_mut((y * self.w + x) as usize) {
                *p = c;
            }
        }
    }

    /// Paints the non-empty pixels of `counts` with palette entries `lo..=hi`, by log density
    /// ([`shade_of`]), and returns the largest count (the top of the colour scale).
    fn shade(&mut self, panel: &Panel, counts: &[u32], lo: u8, hi: u8) -> u32 {
        let most = counts.iter().copied().max().unwrap_or(0).max(1);
        for row in 0..panel.h {
            for col in 0..panel.w {
                let c = counts[(row * panel.w + col) as usize];
                if c > 0 {
                    let t = shade_of(f64::from(c), most);
                    self.set(panel.x0 + col, panel.y0 + row, entry(t, lo, hi));
                }
            }
        }
        most
    }

    /// The colour scale of a view: its name, then a bar from one (left) to `most` (right)
    /// in the colours `shade` gives those counts, with ticks at 1, 10, 100, … and `most`.
    fn scale_bar(&mut self, x: u32, name: &str, lo: u8, hi: u8, most: u32) {
        const W: u32 = 240;
        self.text(x, LEGEND_Y, name, DIM, 1);
        let (top, bottom) = (LEGEND_Y + 12, LEGEND_Y + 22);
        let t1 = shade_of(1.0, most);
        for i in 0..W {
            let t = t1 + (1.0 - t1) * f64::from(i) / f64::from(W - 1);
            for y in top..bottom {
                self.set(x + i, y, entry(t, lo, hi));
            }
        }
        let column = |c: f64| {
            let f = if t1 < 1.0 {
                (shade_of(c, most) - t1) / (1.0 - t1)
            } else {
                0.0
            };
            x + (f * f64::from(W - 1)).round() as u32
        };
        let mut marks: Vec<(u32, u32)> = std::iter::successors(Some(1u32), |v| v.checked_mul(10))
            .take_while(|&v| v < most)
            .map(|v| (v, column(f64::from(v))))
            .collect();
        let end = column(f64::from(most));
        // The top's label wins over a power of ten too close to it.
        marks.retain(|&(_, col)| col + 36 <= end);
        marks.push((most, end));
        for (v, col) in marks {
            for y in bottom..bottom + 3 {
                self.set(col, y, FRAME);
            }
            self.text_centered(col, bottom + 6, &group(u64::from(v)), DIM);
        }
    }

    /// A tick on the left edge of `p` at `row`, with its label to the left.
    fn tick_left(&mut self, p: &Panel, row: u32, label: &str) {
        for x in p.x0 - 5..p.x0 - 1 {
            self.set(x, row, FRAME);
        }
        let width = 6 * label.chars().count() as u32 - 1;
        self.text(p.x0 - 8 - width, row.saturating_sub(3), label, DIM, 1);
    }

    /// A tick under the bottom edge of `p` at `col`, with its label under it.
    fn tick_below(&mut self, p: &Panel, col: u32, label: &str) {
        let y = p.y0 + p.h;
        for y in y + 1..y + 5 {
            self.set(col, y, FRAME);
        }
        self.text_centered(col, y + 8, label, DIM);
    }

    /// Text at scale 1 centred on `x`.
    fn text_centered(&mut self, x: u32, y: u32, s: &str, c: u8) {
        let width = (6 * s.chars().count() as u32).saturating_sub(1);
        self.text(x.saturating_sub(width / 2), y, s, c, 1);
    }

    fn hline(&mut self, x0: u32, x1: u32, y: u32, c: u8) {
        (x0..x1).for_each(|x| self.set(x, y, c));
    }

    fn border(&mut self, p: &Panel) {
        let (x1, y1) = (p.x0 + p.w, p.y0 + p.h);
        self.hline(p.x0 - 1, x1 + 1, p.y0 - 1, FRAME);
        self.hline(p.x0 - 1, x1 + 1, y1, FRAME);
        for y in p.y0 - 1..=y1 {
            self.set(p.x0 - 1, y, FRAME);
            self.set(x1, y, FRAME);
        }
    }

    fn text(&mut self, x: u32, y: u32, s: &str, c: u8, scale: u32) {
        for (i, ch) in s.chars().enumerate() {
            let rows = glyph(ch.to_ascii_uppercase());
            let gx = x + i as u32 * 6 * scale;
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits >> (4 - col) & 1 == 1 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                self.set(gx + col * scale + dx, y + r as u32 * scale + dy, c);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Where a count sits on the log colour scale that tops out at `most`: 0 for none, 1 for `most`.
fn shade_of(count: f64, most: u32) -> f64 {
    (1.0 + count).ln() / (1.0 + f64::from(most.max(1))).ln()
}

/// The palette entry of `t` (0..=1) in the ramp `lo..=hi`.
fn entry(t: f64, lo: u8, hi: u8) -> u8 {
    lo + (t.clamp(0.0, 1.0) * f64::from(hi - lo)).round() as u8
}

fn palette() -> Vec<[u8; 3]> {
    let mut p = vec![[0u8; 3]; 256];
    p[BACKGROUND as usize] = [11, 13, 18];
    p[FRAME as usize] = [52, 58, 70];
    p[TEXT as usize] = [214, 218, 226];
    p[DIM as usize] = [128, 134, 148];
    // Warm: dark violet → magenta → orange → pale yellow. Cool: deep blue → teal → ice.
    ramp(
        &mut p[WARM as usize..COOL as usize],
        &[
            [48.0, 18.0, 92.0],
            [130.0, 32.0, 120.0],
            [214.0, 66.0, 78.0],
            [248.0, 146.0, 34.0],
            [252.0, 240.0, 160.0],
        ],
    );
    ramp(
        &mut p[COOL as usize..],
        &[
            [18.0, 34.0, 72.0],
            [28.0, 84.0, 140.0],
            [52.0, 150.0, 190.0],
            [190.0, 236.0, 250.0],
        ],
    );
    p
}

/// Fills `out` with colours interpolated linearly through `stops`.
fn ramp(out: &mut [[u8; 3]], stops: &[[f32; 3]]) {
    let n = out.len().max(2) - 1;
    for (i, rgb) in out.iter_mut().enumerate() {
        let t = i as f32 / n as f32 * (stops.len() - 1) as f32;
        let k = (t as usize).min(stops.len() - 2);
        let f = t - k as f32;
        for (c, v) in rgb.iter_mut().enumerate() {
            *v = (stops[k][c] + (stops[k + 1][c] - stops[k][c]) * f).round() as u8;
        }
    }
}

/// `1234567` → `1,234,567`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A 5×7 bitmap font with one descender row (for `,` and `;`), rows top to bottom, bit 4 =
/// leftmost column. Unknown characters are blank.
fn glyph(c: char) -> [u8; 8] {
    match c {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11, 0x00],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E, 0x00],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E, 0x00],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E, 0x00],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F, 0x00],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10, 0x00],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F, 0x00],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11, 0x00],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E, 0x00],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C, 0x00],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11, 0x00],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F, 0x00],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11, 0x00],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x00],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E, 0x00],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10, 0x00],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D, 0x00],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11, 0x00],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E, 0x00],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E, 0x00],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04, 0x00],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A, 0x00],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11, 0x00],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04, 0x00],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F, 0x00],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E, 0x00],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E, 0x00],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F, 0x00],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E, 0x00],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02, 0x00],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E, 0x00],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E, 0x00],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08, 0x00],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E, 0x00],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C, 0x00],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00, 0x00],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00, 0x00],
        '\'' => [0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C, 0x00],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        ';' => [0x00, 0x0C, 0x0C, 0x00, 0x00, 0x0C, 0x04, 0x08],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02, 0x00],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08, 0x00],
        _ => [0; 8],
    }
}

#[cfg(test)]
mod tests {
    use super::group;

    #[test]
    fn group_puts_commas_between_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_000_000), "1,000,000");
    }
}
