//! Reload and load/unload storms of the particles plugin with its simulation playing: what a
//! cycle costs this process — resident memory, mapped plugin images (`/proc/self/maps`), open
//! files (`/proc/self/fd`) — sampled every cycle, printed per storm, and bounded.
//!
//! A TD rebuilding a plugin writes a new file at the same path each time. The builds here are
//! the particles library with a few bytes appended (the loader ignores them): different files
//! and contents of the same code, written to the build path as a new file each time (written
//! beside it, then renamed over it, as a linker's output replaces the old file).
//!
//! The image state measured is per process and the tests of this file are threads of one
//! process: each holds `MEASURE` for its whole run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bridge::sdk::plugin::LoadedPlugin;
use bridge::sdk::{Event, Message, Payload, Runtime};
use hostloop_tests::{fixture, test_dir, TestDir};

/// Only fires on failure.
const HANG_LIMIT: Duration = Duration::from_secs(120);
const DEADLINE: Duration = Duration::from_secs(10);
/// A small simulation: the storms measure the plugin's images, not the particles.
const AGENTS: usize = 2_000;
const CONFIG: &str = "agents=2000 playing=1 delivery=latest rate=0";

static MEASURE: Mutex<()> = Mutex::new(());

fn measure() -> MutexGuard<'static, ()> {
    MEASURE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A host runtime whose sink keeps the particles plugin's last step and frame size.
struct Host {
    rt: Runtime,
    /// The last `particles/step` received (0 before any).
    step: Arc<AtomicU64>,
    /// Steps received since the last `forget`.
    frames: Arc<AtomicU64>,
    /// The length of the last `particles/positions` array (floats).
    floats: Arc<AtomicUsize>,
}

impl Host {
    fn new() -> Host {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let (step, frames, floats) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (s, f, n) = (step.clone(), frames.clone(), floats.clone());
        rt.set_sink(Some(Box::new(move |m: &Message<'_>| match m.payload {
            Payload::Bytes(b) if m.topic == "particles/step" => {
                s.store(
                    u64::from_le_bytes(b[..8].try_into().unwrap()),
                    Ordering::SeqCst,
                );
                f.fetch_add(1, Ordering::SeqCst);
            }
            Payload::Array(a) if m.topic == "particles/positions" => {
                n.store(a.count() * a.components(), Ordering::SeqCst);
            }
            _ => {}
        })));
        Host {
            rt,
            step,
            frames,
            floats,
        }
    }

    fn configure(&self) {
        self.rt
            .post_event(Event::Custom {
                topic: "particles/configure".into(),
                bytes: CONFIG.as_bytes().to_vec(),
                coalesce: false,
            })
            .unwrap();
    }

    /// Pumps until a frame of the small simulation arrives that is newer than what came
    /// before this call; returns its step.
    fn next_frame(&self, what: &str) -> u64 {
        self.frames.store(0, Ordering::SeqCst);
        let report = self
            .rt
            .run_until(
                || {
                    self.frames.load(Ordering::SeqCst) >= 2
                        && self.floats.load(Ordering::SeqCst) == AGENTS * 3
                },
                Duration::from_millis(2),
                HANG_LIMIT,
            )
            .unwrap();
        assert!(report.finished, "{what}: no frame after {HANG_LIMIT:?}");
        self.step.load(Ordering::SeqCst)
    }
}

/// Builds of the particles plugin, installed at one path as a rebuild would.
struct Builds {
    dir: TestDir,
    base: Vec<u8>,
    path: PathBuf,
}

impl Builds {
    fn new(dir: TestDir) -> Builds {
        let base = std::fs::read(fixture("hostloop_particles")).unwrap();
        let path = dir.join("libparticles.so");
        Builds { dir, base, path }
    }

    /// Writes build `tag` as a new file at the build path.
    fn install(&self, tag: &str) -> &Path {
        let next = self.dir.join("libparticles.so.new");
        let mut bytes = self.base.clone();
        bytes.extend_from_slice(format!("\0hostloop storm build {tag}\0").as_bytes());
        std::fs::write(&next, &bytes).unwrap();
        std::fs::rename(&next, &self.path).unwrap();
        &self.path
    }
}

/// The loader's copy directory of this process.
fn copy_dir() -> PathBuf {
    std::env::temp_dir().join(format!("hostloop-plugins-{}", std::process::id()))
}

/// What one sample holds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    rss: u64,
    images: usize,
    fds: usize,
}

/// Resident memory, plugin images mapped (the loader's copies and the files under `builds`,
/// by device and inode: each is one mapping, deleted or not) and open files of this process.
fn sample(builds: &Path) -> Sample {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    let copies = copy_dir();
    let copies = copies.to_str().unwrap();
    let builds = builds.to_str().unwrap();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let images: BTreeSet<(&str, &str)> = maps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, inode) = (f.nth(3)?, f.next()?);
            let file = f.next()?;
            (file.starts_with(copies) || file.starts_with(builds)).then_some((dev, inode))
        })
        .collect();
    Sample {
        rss: pages * 4096,
        images: images.len(),
        fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
    }
}

/// Samples of a storm: the first, the peaks, the last.
struct Figures {
    name: &'static str,
    began: std::time::Instant,
    cycles: u64,
    start: Sample,
    peak_rss: u64,
    peak_images: usize,
    peak_fds: usize,
    end: Sample,
}

impl Figures {
    fn new(name: &'static str, start: Sample) -> Figures {
        Figures {
            name,
            began: std::time::Instant::now(),
            cycles: 0,
            start,
            peak_rss: start.rss,
            peak_images: start.images,
            peak_fds: start.fds,
            end: start,
        }
    }

    fn cycle(&mut self, s: Sample) {
        self.cycles += 1;
        self.peak_rss = self.peak_rss.max(s.rss);
        self.peak_images = self.peak_images.max(s.images);
        self.peak_fds = self.peak_fds.max(s.fds);
        self.end = s;
    }

    fn rss_grown(&self) -> u64 {
        self.end.rss.saturating_sub(self.start.rss)
    }

    fn print(&self) {
        let kib = |b: u64| b / 1024;
        println!(
            "{}: {} cycles; RSS start {} KiB, peak {} KiB, end {} KiB ({:+} KiB per cycle); \
             images mapped {} -> {} (peak {}); fds {} -> {} (peak {}); {:.1} s",
            self.name,
            self.cycles,
            kib(self.start.rss),
            kib(self.peak_rss),
            kib(self.end.rss),
            (self.end.rss as i64 - self.start.rss as i64) / 1024 / self.cycles.max(1) as i64,
            self.start.images,
            self.end.images,
            self.peak_images,
            self.start.fds,
            self.end.fds,
            self.peak_fds,
            self.began.elapsed().as_secs_f64(),
        );
    }
}

/// Loads the build at `path` and starts the small simulation.
fn load_playing(host: &Host, path: &Path) -> LoadedPlugin {
    let plugin = host.rt.load_plugin(path).unwrap();
    host.configure();
    host.next_frame("the first frames of the small simulation");
    plugin
}

/// Reloads `plugin` from `path` and checks that the simulation plays on from its step.
fn reload_keeps_step(host: &Host, plugin: &mut LoadedPlugin, path: &Path, cycle: u64) {
    let before = host.next_frame("frames before the reload");
    plugin.reload(path, DEADLINE).unwrap();
    let after = host.next_frame("frames of the reloaded build");
    assert!(
        after > before,
        "reload {cycle}: the simulation resumed at step {after}, it was at {before}"
    );
}

#[test]
fn two_hundred_reloads_between_three_rebuilt_builds_map_each_build_once() {
    let _measure = measure();
    let builds = Builds::new(test_dir!("storm-reloads"));
    let host = Host::new();
    let mut plugin = load_playing(&host, builds.install("A"));
    // Warm up: each build mapped once (B and C as copies, A as a copy once its file was
    // rewritten), the allocator's pools grown.
    let tags = ["B", "C", "A"];
    for (i, tag) in tags.iter().cycle().take(6).enumerate() {
        reload_keeps_step(&host, &mut plugin, builds.install(tag), i as u64);
    }
    let retained = host.rt.plugin_stats().images_retained;
    let mut figures = Figures::new("reloads between 3 builds", sample(builds.dir.path()));
    for (i, tag) in tags.iter().cycle().take(200).enumerate() {
        reload_keeps_step(&host, &mut plugin, builds.install(tag), i as u64);
        figures.cycle(sample(builds.dir.path()));
    }
    figures.print();
    let stats = host.rt.plugin_stats();
    assert_eq!(stats.reloads, 206);
    assert_eq!(
        stats.images_retained, retained,
        "a reload to a build retired before reuses its image"
    );
    assert_eq!(
        figures.peak_images, figures.start.images,
        "200 reloads between three builds mapped more images"
    );
    assert!(
        figures.peak_fds <= figures.start.fds + 4,
        "open files grew from {} to {}",
        figures.start.fds,
        figures.peak_fds
    );
    // Each reload retires the old instance's bookkeeping (about 10 KiB): 200 reloads that
    // mapped an image each would add 1 MiB or more per reload.
    assert!(
        figures.rss_grown() < 32 << 20,
        "resident memory grew by {} KiB over 200 reloads",
        figures.rss_grown() / 1024
    );
    assert_eq!(plugin.unload(DEADLINE).stragglers, 0);
    assert!(
        !copy_dir().exists(),
        "{} was left behind",
        copy_dir().display()
    );
}

#[test]
fn two_hundred_load_unload_cycles_of_rebuilt_builds_keep_memory_images_and_files_bounded() {
    let _measure = measure();
    let builds = Builds::new(test_dir!("storm-load-unload"));
    let host = Host::new();
    let tags = ["A", "B"];
    // Warm up: both builds mapped, the first under its own path, then as copies.
    for tag in tags.iter().cycle().take(4) {
        let plugin = load_playing(&host, builds.install(tag));
        assert_eq!(plugin.unload(DEADLINE).stragglers, 0);
    }
    let retained = host.rt.plugin_stats().images_retained;
    let mut figures = Figures::new("load/unload of 2 builds", sample(builds.dir.path()));
    for i in 0..200 {
        // A rebuild every tenth cycle, between two builds; the same file otherwise.
        if i % 10 == 0 {
            builds.install(tags[i / 10 % 2]);
        }
        let plugin = load_playing(&host, &builds.path);
        let report = plugin.unload(DEADLINE);
        assert!(
            report.retired && report.stragglers == 0,
            "cycle {i}: {report:?}"
        );
        figures.cycle(sample(builds.dir.path()));
    }
    figures.print();
    let stats = host.rt.plugin_stats();
    assert_eq!((stats.loads, stats.unloads, stats.loaded), (204, 204, 0));
    assert_eq!(
        stats.images_retained, retained,
        "a load of a build retired before reuses its image"
    );
    assert_eq!(
        figures.peak_images, figures.start.images,
        "200 load/unload cycles of two builds mapped more images"
    );
    assert!(
        figures.peak_fds <= figures.start.fds + 4,
        "open files grew from {} to {}",
        figures.start.fds,
        figures.peak_fds
    );
    assert!(
        figures.rss_grown() < 32 << 20,
        "resident memory grew by {} KiB over 200 load/unload cycles",
        figures.rss_grown() / 1024
    );
    assert!(
        !copy_dir().exists(),
        "{} was left behind",
        copy_dir().display()
    );
}

#[test]
fn reloads_to_a_new_build_each_time_map_one_image_per_build_and_report_it() {
    const CYCLES: u64 = 40;
    let _measure = measure();
    let builds = Builds::new(test_dir!("storm-new-builds"));
    let host = Host::new();
    let mut plugin = load_playing(&host, builds.install("first"));
    reload_keeps_step(&host, &mut plugin, builds.install("warm-up"), 0);
    let retained = host.rt.plugin_stats().images_retained;
    let mut figures = Figures::new("reloads to new builds", sample(builds.dir.path()));
    for i in 0..CYCLES {
        reload_keeps_step(&host, &mut plugin, builds.install(&format!("new {i}")), i);
        let s = sample(builds.dir.path());
        assert_eq!(
            s.images as u64,
            figures.start.images as u64 + i + 1,
            "reload {i} to a new build maps exactly one more image"
        );
        figures.cycle(s);
    }
    figures.print();
    // Each reload retired the build before it: the warm-up build, then 39 of the storm's.
    assert_eq!(
        host.rt.plugin_stats().images_retained,
        retained + CYCLES,
        "plugin stats count each retired build that stays mapped"
    );
    // Back to a build of the storm: its retired image is reused, no image is mapped (the one
    // reloaded away from, in use until now, is retired: counted, but mapped already).
    reload_keeps_step(&host, &mut plugin, builds.install("new 3"), CYCLES);
    assert_eq!(sample(builds.dir.path()).images, figures.end.images);
    assert_eq!(
        host.rt.plugin_stats().images_retained,
        retained + CYCLES + 1
    );
    assert!(
        figures.peak_fds <= figures.start.fds + 4,
        "open files grew from {} to {}",
        figures.start.fds,
        figures.peak_fds
    );
    // The cost the plugin docs state: the resident part of one more image per new build. A
    // generous bound per build: the debug build is about 25 MiB of file.
    assert!(
        figures.rss_grown() < CYCLES * (16 << 20),
        "resident memory grew by {} KiB over {CYCLES} new builds",
        figures.rss_grown() / 1024
    );
    assert_eq!(plugin.unload(DEADLINE).stragglers, 0);
}

#[test]
fn loading_copies_leaves_no_directory_in_the_temp_dir() {
    let _measure = measure();
    let builds = Builds::new(test_dir!("storm-copy-dir"));
    let host = Host::new();
    // The first load maps the file under its own path; its rebuild is loaded from a copy.
    let plugin = host.rt.load_plugin(builds.install("A")).unwrap();
    assert_eq!(plugin.unload(DEADLINE).stragglers, 0);
    let mut plugin = host.rt.load_plugin(builds.install("B")).unwrap();
    plugin.reload(builds.install("C"), DEADLINE).unwrap();
    assert_eq!(plugin.info().generation, 1);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(
        maps.contains(copy_dir().to_str().unwrap()),
        "the rebuilds were mapped from copies"
    );
    assert!(
        !copy_dir().exists(),
        "{} is left behind while plugins are loaded",
        copy_dir().display()
    );
    assert_eq!(plugin.unload(DEADLINE).stragglers, 0);
    assert!(
        !copy_dir().exists(),
        "{} is left behind",
        copy_dir().display()
    );
}
