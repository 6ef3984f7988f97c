//! What the pumps of the host loop did against their budget: counted from each pump's
//! `hl_pump_report_t` and from the sink's own timing of its frame copies, then said in words.
//!
//! A pump takes no new item once its budget is spent, but never splits one: a pump that
//! overran was running an item when the budget ran out. The demo's items are frame deliveries
//! whose sink copies the whole frame, so it times that copy to name what the overrunning items
//! spent their time on, rather than guess.

use crate::picture::group;
use crate::{percentiles, Percentiles, Source};

/// The sink's copies of frames into the host's buffer during one pump, timed in the sink.
#[derive(Debug, Clone, Copy, Default)]
pub struct Copies {
    pub count: u32,
    /// Their time together, and the longest one, in ms.
    pub ms: f64,
    pub longest_ms: f64,
    /// The size of the last one.
    pub bytes: u64,
}

impl Copies {
    /// Counts one more copy of `bytes` that took `ms`.
    pub fn add(self, ms: f64, bytes: u64) -> Copies {
        Copies {
            count: self.count + 1,
            ms: self.ms + ms,
            longest_ms: self.longest_ms.max(ms),
            bytes,
        }
    }
}

/// One `hl_runtime_pump` of the host loop.
#[derive(Debug, Clone, Copy)]
pub struct PumpSample {
    pub source: Source,
    /// Items it ran.
    pub ran: u64,
    /// When it started, in seconds since the host loop began.
    pub at_s: f64,
    /// Its time as hostloop measured it (`hl_pump_report_t::elapsed_us`, the sink included):
    /// what the budget limits.
    pub elapsed_us: u64,
    /// It ran past its budget: `elapsed_us` is at least the budget.
    pub over_budget: bool,
    /// The sink's frame copies inside it.
    pub copies: Copies,
}

impl PumpSample {
    pub fn ms(&self) -> f64 {
        self.elapsed_us as f64 / 1000.0
    }
}

/// The pumps of the host loop against their budget.
#[derive(Debug, Default)]
pub struct Figures {
    /// The budget of one pump, in microseconds.
    pub budget_us: u64,
    /// All pumps, and those that ran at least one item.
    pub pumps: usize,
    pub working: usize,
    /// Of the pumps that ran work: within the budget, and over it.
    pub within: usize,
    pub over: usize,
    /// Pumps that ran nothing and still took longer than the budget.
    pub idle_over: usize,
    /// Pumps over the budget that ran one item which copied a frame, one item which copied
    /// none, and several items.
    pub over_one_frame: usize,
    pub over_one_other: usize,
    pub over_several: usize,
    /// The fewest and the most items of the pumps over the budget that ran several.
    pub over_fewest_items: u64,
    pub over_most_items: u64,
    /// The longest pump over the budget whose one item copied no frame, in ms.
    pub other_longest_ms: f64,
    /// In the pumps over the budget whose one item was a frame: the sink's copy of it (shortest,
    /// median, longest, in ms), and the share of those pumps' time it took.
    pub frame_copy_shortest_ms: f64,
    pub frame_copy: Percentiles,
    pub frame_copy_share: f64,
    /// The time of the pumps that ran work, in ms.
    pub time: Percentiles,
    /// The longest frame copy of the whole loop, in ms, and the frame's size.
    pub longest_copy_ms: f64,
    pub frame_bytes: u64,
}

impl Figures {
    pub fn new(pumps: &[PumpSample], budget_us: u64) -> Self {
        let working: Vec<&PumpSample> = pumps.iter().filter(|p| p.ran > 0).collect();
        let over: Vec<&PumpSample> = working.iter().copied().filter(|p| p.over_budget).collect();
        let one_frame: Vec<&PumpSample> = over
            .iter()
            .copied()
            .filter(|p| p.ran == 1 && p.copies.count > 0)
            .collect();
        let one_other: Vec<&PumpSample> = over
            .iter()
            .copied()
            .filter(|p| p.ran == 1 && p.copies.count == 0)
            .collect();
        let copy_ms: f64 = one_frame.iter().map(|p| p.copies.ms).sum();
        let pump_ms: f64 = one_frame.iter().map(|p| p.ms()).sum();
        Figures {
            budget_us,
            pumps: pumps.len(),
            working: working.len(),
            within: working.len() - over.len(),
            over: over.len(),
            idle_over: pumps.iter().filter(|p| p.ran == 0 && p.over_budget).count(),
            over_one_frame: one_frame.len(),
            over_one_other: one_other.len(),
            over_several: over.iter().filter(|p| p.ran > 1).count(),
            over_fewest_items: over
                .iter()
                .map(|p| p.ran)
                .filter(|&n| n > 1)
                .min()
                .unwrap_or(0),
            over_most_items: over.iter().map(|p| p.ran).max().unwrap_or(0),
            other_longest_ms: one_other.iter().map(|p| p.ms()).fold(0.0, f64::max),
            frame_copy_shortest_ms: one_frame
                .iter()
                .map(|p| p.copies.longest_ms)
                .reduce(f64::min)
                .unwrap_or(0.0),
            frame_copy: percentiles(one_frame.iter().map(|p| p.copies.longest_ms)),
            frame_copy_share: if pump_ms > 0.0 {
                copy_ms / pump_ms
            } else {
                0.0
            },
            time: percentiles(working.iter().map(|p| p.ms())),
            longest_copy_ms: pumps
                .iter()
                .map(|p| p.copies.longest_ms)
                .fold(0.0, f64::max),
            frame_bytes: pumps
                .iter()
                .rev()
                .find(|p| p.copies.count > 0)
                .map_or(0, |p| p.copies.bytes),
        }
    }

    /// One sentence on the overruns, for the plot.
    pub fn sentence(&self) -> String {
        if self.over == 0 {
            return "No pump that ran work took longer than its budget.".into();
        }
        let over = group(self.over as u64);
        if self.over_one_frame == 0 {
            return format!("{over} ran over because a pump never splits an item.");
        }
        format!(
            "{over} ran over because a pump never splits an item: in {} of them the one item was a frame, whose {} copy in the sink took up to {:.2} ms.",
            group(self.over_one_frame as u64),
            size(self.frame_bytes),
            self.frame_copy.max
        )
    }

    /// The summary's `pump budget` lines: the first with its label, the rest indented under it.
    pub fn lines(&self) -> Vec<String> {
        let b = ms_text(self.budget_us);
        if self.working == 0 {
            return vec![format!(
                "  pump budget       no pump ran work ({} pumps found nothing to run)",
                group(self.pumps as u64)
            )];
        }
        let head = format!(
            "  pump budget       {} of {} pumps within the {b} budget",
            group(self.within as u64),
            group(self.working as u64)
        );
        let mut out = Vec::new();
        if self.over == 0 && self.frame_bytes == 0 {
            out.push(format!("{head}, none over; the sink copied no frame"));
        } else if self.over == 0 {
            out.push(format!(
                "{head}, none over; the longest frame copy in the sink took {:.2} ms",
                self.longest_copy_ms
            ));
        } else {
            out.push(format!(
                "{head}; {} ran over, because a pump never splits an item:",
                group(self.over as u64)
            ));
            let n = self.over_one_frame;
            if n > 0 {
                let size = size(self.frame_bytes);
                let took = if n == 1 {
                    format!("{:.2} ms", self.frame_copy.max)
                } else if n == 2 {
                    format!(
                        "{:.2} and {:.2} ms",
                        self.frame_copy_shortest_ms, self.frame_copy.max
                    )
                } else {
                    format!(
                        "{:.2} to {:.2} ms (median {:.2} ms)",
                        self.frame_copy_shortest_ms, self.frame_copy.max, self.frame_copy.p50
                    )
                };
                out.push(format!(
                    "{} ran a single item, a frame: the sink's copy of its {size} took {took}, {:.0} % of {}",
                    group(n as u64),
                    // Rounded down: never "100 %" for a share that is less.
                    (100.0 * self.frame_copy_share).floor(),
                    if n == 1 { "its time" } else { "their time" }
                ));
            }
            if self.over_one_other > 0 {
                out.push(format!(
                    "{} ran a single item that copied no frame (up to {:.2} ms)",
                    group(self.over_one_other as u64),
                    self.other_longest_ms
                ));
            }
            if self.over_several > 0 {
                out.push(format!(
                    "{} ran {} items; the one running when the budget ran out finished past it",
                    group(self.over_several as u64),
                    if self.over_fewest_items == self.over_most_items {
                        self.over_most_items.to_string()
                    } else {
                        format!("{} to {}", self.over_fewest_items, self.over_most_items)
                    }
                ));
            }
        }
        if self.idle_over > 0 {
            out.push(format!(
                "{} that found nothing to run took longer than the budget all the same",
                count(self.idle_over, "pump")
            ));
        }
        for line in out.iter_mut().skip(1) {
            *line = format!("                    {line}");
        }
        out
    }
}

/// `1 pump`, `2 pumps`.
fn count(n: usize, noun: &str) -> String {
    format!(
        "{} {noun}{}",
        group(n as u64),
        if n == 1 { "" } else { "s" }
    )
}

/// `2.0 ms`, `0.25 ms`, `0.001 ms`: a whole number of microseconds in ms, with the decimals it
/// needs (at least one).
pub fn ms_text(us: u64) -> String {
    let places = match us {
        _ if us.is_multiple_of(100) => 1,
        _ if us.is_multiple_of(10) => 2,
        _ => 3,
    };
    format!("{:.places$} ms", us as f64 / 1000.0)
}

/// `12.0 MB`, `24.0 kB`, `12 bytes` (decimal units, as the frame sizes are quoted).
pub fn size(bytes: u64) -> String {
    match bytes {
        0..=999 => format!("{bytes} bytes"),
        1_000..=999_999 => format!("{:.1} kB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pump(ran: u64, us: u64, copy_ms: f64) -> PumpSample {
        PumpSample {
            source: Source::Doorbell,
            ran,
            at_s: 0.0,
            elapsed_us: us,
            over_budget: us >= 2000,
            copies: Copies {
                count: u32::from(copy_ms > 0.0),
                ms: copy_ms,
                longest_ms: copy_ms,
                bytes: 12_000_000,
            },
        }
    }

    #[test]
    fn overruns_are_counted_among_the_pumps_that_ran_work_and_named_by_what_they_ran() {
        let pumps = [
            pump(1, 1500, 1.4),
            pump(1, 2600, 2.4),
            pump(1, 3100, 3.0),
            pump(3, 2300, 1.0),
            pump(1, 2200, 0.0),
            pump(0, 10, 0.0),
        ];
        let f = Figures::new(&pumps, 2000);
        assert_eq!((f.pumps, f.working, f.within, f.over), (6, 5, 1, 4));
        assert_eq!(f.within + f.over, f.working);
        assert_eq!(
            (f.over_one_frame, f.over_one_other, f.over_several),
            (2, 1, 1)
        );
        assert_eq!(f.frame_copy.max, 3.0);
        let text = f.lines().join("\n");
        assert!(
            text.starts_with(
                "  pump budget       1 of 5 pumps within the 2.0 ms budget; 4 ran over"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "2 ran a single item, a frame: the sink's copy of its 12.0 MB took 2.40 and 3.00 ms, 94 % of their time"
            ),
            "{text}"
        );
        assert!(text.contains("(up to 2.20 ms)"), "{text}");
        assert!(text.contains("1 ran 3 items"), "{text}");
        assert!(!text.contains("found nothing"), "{text}");
    }

    #[test]
    fn a_loop_within_its_budget_says_so() {
        let f = Figures::new(&[pump(1, 900, 0.8), pump(0, 5, 0.0)], 2000);
        assert_eq!(
            f.lines(),
            ["  pump budget       1 of 1 pumps within the 2.0 ms budget, none over; the longest frame copy in the sink took 0.80 ms"]
        );
    }

    #[test]
    fn budgets_show_the_decimals_they_have() {
        assert_eq!(ms_text(2000), "2.0 ms");
        assert_eq!(ms_text(250), "0.25 ms");
        assert_eq!(ms_text(1), "0.001 ms");
    }

    #[test]
    fn sizes_use_decimal_units() {
        assert_eq!(size(12), "12 bytes");
        assert_eq!(size(24_000), "24.0 kB");
        assert_eq!(size(12_000_000), "12.0 MB");
    }
}
