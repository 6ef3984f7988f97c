//! The host sink (topic + bytes or typed arrays, on the main thread) and host events.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{pump_until, runtime};
use hostloop::{ArrayView, ElemType, Error, Event, EventFilter, EventKind, OwnedPayload, Payload};

#[derive(Debug, PartialEq)]
enum Seen {
    Bytes(String, Vec<u8>),
    Array(String, ElemType, usize, usize, Vec<f32>),
}

fn recording_sink(rt: &hostloop::Runtime) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let main_id = std::thread::current().id();
    let s = seen.clone();
    rt.set_sink(Some(Box::new(move |m| {
        assert_eq!(std::thread::current().id(), main_id, "sink runs on main");
        let entry = match m.payload {
            Payload::Bytes(b) => Seen::Bytes(m.topic.to_owned(), b.to_vec()),
            Payload::Array(a) => {
                let floats = (0..a.count())
                    .flat_map(|r| {
                        let rec = &a.bytes()[r * a.stride()..];
                        (0..a.components()).map(move |c| {
                            f32::from_ne_bytes(rec[c * 4..c * 4 + 4].try_into().unwrap())
                        })
                    })
                    .collect();
                Seen::Array(
                    m.topic.to_owned(),
                    a.elem(),
                    a.components(),
                    a.count(),
                    floats,
                )
            }
        };
        s.lock().unwrap().push(entry);
    })));
    seen
}

#[test]
fn jobs_reach_the_host_sink_on_the_main_thread() {
    let rt = runtime(2);
    let seen = recording_sink(&rt);
    rt.spawn(|ctx| {
        ctx.handle()
            .emit("status", OwnedPayload::Bytes(b"baked".to_vec()))?;
        ctx.handle().emit(
            "particles/positions",
            OwnedPayload::array(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], 3),
        )?;
        Ok(())
    })
    .unwrap();
    pump_until(rt.handle(), || seen.lock().unwrap().len() == 2);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            Seen::Bytes("status".into(), b"baked".to_vec()),
            Seen::Array(
                "particles/positions".into(),
                ElemType::F32,
                3,
                2,
                vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
            ),
        ]
    );
    assert_eq!(rt.stats().sink_messages, 2);
}

#[test]
fn main_emit_borrows_a_strided_view_without_copying() {
    let rt = runtime(1);
    let seen = recording_sink(&rt);
    #[repr(C)]
    struct Particle {
        pos: [f32; 3],
        id: u32,
    }
    let particles = [
        Particle {
            pos: [1.0, 2.0, 3.0],
            id: 7,
        },
        Particle {
            pos: [4.0, 5.0, 6.0],
            id: 8,
        },
    ];
    let ptr_seen = Arc::new(Mutex::new(0usize));
    let p = ptr_seen.clone();
    rt.set_sink(Some(Box::new(move |m| {
        if let Payload::Array(a) = m.payload {
            *p.lock().unwrap() = a.bytes().as_ptr() as usize;
        }
    })));
    // SAFETY: `Particle` is repr(C) of f32s and a u32 (no padding), so all its bytes are initialised.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            particles.as_ptr().cast::<u8>(),
            std::mem::size_of_val(&particles),
        )
    };
    let view =
        ArrayView::strided(ElemType::F32, 3, 2, std::mem::size_of::<Particle>(), bytes).unwrap();
    let r = rt
        .call_on_main(move |main| main.emit("p", Payload::Array(view)))
        .unwrap();
    assert!(r.unwrap());
    assert_eq!(
        *ptr_seen.lock().unwrap(),
        particles.as_ptr() as usize,
        "zero copy"
    );
    assert!(particles.iter().all(|p| p.id > 0));
    drop(seen);
}

#[test]
fn strided_views_that_do_not_fit_are_rejected() {
    let bytes = [0u8; 16];
    assert!(matches!(
        ArrayView::strided(ElemType::F32, 3, 2, 12, &bytes),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ArrayView::strided(ElemType::F32, 3, 1, 8, &bytes),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        ArrayView::strided(ElemType::F64, 1, usize::MAX, 8, &bytes),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(
        ArrayView::strided(ElemType::F32, 2, 2, 8, &bytes)
            .unwrap()
            .count(),
        2
    );
}

#[test]
fn a_missing_sink_is_counted_and_emitting_from_inside_the_sink_is_reentrant() {
    let rt = runtime(1);
    assert!(!rt
        .call_on_main(|main| main.emit("a", Payload::Bytes(b"x")))
        .unwrap()
        .unwrap());
    assert_eq!(rt.stats().sink_dropped, 1);
    // A sink that emits again (through a nested main-thread call) gets `Reentrant`.
    let result = Arc::new(Mutex::new(None));
    let r = result.clone();
    let h = rt.handle().clone();
    rt.set_sink(Some(Box::new(move |_| {
        let nested = h.call_on_main(|main| main.emit("again", Payload::Bytes(b"y")));
        *r.lock().unwrap() = Some(nested);
    })));
    assert!(rt
        .call_on_main(|main| main.emit("first", Payload::Bytes(b"x")))
        .unwrap()
        .unwrap());
    let nested = result.lock().unwrap().take().unwrap().unwrap();
    assert!(matches!(nested, Err(Error::Reentrant)), "{nested:?}");
    assert_eq!(rt.stats().sink_messages, 1);
}

#[test]
fn high_frequency_events_coalesce_between_pumps() {
    let rt = runtime(1);
    let frames = Arc::new(Mutex::new(Vec::new()));
    let other = Arc::new(AtomicUsize::new(0));
    {
        let frames = frames.clone();
        rt.subscribe(EventFilter::Kind(EventKind::FrameChanged), move |e, _| {
            if let Event::FrameChanged { frame } = e {
                frames.lock().unwrap().push(*frame);
            }
        });
        let other = other.clone();
        rt.subscribe(EventFilter::All, move |_, _| {
            other.fetch_add(1, Ordering::Relaxed);
        });
    }
    for f in 0..1_000 {
        rt.post_event(Event::FrameChanged { frame: f as f64 })
            .unwrap();
    }
    rt.post_event(Event::SceneSaved {
        path: "shot.ma".into(),
    })
    .unwrap();
    for i in 0..100u8 {
        rt.post_event(Event::Custom {
            topic: "drag".into(),
            bytes: vec![i],
            coalesce: true,
        })
        .unwrap();
    }
    rt.pump(Duration::from_secs(10)).unwrap();
    assert_eq!(*frames.lock().unwrap(), vec![999.0]);
    // frame (1, coalesced) + saved (1) + drag (1, coalesced)
    assert_eq!(other.load(Ordering::Relaxed), 3);
}

#[test]
fn background_subscribers_get_events_without_a_pump_and_unsubscribe_works() {
    let rt = runtime(1);
    let (sub, rx) = rt.subscribe_channel(EventFilter::Topic("cache".into()), 2);
    rt.post_event(Event::Custom {
        topic: "cache".into(),
        bytes: vec![1],
        coalesce: false,
    })
    .unwrap();
    rt.post_event(Event::Custom {
        topic: "other".into(),
        bytes: vec![2],
        coalesce: false,
    })
    .unwrap();
    rt.post_event(Event::Custom {
        topic: "cache".into(),
        bytes: vec![3],
        coalesce: false,
    })
    .unwrap();
    rt.post_event(Event::Custom {
        topic: "cache".into(),
        bytes: vec![4],
        coalesce: false,
    })
    .unwrap();
    let got: Vec<_> = rx.try_iter().collect();
    assert_eq!(
        got.len(),
        2,
        "capacity 2: the third matching event is dropped"
    );
    assert_eq!(rt.stats().events_dropped, 1);
    assert!(rt.unsubscribe(sub));
    assert!(!rt.unsubscribe(sub));
    rt.post_event(Event::Custom {
        topic: "cache".into(),
        bytes: vec![5],
        coalesce: false,
    })
    .unwrap();
    assert!(rx.try_recv().is_err());
}

#[test]
fn a_panicking_subscriber_is_isolated() {
    let rt = runtime(1);
    let ok = Arc::new(AtomicUsize::new(0));
    rt.subscribe(EventFilter::All, |_, _| panic!("subscriber boom"));
    {
        let ok = ok.clone();
        rt.subscribe(EventFilter::All, move |_, _| {
            ok.fetch_add(1, Ordering::Relaxed);
        });
    }
    rt.post_event(Event::PlaybackStarted).unwrap();
    rt.pump(Duration::from_secs(10)).unwrap();
    assert_eq!(ok.load(Ordering::Relaxed), 1);
    assert_eq!(rt.stats().main_items_panicked, 1);
}

#[test]
fn a_sink_that_removes_itself_is_not_put_back() {
    let rt = runtime(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let h = rt.handle().clone();
    rt.set_sink(Some(Box::new(move |_| {
        c.fetch_add(1, Ordering::SeqCst);
        h.set_sink(None);
    })));
    for _ in 0..2 {
        rt.call_on_main(|main| main.emit("t", Payload::Bytes(b"")))
            .unwrap()
            .unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(rt.stats().sink_dropped, 1);
}

#[test]
fn a_backlog_of_events_is_delivered_over_many_budgeted_pumps_in_order() {
    const N: usize = 200_000;
    let rt = runtime(1);
    let seen = Arc::new(Mutex::new(Vec::with_capacity(N)));
    {
        let seen = seen.clone();
        rt.subscribe(EventFilter::Topic("tick".into()), move |e, _| {
            if let Event::Custom { bytes, .. } = e {
                seen.lock()
                    .unwrap()
                    .push(u32::from_le_bytes(bytes[..].try_into().unwrap()));
            }
        });
    }
    for i in 0..N as u32 {
        rt.post_event(Event::Custom {
            topic: "tick".into(),
            bytes: i.to_le_bytes().to_vec(),
            coalesce: false,
        })
        .unwrap();
    }
    assert_eq!(
        rt.stats().queued.main,
        N,
        "each pending event is one queued item"
    );

    // A pump with no budget runs exactly one item: one event.
    let one = rt.pump(Duration::ZERO).unwrap();
    assert_eq!((one.ran, one.remaining), (1, N - 1));
    assert_eq!(seen.lock().unwrap().len(), 1);

    let start = std::time::Instant::now();
    let mut pumps = 1;
    let mut delivered = 1;
    while delivered < N {
        let before = seen.lock().unwrap().len();
        let report = rt.pump(Duration::from_millis(2)).unwrap();
        pumps += 1;
        let after = seen.lock().unwrap().len();
        assert_eq!(
            report.ran,
            after - before,
            "each event counts as one item run"
        );
        assert_eq!(report.remaining, N - after);
        assert_eq!(rt.stats().queued.main, N - after);
        delivered = after;
        assert!(start.elapsed() < common::HANG, "events still pending: hang");
    }
    assert!(pumps > 2, "a 200k backlog took {pumps} pumps");
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().copied().eq(0..N as u32),
        "delivered out of order"
    );
    assert_eq!(rt.stats().queued.main, 0);
}

#[test]
fn an_event_backlog_does_not_hold_back_items_posted_after_it_started() {
    let rt = runtime(1);
    let order = Arc::new(Mutex::new(Vec::new()));
    {
        let order = order.clone();
        rt.subscribe(EventFilter::All, move |e, _| {
            if let Event::Custom { bytes, .. } = e {
                order.lock().unwrap().push(bytes[0]);
            }
        });
    }
    let post = |b: u8| {
        rt.post_event(Event::Custom {
            topic: "t".into(),
            bytes: vec![b],
            coalesce: false,
        })
        .unwrap()
    };
    post(1);
    post(2);
    rt.pump(Duration::ZERO).unwrap(); // delivers 1; 2 was pending when delivery started
    let o = order.clone();
    rt.post(move |_| o.lock().unwrap().push(100)).unwrap();
    post(3); // pending after delivery started: behind the item
    rt.pump(Duration::from_secs(10)).unwrap();
    assert_eq!(*order.lock().unwrap(), vec![1, 2, 100, 3]);
}
