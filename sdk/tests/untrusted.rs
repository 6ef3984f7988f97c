//! Untrusted bytes (issue #16, item 5): every decoder of bytes that come from files or other
//! processes, fed mutated real inputs — bit flips, truncations, extensions, edited length
//! fields, hostile values — must answer with an error (or a value), never a panic, and never
//! allocate more than a small multiple of the input plus a constant.
//!
//! The mutator is a seeded xorshift: a failure names its seed, and `HOSTLOOP_FUZZ_SEED=<n>`
//! replays it; `HOSTLOOP_FUZZ_CASES=<n>` runs more cases than CI's bounded default. Each target
//! prints what it tried and the peak allocation it saw.
//!
//! Allocation is counted per thread by the `#[global_allocator]` below (bytes live and their
//! peak since a reset), so tests running in parallel do not disturb each other's figures.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

use common::{crc32c, runtime, wait_for, HANG};
use hostloop::plugin::{count_setting, settings_pairs, SimSettings, SimSlot};
use hostloop::{
    Handle, SimControl, SimOptions, Simulation, SnapshotReader, SnapshotWriter, StepContext,
};

// ---------------------------------------------------------------------------------------------
// Peak allocation of this thread.

struct Counting;

thread_local! {
    // `const`-initialised and without a destructor: using them never allocates.
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grow(by: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + by;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every method forwards to `System` unchanged, which upholds `GlobalAlloc`'s contract;
// `grow` only updates thread-local counters and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grow(layout.size() as isize);
        // SAFETY: the caller upholds `alloc`'s contract, which is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grow(layout.size() as isize);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        grow(new_size as isize - layout.size() as isize);
        // SAFETY: the caller upholds `realloc`'s contract; `ptr` came from `System` (via us).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        grow(-(layout.size() as isize));
        // SAFETY: the caller upholds `dealloc`'s contract; `ptr` came from `System` (via us).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the peak of the bytes this thread had allocated beyond
/// what it had when `f` started.
fn peak_in<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(base));
    let result = f();
    (result, (PEAK.with(Cell::get) - base).max(0) as usize)
}

// ---------------------------------------------------------------------------------------------
// The mutator.

/// xorshift64: small, seeded, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The seed of a target: `HOSTLOOP_FUZZ_SEED` if set, else a fixed one per target (so CI runs
/// the same cases every time, and a failure replays).
fn seed(target: u64) -> u64 {
    std::env::var("HOSTLOOP_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9E37_79B9_7F4A_7C15 ^ target.wrapping_mul(0xD1B5_4A32_D192_ED03))
        | 1
}

/// Cases per target: `HOSTLOOP_FUZZ_CASES` if set, else `default` (bounded for CI).
fn cases(default: usize) -> usize {
    std::env::var("HOSTLOOP_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Length and count values an attacker would write: huge, overflowing when multiplied by an
/// element size, just past the end.
const HOSTILE: [u64; 8] = [
    1 << 40,
    u64::MAX,
    u64::MAX / 4 + 1,
    u64::MAX / 8 + 1,
    1 << 32,
    i64::MAX as u64,
    1 << 62,
    0,
];

/// A real input: its bytes, and where in them its `u64` length, count and step fields are.
#[derive(Clone)]
struct Real {
    bytes: Vec<u8>,
    u64_fields: Vec<usize>,
}

/// One mutation of `real`, and its kind. Bit flips are at most 3 bits, which CRC-32C detects
/// at any length these inputs have, so a flipped container is always rejected.
fn mutate(rng: &mut Rng, real: &Real) -> (Vec<u8>, &'static str) {
    let mut b = real.bytes.clone();
    let len = b.len();
    match rng.below(6) {
        0 => {
            for _ in 0..=rng.below(3) {
                let bit = rng.below(len * 8);
                b[bit / 8] ^= 1 << (bit % 8);
            }
            (b, "bit flip")
        }
        1 => {
            b.truncate(rng.below(len));
            (b, "truncation")
        }
        2 => {
            for _ in 0..=rng.below(32) {
                b.push(rng.next() as u8);
            }
            (b, "extension")
        }
        3 if !real.u64_fields.is_empty() => {
            let at = real.u64_fields[rng.below(real.u64_fields.len())];
            let old = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
            let new = match rng.below(3) {
                0 => HOSTILE[rng.below(HOSTILE.len())],
                1 => old.wrapping_add(1 + rng.below(64) as u64),
                _ => old.wrapping_sub(1 + rng.below(64) as u64),
            };
            b[at..at + 8].copy_from_slice(&new.to_le_bytes());
            (b, "edited u64 field")
        }
        3 | 4 => {
            let value = HOSTILE[rng.below(HOSTILE.len())].to_le_bytes();
            let width = [1, 2, 4, 8][rng.below(4)];
            let at = rng.below(len);
            let end = (at + width).min(len);
            b[at..end].copy_from_slice(&value[..end - at]);
            (b, "hostile value")
        }
        _ => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(16));
            if rng.below(2) == 0 {
                b.drain(at..at + n);
                (b, "cut range")
            } else {
                let copy = b[at..at + n].to_vec();
                b.splice(at..at, copy);
                (b, "doubled range")
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshot containers, taken apart and resealed.

/// Where a snapshot's payload starts (after magic, format, kind and version, and its length).
fn payload_start(snapshot: &[u8]) -> usize {
    23 + usize::from(snapshot[10])
}

fn payload(snapshot: &[u8]) -> &[u8] {
    &snapshot[payload_start(snapshot)..snapshot.len() - 4]
}

/// `snapshot`'s header with `payload` instead of its own, the length and checksum made to fit:
/// damage a reader has to find by itself, the container checks cannot.
fn reseal(snapshot: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = snapshot[..payload_start(snapshot) - 8].to_vec();
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

// ---------------------------------------------------------------------------------------------
// The harness.

/// What a target's cases came to.
#[derive(Default)]
struct Figures {
    tried: usize,
    rejected: usize,
    peak: usize,
    /// The largest input length.
    input: usize,
    /// Cases of each mutation kind.
    kinds: std::collections::BTreeMap<&'static str, usize>,
}

/// Allocation allowed for decoding `len` bytes: a small multiple of the input, plus `slack`
/// for what the decoder needs whatever the input (a thread, a channel, a configured state).
fn bound(len: usize, slack: usize) -> usize {
    2 * len + slack
}

/// Runs `count` mutated cases of `real` through `decode`. With `sealed`, half the cases mutate
/// the payload and reseal it, so the damage reaches the reader behind the container checks;
/// the other half (and all of them without `sealed`) mutate the bytes as they are, and a
/// mutated intact container must then be rejected. Panics (with the seed and the input) if
/// `decode` panics or allocates more than [`bound`].
fn fuzz(
    target: &str,
    seed: u64,
    count: usize,
    real: &Real,
    sealed: bool,
    slack: usize,
    mut decode: impl FnMut(Vec<u8>) -> hostloop::Result<()>,
) -> Figures {
    // The real input itself decodes: the cases below damage something that works.
    if let Err(e) = decode(real.bytes.clone()) {
        panic!("{target}: the real input does not decode: {e}");
    }
    let mut rng = Rng(seed);
    let mut figures = Figures::default();
    let inner = sealed.then(|| Real {
        bytes: payload(&real.bytes).to_vec(),
        u64_fields: real.u64_fields.clone(),
    });
    let outer = Real {
        bytes: real.bytes.clone(),
        u64_fields: real
            .u64_fields
            .iter()
            .map(|at| {
                at + if sealed {
                    payload_start(&real.bytes)
                } else {
                    0
                }
            })
            .collect(),
    };
    let mut case = 0;
    while figures.tried < count {
        case += 1;
        let resealed = inner.is_some() && rng.below(2) == 0;
        let (bytes, kind) = match &inner {
            Some(inner) if resealed => {
                let (p, kind) = mutate(&mut rng, inner);
                (reseal(&real.bytes, &p), kind)
            }
            _ => mutate(&mut rng, &outer),
        };
        if bytes == real.bytes {
            continue; // a mutation that changed nothing is no bad input
        }
        figures.tried += 1;
        *figures.kinds.entry(kind).or_default() += 1;
        let len = bytes.len();
        let shown = bytes.clone();
        let (result, peak) = match catch_unwind(AssertUnwindSafe(|| peak_in(|| decode(bytes)))) {
            Ok(r) => r,
            Err(_) => panic!(
                "{target}: case {case} of seed {seed} ({kind}) panicked on {} bytes: {shown:02x?}",
                shown.len()
            ),
        };
        assert!(
            peak <= bound(len, slack),
            "{target}: case {case} of seed {seed} ({kind}): {peak} bytes allocated for a \
             {len}-byte input: {shown:02x?}"
        );
        if sealed && !resealed {
            assert!(
                result.is_err(),
                "{target}: case {case} of seed {seed} ({kind}): a damaged container was accepted"
            );
        }
        figures.rejected += usize::from(result.is_err());
        figures.peak = figures.peak.max(peak);
        figures.input = figures.input.max(len);
    }
    println!(
        "{target}: seed {seed}, {} bad inputs tried, {} rejected, {} read; peak allocation \
         {} bytes (bound: 2 x input + {slack}; largest input {} bytes); {:?}",
        figures.tried,
        figures.rejected,
        figures.tried - figures.rejected,
        figures.peak,
        figures.input,
        figures.kinds
    );
    assert!(
        figures.rejected * 2 > figures.tried,
        "{target}: fewer than half the bad inputs were rejected: the mutator damages nothing"
    );
    figures
}

// ---------------------------------------------------------------------------------------------
// Target 1: the snapshot reader, every read.

const KIND: &str = "untrusted";

/// A snapshot with one value of every type and two of every length-prefixed one, and where
/// its length prefixes are in the payload.
fn every_read_snapshot() -> Real {
    let mut w = SnapshotWriter::new(KIND, 2);
    let mut u64_fields = Vec::new();
    w.u8(7).u16(513).u32(70_000).u64(1 << 40).i32(-3).i64(-4);
    w.f32(0.5).f64(-0.25).bool(true);
    for round in 0..2u8 {
        u64_fields.push(w.payload_len());
        w.bytes(&[round; 5]);
        u64_fields.push(w.payload_len());
        w.str("héllo, wörld");
        u64_fields.push(w.payload_len());
        w.f32s(&[1.0, -2.0, f32::NAN]);
        u64_fields.push(w.payload_len());
        w.f64s(&[3.0; 4]);
        u64_fields.push(w.payload_len());
        w.u32s(&[9; 6]);
        u64_fields.push(w.payload_len());
        w.u64s(&[u64::MAX; 2]);
    }
    Real {
        bytes: w.finish(),
        u64_fields,
    }
}

/// Reads everything [`every_read_snapshot`] wrote, the first round into new vectors, the
/// second into reused ones.
fn read_every_value(bytes: &[u8]) -> Result<(), hostloop::SnapshotError> {
    let mut r = SnapshotReader::open(bytes, KIND, 1..=2)?;
    r.u8()?;
    r.u16()?;
    r.u32()?;
    r.u64()?;
    r.i32()?;
    r.i64()?;
    r.f32()?;
    r.f64()?;
    r.bool()?;
    r.bytes()?;
    r.str()?;
    r.f32s()?;
    r.f64s()?;
    r.u32s()?;
    r.u64s()?;
    let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    r.bytes()?;
    r.str()?;
    r.f32s_into(&mut a)?;
    r.f64s_into(&mut b)?;
    r.u32s_into(&mut c)?;
    r.u64s_into(&mut d)?;
    r.finish()
}

/// What an error may hold whatever the input: a `WrongKind` names two kinds of up to 255 bytes.
const ERROR_SLACK: usize = 1024;

#[test]
fn mutated_snapshots_are_errors_that_allocate_at_most_their_own_size() {
    let real = every_read_snapshot();
    let figures = fuzz(
        "snapshot reader",
        seed(1),
        cases(16_000),
        &real,
        true,
        ERROR_SLACK,
        |bytes| Ok(read_every_value(&bytes)?),
    );
    assert!(figures.kinds["edited u64 field"] > 0);
}

#[test]
fn a_length_field_claiming_2_pow_40_elements_is_refused_before_anything_is_allocated() {
    let real = every_read_snapshot();
    let p = payload(&real.bytes);
    for &at in &real.u64_fields {
        for count in HOSTILE.into_iter().filter(|&c| c != 0) {
            let mut edited = p.to_vec();
            edited[at..at + 8].copy_from_slice(&count.to_le_bytes());
            let bytes = reseal(&real.bytes, &edited);
            let (result, peak) = peak_in(|| read_every_value(&bytes));
            assert!(
                matches!(result, Err(hostloop::SnapshotError::UnexpectedEnd { .. })),
                "count {count} at {at}: {result:?}"
            );
            // What the reads before the edited field made, never anything for the count.
            assert!(peak <= p.len(), "count {count} at {at}: {peak} bytes");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Target 2: simulation snapshots (`SimOptions::resume`, `SimControl::restore_now`), of a
// simulation laid out as examples/particles is (three constants, six columns) and restoring
// as it does.

#[derive(Clone)]
struct Columns {
    constants: [f32; 3],
    columns: [Vec<f32>; 6],
}

impl Columns {
    fn new(n: usize) -> Self {
        Columns {
            constants: [0.01, -9.8, 0.5],
            columns: std::array::from_fn(|c| (0..n).map(|i| (i * 6 + c) as f32).collect()),
        }
    }
}

impl Simulation for Columns {
    type Frame = u64;

    fn step(&mut self, _: &StepContext<'_>) -> hostloop::Result<()> {
        for column in &mut self.columns {
            column.iter_mut().for_each(|x| *x += 1.0);
        }
        Ok(())
    }

    fn frame(&self) -> u64 {
        self.columns[0].len() as u64
    }

    fn reset(&mut self) {
        *self = Columns::new(self.columns[0].len());
    }

    const SNAPSHOT_KIND: &'static str = "untrusted-columns";

    fn save(&self, out: &mut SnapshotWriter) -> hostloop::Result<()> {
        let [a, b, c] = self.constants;
        out.f32(a).f32(b).f32(c);
        for column in &self.columns {
            out.f32s(column);
        }
        Ok(())
    }

    fn restore(&mut self, input: &mut SnapshotReader<'_>) -> hostloop::Result<()> {
        let constants = [input.f32()?, input.f32()?, input.f32()?];
        let mut columns: [Vec<f32>; 6] = Default::default();
        for column in &mut columns {
            *column = input.f32s()?;
        }
        if columns.iter().any(|c| c.len() != columns[0].len()) {
            return Err(hostloop::Error::failed("columns of different lengths"));
        }
        *self = Columns { constants, columns };
        Ok(())
    }
}

/// A real snapshot: `n` particles after three steps, saved by the driver.
fn columns_snapshot(rt: &Handle, n: usize) -> Real {
    let control = rt
        .simulate(Columns::new(n), SimOptions::default(), |_, _, _| {})
        .unwrap();
    control.step_by(3);
    wait_for("three steps", || control.step() == 3);
    let bytes = control.save_now(HANG).unwrap();
    control.stop();
    // The step, three constants, then six columns of a length prefix and `n` f32s each.
    let u64_fields = std::iter::once(0)
        .chain((0..6).map(|c| 8 + 12 + c * (8 + 4 * n)))
        .collect();
    Real { bytes, u64_fields }
}

/// Allocation a resumed simulation needs whatever its snapshot: its driver thread, channels and
/// frame buffers.
const SIMULATE_SLACK: usize = (16 << 10) + ERROR_SLACK;

#[test]
fn mutated_simulation_snapshots_resume_or_fail_within_their_size() {
    let rt = runtime(2);
    let real = columns_snapshot(rt.handle(), 16);
    fuzz(
        "simulation resume",
        seed(2),
        cases(4000),
        &real,
        true,
        SIMULATE_SLACK,
        |bytes| {
            let options = SimOptions {
                resume: Some(bytes),
                ..SimOptions::default()
            };
            let control = rt
                .handle()
                .simulate(Columns::new(0), options, |_, _, _| {})?;
            // Resumed: it steps on from whatever step the snapshot names.
            control.step_by(1);
            let alive = control.save_now(HANG);
            control.stop();
            assert!(alive.is_ok(), "a resumed simulation died at its first step");
            Ok(())
        },
    );
}

#[test]
fn a_rejected_restore_leaves_the_running_simulation_where_it_was() {
    let rt = runtime(2);
    let real = columns_snapshot(rt.handle(), 8);
    let control: SimControl = rt
        .handle()
        .simulate(Columns::new(8), SimOptions::default(), |_, _, _| {})
        .unwrap();
    control.step_by(5);
    wait_for("five steps", || control.step() == 5);
    let mut rejected = 0;
    let mut rng = Rng(seed(3));
    let count = cases(1000);
    for _ in 0..count {
        let (p, _) = mutate(
            &mut rng,
            &Real {
                bytes: payload(&real.bytes).to_vec(),
                u64_fields: real.u64_fields.clone(),
            },
        );
        // Every earlier command is done once the driver answers: the step is settled.
        assert!(control.save_now(HANG).is_ok(), "the driver is still there");
        let step = control.step();
        match control.restore_now(reseal(&real.bytes, &p), HANG) {
            Ok(()) => control.step_by(5),
            Err(e) => {
                assert!(!matches!(e, hostloop::Error::Timeout), "{e}");
                assert_eq!(control.step(), step, "a rejected restore moved the step");
                rejected += 1;
            }
        }
        assert!(control.save_now(HANG).is_ok(), "the driver is still there");
    }
    println!(
        "simulation restore_now: seed {}, {count} bad inputs, {rejected} rejected",
        seed(3)
    );
    assert!(rejected * 2 > count);
    control.stop();
}

// ---------------------------------------------------------------------------------------------
// Target 3: a plugin's saved state (`SimSlot::save` / `SimSlot::restore`): the settings text,
// then the simulation's snapshot, inside the plugin's own snapshot.

const TOOL: &str = "untrusted-tool";
const MAX_PARTICLES: usize = 64;
const SETTINGS: &str = "particles=8 delivery=latest rate=0 playing=0 lockstep=0";

/// Applies settings text as a `SimTool` plugin does: the tool's keys, then the simulation's.
fn configure(text: &str) -> Result<(Columns, SimOptions), String> {
    let mut n = 8;
    let mut settings = SimSettings::default();
    for pair in settings_pairs(text) {
        let (key, value) = pair?;
        match key {
            "particles" => n = count_setting(key, value, MAX_PARTICLES)?,
            _ => settings
                .apply(key, value)
                .unwrap_or_else(|| Err(format!("unknown key `{key}`")))?,
        }
    }
    Ok((Columns::new(n), settings.options(TOOL)))
}

#[test]
fn mutated_plugin_states_restore_or_fail_within_their_size() {
    let rt = runtime(2);
    let mut slot = SimSlot::new(TOOL);
    let (sim, options) = configure(SETTINGS).unwrap();
    slot.start(rt.handle(), sim, options, |_, _| {}).unwrap();
    let mut w = SnapshotWriter::new(TOOL, 1);
    slot.save(SETTINGS, &mut w).unwrap();
    slot.stop();
    let state = w.finish();
    // The settings' length prefix, the snapshot's, and the configuration number at the end.
    let end = payload(&state).len() - 8;
    let real = Real {
        u64_fields: vec![0, 8 + SETTINGS.len(), end],
        bytes: state,
    };
    let slack = SIMULATE_SLACK + 6 * 4 * MAX_PARTICLES;
    fuzz(
        "plugin state",
        seed(4),
        cases(4000),
        &real,
        true,
        slack,
        |bytes| {
            let mut r = SnapshotReader::open(&bytes, TOOL, 1..=1)?;
            let restored = slot.restore(
                rt.handle(),
                &mut r,
                |text| configure(text).map_err(hostloop::Error::failed),
                |_, _| {},
            );
            slot.stop();
            restored?;
            Ok(r.finish()?)
        },
    );

    // The simulation's snapshot inside the state, damaged and resealed: the inner container's
    // checks and the simulation's reads find it.
    let inner_at = 8 + SETTINGS.len() + 8;
    let outer_payload = payload(&real.bytes);
    // After it, the configuration number (a u64) ends the state.
    let snapshot = &outer_payload[inner_at..outer_payload.len() - 8];
    let inner = Real {
        bytes: snapshot.to_vec(),
        u64_fields: std::iter::once(0)
            .chain((0..6).map(|c| 8 + 12 + c * (8 + 4 * 8)))
            .collect(),
    };
    fuzz(
        "plugin state, nested snapshot",
        seed(5),
        cases(3000),
        &inner,
        true,
        slack,
        |snapshot| {
            let mut w = SnapshotWriter::new(TOOL, 1);
            w.str(SETTINGS).bytes(&snapshot).u64(0);
            let state = w.finish();
            let mut r = SnapshotReader::open(&state, TOOL, 1..=1)?;
            let restored = slot.restore(
                rt.handle(),
                &mut r,
                |text| configure(text).map_err(hostloop::Error::failed),
                |_, _| {},
            );
            slot.stop();
            restored
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Target 4: settings text from the host (`<NAME>/configure`), applied and run.

/// Values a hostile or careless host sends.
const HOSTILE_VALUES: [&str; 16] = [
    "1e-300",
    "4.9e-324",
    "1e-9",
    "1e300",
    "1.7976931348623157e308",
    "NaN",
    "-0",
    "0",
    "inf",
    "-1",
    "18446744073709551616",
    "99999999999999999999999",
    "",
    "=",
    "0x10",
    "1_000",
];

/// Text mutations: the byte mutations, and values replaced by hostile ones.
fn mutate_text(rng: &mut Rng, text: &str) -> (Vec<u8>, &'static str) {
    if rng.below(2) == 0 {
        return mutate(
            rng,
            &Real {
                bytes: text.as_bytes().to_vec(),
                u64_fields: Vec::new(),
            },
        );
    }
    let mut words: Vec<String> = text.split(' ').map(str::to_owned).collect();
    for _ in 0..=rng.below(2) {
        let w = rng.below(words.len());
        let key = words[w].split('=').next().unwrap_or_default().to_owned();
        words[w] = format!("{key}={}", HOSTILE_VALUES[rng.below(HOSTILE_VALUES.len())]);
    }
    (words.join(" ").into_bytes(), "hostile value")
}

/// What a plugin does with configure bytes: UTF-8, settings applied, the simulation started and
/// played; it must then step and answer (a driver that died would not).
fn configure_and_run(rt: &Handle, bytes: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let (sim, options) = configure(text)?;
    let control = rt
        .simulate(sim, options, |_, _, _| {})
        .map_err(|e| e.to_string())?;
    control.play();
    wait_for("the first step", || control.step() >= 1);
    let answer = control.save_now(HANG);
    control.stop();
    answer
        .map(drop)
        .map_err(|e| format!("the simulation died: {e}"))
}

#[test]
fn mutated_settings_text_is_refused_or_runs() {
    let rt = runtime(2);
    let seed = seed(6);
    let mut rng = Rng(seed);
    let count = cases(1000);
    let (mut rejected, mut peak) = (0, 0);
    configure_and_run(rt.handle(), SETTINGS.as_bytes()).unwrap();
    for case in 0..count {
        let (bytes, kind) = mutate_text(&mut rng, SETTINGS);
        let (result, p) = peak_in(|| {
            let text = std::str::from_utf8(&bytes).map_err(|_| "not UTF-8".to_owned());
            text.and_then(configure).map(drop)
        });
        peak = peak.max(p);
        assert!(
            p <= bound(bytes.len(), 6 * 4 * MAX_PARTICLES + 1024),
            "case {case}: {p} bytes"
        );
        match result {
            Err(_) => rejected += 1,
            // Accepted: the simulation it configures runs (and survives its first step).
            Ok(()) => {
                if let Err(e) = configure_and_run(rt.handle(), &bytes) {
                    panic!(
                        "case {case} of seed {seed} ({kind}): {:?} was accepted, then {e}",
                        String::from_utf8_lossy(&bytes)
                    );
                }
            }
        }
    }
    println!(
        "settings text: seed {seed}, {count} bad inputs tried, {rejected} refused, {} ran; \
         peak allocation {peak} bytes",
        count - rejected
    );
    assert!(rejected > 0 && rejected < count, "{rejected} of {count}");
}

/// Regression: a rate such as `1e-300` steps per second is positive and finite, so it is
/// accepted — and the driver then computed its next step's time with
/// `Duration::from_secs_f64(1.0 / rate)`, which panics, killing the simulation's thread after
/// its first step.
#[test]
fn a_rate_too_slow_for_the_clock_waits_instead_of_killing_the_simulation() {
    let rt = runtime(2);
    for rate in ["1e-300", "4.9e-324", "1e-9"] {
        let text = format!("particles=2 rate={rate} playing=1");
        configure_and_run(rt.handle(), text.as_bytes()).unwrap_or_else(|e| panic!("{rate}: {e}"));
    }
    let control = rt
        .handle()
        .simulate(Columns::new(2), SimOptions::default(), |_, _, _| {})
        .unwrap();
    control.set_rate(Some(1e-300));
    control.play();
    wait_for("the first step", || control.step() >= 1);
    assert!(control.save_now(HANG).is_ok(), "the driver is still there");
    control.stop();
}

/// Regression: the step a snapshot names is untrusted too. Resumed from a snapshot at step
/// `u64::MAX`, the driver's `step += 1` overflowed at the next step — a panic that killed the
/// simulation's thread in a debug build.
#[test]
fn a_snapshot_at_the_last_step_resumes_and_steps_on() {
    let rt = runtime(2);
    let real = columns_snapshot(rt.handle(), 4);
    let mut p = payload(&real.bytes).to_vec();
    p[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let options = SimOptions {
        resume: Some(reseal(&real.bytes, &p)),
        ..SimOptions::default()
    };
    let control = rt
        .handle()
        .simulate(Columns::new(0), options, |_, _, _| {})
        .unwrap();
    assert_eq!(control.step(), u64::MAX);
    control.step_by(2);
    assert!(control.save_now(HANG).is_ok(), "the driver is still there");
    assert_eq!(control.step(), u64::MAX);
    control.stop();
}
