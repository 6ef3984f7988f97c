//! The frame cache: what is written reads back bit for bit, by memory map; damage anywhere in a
//! small cache — truncation at every length, a flipped bit at every offset — never panics and
//! leaves exactly the good prefix; a writer reopened on a torn cache continues after its last
//! good frame.

use std::path::PathBuf;

use hostloop::cache::{Cache, CacheError, CacheWriter, DamageReason, MAX_TOPIC};
use hostloop::{ArrayView, ElemType, Payload};

/// A fresh directory for one test, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("hl-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What one frame holds, owned, for comparing a read-back frame with what was written.
#[derive(Debug, Clone, PartialEq)]
struct Owned {
    step: u64,
    topic: String,
    payloads: Vec<(Option<ElemType>, usize, usize, Vec<u8>)>,
}

fn owned(frame: &hostloop::cache::Frame<'_>) -> Owned {
    Owned {
        step: frame.step(),
        topic: frame.topic().to_string(),
        payloads: (0..frame.len())
            .map(|i| match frame.payload(i).unwrap() {
                Payload::Bytes(b) => (None, 1, b.len(), b.to_vec()),
                Payload::Array(a) => {
                    assert_eq!(a.stride(), a.components() * a.elem().size(), "packed");
                    (
                        Some(a.elem()),
                        a.components(),
                        a.count(),
                        a.bytes().to_vec(),
                    )
                }
            })
            .collect(),
    }
}

fn bytes_of<T: Copy>(v: &[T]) -> Vec<u8> {
    // SAFETY: the test uses only plain number types.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
        .to_vec()
}

/// Writes a small cache of varied frames; returns what each frame should read back as, and
/// each frame's byte range in the file.
fn write_varied(path: &std::path::Path, frames: u64) -> Vec<Owned> {
    let mut w = CacheWriter::create(path).unwrap();
    let mut want = Vec::new();
    for step in 0..frames {
        let xyz: Vec<f32> = (0..3 * (step as usize % 4 + 1))
            .map(|i| i as f32 * 0.5 + step as f32)
            .collect();
        let ids: Vec<u64> = (0..step % 3 + 1).map(|i| i * 1000 + step).collect();
        let note = format!("step {step}");
        let topic = if step % 2 == 0 {
            "particles/positions"
        } else {
            "crowd/agents"
        };
        w.write(
            step * 10,
            topic,
            &[
                Payload::Array(ArrayView::packed(&xyz, 3)),
                Payload::Bytes(note.as_bytes()),
                Payload::Array(ArrayView::packed(&ids, 1)),
            ],
        )
        .unwrap();
        want.push(Owned {
            step: step * 10,
            topic: topic.to_string(),
            payloads: vec![
                (Some(ElemType::F32), 3, xyz.len() / 3, bytes_of(&xyz)),
                (None, 1, note.len(), note.into_bytes()),
                (Some(ElemType::U64), 1, ids.len(), bytes_of(&ids)),
            ],
        });
    }
    w.finish().unwrap();
    want
}

/// Byte ranges [start, end) of each frame in a cache file written by `write_varied`.
fn frame_ranges(path: &std::path::Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let mut at = 64;
    let mut out = Vec::new();
    while at < bytes.len() {
        let len = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap()) as usize;
        out.push((at, at + len));
        at += len;
    }
    out
}

#[test]
fn frames_read_back_bit_for_bit_and_aligned() {
    let dir = Dir::new("roundtrip");
    let path = dir.file("c.hlcache");
    let want = write_varied(&path, 40);
    let cache = Cache::open(&path).unwrap();
    assert!(cache.damage().is_none(), "{:?}", cache.damage());
    assert_eq!(cache.len(), want.len());
    for (i, w) in want.iter().enumerate() {
        let f = cache.frame(i).unwrap();
        assert_eq!(&owned(&f), w, "frame {i}");
        let xyz = f.array::<f32>(0).expect("an f32 array, aligned in the map");
        assert_eq!(xyz.as_ptr() as usize % 64, 0);
        assert_eq!(bytes_of(xyz), w.payloads[0].3);
        assert!(
            f.array::<u64>(0).is_none(),
            "the wrong element type is refused"
        );
        assert_eq!(f.array::<u64>(2).unwrap().len(), w.payloads[2].2);
        assert_eq!(f.message(1).unwrap().topic, w.topic);
        assert!(f.payload(3).is_none());
        assert_eq!(cache.step(i), Some(w.step));
    }
    assert_eq!(cache.find_step(130), Some(13));
    assert_eq!(cache.find_step(131), None);
    assert_eq!(cache.iter().filter(|f| f.is_ok()).count(), want.len());
    assert!(matches!(
        cache.frame(40),
        Err(CacheError::NoSuchFrame { index: 40, len: 40 })
    ));
}

#[test]
fn a_strided_array_is_packed_on_the_way_in() {
    let dir = Dir::new("strided");
    let path = dir.file("c.hlcache");
    // Records of xyz plus one padding float: stride 16 bytes, 12 of them data.
    let raw: Vec<f32> = (0..40).map(|i| i as f32).collect();
    let raw = bytes_of(&raw);
    let view = ArrayView::strided(ElemType::F32, 3, 10, 16, &raw).unwrap();
    let mut w = CacheWriter::create(&path).unwrap();
    w.write(7, "p", &[Payload::Array(view)]).unwrap();
    drop(w);
    let cache = Cache::open(&path).unwrap();
    let f = cache.frame(0).unwrap();
    let packed: Vec<f32> = (0..10)
        .flat_map(|r| (0..3).map(move |c| (r * 4 + c) as f32))
        .collect();
    assert_eq!(f.array::<f32>(0).unwrap(), packed.as_slice());
}

#[test]
fn a_cache_cut_at_every_length_reads_its_whole_frames() {
    let dir = Dir::new("truncate");
    let path = dir.file("c.hlcache");
    let want = write_varied(&path, 6);
    let ranges = frame_ranges(&path);
    let full = std::fs::read(&path).unwrap();
    let cut = dir.file("cut.hlcache");
    for len in 0..=full.len() {
        std::fs::write(&cut, &full[..len]).unwrap();
        match Cache::open(&cut) {
            Err(CacheError::NotACache { .. }) => assert!(len < 64, "len {len}"),
            Err(e) => panic!("len {len}: {e}"),
            Ok(cache) => {
                let whole = ranges.iter().filter(|r| r.1 <= len).count();
                assert_eq!(cache.len(), whole, "len {len}");
                for (i, w) in want.iter().take(whole).enumerate() {
                    assert_eq!(&owned(&cache.frame(i).unwrap()), w, "len {len} frame {i}");
                }
                let boundary = len == 64 || ranges.iter().any(|r| r.1 == len);
                match cache.damage() {
                    None => assert!(boundary, "len {len}: a torn frame went unreported"),
                    Some(d) => {
                        assert!(!boundary, "len {len}: {d}");
                        assert_eq!(d.reason, DamageReason::Truncated, "len {len}");
                        assert_eq!(d.offset as usize, ranges[whole].0);
                        assert_eq!(d.file_len as usize, len);
                    }
                }
            }
        }
    }
}

#[test]
fn a_flipped_bit_at_every_offset_leaves_exactly_the_good_prefix() {
    let dir = Dir::new("corrupt");
    let path = dir.file("c.hlcache");
    let want = write_varied(&path, 4);
    let ranges = frame_ranges(&path);
    let full = std::fs::read(&path).unwrap();
    // Which bytes a checksum covers: the file header's first 16, each frame's header and its
    // checksum, each payload's data. Flipping one of those must cut the cache at that frame;
    // flipping padding may not.
    let mut covered = vec![false; full.len()];
    covered[..16].fill(true);
    for &(start, _) in &ranges {
        let payloads = u32::from_le_bytes(full[start + 4..start + 8].try_into().unwrap()) as usize;
        let topic = u16::from_le_bytes(full[start + 24..start + 26].try_into().unwrap()) as usize;
        covered[start..start + 32 + 32 * payloads + topic + 4].fill(true);
        for p in 0..payloads {
            let d = start + 32 + 32 * p;
            let elem = u32::from_le_bytes(full[d..d + 4].try_into().unwrap());
            let comps = u32::from_le_bytes(full[d + 4..d + 8].try_into().unwrap()) as usize;
            let count = u64::from_le_bytes(full[d + 8..d + 16].try_into().unwrap()) as usize;
            let off = u64::from_le_bytes(full[d + 16..d + 24].try_into().unwrap()) as usize;
            let size = match elem {
                0 | 1 => 1,
                2 | 3 | 6 => 4,
                _ => 8,
            };
            covered[start + off..start + off + count * comps * size].fill(true);
        }
    }
    let bad = dir.file("bad.hlcache");
    let mut damaged = full.clone();
    for at in 0..full.len() {
        damaged[at] ^= 0x10;
        std::fs::write(&bad, &damaged).unwrap();
        damaged[at] = full[at];
        let hit = ranges.iter().position(|r| r.0 <= at && at < r.1);
        let mut cache = match Cache::open(&bad) {
            Ok(c) => c,
            Err(CacheError::NotACache { .. } | CacheError::UnsupportedFormat { .. }) => {
                assert!(
                    at < 16,
                    "offset {at}: a frame's damage rejected the whole cache"
                );
                continue;
            }
            Err(e) => panic!("offset {at}: {e}"),
        };
        assert!(
            at >= 16 || !covered[at],
            "offset {at}: a bad file header was accepted"
        );
        // Opening checks headers; reading checks data. Either way, what reads is the prefix.
        let left = cache.verify();
        for (i, w) in want.iter().take(left).enumerate() {
            assert_eq!(&owned(&cache.frame(i).unwrap()), w, "offset {at} frame {i}");
        }
        match hit {
            Some(frame) if covered[at] => {
                assert_eq!(left, frame, "offset {at}: not cut at the damaged frame");
                let d = cache.damage().expect("the damage is reported");
                assert_eq!(d.offset as usize, ranges[frame].0, "offset {at}");
            }
            _ => assert!(left >= hit.unwrap_or(0), "offset {at}"),
        }
    }
}

#[test]
fn corrupt_data_is_an_error_when_read_and_the_other_frames_still_read() {
    let dir = Dir::new("corrupt-data");
    let path = dir.file("c.hlcache");
    let want = write_varied(&path, 3);
    let ranges = frame_ranges(&path);
    let mut bytes = std::fs::read(&path).unwrap();
    // The last byte of frame 1's last payload, inside its data.
    let start = ranges[1].0;
    let d = start + 32 + 32 * 2;
    let off = u64::from_le_bytes(bytes[d + 16..d + 24].try_into().unwrap()) as usize;
    bytes[start + off] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let cache = Cache::open(&path).unwrap();
    assert_eq!(cache.len(), 3, "headers are intact: every frame is listed");
    match cache.frame(1) {
        Err(CacheError::Corrupt {
            index: 1, payload, ..
        }) => assert_eq!(payload, 2),
        other => panic!("{other:?}"),
    }
    assert!(
        cache.frame_unverified(1).is_ok(),
        "scrubbing may still look"
    );
    assert_eq!(owned(&cache.frame(0).unwrap()), want[0]);
    assert_eq!(owned(&cache.frame(2).unwrap()), want[2]);
}

#[test]
fn a_writer_reopened_on_a_torn_cache_continues_after_its_last_good_frame() {
    let dir = Dir::new("append");
    let path = dir.file("c.hlcache");
    let want = write_varied(&path, 5);
    let ranges = frame_ranges(&path);
    // A writer killed in the middle of frame 4.
    let torn = ranges[4].0 + (ranges[4].1 - ranges[4].0) / 2;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(torn as u64).unwrap();
    drop(f);

    let (mut w, damage) = CacheWriter::append(&path).unwrap();
    let damage = damage.expect("the torn frame is reported");
    assert_eq!(damage.reason, DamageReason::Truncated);
    assert_eq!(damage.offset as usize, ranges[4].0);
    assert_eq!(w.frames(), 4);
    let more = [1.0f32, 2.0, 3.0];
    w.write(
        40,
        "particles/positions",
        &[Payload::Array(ArrayView::packed(&more, 3))],
    )
    .unwrap();
    w.finish().unwrap();

    let cache = Cache::open(&path).unwrap();
    assert!(cache.damage().is_none(), "{:?}", cache.damage());
    assert_eq!(cache.len(), 5);
    for (i, w) in want.iter().take(4).enumerate() {
        assert_eq!(&owned(&cache.frame(i).unwrap()), w);
    }
    assert_eq!(cache.frame(4).unwrap().array::<f32>(0).unwrap(), &more);

    // Appending to an intact cache, and to no file at all.
    let (mut w, damage) = CacheWriter::append(&path).unwrap();
    assert!(damage.is_none());
    w.write(50, "t", &[Payload::Bytes(b"x")]).unwrap();
    drop(w);
    assert_eq!(Cache::open(&path).unwrap().len(), 6);
    let fresh = dir.file("fresh.hlcache");
    let (w, damage) = CacheWriter::append(&fresh).unwrap();
    assert!(damage.is_none() && w.frames() == 0);
}

#[test]
fn bad_input_is_an_error_that_writes_nothing_and_touches_nothing() {
    let dir = Dir::new("bad");
    let path = dir.file("c.hlcache");
    let mut w = CacheWriter::create(&path).unwrap();
    let before = w.bytes_written();
    assert!(matches!(
        w.write(1, "t", &[]),
        Err(CacheError::InvalidFrame(_))
    ));
    let long = "x".repeat(MAX_TOPIC + 1);
    assert!(matches!(
        w.write(1, &long, &[Payload::Bytes(b"")]),
        Err(CacheError::InvalidFrame(_))
    ));
    assert_eq!(w.bytes_written(), before);
    w.write(1, "", &[Payload::Bytes(b"")]).unwrap();
    drop(w);
    let cache = Cache::open(&path).unwrap();
    assert_eq!(
        cache.len(),
        1,
        "an empty topic and an empty payload are a frame"
    );
    assert!(cache.damage().is_none());

    // Not a cache: opened, refused, and appending leaves it exactly as it was.
    let text = dir.file("notes.txt");
    let words = b"this is not a frame cache, but it is long enough to hold a header. ok?";
    std::fs::write(&text, words).unwrap();
    assert!(matches!(
        Cache::open(&text),
        Err(CacheError::NotACache { .. })
    ));
    assert!(matches!(
        CacheWriter::append(&text),
        Err(CacheError::NotACache { .. })
    ));
    assert_eq!(std::fs::read(&text).unwrap(), words);
    let missing = dir.file("missing.hlcache");
    let e = Cache::open(&missing).unwrap_err();
    assert!(matches!(e, CacheError::Io { .. }));
    assert!(e.to_string().contains("missing.hlcache"), "{e}");
}

#[test]
fn appending_through_a_step_cuts_the_frames_after_it() {
    let dir = Dir::new("through");
    let path = dir.file("c.hlcache");
    let want = write_varied(&path, 6); // steps 0, 10, .. 50
    let (mut w, damage) = CacheWriter::append_through(&path, 25).unwrap();
    assert!(damage.is_none());
    assert_eq!(w.frames(), 3, "steps 0, 10 and 20 are kept");
    w.write(30, "again", &[Payload::Bytes(b"x")]).unwrap();
    drop(w);
    let cache = Cache::open(&path).unwrap();
    assert_eq!(cache.len(), 4);
    for (i, w) in want.iter().take(3).enumerate() {
        assert_eq!(&owned(&cache.frame(i).unwrap()), w);
    }
    assert_eq!(cache.frame(3).unwrap().topic(), "again");
}
