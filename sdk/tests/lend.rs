//! Lending a sink payload past its call (`Message::lend`): the host keeps hostloop's own memory
//! instead of copying it, the producer writes its next frames elsewhere, and the memory is
//! released when the lease is dropped, on any thread.

mod common;

use std::sync::{Arc, Mutex};

use common::{pump_until, runtime};
use hostloop::{
    Lease, Main, Message, OwnedPayload, Payload, Shared, SimOptions, Simulation, StepContext,
};

/// What the sink kept of each message: its topic, its lease if lendable, its data's address.
type Kept = Arc<Mutex<Vec<(String, Option<Lease>, usize)>>>;

/// Keeps every lendable message's lease, and says which were not lendable.
fn lending_sink(rt: &hostloop::Runtime) -> Kept {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let k = kept.clone();
    rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
        let addr = match m.payload {
            Payload::Bytes(b) => b.as_ptr() as usize,
            Payload::Array(a) => a.bytes().as_ptr() as usize,
        };
        k.lock().unwrap().push((m.topic.to_owned(), m.lend(), addr));
    })));
    kept
}

#[test]
fn a_shared_frame_is_lent_at_its_own_address_and_copied_on_write_while_held() {
    let rt = runtime(1);
    let kept = lending_sink(&rt);
    let slot = Arc::new(Mutex::new(Some(Shared::new(vec![
        1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0,
    ]))));
    let at = slot.lock().unwrap().as_ref().unwrap().as_ptr() as usize;
    let s = slot.clone();
    rt.handle()
        .post(move |main: &mut Main<'_>| {
            let frame = s.lock().unwrap();
            assert!(main
                .emit_shared("frame", frame.as_ref().unwrap(), 3)
                .unwrap());
            // Borrowed payloads cannot be lent.
            main.emit("plain", Payload::Bytes(b"x")).unwrap();
        })
        .unwrap();
    pump_until(rt.handle(), || kept.lock().unwrap().len() == 2);
    let mut frame = slot.lock().unwrap().take().unwrap();
    let mut seen = kept.lock().unwrap();
    let (topic, lease, addr) = &seen[0];
    assert_eq!(topic, "frame");
    assert_eq!(*addr, at, "the sink saw the frame's own memory");
    let lease = lease.as_ref().expect("a shared frame is lendable");
    assert_eq!(
        lease.bytes().as_ptr() as usize,
        at,
        "the lease keeps that memory"
    );
    match lease.payload() {
        Payload::Array(a) => {
            assert_eq!((a.count(), a.components(), a.stride()), (2, 3, 12));
        }
        other => panic!("lent as {other:?}"),
    }
    assert!(seen[1].1.is_none(), "a borrowed payload was lent");
    assert!(frame.is_lent());

    // The producer writes its next frame: a copy, the lease's memory unchanged.
    frame[0] = 100.0;
    assert_ne!(frame.as_ptr() as usize, at);
    assert!(!frame.is_lent());
    let old: Vec<f32> = lease
        .bytes()
        .chunks_exact(4)
        .map(|b| f32::from_ne_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(old, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

    // Without a lease, writes reuse the buffer.
    seen.clear();
    let now = frame.as_ptr() as usize;
    frame[1] = 7.0;
    assert_eq!(frame.as_ptr() as usize, now);
    drop(seen);
    rt.set_sink(None);
}

#[test]
fn payloads_emitted_from_other_threads_are_lendable_and_released_anywhere() {
    let rt = runtime(2);
    let kept = lending_sink(&rt);
    rt.spawn(|ctx| {
        ctx.handle()
            .emit("positions", OwnedPayload::array(&[9.0f32, 8.0, 7.0], 3))?;
        ctx.handle()
            .emit("text", OwnedPayload::Bytes(b"baked".to_vec()))?;
        Ok(())
    })
    .unwrap();
    pump_until(rt.handle(), || kept.lock().unwrap().len() == 2);
    let leases: Vec<(String, Lease)> = kept
        .lock()
        .unwrap()
        .drain(..)
        .map(|(t, l, addr)| {
            let l = l.expect("an emitted payload is lendable");
            assert_eq!(l.bytes().as_ptr() as usize, addr);
            (t, l)
        })
        .collect();
    // Dropped on another thread, after the pump that delivered them.
    std::thread::spawn(move || {
        for (topic, lease) in leases {
            match (topic.as_str(), lease.payload()) {
                ("positions", Payload::Array(a)) => assert_eq!(a.count(), 1),
                ("text", Payload::Bytes(b)) => assert_eq!(b, b"baked"),
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .join()
    .unwrap();
    rt.set_sink(None);
}

/// A simulation whose frame is a shared buffer of its step number.
struct Counter {
    step: u64,
}

impl Simulation for Counter {
    type Frame = Shared<Vec<u64>>;
    fn step(&mut self, _ctx: &StepContext<'_>) -> hostloop::Result<()> {
        self.step += 1;
        Ok(())
    }
    fn frame(&self) -> Self::Frame {
        Shared::new(vec![self.step; 1024])
    }
    fn write_frame(&self, frame: &mut Self::Frame) {
        frame.fill(self.step);
    }
    fn reset(&mut self) {
        self.step = 0;
    }
}

#[test]
fn a_lease_held_across_frames_keeps_its_frame_while_the_simulation_plays_on() {
    let rt = runtime(1);
    let kept = lending_sink(&rt);
    let sim = rt
        .simulate(
            Counter { step: 0 },
            SimOptions {
                playing: true,
                ..SimOptions::default()
            },
            |frame: &Shared<Vec<u64>>, _, main| {
                main.emit_shared("counter", frame, 1).unwrap();
            },
        )
        .unwrap();
    // Keep the first lent frame; let at least 20 more arrive.
    pump_until(rt.handle(), || kept.lock().unwrap().len() > 20);
    sim.pause();
    let first = kept.lock().unwrap().remove(0).1.expect("lendable");
    let value = match first.payload() {
        Payload::Array(a) => u64::from_ne_bytes(a.bytes()[..8].try_into().unwrap()),
        _ => unreachable!(),
    };
    let later = kept.lock().unwrap().pop().unwrap().1.unwrap();
    let later_value = u64::from_ne_bytes(later.bytes()[..8].try_into().unwrap());
    assert!(
        later_value > value,
        "the simulation played on ({value} → {later_value})"
    );
    // Every element of the held frame is still the value it had when lent.
    assert!(first
        .bytes()
        .chunks_exact(8)
        .all(|b| u64::from_ne_bytes(b.try_into().unwrap()) == value));
    drop(first);
    kept.lock().unwrap().clear();
    rt.set_sink(None);
}
