//! What reaches the sink, in words: a line per message (topic, size, step and configuration,
//! array shape and value ranges, text), the counts per topic, and the tables built from them.
//!
//! Everything here runs on the main thread: the sink is called at a pump, the rest from the
//! host loop between pumps. Array contents are only borrowed for the sink call, so a line is
//! written then or never.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use hostloop::{ArrayView, ElemType, Message, Payload};

use crate::args::Print;

/// In the default mode, how many messages of a topic get a line of their own each second (at
/// most one per tenth of a second); the others are counted in one line a second.
pub const LINES_PER_SECOND: u32 = 10;

/// How many records of an array the value ranges are computed over.
pub const SAMPLE_RECORDS: usize = 4096;

/// Up to this many components are summarised one by one; more, all together.
const MAX_LABELLED: usize = 4;

/// Text payloads longer than this are cut in a line.
const TEXT_SHOWN: usize = 160;

/// What was seen last on a topic.
#[derive(Debug, Clone, PartialEq)]
enum Last {
    Bytes(usize),
    Text(String),
    Step {
        step: u64,
        configuration: Option<u64>,
    },
    Array {
        elem: ElemType,
        count: usize,
        components: usize,
    },
}

impl Last {
    fn describe(&self) -> String {
        match self {
            Last::Bytes(n) => format!("{n} bytes"),
            Last::Text(t) => quoted(t, 40),
            Last::Step {
                step,
                configuration,
            } => step_words(*step, *configuration),
            Last::Array {
                elem,
                count,
                components,
            } => shape(*elem, *count, *components),
        }
    }
}

#[derive(Debug, Clone)]
struct Topic {
    messages: u64,
    bytes: u64,
    last: Last,
    /// `messages` at the last periodic table, for its "+N".
    at_table: u64,
    /// Default mode: when this topic's last line was printed.
    shown_at: Option<Instant>,
}

/// The sink's state and the host's console.
#[derive(Debug)]
pub struct Output {
    print: Print,
    start: Instant,
    topics: BTreeMap<String, Topic>,
    /// Messages that reached the sink.
    pub messages: u64,
    /// `<name>/step` messages among them.
    pub frames: u64,
    /// The last step message: step and configuration.
    last_step: Option<(u64, Option<u64>)>,
    /// During and after a reload, until the next step message: the step before it.
    resume_from: Option<(u64, Option<u64>)>,
    /// Reloads after which the steps of the same configuration went back: (before, after).
    pub went_back: Vec<(u64, u64)>,
    /// Default mode: the second being counted, and the messages not shown in it.
    window: Instant,
    hidden: BTreeMap<String, u64>,
    /// `--summary-every`: when the last table was printed.
    table_at: Instant,
    messages_at_table: u64,
    stdout_closed: bool,
}

impl Output {
    pub fn new(print: Print) -> Self {
        let now = Instant::now();
        Output {
            print,
            start: now,
            topics: BTreeMap::new(),
            messages: 0,
            frames: 0,
            last_step: None,
            resume_from: None,
            went_back: Vec::new(),
            window: now,
            hidden: BTreeMap::new(),
            table_at: now,
            messages_at_table: 0,
            stdout_closed: false,
        }
    }

    /// Times are printed from here on (the plugin's load).
    pub fn restart_clock(&mut self) {
        let now = Instant::now();
        self.start = now;
        self.window = now;
        self.table_at = now;
    }

    /// Since [`restart_clock`](Output::restart_clock).
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Whether writing to stdout failed (it was closed: `| head`): the host stops then.
    pub fn stdout_closed(&self) -> bool {
        self.stdout_closed
    }

    /// Writes one line to stdout.
    pub fn line(&mut self, text: &str) {
        if self.stdout_closed {
            return;
        }
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            self.stdout_closed = true;
        }
    }

    /// Writes a line stamped with the time since the load.
    pub fn say(&mut self, text: &str) {
        let stamped = format!("{:>9.3} s  {text}", self.elapsed().as_secs_f64());
        self.line(&stamped);
    }

    /// The last step seen, in words (" at step 12, configuration 1"), or nothing.
    pub fn at_step(&self) -> String {
        match self.last_step {
            Some((step, configuration)) => format!(" at {}", step_words(step, configuration)),
            None => String::new(),
        }
    }

    /// A reload begins: the new build's first step is compared with the last one before it
    /// (a build that restores its state goes on from there).
    pub fn reload_begins(&mut self) {
        self.resume_from = self.last_step;
    }

    /// The reload failed: the old build goes on, nothing to compare.
    pub fn reload_failed(&mut self) {
        self.resume_from = None;
    }

    /// The sink: counts the message and prints it if the mode says so.
    pub fn message(&mut self, m: &Message<'_>) {
        self.messages += 1;
        let (size, last) = match m.payload {
            Payload::Bytes(b) => (b.len(), bytes_last(m.topic, b)),
            Payload::Array(a) => (
                array_bytes(&a),
                Last::Array {
                    elem: a.elem(),
                    count: a.count(),
                    components: a.components(),
                },
            ),
        };
        if let Last::Step {
            step,
            configuration,
        } = last
        {
            self.frames += 1;
            self.last_step = Some((step, configuration));
            if let Some((before, was)) = self.resume_from.take() {
                // Another configuration starts at its own step 0: nothing to compare.
                if was == configuration {
                    if step >= before {
                        self.say(&format!(
                            "the steps go on after the reload: step {step} (step {before} before it)"
                        ));
                    } else {
                        self.went_back.push((before, step));
                        self.say(&format!(
                            "the steps went back after the reload: step {step} after step {before} \
                             (did the new build restore the state?)"
                        ));
                    }
                }
            }
        }
        let topic = match self.topics.get_mut(m.topic) {
            Some(t) => {
                t.messages += 1;
                t.bytes += size as u64;
                t.last = last;
                t
            }
            None => self.topics.entry(m.topic.to_owned()).or_insert(Topic {
                messages: 1,
                bytes: size as u64,
                last,
                at_table: 0,
                shown_at: None,
            }),
        };
        let always = m.topic.ends_with("/error") || m.topic.starts_with("hostloop/");
        let show = match self.print {
            Print::Every => true,
            Print::Auto if !always => {
                let now = Instant::now();
                let gap = Duration::from_secs(1) / LINES_PER_SECOND;
                let due = topic.shown_at.is_none_or(|t| now.duration_since(t) >= gap);
                if due {
                    topic.shown_at = Some(now);
                }
                due
            }
            Print::Auto => true,
            Print::Summary(_) | Print::Quiet => always,
        };
        if show {
            let line = format!("{:<24} {size:>9} B  {}", m.topic, detail(m));
            self.say(&line);
        } else if self.print == Print::Auto {
            *self.hidden.entry(m.topic.to_owned()).or_default() += 1;
        }
    }

    /// Called from the host loop a few times a second: closes the default mode's second (one
    /// line counting what it did not show) and prints `--summary-every`'s table when due.
    pub fn tick(&mut self) {
        let now = Instant::now();
        match self.print {
            Print::Auto if now.duration_since(self.window) >= Duration::from_secs(1) => {
                if !self.hidden.is_empty() {
                    let total: u64 = self.hidden.values().sum();
                    let mut text = format!(
                        "... {total} more in the last {:.1} s not shown:",
                        now.duration_since(self.window).as_secs_f64()
                    );
                    for (topic, n) in std::mem::take(&mut self.hidden) {
                        let _ = write!(text, " {topic} x{n},");
                    }
                    text.pop();
                    text.push_str(&self.at_step());
                    text.push_str(" (--every-message shows all)");
                    self.say(&text);
                }
                self.window = now;
            }
            Print::Summary(every) if now.duration_since(self.table_at) >= every => {
                let since = now.duration_since(self.table_at);
                let header = format!(
                    "{} messages, +{} in the last {:.1} s",
                    self.messages,
                    self.messages - self.messages_at_table,
                    since.as_secs_f64()
                );
                self.say(&header);
                for line in self.table(true) {
                    self.line(&line);
                }
                for t in self.topics.values_mut() {
                    t.at_table = t.messages;
                }
                self.table_at = now;
                self.messages_at_table = self.messages;
            }
            _ => {}
        }
    }

    /// A line per topic: messages (with the increase since the last table), bytes, and what
    /// the last message carried.
    pub fn table(&self, increase: bool) -> Vec<String> {
        if self.topics.is_empty() {
            return vec!["  (no message reached the sink)".to_owned()];
        }
        let width = self
            .topics
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(5);
        let counts: Vec<String> = self
            .topics
            .values()
            .map(|t| {
                if increase {
                    format!("{} (+{})", t.messages, t.messages - t.at_table)
                } else {
                    t.messages.to_string()
                }
            })
            .collect();
        let count_width = counts.iter().map(String::len).max().unwrap_or(0).max(8);
        let mut lines = vec![format!(
            "  {:<width$}  {:>count_width$}  {:>10}  last",
            "topic", "messages", "bytes"
        )];
        for ((name, t), count) in self.topics.iter().zip(counts) {
            lines.push(format!(
                "  {name:<width$}  {count:>count_width$}  {:>10}  {}",
                human_bytes(t.bytes),
                t.last.describe()
            ));
        }
        lines
    }
}

/// `step 12, configuration 1` (or `step 12` for a plugin that sends no configuration).
fn step_words(step: u64, configuration: Option<u64>) -> String {
    match configuration {
        Some(c) => format!("step {step}, configuration {c}"),
        None => format!("step {step}"),
    }
}

/// `<name>/step`: the step, u64 little-endian, then (16 bytes) the configuration number.
fn step_of(topic: &str, b: &[u8]) -> Option<(u64, Option<u64>)> {
    if !topic.ends_with("/step") {
        return None;
    }
    let word = |i: usize| {
        b.get(i..i + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map(u64::from_le_bytes)
    };
    match b.len() {
        8 => Some((word(0)?, None)),
        16 => Some((word(0)?, Some(word(8)?))),
        _ => None,
    }
}

fn bytes_last(topic: &str, b: &[u8]) -> Last {
    if let Some((step, configuration)) = step_of(topic, b) {
        return Last::Step {
            step,
            configuration,
        };
    }
    match text_of(b) {
        Some(t) if !t.is_empty() => Last::Text(t.to_owned()),
        _ => Last::Bytes(b.len()),
    }
}

/// The bytes as text, if they are printable UTF-8.
fn text_of(b: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(b).ok()?;
    s.chars()
        .all(|c| !c.is_control() || c == '\n' || c == '\t' || c == '\r')
        .then_some(s)
}

/// `"text"`, escaped, cut at `max` characters.
fn quoted(text: &str, max: usize) -> String {
    let cut: String = text.chars().take(max).collect();
    if cut.len() < text.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// The bytes the records take (a strided view's gaps not counted).
fn array_bytes(a: &ArrayView<'_>) -> usize {
    a.count()
        .saturating_mul(a.components())
        .saturating_mul(a.elem().size())
}

/// What a message carries, after its topic and size.
fn detail(m: &Message<'_>) -> String {
    match m.payload {
        Payload::Array(a) => array_summary(&a),
        Payload::Bytes(b) => {
            if let Some((step, configuration)) = step_of(m.topic, b) {
                return step_words(step, configuration);
            }
            if b.is_empty() {
                return "(empty)".to_owned();
            }
            if let Some(t) = text_of(b) {
                return quoted(t, TEXT_SHOWN);
            }
            let mut hex = String::new();
            for byte in b.iter().take(16) {
                let _ = write!(hex, "{byte:02x} ");
            }
            hex.pop();
            if b.len() > 16 {
                hex.push_str(" ...");
            }
            hex
        }
    }
}

/// `f32 [1000 x 3]`.
fn shape(elem: ElemType, count: usize, components: usize) -> String {
    format!(
        "{} [{count} x {components}]",
        format!("{elem:?}").to_lowercase()
    )
}

/// One element of a record as `f64`; `None` past the bytes or for an unknown type.
fn element(a: &ArrayView<'_>, record: usize, component: usize) -> Option<f64> {
    let size = a.elem().size();
    let at = record
        .checked_mul(a.stride())?
        .checked_add(component.checked_mul(size)?)?;
    let b = a.bytes().get(at..at.checked_add(size)?)?;
    Some(match a.elem() {
        ElemType::U8 => f64::from(b[0]),
        ElemType::I32 => f64::from(i32::from_ne_bytes(b.try_into().ok()?)),
        ElemType::U32 => f64::from(u32::from_ne_bytes(b.try_into().ok()?)),
        ElemType::I64 => i64::from_ne_bytes(b.try_into().ok()?) as f64,
        ElemType::U64 => u64::from_ne_bytes(b.try_into().ok()?) as f64,
        ElemType::F32 => f64::from(f32::from_ne_bytes(b.try_into().ok()?)),
        ElemType::F64 => f64::from_ne_bytes(b.try_into().ok()?),
        _ => return None,
    })
}

/// Min, max and mean of some values, and how many were not finite.
#[derive(Debug, Default)]
struct Range {
    min: f64,
    max: f64,
    sum: f64,
    finite: u64,
    other: u64,
}

impl Range {
    fn add(&mut self, v: f64) {
        if !v.is_finite() {
            self.other += 1;
            return;
        }
        if self.finite == 0 {
            (self.min, self.max) = (v, v);
        } else {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
        self.sum += v;
        self.finite += 1;
    }

    fn describe(&self, label: &str, integer: bool) -> String {
        let mut s = if self.finite == 0 {
            format!("{label} -")
        } else {
            let bound = |v: f64| {
                if integer {
                    format!("{v:.0}")
                } else {
                    number(v)
                }
            };
            format!(
                "{label} {}..{} mean {}",
                bound(self.min),
                bound(self.max),
                number(self.sum / self.finite as f64)
            )
        };
        if self.other > 0 {
            let _ = write!(s, " ({} not finite)", self.other);
        }
        s
    }
}

/// `f32 [1000 x 3]  x -1.2..3.4 mean 0.5 | y ... | z ...`, over the first
/// [`SAMPLE_RECORDS`] records.
fn array_summary(a: &ArrayView<'_>) -> String {
    let mut s = shape(a.elem(), a.count(), a.components());
    let records = a.count().min(SAMPLE_RECORDS);
    if records == 0 {
        return s;
    }
    let integer = !matches!(a.elem(), ElemType::F32 | ElemType::F64);
    let components = a.components();
    let mut ranges: Vec<Range> = Vec::new();
    let slots = if components <= MAX_LABELLED {
        components.max(1)
    } else {
        1
    };
    ranges.resize_with(slots, Range::default);
    for r in 0..records {
        for c in 0..components {
            let Some(v) = element(a, r, c) else {
                return s;
            };
            let slot = if components <= MAX_LABELLED { c } else { 0 };
            ranges[slot].add(v);
        }
    }
    let labels: &[&str] = match components {
        1 => &["values"],
        2..=3 => &["x", "y", "z"],
        4 => &["x", "y", "z", "w"],
        _ => &["all components"],
    };
    s.push_str("  ");
    for (i, (range, label)) in ranges.iter().zip(labels).enumerate() {
        if i > 0 {
            s.push_str(" | ");
        }
        s.push_str(&range.describe(label, integer));
    }
    if records < a.count() {
        let _ = write!(s, "  (first {records} of {})", a.count());
    }
    s
}

/// A number in a few significant digits.
fn number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.3e}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// `12 B`, `3.4 kB`, `5.6 MB`, `7.8 GB`.
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1e3 {
        format!("{n} B")
    } else if n < 1e6 {
        format!("{:.1} kB", n / 1e3)
    } else if n < 1e9 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.1} GB", n / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_message_reads_as_its_step_and_configuration() {
        let mut b = 12u64.to_le_bytes().to_vec();
        assert_eq!(step_of("particles/step", &b), Some((12, None)));
        b.extend(1u64.to_le_bytes());
        assert_eq!(step_of("particles/step", &b), Some((12, Some(1))));
        assert_eq!(step_of("particles/positions", &b), None);
        assert_eq!(step_of("particles/step", &b[..5]), None);
        let m = Message::new("particles/step", Payload::Bytes(&b));
        assert_eq!(detail(&m), "step 12, configuration 1");
    }

    #[test]
    fn an_array_reads_as_its_shape_and_the_range_of_each_component() {
        let xyz: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let a = ArrayView::packed(&xyz, 3);
        assert_eq!(
            array_summary(&a),
            "f32 [10 x 3]  x 0..27.000 mean 13.500 | y 1.000..28.000 mean 14.500 | z 2.000..29.000 mean 15.500"
        );
        let modes = [0u8, 3, 1, 2];
        assert_eq!(
            array_summary(&ArrayView::packed(&modes, 1)),
            "u8 [4 x 1]  values 0..3 mean 1.500"
        );
        let wide = [1.0f64; 10];
        assert!(array_summary(&ArrayView::packed(&wide, 5))
            .starts_with("f64 [2 x 5]  all components 1.000..1.000"));
    }

    #[test]
    fn a_large_array_is_summarised_over_its_first_records() {
        let v = vec![f32::NAN; 3 * 5000];
        let s = array_summary(&ArrayView::packed(&v, 3));
        assert!(
            s.contains("(15000 not finite)") || s.contains("(4096 not finite)"),
            "{s}"
        );
        assert!(s.ends_with("(first 4096 of 5000)"), "{s}");
    }

    #[test]
    fn bytes_read_as_text_when_they_are_text_and_as_hex_otherwise() {
        let text = Message::new("particles/error", Payload::Bytes(b"unknown key `colour`"));
        assert_eq!(detail(&text), "\"unknown key `colour`\"");
        let raw = Message::new("x/blob", Payload::Bytes(&[0, 1, 255]));
        assert_eq!(detail(&raw), "00 01 ff");
    }
}
