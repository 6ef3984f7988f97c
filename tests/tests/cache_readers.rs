//! The frame cache read from outside Rust: `examples/cache/read_cache.py` (Python + numpy, by
//! memory map) reads back, bit for bit, what `hostloop::cache::CacheWriter` wrote, and stops at
//! a torn tail with a note.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use bridge::sdk::cache::CacheWriter;
use bridge::sdk::{ArrayView, Payload};
use hostloop_tests::{repo_root, run, test_dir, HANG_LIMIT};

/// A Python 3 with numpy: the system one first (Debian's `python3-numpy`, which
/// `scripts/test-deps` installs), then whatever `python3` is on the PATH.
fn python_with_numpy() -> Option<PathBuf> {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            Command::new(p)
                .args(["-c", "import numpy"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

/// Writes frames of f32 xyz, u32 ids and a bytes note; returns the cache path and the text the
/// Python dump below must print for them.
fn write_cache(dir: &Path, frames: u64) -> (PathBuf, String) {
    let path = dir.join("frames.hlcache");
    let mut w = CacheWriter::create(&path).unwrap();
    let mut want = String::new();
    for step in 1..=frames {
        let n = 5 + step as usize;
        let xyz: Vec<f32> = (0..3 * n)
            .map(|i| (i as f32).sin() * 1e3 + step as f32)
            .collect();
        let ids: Vec<u32> = (0..n as u32).map(|i| i * 7 + step as u32).collect();
        let note = format!("frame {step}");
        w.write(
            step,
            "particles/positions",
            &[
                Payload::Array(ArrayView::packed(&xyz, 3)),
                Payload::Array(ArrayView::packed(&ids, 1)),
                Payload::Bytes(note.as_bytes()),
            ],
        )
        .unwrap();
        let hex = |b: &[u8]| {
            b.iter().fold(String::new(), |mut s, x| {
                let _ = write!(s, "{x:02x}");
                s
            })
        };
        let xyz_bytes: Vec<u8> = xyz.iter().flat_map(|v| v.to_le_bytes()).collect();
        let id_bytes: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
        let _ = writeln!(
            want,
            "{step} particles/positions float32({n},3) {} uint32({n},) {} bytes {}",
            hex(&xyz_bytes),
            hex(&id_bytes),
            hex(note.as_bytes())
        );
    }
    w.finish().unwrap();
    (path, want)
}

const DUMP: &str = r#"
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from read_cache import frames
for step, topic, ps in frames(sys.argv[2]):
    out = [str(step), topic]
    for p in ps:
        if isinstance(p, np.ndarray):
            assert p.base is not None, "an array must be a view of the map, not a copy"
            out += [f"{p.dtype}{p.shape}".replace(" ", ""), p.tobytes().hex()]
        else:
            out += ["bytes", bytes(p).hex()]
    print(" ".join(out))
"#;

#[test]
fn the_python_numpy_reader_reads_what_rust_wrote_bit_for_bit() {
    let Some(python) = python_with_numpy() else {
        println!("SKIPPED: no python3 with numpy (scripts/test-deps installs python3-numpy)");
        return;
    };
    let dir = test_dir!("cache-readers");
    let dir = dir.path();
    let (path, want) = write_cache(dir, 8);
    let examples = repo_root().join("examples/cache");
    let dump = |file: &Path| {
        run(
            Command::new(&python)
                .arg("-c")
                .arg(DUMP)
                .arg(&examples)
                .arg(file),
            HANG_LIMIT,
        )
    };
    let r = dump(&path);
    r.assert_success("the numpy reader");
    assert_eq!(r.stdout, want, "{}", r.describe());
    assert!(r.stderr.is_empty(), "{}", r.describe());

    // A writer killed inside the last frame: the good frames, then a note.
    let full = std::fs::read(&path).unwrap();
    let torn = dir.join("torn.hlcache");
    std::fs::write(&torn, &full[..full.len() - 100]).unwrap();
    let r = dump(&torn);
    r.assert_success("the numpy reader on a torn cache");
    let seven: String = want.lines().take(7).map(|l| format!("{l}\n")).collect();
    assert_eq!(r.stdout, seven, "{}", r.describe());
    assert!(r.stderr.contains("torn or damaged"), "{}", r.describe());

    // The example's own listing.
    let r = run(
        Command::new(&python)
            .arg(examples.join("read_cache.py"))
            .arg(&path),
        HANG_LIMIT,
    );
    r.assert_success("read_cache.py");
    assert!(
        r.has_line("step 8 particles/positions: float32[13, 3], uint32[13], 7 bytes"),
        "{}",
        r.describe()
    );
}
