//! The studio path, checked: the Open Job Description job template of a chained particles run
//! (`hostloop-worker openjd`, `hostloop::farm::openjd_template`) validates with `openjd check`
//! and runs locally with `openjd run`, and its steps give the bytes of the same steps run by one
//! `hostloop-worker run`.
//!
//! `openjd-cli` comes from PyPI, into a virtual environment under the target directory
//! (`target/openjd-venv`) made on first use; when it cannot be installed here (no python3, no
//! venv module, PyPI unreachable) the test prints SKIPPED with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bridge::sdk::farm::{openjd_template, ChainSpec};
use hostloop_tests::{
    fixture, profile_dir, run, test_dir, tool_available, worker_program, HANG_LIMIT,
};

/// The release of the Open Job Description CLI the test runs, pinned so that a new release
/// cannot change what passes.
const OPENJD_CLI: &str = "openjd-cli==0.8.0";
/// How long pip may take to fetch and install it and its dependencies (a slow link).
const INSTALL_LIMIT: Duration = Duration::from_secs(900);

fn skip(why: &str) {
    println!("SKIPPED: {why}");
    eprintln!("SKIPPED: {why}");
}

/// Whether `program --version` runs.
fn runs(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The `openjd` program, installed from PyPI into `target/openjd-venv` when it is not there
/// yet; `None`, with a SKIPPED line, when it cannot be installed here.
fn openjd() -> Option<PathBuf> {
    let target = profile_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .to_path_buf();
    let venv = target.join("openjd-venv");
    let openjd = venv.join("bin").join("openjd");
    if runs(&openjd) {
        return Some(openjd);
    }
    if !tool_available("python3") {
        skip("no python3 to install openjd-cli with");
        return None;
    }
    let made = run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        HANG_LIMIT,
    );
    if !made.status.success() {
        skip(&format!(
            "python3 -m venv failed (Debian's python3-venv is missing?):\n{}",
            made.describe()
        ));
        return None;
    }
    let pip = run(
        Command::new(venv.join("bin").join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(OPENJD_CLI),
        INSTALL_LIMIT,
    );
    if !pip.status.success() {
        skip(&format!(
            "pip could not install {OPENJD_CLI} from PyPI:\n{}",
            pip.describe()
        ));
        return None;
    }
    assert!(
        runs(&openjd),
        "{OPENJD_CLI} installed, but {} does not run",
        openjd.display()
    );
    Some(openjd)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[test]
fn the_openjd_template_validates_and_runs_locally_to_the_bytes_of_one_run() {
    let dir = test_dir!("openjd");
    let plugin = fixture("hostloop_particles");
    let run_dir = dir.join("run");

    // The template a user writes with the worker program: 300 steps of 1,000 particles in 3
    // segments, each also saving every 50 steps.
    let printed = run(
        Command::new(worker_program()).args([
            "openjd",
            "--configure",
            "agents=1000",
            "--steps",
            "300",
            "--segments",
            "3",
            "--save-every",
            "50",
        ]),
        HANG_LIMIT,
    );
    printed.assert_success("hostloop-worker openjd");
    let template = printed.stdout.clone();
    // The same as the library's for the spec a Chain would submit here: this machine's paths
    // (absolute) are not defaults, so the template holds none of them and serves any machine.
    let spec = ChainSpec::new("hostloop-worker", &plugin, &run_dir)
        .configure("agents=1000")
        .steps(300)
        .segments(3)
        .save_every(50);
    assert_eq!(openjd_template(&spec).unwrap(), template);
    for path in [dir.path(), plugin.as_path()] {
        assert!(
            !template.contains(s(path)),
            "{} is in the template:\n{template}",
            path.display()
        );
    }
    for i in 0..3 {
        assert!(
            template.contains(&format!("\"name\": \"segment-{i}\"")),
            "{template}"
        );
    }

    let Some(openjd) = openjd() else { return };
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    let template_file = bundle.join("template.json");
    std::fs::write(&template_file, &template).unwrap();

    let check = run(
        Command::new(&openjd).arg("check").arg(&template_file),
        HANG_LIMIT,
    );
    check.assert_success("openjd check");
    assert!(
        check.stdout.contains("passes validation checks"),
        "{}",
        check.describe()
    );
    // The other shape validates too: from a saved state, no cache, relative paths (defaults,
    // inside the template's directory), more CPUs.
    let restored = ChainSpec::new("hostloop-worker", "libhostloop_particles.so", "run")
        .restore("start.state", 100)
        .steps(200)
        .segments(2)
        .cache(false)
        .cpus(2);
    let restored_file = bundle.join("restored.json");
    std::fs::write(&restored_file, openjd_template(&restored).unwrap()).unwrap();
    run(
        Command::new(&openjd).arg("check").arg(&restored_file),
        HANG_LIMIT,
    )
    .assert_success("openjd check (a chain from a saved state)");

    // All the steps, locally, in their dependency order; the paths as a submission gives them.
    let ran = run(
        Command::new(&openjd)
            .current_dir(dir.path())
            .arg("run")
            .arg(&template_file)
            .arg("-p")
            .arg(format!("Worker={}", s(&worker_program())))
            .arg("-p")
            .arg(format!("Plugin={}", s(&plugin)))
            .arg("-p")
            .arg(format!("RunDir={}", s(&run_dir))),
        HANG_LIMIT,
    );
    ran.assert_success("openjd run");
    let log = format!("{}\n{}", ran.stdout, ran.stderr);
    let order: Vec<usize> = (0..3)
        .map(|i| {
            log.find(&format!("Running step 'segment-{i}'"))
                .unwrap_or_else(|| panic!("segment-{i} never ran:\n{}", ran.describe()))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "the segments ran out of order:\n{}",
        ran.describe()
    );
    assert!(
        log.contains("Session ended successfully"),
        "{}",
        ran.describe()
    );

    // The same 300 steps by one run of the runner.
    let (one_state, one_cache) = (dir.join("one.state"), dir.join("one.hlcache"));
    run(
        Command::new(worker_program())
            .args(["run", "--progress", "none", "--configure", "agents=1000"])
            .args([
                "--until",
                "300",
                "--save",
                s(&one_state),
                "--cache",
                s(&one_cache),
            ])
            .arg(&plugin),
        HANG_LIMIT,
    )
    .assert_success("one run of 300 steps");
    assert!(
        std::fs::read(run_dir.join("segment-2.state")).unwrap()
            == std::fs::read(&one_state).unwrap(),
        "the OpenJD job's final state differs from one run's"
    );
    assert!(
        std::fs::read(run_dir.join("frames.hlcache")).unwrap()
            == std::fs::read(&one_cache).unwrap(),
        "the OpenJD job's frame cache differs from one run's"
    );
}
