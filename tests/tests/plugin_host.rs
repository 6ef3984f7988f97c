//! `tests/c/plugin_host.c`, a C11 host that loads plugins through `hostloop.h` alone: the C
//! fixture plugin and the Rust counter fixture (v1, hot-reloaded to v2), driven by custom events
//! from a poll() loop on the doorbell fd. Natively, under ASan/UBSan and under valgrind.

use std::path::PathBuf;

use hostloop_tests::{
    c_dir, c_plugin, fixture, run_program, run_sanitized, run_valgrind, test_dir,
};
use hostloop_tests::{Build, Lang, Run, TestDir, SANITIZER_FLAGS};

/// The `work` items the host asks of the C plugin, and what each one adds to its total.
const WORK_ITEMS: u64 = 100;
const WORK_SUM: u64 = 500_500;

fn build_host(dir: &TestDir, extra_flags: &[&str]) -> PathBuf {
    Build::new(Lang::C)
        .flags(extra_flags)
        .source(c_dir().join("plugin_host.c"))
        .compile(dir.join("plugin_host"))
}

/// The program's arguments: the C plugin (built into `dir` with `plugin_flags`), then the Rust
/// counter plugin's builds 1 and 2.
fn plugin_args(dir: &TestDir, plugin_flags: &[&str]) -> Vec<String> {
    [
        c_plugin(dir, "cplugin", plugin_flags),
        fixture("fixture_counter_v1"),
        fixture("fixture_counter_v2"),
    ]
    .iter()
    .map(|p| p.to_str().expect("UTF-8 paths").to_owned())
    .collect()
}

/// What every run of plugin_host.c must show, however it was built.
fn assert_plugin_host_behaviour(run: &Run) {
    run.assert_success("plugin_host.c");
    assert!(run.has_line("plugin_host: OK"), "{}", run.describe());
    let d = run.describe();
    let value = |key: &str| run.value(key);

    // The C plugin: its tasks ran on the pool, their results reached the sink on the main thread.
    assert_eq!(value("cplugin_name"), Some("cplugin"), "{d}");
    assert_eq!(value("cplugin_version"), Some("1.0.0"), "{d}");
    assert_eq!(run.number("cplugin_generation"), 0, "{d}");
    assert_eq!(
        run.number("cplugin_retain"),
        0,
        "a C plugin does not ask to be kept mapped\n{d}"
    );
    assert_eq!(run.number("cplugin_path_matches"), 1, "{d}");
    assert_eq!(run.number("totals"), WORK_ITEMS, "one answer per item\n{d}");
    assert_eq!(run.number("total"), WORK_ITEMS * WORK_SUM, "{d}");
    assert_eq!(
        run.number("cplugin_pending"),
        0,
        "nothing of the plugin is pending once its work is done\n{d}"
    );

    // The Rust counter: v1, a failed reload that changes nothing, then v2 from step 4 on.
    assert_eq!(value("counter_name"), Some("counter"), "{d}");
    assert_eq!(value("counter_version"), Some("1.0.0"), "{d}");
    assert_eq!(run.number("counter_generation"), 0, "{d}");
    assert_eq!(
        run.number("counter_retain"),
        1,
        "a Rust plugin is retired, never unmapped\n{d}"
    );
    assert_eq!(run.number("counter_path_matches"), 1, "{d}");
    let ticks = [
        "1/1/1", "1/2/2", "1/3/3", // v1: +1 per step
        "1/4/4", // after the failed reload, still v1
        "2/5/6", "2/6/8",  // v2 continues from step 4: +2 per step
        "2/7/10", // and still answers after the C plugin is gone
    ];
    for (i, expected) in ticks.iter().enumerate() {
        let key = format!("tick{}", i + 1);
        assert_eq!(
            value(&key),
            Some(*expected),
            "{key} is build/step/value\n{d}"
        );
    }
    assert_eq!(value("reloaded_name"), Some("counter"), "{d}");
    assert_eq!(value("reloaded_version"), Some("2.0.0"), "{d}");
    assert_eq!(
        run.number("reloaded_generation"),
        1,
        "one successful reload\n{d}"
    );
    assert_eq!(run.number("reloaded_path_matches"), 1, "{d}");

    // Errors: each has its own status.
    for (key, status) in [
        ("missing", "HL_STATUS_FILE_NOT_FOUND"),
        ("cplugin_twice", "HL_STATUS_ALREADY_LOADED"),
        ("counter_twice", "HL_STATUS_ALREADY_LOADED"),
        ("counter_v2_beside_v1", "HL_STATUS_ALREADY_LOADED"),
        ("null_path", "HL_STATUS_NULL_ARG"),
        ("reload_missing", "HL_STATUS_FILE_NOT_FOUND"),
        ("stale_info", "HL_STATUS_INVALID_HANDLE"),
        ("stale_unload", "HL_STATUS_INVALID_HANDLE"),
    ] {
        assert_eq!(value(key), Some(status), "{key}\n{d}");
    }

    // Unloading.
    assert_eq!(
        run.number("cplugin_retired"),
        0,
        "the C plugin is unmapped\n{d}"
    );
    assert_eq!(run.number("cplugin_dropped"), 0, "{d}");
    assert_eq!(run.number("cplugin_stragglers"), 0, "{d}");
    assert_eq!(
        run.number("totals_after_unload"),
        0,
        "an unloaded plugin gets no more events\n{d}"
    );
    assert_eq!(
        run.number("counter_retired"),
        1,
        "the Rust plugin is retired\n{d}"
    );
    assert_eq!(run.number("counter_stragglers"), 0, "{d}");

    // The runtime's plugin counters.
    assert_eq!(run.number("loaded"), 0, "{d}");
    assert_eq!(
        run.number("loads"),
        3,
        "cplugin, counter v1, and v2 by reload\n{d}"
    );
    assert_eq!(run.number("unloads"), 2, "{d}");
    assert_eq!(run.number("reloads"), 1, "{d}");
    assert_eq!(
        run.number("failed_reloads"),
        1,
        "the reload from a missing file\n{d}"
    );
    assert_eq!(
        run.number("images_retired"),
        2,
        "v1 at the reload, v2 at the unload\n{d}"
    );
    assert_eq!(run.number("images_closed"), 1, "the C plugin\n{d}");
    assert_eq!(run.number("plugin_stragglers"), 0, "{d}");

    // The host side.
    assert_eq!(run.number("steps"), 7, "{d}");
    assert_eq!(
        run.number("sink_messages"),
        WORK_ITEMS + 7,
        "the plugins' answers and nothing else\n{d}"
    );
    assert_eq!(run.number("sink_bad"), 0, "{d}");
    assert_eq!(run.number("sink_other"), 0, "{d}");
    assert_eq!(run.number("sink_off_main"), 0, "{d}");
    assert_eq!(
        run.number("sink_finalized"),
        1,
        "hl_runtime_free finalizes the sink once\n{d}"
    );
    assert!(
        run.number("wakes") >= 1,
        "the doorbell fd woke the loop\n{d}"
    );
    assert_eq!(
        run.value("fds_leaked"),
        Some("0"),
        "hl_runtime_free closes the doorbell's fds, plugins or not\n{d}"
    );
}

#[test]
fn a_c_host_runs_a_c_plugin_and_hot_reloads_a_rust_one_through_the_c_api() {
    let dir = test_dir!("plugin-host-native");
    let exe = build_host(&dir, &[]);
    let args = plugin_args(&dir, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_plugin_host_behaviour(&run_program(&exe, &args, &[]));
}

#[test]
fn the_c_plugin_host_is_clean_under_address_and_undefined_behaviour_sanitizers() {
    let dir = test_dir!("plugin-host-asan");
    let exe = build_host(&dir, SANITIZER_FLAGS);
    // The C plugin is instrumented too (`c_plugin` passes its extra flags to the compiler), so
    // the runtime's calls into it — work triples run or dropped, unload freeing the instance —
    // are checked on both sides. The Rust plugins and libhostloop are not instrumented: ASan
    // still sees their heap (it intercepts malloc/free process-wide), so LeakSanitizer covers
    // what they allocate.
    //
    // detect_leaks=1 is all it takes. ASan's link-order check (which `verify_asan_link_order=0`
    // would silence) only fires when libasan is not first in the initial library list, e.g.
    // when it is LD_PRELOADed into an uninstrumented program; here the executable links it
    // first, and libraries opened later with dlopen() (the plugins) are not subject to it.
    let args = plugin_args(&dir, SANITIZER_FLAGS);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_sanitized(&exe, &args);
    assert_plugin_host_behaviour(&run);
}

#[test]
fn the_c_plugin_host_is_clean_under_valgrind() {
    let dir = test_dir!("plugin-host-valgrind");
    let exe = build_host(&dir, &["-g"]);
    let args = plugin_args(&dir, &["-g"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(run) = run_valgrind(&exe, &args) else {
        return;
    };
    assert_plugin_host_behaviour(&run);
}

/// `tests/c/plugin_self_unload.c`: the sink's unload of the plugin whose message it is handling
/// is refused with REENTRANT; the plugin then runs on and unloads cleanly after the pump.
fn assert_self_unload_behaviour(run: &Run) {
    run.assert_success("plugin_self_unload.c");
    let d = run.describe();
    assert!(run.has_line("plugin_self_unload: OK"), "{d}");
    assert_eq!(
        run.value("in_sink_unload"),
        Some("HL_STATUS_REENTRANT"),
        "{d}"
    );
    assert_eq!(run.number("handle_valid_after"), 1, "{d}");
    assert_eq!(run.number("answers"), 20, "every answer still arrives\n{d}");
    assert_eq!(run.value("after_unload"), Some("HL_STATUS_OK"), "{d}");
    assert_eq!(run.number("stragglers"), 0, "{d}");
    assert_eq!(run.number("retired"), 0, "the C plugin is unmapped\n{d}");
    assert_eq!(run.number("loaded"), 0, "{d}");
    assert_eq!(run.number("unloads"), 1, "{d}");
    assert_eq!(run.number("plugin_stragglers"), 0, "{d}");
}

fn run_self_unload(dir: &TestDir, flags: &[&str], env: &[(&str, &str)]) -> Run {
    let exe = Build::new(Lang::C)
        .flags(flags)
        .source(c_dir().join("plugin_self_unload.c"))
        .compile(dir.join("plugin_self_unload"));
    let plugin = c_plugin(dir, "cplugin", flags);
    run_program(&exe, &[plugin.to_str().expect("UTF-8 path")], env)
}

#[test]
fn unloading_a_plugin_from_the_sink_call_of_its_own_message_is_refused_as_reentrant() {
    let dir = test_dir!("plugin-self-unload-native");
    assert_self_unload_behaviour(&run_self_unload(&dir, &[], &[]));
}

#[test]
fn a_refused_self_unload_leaks_nothing_under_address_sanitizer() {
    let dir = test_dir!("plugin-self-unload-asan");
    let run = run_self_unload(
        &dir,
        SANITIZER_FLAGS,
        &[
            ("ASAN_OPTIONS", "detect_leaks=1"),
            ("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
        ],
    );
    assert!(
        !run.stderr.contains("ERROR: AddressSanitizer")
            && !run.stderr.contains("ERROR: LeakSanitizer")
            && !run.stderr.contains("runtime error:"),
        "sanitizer report:\n{}",
        run.describe()
    );
    assert_self_unload_behaviour(&run);
}
