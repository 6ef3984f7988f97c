//! A frame cache larger than the memory its reader may use is still read, every frame checked:
//! it is mapped, not loaded. A reader in a memory cgroup limited to 96 MiB scrubs a 384 MiB
//! cache; the control — the same file read into memory under the same limit — is killed, so
//! the limit is real.
//!
//! Needs a writable memory cgroup (v1 `memory` or v2 with the memory controller; root in a
//! container usually has one); prints SKIPPED otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;

use bridge::sdk::cache::CacheWriter;
use bridge::sdk::{ArrayView, Payload};
use hostloop_tests::{run, test_dir, HANG_LIMIT};

const LIMIT: u64 = 96 << 20;
const FRAME_FLOATS: usize = 3 << 20; // 12 MiB of f32 per frame
const FRAMES: u64 = 32; // 384 MiB

/// A memory cgroup of our own, removed on drop.
struct Cgroup {
    dir: PathBuf,
    /// v1 (`memory.limit_in_bytes`) or v2 (`memory.max`).
    v1: bool,
}

impl Cgroup {
    fn new(limit: u64) -> Option<Cgroup> {
        let name = format!("hostloop-cache-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let v2 = Path::new("/sys/fs/cgroup");
        let (dir, v1) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(&name), true)
        } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
        {
            (v2.join(&name), false)
        } else {
            return None;
        };
        std::fs::create_dir(&dir).ok()?;
        let cg = Cgroup { dir, v1 };
        let set = |file: &str, value: u64| std::fs::write(cg.dir.join(file), value.to_string());
        let ok = if v1 {
            set("memory.limit_in_bytes", limit).is_ok()
                && (!cg.dir.join("memory.memsw.limit_in_bytes").exists()
                    || set("memory.memsw.limit_in_bytes", limit).is_ok())
        } else {
            set("memory.max", limit).is_ok() && set("memory.swap.max", 0).is_ok()
        };
        ok.then_some(cg)
    }

    /// Runs `program args` inside the cgroup (a shell joins it, then execs the program).
    fn run(&self, program: &Path, args: &[&str]) -> hostloop_tests::Run {
        let procs = self.dir.join("cgroup.procs");
        run(
            Command::new("sh")
                .arg("-c")
                .arg(r#"echo $$ > "$0" && shift && exec "$@""#)
                .arg(&procs)
                .arg("--")
                .arg(program)
                .args(args),
            HANG_LIMIT,
        )
    }

    /// The most memory the cgroup's processes used (v1), if the kernel says.
    fn peak(&self) -> Option<u64> {
        let file = if self.v1 {
            "memory.max_usage_in_bytes"
        } else {
            "memory.peak"
        };
        std::fs::read_to_string(self.dir.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_cache_four_times_the_memory_limit_is_read_by_map_and_a_load_is_killed() {
    let Some(cg) = Cgroup::new(LIMIT) else {
        println!("SKIPPED: no writable memory cgroup here (needs root and a memory controller)");
        return;
    };
    let dir = test_dir!("cache-memory");
    let path = dir.join("big.hlcache");
    let frame: Vec<f32> = (0..FRAME_FLOATS).map(|i| i as f32).collect();
    let mut w = CacheWriter::create(&path).unwrap();
    for step in 1..=FRAMES {
        w.write(
            step,
            "particles/positions",
            &[Payload::Array(ArrayView::packed(&frame, 3))],
        )
        .unwrap();
    }
    w.finish().unwrap();
    // Out of the page cache (it is written and flushed): the reader's page faults then read the
    // disk and are charged to its cgroup, as with a cache written elsewhere (a farm).
    let f = std::fs::File::open(&path).unwrap();
    // SAFETY: posix_fadvise on an open fd; the advice only drops clean cached pages.
    let advised = unsafe {
        use std::os::fd::AsRawFd;
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED)
    };
    assert_eq!(advised, 0);
    drop(f);
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size >= 4 * LIMIT, "{size} bytes");
    let scrub = Path::new(env!("CARGO_BIN_EXE_cache_scrub"));
    let p = path.to_str().unwrap();

    let r = cg.run(scrub, &[p]);
    r.assert_success("scrubbing the cache inside the memory limit");
    assert!(
        r.has_line(&format!(
            "frames={FRAMES} bytes={} damaged=0",
            FRAMES as usize * FRAME_FLOATS * 4
        )),
        "{}",
        r.describe()
    );
    if let Some(peak) = cg.peak() {
        assert!(
            peak <= LIMIT,
            "the cgroup used {peak} bytes, over its limit"
        );
        println!(
            "scrubbed {size} bytes with a peak of {} MiB charged (limit {} MiB)",
            peak >> 20,
            LIMIT >> 20
        );
    }

    // The control: the same file read into memory, under the same limit, does not survive.
    let r = cg.run(scrub, &["--load", p]);
    assert!(
        !r.status.success(),
        "loading {size} bytes under a {LIMIT}-byte limit succeeded: the limit is not real\n{}",
        r.describe()
    );
}
