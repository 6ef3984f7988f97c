//! The latest-frame triple buffer under real threads (the protocol itself is loom-checked).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hostloop::latest::latest;

#[test]
fn the_reader_never_sees_a_torn_or_older_frame_and_ends_on_the_last() {
    const FRAMES: u64 = 200_000;
    // A frame big enough that a torn read would show: every element holds the frame number.
    let (mut writer, mut reader) = latest(vec![0u64; 64]);
    let done = Arc::new(AtomicBool::new(false));
    let w = {
        let done = done.clone();
        std::thread::spawn(move || {
            for n in 1..=FRAMES {
                writer.write(|f| f.iter_mut().for_each(|x| *x = n));
            }
            done.store(true, Ordering::Release);
        })
    };
    let (mut last, mut seen) = (0u64, 0u64);
    loop {
        let finished = done.load(Ordering::Acquire);
        if let Some(frame) = reader.read() {
            let n = frame[0];
            assert!(frame.iter().all(|&x| x == n), "torn frame {n}");
            assert!(n > last, "frame {n} after frame {last}");
            last = n;
            seen += 1;
        }
        if finished && !reader.fresh() {
            break;
        }
    }
    w.join().unwrap();
    assert_eq!(last, FRAMES);
    assert!((1..=FRAMES).contains(&seen));
}

#[test]
fn buffers_are_reused_not_reallocated() {
    let (mut writer, mut reader) = latest(Vec::<u8>::with_capacity(1024));
    let mut ptrs = std::collections::HashSet::new();
    for i in 0..100u8 {
        writer.write(|f| {
            f.clear();
            f.extend_from_slice(&[i; 1000]);
        });
        let f = reader.read().expect("fresh frame");
        assert_eq!(f[0], i);
        ptrs.insert(f.as_ptr() as usize);
    }
    assert_eq!(ptrs.len(), 3, "three buffers, allocated once");
}
