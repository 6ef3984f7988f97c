//! A frame cache played back as a simulation: its frames reach the sink with their own topics
//! after a `<name>/step` message, seeking forwards and backwards shows the cached step at or
//! before the one asked for, and playing past the end stops with a reason.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hostloop::cache::{Cache, CacheWriter};
use hostloop::{ArrayView, Payload, Runtime, SimOptions};

mod common;

/// What the sink saw: (topic, step message's step or the first float of an array).
type Seen = Arc<Mutex<Vec<(String, f64)>>>;

#[test]
fn a_cache_plays_like_the_live_simulation() {
    // Under the target directory: a failed run leaves its file where `cargo clean` finds it.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cache-playback");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("frames.hlcache");
    // Steps 1..=20, except 7 (a thinned frame): each a positions array whose first value is
    // the step, and a bytes payload of another topic.
    let mut w = CacheWriter::create(&path).unwrap();
    for step in (1..=20u64).filter(|&s| s != 7) {
        let xyz = [step as f32, 0.0, 0.0];
        w.write(
            step,
            "particles/positions",
            &[Payload::Array(ArrayView::packed(&xyz, 3))],
        )
        .unwrap();
        w.write(step, "particles/note", &[Payload::Bytes(b"n")])
            .unwrap();
    }
    w.finish().unwrap();
    let cache = Arc::new(Cache::open(&path).unwrap());

    let rt = Runtime::builder().workers(1).build().unwrap();
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    rt.set_sink(Some(Box::new(move |m| {
        let v = match m.payload {
            Payload::Bytes(b) if m.topic == "particles/step" => {
                u64::from_le_bytes(b[..8].try_into().unwrap()) as f64
            }
            Payload::Array(a) => f32::from_le_bytes(a.bytes()[..4].try_into().unwrap()) as f64,
            _ => -1.0,
        };
        sink.lock().unwrap().push((m.topic.to_string(), v));
    })));
    let options = SimOptions {
        playing: false,
        ..SimOptions::default()
    };
    let play = rt.play_cache(cache, "particles", options).unwrap();
    let shown = |step: u64| {
        rt.run_until(
            || {
                seen.lock()
                    .unwrap()
                    .iter()
                    .any(|(t, v)| t == "particles/step" && *v == step as f64)
            },
            Duration::from_millis(5),
            common::HANG,
        )
        .unwrap();
        // Whatever followed that step message, up to the next one.
        rt.pump(Duration::from_millis(50)).unwrap();
        let got = std::mem::take(&mut *seen.lock().unwrap());
        let at = got
            .iter()
            .rposition(|(t, v)| t == "particles/step" && *v == step as f64)
            .unwrap();
        got[at + 1..]
            .iter()
            .take_while(|(t, _)| t != "particles/step")
            .cloned()
            .collect::<Vec<_>>()
    };
    // Step 0: no cached frame at or before it, only the step message.
    assert_eq!(shown(0), []);
    play.seek(10);
    assert_eq!(
        shown(10),
        [
            ("particles/positions".to_string(), 10.0),
            ("particles/note".to_string(), -1.0)
        ]
    );
    play.seek(7); // backwards, onto the thinned step: step 6's frames
    assert_eq!(shown(7)[0], ("particles/positions".to_string(), 6.0));
    play.seek(20);
    assert_eq!(shown(20)[0], ("particles/positions".to_string(), 20.0));
    // Past the end: the driver stops with where the cache ends.
    play.seek(21);
    let r = rt
        .run_until(
            || play.last_error().is_some(),
            Duration::from_millis(5),
            common::HANG,
        )
        .unwrap();
    assert!(r.finished);
    assert!(
        play.last_error()
            .unwrap()
            .contains("the cache ends at step 20"),
        "{:?}",
        play.last_error()
    );
    play.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
