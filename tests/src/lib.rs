//! Helpers shared by the cross-language tests in `tests/tests/`: find `libhostloop`, compile C
//! and C++ programs against `include/` with the system compilers, run them with a hang bound, and
//! read the `key=value` lines they print.
//!
//! The programs live in `tests/c/` and `tests/cpp/`; each test compiles into its own directory
//! under `CARGO_TARGET_TMPDIR` (see [`test_dir!`]).

pub mod headers;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

/// Warnings are errors for every program the tests compile, as for the headers' users.
pub const C_FLAGS: &[&str] = &["-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];
/// As [`C_FLAGS`], for C++17.
pub const CXX_FLAGS: &[&str] = &["-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];
/// Flags for the AddressSanitizer + UndefinedBehaviorSanitizer builds.
pub const SANITIZER_FLAGS: &[&str] = &[
    "-g",
    "-O1",
    "-fsanitize=address,undefined",
    "-fno-omit-frame-pointer",
    "-fno-sanitize-recover=undefined",
];

/// How long any program may run before the test calls it hung. Generous: it only fires on
/// failure, never to pace a test.
pub const HANG_LIMIT: Duration = Duration::from_secs(180);

/// The repository root (the workspace).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `include/`, where the headers are.
pub fn include_dir() -> PathBuf {
    repo_root().join("include")
}

/// `tests/c/`.
pub fn c_dir() -> PathBuf {
    repo_root().join("tests").join("c")
}

/// `tests/cpp/`.
pub fn cpp_dir() -> PathBuf {
    repo_root().join("tests").join("cpp")
}

/// Every public C header: the umbrella `include/hostloop.h`, the plugin ABI
/// `include/hostloop_plugin.h` and `include/hostloop/*.h`, sorted.
pub fn c_headers() -> Vec<PathBuf> {
    let mut headers = vec![
        include_dir().join("hostloop.h"),
        include_dir().join("hostloop_plugin.h"),
    ];
    let mut inner: Vec<PathBuf> = std::fs::read_dir(include_dir().join("hostloop"))
        .expect("include/hostloop/ exists")
        .map(|e| e.expect("readable include/hostloop/").path())
        .filter(|p| p.extension() == Some(OsStr::new("h")))
        .collect();
    inner.sort();
    headers.extend(inner);
    headers
}

/// The cargo profile directory the running test binary was built into: `target/<profile>/`,
/// from `target/<profile>/deps/<test binary>`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps/")
        .to_path_buf()
}

/// The cargo profile that matches [`profile_dir`], for `cargo build --profile`.
pub fn profile() -> String {
    match profile_dir().file_name().and_then(OsStr::to_str) {
        Some("debug") | None => "dev".to_owned(),
        Some(other) => other.to_owned(),
    }
}

/// The directory holding a fresh `libhostloop.so` and `libhostloop.a`: `target/<profile>/`.
///
/// `cargo test -p hostloop-tests` builds the bridge (a dependency of this crate), but as a
/// dependency its libraries land in `target/<profile>/deps/` only; the copies in
/// `target/<profile>/` are refreshed only when the bridge itself is built. So the first call runs
/// `cargo build -p hostloop-bridge` with the same profile and target directory — a no-op taking
/// a fraction of a second when nothing changed — and never links a stale library. (Cargo
/// releases its build lock before it runs tests, so this does not deadlock; it may wait while
/// another cargo process builds.)
pub fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = profile_dir();
        let target_dir = dir.parent().expect("target/<profile> has a parent");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root())
            .args(["build", "-p", "hostloop-bridge", "--profile"])
            .arg(profile())
            .env("CARGO_TARGET_DIR", target_dir);
        let run = run(&mut cmd, HANG_LIMIT);
        run.assert_success("cargo build -p hostloop-bridge");
        assert!(
            dir.join("libhostloop.so").is_file() && dir.join("libhostloop.a").is_file(),
            "cargo build -p hostloop-bridge did not produce {}/libhostloop.{{so,a}}",
            dir.display()
        );
        dir
    })
}

/// The fixture plugins of `tests/fixtures/` (Rust cdylibs), built on first use like
/// [`lib_dir`]: the directory holding `libfixture_counter_v1.so`, `_v2`, `_v3`,
/// `libfixture_panicky.so`, `libfixture_crashy.so` and the `hostloop-worker` program.
pub fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = profile_dir();
        let target_dir = dir.parent().expect("target/<profile> has a parent");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo_root()).arg("build");
        for p in FIXTURE_PACKAGES {
            cmd.args(["-p", p]);
        }
        cmd.arg("--profile")
            .arg(profile())
            .env("CARGO_TARGET_DIR", target_dir);
        run(&mut cmd, HANG_LIMIT).assert_success("cargo build (fixture plugins)");
        dir
    })
}

const FIXTURE_PACKAGES: &[&str] = &[
    "hostloop-fixture-counter-v1",
    "hostloop-fixture-counter-v2",
    "hostloop-fixture-counter-v3",
    "hostloop-fixture-panicky",
    "hostloop-fixture-crashy",
    "hostloop-fixture-reader-a",
    "hostloop-fixture-reader-b",
    "hostloop-fixture-reader-c",
    "hostloop-worker",
    "hostloop-particles",
    "hostloop-crowd",
];

/// The path of a Rust fixture plugin by its library name (`fixture_counter_v1`).
pub fn fixture(name: &str) -> PathBuf {
    let path = fixture_dir().join(format!("lib{name}.so"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// The `hostloop-worker` program isolated plugins run in, built on first use like [`fixture`].
pub fn worker_program() -> PathBuf {
    let path = fixture_dir().join("hostloop-worker");
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Compiles `tests/fixtures/c/plugin.c` into `dir/<name>.so` with extra `-D` flags: a plugin
/// written in C against `hostloop_plugin.h` alone (it does not link libhostloop).
pub fn c_plugin(dir: &TestDir, name: &str, defines: &[&str]) -> PathBuf {
    let src = repo_root().join("tests/fixtures/c/plugin.c");
    let mut flags = vec![
        format!("-I{}", include_dir().display()),
        "-shared".to_owned(),
        "-fPIC".to_owned(),
    ];
    flags.extend(defines.iter().map(|d| d.to_string()));
    Build::bare(Lang::C)
        .flags(&flags)
        .source(src)
        .compile(dir.join(format!("{name}.so")))
}

/// Linker flags for a program using the shared library, found at run time through its rpath.
pub fn link_flags() -> Vec<String> {
    let dir = lib_dir().display().to_string();
    vec![
        format!("-L{dir}"),
        "-lhostloop".to_owned(),
        format!("-Wl,-rpath,{dir}"),
        "-lpthread".to_owned(),
        "-ldl".to_owned(),
        "-lm".to_owned(),
    ]
}

/// A fresh, empty directory for one test's build products.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// `<tmp_root>/hostloop-tests/<name>`, emptied. Use [`test_dir!`] rather than calling this.
    pub fn new(tmp_root: &str, name: &str) -> TestDir {
        let path = Path::new(tmp_root).join("hostloop-tests").join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .unwrap_or_else(|e| panic!("cannot empty {}: {e}", path.display()));
        }
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TestDir { path }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

/// A [`TestDir`] under the integration test's `CARGO_TARGET_TMPDIR` (which cargo sets only when
/// compiling integration tests, hence a macro expanded in the test).
#[macro_export]
macro_rules! test_dir {
    ($name:expr) => {
        $crate::TestDir::new(env!("CARGO_TARGET_TMPDIR"), $name)
    };
}

/// The two languages the headers support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    C,
    Cxx,
}

impl Lang {
    /// The system compiler driver for the language.
    pub fn compiler(self) -> &'static str {
        match self {
            Lang::C => "cc",
            Lang::Cxx => "c++",
        }
    }

    /// The strict flags every test program is built with.
    pub fn strict_flags(self) -> &'static [&'static str] {
        match self {
            Lang::C => C_FLAGS,
            Lang::Cxx => CXX_FLAGS,
        }
    }
}

/// One compiler invocation: sources → an executable (or, with [`Build::object_only`], a
/// syntax-and-codegen check without linking).
#[derive(Debug)]
pub struct Build {
    lang: Lang,
    sources: Vec<PathBuf>,
    flags: Vec<String>,
    libs: Vec<String>,
    link_hostloop: bool,
    object_only: bool,
}

impl Build {
    /// A build with the strict flags of `lang`, `-I include/`, linked with [`link_flags`].
    pub fn new(lang: Lang) -> Build {
        Build::bare(lang)
            .flags(&[format!("-I{}", include_dir().display())])
            .with_hostloop()
    }

    /// A build with only the strict flags of `lang`: no include path, no library. The caller
    /// says where hostloop is (as a user of an installed copy would).
    pub fn bare(lang: Lang) -> Build {
        Build {
            lang,
            sources: Vec::new(),
            flags: lang.strict_flags().iter().map(|s| s.to_string()).collect(),
            libs: Vec::new(),
            link_hostloop: false,
            object_only: false,
        }
    }

    fn with_hostloop(mut self) -> Build {
        self.link_hostloop = true;
        self
    }

    pub fn source(mut self, path: impl Into<PathBuf>) -> Build {
        self.sources.push(path.into());
        self
    }

    /// Compiler flags, placed before the sources.
    pub fn flags<S: AsRef<str>>(mut self, flags: &[S]) -> Build {
        self.flags
            .extend(flags.iter().map(|s| s.as_ref().to_owned()));
        self
    }

    /// Linker inputs (`-L`, `-l`, archives), placed after the sources as linkers need.
    pub fn libs<S: AsRef<str>>(mut self, libs: &[S]) -> Build {
        self.libs.extend(libs.iter().map(|s| s.as_ref().to_owned()));
        self
    }

    /// Compile only (`-c`), no linking: for header checks.
    pub fn object_only(mut self) -> Build {
        self.object_only = true;
        self.link_hostloop = false;
        self
    }

    /// Runs the compiler; panics with its full output if it fails. Returns the output's path.
    pub fn compile(self, out: impl Into<PathBuf>) -> PathBuf {
        let out = out.into();
        let mut cmd = Command::new(self.lang.compiler());
        cmd.args(&self.flags);
        if self.object_only {
            cmd.arg("-c");
        }
        cmd.args(&self.sources).arg("-o").arg(&out);
        if self.link_hostloop {
            cmd.args(link_flags());
        }
        cmd.args(&self.libs);
        run(&mut cmd, HANG_LIMIT).assert_success("the compiler");
        out
    }
}

/// What a program did.
#[derive(Debug)]
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics, showing everything the program printed, unless it exited with status 0.
    #[track_caller]
    pub fn assert_success(&self, what: &str) -> &Run {
        assert!(
            self.status.success(),
            "{what} failed ({}):\n{}",
            self.status,
            self.describe()
        );
        self
    }

    /// The command, its status and its output, for assertion messages.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "$ {}\nexit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        );
        s
    }

    /// The value of the first `key=value` token on any stdout line.
    pub fn value(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}=");
        self.stdout
            .split_whitespace()
            .find_map(|token| token.strip_prefix(prefix.as_str()))
    }

    /// [`Run::value`] as a number; panics with the output if it is missing or not a number.
    #[track_caller]
    pub fn number(&self, key: &str) -> u64 {
        let value = self
            .value(key)
            .unwrap_or_else(|| panic!("no `{key}=` in the output:\n{}", self.describe()));
        value
            .parse()
            .unwrap_or_else(|_| panic!("`{key}={value}` is not a number:\n{}", self.describe()))
    }

    /// Whether stdout has exactly this line.
    pub fn has_line(&self, line: &str) -> bool {
        self.stdout.lines().any(|l| l == line)
    }
}

/// Runs `cmd` to completion, capturing its output. If it has not exited after `limit`, it is
/// killed and the test fails: a bound that only fires on a hang.
pub fn run(cmd: &mut Command, limit: Duration) -> Run {
    let command = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(output)) => Run {
            command,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("waiting for {command} failed: {e}"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{command} did not finish within {limit:?}: killed as hung");
        }
    }
}

/// Runs a program built by the tests, with extra environment variables.
///
/// `LD_LIBRARY_PATH` is removed first (unless `env` sets it): cargo sets it for tests to its own
/// target directories, and it would take precedence over the programs' runpath, so a program
/// could load another copy of libhostloop than the one it was linked against.
pub fn run_program(path: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(path);
    cmd.args(args).env_remove("LD_LIBRARY_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd, HANG_LIMIT)
}

/// Runs a program built with [`SANITIZER_FLAGS`] (leak detection on, UBSan halting on its
/// first report) and fails on any AddressSanitizer, LeakSanitizer or UndefinedBehaviorSanitizer
/// report; the caller checks what the program itself says.
#[track_caller]
pub fn run_sanitized(path: &Path, args: &[&str]) -> Run {
    let run = run_program(
        path,
        args,
        &[
            ("ASAN_OPTIONS", "detect_leaks=1"),
            ("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
        ],
    );
    assert!(
        !run.stderr.contains("Sanitizer") && !run.stderr.contains("runtime error:"),
        "sanitizer report:\n{}",
        run.describe()
    );
    run
}

/// The arguments every valgrind run of the tests starts with. Valgrind runs one thread at a
/// time and its default lock is unfair: a busy worker can starve the host thread for minutes,
/// so fair scheduling hands the lock round.
pub const VALGRIND_ARGS: &[&str] = &[
    "--fair-sched=yes",
    "--error-exitcode=99",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite,indirect",
];

/// Runs a program (built with `-g`) under valgrind and fails on any error or definite or
/// indirect leak; `None`, with a `SKIPPED` line, when valgrind is not installed
/// (`scripts/test-deps` installs it).
#[track_caller]
pub fn run_valgrind(path: &Path, args: &[&str]) -> Option<Run> {
    if !tool_available("valgrind") {
        println!("SKIPPED: valgrind is not installed (scripts/test-deps installs it)");
        eprintln!("SKIPPED: valgrind is not installed (scripts/test-deps installs it)");
        return None;
    }
    let mut cmd = Command::new("valgrind");
    cmd.env_remove("LD_LIBRARY_PATH")
        .args(VALGRIND_ARGS)
        .arg(path)
        .args(args);
    let run = run(&mut cmd, HANG_LIMIT);
    assert!(
        run.stderr.contains("ERROR SUMMARY: 0 errors"),
        "valgrind found errors:\n{}",
        run.describe()
    );
    assert!(
        run.stderr.contains("definitely lost: 0 bytes")
            || run.stderr.contains("no leaks are possible"),
        "valgrind found leaks:\n{}",
        run.describe()
    );
    Some(run)
}

/// Whether `tool` can be started (`tool --version` runs).
pub fn tool_available(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `SLURM_CONF` of the one-node cluster `scripts/farm-up` started in `target/farm` (once per
/// test binary, with this process as its owner: the cluster stops by itself about a second
/// after the last owner exits), or `None`, with a `SKIPPED` line,
/// when Slurm cannot be installed here. The Slurm commands this process and its children run
/// read it from the environment, which this sets.
pub fn slurm_farm() -> Option<&'static Path> {
    static CONF: OnceLock<Option<PathBuf>> = OnceLock::new();
    CONF.get_or_init(|| {
        let dir = repo_root().join("target/farm");
        let r = run(
            Command::new(repo_root().join("scripts/farm-up"))
                .arg("--owner")
                .arg(std::process::id().to_string())
                .arg(&dir),
            HANG_LIMIT,
        );
        if r.status.code() == Some(3) {
            println!("SKIPPED: Slurm cannot be installed here:\n{}", r.stderr);
            return None;
        }
        r.assert_success("scripts/farm-up");
        let conf = dir.join("slurm.conf");
        std::env::set_var("SLURM_CONF", &conf);
        Some(conf)
    })
    .as_deref()
}
