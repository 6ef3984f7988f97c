//! Runs the demo binary as a user would and checks what it promises: frames reach the sink on
//! the main thread, the doorbell fd drives the pumps, the summary's pump counts add up and agree
//! with hostloop's, the chart draws each pump against the budget of one pump, the picture's views
//! have ticked axes and colour scales, exit code 0. Nothing here depends on how fast it runs.
//!
//! The first run in a fresh target directory also builds the particles plugin (the demo does it
//! itself), which takes a while in debug builds.

use std::path::PathBuf;
use std::process::{Command, Output};

fn demo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hostloop-demo"))
        .args(args)
        .output()
        .expect("the demo binary runs")
}

/// A fresh directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("hostloop-demo-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The number after which `label` is written on the summary line starting with `line`, e.g.
/// `number(out, "pumps", "woken by")` is 12 for `pumps  12 woken by …`; digits may be grouped.
fn number_before(out: &str, line: &str, label: &str) -> u64 {
    let l = out
        .lines()
        .find(|l| l.trim_start().starts_with(line))
        .unwrap_or_else(|| panic!("no `{line}` line in:\n{out}"));
    let at = l
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in `{l}`"));
    let word = l[..at].split_whitespace().last().unwrap_or("");
    word.trim_start_matches('(')
        .replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("no number before `{label}` in `{l}`"))
}

#[test]
fn a_short_run_delivers_frames_through_the_fd_driven_sink_and_writes_valid_pictures() {
    let dir = TempDir::new("run");
    let out_dir = dir.0.to_str().unwrap();
    let run = demo(&[
        "--agents",
        "2000",
        "--seconds",
        "1",
        "--workers",
        "1",
        "--quiet",
        "--out",
        out_dir,
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        run.status
    );
    assert!(
        stdout.contains("hostloop-demo summary: 2,000 particles"),
        "{stdout}"
    );

    // Frames arrived through the sink, all of them on the main thread.
    assert!(
        number_before(&stdout, "frames", "delivered to the sink") > 0,
        "{stdout}"
    );
    let messages = number_before(&stdout, "sink", "messages");
    assert!(messages > 0);
    assert_eq!(
        number_before(&stdout, "sink", "on the main thread"),
        messages
    );

    // The doorbell fd, not only the frame timer, started pumps that ran work.
    assert!(
        number_before(&stdout, "pumps", "woken by the doorbell") > 0,
        "{stdout}"
    );
    assert!(number_before(&stdout, "pumps", "item") > 0, "{stdout}");
    // The frame timer paces the loop at 60 Hz: never faster (a loaded machine may drop ticks,
    // so there is no lower bound beyond "it ran").
    let frames = number_before(&stdout, "host frame time", "frames at");
    assert!(
        (1..=61).contains(&frames),
        "{frames} frames in 1 s:\n{stdout}"
    );
    let p50: f64 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("host frame time"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .expect("a p50 frame time");
    assert!(
        p50 >= 16.0,
        "p50 frame time {p50} ms is shorter than a 60 Hz frame"
    );
    // Shutdown joined threads and left none behind.
    assert!(number_before(&stdout, "runtime shutdown", "threads joined") > 0);
    assert_eq!(number_before(&stdout, "runtime shutdown", "stragglers"), 0);

    // The summary's pump counts add up, agree with hostloop's, and the chart shows them.
    let svg = std::fs::read_to_string(dir.0.join("frame-times.svg")).expect("the plot was written");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    the_chart_plots_each_pump_against_the_budget_of_one_pump(&stdout, &svg);

    // The PNG: a whole file whose views carry ticks on their axes and a colour scale each.
    let png = std::fs::read(dir.0.join("particles.png")).expect("particles.png was written");
    the_picture_has_ticked_axes_and_a_colour_scale_per_view(&png);
}

/// A run whose budget no item fits in: every pump that ran work overran, and the summary names
/// what each overrunning pump ran, so the reasons cover all of them.
#[test]
fn pumps_over_a_tiny_budget_are_each_explained_by_the_item_they_ran() {
    let dir = TempDir::new("tiny-budget");
    let run = demo(&[
        "--agents",
        "2000",
        "--seconds",
        "0.5",
        "--workers",
        "1",
        "--budget-ms",
        "0.001",
        // The sink copies each frame, so an overrunning pump's one item is a timed copy.
        "--copy-in-sink",
        "--quiet",
        "--out",
        dir.0.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let svg = std::fs::read_to_string(dir.0.join("frame-times.svg")).expect("the plot was written");
    let over = the_chart_plots_each_pump_against_the_budget_of_one_pump(&stdout, &svg);
    assert!(over > 0, "no pump overran a 1 µs budget:\n{stdout}");
    assert!(
        stdout.contains("ran over, because a pump never splits an item:"),
        "{stdout}"
    );
    // Frames are what the pumps ran, so some overrunning pump ran one; the sink timed its copy.
    assert!(
        stdout.contains("ran a single item, a frame: the sink's copy of its 24.0 kB took"),
        "{stdout}"
    );
    assert!(svg.contains("budget of one pump: 0.001 ms"), "{svg}");
}

/// Checks the summary's `pump time` and `pump budget` lines against each other and against
/// hostloop's own counters, and the chart against them: one dot per pump that ran work, on the
/// right side of the budget line, at its value; the frames in a panel of their own. Returns the
/// number of pumps over the budget.
fn the_chart_plots_each_pump_against_the_budget_of_one_pump(out: &str, svg: &str) -> u64 {
    let line = |start: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no `{start}` line in:\n{out}"))
            .to_string()
    };
    // `pump budget       W of N pumps within the B ms budget; K ran over, …` (or `none over`).
    let budget_line = line("pump budget");
    let within = number_before(out, "pump budget", "of ");
    let working = number_before(out, "pump budget", "pumps within");
    let budget_text = word_before(&budget_line, " ms budget");
    let budget_ms: f64 = budget_text.parse().unwrap();
    let budget_us = (budget_ms * 1000.0).round() as u64;
    let over = if budget_line.contains("none over") {
        0
    } else {
        number_before(out, "pump budget", "ran over")
    };
    assert_eq!(within + over, working, "{budget_line}");
    assert_eq!(
        number_before(out, "pump time", "pumps that ran work"),
        working,
        "{out}"
    );
    // The reasons given for the overruns cover each of them.
    if over > 0 {
        let reasons: u64 = out
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("pump budget"))
            .skip(1)
            .take_while(|l| l.starts_with("                    "))
            .filter(|l| l.contains(" ran "))
            .map(|l| {
                l.split_whitespace()
                    .next()
                    .unwrap()
                    .replace(',', "")
                    .parse::<u64>()
                    .unwrap()
            })
            .sum();
        assert_eq!(reasons, over, "{out}");
    }
    // hostloop counted the same pumps and overruns.
    let counters = line("hostloop's own counters");
    assert!(counters.contains("agree"), "{counters}");
    let all_pumps = number_before(out, "pumps", "woken by the doorbell")
        + number_before(out, "pumps", "by the frame timer");
    assert_eq!(
        number_before(out, "hostloop's own counters", "pumps in the loop"),
        all_pumps,
        "{out}"
    );
    assert_eq!(
        working + number_before(out, "hostloop's own counters", "found nothing to run"),
        all_pumps,
        "{out}"
    );
    assert!(number_before(out, "hostloop's own counters", "over the budget") >= over);

    // The chart: a dot per pump that ran work, on its side of the budget line.
    let within_dots = dots(svg, "pumps-within");
    let over_dots = dots(svg, "pumps-over");
    assert_eq!(within_dots.len() as u64, within, "{budget_line}");
    assert_eq!(over_dots.len() as u64, over, "{budget_line}");
    assert!(within_dots.iter().all(|d| d.us < budget_us));
    assert!(over_dots.iter().all(|d| d.us >= budget_us));
    let budget = element(svg, r#"<line id="pump-budget""#);
    assert_eq!(attr(budget, "data-us"), budget_us.to_string());
    let budget_y: f64 = attr(budget, "y1").parse().unwrap();
    assert!(svg.contains(&format!("budget of one pump: {budget_text} ms")));
    assert_eq!(
        svg.matches(r#"id="pump-budget""#).count(),
        1,
        "one budget line"
    );
    // Each dot sits at its value on one linear axis, the budget line at the budget.
    let all: Vec<&Dot> = within_dots.iter().chain(&over_dots).collect();
    if let Some(far) = all.iter().max_by_key(|d| d.us.abs_diff(budget_us)) {
        if far.us != budget_us {
            let per_us = (far.cy - budget_y) / (far.us as f64 - budget_us as f64);
            assert!(per_us < 0.0, "larger times are higher up");
            for d in &all {
                let expected = budget_y + per_us * (d.us as f64 - budget_us as f64);
                assert!(
                    (d.cy - expected).abs() < 0.2,
                    "dot {d:?} is not at its value"
                );
            }
        }
    }
    // The dots' values are the pump times the summary gives: the same median and maximum.
    let mut us: Vec<u64> = all.iter().map(|d| d.us).collect();
    us.sort_unstable();
    let pump_line = line("pump time");
    let printed: Vec<f64> = pump_line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .take(3)
        .collect();
    if let (Some(&max), Some(&median)) = (
        us.last(),
        us.get(((us.len() - 1) as f64 * 0.5).round() as usize),
    ) {
        assert!(
            (median as f64 / 1000.0 - printed[0]).abs() < 0.0051,
            "{pump_line}"
        );
        assert!(
            (max as f64 / 1000.0 - printed[2]).abs() < 0.0051,
            "{pump_line}"
        );
    }
    // The frames are a series of their own, against the frame period.
    let frames = element(svg, r#"<polyline id="frame-lengths""#);
    assert_eq!(
        attr(frames, "points").split_whitespace().count() as u64,
        number_before(out, "host frame time", "frames at"),
    );
    assert!(svg.contains(r#"id="frame-period""#));
    over
}

/// A dot of the chart: its value and its height on the page.
#[derive(Debug)]
struct Dot {
    us: u64,
    cy: f64,
}

fn dots(svg: &str, id: &str) -> Vec<Dot> {
    let group = element(svg, &format!(r#"<g id="{id}""#));
    let group = &svg[svg.find(group).unwrap()..];
    let group = &group[..group.find("</g>").expect("the group closes")];
    group
        .split("<circle")
        .skip(1)
        .map(|c| Dot {
            us: attr(c, "data-us").parse().unwrap(),
            cy: attr(c, "cy").parse().unwrap(),
        })
        .collect()
}

/// The tag that starts with `start`.
fn element<'a>(svg: &'a str, start: &str) -> &'a str {
    let at = svg
        .find(start)
        .unwrap_or_else(|| panic!("no `{start}` in the chart"));
    &svg[at..at + svg[at..].find('>').unwrap()]
}

fn attr<'a>(tag: &'a str, name: &str) -> &'a str {
    let key = format!(r#" {name}=""#);
    let at = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in `{tag}`"))
        + key.len();
    &tag[at..at + tag[at..].find('"').unwrap()]
}

/// The word just before `label` in `line`.
fn word_before<'a>(line: &'a str, label: &str) -> &'a str {
    let at = line
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in `{line}`"));
    line[..at].split_whitespace().last().unwrap_or("")
}

/// Decodes the PNG and checks what a reader needs to read its two views: ticks on the left
/// and bottom edge of each, and a colour scale for each that holds every colour the view is
/// painted in.
fn the_picture_has_ticked_axes_and_a_colour_scale_per_view(png: &[u8]) {
    let image = decode_png(png);
    let (w, h) = (image.width, image.height);
    assert_eq!(w, 960);
    assert!(
        h > 540,
        "the picture has room for its tick labels and colour scales: {h} rows"
    );
    let background = image.at(0, 0);

    // A view's edges are long straight lines of one colour; its ticks, short lines of that
    // colour just outside them: (column, first row, rows) and (row, first column, columns).
    let mut left_edges = Vec::new();
    for x in 4..w {
        for (y0, len, c) in runs((0..h).map(|y| image.at(x, y))) {
            if len >= 200 && c != background {
                let ticks = runs((y0 + 2..y0 + len - 2).map(|y| image.at(x - 3, y)))
                    .filter(|r| r.2 == c)
                    .count();
                if ticks >= 3 {
                    left_edges.push((x, y0, len));
                }
            }
        }
    }
    let mut bottom_edges = Vec::new();
    for y in 0..h - 4 {
        for (x0, len, c) in runs((0..w).map(|x| image.at(x, y))) {
            if len >= 200 && c != background {
                let ticks = runs((x0 + 2..x0 + len - 2).map(|x| image.at(x, y + 3)))
                    .filter(|r| r.2 == c)
                    .count();
                if ticks >= 3 {
                    bottom_edges.push((y, x0, len));
                }
            }
        }
    }
    // A view: a left edge and a bottom edge that meet at its lower left corner.
    let views: Vec<Vec<[u8; 3]>> = left_edges
        .iter()
        .filter_map(|&(x, y0, len)| {
            let bottom = y0 + len - 1;
            let &(_, _, width) = bottom_edges
                .iter()
                .find(|&&(y, x0, _)| y == bottom && x0 == x)?;
            let mut colours: Vec<[u8; 3]> = (y0 + 1..bottom)
                .flat_map(|y| (x + 1..x + width - 1).map(move |x| (x, y)))
                .map(|(x, y)| image.at(x, y))
                .filter(|&c| c != background)
                .collect();
            colours.sort_unstable();
            colours.dedup();
            Some(colours)
        })
        .collect();
    assert_eq!(
        views.len(),
        2,
        "two views with ticks on their left and bottom edges (left edges {left_edges:?}, bottom edges {bottom_edges:?})"
    );

    // Colour scales: bars of at least 120 columns, each column one colour over 8 rows,
    // brighter (or as bright) from left to right.
    let luma = |c: [u8; 3]| 299 * c[0] as u32 + 587 * c[1] as u32 + 114 * c[2] as u32;
    let column = |x: u32, y: u32| {
        let c = image.at(x, y);
        (c != background && (1..8).all(|d| image.at(x, y + d) == c)).then_some(c)
    };
    let mut scales: Vec<Vec<[u8; 3]>> = Vec::new();
    for y in 1..h - 8 {
        let mut x = 0;
        while x < w {
            let mut colours: Vec<[u8; 3]> = Vec::new();
            let mut end = x;
            while end < w {
                match column(end, y) {
                    Some(c) if colours.last().is_none_or(|&p| luma(c) >= luma(p)) => {
                        colours.push(c)
                    }
                    _ => break,
                }
                end += 1;
            }
            // Counted once, at its top row.
            if colours.len() >= 120 && image.at(x, y - 1) != image.at(x, y) {
                colours.sort_unstable();
                colours.dedup();
                scales.push(colours);
            }
            x = end.max(x + 1);
        }
    }
    // Each view is painted only in the colours of a scale of its own.
    let mut scale_of = Vec::new();
    for (i, view) in views.iter().enumerate() {
        assert!(!view.is_empty(), "view {i} shows nothing");
        let scale = scales
            .iter()
            .position(|s| view.iter().all(|c| s.binary_search(c).is_ok()))
            .unwrap_or_else(|| {
                panic!(
                    "no colour scale holds the {} colours of view {i} ({} scales found)",
                    view.len(),
                    scales.len()
                )
            });
        scale_of.push(scale);
    }
    assert_ne!(scale_of[0], scale_of[1], "each view has a scale of its own");
}

/// Runs of equal values: (start, length, value).
fn runs<T: PartialEq + Copy>(
    values: impl Iterator<Item = T>,
) -> impl Iterator<Item = (u32, u32, T)> {
    let mut out: Vec<(u32, u32, T)> = Vec::new();
    for (i, v) in values.enumerate() {
        match out.last_mut() {
            Some(last) if last.2 == v => last.1 += 1,
            _ => out.push((i as u32, 1, v)),
        }
    }
    out.into_iter()
}

/// An image as RGB pixels.
struct Image {
    width: u32,
    height: u32,
    rgb: Vec<[u8; 3]>,
}

impl Image {
    fn at(&self, x: u32, y: u32) -> [u8; 3] {
        self.rgb[(y * self.width + x) as usize]
    }
}

/// Reads an 8-bit palette PNG (what the demo writes), checking each chunk's CRC.
fn decode_png(png: &[u8]) -> Image {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the PNG signature");
    let (mut at, mut header, mut palette, mut data) = (8, None, Vec::new(), Vec::new());
    let mut end = false;
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
        let kind = &png[at + 4..at + 8];
        let body = &png[at + 8..at + 8 + len];
        let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
        assert_eq!(crc, crc32(&png[at + 4..at + 8 + len]), "CRC of {:?}", kind);
        match kind {
            b"IHDR" => header = Some(body.to_vec()),
            b"PLTE" => palette = body.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect(),
            b"IDAT" => data.extend_from_slice(body),
            b"IEND" => end = true,
            _ => {}
        }
        at += 12 + len;
    }
    assert!(end && at == png.len(), "IEND ends the file");
    let header = header.expect("an IHDR chunk");
    let width = u32::from_be_bytes(header[0..4].try_into().unwrap());
    let height = u32::from_be_bytes(header[4..8].try_into().unwrap());
    assert_eq!(
        &header[8..13],
        &[8, 3, 0, 0, 0],
        "8-bit palette, not interlaced"
    );
    let raw = inflate(&data);
    let stride = width as usize + 1;
    assert_eq!(raw.len(), stride * height as usize);
    let mut pixels = vec![0u8; width as usize * height as usize];
    for y in 0..height as usize {
        let filter = raw[y * stride];
        for x in 0..width as usize {
            let v = raw[y * stride + 1 + x];
            let a = if x > 0 {
                pixels[y * width as usize + x - 1]
            } else {
                0
            };
            let b = if y > 0 {
                pixels[(y - 1) * width as usize + x]
            } else {
                0
            };
            let c = if x > 0 && y > 0 {
                pixels[(y - 1) * width as usize + x - 1]
            } else {
                0
            };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((a as u16 + b as u16) / 2) as u8,
                4 => {
                    let p = a as i16 + b as i16 - c as i16;
                    let (pa, pb, pc) = (
                        (p - a as i16).abs(),
                        (p - b as i16).abs(),
                        (p - c as i16).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("filter type {f}"),
            };
            pixels[y * width as usize + x] = v.wrapping_add(predicted);
        }
    }
    Image {
        width,
        height,
        rgb: pixels.iter().map(|&i| palette[i as usize]).collect(),
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |mut c, &b| {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        c
    })
}

/// A zlib stream inflated (RFC 1950/1951: stored, fixed and dynamic Huffman blocks), its
/// Adler-32 checked.
fn inflate(z: &[u8]) -> Vec<u8> {
    assert_eq!(
        (u16::from(z[0]) << 8 | u16::from(z[1])) % 31,
        0,
        "zlib header"
    );
    let mut bits = Bits {
        bytes: &z[2..],
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        let last = bits.take(1);
        match bits.take(2) {
            0 => {
                bits.pos = bits.pos.div_ceil(8) * 8;
                let len = bits.take(16) as usize;
                bits.take(16);
                let at = bits.pos / 8;
                out.extend_from_slice(&bits.bytes[at..at + len]);
                bits.pos += 8 * len;
            }
            kind @ (1 | 2) => {
                let (lit, dist) = if kind == 1 {
                    let mut l = [8u8; 288];
                    l[144..256].fill(9);
                    l[256..280].fill(7);
                    (Huffman::new(&l), Huffman::new(&[5; 30]))
                } else {
                    dynamic_codes(&mut bits)
                };
                codes(&mut bits, &lit, &dist, &mut out);
            }
            _ => panic!("a reserved block type"),
        }
        if last == 1 {
            break;
        }
    }
    let at = bits.pos.div_ceil(8);
    let adler = u32::from_be_bytes(bits.bytes[at..at + 4].try_into().unwrap());
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &out {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    assert_eq!(adler, b << 16 | a, "Adler-32");
    out
}

struct Bits<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    /// `n` bits, least significant first.
    fn take(&mut self, n: u32) -> u32 {
        let mut v = 0;
        for i in 0..n {
            let bit = (self.bytes[self.pos / 8] >> (self.pos % 8)) & 1;
            v |= (bit as u32) << i;
            self.pos += 1;
        }
        v
    }
}

/// A canonical Huffman code: how many codes of each length, and the symbols in code order.
struct Huffman {
    counts: [u16; 16],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new(lengths: &[u8]) -> Self {
        let mut counts = [0u16; 16];
        for &l in lengths {
            counts[l as usize] += 1;
        }
        counts[0] = 0;
        let mut symbols: Vec<(u8, u16)> = lengths
            .iter()
            .enumerate()
            .filter(|(_, &l)| l > 0)
            .map(|(s, &l)| (l, s as u16))
            .collect();
        symbols.sort_unstable();
        Huffman {
            counts,
            symbols: symbols.into_iter().map(|(_, s)| s).collect(),
        }
    }

    fn decode(&self, bits: &mut Bits<'_>) -> u16 {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= bits.take(1) as i32;
            let count = self.counts[len] as i32;
            if code - first < count {
                return self.symbols[(index + code - first) as usize];
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        panic!("a code longer than 15 bits");
    }
}

fn dynamic_codes(bits: &mut Bits<'_>) -> (Huffman, Huffman) {
    let (hlit, hdist, hclen) = (
        bits.take(5) as usize + 257,
        bits.take(5) as usize + 1,
        bits.take(4) as usize + 4,
    );
    const ORDER: [usize; 19] = [
        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
    ];
    let mut lengths = [0u8; 19];
    for &i in &ORDER[..hclen] {
        lengths[i] = bits.take(3) as u8;
    }
    let code = Huffman::new(&lengths);
    let mut all = Vec::with_capacity(hlit + hdist);
    while all.len() < hlit + hdist {
        match code.decode(bits) {
            s @ 0..=15 => all.push(s as u8),
            16 => {
                let prev = *all.last().expect("a length to repeat");
                all.extend(std::iter::repeat_n(prev, 3 + bits.take(2) as usize));
            }
            17 => all.extend(std::iter::repeat_n(0, 3 + bits.take(3) as usize)),
            _ => all.extend(std::iter::repeat_n(0, 11 + bits.take(7) as usize)),
        }
    }
    (Huffman::new(&all[..hlit]), Huffman::new(&all[hlit..]))
}

fn codes(bits: &mut Bits<'_>, lit: &Huffman, dist: &Huffman, out: &mut Vec<u8>) {
    const LEN_BASE: [usize; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
        131, 163, 195, 227, 258,
    ];
    const LEN_EXTRA: [u32; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    const DIST_BASE: [usize; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
        2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
    ];
    const DIST_EXTRA: [u32; 30] = [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
        13, 13,
    ];
    loop {
        match lit.decode(bits) as usize {
            s @ 0..=255 => out.push(s as u8),
            256 => return,
            s => {
                let l = s - 257;
                let len = LEN_BASE[l] + bits.take(LEN_EXTRA[l]) as usize;
                let d = dist.decode(bits) as usize;
                let back = DIST_BASE[d] + bits.take(DIST_EXTRA[d]) as usize;
                for _ in 0..len {
                    out.push(out[out.len() - back]);
                }
            }
        }
    }
}

#[test]
fn headless_runs_write_no_pictures() {
    let dir = TempDir::new("headless");
    let run = demo(&[
        "--agents",
        "1000",
        "--seconds",
        "0.3",
        "--workers",
        "1",
        "--quiet",
        "--headless",
        "--out",
        dir.0.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(!dir.0.join("particles.png").exists());
    assert!(!dir.0.join("frame-times.svg").exists());
}

#[test]
fn a_missing_plugin_fails_with_hostloops_error_message() {
    let dir = TempDir::new("missing");
    let run = demo(&[
        "--plugin",
        dir.0.join("nope.so").to_str().unwrap(),
        "--seconds",
        "0.1",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("hl_plugin_load"), "{stderr}");
    assert!(stderr.contains("HL_STATUS_FILE_NOT_FOUND"), "{stderr}");
}

#[test]
fn a_bad_flag_prints_the_usage_and_exits_with_2() {
    let run = demo(&["--agents", "0"]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--agents must be"), "{stderr}");
    assert!(stderr.contains("usage: hostloop-demo"), "{stderr}");
}

#[test]
fn an_isolated_plugin_whose_worker_is_killed_comes_back_and_the_host_goes_on() {
    let run = demo(&[
        "--agents",
        "2000",
        "--seconds",
        "1.5",
        "--workers",
        "1",
        "--quiet",
        "--headless",
        "--isolated",
        "--kill-worker-at",
        "0.5",
    ]);
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        out.contains("isolated: the plugin runs in worker process"),
        "{out}"
    );
    assert!(
        out.contains("killed by signal 9 (SIGKILL)"),
        "the crash report reached the sink:\n{out}"
    );
    assert!(
        out.contains("resuming from step"),
        "the restored simulation sent frames:\n{out}"
    );
    // The host ran its whole loop and shut down cleanly around the crash.
    assert!(
        number_before(&out, "host frame time", "frames at") > 0,
        "{out}"
    );
    assert_eq!(
        number_before(&out, "runtime shutdown", "stragglers"),
        0,
        "{out}"
    );
}
