//! `tests/c/random_calls.c`: random sequences of `hl_*` calls with random arguments from the
//! main thread and two others, against the release library, under ASan/UBSan and valgrind.
//! Every call must return a status its header documents (the one status its arguments leave,
//! where they leave one); a crash, a sanitizer report, a leak, a hang or an undocumented status
//! fails the test with the shortest op list that reproduces it.
//!
//! The seed is drawn afresh for each run and printed; `RANDOM_CALLS_SEED=0x...` replays a run.
//! `scripts/random-calls` runs the same program for as long as asked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hostloop_tests::{c_dir, c_headers, c_plugin, include_dir, profile_dir, repo_root, run};
use hostloop_tests::{test_dir, tool_available, Build, Lang, Run, TestDir, SANITIZER_FLAGS};

/// Sequences of the bounded runs: about 10 s under the sanitizers and 10 s under valgrind on a
/// quiet 2-core machine.
const SANITIZER_SEQUENCES: u32 = 500;
const VALGRIND_SEQUENCES: u32 = 60;
const LENGTH: u32 = 40;
/// A run may take this long before it is called hung (the program's own watchdog fires after
/// `--hang-seconds` without a finished call).
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// The release `libhostloop.so` the harness drives: `target/release/`, built by this call (a
/// no-op when it is fresh).
fn release_lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target_dir = profile_dir()
            .parent()
            .expect("target/<profile> has a parent")
            .to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root())
            .args(["build", "--release", "-p", "hostloop-bridge"])
            .env("CARGO_TARGET_DIR", &target_dir);
        run(&mut cmd, RUN_LIMIT).assert_success("cargo build --release -p hostloop-bridge");
        let dir = target_dir.join("release");
        assert!(dir.join("libhostloop.so").is_file(), "no {}", dir.display());
        dir
    })
}

/// The harness and what it loads, built into `dir`.
struct Harness {
    exe: PathBuf,
    args: Vec<String>,
}

fn build(dir: &TestDir, flags: &[&str]) -> Harness {
    let lib = release_lib_dir().display().to_string();
    let exe = Build::bare(Lang::C)
        .flags(&[format!("-I{}", include_dir().display())])
        .flags(flags)
        .source(c_dir().join("random_calls.c"))
        .libs(&[
            format!("-L{lib}"),
            "-lhostloop".to_owned(),
            format!("-Wl,-rpath,{lib}"),
            "-lpthread".to_owned(),
            "-ldl".to_owned(),
            "-lm".to_owned(),
        ])
        .compile(dir.join("random_calls"));
    let plugin = c_plugin(dir, "cplugin", &[]);
    let other = c_plugin(dir, "other", &["-DFIXTURE_NAME=\"other\""]);
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    Harness {
        exe,
        args: vec![
            "--plugin".into(),
            path(&plugin),
            "--plugin-other".into(),
            path(&other),
            "--not-a-library".into(),
            path(&c_dir().join("random_calls.c")),
        ],
    }
}

fn sanitized() -> &'static Harness {
    static H: OnceLock<(TestDir, Harness)> = OnceLock::new();
    let (_, h) = H.get_or_init(|| {
        let dir = test_dir!("random-calls-asan");
        let h = build(&dir, SANITIZER_FLAGS);
        (dir, h)
    });
    h
}

const SANITIZER_ENV: &[(&str, &str)] = &[
    ("ASAN_OPTIONS", "detect_leaks=1"),
    ("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
];

fn seed() -> String {
    std::env::var("RANDOM_CALLS_SEED").unwrap_or_else(|_| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_nanos();
        format!(
            "{:#x}",
            (nanos as u64) ^ (u64::from(std::process::id()) << 32)
        )
    })
}

/// Runs the harness (under `prefix`, e.g. valgrind) with `extra` arguments.
fn run_harness(h: &Harness, prefix: &[&str], extra: &[&str]) -> Run {
    let mut cmd = match prefix.split_first() {
        Some((tool, rest)) => {
            let mut c = Command::new(tool);
            c.args(rest).arg(&h.exe);
            c
        }
        None => Command::new(&h.exe),
    };
    cmd.args(&h.args).args(extra).env_remove("LD_LIBRARY_PATH");
    for (k, v) in SANITIZER_ENV {
        cmd.env(k, v);
    }
    run(&mut cmd, RUN_LIMIT)
}

/// The figures line's `status_<NAME>=<n>` counts.
fn statuses(run: &Run) -> BTreeMap<String, u64> {
    run.stdout
        .split_whitespace()
        .filter_map(|t| t.strip_prefix("status_"))
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("a count")))
        .collect()
}

/// When a run failed: its output, and the shortest reproducer. The program shrinks a failure it
/// caught itself; after a crash or a sanitizer report it could not, so its `replay:` line is
/// shrunk here, in child processes of a fresh run.
fn explain_failure(h: &Harness, run: &Run) -> String {
    let mut text = run.describe();
    if !run.stdout.contains("SHORTEST") {
        let replay = run
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("replay: random_calls "))
            .find(|l| l.contains("--sequences 1 "));
        if let Some(replay) = replay {
            let args: Vec<&str> = replay.split_whitespace().chain(["--shrink"]).collect();
            let shrunk = run_harness(h, &[], &args);
            text.push_str("\n--- shrinking the failing sequence ---\n");
            text.push_str(&shrunk.stdout);
        }
    }
    text
}

#[test]
fn random_call_sequences_get_documented_statuses_under_address_and_ub_sanitizers() {
    let h = sanitized();
    let seed = seed();
    let sequences = SANITIZER_SEQUENCES.to_string();
    let length = LENGTH.to_string();
    let run = run_harness(
        h,
        &[],
        &[
            "--seed",
            &seed,
            "--sequences",
            &sequences,
            "--length",
            &length,
        ],
    );
    println!("{}", run.stdout);
    assert!(
        run.status.success() && run.has_line("random_calls: OK"),
        "random calls failed (seed {seed}; RANDOM_CALLS_SEED={seed} replays the run):\n{}",
        explain_failure(h, &run)
    );
    assert!(
        !run.stderr.contains("ERROR: AddressSanitizer")
            && !run.stderr.contains("ERROR: LeakSanitizer")
            && !run.stderr.contains("runtime error:"),
        "sanitizer report (seed {seed}):\n{}",
        run.describe()
    );
    let d = run.describe();
    assert_eq!(
        run.number("sequences"),
        u64::from(SANITIZER_SEQUENCES),
        "{d}"
    );
    assert!(run.number("calls") >= run.number("ops"), "{d}");
    assert!(run.number("calls_in_callbacks") > 0, "{d}");
    assert!(run.number("calls_off_main") > 0, "{d}");
    // The misuse the harness draws reached the checks it is meant for.
    let seen = statuses(&run);
    for status in [
        "OK",
        "NULL_ARG",
        "INVALID_ARG",
        "WRONG_THREAD",
        "REENTRANT",
        "SHUT_DOWN",
        "INVALID_HANDLE",
        "INVALID_UTF8",
        "OUT_OF_MEMORY",
    ] {
        assert!(
            seen.get(status).is_some_and(|&n| n > 0),
            "no call returned {status}\n{d}"
        );
    }
}

#[test]
fn random_call_sequences_are_clean_under_valgrind() {
    if !tool_available("valgrind") {
        println!("SKIPPED: valgrind is not installed (scripts/test-deps installs it)");
        eprintln!("SKIPPED: valgrind is not installed (scripts/test-deps installs it)");
        return;
    }
    let dir = test_dir!("random-calls-valgrind");
    let h = build(&dir, &["-g", "-O1"]);
    let seed = seed();
    let sequences = VALGRIND_SEQUENCES.to_string();
    let length = LENGTH.to_string();
    let run = run_harness(
        &h,
        &[
            "valgrind",
            "--fair-sched=yes",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
        ],
        &[
            "--seed",
            &seed,
            "--sequences",
            &sequences,
            "--length",
            &length,
            "--hang-seconds",
            "120",
        ],
    );
    println!("{}", run.stdout);
    assert!(
        run.stderr.contains("ERROR SUMMARY: 0 errors"),
        "valgrind found errors (seed {seed}):\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("definitely lost: 0 bytes")
            || run.stderr.contains("no leaks are possible"),
        "valgrind found leaks (seed {seed}):\n{}",
        run.describe()
    );
    assert!(
        run.status.success() && run.has_line("random_calls: OK"),
        "random calls failed under valgrind (seed {seed}):\n{}",
        explain_failure(&h, &run)
    );
    assert_eq!(
        run.number("sequences"),
        u64::from(VALGRIND_SEQUENCES),
        "{}",
        run.describe()
    );
}

/// The harness catches a status no header documents and shrinks the sequence to the one call
/// that returns it: here it is told to take HOST_BUSY as what every `hl_job_cancel` returned.
#[test]
fn an_undocumented_status_fails_the_run_and_is_shrunk_to_the_call_that_returned_it() {
    let h = sanitized();
    let run = run_harness(
        h,
        &[],
        &[
            "--inject-status",
            "cancel=5",
            "--seed",
            "7",
            "--sequences",
            "50",
        ],
    );
    let d = run.describe();
    assert_eq!(run.status.code(), Some(4), "{d}");
    assert!(
        run.stdout.contains(
            "hl_job_cancel returned HL_STATUS_HOST_BUSY, which its header does not document"
        ),
        "{d}"
    );
    assert!(
        run.stdout.contains("replay: random_calls --seed 0x")
            && run.stdout.contains("--sequences 1"),
        "{d}"
    );
    let shortest = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("SHORTEST "))
        .unwrap_or_else(|| panic!("no SHORTEST line:\n{d}"));
    let ops: usize = shortest
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no op count:\n{d}"));
    assert_eq!(ops, 1, "a cancel fails alone, whatever its handle\n{d}");
    assert!(shortest.contains(":cancel@"), "{d}");

    // The shortest list replays the failure.
    let replay = shortest
        .split_once("--replay '")
        .and_then(|(_, r)| r.strip_suffix('\''))
        .unwrap_or_else(|| panic!("no --replay list:\n{d}"));
    let again = run_harness(
        h,
        &[],
        &["--inject-status", "cancel=5", "--replay", replay, "--quiet"],
    );
    assert_eq!(again.status.code(), Some(4), "{}", again.describe());
}

/// A seed replays its sequence: the same ops, so the same calls and statuses — except where
/// threads race, which single-threaded sequences of one solo op each never do.
#[test]
fn a_printed_replay_list_runs_the_same_calls_again() {
    let h = sanitized();
    // Made on the main thread, shut down on it, then used from thread 1 and the main thread:
    // blobs, emits and pumps after shutdown are SHUT_DOWN (hl_blob_create's header did not
    // say so: the first defect this harness found).
    let ops = "0:new@0s:0:1:0:0:0:0 1:shutdown@0s:0:0:3:10:1:0 2:blob@1s:0:0:3:4:0:0 \
               3:emit@0s:0:0:3:3:0:0 4:pump@0s:0:0:3:0:1:0 5:stats@1s:0:0:3:0:0:0 \
               6:free@0s:0:0:3:0:0:0 7:pump@0s:0:0:3:0:1:0";
    for _ in 0..2 {
        let run = run_harness(h, &[], &["--replay", ops]);
        let d = run.describe();
        assert!(run.has_line("random_calls: OK"), "{d}");
        let seen = statuses(&run);
        let want: BTreeMap<String, u64> = [("OK", 4), ("SHUT_DOWN", 3), ("INVALID_HANDLE", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(seen, want, "{d}");
    }
}

/// The second defect this harness found (its shortest reproducer, made deterministic): a
/// subscriber that shuts its runtime down from inside a pump, while a second event waits. The
/// event dispatcher, a chunked item holding the runtime, asked to continue after shutdown had
/// dropped the queue; the pump kept it, and the runtime — its doorbell fds, its memory — was
/// never freed. The harness counts fds before and after each sequence.
#[test]
fn a_subscriber_that_shuts_its_runtime_down_mid_pump_leaks_nothing() {
    let h = sanitized();
    let ops = "0:new@0s:0:1:0:0:0:0 1:subscribe@0s:0:1:3:0:0:0{shutdown:0:3:0:1:0} \
               2:post_event@0s:0:0:3:7:0:0 3:post_event@0s:0:0:3:7:0:0 4:pump@0s:0:0:3:1:1:0";
    let run = run_harness(
        h,
        &[],
        &["--replay", ops, "--quiet", "--hang-seconds", "20"],
    );
    let d = run.describe();
    assert!(
        run.status.success() && run.has_line("random_calls: OK"),
        "{d}"
    );
    assert_eq!(
        run.number("calls_in_callbacks"),
        1,
        "the subscriber shut down\n{d}"
    );
}

/// The harness's table of documented statuses is the headers': for each function, the status
/// names in its `\return` text.
#[test]
fn the_harness_expects_exactly_the_statuses_the_headers_document() {
    let h = sanitized();
    let mut cmd = Command::new(&h.exe);
    cmd.arg("--print-documented").env_remove("LD_LIBRARY_PATH");
    let table = run(&mut cmd, RUN_LIMIT);
    table.assert_success("random_calls --print-documented");
    let headers: String = c_headers()
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("a readable header"))
        .collect();
    let names = status_names(&headers);
    let mut checked = 0;
    for line in table.stdout.lines() {
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("documented"), "{line}");
        let function = words.next().expect("a function");
        let harness: BTreeSet<String> = words.map(str::to_owned).collect();
        let header = documented(&headers, &names, function);
        assert_eq!(
            harness, header,
            "{function}: random_calls.c expects the left, the header documents the right"
        );
        checked += 1;
    }
    assert!(checked >= 25, "{}", table.describe());
}

/// Every `HL_STATUS_<NAME>` of the status enum, without its prefix.
fn status_names(headers: &str) -> BTreeSet<String> {
    headers
        .lines()
        .filter_map(|l| l.trim().strip_prefix("HL_STATUS_"))
        .filter_map(|l| l.split_once(" = "))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The statuses but OK named in the `\return` text of `function`'s doc comment, with those of
/// the functions it refers to ("as `hl_blob_create`", "any status of `hl_plugin_load`").
fn documented(headers: &str, names: &BTreeSet<String>, function: &str) -> BTreeSet<String> {
    let decl = format!(" {function}(");
    let at = headers
        .find(&decl)
        .unwrap_or_else(|| panic!("{function} is not declared"));
    let comment_start = headers[..at].rfind("/**").expect("a doc comment");
    let comment = &headers[comment_start..at];
    let ret = &comment[comment
        .find("\\return")
        .unwrap_or_else(|| panic!("{function}: no \\return"))..];
    let ret = ret
        .find("[main-thread]")
        .or_else(|| ret.find("[any-thread]"))
        .map_or(ret, |end| &ret[..end]);
    let mut found: BTreeSet<String> = ret
        .split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| names.contains(*w) && *w != "OK")
        .map(str::to_owned)
        .collect();
    for (phrase, other) in [
        ("as `hl_blob_create`", "hl_blob_create"),
        ("any status of `hl_plugin_load`", "hl_plugin_load"),
    ] {
        if ret.contains(phrase) && function != other {
            found.extend(documented(headers, names, other));
        }
    }
    found
}
