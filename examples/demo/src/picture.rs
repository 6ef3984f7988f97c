//! The particle picture: a side view (x–y) and a top view (x–z) of the final frame, each pixel
//! shaded by how many particles fall on it (log scale), on a dark background.

use std::io;
use std::path::Path;

use crate::png;

pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 540;

const BACKGROUND: u8 = 0;
const FRAME: u8 = 1;
const TEXT: u8 = 2;
const DIM: u8 = 3;
const FLOOR: u8 = 4;
/// Palette entries `DENSITY..=255` run from sparse to dense.
const DENSITY: u8 = 16;

/// What the caption says.
#[derive(Debug)]
pub struct Caption<'a> {
    pub particles: usize,
    pub step: u64,
    pub kernel: &'a str,
}

/// Renders `xyz` (x, y, z per particle) and writes it as a PNG.
pub fn write(path: &Path, xyz: &[f32], caption: &Caption<'_>) -> io::Result<()> {
    let mut canvas = Canvas::new(WIDTH, HEIGHT);
    let title = format!(
        "HOSTLOOP PARTICLES   {} PARTICLES   STEP {}   {} KERNEL",
        group(caption.particles as u64),
        caption.step,
        caption.kernel.to_uppercase()
    );
    canvas.text(24, 18, &title, TEXT, 2);

    // One scale for both views: half the width of the box that holds every particle.
    let mut half = 1.0f32;
    for p in xyz.chunks_exact(3) {
        if p.iter().all(|v| v.is_finite()) {
            half = half.max(p[0].abs()).max(p[2].abs()).max(p[1] / 2.0);
        }
    }
    let half = half * 1.04;
    let (size, top) = (420u32, 50u32);
    let side = Panel {
        x0: 24,
        y0: top,
        size,
    };
    let plan = Panel {
        x0: WIDTH - 24 - size,
        y0: top,
        size,
    };

    // Side view: x across, y up from the floor at the panel's bottom.
    let mut counts = vec![0u32; (size * size) as usize];
    side.accumulate(&mut counts, xyz, |p| {
        ((p[0] + half) / (2.0 * half), p[1] / (2.0 * half))
    });
    canvas.shade(&side, &counts);
    canvas.hline(side.x0, side.x0 + size, side.y0 + size - 1, FLOOR);
    // Top view: x across, z up.
    counts.iter_mut().for_each(|c| *c = 0);
    plan.accumulate(&mut counts, xyz, |p| {
        ((p[0] + half) / (2.0 * half), (p[2] + half) / (2.0 * half))
    });
    canvas.shade(&plan, &counts);

    for (panel, label) in [(&side, "SIDE VIEW  X-Y"), (&plan, "TOP VIEW  X-Z")] {
        canvas.border(panel);
        canvas.text(panel.x0, panel.y0 + size + 12, label, DIM, 2);
    }
    canvas.text(
        side.x0,
        HEIGHT - 24,
        &format!("BOTH VIEWS SPAN {:.1} UNITS; BRIGHTER = DENSER", 2.0 * half),
        DIM,
        1,
    );
    png::write_indexed(path, WIDTH, HEIGHT, &palette(), &canvas.px)
}

/// A square view onto the particles.
struct Panel {
    x0: u32,
    y0: u32,
    size: u32,
}

impl Panel {
    /// Counts particles per pixel; `map` gives a particle's place in the unit square (0,0 at the
    /// bottom left).
    fn accumulate(&self, counts: &mut [u32], xyz: &[f32], map: impl Fn(&[f32]) -> (f32, f32)) {
        let n = self.size as f32;
        for p in xyz.chunks_exact(3) {
            let (u, v) = map(p);
            if (0.0..1.0).contains(&u) && (0.0..1.0).contains(&v) {
                let (col, row) = ((u * n) as u32, self.size - 1 - (v * n) as u32);
                counts[(row * self.size + col) as usize] += 1;
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

    fn shade(&mut self, panel: &Panel, counts: &[u32]) {
        let max = counts.iter().copied().max().unwrap_or(0).max(1) as f32;
        let levels = (255 - DENSITY) as f32;
        for row in 0..panel.size {
            for col in 0..panel.size {
                let c = counts[(row * panel.size + col) as usize];
                if c > 0 {
                    let t = (1.0 + c as f32).ln() / (1.0 + max).ln();
                    let level = DENSITY + (t * levels).round() as u8;
                    self.set(panel.x0 + col, panel.y0 + row, level);
                }
            }
        }
    }

    fn hline(&mut self, x0: u32, x1: u32, y: u32, c: u8) {
        (x0..x1).for_each(|x| self.set(x, y, c));
    }

    fn border(&mut self, p: &Panel) {
        let (x1, y1) = (p.x0 + p.size, p.y0 + p.size);
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
    p[FLOOR as usize] = [90, 110, 140];
    // Dark violet → magenta → orange → pale yellow.
    let stops: [[f32; 3]; 5] = [
        [48.0, 18.0, 92.0],
        [130.0, 32.0, 120.0],
        [214.0, 66.0, 78.0],
        [248.0, 146.0, 34.0],
        [252.0, 240.0, 160.0],
    ];
    for i in DENSITY..=255 {
        let t = (i - DENSITY) as f32 / (255 - DENSITY) as f32 * (stops.len() - 1) as f32;
        let k = (t as usize).min(stops.len() - 2);
        let f = t - k as f32;
        let mut rgb = [0u8; 3];
        for (c, out) in rgb.iter_mut().enumerate() {
            *out = (stops[k][c] + (stops[k + 1][c] - stops[k][c]) * f).round() as u8;
        }
        p[i as usize] = rgb;
    }
    p
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

/// A 5×7 bitmap font, rows top to bottom, bit 4 = leftmost column. Unknown characters are blank.
fn glyph(c: char) -> [u8; 7] {
    match c {
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1E],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        ';' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        _ => [0; 7],
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
