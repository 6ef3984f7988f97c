//! C++17 programs: one on the plain C header (`tests/cpp/host.cpp`) and, on `hostloop.hpp`, a
//! host (`tests/cpp/host_hpp.cpp`), a host of plugins (`tests/cpp/plugin_hpp.cpp`) and two
//! translation units that both include it twice (`tests/cpp/tu_a.cpp`, `tests/cpp/tu_b.cpp`).

use std::path::PathBuf;

use hostloop_tests::{
    c_plugin, cpp_dir, fixture, include_dir, run_program, run_sanitized, test_dir, Build, Lang,
    Run, TestDir, SANITIZER_FLAGS,
};

/// Fails listing every `key=value` of `expected` that the program did not print as expected.
#[track_caller]
fn assert_values(run: &Run, expected: &[(&str, &str)]) {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(key, value)| run.value(key) != Some(*value))
        .map(|(key, value)| format!("{key}: expected {value:?}, got {:?}", run.value(key)))
        .collect();
    assert!(wrong.is_empty(), "{}\n{}", wrong.join("\n"), run.describe());
}

#[test]
fn a_cxx17_host_on_the_c_header_runs_jobs_and_pumps() {
    let dir = test_dir!("cpp-host");
    let exe = Build::new(Lang::Cxx)
        .source(cpp_dir().join("host.cpp"))
        .compile(dir.join("host"));
    let run = run_program(&exe, &[], &[]);
    run.assert_success("host.cpp");
    assert!(run.has_line("cpp host: OK"), "{}", run.describe());
    assert_eq!(run.number("results"), 8, "{}", run.describe());
    assert_eq!(run.number("sink_messages"), 1, "{}", run.describe());
    assert_eq!(
        run.number("finalized"),
        9,
        "8 jobs and the sink\n{}",
        run.describe()
    );
}

#[test]
fn hostloop_hpp_compiles_alone_and_twice_as_cxx17_with_warnings_as_errors() {
    let dir = test_dir!("cpp-hpp-standalone");
    let hpp = include_dir().join("hostloop.hpp");
    for (times, name) in [(1, "once"), (2, "twice")] {
        let src = dir.write(
            &format!("{name}.cpp"),
            &format!("#include \"{}\"\n", hpp.display()).repeat(times),
        );
        Build::new(Lang::Cxx)
            .source(&src)
            .object_only()
            .compile(dir.join(format!("{name}.o")));
    }
}

fn build_hpp_host(
    name: &str,
    extra_flags: &[&str],
) -> (hostloop_tests::TestDir, std::path::PathBuf) {
    let dir = test_dir!(name);
    let exe = Build::new(Lang::Cxx)
        .flags(extra_flags)
        .source(cpp_dir().join("host_hpp.cpp"))
        .compile(dir.join("host_hpp"));
    (dir, exe)
}

fn assert_hpp_host(run: &hostloop_tests::Run) {
    run.assert_success("host_hpp.cpp");
    let d = run.describe();
    assert!(run.has_line("hpp host: OK"), "{d}");
    assert_eq!(run.number("results"), 10, "{d}");
    assert_eq!(run.number("failed_with_exception"), 1, "{d}");
    assert_eq!(run.number("arrays"), 10, "{d}");
    assert_eq!(run.number("events"), 1, "{d}");
    assert_eq!(
        run.number("swallowed"),
        2,
        "the sink's and the job's exceptions\n{d}"
    );
    assert_eq!(run.number("reentrant_errors"), 1, "{d}");
    assert_eq!(
        run.number("live_captures"),
        0,
        "every boxed callable destroyed\n{d}"
    );
    assert_eq!(run.number("timed_out"), 0, "{d}");
}

#[test]
fn a_cxx17_host_on_hostloop_hpp_runs_jobs_swallows_callback_exceptions_and_frees_everything() {
    let (_dir, exe) = build_hpp_host("cpp-hpp-host", &[]);
    assert_hpp_host(&run_program(&exe, &[], &[]));
}

#[test]
fn the_hostloop_hpp_host_is_clean_under_address_and_undefined_behaviour_sanitizers() {
    let (_dir, exe) = build_hpp_host("cpp-hpp-host-asan", SANITIZER_FLAGS);
    assert_hpp_host(&run_sanitized(&exe, &[]));
}

/// hostloop.hpp: an `Error` with `HL_STATUS_CANCELLED` escaping `run` (what `JobContext::check()`
/// throws) "ends the job quietly as cancelled"; its trampoline returns `HL_STATUS_CANCELLED` as
/// the code, which the bridge turns into FAILED (see bad_input's
/// a_job_cancelled_while_running_is_cancelled_whatever_run_returned).
/// hostloop.hpp: `emit` and `spawn` past `Options::main_backlog_limit` throw `Error` with
/// HL_STATUS_BACKLOG while the host does not pump, and `Runtime::backlog()` reports it.
#[test]
fn hpp_emits_and_spawns_past_the_backlog_limit_throw_backlog() {
    let (_dir, exe) = build_hpp_host("cpp-hpp-backlog", &[]);
    let run = run_program(&exe, &["backlog"], &[]);
    run.assert_success("host_hpp.cpp backlog");
    assert_eq!(
        run.value("refused_with"),
        Some("HL_STATUS_BACKLOG"),
        "{}",
        run.describe()
    );
    assert_eq!(run.number("refused"), 7, "{}", run.describe());
}

#[test]
fn a_hpp_job_stopped_by_check_ends_cancelled() {
    let (_dir, exe) = build_hpp_host("cpp-hpp-cancel", &[]);
    let run = run_program(&exe, &["cancel"], &[]);
    run.assert_success("host_hpp.cpp cancel");
    assert_eq!(
        run.value("done_status"),
        Some("HL_STATUS_CANCELLED"),
        "{}",
        run.describe()
    );
}

#[test]
fn two_translation_units_including_hostloop_hpp_twice_link_into_one_program() {
    let dir = test_dir!("cpp-two-tus");
    let exe = Build::new(Lang::Cxx)
        .source(cpp_dir().join("tu_a.cpp"))
        .source(cpp_dir().join("tu_b.cpp"))
        .compile(dir.join("two_tus"));
    let run = run_program(&exe, &[], &[]);
    run.assert_success("tu_a.cpp + tu_b.cpp");
    assert_eq!(run.value("two_tus"), Some("OK"), "{}", run.describe());
}

/// `tests/cpp/plugin_hpp.cpp` and the C fixture plugin, built into a fresh directory.
struct PluginHost {
    dir: TestDir,
    exe: PathBuf,
    cplugin: PathBuf,
}

impl PluginHost {
    fn build(name: &str, extra_flags: &[&str]) -> PluginHost {
        let dir = test_dir!(name);
        let exe = Build::new(Lang::Cxx)
            .flags(extra_flags)
            .source(cpp_dir().join("plugin_hpp.cpp"))
            .compile(dir.join("plugin_hpp"));
        let cplugin = c_plugin(&dir, "cplugin", &[]);
        PluginHost { dir, exe, cplugin }
    }

    /// A path with no file behind it.
    fn missing(&self) -> PathBuf {
        self.dir.join("missing.so")
    }

    /// The program's arguments: the C plugin, counter v1 and v2, a missing file.
    fn args(&self) -> Vec<String> {
        [
            self.cplugin.clone(),
            fixture("fixture_counter_v1"),
            fixture("fixture_counter_v2"),
            self.missing(),
        ]
        .iter()
        .map(|p| p.display().to_string())
        .collect()
    }
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// What `plugin_hpp.cpp` must print (see its comments).
fn assert_plugin_hpp_host(run: &Run) {
    run.assert_success("plugin_hpp.cpp");
    assert!(run.has_line("plugin hpp: OK"), "{}", run.describe());
    let c_total = (50 * 500_500u64).to_string();
    assert_values(
        run,
        &[
            // A missing file: `Error` with FILE_NOT_FOUND and the library's message (the path).
            ("missing_load", "HL_STATUS_FILE_NOT_FOUND"),
            ("missing_names_path", "1"),
            // The C plugin (constructor): its info copied, 50 items summed on the host's pool.
            ("c_name", "cplugin"),
            ("c_version", "1.0.0"),
            ("c_generation", "0"),
            ("c_retain", "0"),
            ("c_path_ok", "1"),
            ("c_answers", "50"),
            ("c_total", &c_total),
            // The Rust counter (static factory) beside it: +1 per tick.
            ("counter_name", "counter"),
            ("counter_version", "1.0.0"),
            ("counter_retain", "1"),
            ("v1_ticks", "1/1/1,1/2/2,1/3/3"),
            ("second_counter", "HL_STATUS_ALREADY_LOADED"),
            // A failed reload throws and v1 runs on.
            ("missing_reload", "HL_STATUS_FILE_NOT_FOUND"),
            ("failed_reload_generation", "0"),
            ("after_failed_reload", "1/4/4"),
            // v1 -> v2: the steps continue from v1's state, +2 each.
            ("reload_version", "2.0.0"),
            ("reload_generation", "1"),
            ("reload_path_ok", "1"),
            ("v2_ticks", "2/5/6,2/6/8"),
            // Moved-from objects own nothing, throw NULL_ARG, unload nothing; the target works.
            ("moved_from_errors", "6"),
            ("moved_from_owns", "0"),
            ("moved_tick", "2/7/10"),
            ("unloads_before", "0"),
            // An explicit unload: a Rust image is retired, the object owns nothing after.
            ("unload_retired", "1"),
            ("unload_stragglers", "0"),
            ("unload_timed_out", "0"),
            ("unloaded_owns", "0"),
            ("unload_again", "HL_STATUS_NULL_ARG"),
            ("counter_block_loaded", "1"),
            ("counter_block_unloads", "1"),
            // The C plugin's destructor unloaded it (and its image was unmapped).
            ("after_destructor_loaded", "0"),
            ("after_destructor_unloads", "2"),
            ("stats_loads", "3"),
            ("stats_reloads", "1"),
            ("stats_failed_reloads", "1"),
            ("stats_retired", "2"),
            ("stats_closed", "1"),
            ("stats_stragglers", "0"),
            // Its name is free again: a fresh instance.
            ("again_total", "500500"),
            // Shutdown unloads the plugins still loaded; their handles are dead, detected.
            ("shutdown_timed_out", "0"),
            ("loaded_after_shutdown", "0"),
            ("unloads_after_shutdown", "4"),
            ("dead_info", "HL_STATUS_INVALID_HANDLE"),
            ("dead_unload", "HL_STATUS_INVALID_HANDLE"),
            ("dead_owns", "0"),
            ("load_after_shutdown", "HL_STATUS_SHUT_DOWN"),
        ],
    );
}

#[test]
fn a_hpp_host_loads_hot_reloads_and_unloads_c_and_rust_plugins_with_hostloop_plugin() {
    let host = PluginHost::build("cpp-hpp-plugins", &[]);
    let args = host.args();
    assert_plugin_hpp_host(&run_program(&host.exe, &strs(&args), &[]));
}

#[test]
fn the_hpp_plugin_host_is_clean_under_address_and_undefined_behaviour_sanitizers() {
    let host = PluginHost::build("cpp-hpp-plugins-asan", SANITIZER_FLAGS);
    let args = host.args();
    assert_plugin_hpp_host(&run_sanitized(&host.exe, &strs(&args)));
}

/// `tests/cpp/isolation_hpp.cpp`: the wrapper's isolation switch, natively and under the
/// sanitizers.
#[test]
fn the_cpp_wrapper_loads_a_plugin_into_a_worker_process() {
    let args = [hostloop_tests::worker_program(), fixture("fixture_crashy")]
        .map(|p| p.display().to_string());
    let args = strs(&args);
    for (name, flags) in [
        ("isolation-hpp-native", &[][..]),
        ("isolation-hpp-asan", SANITIZER_FLAGS),
    ] {
        let dir = test_dir!(name);
        let exe = Build::new(Lang::Cxx)
            .flags(flags)
            .source(cpp_dir().join("isolation_hpp.cpp"))
            .compile(dir.join("isolation_hpp"));
        let run = if flags.is_empty() {
            run_program(&exe, &args, &[])
        } else {
            run_sanitized(&exe, &args)
        };
        run.assert_success("isolation_hpp.cpp");
        assert!(run.has_line("isolation hpp: OK"), "{}", run.describe());
        assert_values(
            &run,
            &[
                ("isolation", "1"),
                ("in_worker", "1"),
                ("crashes", "0"),
                ("name", "crashy"),
                ("unload_timed_out", "0"),
                ("missing_worker", "HL_STATUS_WORKER"),
                ("missing_worker_named", "1"),
            ],
        );
    }
}

/// hostloop.hpp: `SpawnOptions{}.with_name(..).with_progress(..)` sets a name alone, and the
/// progress callable runs on the main thread, coalesced, before `done` (natively and under
/// the sanitizers).
#[test]
fn hpp_jobs_report_progress_on_the_main_thread_and_options_take_a_name_alone() {
    let (_dir, exe) = build_hpp_host("cpp-hpp-progress", &[]);
    for run in [
        run_program(&exe, &["progress"], &[]),
        run_sanitized(
            &build_hpp_host("cpp-hpp-progress-asan", SANITIZER_FLAGS).1,
            &["progress"],
        ),
    ] {
        run.assert_success("host_hpp.cpp progress");
        let calls = run.number("calls");
        assert!(
            calls >= 1 && calls <= run.number("pumps"),
            "{}",
            run.describe()
        );
        assert_eq!(run.value("last"), Some("1.000"), "{}", run.describe());
    }
}
