//! The particle picture, on a dark background, every pixel shaded by how many points (or
//! lines) fall on it, on a log scale:
//!
//! - left, the height of a sample of particles over the run, step by step, from the frames the
//!   host showed: each particle falls, bounces on the floor and loses a fifth of its speed per
//!   bounce;
//! - right, the top view (x across, z up) of every particle of the final frame, at one scale for
//!   both axes.

use std::io;
use std::path::Path;

use crate::png;

pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 540;

const BACKGROUND: u8 = 0;
const FRAME: u8 = 1;
const TEXT: u8 = 2;
const DIM: u8 = 3;
/// Palette entries `WARM..COOL` run from sparse to dense in warm colours, `COOL..=255` in cool.
const WARM: u8 = 16;
const COOL: u8 = 136;

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
    let (top, box_h) = (60u32, 400u32);
    let label_y = top + box_h + 14;

    // Left: height over the steps.
    let chart = Panel {
        x0: 24,
        y0: top,
        w: 520,
        h: box_h,
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
    canvas.shade(&chart, &counts, COOL, 255);
    canvas.border(&chart);
    canvas.text(24, label_y, "HEIGHT OVER TIME", DIM, 2);
    canvas.text(
        24,
        label_y + 22,
        &format!(
            "{} PARTICLES, STEPS {} TO {}, FROM THE FRAMES THE HOST SHOWED.  TOP = {:.1} UNITS.",
            group(k as u64),
            group(first),
            group(last),
            high
        ),
        DIM,
        1,
    );

    // Right: the final frame from above, one scale for x and z.
    let finite = |v: &f32| v.is_finite();
    let (mut half_x, mut half_z) = (1.0f32, 1.0f32);
    for p in xyz.chunks_exact(3).filter(|p| p.iter().all(finite)) {
        half_x = half_x.max(p[0].abs());
        half_z = half_z.max(p[2].abs());
    }
    let (half_x, half_z) = (half_x * 1.03, half_z * 1.03);
    let edge = 360.0;
    let scale = (edge / (2.0 * half_x)).min(edge / (2.0 * half_z));
    let (w, h) = ((2.0 * half_x * scale) as u32, (2.0 * half_z * scale) as u32);
    let plan = Panel {
        x0: WIDTH - 24 - 360 + (360 - w) / 2,
        y0: top + (box_h - h) / 2,
        w,
        h,
    };
    let mut counts = vec![0u32; (w * h) as usize];
    for p in xyz.chunks_exact(3) {
        let u = (p[0] + half_x) / (2.0 * half_x);
        let v = (p[2] + half_z) / (2.0 * half_z);
        if let Some((col, row)) = plan.pixel(u, v) {
            counts[(row * w + col) as usize] += 1;
        }
    }
    canvas.shade(&plan, &counts, WARM, COOL - 1);
    canvas.border(&plan);
    canvas.text(WIDTH - 24 - 360, label_y, "TOP VIEW AT THE END", DIM, 2);
    canvas.text(
        WIDTH - 24 - 360,
        label_y + 22,
        &format!(
            "ALL {} PARTICLES, X ACROSS, Z UP.  {:.1} X {:.1} UNITS.",
            group(caption.particles as u64),
            2.0 * half_x,
            2.0 * half_z
        ),
        DIM,
        1,
    );
    png::write_indexed(path, WIDTH, HEIGHT, &palette(), &canvas.px)
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

    /// Paints the non-empty pixels of `counts` with palette entries `lo..=hi`, by log density.
    fn shade(&mut self, panel: &Panel, counts: &[u32], lo: u8, hi: u8) {
        let max = counts.iter().copied().max().unwrap_or(0).max(1) as f32;
        let levels = (hi - lo) as f32;
        for row in 0..panel.h {
            for col in 0..panel.w {
                let c = counts[(row * panel.w + col) as usize];
                if c > 0 {
                    let t = (1.0 + c as f32).ln() / (1.0 + max).ln();
                    self.set(
                        panel.x0 + col,
                        panel.y0 + row,
                        lo + (t * levels).round() as u8,
                    );
                }
            }
        }
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
