//! Plugins through the C API: the fixtures of `tests/fixtures/` (Rust plugins built with
//! `hostloop::export_plugin!`, and one written in C against `hostloop_plugin.h`) are loaded,
//! driven by host events, unloaded under load, hot-reloaded, and made to fail in every way the
//! loader must report.
//!
//! The host here is this test: it calls the exported `hl_*` functions of the bridge's rlib, on
//! the thread that made the runtime (its main thread), and collects the sink's messages.

use std::ffi::{c_void, CStr, CString};
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::ffi::common::*;
use bridge::ffi::event::{hl_event_t, hl_runtime_post_event, HL_EVENT_CUSTOM};
use bridge::ffi::plugin::*;
use bridge::ffi::runtime::*;
use bridge::ffi::sink::{hl_message_t, hl_runtime_set_sink, HL_PAYLOAD_BYTES};
use hostloop_tests::{c_plugin, fixture, test_dir};

/// Only fires on failure.
const HANG_LIMIT: Duration = Duration::from_secs(60);

fn last_error() -> String {
    // SAFETY: hl_last_error always returns a valid NUL-terminated string.
    unsafe { CStr::from_ptr(hl_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[track_caller]
fn ok(status: hl_status_t) {
    assert_eq!(status, HL_STATUS_OK, "status {status}: {}", last_error());
}

type Inbox = Mutex<Vec<(String, Vec<u8>)>>;

unsafe extern "C" fn sink(user_data: *mut c_void, m: *const hl_message_t) {
    // SAFETY: user_data is the `Inbox` registered below; the message is valid for the call.
    let (inbox, m) = unsafe { (&*(user_data as *const Inbox), &*m) };
    if m.payload_kind != HL_PAYLOAD_BYTES {
        return;
    }
    // SAFETY: per hostloop/sink.h, topic is NUL-terminated and bytes has bytes_len bytes.
    let topic = unsafe { CStr::from_ptr(m.topic) }
        .to_string_lossy()
        .into_owned();
    let bytes = if m.bytes_len == 0 {
        Vec::new()
    } else {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(m.bytes, m.bytes_len) }.to_vec()
    };
    inbox.lock().unwrap().push((topic, bytes));
}

unsafe extern "C" fn free_inbox(user_data: *mut c_void) {
    // SAFETY: the Arc leaked into user_data below, released once.
    drop(unsafe { Arc::from_raw(user_data as *const Inbox) });
}

/// A host: a runtime made through the C API, its sink collecting messages.
struct Host {
    rt: *mut hl_runtime_t,
    inbox: Arc<Inbox>,
}

impl Host {
    fn new(workers: u32) -> Host {
        let mut options = MaybeUninit::<hl_runtime_options_t>::uninit();
        // SAFETY: writable memory for the options.
        ok(unsafe { hl_runtime_options_init(options.as_mut_ptr()) });
        // SAFETY: initialised by the call above.
        let mut options = unsafe { options.assume_init() };
        options.workers = workers;
        let mut rt = std::ptr::null_mut();
        // SAFETY: valid options and out-pointer.
        ok(unsafe { hl_runtime_new(&options, &mut rt) });
        let inbox = Arc::new(Inbox::default());
        let ud = Arc::into_raw(inbox.clone()) as *mut c_void;
        // SAFETY: a live runtime on its main thread; the finalizer releases `ud`.
        ok(unsafe { hl_runtime_set_sink(rt, Some(sink), ud, Some(free_inbox)) });
        Host { rt, inbox }
    }

    fn post(&self, topic: &str, bytes: &[u8]) {
        let topic = CString::new(topic).unwrap();
        let e = hl_event_t {
            struct_size: std::mem::size_of::<hl_event_t>() as u32,
            kind: HL_EVENT_CUSTOM,
            frame: 0.0,
            path: std::ptr::null(),
            topic: topic.as_ptr(),
            bytes: bytes.as_ptr().cast(),
            bytes_len: bytes.len(),
            coalesce: 0,
            reserved: 0,
        };
        // SAFETY: a live runtime and a valid event.
        ok(unsafe { hl_runtime_post_event(self.rt, &e) });
    }

    fn pump(&self) {
        // SAFETY: a live runtime, on its main thread.
        ok(unsafe { hl_runtime_pump(self.rt, 2_000, std::ptr::null_mut()) });
    }

    /// Pumps until `done` holds (or the hang limit).
    fn pump_until(&self, what: &str, mut done: impl FnMut(&Host) -> bool) {
        let deadline = Instant::now() + HANG_LIMIT;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: nothing after {HANG_LIMIT:?}"
            );
            self.pump();
            std::thread::yield_now();
        }
    }

    /// Messages received on `topic`, in order.
    fn messages(&self, topic: &str) -> Vec<Vec<u8>> {
        let inbox = self.inbox.lock().unwrap();
        inbox
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, b)| b.clone())
            .collect()
    }

    fn count(&self, topic_prefix: &str) -> usize {
        let inbox = self.inbox.lock().unwrap();
        inbox
            .iter()
            .filter(|(t, _)| t.starts_with(topic_prefix))
            .count()
    }

    fn load(&self, path: &Path) -> Result<*mut hl_plugin_t, (hl_status_t, String)> {
        let path = CString::new(path.to_str().unwrap()).unwrap();
        let mut plugin = std::ptr::null_mut();
        // SAFETY: a live runtime, a valid path and out-pointer, on the main thread.
        match unsafe { hl_plugin_load(self.rt, path.as_ptr(), &mut plugin) } {
            HL_STATUS_OK => Ok(plugin),
            s => Err((s, last_error())),
        }
    }

    fn stats(&self) -> hl_plugin_stats_t {
        let mut s = MaybeUninit::<hl_plugin_stats_t>::zeroed();
        // SAFETY: zeroed memory is a valid hl_plugin_stats_t; size set before the call.
        unsafe {
            (*s.as_mut_ptr()).struct_size = std::mem::size_of::<hl_plugin_stats_t>() as u32;
            ok(hl_runtime_plugin_stats(self.rt, s.as_mut_ptr()));
            s.assume_init()
        }
    }

    /// Ticks the counter plugin once and returns (build, step, value) of its answer.
    fn tick(&self) -> (u32, u64, u64) {
        let before = self.messages("counter/step").len();
        self.post("tick", &[]);
        self.pump_until("a counter/step answer", |h| {
            h.messages("counter/step").len() > before
        });
        let m = self.messages("counter/step").pop().unwrap();
        (
            u32::from_le_bytes(m[..4].try_into().unwrap()),
            u64::from_le_bytes(m[4..12].try_into().unwrap()),
            u64::from_le_bytes(m[12..20].try_into().unwrap()),
        )
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // SAFETY: the runtime this host made, freed once, on its main thread.
        let status = unsafe { hl_runtime_free(self.rt) };
        if !std::thread::panicking() {
            ok(status);
        }
    }
}

fn info(plugin: *mut hl_plugin_t) -> (String, String, u32, u32) {
    let mut i = MaybeUninit::<hl_plugin_info_t>::zeroed();
    // SAFETY: zeroed memory is a valid hl_plugin_info_t; size set before the call; strings
    // are read before the plugin changes.
    unsafe {
        (*i.as_mut_ptr()).struct_size = std::mem::size_of::<hl_plugin_info_t>() as u32;
        ok(hl_plugin_info(plugin, i.as_mut_ptr()));
        let i = i.assume_init();
        (
            CStr::from_ptr(i.name).to_string_lossy().into_owned(),
            CStr::from_ptr(i.version).to_string_lossy().into_owned(),
            i.generation,
            i.flags,
        )
    }
}

fn unload(plugin: *mut hl_plugin_t, deadline_ms: u32) -> (hl_status_t, hl_unload_report_t) {
    let mut r = hl_unload_report_t {
        struct_size: std::mem::size_of::<hl_unload_report_t>() as u32,
        retired: 0,
        dropped: 0,
        stragglers: 0,
        elapsed_us: 0,
    };
    // SAFETY: a plugin handle and a sized report, on the main thread.
    let status = unsafe { hl_plugin_unload(plugin, deadline_ms, &mut r) };
    (status, r)
}

fn reload(plugin: *mut hl_plugin_t, path: &Path) -> Result<(), (hl_status_t, String)> {
    let path = CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a plugin handle and a valid path, on the main thread.
    match unsafe { hl_plugin_reload(plugin, path.as_ptr(), 5_000) } {
        HL_STATUS_OK => Ok(()),
        s => Err((s, last_error())),
    }
}

#[test]
fn a_rust_plugin_loads_runs_jobs_on_the_hosts_pool_and_unloads() {
    let host = Host::new(2);
    let plugin = host.load(&fixture("fixture_counter_v1")).unwrap();
    let (name, version, generation, flags) = info(plugin);
    assert_eq!(
        (name.as_str(), version.as_str(), generation),
        ("counter", "1.0.0", 0)
    );
    assert_eq!(
        flags & HL_PLUGIN_FLAG_RETAIN_IMAGE,
        HL_PLUGIN_FLAG_RETAIN_IMAGE
    );
    for step in 1..=3 {
        assert_eq!(host.tick(), (1, step, step));
    }
    assert_eq!(host.stats().loaded, 1);
    let (status, report) = unload(plugin, 2_000);
    ok(status);
    assert_eq!(report.retired, 1, "a Rust image is retired, not unmapped");
    assert_eq!(report.stragglers, 0);
    let stats = host.stats();
    assert_eq!(
        (stats.loaded, stats.unloads, stats.images_retired),
        (0, 1, 1)
    );
    // The handle is gone for good.
    assert_eq!(unload(plugin, 0).0, HL_STATUS_INVALID_HANDLE);
}

#[test]
fn each_load_error_has_its_own_status_and_names_the_path_and_the_reason() {
    let dir = test_dir!("plugin-load-errors");
    let host = Host::new(1);
    let expect = |path: &Path, status: hl_status_t, words: &[&str]| {
        let (s, msg) = host.load(path).expect_err("the load must fail");
        // SAFETY: hl_status_name returns static strings.
        let name = |s| unsafe { CStr::from_ptr(hl_status_name(s)) }.to_string_lossy();
        assert_eq!(s, status, "{}: got {} ({msg})", path.display(), name(s));
        assert!(
            msg.contains(&*path.display().to_string()),
            "{msg:?} names the path"
        );
        for w in words {
            assert!(msg.contains(w), "{msg:?} should say {w:?}");
        }
    };
    expect(
        &dir.join("missing.so"),
        HL_STATUS_FILE_NOT_FOUND,
        &["no such file"],
    );
    let text = dir.write("notes.so", "not a library\n");
    expect(&text, HL_STATUS_NOT_A_LIBRARY, &[]);
    let no_entry = c_plugin(&dir, "no_entry", &["-DFIXTURE_NO_ENTRY"]);
    expect(
        &no_entry,
        HL_STATUS_NO_ENTRY_SYMBOL,
        &["hostloop_plugin_entry"],
    );
    let too_old = c_plugin(&dir, "abi0", &["-DFIXTURE_ABI=0"]);
    expect(&too_old, HL_STATUS_VERSION_MISMATCH, &["ABI 0", "older"]);
    let too_new = c_plugin(&dir, "abi2", &["-DFIXTURE_ABI=2"]);
    expect(&too_new, HL_STATUS_VERSION_MISMATCH, &["ABI 2", "newer"]);
    let small = c_plugin(&dir, "small", &["-DFIXTURE_SIZE=16"]);
    expect(&small, HL_STATUS_BAD_DESCRIPTOR, &["16 bytes"]);
    expect(
        &fixture("fixture_panicky"),
        HL_STATUS_PANIC,
        &["panicky", "panics in load, on purpose"],
    );
    let refuses = c_plugin(&dir, "refuses", &["-DFIXTURE_LOAD_FAILS"]);
    expect(
        &refuses,
        HL_STATUS_FAILED,
        &["license server is unreachable"],
    );

    // Same plugin twice: refused, the first one keeps working.
    let first = host.load(&fixture("fixture_counter_v1")).unwrap();
    expect(
        &fixture("fixture_counter_v2"),
        HL_STATUS_ALREADY_LOADED,
        &["\"counter\"", "reload"],
    );
    assert_eq!(host.tick(), (1, 1, 1));
    let stats = host.stats();
    assert_eq!(
        (stats.loaded, stats.loads),
        (1, 1),
        "failed loads leave nothing loaded"
    );
    ok(unload(first, 2_000).0);
}

#[test]
fn a_plugin_written_in_c_runs_work_on_the_pool_keeps_state_across_a_reload_and_is_really_unloaded()
{
    let dir = test_dir!("plugin-c");
    let host = Host::new(2);
    let path = c_plugin(&dir, "cplugin", &[]);
    let plugin = host.load(&path).unwrap();
    assert_eq!(info(plugin).3 & HL_PLUGIN_FLAG_RETAIN_IMAGE, 0);
    let total = |h: &Host| {
        h.messages("cplugin/total")
            .last()
            .map_or(0, |b| u64::from_le_bytes(b[..].try_into().unwrap()))
    };
    host.post("work", &100u32.to_le_bytes());
    host.pump_until("100 work items", |h| {
        h.messages("cplugin/total").len() == 100
    });
    assert_eq!(total(&host), 100 * 500_500);

    // A rebuilt copy: the state (the total) carries over.
    let rebuilt = c_plugin(&dir, "cplugin_rebuilt", &[]);
    reload(plugin, &rebuilt).unwrap();
    assert_eq!(info(plugin).2, 1, "generation 1 after one reload");
    host.post("work", &1u32.to_le_bytes());
    host.pump_until("one more item", |h| {
        h.messages("cplugin/total").len() == 101
    });
    assert_eq!(total(&host), 101 * 500_500);

    // Another plugin is not a new build of this one.
    let other = c_plugin(&dir, "other", &["-DFIXTURE_NAME=\"other\""]);
    let (status, msg) = reload(plugin, &other).unwrap_err();
    assert_eq!(status, HL_STATUS_BAD_DESCRIPTOR, "{msg}");

    let (status, report) = unload(plugin, 2_000);
    ok(status);
    assert_eq!(report.retired, 0, "a C plugin without the flag is unmapped");
    let stats = host.stats();
    assert_eq!(
        stats.images_closed, 3,
        "the refused build, the reloaded-away build and the last one"
    );
    assert_eq!((stats.reloads, stats.failed_reloads), (1, 1));
}

static SENTINEL: AtomicU64 = AtomicU64::new(0);

#[test]
fn unloading_with_ten_thousand_jobs_queued_returns_in_time_and_nothing_of_the_plugin_runs_after() {
    let host = Host::new(2);
    let plugin = host.load(&fixture("fixture_counter_v1")).unwrap();
    let mut flood = 10_000u32.to_le_bytes().to_vec();
    flood.extend_from_slice(&(&SENTINEL as *const AtomicU64 as u64).to_le_bytes());
    host.post("flood", &flood);
    // Some of the plugin's work has run and reached the host before the unload.
    host.pump_until("the first flood results", |h| {
        h.count("counter/flood") >= 10
    });
    let ran_before = SENTINEL.load(Ordering::SeqCst);
    assert!(ran_before >= 10);

    let deadline_ms = 5_000;
    let (status, report) = unload(plugin, deadline_ms);
    ok(status);
    let after_unload = SENTINEL.load(Ordering::SeqCst);
    assert_eq!(report.stragglers, 0);
    assert!(report.elapsed_us < u64::from(deadline_ms) * 1_000);
    assert!(
        after_unload < 10_000,
        "the unload came while jobs were still queued (ran {after_unload})"
    );
    assert!(report.dropped > 0, "queued jobs were dropped unrun");
    let messages_at_unload = host.count("counter/");

    // Let the pool go through everything queued before the unload: background jobs start only
    // when no normal-priority work (the plugin's wrappers) is left in the queues.
    let handle = handle(host.rt).unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    for _ in 0..64 {
        let done = done.clone();
        handle
            .spawn_with(bridge::sdk::Priority::Background, move |_| {
                done.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
    }
    host.pump_until("the pool's background jobs", |_| {
        done.load(Ordering::SeqCst) == 64
    });
    for _ in 0..10 {
        host.pump();
    }
    assert_eq!(
        SENTINEL.load(Ordering::SeqCst),
        after_unload,
        "a job of the unloaded plugin started after unload returned"
    );
    assert_eq!(
        host.count("counter/"),
        messages_at_unload,
        "the unloaded plugin reached the sink after unload returned"
    );
    println!(
        "unload: {} of 10000 jobs had run, {} dropped, {} us",
        after_unload, report.dropped, report.elapsed_us
    );
}

#[test]
fn hot_reload_mid_run_continues_from_step_n_with_the_new_build_and_a_broken_build_changes_nothing()
{
    let host = Host::new(2);
    let plugin = host.load(&fixture("fixture_counter_v1")).unwrap();
    for step in 1..=5 {
        assert_eq!(host.tick(), (1, step, step));
    }
    // v3 cannot restore: the reload fails, says why, and v1 runs on from step 5.
    let (status, msg) = reload(plugin, &fixture("fixture_counter_v3")).unwrap_err();
    assert_eq!(status, HL_STATUS_FAILED, "{msg}");
    assert!(msg.contains("v3 cannot read saved state"), "{msg}");
    assert_eq!(info(plugin).1, "1.0.0");
    assert_eq!(host.tick(), (1, 6, 6));

    // v2 takes over at step 6 and adds 2 per step.
    reload(plugin, &fixture("fixture_counter_v2")).unwrap();
    let (_, version, generation, _) = info(plugin);
    assert_eq!((version.as_str(), generation), ("2.0.0", 1));
    assert_eq!(host.tick(), (2, 7, 8));
    assert_eq!(host.tick(), (2, 8, 10));

    // And back to v1, from v2's state.
    reload(plugin, &fixture("fixture_counter_v1")).unwrap();
    assert_eq!(host.tick(), (1, 9, 11));
    let stats = host.stats();
    assert_eq!((stats.reloads, stats.failed_reloads), (2, 1));
    ok(unload(plugin, 2_000).0);
}

#[test]
fn panicking_plugin_callbacks_never_take_the_host_down() {
    let host = Host::new(2);
    let plugin = host.load(&fixture("fixture_counter_v1")).unwrap();
    host.post("panic-event", &[]);
    host.post("panic-main", &[]);
    host.post("panic-job", &[]);
    host.pump_until("the panicking job's continuation", |h| {
        !h.messages("counter/panic-job").is_empty()
    });
    assert_eq!(host.messages("counter/panic-job")[0], b"job-panicked");
    host.post("alive", &[]);
    host.pump_until("the plugin's answer", |h| {
        !h.messages("counter/alive").is_empty()
    });
    assert_eq!(host.tick(), (1, 1, 1));
    ok(unload(plugin, 2_000).0);
}

#[test]
fn plugin_calls_off_the_main_thread_are_refused() {
    let host = Host::new(1);
    let plugin = host.load(&fixture("fixture_counter_v1")).unwrap();
    let (rt, p) = (host.rt as usize, plugin as usize);
    let path = CString::new(fixture("fixture_counter_v2").to_str().unwrap()).unwrap();
    let statuses = std::thread::spawn(move || {
        let mut out = std::ptr::null_mut();
        // SAFETY: live handles and valid pointers; the calls are what is under test.
        unsafe {
            [
                hl_plugin_load(rt as *mut _, path.as_ptr(), &mut out),
                hl_plugin_reload(p as *mut _, path.as_ptr(), 0),
                hl_plugin_unload(p as *mut _, 0, std::ptr::null_mut()),
            ]
        }
    })
    .join()
    .unwrap();
    assert_eq!(statuses, [HL_STATUS_WRONG_THREAD; 3]);
    assert_eq!(host.tick(), (1, 1, 1), "the plugin is untouched");
    ok(unload(plugin, 2_000).0);
}

/// Resident memory of this process, from /proc/self/statm.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn a_hundred_load_unload_cycles_keep_resident_memory_bounded() {
    let dir = test_dir!("plugin-cycles");
    let c_path = c_plugin(&dir, "cplugin", &[]);
    let rust_path = fixture("fixture_counter_v1");
    let host = Host::new(2);
    // Warm up: the first load maps the image and grows the allocator's pools.
    for path in [&rust_path, &c_path] {
        let p = host.load(path).unwrap();
        ok(unload(p, 2_000).0);
    }
    let before = rss_bytes();
    for i in 0..100u64 {
        let p = host.load(&rust_path).unwrap();
        assert_eq!(host.tick(), (1, 1, 1), "cycle {i}: a fresh instance");
        let (status, report) = unload(p, 2_000);
        ok(status);
        assert_eq!(report.retired, 1);
        let c = host.load(&c_path).unwrap();
        host.post("work", &1u32.to_le_bytes());
        let n = host.messages("cplugin/total").len();
        host.pump_until("the C plugin's answer", |h| {
            h.messages("cplugin/total").len() > n
        });
        ok(unload(c, 2_000).0);
    }
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "RSS {} KiB before, +{} KiB after 100 load/unload cycles of a Rust and a C plugin",
        before / 1024,
        grown / 1024
    );
    assert!(
        grown < 32 << 20,
        "resident memory grew by {} KiB over 100 cycles",
        grown / 1024
    );
    let stats = host.stats();
    assert_eq!(stats.loads, 202);
    assert_eq!(stats.images_retired, 101);
    assert_eq!(stats.images_closed, 101);
}

/// Plugin images mapped in this process: the files of /proc/self/maps under the loader's copy
/// directory or among `paths`, each counted once.
fn mapped_images(paths: &[&Path]) -> usize {
    let copies = format!("hostloop-plugins-{}", std::process::id());
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let names: std::collections::BTreeSet<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|f| {
            let f = f.trim_end_matches(" (deleted)");
            f.contains(&copies) || paths.iter().any(|p| Path::new(f) == *p)
        })
        .collect();
    names.len()
}

#[test]
fn reloads_alternating_between_two_builds_map_each_build_once() {
    let v1 = std::fs::canonicalize(fixture("fixture_counter_v1")).unwrap();
    let v2 = std::fs::canonicalize(fixture("fixture_counter_v2")).unwrap();
    let host = Host::new(2);
    let plugin = host.load(&v1).unwrap();
    assert_eq!(host.tick(), (1, 1, 1));
    // Warm up: both builds mapped once, the allocator's pools grown.
    reload(plugin, &v2).unwrap();
    reload(plugin, &v1).unwrap();
    let images_before = mapped_images(&[&v1, &v2]);
    let before = rss_bytes();
    let mut step = host.tick().1;
    for i in 0..50 {
        let (path, build) = if i % 2 == 0 { (&v2, 2) } else { (&v1, 1) };
        reload(plugin, path).unwrap();
        let (b, s, _) = host.tick();
        assert_eq!(
            (b, s),
            (build, step + 1),
            "reload {i}: the state carried over"
        );
        step = s;
    }
    let images_after = mapped_images(&[&v1, &v2]);
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "{images_before} images mapped before, {images_after} after 50 reloads; RSS +{} KiB",
        grown / 1024
    );
    // Generous: the other tests of this file run beside this one and map copies of their own
    // (each 50-reload run used to add 50 images and about 1 MiB of RSS per reload).
    assert!(
        images_after <= images_before + 8,
        "50 reloads between two builds mapped {} more images",
        images_after - images_before
    );
    assert!(
        grown < 16 << 20,
        "resident memory grew by {} KiB over 50 reloads between two builds",
        grown / 1024
    );
    let stats = host.stats();
    assert_eq!(stats.reloads, 52);
    ok(unload(plugin, 2_000).0);
}
