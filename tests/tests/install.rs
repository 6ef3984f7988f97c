//! `scripts/install PREFIX`: a host builds against the installed copy with nothing but what
//! `pkg-config` (or CMake's `find_package`) says, and runs with the installed library.
//!
//! The test runs the script for real, including its `cargo build -p hostloop-bridge` (a no-op
//! when the library is fresh; cargo does not hold its lock while tests run), with this test's
//! profile and target directory; a second install exercises `--no-build`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hostloop_tests::{
    c_dir, cpp_dir, include_dir, profile_dir, repo_root, run, run_program, test_dir,
    tool_available, Build, Lang, Run, TestDir, HANG_LIMIT,
};

/// `debug` or `release`, the script's `--profile`, from the directory this test was built in.
fn install_profile() -> &'static str {
    match profile_dir().file_name().and_then(|n| n.to_str()) {
        Some("debug") => "debug",
        Some("release") => "release",
        other => panic!("scripts/install knows debug and release, not {other:?}"),
    }
}

fn install(prefix: &Path, extra: &[&str]) -> Run {
    let mut cmd = Command::new(repo_root().join("scripts").join("install"));
    cmd.arg(prefix)
        .args(["--profile", install_profile()])
        .args(extra)
        .env("CARGO_TARGET_DIR", profile_dir().parent().unwrap());
    let out = run(&mut cmd, HANG_LIMIT);
    out.assert_success("scripts/install");
    out
}

/// One installation shared by the tests of this file.
fn prefix() -> &'static Path {
    static PREFIX: OnceLock<(TestDir, PathBuf)> = OnceLock::new();
    let (_, prefix) = PREFIX.get_or_init(|| {
        let dir = test_dir!("install");
        let prefix = dir.join("prefix");
        install(&prefix, &[]);
        (dir, prefix)
    });
    prefix
}

fn pkg_config(args: &[&str]) -> String {
    let mut cmd = Command::new("pkg-config");
    cmd.args(args)
        .env("PKG_CONFIG_PATH", prefix().join("lib").join("pkgconfig"));
    let out = run(&mut cmd, HANG_LIMIT);
    out.assert_success("pkg-config");
    out.stdout.trim().to_owned()
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn the_install_script_copies_libraries_headers_and_writes_pkg_config_and_cmake_files() {
    let prefix = prefix();
    let mut expected = vec![
        format!("lib/libhostloop.so.{}", env!("CARGO_PKG_VERSION")),
        "lib/libhostloop.so".to_owned(),
        "lib/libhostloop.so.0".to_owned(),
        "lib/libhostloop.a".to_owned(),
        "lib/pkgconfig/hostloop.pc".to_owned(),
        "lib/cmake/hostloop/hostloop-config.cmake".to_owned(),
        "lib/cmake/hostloop/hostloop-config-version.cmake".to_owned(),
    ];
    for header in hostloop_tests::c_headers() {
        let relative = header.strip_prefix(include_dir()).unwrap();
        expected.push(format!("include/{}", relative.display()));
    }
    if include_dir().join("hostloop.hpp").exists() {
        expected.push("include/hostloop.hpp".to_owned());
    }
    for file in &expected {
        assert!(prefix.join(file).is_file(), "{file} is not installed");
    }
    for header in hostloop_tests::c_headers() {
        let relative = header.strip_prefix(include_dir()).unwrap();
        assert_eq!(
            std::fs::read(&header).unwrap(),
            std::fs::read(prefix.join("include").join(relative)).unwrap(),
            "{} is installed unchanged",
            relative.display()
        );
    }

    let pc = std::fs::read_to_string(prefix.join("lib/pkgconfig/hostloop.pc")).unwrap();
    for line in [
        "Name: hostloop",
        &format!("Version: {}", env!("CARGO_PKG_VERSION")),
        "Cflags: -I${includedir}",
        "Libs: -L${libdir} -Wl,-rpath,${libdir} -lhostloop",
        "Libs.private: -lpthread -ldl -lm",
    ] {
        assert!(
            pc.lines().any(|l| l == line),
            "hostloop.pc lacks `{line}`:\n{pc}"
        );
    }
    assert!(pc.lines().any(|l| l.starts_with("Description: ")), "{pc}");
    assert_eq!(
        pkg_config(&["--modversion", "hostloop"]),
        env!("CARGO_PKG_VERSION")
    );

    let cmake =
        std::fs::read_to_string(prefix.join("lib/cmake/hostloop/hostloop-config.cmake")).unwrap();
    assert!(
        cmake.contains("add_library(hostloop::hostloop SHARED IMPORTED)"),
        "{cmake}"
    );

    // The layout distributions use: the file carries the version, its SONAME link names the
    // major version, and the linker's name points at that.
    let lib = prefix.join("lib");
    let link = |name: &str| std::fs::read_link(lib.join(name)).ok();
    assert_eq!(
        link("libhostloop.so"),
        Some(PathBuf::from("libhostloop.so.0"))
    );
    assert_eq!(
        link("libhostloop.so.0"),
        Some(PathBuf::from(format!(
            "libhostloop.so.{}",
            env!("CARGO_PKG_VERSION")
        )))
    );
    let dynamic = run(
        Command::new("readelf")
            .arg("-d")
            .arg(lib.join("libhostloop.so.0")),
        HANG_LIMIT,
    );
    assert!(
        dynamic
            .stdout
            .contains("Library soname: [libhostloop.so.0]"),
        "{}",
        dynamic.describe()
    );

    // --no-build: the same files from the already-built library.
    let dir = test_dir!("install-no-build");
    let again = dir.join("prefix");
    install(&again, &["--no-build"]);
    for file in &expected {
        assert!(
            again.join(file).is_file(),
            "--no-build: {file} is not installed"
        );
    }
    assert_eq!(
        std::fs::read(prefix.join("lib/libhostloop.so")).unwrap(),
        std::fs::read(again.join("lib/libhostloop.so")).unwrap()
    );
}

#[test]
fn the_c_host_builds_with_only_pkg_config_flags_and_runs_with_the_installed_library() {
    let prefix = prefix();
    let dir = test_dir!("install-host");
    let exe = Build::bare(Lang::C)
        .flags(&words(&pkg_config(&["--cflags", "hostloop"])))
        .source(c_dir().join("host.c"))
        .libs(&words(&pkg_config(&["--libs", "hostloop"])))
        .compile(dir.join("host"));
    let lib = prefix.join("lib").display().to_string();
    let out = run_program(&exe, &[], &[("LD_LIBRARY_PATH", &lib)]);
    out.assert_success("host.c built with pkg-config");
    assert!(out.has_line("host: OK"), "{}", out.describe());
    assert_eq!(out.number("results"), 50, "{}", out.describe());

    // Without LD_LIBRARY_PATH too: the .pc file's rpath names the prefix, and nothing else
    // (no rpath into target/ leaked in); the program needs the library by its SONAME.
    let without = run_program(&exe, &[], &[]);
    without.assert_success("host.c without LD_LIBRARY_PATH");
    let dynamic = run(Command::new("readelf").arg("-d").arg(&exe), HANG_LIMIT);
    assert!(
        dynamic
            .stdout
            .contains("Shared library: [libhostloop.so.0]"),
        "{}",
        dynamic.describe()
    );
    let runpaths: Vec<&str> = dynamic
        .stdout
        .lines()
        .filter(|l| l.contains("RUNPATH") || l.contains("RPATH"))
        .collect();
    assert_eq!(
        runpaths.len(),
        1,
        "one run path, the prefix's:\n{}",
        dynamic.describe()
    );
    assert!(runpaths[0].contains(&format!("[{lib}]")), "{}", runpaths[0]);
}

/// The README's install-and-build commands (after its C example), run line by line as
/// written — in the repository, then in host.c's directory as its comment says — with a
/// fresh `$HOME` for the prefix: no `PKG_CONFIG_PATH` or `LD_LIBRARY_PATH` of the test's.
#[test]
fn the_readmes_install_build_and_run_commands_work_as_written() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = &readme[readme.find("## Integrating from C").expect("the C section")..];
    let start = section
        .find("\n```sh\n")
        .expect("a ```sh block in the C section")
        + 7;
    let block = &section[start..start + section[start..].find("\n```").unwrap()];
    let lines: Vec<&str> = block.lines().collect();
    let cc = lines
        .iter()
        .position(|l| l.starts_with("cc "))
        .expect("a cc line");
    let dir = test_dir!("install-readme");
    let home = dir.join("home");
    let host_dir = home.join("my-host");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(c_dir().join("readme_example.c"), host_dir.join("host.c")).unwrap();
    let real_home = std::env::var("HOME").unwrap_or_default();
    let script = format!(
        "set -euo pipefail\ncd {repo:?}\n{install}\ncd {host:?}\n{build}\n",
        repo = repo_root().display().to_string(),
        install = lines[..cc].join("\n"),
        host = host_dir.display().to_string(),
        build = lines[cc..].join("\n"),
    );
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(&script)
        .env("HOME", &home)
        // The toolchain and the registry cache stay where they are.
        .env(
            "CARGO_HOME",
            std::env::var("CARGO_HOME").unwrap_or(format!("{real_home}/.cargo")),
        )
        .env(
            "RUSTUP_HOME",
            std::env::var("RUSTUP_HOME").unwrap_or(format!("{real_home}/.rustup")),
        )
        .env("CARGO_TARGET_DIR", profile_dir().parent().unwrap())
        .env_remove("PKG_CONFIG_PATH")
        .env_remove("LD_LIBRARY_PATH");
    let out = run(&mut cmd, HANG_LIMIT * 10);
    out.assert_success("the README's commands");
    assert!(
        out.stdout.contains("demo/answer: 42") && out.stdout.contains("job: HL_STATUS_OK (0)"),
        "{}",
        out.describe()
    );
    assert!(home.join("hostloop/lib/libhostloop.so.0").exists());
}

#[test]
fn the_c_host_links_statically_with_pkg_config_static_flags() {
    let dir = test_dir!("install-static");
    let cflags = words(&pkg_config(&["--cflags", "hostloop"]));
    let libdir = pkg_config(&["--variable=libdir", "hostloop"]);
    // `--static --libs` minus -lhostloop (which would pick the .so): Libs.private.
    let private: Vec<String> = words(&pkg_config(&["--static", "--libs-only-l", "hostloop"]))
        .into_iter()
        .filter(|f| f != "-lhostloop")
        .collect();
    let exe = Build::bare(Lang::C)
        .flags(&cflags)
        .source(c_dir().join("host.c"))
        .libs(&[format!("{libdir}/libhostloop.a")])
        .libs(&private)
        .compile(dir.join("host-static"));
    let out = run_program(&exe, &[], &[]);
    out.assert_success("host.c linked with libhostloop.a");
    assert!(out.has_line("host: OK"), "{}", out.describe());
}

#[test]
fn the_hpp_host_builds_with_only_pkg_config_flags() {
    if !include_dir().join("hostloop.hpp").exists() {
        println!("SKIPPED: include/hostloop.hpp does not exist yet");
        return;
    }
    let prefix = prefix();
    let dir = test_dir!("install-hpp-host");
    let exe = Build::bare(Lang::Cxx)
        .flags(&words(&pkg_config(&["--cflags", "hostloop"])))
        .source(cpp_dir().join("host_hpp.cpp"))
        .libs(&words(&pkg_config(&["--libs", "hostloop"])))
        .compile(dir.join("host_hpp"));
    let lib = prefix.join("lib").display().to_string();
    let out = run_program(&exe, &[], &[("LD_LIBRARY_PATH", &lib)]);
    out.assert_success("host_hpp.cpp built with pkg-config");
    assert!(out.has_line("hpp host: OK"), "{}", out.describe());
}

#[test]
fn cmake_find_package_gives_shared_and_static_targets_that_build_the_readme_example() {
    if !tool_available("cmake") {
        println!("SKIPPED: cmake is not installed");
        eprintln!("SKIPPED: cmake is not installed");
        return;
    }
    let prefix = prefix();
    let dir = test_dir!("install-cmake");
    std::fs::copy(
        c_dir().join("readme_example.c"),
        dir.join("readme_example.c"),
    )
    .unwrap();
    dir.write(
        "CMakeLists.txt",
        &format!(
            "cmake_minimum_required(VERSION 3.16)\nproject(consumer C)\n\
             set(CMAKE_C_STANDARD 11)\nset(CMAKE_C_STANDARD_REQUIRED ON)\n\
             set(CMAKE_C_EXTENSIONS OFF)\n\
             add_compile_options(-Wall -Wextra -Wpedantic -Werror)\n\
             find_package(hostloop {} CONFIG REQUIRED)\n\
             add_executable(readme_shared readme_example.c)\n\
             target_link_libraries(readme_shared PRIVATE hostloop::hostloop)\n\
             add_executable(readme_static readme_example.c)\n\
             target_link_libraries(readme_static PRIVATE hostloop::hostloop_static)\n",
            env!("CARGO_PKG_VERSION")
        ),
    );
    let build = dir.join("build");
    let mut configure = Command::new("cmake");
    configure
        .arg("-S")
        .arg(dir.path())
        .arg("-B")
        .arg(&build)
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()));
    run(&mut configure, HANG_LIMIT).assert_success("cmake configure");
    let mut compile = Command::new("cmake");
    compile.arg("--build").arg(&build);
    run(&mut compile, HANG_LIMIT).assert_success("cmake --build");
    let lib = prefix.join("lib").display().to_string();
    for (exe, env) in [
        ("readme_shared", vec![("LD_LIBRARY_PATH", lib.as_str())]),
        ("readme_static", vec![]),
    ] {
        let out = run_program(&build.join(exe), &[], &env);
        out.assert_success(exe);
        assert_eq!(
            out.stdout,
            "demo/answer: 42\njob: HL_STATUS_OK (0)\n",
            "{}",
            out.describe()
        );
    }

    // A newer minor version than installed is refused (0.x: minors are breaking).
    let newer = test_dir!("install-cmake-newer");
    newer.write(
        "CMakeLists.txt",
        "cmake_minimum_required(VERSION 3.16)\nproject(newer NONE)\n\
         find_package(hostloop 0.99 CONFIG REQUIRED)\n",
    );
    let mut configure = Command::new("cmake");
    configure
        .arg("-S")
        .arg(newer.path())
        .arg("-B")
        .arg(newer.join("build"))
        .arg(format!("-DCMAKE_PREFIX_PATH={}", prefix.display()));
    let refused = run(&mut configure, HANG_LIMIT);
    assert!(!refused.status.success(), "{}", refused.describe());
}
