//! The frame cache read from C (`hostloop/cache.h`, `tests/c/cache_read.c`) and C++
//! (`hostloop::Cache`, `tests/cpp/cache_hpp.cpp`): what `hostloop::cache::CacheWriter` wrote
//! reads back bit for bit by memory map — natively, under ASan/UBSan and under valgrind; a cache
//! cut or corrupted at every offset never crashes and reads back its good prefix with the
//! damage; every bad input is its documented status.
//!
//! The C program prints each frame's step, topic and payloads with an FNV-1a 64 of the bytes it
//! read; the expected text is computed here from the data that was written (and, for the
//! caches damaged at every offset, from the Rust reader of the same file).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bridge::sdk::cache::{Cache, CacheError, CacheWriter, DamageReason};
use bridge::sdk::{ArrayView, Payload};
use hostloop_tests::{
    c_dir, cpp_dir, run_program, run_sanitized, run_valgrind, test_dir, Build, Lang, Run, TestDir,
    SANITIZER_FLAGS,
};

// ---- what is written ---------------------------------------------------------------------------

/// One payload as written.
enum Data {
    F32(Vec<f32>, usize),
    U32(Vec<u32>, usize),
    Bytes(Vec<u8>),
}

impl Data {
    fn payload(&self) -> Payload<'_> {
        match self {
            Data::F32(v, c) => Payload::Array(ArrayView::packed(v, *c)),
            Data::U32(v, c) => Payload::Array(ArrayView::packed(v, *c)),
            Data::Bytes(b) => Payload::Bytes(b),
        }
    }

    /// `elem components count` and the little-endian bytes, as C must see them.
    fn expected(&self) -> (u32, usize, usize, Vec<u8>) {
        match self {
            Data::F32(v, c) => (6, *c, v.len() / c, le_bytes(v, |x| x.to_le_bytes())),
            Data::U32(v, c) => (3, *c, v.len() / c, le_bytes(v, |x| x.to_le_bytes())),
            Data::Bytes(b) => (0, 1, b.len(), b.clone()),
        }
    }
}

fn le_bytes<T: Copy>(v: &[T], f: impl Fn(T) -> [u8; 4]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

struct Spec {
    step: u64,
    topic: String,
    payloads: Vec<Data>,
}

/// `frames` frames of mixed payloads: f32 xyz positions with u32 ids and a note; u32 pairs with
/// an empty bytes payload and an empty f32 array; a bytes payload under a topic with a
/// non-ASCII character and a NUL of its own. `particles` sets the size of the arrays.
fn specs(frames: usize, particles: usize) -> Vec<Spec> {
    (0..frames)
        .map(|i| {
            let step = 100 + 5 * i as u64;
            let n = particles + i;
            let (topic, payloads) = match i % 3 {
                0 => (
                    "particles/positions",
                    vec![
                        Data::F32(
                            (0..3 * n)
                                .map(|k| (k as f32 * 0.37).sin() * 1e3 + step as f32)
                                .collect(),
                            3,
                        ),
                        Data::U32((0..n as u32).map(|k| k * 7 + step as u32).collect(), 1),
                        Data::Bytes(format!("frame {step}").into_bytes()),
                    ],
                ),
                1 => (
                    "crowd/agents",
                    vec![
                        Data::U32(
                            (0..2 * n as u32)
                                .map(|k| k ^ ((step as u32) << 8))
                                .collect(),
                            2,
                        ),
                        Data::Bytes(Vec::new()),
                        Data::F32(Vec::new(), 3),
                    ],
                ),
                _ => (
                    "mesh/ü\0tail",
                    vec![Data::Bytes(
                        format!("{{\"step\":{step},\"points\":{n}}}").into_bytes(),
                    )],
                ),
            };
            Spec {
                step,
                topic: topic.to_owned(),
                payloads,
            }
        })
        .collect()
}

/// Writes the frames; returns where each one ends in the file.
fn write_cache(path: &Path, specs: &[Spec]) -> Vec<u64> {
    let mut w = CacheWriter::create(path).unwrap();
    let mut ends = Vec::new();
    for s in specs {
        let payloads: Vec<Payload<'_>> = s.payloads.iter().map(Data::payload).collect();
        w.write(s.step, &s.topic, &payloads).unwrap();
        ends.push(w.bytes_written());
    }
    w.finish().unwrap();
    ends
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The lines `cache_read.c` prints for frame `i` as it was written.
fn written_frame(i: usize, s: &Spec) -> String {
    let mut out = format!(
        "frame {i} step {} topic {} payloads {}\n",
        s.step,
        s.topic,
        s.payloads.len()
    );
    for (j, p) in s.payloads.iter().enumerate() {
        let (elem, components, count, bytes) = p.expected();
        let _ = writeln!(
            out,
            "payload {i} {j} {elem} {components} {count} {} {:016x}",
            bytes.len(),
            fnv1a64(&bytes)
        );
    }
    out
}

/// The dump of a file `k` whose first `frames` frames read as written, then `damage`.
fn written_dump(k: usize, specs: &[Spec], frames: usize, damage: &str) -> String {
    let mut out = format!("file {k}\nframes {frames}\n");
    for (i, s) in specs.iter().take(frames).enumerate() {
        out += &written_frame(i, s);
    }
    out + "damage " + damage + "\n"
}

// ---- what the Rust reader makes of a file --------------------------------------------------------

/// The status `hostloop/cache.h` documents for a cache error.
fn status_of(e: &CacheError) -> &'static str {
    match e {
        CacheError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            "HL_STATUS_FILE_NOT_FOUND"
        }
        CacheError::Io { .. } => "HL_STATUS_OS",
        CacheError::NotACache { .. } | CacheError::NoSuchFrame { .. } => "HL_STATUS_INVALID_ARG",
        CacheError::UnsupportedFormat { .. } => "HL_STATUS_VERSION_MISMATCH",
        CacheError::Corrupt { .. } => "HL_STATUS_FAILED",
        other => panic!("no documented status for {other}"),
    }
}

/// What `cache_read <mode>` must print for file `k` at `path`, per the Rust reader.
fn rust_dump(k: usize, path: &Path, mode: &str) -> String {
    let mut out = format!("file {k}\n");
    let mut cache = match Cache::open(path) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "open {} hl_cache_open: {e}", status_of(&e));
            return out;
        }
    };
    if mode == "verify" {
        let _ = writeln!(out, "verified {}", cache.verify());
    }
    let _ = writeln!(out, "frames {}", cache.len());
    for i in 0..cache.len() {
        let frame = if mode == "scrub" {
            cache.frame_unverified(i)
        } else {
            cache.frame(i)
        };
        let f = match frame {
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(out, "frame {i} {} hl_cache_frame: {e}", status_of(&e));
                continue;
            }
        };
        let _ = writeln!(
            out,
            "frame {i} step {} topic {} payloads {}",
            f.step(),
            f.topic(),
            f.len()
        );
        for j in 0..f.len() {
            let (elem, components, count) = match f.payload(j).unwrap() {
                Payload::Bytes(b) => (0, 1, b.len()),
                Payload::Array(a) => (a.elem() as u32, a.components(), a.count()),
            };
            let bytes = f.bytes(j).unwrap();
            let _ = writeln!(
                out,
                "payload {i} {j} {elem} {components} {count} {} {:016x}",
                bytes.len(),
                fnv1a64(bytes)
            );
        }
    }
    let damage = match cache.damage() {
        None => "0 0 0 0 0".to_owned(),
        Some(d) => {
            let (reason, payload) = match d.reason {
                DamageReason::Truncated => (1, 0),
                DamageReason::BadHeader => (2, 0),
                DamageReason::BadData { payload } => (3, payload),
                ref other => panic!("no HL_CACHE_DAMAGE_* for {other:?}"),
            };
            format!("1 {} {} {reason} {payload}", d.offset, d.file_len)
        }
    };
    out + "damage " + &damage + "\n"
}

// ---- running the programs ------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Under {
    Native,
    Sanitizers,
    Valgrind,
}

fn build_c(dir: &TestDir, under: Under) -> PathBuf {
    let flags: &[&str] = match under {
        Under::Native => &[],
        Under::Sanitizers => SANITIZER_FLAGS,
        Under::Valgrind => &["-g"],
    };
    Build::new(Lang::C)
        .flags(flags)
        .source(c_dir().join("cache_read.c"))
        .compile(dir.join("cache_read"))
}

/// Runs `exe` with `args`; `None` when valgrind is wanted and not installed.
fn run_under(exe: &Path, args: &[&str], under: Under) -> Option<Run> {
    let run = match under {
        Under::Native => run_program(exe, args, &[]),
        Under::Sanitizers => run_sanitized(exe, args),
        Under::Valgrind => run_valgrind(exe, args)?,
    };
    Some(run)
}

/// Runs `cache_read <mode> <paths>` and returns its dump, without the closing summary; fails
/// unless every check in the program held.
fn cache_read(exe: &Path, mode: &str, paths: &[PathBuf], under: Under) -> Option<String> {
    let mut args = vec![mode.to_owned()];
    args.extend(paths.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_under(exe, &args, under)?;
    let d = run.describe();
    run.assert_success("cache_read.c");
    assert!(run.has_line("cache_read: OK"), "{d}");
    assert_eq!(
        run.number("misaligned"),
        0,
        "payload data not 64-byte aligned\n{d}"
    );
    assert_eq!(
        run.number("bad_topics"),
        0,
        "topics not NUL-terminated\n{d}"
    );
    let dump = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with("misaligned=") && !l.starts_with("cache_read:"))
        .fold(String::new(), |s, l| s + l + "\n");
    Some(dump)
}

/// Asserts two dumps are the same, showing the first line where they differ.
#[track_caller]
fn assert_dump(c: &str, want: &str, what: &str) {
    if c == want {
        return;
    }
    let at = c
        .lines()
        .zip(want.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| c.lines().count().min(want.lines().count()));
    panic!(
        "{what}: C and Rust differ at line {at}:\n C:    {:?}\n want: {:?}\n--- C ---\n{c}--- want ---\n{want}",
        c.lines().nth(at),
        want.lines().nth(at)
    );
}

// ---- the caches ----------------------------------------------------------------------------------

/// The main cache: six frames, one of them 20,000 particles (a quarter of a MiB of xyz).
struct Written {
    path: PathBuf,
    specs: Vec<Spec>,
    ends: Vec<u64>,
}

fn main_cache(dir: &TestDir) -> Written {
    let path = dir.join("frames.hlcache");
    let mut specs = specs(6, 40);
    if let Data::F32(xyz, _) = &mut specs[3].payloads[0] {
        *xyz = (0..3 * 20_000).map(|k| k as f32 * 0.5 - 7.0).collect();
    }
    if let Data::U32(ids, _) = &mut specs[3].payloads[1] {
        *ids = (0..20_000).collect();
    }
    let ends = write_cache(&path, &specs);
    Written { path, specs, ends }
}

/// The intact cache and its dump as written.
fn intact(w: &Written) -> (Vec<PathBuf>, String) {
    (
        vec![w.path.clone()],
        written_dump(0, &w.specs, w.specs.len(), "0 0 0 0 0"),
    )
}

/// The main cache cut inside its last frame (and once at its start): the good prefix, then a
/// truncation at the last frame.
fn torn(dir: &TestDir, w: &Written) -> (Vec<PathBuf>, String) {
    let full = std::fs::read(&w.path).unwrap();
    let last = w.ends[w.ends.len() - 2];
    let end = w.ends[w.ends.len() - 1];
    let cuts = [last, last + 1, last + 31, last + 100, end - 1];
    let mut paths = Vec::new();
    let mut want = String::new();
    for (k, &cut) in cuts.iter().enumerate() {
        let path = dir.join(format!("torn-{cut}.hlcache"));
        std::fs::write(&path, &full[..cut as usize]).unwrap();
        paths.push(path);
        let damage = if cut == last {
            "0 0 0 0 0".to_owned()
        } else {
            format!("1 {last} {cut} 1 0")
        };
        want += &written_dump(k, &w.specs, w.specs.len() - 1, &damage);
    }
    (paths, want)
}

/// The main cache with one byte of frame 3's payload 1 (its ids) flipped, and what each mode
/// must print for it.
fn corrupt(dir: &TestDir, w: &Written) -> (PathBuf, [(&'static str, String); 3]) {
    let mut bytes = std::fs::read(&w.path).unwrap();
    let (_, _, _, ids) = w.specs[3].payloads[1].expected();
    let at = bytes
        .windows(ids.len())
        .position(|win| win == ids.as_slice())
        .expect("frame 3's ids are in the file");
    bytes[at + 5] ^= 0x40;
    let path = dir.join("corrupt.hlcache");
    std::fs::write(&path, &bytes).unwrap();
    let frame3 = w.ends[2];
    let n = w.specs.len();

    let mut read = format!("file 0\nframes {n}\n");
    for (i, s) in w.specs.iter().enumerate() {
        if i == 3 {
            let _ = writeln!(
                read,
                "frame 3 HL_STATUS_FAILED hl_cache_frame: frame 3 (at byte {frame3}) is corrupt: \
                 payload 1 does not match its checksum"
            );
        } else {
            read += &written_frame(i, s);
        }
    }
    read += "damage 0 0 0 0 0\n";

    let mut damaged_ids = ids.clone();
    damaged_ids[5] ^= 0x40;
    let scrub = written_dump(0, &w.specs, n, "0 0 0 0 0").replace(
        &format!("{:016x}", fnv1a64(&ids)),
        &format!("{:016x}", fnv1a64(&damaged_ids)),
    );

    let verify = written_dump(0, &w.specs, 3, &format!("1 {frame3} {} 3 1", bytes.len()))
        .replace("file 0\n", "file 0\nverified 3\n");
    (path, [("read", read), ("scrub", scrub), ("verify", verify)])
}

/// The main cache, then the torn and corrupt ones: every mode through one program.
fn reads_back_everything(name: &str, under: Under) {
    let dir = test_dir!(name);
    let exe = build_c(&dir, under);
    let w = main_cache(&dir);

    let (paths, want) = intact(&w);
    for mode in ["read", "scrub", "verify"] {
        let Some(c) = cache_read(&exe, mode, &paths, under) else {
            return;
        };
        let want = if mode == "verify" {
            want.replace("file 0\n", &format!("file 0\nverified {}\n", w.specs.len()))
        } else {
            want.clone()
        };
        assert_dump(&c, &want, &format!("the intact cache, {mode}"));
    }

    let (paths, want) = torn(&dir, &w);
    let c = cache_read(&exe, "read", &paths, under).unwrap();
    assert_dump(&c, &want, "the torn caches");

    let (path, modes) = corrupt(&dir, &w);
    for (mode, want) in modes {
        let c = cache_read(&exe, mode, std::slice::from_ref(&path), under).unwrap();
        assert_dump(&c, &want, &format!("the corrupt cache, {mode}"));
    }
}

#[test]
fn c_reads_back_what_rust_wrote_bit_for_bit_and_stops_at_torn_and_corrupt_frames() {
    reads_back_everything("cache-c", Under::Native);
}

#[test]
fn the_c_reader_is_clean_under_address_and_undefined_behaviour_sanitizers() {
    reads_back_everything("cache-c-asan", Under::Sanitizers);
}

#[test]
fn the_c_reader_is_clean_under_valgrind() {
    reads_back_everything("cache-c-valgrind", Under::Valgrind);
}

// ---- damage at every offset ----------------------------------------------------------------------

/// A small cache: three frames of a few hundred bytes each.
fn small_cache(dir: &TestDir) -> Written {
    let path = dir.join("small.hlcache");
    let specs = specs(3, 2);
    let ends = write_cache(&path, &specs);
    Written { path, specs, ends }
}

/// Splits a dump into its files' blocks.
fn blocks(dump: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in dump.lines() {
        if line.starts_with("file ") {
            out.push(String::new());
        }
        let last = out.last_mut().expect("a dump starts with `file 0`");
        *last += line;
        last.push('\n');
    }
    out
}

fn every_offset(name: &str, under: Under) {
    let dir = test_dir!(name);
    let exe = build_c(&dir, under);
    let w = small_cache(&dir);
    let full = std::fs::read(&w.path).unwrap();
    // The frame that byte `at` belongs to (`None` in the file header).
    let frame_of = |at: usize| {
        let at = at as u64;
        (at >= 64)
            .then(|| w.ends.iter().position(|&end| at < end))
            .flatten()
    };

    // Cut at every length: the whole frames before the cut read as written.
    let cut_dir = dir.join("cut");
    std::fs::create_dir_all(&cut_dir).unwrap();
    let cuts: Vec<PathBuf> = (0..=full.len())
        .map(|len| {
            let path = cut_dir.join(format!("{len}.hlcache"));
            std::fs::write(&path, &full[..len]).unwrap();
            path
        })
        .collect();
    let c = cache_read(&exe, "read", &cuts, under).unwrap();
    let want: String = cuts
        .iter()
        .enumerate()
        .map(|(k, p)| rust_dump(k, p, "read"))
        .collect();
    assert_dump(&c, &want, "caches cut at every offset");
    for (len, block) in blocks(&c).iter().enumerate() {
        if len < 64 {
            assert!(
                block.contains("open HL_STATUS_INVALID_ARG"),
                "cut at {len}:\n{block}"
            );
            continue;
        }
        let whole = w.ends.iter().filter(|&&end| end <= len as u64).count();
        let at_a_boundary = len == 64 || w.ends.contains(&(len as u64));
        let damage = if at_a_boundary {
            "0 0 0 0 0".to_owned()
        } else {
            let last_good_end = if whole == 0 { 64 } else { w.ends[whole - 1] };
            format!("1 {last_good_end} {len} 1 0")
        };
        let good = written_dump(len, &w.specs, whole, &damage);
        assert_eq!(block, &good, "cut at {len}");
    }

    // A bit flipped at every offset: the frames before the damaged one read as written, and
    // nothing crashes.
    let flip_dir = dir.join("flip");
    std::fs::create_dir_all(&flip_dir).unwrap();
    let flips: Vec<PathBuf> = (0..full.len())
        .map(|at| {
            let mut bytes = full.clone();
            bytes[at] ^= 0x10;
            let path = flip_dir.join(format!("{at}.hlcache"));
            std::fs::write(&path, &bytes).unwrap();
            path
        })
        .collect();
    for mode in ["read", "verify"] {
        let c = cache_read(&exe, mode, &flips, under).unwrap();
        let want: String = flips
            .iter()
            .enumerate()
            .map(|(k, p)| rust_dump(k, p, mode))
            .collect();
        assert_dump(
            &c,
            &want,
            &format!("caches with a bit flipped at every offset, {mode}"),
        );
        for (at, block) in blocks(&c).iter().enumerate() {
            let Some(damaged) = frame_of(at) else {
                continue; // the file header: not a cache, or a reserved byte
            };
            for (i, s) in w.specs.iter().enumerate().take(damaged) {
                assert!(
                    block.contains(&written_frame(i, s)),
                    "flip at {at} (in frame {damaged}): frame {i} must read as written\n{block}"
                );
            }
        }
    }
}

#[test]
fn a_cache_cut_or_corrupted_at_every_offset_reads_back_its_good_prefix_from_c() {
    every_offset("cache-c-every-offset", Under::Native);
}

#[test]
fn every_offset_is_clean_under_address_and_undefined_behaviour_sanitizers() {
    every_offset("cache-c-every-offset-asan", Under::Sanitizers);
}

// ---- bad input, threads ----------------------------------------------------------------------------

/// The CRC-32C of the cache format (reflected polynomial 0x82F63B78).
fn crc32c(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |mut crc, &b| {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
        crc
    })
}

fn bad_input(name: &str, under: Under) {
    let dir = test_dir!(name);
    let exe = build_c(&dir, under);
    let w = small_cache(&dir);
    let text = dir.write("notes.txt", &"not a cache, just some text\n".repeat(10));
    let missing = dir.join("missing.hlcache");
    // A valid header of format 2: a cache from a newer hostloop.
    let mut header = [0u8; 64];
    header[..8].copy_from_slice(b"HLCACH\r\n");
    header[8..10].copy_from_slice(&2u16.to_le_bytes());
    let crc = crc32c(&header[..12]);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    let newer = dir.join("newer.hlcache");
    std::fs::write(&newer, header).unwrap();
    let paths = [&w.path, &text, &missing, &newer].map(|p| p.display().to_string());
    let mut args = vec!["bad"];
    args.extend(paths.iter().map(String::as_str));
    let Some(run) = run_under(&exe, &args, under) else {
        return;
    };
    run.assert_success("cache_read.c bad");
    assert!(run.has_line("bad input checked"), "{}", run.describe());
    assert!(run.has_line("cache_read: OK"), "{}", run.describe());
}

#[test]
fn every_bad_input_of_the_c_reader_is_its_documented_status() {
    bad_input("cache-c-bad", Under::Native);
}

#[test]
fn bad_input_is_clean_under_address_and_undefined_behaviour_sanitizers() {
    bad_input("cache-c-bad-asan", Under::Sanitizers);
}

#[test]
fn bad_input_is_clean_under_valgrind() {
    bad_input("cache-c-bad-valgrind", Under::Valgrind);
}

fn threads(name: &str, under: Under) {
    let dir = test_dir!(name);
    let exe = build_c(&dir, under);
    let w = main_cache(&dir);
    let path = w.path.display().to_string();
    let Some(run) = run_under(&exe, &["threads", &path], under) else {
        return;
    };
    run.assert_success("cache_read.c threads");
    assert!(run.has_line("threads=4 agree=1"), "{}", run.describe());
    assert!(run.has_line("cache_read: OK"), "{}", run.describe());
}

#[test]
fn threads_read_one_cache_at_once_while_another_verifies_it() {
    threads("cache-c-threads", Under::Native);
}

#[test]
fn threads_reading_at_once_are_clean_under_address_and_undefined_behaviour_sanitizers() {
    threads("cache-c-threads-asan", Under::Sanitizers);
}

// ---- C++ -------------------------------------------------------------------------------------------

fn hpp(name: &str, under: Under) {
    let dir = test_dir!(name);
    let flags: &[&str] = match under {
        Under::Sanitizers => SANITIZER_FLAGS,
        _ => &[],
    };
    let exe = Build::new(Lang::Cxx)
        .flags(flags)
        .source(cpp_dir().join("cache_hpp.cpp"))
        .compile(dir.join("cache_hpp"));
    let w = main_cache(&dir);
    let (paths, want) = intact(&w);
    let cache = paths[0].display().to_string();
    let missing = dir.join("missing.hlcache").display().to_string();
    let run = run_under(&exe, &[&cache, &missing], under).unwrap();
    run.assert_success("cache_hpp.cpp");
    let want = want.replace("file 0\n", "") + "cache_hpp: OK\n";
    assert_dump(&run.stdout, &want, "hostloop::Cache");
}

#[test]
fn hostloop_hpp_cache_reads_what_rust_wrote_and_throws_statuses() {
    hpp("cache-hpp", Under::Native);
}

#[test]
fn hostloop_hpp_cache_is_clean_under_address_and_undefined_behaviour_sanitizers() {
    hpp("cache-hpp-asan", Under::Sanitizers);
}
