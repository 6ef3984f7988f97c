//! `hostloop-demo`: the reference host behind the README's run command.
//!
//! It drives hostloop exactly as a C host does — through the exported `hl_*` functions and
//! `#[repr(C)]` structs of `libhostloop` — and shows what a host gets from it:
//!
//! 1. `hl_runtime_new` with a worker count, `hl_runtime_wake_fd` (the doorbell) and a sink
//!    (`hl_runtime_set_sink`) that receives the simulation's frames on the main thread;
//! 2. `hl_plugin_load` of the `particles` plugin (built first if it is missing), configured with
//!    a custom host event (`particles/configure`);
//! 3. a 60 Hz host loop that sleeps in `ppoll` on the doorbell with the time left until the next
//!    frame, and calls `hl_runtime_pump` with a time budget — when the doorbell rings, and once
//!    per frame from the frame timer;
//! 4. `hl_plugin_unload`, `hl_runtime_shutdown` with a deadline, `hl_runtime_free`;
//! 5. a summary table that says how many pumps kept their budget and what the others ran, a
//!    PNG of the particles (heights of a sample over the run, and the final frame from above)
//!    and an SVG of each pump's time against the budget of one pump, over the host's frames.
//!
//! See `README.md` beside this crate for the flags and what the numbers mean.

mod args;
mod budget;
mod picture;
mod plot;
mod png;
mod wait;

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use bridge::ffi::common::{hl_last_error, hl_status_name, hl_status_t, HL_STATUS_OK};
use bridge::ffi::event::{hl_event_t, hl_runtime_post_event, HL_EVENT_CUSTOM};
use bridge::ffi::plugin::{
    hl_plugin_info, hl_plugin_info_t, hl_plugin_load, hl_plugin_load_ex,
    hl_plugin_load_options_init, hl_plugin_load_options_t, hl_plugin_process, hl_plugin_process_t,
    hl_plugin_t, hl_plugin_unload, hl_unload_report_t, HL_ISOLATION_OWN_PROCESS,
};
use bridge::ffi::runtime::{
    hl_pump_report_t, hl_runtime_free, hl_runtime_new, hl_runtime_options_init,
    hl_runtime_options_t, hl_runtime_pump, hl_runtime_shutdown, hl_runtime_stats, hl_runtime_t,
    hl_runtime_wake_fd, hl_shutdown_report_t, hl_stats_t,
};
use bridge::ffi::sink::{
    hl_lease_release, hl_lease_t, hl_message_lend, hl_message_t, hl_runtime_set_sink, HL_ELEM_F32,
    HL_PAYLOAD_ARRAY, HL_PAYLOAD_BYTES,
};

use args::Options;
use budget::{Copies, PumpSample};
use picture::group;

/// The host's frame rate.
const HZ: f64 = 60.0;
/// How long unload and shutdown may wait for running work.
const DEADLINE_MS: u32 = 2000;
/// Particles whose heights the picture follows, and the most heights kept.
const TRACED: usize = 300;
const TRACE_POINTS: usize = 4_000_000;
/// `--isolated`: how often the worker checkpoints the simulation (what a restart resumes from).
const CHECKPOINT_MS: u32 = 500;
/// How long the configured simulation may take to send its first frame.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let options = match args::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(args::Stop::Help) => {
            println!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(args::Stop::Bad(msg)) => {
            eprintln!("hostloop-demo: {msg}\n\n{}", args::USAGE);
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostloop-demo: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `Err` of a failed `hl_*` call: its status name and `hl_last_error()`.
fn check(what: &str, status: hl_status_t) -> Result<(), String> {
    if status == HL_STATUS_OK {
        return Ok(());
    }
    // SAFETY: `hl_last_error` returns a NUL-terminated string owned by hostloop, valid until
    // the next hostloop call on this thread, so it is copied first; `hl_status_name` returns a
    // static string.
    let message = unsafe { CStr::from_ptr(hl_last_error()) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: as above.
    let name = unsafe { CStr::from_ptr(hl_status_name(status)) }.to_string_lossy();
    Err(format!("{what} failed: {name}: {message}"))
}

/// The runtime handle; frees the runtime (shutting it down first if needed) when dropped, so an
/// early error return still stops every thread.
struct Runtime(*mut hl_runtime_t);

impl Drop for Runtime {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `hl_runtime_new` on this (the main) thread and is freed
        // only here.
        unsafe { hl_runtime_free(self.0) };
    }
}

/// A frame hostloop lent the sink (`hl_message_lend`), released when dropped.
struct LentFrame {
    lease: *mut hl_lease_t,
    data: *const f32,
    floats: usize,
}

impl Drop for LentFrame {
    fn drop(&mut self) {
        // SAFETY: a lease from `hl_message_lend`, released once, here.
        unsafe { hl_lease_release(self.lease) };
    }
}

/// What the sink saw. The sink runs only on the main thread, during pumps, so plain `Cell`s
/// suffice; the loop reads them between pumps.
struct Frames {
    main: ThreadId,
    /// Topics are `<plugin name>/step`, `…/positions`, `…/error`.
    prefix: RefCell<String>,
    messages: Cell<u64>,
    off_main_thread: Cell<u64>,
    /// Frames (position arrays) delivered.
    delivered: Cell<u64>,
    /// The step announced by the last `…/step` message, for the positions that follow it.
    pending_step: Cell<Option<u64>>,
    step: Cell<u64>,
    /// Steps the simulation made, summed over rebuilds (a rebuild starts again from step 0).
    steps_total: Cell<u64>,
    particles: Cell<u64>,
    /// A frame arrived since the host last drew.
    fresh: Cell<bool>,
    /// The first frame (step, time) of the current simulation; a rebuild starts a new one.
    since: Cell<Option<(u64, Instant)>>,
    last_frame: Cell<Option<(u64, Instant)>>,
    /// The latest positions, x y z per particle: the host's copy, as a viewer uploading the
    /// frame into its vertex buffer makes one.
    positions: RefCell<Vec<f32>>,
    /// The copies into `positions` since the host last asked ([`Frames::take_copies`]).
    copies: Cell<Copies>,
    /// Keep frames with `hl_message_lend` and copy them at the draw, outside the pumps
    /// (default); `--copy-in-sink` copies inside the sink instead.
    lend: Cell<bool>,
    /// The newest frame, lent by hostloop: copied into `positions` at the next draw.
    lent: RefCell<Option<LentFrame>>,
    /// The draws' copies from lent frames.
    uploads: Cell<Copies>,
    errors: RefCell<Vec<String>>,
    /// `--isolated`: when the crash report reached the sink, and its text.
    crash_report: RefCell<Option<(Instant, String)>>,
    /// When the restarted worker said it restored the plugin.
    restarted: Cell<Option<Instant>>,
    /// The first frame after that: (step, when).
    first_after_restart: Cell<Option<(u64, Instant)>>,
}

impl Frames {
    fn new() -> Self {
        Frames {
            main: std::thread::current().id(),
            prefix: RefCell::new(String::new()),
            messages: Cell::new(0),
            off_main_thread: Cell::new(0),
            delivered: Cell::new(0),
            pending_step: Cell::new(None),
            step: Cell::new(0),
            steps_total: Cell::new(0),
            particles: Cell::new(0),
            fresh: Cell::new(false),
            since: Cell::new(None),
            last_frame: Cell::new(None),
            positions: RefCell::new(Vec::new()),
            copies: Cell::new(Copies::default()),
            lend: Cell::new(true),
            lent: RefCell::new(None),
            uploads: Cell::new(Copies::default()),
            errors: RefCell::new(Vec::new()),
            crash_report: RefCell::new(None),
            restarted: Cell::new(None),
            first_after_restart: Cell::new(None),
        }
    }

    fn receive(&self, m: &hl_message_t) {
        self.messages.set(self.messages.get() + 1);
        if std::thread::current().id() != self.main {
            self.off_main_thread.set(self.off_main_thread.get() + 1);
        }
        // SAFETY: hostloop passes a NUL-terminated topic of `topic_len` bytes, valid for the
        // duration of the callback.
        let topic = unsafe { std::slice::from_raw_parts(m.topic.cast::<u8>(), m.topic_len) };
        if let Some(what) = topic.strip_prefix(b"hostloop/plugin/") {
            // The isolated plugin's worker was lost / restored / is down for good.
            let text = if m.payload_kind == HL_PAYLOAD_BYTES && !m.bytes.is_null() {
                // SAFETY: a bytes payload of `bytes_len` bytes, valid for the callback.
                String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(m.bytes, m.bytes_len) })
                    .into_owned()
            } else {
                String::new()
            };
            match what {
                b"crashed" => *self.crash_report.borrow_mut() = Some((Instant::now(), text)),
                b"restarted" => self.restarted.set(Some(Instant::now())),
                b"down" => self.errors.borrow_mut().push(text),
                _ => {}
            }
            return;
        }
        let prefix = self.prefix.borrow();
        let Some(kind) = topic
            .strip_prefix(prefix.as_bytes())
            .and_then(|t| t.strip_prefix(b"/"))
        else {
            return;
        };
        let bytes = || -> &[u8] {
            if m.payload_kind != HL_PAYLOAD_BYTES || m.bytes.is_null() {
                return &[];
            }
            // SAFETY: for a bytes payload, `bytes` points to `bytes_len` bytes valid for the
            // duration of the callback.
            unsafe { std::slice::from_raw_parts(m.bytes, m.bytes_len) }
        };
        match kind {
            b"step" => {
                // The step, then the configuration's number (`hostloop/plugin.h`).
                if let Some(Ok(b)) = bytes().get(..8).map(<[u8; 8]>::try_from) {
                    self.pending_step.set(Some(u64::from_le_bytes(b)));
                }
            }
            b"positions" => self.positions(m),
            b"error" => self
                .errors
                .borrow_mut()
                .push(String::from_utf8_lossy(bytes()).into_owned()),
            _ => {}
        }
    }

    fn positions(&self, m: &hl_message_t) {
        let a = &m.array;
        let record = 3 * std::mem::size_of::<f32>() as u64;
        let fits = a.count == 0
            || (a.stride >= record
                && (a.count - 1)
                    .checked_mul(a.stride)
                    .and_then(|n| n.checked_add(record))
                    .is_some_and(|n| n <= a.byte_len));
        if m.payload_kind != HL_PAYLOAD_ARRAY
            || a.elem_type != HL_ELEM_F32
            || a.components != 3
            || !fits
            || (a.count > 0 && a.data.is_null())
        {
            self.errors
                .borrow_mut()
                .push("positions: not an f32 xyz array view that fits its bytes".into());
            return;
        }
        let n = a.count as usize;
        let packed = a.stride == record && a.data.cast::<f32>().is_aligned();
        let lease = if self.lend.get() && packed && n > 0 {
            // SAFETY: `m` is the message of this sink call, which is under way.
            unsafe { hl_message_lend(m) }
        } else {
            std::ptr::null_mut()
        };
        if !lease.is_null() {
            // Kept, not copied: the draw copies it, after the pump. Replacing the previous
            // frame releases it.
            *self.lent.borrow_mut() = Some(LentFrame {
                lease,
                data: a.data.cast(),
                floats: 3 * n,
            });
        } else {
            self.copy_positions(a, n, record);
        }
        self.arrived(a.count);
    }

    /// The sink's copy of a frame it could not keep (or was told not to).
    fn copy_positions(&self, a: &bridge::ffi::sink::hl_array_view_t, n: usize, record: u64) {
        let copy_started = Instant::now();
        let mut out = self.positions.borrow_mut();
        out.clear();
        if a.stride == record && a.data.cast::<f32>().is_aligned() {
            // SAFETY: checked above: `count` packed, aligned records of three f32 lie within
            // `byte_len` bytes at `data`, valid for the duration of the callback.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(a.data.cast(), 3 * n) });
        } else {
            out.reserve(3 * n);
            for i in 0..n {
                for c in 0..3 {
                    // SAFETY: as above; records may be padded or unaligned, so read unaligned.
                    out.push(unsafe {
                        a.data
                            .cast::<u8>()
                            .add(i * a.stride as usize + 4 * c)
                            .cast::<f32>()
                            .read_unaligned()
                    });
                }
            }
        }
        drop(out);
        self.copies.set(
            self.copies
                .get()
                .add(ms(copy_started.elapsed()), a.count * record),
        );
    }

    /// The draw: copies the lent frame, if one waits, into `positions` (a viewer would upload
    /// it to its vertex buffer from there) and releases it.
    fn upload(&self) {
        let Some(frame) = self.lent.borrow_mut().take() else {
            return;
        };
        let started = Instant::now();
        let mut out = self.positions.borrow_mut();
        out.clear();
        // SAFETY: the lease keeps `floats` aligned f32 at `data` (checked when it was lent)
        // allocated and unchanged until it is released, when `frame` drops below.
        out.extend_from_slice(unsafe { std::slice::from_raw_parts(frame.data, frame.floats) });
        drop(frame);
        let bytes = 4 * out.len() as u64;
        self.uploads
            .set(self.uploads.get().add(ms(started.elapsed()), bytes));
    }

    /// Bookkeeping for a frame of `count` particles that reached the sink.
    fn arrived(&self, count: u64) {
        let now = Instant::now();
        let previous = self.step.get();
        let step = self.pending_step.take().unwrap_or(previous + 1);
        if step < previous {
            // The simulation was rebuilt (configured): it starts again from its first step.
            self.since.set(None);
            self.steps_total.set(self.steps_total.get() + step);
        } else {
            self.steps_total
                .set(self.steps_total.get() + step - previous);
        }
        if self.since.get().is_none() {
            self.since.set(Some((step, now)));
        }
        self.step.set(step);
        if self.restarted.get().is_some() && self.first_after_restart.get().is_none() {
            self.first_after_restart.set(Some((step, now)));
        }
        self.particles.set(count);
        self.delivered.set(self.delivered.get() + 1);
        self.fresh.set(true);
        self.last_frame.set(Some((step, now)));
    }

    /// Records the step and the heights of up to `TRACED` particles spread over the latest
    /// frame (the same particles every time, while the count stays the same).
    fn trace(&self, trails: &mut picture::Trails) {
        let xyz = self.positions.borrow();
        let n = xyz.len() / 3;
        let k = n.min(TRACED);
        if trails.particles != k {
            *trails = picture::Trails {
                particles: k,
                ..Default::default()
            };
        }
        if let Some(stride) = n.checked_div(k) {
            trails.steps.push(self.step.get());
            trails
                .heights
                .extend((0..k).map(|j| xyz[3 * j * stride + 1]));
        }
    }

    /// The frame copies made since the last call (during one pump, when called around it).
    fn take_copies(&self) -> Copies {
        self.copies.take()
    }

    /// Starts the counters afresh (after setup), keeping the current step.
    fn restart_counting(&self) {
        self.messages.set(0);
        self.off_main_thread.set(0);
        self.delivered.set(0);
        self.steps_total.set(0);
        self.fresh.set(false);
        self.since.set(None);
        self.last_frame.set(None);
    }

    /// Steps per second of the current simulation so far.
    fn steps_per_second(&self) -> f64 {
        match (self.since.get(), self.last_frame.get()) {
            (Some((s0, t0)), Some((s1, t1))) if t1 > t0 => {
                s1.saturating_sub(s0) as f64 / (t1 - t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

/// The sink: hostloop calls it on the main thread during `hl_runtime_pump`.
///
/// # Safety
///
/// `user_data` is the `Frames` registered in [`run`], which outlives the runtime.
unsafe extern "C" fn sink(user_data: *mut c_void, message: *const hl_message_t) {
    if user_data.is_null() || message.is_null() {
        return;
    }
    // SAFETY: per this function's contract; the message is valid for the callback's duration.
    let (frames, message) = unsafe { (&*user_data.cast::<Frames>(), &*message) };
    // Nothing in `receive` panics on bad input; a bug must still not unwind into hostloop.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| frames.receive(message))).is_err() {
        frames.errors.borrow_mut().push("the sink panicked".into());
    }
}

/// Where a pump came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `ppoll` reported the doorbell readable.
    Doorbell,
    /// The frame timer fired.
    Timer,
}

/// One host frame: how long it lasted and how long the pumps inside it took together, in ms,
/// and when it ended, in seconds since the host loop began.
#[derive(Debug, Clone, Copy)]
struct FrameSample {
    frame_ms: f64,
    pump_ms: f64,
    end_s: f64,
}

fn run(o: &Options) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this program: {e}"))?;
    // target/<profile>/hostloop-demo
    let profile_dir = exe
        .parent()
        .ok_or("cannot locate the target directory")?
        .to_path_buf();
    let plugin_path = match &o.plugin {
        Some(p) => p.clone(),
        None => {
            let p = profile_dir.join(format!(
                "{}hostloop_particles{}",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_SUFFIX
            ));
            if !p.exists() {
                build_plugin(&profile_dir)?;
                if !p.exists() {
                    return Err(format!(
                        "cargo built hostloop-particles, but {} is not there",
                        shown_path(&p)
                    ));
                }
            }
            p
        }
    };
    let out_dir = o.out.clone().unwrap_or_else(|| {
        profile_dir
            .parent()
            .unwrap_or(&profile_dir)
            .join("hostloop-demo")
    });

    // The sink's state must outlive the runtime: declared first, dropped last.
    let frames = Frames::new();
    frames.lend.set(!o.copy_in_sink);

    // Every hl_* call below is made on this thread, which `hl_runtime_new` makes the runtime's
    // main thread, with pointers valid for the call and structs carrying their `struct_size`.
    // SAFETY: an all-zero options struct is a valid value (integers and a NULL pointer).
    let mut opts: hl_runtime_options_t = unsafe { std::mem::zeroed() };
    // SAFETY: `opts` is a valid, writable options struct.
    let status = unsafe { hl_runtime_options_init(&mut opts) };
    check("hl_runtime_options_init", status)?;
    opts.workers = o.workers;
    opts.default_budget_us = budget_us(o.budget_ms) as u32;
    let thread_name = c"demo";
    opts.thread_name = thread_name.as_ptr();
    let mut rt_ptr = std::ptr::null_mut();
    // SAFETY: `opts` was filled by `hl_runtime_options_init`; its thread name outlives the call.
    let status = unsafe { hl_runtime_new(&opts, &mut rt_ptr) };
    check("hl_runtime_new", status)?;
    let rt = Runtime(rt_ptr);
    let rt_created = Instant::now();
    let mut fd: c_int = -1;
    // SAFETY: a live runtime and a writable int, on the main thread.
    check("hl_runtime_wake_fd", unsafe {
        hl_runtime_wake_fd(rt.0, &mut fd)
    })?;
    // SAFETY: a live runtime, on the main thread; `frames` outlives `rt` (see its declaration)
    // and stays the host's, so no finalizer.
    check("hl_runtime_set_sink", unsafe {
        hl_runtime_set_sink(
            rt.0,
            Some(sink),
            (&frames as *const Frames).cast_mut().cast(),
            None,
        )
    })?;

    let path_c = CString::new(plugin_path.to_string_lossy().as_bytes())
        .map_err(|_| "the plugin path contains a NUL byte")?;
    let mut plugin: *mut hl_plugin_t = std::ptr::null_mut();
    let load_started = Instant::now();
    if o.isolated {
        let worker = match &o.worker {
            Some(w) => w.clone(),
            None => {
                let w = profile_dir.join("hostloop-worker");
                if !w.exists() {
                    build_package(&profile_dir, "hostloop-worker")?;
                }
                w
            }
        };
        let worker_c = CString::new(worker.to_string_lossy().as_bytes())
            .map_err(|_| "the worker path contains a NUL byte")?;
        // SAFETY: an all-zero options struct is valid (integers and NULL pointers).
        let mut lo: hl_plugin_load_options_t = unsafe { std::mem::zeroed() };
        // SAFETY: a writable options struct.
        check("hl_plugin_load_options_init", unsafe {
            hl_plugin_load_options_init(&mut lo)
        })?;
        lo.isolation = HL_ISOLATION_OWN_PROCESS;
        lo.worker_program = worker_c.as_ptr();
        lo.checkpoint_interval_ms = CHECKPOINT_MS;
        lo.worker_threads = o.workers;
        // SAFETY: a live runtime, a NUL-terminated path and options whose strings outlive the
        // call, on the main thread.
        let status = unsafe { hl_plugin_load_ex(rt.0, path_c.as_ptr(), &lo, &mut plugin) };
        check(
            &format!("hl_plugin_load_ex({}, isolated)", shown_path(&plugin_path)),
            status,
        )?;
    } else {
        // SAFETY: a live runtime and a NUL-terminated path, on the main thread.
        let status = unsafe { hl_plugin_load(rt.0, path_c.as_ptr(), &mut plugin) };
        check(
            &format!("hl_plugin_load({})", shown_path(&plugin_path)),
            status,
        )?;
    }
    let load_time = load_started.elapsed();
    let (name, version) = plugin_name(plugin)?;
    *frames.prefix.borrow_mut() = name.clone();

    let config = format!(
        "agents={} kernel={} delivery={} playing=1",
        o.agents, o.kernel, o.delivery
    );
    post_custom(&rt, &format!("{name}/configure"), config.as_bytes())?;

    let is_tty = std::io::stdout().is_terminal() && !o.quiet;
    println!(
        "hostloop-demo: {name} {version} loaded in {:.1} ms; {} particles, {} kernel, {} worker{}, \
         {} pump budget, {} s at {HZ} Hz",
        ms(load_time),
        group(o.agents),
        o.kernel,
        o.workers,
        if o.workers == 1 { "" } else { "s" },
        budget::ms_text(budget_us(o.budget_ms)),
        o.seconds
    );

    if o.isolated {
        println!(
            "  isolated: the plugin runs in worker process {} (this host is {}); a crash there \
             ends only the worker",
            worker_pid(plugin)?,
            std::process::id()
        );
    }

    // Setup: the plugin takes the configure event at the next pump and rebuilds its simulation
    // on a worker. Wait for the first frame of the configured size before measuring.
    let budget = budget_us(o.budget_ms);
    let setup_started = Instant::now();
    let setup_deadline = setup_started + SETUP_TIMEOUT;
    let mut setup_longest = 0.0f64;
    while frames.particles.get() != o.agents {
        if let Some(e) = frames.errors.borrow().first() {
            return Err(format!("the plugin reported an error: {e}"));
        }
        let now = Instant::now();
        if now >= setup_deadline {
            return Err(format!(
                "no frame of {} particles reached the sink within {} s of configuring the plugin",
                group(o.agents),
                SETUP_TIMEOUT.as_secs()
            ));
        }
        let readable = wait::readable(fd, setup_deadline - now)
            .map_err(|e| format!("ppoll on the doorbell failed: {e}"))?;
        if readable {
            setup_longest = setup_longest.max(pump_once(&rt, budget)?.1);
        }
    }
    println!(
        "  configured: the first frame of {} particles arrived after {:.1} ms (longest pump {:.1} ms; \
         the plugin builds the simulation on a worker)",
        group(o.agents),
        ms(setup_started.elapsed()),
        setup_longest
    );
    frames.restart_counting();
    // hostloop's own counters at the start of the loop, to compare with what the host measured.
    let stats_before = runtime_stats(&rt)?;

    // The host loop.
    let period = Duration::from_secs_f64(1.0 / HZ);
    let mut pumps: Vec<PumpSample> = Vec::new();
    let mut samples: Vec<FrameSample> = Vec::new();
    let (mut shown, mut stale, mut late) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.seconds);
    let mut last_tick = start;
    let mut next_tick = start + period;
    let mut pump_in_frame = 0.0f64;
    // The picture's height traces: `TRACED` particles every `trace_every`-th shown frame, at
    // most `TRACE_POINTS` heights in all.
    let mut trails = picture::Trails::default();
    let trace_every = ((o.seconds * HZ * TRACED as f64 / TRACE_POINTS as f64).ceil() as u64).max(1);
    let mut live = Live::new(start, if is_tty { 0.25 } else { 1.0 });
    // --kill-worker-at: when the worker was killed, and the step the host had then.
    let mut killed: Option<(Instant, u64)> = None;
    let mut pump = |source: Source, pump_in_frame: &mut f64| -> Result<(), String> {
        let at_s = start.elapsed().as_secs_f64();
        frames.take_copies();
        let (report, _) = pump_once(&rt, budget)?;
        let sample = PumpSample {
            source,
            ran: report.ran,
            at_s,
            elapsed_us: report.elapsed_us,
            // At least the budget in whole microseconds: `hl_pump_report_t` truncates, so a
            // pump over by less than a microsecond reports `overrun_us == 0` and
            // `elapsed_us == budget`, yet ran over (and hostloop's counter says so).
            over_budget: report.elapsed_us >= budget,
            copies: frames.take_copies(),
        };
        *pump_in_frame += sample.ms();
        pumps.push(sample);
        Ok(())
    };
    loop {
        let now = Instant::now();
        if now >= next_tick {
            // A frame tick: close the frame that ends, pump what is queued, "draw" the latest
            // simulation frame (here: note it, and sample the paths the picture shows).
            // The frame that ends now took `frame_ms`, of which the pumps since the last tick
            // took `pump_in_frame`.
            let frame_ms = ms(now - last_tick);
            last_tick = now;
            if frame_ms > 1.5 * ms(period) {
                late += 1;
            }
            samples.push(FrameSample {
                frame_ms,
                pump_ms: pump_in_frame,
                end_s: (now - start).as_secs_f64(),
            });
            pump_in_frame = 0.0;
            pump(Source::Timer, &mut pump_in_frame)?;
            if let Some(at) = o.kill_worker_at {
                if killed.is_none() && now >= start + Duration::from_secs_f64(at) {
                    let pid = worker_pid(plugin)?;
                    let pid = rustix::process::Pid::from_raw(pid as i32)
                        .ok_or("the worker has no pid")?;
                    rustix::process::kill_process(pid, rustix::process::Signal::KILL)
                        .map_err(|e| format!("kill -9 of the worker failed: {e}"))?;
                    killed = Some((Instant::now(), frames.step.get()));
                }
            }
            if frames.fresh.replace(false) {
                frames.upload();
                shown += 1;
                if o.images && shown % trace_every == 0 {
                    frames.trace(&mut trails);
                }
            } else {
                stale += 1;
            }
            if let Some(e) = frames.errors.borrow().first() {
                return Err(format!("the plugin reported an error: {e}"));
            }
            live.frame(&samples, &frames, shown, is_tty);
            if now >= end {
                break;
            }
            next_tick += period;
            if next_tick <= now {
                // More than a frame behind: drop the missed ticks instead of bursting.
                next_tick = now + period;
            }
            continue;
        }
        match wait::readable(fd, next_tick - now) {
            Ok(true) => pump(Source::Doorbell, &mut pump_in_frame)?,
            Ok(false) => {}
            Err(e) => return Err(format!("ppoll on the doorbell failed: {e}")),
        }
    }
    if is_tty {
        println!();
    }
    let ran_for = start.elapsed();
    // The last frame kept, if the loop ended before its draw: copied, and its lease released
    // before the plugin unloads, so its library can be unmapped (one lent out stays mapped).
    frames.upload();
    let stats_after = runtime_stats(&rt)?;
    if killed.is_some() {
        // The restart may still be under way (a loaded machine): pump until the restored
        // simulation's first frame, within the setup timeout, so the report has its times.
        let deadline = Instant::now() + SETUP_TIMEOUT;
        while frames.first_after_restart.get().is_none() && Instant::now() < deadline {
            if let Some(e) = frames.errors.borrow().first() {
                return Err(format!("the plugin reported an error: {e}"));
            }
            if wait::readable(fd, deadline - Instant::now())
                .map_err(|e| format!("ppoll on the doorbell failed: {e}"))?
            {
                pump_once(&rt, budget)?;
            }
        }
    }

    // Tear down: the plugin first, then the runtime with a deadline.
    let mut unload = hl_unload_report_t {
        struct_size: std::mem::size_of::<hl_unload_report_t>() as u32,
        retired: 0,
        dropped: 0,
        stragglers: 0,
        elapsed_us: 0,
    };
    // SAFETY: a live handle and a sized report, on the main thread; `plugin` is not used again.
    check("hl_plugin_unload", unsafe {
        hl_plugin_unload(plugin, DEADLINE_MS, &mut unload)
    })?;
    let stats = runtime_stats(&rt)?;
    let rt_age = rt_created.elapsed();
    let mut shutdown = hl_shutdown_report_t {
        struct_size: std::mem::size_of::<hl_shutdown_report_t>() as u32,
        ..Default::default()
    };
    // SAFETY: a live runtime and a sized report, on the main thread.
    check("hl_runtime_shutdown", unsafe {
        hl_runtime_shutdown(rt.0, DEADLINE_MS, &mut shutdown)
    })?;
    drop(rt); // hl_runtime_free

    if frames.delivered.get() == 0 {
        return Err(format!(
            "no frame reached the sink in {:.1} s (plugin {})",
            o.seconds,
            shown_path(&plugin_path)
        ));
    }
    if let Some(e) = frames.errors.borrow().first() {
        return Err(format!("the plugin reported an error: {e}"));
    }

    if frames.particles.get() != o.agents {
        eprintln!(
            "hostloop-demo: warning: the last frame had {} particles, not the {} asked for",
            group(frames.particles.get()),
            group(o.agents)
        );
    }
    let figures = budget::Figures::new(&pumps, budget);
    let summary = Summary {
        o,
        ran_for,
        samples: &samples,
        pumps: &pumps,
        figures: &figures,
        counted: Counted {
            pumps: stats_after.pumps - stats_before.pumps,
            overruns: stats_after.budget_overruns - stats_before.budget_overruns,
        },
        frames: &frames,
        shown,
        stale,
        late,
        stats: &stats,
        rt_age,
        unload: &unload,
        shutdown: &shutdown,
    };
    summary.print();
    if let Some((at, step)) = killed {
        print_crash(&frames, at, step)?;
    }

    if o.images {
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| format!("cannot create {}: {e}", shown_path(&out_dir)))?;
        let png_path = out_dir.join("particles.png");
        let svg_path = out_dir.join("frame-times.svg");
        let positions = frames.positions.borrow();
        picture::write(
            &png_path,
            &positions,
            &trails,
            &picture::Caption {
                particles: positions.len() / 3,
                step: frames.step.get(),
                kernel: &o.kernel,
            },
        )
        .map_err(|e| format!("cannot write {}: {e}", shown_path(&png_path)))?;
        let chart = plot::Chart {
            title: format!(
                "hostloop-demo: {} particles, {} worker{}: {} of {} pumps within the {} budget of one pump",
                group(frames.particles.get()),
                o.workers,
                if o.workers == 1 { "" } else { "s" },
                group(figures.within as u64),
                group(figures.working as u64),
                budget::ms_text(budget),
            ),
            subtitle: figures.sentence(),
            pumps: pumps
                .iter()
                .filter(|p| p.ran > 0)
                .map(|p| plot::Pump {
                    at_s: p.at_s,
                    elapsed_us: p.elapsed_us,
                    over_budget: p.over_budget,
                })
                .collect(),
            frames: samples
                .iter()
                .map(|s| plot::Frame {
                    end_s: s.end_s,
                    ms: s.frame_ms,
                })
                .collect(),
            budget_us: budget,
            period_ms: ms(period),
            seconds: ran_for.as_secs_f64(),
        };
        plot::write(&svg_path, &chart)
            .map_err(|e| format!("cannot write {}: {e}", shown_path(&svg_path)))?;
        println!("  pictures          {}", shown_path(&png_path));
        println!("                    {}", shown_path(&svg_path));
    }
    Ok(())
}

/// One `hl_runtime_pump`: its report and how long the call took in ms (the sink included).
fn pump_once(rt: &Runtime, budget_us: u64) -> Result<(hl_pump_report_t, f64), String> {
    let mut report = hl_pump_report_t {
        struct_size: std::mem::size_of::<hl_pump_report_t>() as u32,
        ..Default::default()
    };
    let t0 = Instant::now();
    // SAFETY: a live runtime and a sized report, on the main thread; the pump may call `sink`
    // with the `Frames` registered in `run`, which outlives the runtime.
    let status = unsafe { hl_runtime_pump(rt.0, budget_us, &mut report) };
    let took = ms(t0.elapsed());
    check("hl_runtime_pump", status)?;
    Ok((report, took))
}

/// `hl_runtime_stats`: hostloop's counters now.
fn runtime_stats(rt: &Runtime) -> Result<hl_stats_t, String> {
    let mut stats = hl_stats_t {
        struct_size: std::mem::size_of::<hl_stats_t>() as u32,
        ..Default::default()
    };
    // SAFETY: a live runtime and a sized stats struct.
    check("hl_runtime_stats", unsafe {
        hl_runtime_stats(rt.0, &mut stats)
    })?;
    Ok(stats)
}

/// The library's name and version, from `hl_plugin_info`.
fn plugin_name(plugin: *const hl_plugin_t) -> Result<(String, String), String> {
    let mut info = hl_plugin_info_t {
        struct_size: std::mem::size_of::<hl_plugin_info_t>() as u32,
        generation: 0,
        flags: 0,
        reserved: 0,
        name: std::ptr::null(),
        version: std::ptr::null(),
        path: std::ptr::null(),
        pending: 0,
    };
    // SAFETY: `plugin` is a live handle from `hl_plugin_load`; `info` has its size set.
    check("hl_plugin_info", unsafe {
        hl_plugin_info(plugin, &mut info)
    })?;
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: NUL-terminated UTF-8 owned by the handle, valid until its unload.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    Ok((text(info.name), text(info.version)))
}

/// Posts a custom host event; the plugin's subscriber receives it at the next pump.
fn post_custom(rt: &Runtime, topic: &str, bytes: &[u8]) -> Result<(), String> {
    let topic_c = CString::new(topic).map_err(|_| "NUL in a topic")?;
    let event = hl_event_t {
        struct_size: std::mem::size_of::<hl_event_t>() as u32,
        kind: HL_EVENT_CUSTOM,
        frame: 0.0,
        path: std::ptr::null(),
        topic: topic_c.as_ptr(),
        bytes: bytes.as_ptr().cast(),
        bytes_len: bytes.len(),
        coalesce: 0,
        reserved: 0,
    };
    // SAFETY: `rt` is live; the event and what it points to are valid for the call (copied).
    check(&format!("hl_runtime_post_event({topic})"), unsafe {
        hl_runtime_post_event(rt.0, &event)
    })
}

/// The pid of an isolated plugin's worker, from `hl_plugin_process`.
fn worker_pid(plugin: *const hl_plugin_t) -> Result<u32, String> {
    // SAFETY: all-zero is a valid value (integers and NULL pointers).
    let mut p: hl_plugin_process_t = unsafe { std::mem::zeroed() };
    p.struct_size = std::mem::size_of::<hl_plugin_process_t>() as u32;
    // SAFETY: a live handle and a sized struct, on the main thread.
    check("hl_plugin_process", unsafe {
        hl_plugin_process(plugin, &mut p)
    })?;
    Ok(p.pid)
}

/// `--kill-worker-at`: what happened after the worker was killed at `at` (step `step`).
fn print_crash(frames: &Frames, at: Instant, step: u64) -> Result<(), String> {
    let report = frames.crash_report.borrow();
    let Some((reported, text)) = report.as_ref() else {
        return Err("the worker was killed, but no crash report reached the sink".into());
    };
    let cause = text
        .lines()
        .find_map(|l| l.strip_prefix("cause: "))
        .unwrap_or("?");
    println!(
        "  worker killed     at step {}; the crash report reached the sink on the main thread \
         {:.1} ms later: {cause}",
        group(step),
        ms(reported.duration_since(at))
    );
    match (frames.restarted.get(), frames.first_after_restart.get()) {
        (Some(restored), Some((resumed, first))) => println!(
            "  worker restarted  restored after {:.1} ms; its first frame after {:.1} ms, \
             resuming from step {} (its last checkpoint, every {CHECKPOINT_MS} ms)",
            ms(restored.duration_since(at)),
            ms(first.duration_since(at)),
            group(resumed)
        ),
        _ => {
            return Err(format!(
                "the killed worker's plugin did not come back within {} s",
                SETUP_TIMEOUT.as_secs()
            ))
        }
    }
    Ok(())
}

/// Builds the plugin beside this program, with the same profile and target directory, as
/// `cargo build [--release] -p hostloop-particles` would.
fn build_plugin(profile_dir: &Path) -> Result<(), String> {
    build_package(profile_dir, "hostloop-particles")
}

/// `cargo build [--release] -p <package>` into this program's target directory.
fn build_package(profile_dir: &Path, package: &str) -> Result<(), String> {
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "-p", package])
        .env("CARGO_TARGET_DIR", target_dir)
        // Inside the workspace, wherever the program was started from.
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    if release {
        cmd.arg("--release");
    }
    eprintln!(
        "hostloop-demo: {package} is not built yet; running `cargo build{} -p {package}`",
        if release { " --release" } else { "" }
    );
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo to build {package}: {e}"))?;
    if !status.success() {
        return Err(format!("building {package} failed ({status})"));
    }
    Ok(())
}

/// `1 item`, `2 items`, `1,000 items`.
fn count(n: u64, noun: &str) -> String {
    format!("{} {noun}{}", group(n), if n == 1 { "" } else { "s" })
}

fn budget_us(budget_ms: f64) -> u64 {
    ((budget_ms * 1000.0).round() as u64).max(1)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `path` relative to the working directory when it is inside it (as printed and in docs).
fn shown_path(path: &Path) -> String {
    let rel = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(PathBuf::from));
    rel.unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

#[derive(Debug, Clone, Copy, Default)]
struct Percentiles {
    p50: f64,
    p99: f64,
    max: f64,
}

fn percentiles(values: impl Iterator<Item = f64>) -> Percentiles {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return Percentiles::default();
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.5),
        p99: at(0.99),
        max: v[v.len() - 1],
    }
}

/// The live line: one terminal line rewritten with `\r`, or plain lines when not on a terminal.
struct Live {
    start: Instant,
    every: f64,
    last: Instant,
    /// Index into the frame samples and the step count at the last print.
    first_frame: usize,
    steps: u64,
}

impl Live {
    fn new(start: Instant, every: f64) -> Self {
        Live {
            start,
            every,
            last: start,
            first_frame: 0,
            steps: 0,
        }
    }

    fn frame(&mut self, samples: &[FrameSample], frames: &Frames, shown: u64, tty: bool) {
        let now = Instant::now();
        let dt = (now - self.last).as_secs_f64();
        if dt < self.every {
            return;
        }
        let window = &samples[self.first_frame..];
        let n = window.len().max(1) as f64;
        let mean = window.iter().map(|s| s.frame_ms).sum::<f64>() / n;
        let max = window.iter().map(|s| s.frame_ms).fold(0.0, f64::max);
        let pump = window.iter().map(|s| s.pump_ms).sum::<f64>() / n;
        let steps = frames.steps_total.get();
        let rate = steps.saturating_sub(self.steps) as f64 / dt;
        let line = format!(
            "{:5.1} s  frame {mean:4.1} ms (max {max:4.1})  pumps {pump:4.1} ms/frame  {rate:4.0} steps/s  \
             shown {} skipped {}  {} agents",
            (now - self.start).as_secs_f64(),
            group(shown),
            group(steps.saturating_sub(shown)),
            group(frames.particles.get()),
        );
        if tty {
            // One line that never wraps, or `\r` would no longer return to its start.
            let width = wait::terminal_width().unwrap_or(80).saturating_sub(1);
            let line: String = line.chars().take(width).collect();
            print!("\r{line}\x1b[K");
            let _ = std::io::stdout().flush();
        } else {
            println!("{line}");
        }
        self.last = now;
        self.first_frame = samples.len();
        self.steps = steps;
    }
}

/// Pumps and overruns of the host loop as hostloop itself counted them (`hl_stats_t`).
#[derive(Debug, Clone, Copy)]
struct Counted {
    pumps: u64,
    overruns: u64,
}

/// Everything the summary table reports.
struct Summary<'a> {
    o: &'a Options,
    ran_for: Duration,
    samples: &'a [FrameSample],
    pumps: &'a [PumpSample],
    figures: &'a budget::Figures,
    counted: Counted,
    frames: &'a Frames,
    shown: u64,
    stale: u64,
    late: u64,
    stats: &'a hl_stats_t,
    /// How long the runtime had lived when `stats` was read.
    rt_age: Duration,
    unload: &'a hl_unload_report_t,
    shutdown: &'a hl_shutdown_report_t,
}

impl Summary<'_> {
    fn print(&self) {
        let f = percentiles(self.samples.iter().map(|s| s.frame_ms));
        let fig = self.figures;
        let p = fig.time;
        let by = |src: Source| {
            let of: Vec<_> = self.pumps.iter().filter(|p| p.source == src).collect();
            let empty = of.iter().filter(|p| p.ran == 0).count();
            (of.len(), of.iter().map(|p| p.ran).sum::<u64>(), empty)
        };
        let (wake, wake_items, wake_empty) = by(Source::Doorbell);
        let (timer, timer_items, _) = by(Source::Timer);
        let fr = self.frames;
        let steps = fr.steps_total.get();
        let final_step = fr.step.get();
        let period = 1000.0 / HZ;
        println!();
        println!(
            "hostloop-demo summary: {} particles ({} kernel, {} delivery), {} worker{}, {:.1} s",
            group(fr.particles.get()),
            self.o.kernel,
            self.o.delivery,
            self.o.workers,
            if self.o.workers == 1 { "" } else { "s" },
            self.ran_for.as_secs_f64()
        );
        println!("                           p50        p99        max");
        println!(
            "  host frame time   {:>8.2} ms {:>7.2} ms {:>7.2} ms   {} frames at {HZ} Hz ({period:.1} ms), {} late (> {:.1} ms)",
            f.p50,
            f.p99,
            f.max,
            self.samples.len(),
            self.late,
            1.5 * period
        );
        println!(
            "  pump time         {:>8.2} ms {:>7.2} ms {:>7.2} ms   each of the {} pumps that ran work, as hostloop timed it",
            p.p50,
            p.p99,
            p.max,
            group(fig.working as u64),
        );
        for line in fig.lines() {
            println!("{line}");
        }
        let up = self.frames.uploads.get();
        if up.count > 0 {
            println!(
                "  frame upload      {} frames kept with hl_message_lend and copied at the draw, after the pump: up to {:.2} ms each ({})",
                group(u64::from(up.count)),
                up.longest_ms,
                budget::size(up.bytes)
            );
        }
        // hostloop counts every pump, those that found nothing to run too.
        let ours = (fig.pumps as u64, (fig.over + fig.idle_over) as u64);
        println!(
            "                    hostloop's own counters {}: {} pumps in the loop ({} found nothing to run), {} over the budget (hl_stats_t)",
            if (self.counted.pumps, self.counted.overruns) == ours {
                "agree"
            } else {
                "say"
            },
            group(self.counted.pumps),
            group((fig.pumps - fig.working) as u64),
            group(self.counted.overruns)
        );
        // Whether the pumps, together, left the host its frames.
        let together = percentiles(self.samples.iter().map(|s| s.pump_ms));
        let filled = self.samples.iter().filter(|s| s.pump_ms >= period).count();
        if filled == 0 {
            println!(
                "  main thread       all the pumps of one host frame took at most {:.2} ms together (p99 {:.2} ms) of its {period:.1} ms",
                together.max, together.p99
            );
        } else {
            println!(
                "  main thread       in {} the pumps together took the whole {period:.1} ms or more (at most {:.2} ms)",
                count(filled as u64, "host frame"),
                together.max
            );
        }
        println!(
            "  simulation        {} steps, {:.1} steps/s (it reached step {}); workers busy {:.0} % of the time",
            group(steps),
            fr.steps_per_second(),
            group(final_step),
            100.0 * self.stats.workers_busy_us as f64
                / (self.stats.workers.max(1) as f64 * self.rt_age.as_micros().max(1) as f64)
        );
        println!(
            "  frames            {} delivered to the sink; {} shown, {} skipped; {} host frames without a new one",
            group(fr.delivered.get()),
            group(self.shown),
            group(steps.saturating_sub(self.shown)),
            group(self.stale)
        );
        println!(
            "  pumps             {} woken by the doorbell fd ({}, {} found nothing), {} by the frame timer ({}); {} doorbell rings",
            group(wake as u64),
            count(wake_items, "item"),
            group(wake_empty as u64),
            group(timer as u64),
            count(timer_items, "item"),
            group(self.stats.doorbell_rings)
        );
        println!(
            "  sink              {} messages, {} on the main thread",
            group(fr.messages.get()),
            group(fr.messages.get() - fr.off_main_thread.get())
        );
        println!(
            "  plugin unload     {:.2} ms, {} dropped, {} stragglers",
            self.unload.elapsed_us as f64 / 1000.0,
            count(self.unload.dropped, "queued item"),
            self.unload.stragglers
        );
        println!(
            "  runtime shutdown  {:.2} ms (deadline {DEADLINE_MS} ms), {} threads joined, {} stragglers",
            self.shutdown.elapsed_us as f64 / 1000.0,
            self.shutdown.threads_joined,
            self.shutdown.stragglers
        );
    }
}
