//! A minimal Rust host for the template plugin: a 60 Hz loop that pumps hostloop within a 2 ms
//! budget, shows what the plugin sends to the sink, and hot-reloads the plugin whenever its
//! library file changes (rebuild it in another terminal).
//!
//! ```text
//! cargo run --release -p hostloop-plugin-template --example host -- --seconds 60
//! ```
//!
//! Flags: `--seconds N` (default 3), `--plugin PATH` (default: the library built beside this
//! example), `--reload-once` (reload the same file halfway through, to show the hand-off without
//! editing anything).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hostloop::{Message, Payload, Runtime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut seconds = 3.0f64;
    let mut plugin: Option<PathBuf> = None;
    let mut reload_once = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => seconds = args.next().ok_or("--seconds N")?.parse()?,
            "--plugin" => plugin = Some(args.next().ok_or("--plugin PATH")?.into()),
            "--reload-once" => reload_once = true,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    // target/<profile>/examples/host -> target/<profile>/libhostloop_plugin_template.so
    let plugin = match plugin {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .and_then(|d| d.parent())
            .ok_or("cannot locate the target directory")?
            .join(format!(
                "{}hostloop_plugin_template{}",
                std::env::consts::DLL_PREFIX,
                std::env::consts::DLL_SUFFIX
            )),
    };

    if !plugin.exists() {
        build_plugin(&plugin)?;
    }

    let rt = Runtime::builder().build()?;
    let step = Arc::new(AtomicU64::new(0));
    let points = Arc::new(AtomicU64::new(0));
    {
        let (step, points) = (step.clone(), points.clone());
        rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
            match (m.topic, m.payload) {
                ("orbits/step", Payload::Bytes(b)) if b.len() == 8 => {
                    step.store(u64::from_le_bytes(b.try_into().unwrap()), Ordering::Relaxed);
                }
                ("orbits/positions", Payload::Array(a)) => {
                    points.store(a.count() as u64, Ordering::Relaxed)
                }
                _ => {}
            }
        })));
    }

    let mut loaded = rt.load_plugin(&plugin)?;
    let info = loaded.info();
    println!(
        "loaded {} {} from {}",
        info.name,
        info.version,
        plugin.display()
    );
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen_mtime: Option<SystemTime> = modified(&plugin);

    let start = Instant::now();
    let frame = Duration::from_secs_f64(1.0 / 60.0);
    let mut next = start;
    let mut reloaded = false;
    let mut last_check = start;
    let mut last_print = start;
    // After a reload the steps must go on from where the old build was, never restart.
    let mut floor: Option<u64> = None;
    while start.elapsed().as_secs_f64() < seconds {
        rt.pump(Duration::from_millis(2))?;
        let now = Instant::now();
        let halfway = now.duration_since(start).as_secs_f64() >= seconds / 2.0;
        let changed = now.duration_since(last_check) >= Duration::from_millis(250)
            && modified(&plugin) != seen_mtime;
        if changed || (reload_once && !reloaded && halfway) {
            last_check = now;
            seen_mtime = modified(&plugin);
            reloaded = true;
            let before = step.load(Ordering::Relaxed);
            match loaded.reload(&plugin, Duration::from_secs(2)) {
                Ok(()) => {
                    println!(
                        "\nreloaded at step {before}: generation {}",
                        loaded.info().generation
                    );
                    floor = Some(before);
                }
                Err(e) => println!("reload failed, the old build keeps running: {e}"),
            }
        } else if now.duration_since(last_check) >= Duration::from_millis(250) {
            last_check = now;
        }
        let now_step = step.load(Ordering::Relaxed);
        if floor.is_some_and(|f| now_step < f) {
            return Err(format!("step went back to {now_step} after the reload").into());
        }
        if now.duration_since(last_print) >= Duration::from_millis(250) {
            last_print = now;
            print!(
                "\rstep {now_step:>6}  points {:>6}  generation {}",
                points.load(Ordering::Relaxed),
                loaded.info().generation
            );
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
        }
        // The host's frame pacing (a real host waits for vsync or its event loop here).
        next += frame;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    println!();
    let report = loaded.unload(Duration::from_secs(2));
    println!(
        "unloaded in {:?} ({} queued items dropped, image {})",
        report.elapsed,
        report.dropped,
        if report.retired {
            "retired"
        } else {
            "unmapped"
        }
    );
    if step.load(Ordering::Relaxed) == 0 || points.load(Ordering::Relaxed) != 10_000 {
        return Err("the plugin's frames never reached the host".into());
    }
    Ok(())
}

/// `cargo run --example` builds only the rlib of this package; the plugin is the cdylib, so build
/// it with the same profile and target directory as this host (`--release` under `cargo run --release`).
fn build_plugin(plugin: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    let profile_dir = plugin.parent().ok_or("no profile directory")?;
    let target_dir = profile_dir.parent().ok_or("no target directory")?;
    let mut cmd = std::process::Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()));
    // This package, wherever it was copied and whatever it was renamed to.
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .args(["-p", env!("CARGO_PKG_NAME")])
        .env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    println!("building the plugin: {cmd:?}");
    if !cmd.status()?.success() {
        return Err(format!("cargo build -p {} failed", env!("CARGO_PKG_NAME")).into());
    }
    Ok(())
}
