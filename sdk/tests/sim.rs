//! The simulation driver: controls, delivery modes, determinism, errors.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{pump_until, runtime, wait_for, HANG};
use hostloop::{Delivery, Event, SimOptions, Simulation, StepContext};

/// A deterministic toy: `n` agents, each `x[i] = x[i] * 3 + i (mod 2^32)` per step, in parallel
/// chunks. The frame is (step checksum, the agents).
#[derive(Clone)]
struct Toy {
    x: Vec<u32>,
    fail_at: Option<u64>,
}

impl Toy {
    fn new(n: usize) -> Self {
        Toy {
            x: vec![1; n],
            fail_at: None,
        }
    }
}

impl Simulation for Toy {
    type Frame = Vec<u32>;

    fn step(&mut self, ctx: &StepContext<'_>) -> hostloop::Result<()> {
        if self.fail_at == Some(ctx.step()) {
            return Err("toy failure".into());
        }
        ctx.parallel_for_mut(&mut self.x, 1000, |offset, chunk| {
            for (k, v) in chunk.iter_mut().enumerate() {
                *v = v.wrapping_mul(3).wrapping_add((offset + k) as u32);
            }
        });
        Ok(())
    }

    fn frame(&self) -> Vec<u32> {
        self.x.clone()
    }

    fn write_frame(&self, frame: &mut Vec<u32>) {
        frame.clear();
        frame.extend_from_slice(&self.x);
    }

    fn reset(&mut self) {
        self.x.iter_mut().for_each(|v| *v = 1);
    }

    const SNAPSHOT_KIND: &'static str = "toy";

    fn save(&self, out: &mut hostloop::SnapshotWriter) -> hostloop::Result<()> {
        out.u32s(&self.x);
        Ok(())
    }

    fn restore(&mut self, input: &mut hostloop::SnapshotReader<'_>) -> hostloop::Result<()> {
        let x = input.u32s()?;
        if x.len() != self.x.len() {
            return Err("snapshot has a different agent count".into());
        }
        self.x = x;
        Ok(())
    }
}

/// The state a toy of `n` agents has after `steps` steps, computed sequentially.
fn expected(n: usize, steps: u64) -> Vec<u32> {
    let mut x = vec![1u32; n];
    for _ in 0..steps {
        for (i, v) in x.iter_mut().enumerate() {
            *v = v.wrapping_mul(3).wrapping_add(i as u32);
        }
    }
    x
}

type Seen = Arc<Mutex<Vec<(u64, Vec<u32>)>>>;

/// Options that start the simulation playing.
fn playing() -> SimOptions {
    SimOptions {
        playing: true,
        ..SimOptions::default()
    }
}

/// Pumps like a host until the last frame seen is step `step`'s, and returns that frame.
fn pump_to_frame(rt: &hostloop::Runtime, seen: &Seen, step: u64) -> Vec<u32> {
    let reached = || seen.lock().unwrap().last().is_some_and(|f| f.0 == step);
    pump_until(rt.handle(), reached);
    seen.lock().unwrap().last().unwrap().1.clone()
}

fn recorder() -> (
    Seen,
    impl FnMut(&Vec<u32>, hostloop::FrameInfo, &mut hostloop::Main<'_>) + Send,
) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    (
        seen,
        move |f: &Vec<u32>, info: hostloop::FrameInfo, _: &mut hostloop::Main<'_>| {
            s.lock().unwrap().push((info.step, f.clone()))
        },
    )
}

#[test]
fn step_seek_reset_and_pause_do_what_they_say() {
    let rt = runtime(2);
    let n = 10_000;
    let (seen, on_frame) = recorder();
    let sim = rt
        .simulate(Toy::new(n), SimOptions::default(), on_frame)
        .unwrap();
    // Paused at step 0, its frame published.
    assert_eq!(pump_to_frame(&rt, &seen, 0), expected(n, 0));

    sim.step_by(3);
    assert_eq!(pump_to_frame(&rt, &seen, 3), expected(n, 3));
    assert_eq!(sim.step(), 3);

    sim.seek(10);
    assert_eq!(pump_to_frame(&rt, &seen, 10), expected(n, 10));

    sim.seek(4); // behind: resets and steps forward again
    assert_eq!(pump_to_frame(&rt, &seen, 4), expected(n, 4));

    sim.reset();
    assert_eq!(pump_to_frame(&rt, &seen, 0), expected(n, 0));
    assert_eq!(sim.step(), 0);

    sim.play();
    wait_for("playing past step 20", || sim.step() > 20);
    sim.pause();
    wait_for("paused", || !sim.is_playing());
    let held = sim.step();
    // A later command is applied after the pause: the step count held still in between.
    sim.step_by(1);
    wait_for("one more step", || sim.step() == held + 1);
    sim.stop();
    wait_for("driver exit", || sim.is_stopped());
}

#[test]
fn latest_mode_never_shows_a_torn_or_older_frame() {
    let rt = runtime(2);
    let n = 5_000;
    let (seen, on_frame) = recorder();
    let sim = rt.simulate(Toy::new(n), playing(), on_frame).unwrap();
    pump_until(rt.handle(), || sim.step() >= 200);
    sim.pause();
    wait_for("paused", || !sim.is_playing());
    let last = sim.step();
    pump_to_frame(&rt, &seen, last);
    let seen = seen.lock().unwrap();
    let mut prev = None;
    for (step, frame) in seen.iter() {
        assert!(
            prev.is_none_or(|p| *step > p),
            "frame {step} after {prev:?}"
        );
        assert_eq!(
            *frame,
            expected(n, *step),
            "torn or wrong frame at step {step}"
        );
        prev = Some(*step);
    }
}

#[test]
fn every_mode_delivers_all_frames_in_order_and_waits_for_the_host() {
    let rt = runtime(2);
    let n = 100;
    let (seen, on_frame) = recorder();
    let sim = rt
        .simulate(
            Toy::new(n),
            SimOptions {
                delivery: Delivery::Every { capacity: 4 },
                ..SimOptions::default()
            },
            on_frame,
        )
        .unwrap();
    sim.step_by(50);
    // The host does not pump: the driver fills the queue (step 0 + 4 frames wait) and blocks.
    wait_for("driver blocked on a full queue", || sim.step() >= 4);
    let blocked_at = sim.step();
    assert!(
        blocked_at <= 6,
        "the simulation ran ahead of a host that does not pump: {blocked_at}"
    );
    assert!(rt.stats().queued.main <= 1);
    pump_until(rt.handle(), || seen.lock().unwrap().len() == 51);
    let seen = seen.lock().unwrap();
    for (k, (step, frame)) in seen.iter().enumerate() {
        assert_eq!(*step, k as u64);
        assert_eq!(*frame, expected(n, *step));
    }
}

#[test]
fn results_are_identical_with_one_and_many_workers() {
    let run = |workers: usize| {
        let rt = runtime(workers);
        let (seen, on_frame) = recorder();
        let sim = rt
            .simulate(Toy::new(100_003), SimOptions::default(), on_frame)
            .unwrap();
        sim.seek(25);
        pump_to_frame(&rt, &seen, 25)
    };
    assert_eq!(run(1), run(2));
    assert_eq!(run(1), expected(100_003, 25));
}

#[test]
fn a_failing_or_panicking_step_pauses_the_driver_with_the_error() {
    let rt = runtime(1);
    let mut toy = Toy::new(10);
    toy.fail_at = Some(5);
    let sim = rt.simulate(toy, playing(), |_, _, _| {}).unwrap();
    wait_for("failure", || sim.last_error().is_some());
    assert!(sim.last_error().unwrap().contains("toy failure"));
    assert_eq!(sim.step(), 5);
    wait_for("paused", || !sim.is_playing());

    struct Panicky;
    impl Simulation for Panicky {
        type Frame = ();
        fn step(&mut self, _: &StepContext<'_>) -> hostloop::Result<()> {
            panic!("sim bug")
        }
        fn frame(&self) {}
        fn reset(&mut self) {}
    }
    let p = rt
        .simulate(Panicky, SimOptions::default(), |_, _, _| {})
        .unwrap();
    // The error also reaches the main thread, at a pump.
    let reported = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
    let sink = reported.clone();
    p.on_error(move |message, main| {
        let on_main = main.handle().is_main_thread();
        sink.lock().unwrap().push((message.to_owned(), on_main));
    });
    p.step_by(1);
    wait_for("panic reported", || p.last_error().is_some());
    assert!(p.last_error().unwrap().contains("sim bug"));
    pump_until(&rt, || !reported.lock().unwrap().is_empty());
    let reported = reported.lock().unwrap();
    assert_eq!(reported.len(), 1);
    assert!(
        reported[0].0.contains("sim bug") && reported[0].1,
        "{reported:?}"
    );
    // The runtime lives on.
    let job = rt.spawn(|_| Ok(1)).unwrap();
    wait_for("job", || job.is_finished());
}

#[test]
fn lockstep_follows_the_hosts_frame() {
    let rt = runtime(2);
    let (seen, on_frame) = recorder();
    let sim = rt
        .simulate(
            Toy::new(1000),
            SimOptions {
                lockstep: true,
                ..SimOptions::default()
            },
            on_frame,
        )
        .unwrap();
    for frame in [7.0, 3.0, 12.0] {
        rt.post_event(Event::FrameChanged { frame }).unwrap();
        pump_until(rt.handle(), || {
            seen.lock()
                .unwrap()
                .last()
                .is_some_and(|f| f.0 == frame as u64)
        });
        assert_eq!(
            seen.lock().unwrap().last().unwrap().1,
            expected(1000, frame as u64)
        );
    }
    drop(sim);
}

#[test]
fn rate_limits_steps_per_second() {
    let rt = runtime(1);
    let sim = rt
        .simulate(
            Toy::new(10),
            SimOptions {
                playing: true,
                rate: Some(50.0),
                ..SimOptions::default()
            },
            |_, _, _| {},
        )
        .unwrap();
    // A measurement window, not a wait for a thread: at 50 steps/s, 400 ms is ~20 steps.
    std::thread::sleep(Duration::from_millis(400));
    let n = sim.step();
    // Rate-limited (unlimited would be many thousands) and progressing.
    assert!((1..=60).contains(&n), "{n} steps in 400 ms at 50/s");
    sim.set_rate(None);
    wait_for("unlimited rate", || sim.step() > n + 1000);
}

#[test]
fn dropping_every_control_stops_the_driver() {
    let rt = runtime(1);
    let sim = rt.simulate(Toy::new(10), playing(), |_, _, _| {}).unwrap();
    let watcher = sim.clone();
    drop(sim);
    wait_for("still running while a clone lives", || watcher.step() > 10);
    assert!(!watcher.is_stopped());
    watcher.stop();
    wait_for("stopped", || watcher.is_stopped());
}

/// Agents with their own logic: a small state machine per agent.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Agent {
    Wander { t: u32 },
    Seek { target: u32 },
    Flee,
}

fn update(i: usize, a: &mut Agent) {
    *a = match *a {
        Agent::Wander { t } if t >= 2 => Agent::Seek { target: i as u32 },
        Agent::Wander { t } => Agent::Wander { t: t + 1 },
        Agent::Seek { .. } => Agent::Flee,
        Agent::Flee => Agent::Wander { t: 0 },
    };
}

/// A crowd: every agent is a state machine; invisible agents (odd indices here) are thinned to
/// every 4th step.
struct Crowd {
    agents: Vec<(bool, Agent)>,
    stepped: Vec<usize>,
}

impl Simulation for Crowd {
    type Frame = (Vec<usize>, Vec<Agent>);

    fn step(&mut self, ctx: &StepContext<'_>) -> hostloop::Result<()> {
        let thin = hostloop::Thin {
            visible: |a: &(bool, Agent)| a.0,
            k: 4,
        };
        let n = ctx.step_agents(&mut self.agents, 0, &thin, |i, a| update(i, &mut a.1));
        self.stepped.push(n);
        Ok(())
    }

    fn frame(&self) -> Self::Frame {
        (
            self.stepped.clone(),
            self.agents.iter().map(|a| a.1).collect(),
        )
    }

    fn reset(&mut self) {
        for (i, a) in self.agents.iter_mut().enumerate() {
            *a = (i % 2 == 0, Agent::Wander { t: 0 });
        }
        self.stepped.clear();
    }
}

#[test]
fn agents_step_their_own_state_machines_and_thinning_skips_invisible_ones() {
    let rt = runtime(2);
    let n = 10_000;
    let crowd = Crowd {
        agents: vec![(false, Agent::Wander { t: 0 }); n],
        stepped: Vec::new(),
    };
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let sim = rt
        .simulate(
            crowd,
            SimOptions::default(),
            move |f: &(Vec<usize>, Vec<Agent>), info, _| {
                *s.lock().unwrap() = Some((info.step, f.clone()));
            },
        )
        .unwrap();
    sim.seek(4);
    pump_until(rt.handle(), || {
        seen.lock()
            .unwrap()
            .as_ref()
            .is_some_and(|(step, _)| *step == 4)
    });
    let (_, (stepped, agents)) = seen.lock().unwrap().take().unwrap();
    // Visible agents step every step; each invisible one on exactly one of the 4 steps.
    assert_eq!(stepped.iter().sum::<usize>(), 4 * n / 2 + n / 2);
    // Visible: 4 steps (Wander 0 → 1 → 2 → Seek → Flee); invisible: 1 step (Wander 1).
    assert_eq!(agents[0], Agent::Flee);
    assert_eq!(agents[1], Agent::Wander { t: 1 });
}

#[test]
fn snapshot_restore_continue_equals_an_uninterrupted_run_bit_for_bit() {
    let rt = runtime(2);
    let n = 20_003;
    let (seen, on_frame) = recorder();
    let sim = rt
        .simulate(Toy::new(n), SimOptions::default(), on_frame)
        .unwrap();
    sim.seek(10);
    pump_to_frame(&rt, &seen, 10);
    let snapshot = Arc::new(Mutex::new(None));
    {
        let snapshot = snapshot.clone();
        sim.save(move |r, _| *snapshot.lock().unwrap() = Some(r));
    }
    pump_until(rt.handle(), || snapshot.lock().unwrap().is_some());
    let bytes = snapshot.lock().unwrap().take().unwrap().unwrap();
    // The uninterrupted run goes on to step 30.
    sim.seek(30);
    let uninterrupted = pump_to_frame(&rt, &seen, 30);

    // A fresh simulation (another "session") restores step 10 and continues to 30.
    let (seen2, on_frame2) = recorder();
    let resumed = rt
        .simulate(Toy::new(n), SimOptions::default(), on_frame2)
        .unwrap();
    resumed.restore(bytes.clone());
    assert_eq!(pump_to_frame(&rt, &seen2, 10), expected(n, 10));
    resumed.seek(30);
    assert_eq!(pump_to_frame(&rt, &seen2, 30), uninterrupted);
    assert_eq!(uninterrupted, expected(n, 30));

    // Damaged snapshots change nothing and say why.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    resumed.restore(flipped);
    wait_for("restore error", || resumed.last_error().is_some());
    assert!(
        resumed.last_error().unwrap().contains("checksum"),
        "{:?}",
        resumed.last_error()
    );
    resumed.restore(bytes[..bytes.len() - 3].to_vec());
    wait_for("truncation error", || {
        resumed
            .last_error()
            .is_some_and(|e| e.contains("truncated"))
    });
    assert_eq!(resumed.step(), 30);
    resumed.step_by(1);
    assert_eq!(pump_to_frame(&rt, &seen2, 31), expected(n, 31));

    // Or a simulation starts from the snapshot: its first frame is step 10's, none before.
    let (seen3, on_frame3) = recorder();
    let started = rt
        .simulate(
            Toy::new(n),
            SimOptions {
                resume: Some(bytes.clone()),
                ..SimOptions::default()
            },
            on_frame3,
        )
        .unwrap();
    assert_eq!(started.step(), 10);
    started.seek(30);
    assert_eq!(pump_to_frame(&rt, &seen3, 30), uninterrupted);
    assert_eq!(
        seen3.lock().unwrap()[0].0,
        10,
        "the first frame is the snapshot's"
    );
    let damaged = rt.simulate(
        Toy::new(n),
        SimOptions {
            resume: Some(bytes[..bytes.len() / 2].to_vec()),
            ..SimOptions::default()
        },
        |_, _, _| {},
    );
    assert!(
        damaged.is_err(),
        "a truncated snapshot cannot start a simulation"
    );
}

#[test]
fn edit_changes_the_running_simulation_in_command_order_and_refuses_another_type() {
    let rt = runtime(1);
    let n = 1000;
    let (seen, on_frame) = recorder();
    let sim = rt
        .simulate(Toy::new(n), SimOptions::default(), on_frame)
        .unwrap();
    sim.step_by(2);
    sim.edit(|toy: &mut Toy| toy.x.iter_mut().for_each(|v| *v = 1));
    sim.step_by(1);
    // Two steps, then back to all ones, then one step: the state of step 1.
    assert_eq!(pump_to_frame(&rt, &seen, 3), expected(n, 1));
    sim.edit(|_: &mut Crowd| unreachable!("not this simulation's type"));
    wait_for("type mismatch", || sim.last_error().is_some());
    assert!(sim.last_error().unwrap().contains("not the type"));
    sim.step_by(1);
    assert_eq!(pump_to_frame(&rt, &seen, 4), expected(n, 2));
}

#[test]
fn save_now_and_restore_now_need_no_pump_and_keep_command_order() {
    let rt = runtime(2);
    let n = 5_001;
    let (seen, on_frame) = recorder();
    let sim = rt
        .simulate(Toy::new(n), SimOptions::default(), on_frame)
        .unwrap();
    // Both run on the main thread without a pump: what a plugin's save/restore_state does.
    sim.step_by(7);
    let bytes = sim.save_now(HANG).unwrap();
    assert_eq!(
        sim.step(),
        7,
        "the save came after the 7 steps sent before it"
    );
    sim.step_by(5);
    sim.restore_now(bytes.clone(), HANG).unwrap();
    assert_eq!(sim.step(), 7);
    assert_eq!(pump_to_frame(&rt, &seen, 7), expected(n, 7));

    let mut damaged = bytes;
    damaged.truncate(damaged.len() - 1);
    let err = sim.restore_now(damaged, HANG).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    assert_eq!(sim.step(), 7, "a refused snapshot changes nothing");

    sim.stop();
    wait_for("the driver to stop", || sim.is_stopped());
    assert!(matches!(sim.save_now(HANG), Err(hostloop::Error::ShutDown)));
}

#[test]
fn a_slot_rebuilds_in_the_background_the_latest_start_wins_and_failures_are_reported() {
    use hostloop::plugin::SimSlot;
    use hostloop::{Message, Payload};

    let rt = runtime(2);
    // What the host's sink saw: (topic, frame length or error text).
    let seen = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let sink = seen.clone();
    rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
        let what = match m.payload {
            Payload::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Payload::Array(a) => a.count().to_string(),
        };
        sink.lock().unwrap().push((m.topic.to_owned(), what));
    })));
    let emit = |f: &Vec<u32>, main: &mut hostloop::Main<'_>| {
        let _ = main.emit(
            "toy/frame",
            Payload::Array(hostloop::ArrayView::packed(f, 1)),
        );
    };
    let frames_of = |n: usize| {
        let n = n.to_string();
        move |s: &[(String, String)]| s.iter().any(|(t, w)| t == "toy/frame" && *w == n)
    };
    let mut slot = SimSlot::new("toy");
    slot.start(&rt, Toy::new(10), SimOptions::default(), emit)
        .unwrap();
    pump_until(&rt, || frames_of(10)(&seen.lock().unwrap()));

    // A slow build, then a quick one: the quick (later) one takes the slot, and the slow one,
    // finishing last, stops itself instead of replacing it.
    let (release, gate) = crossbeam_channel::bounded::<()>(0);
    slot.start_in_background(
        &rt,
        move || {
            let _ = gate.recv();
            Ok((Toy::new(30), SimOptions::default()))
        },
        emit,
    )
    .unwrap();
    slot.start_in_background(&rt, || Ok((Toy::new(20), SimOptions::default())), emit)
        .unwrap();
    pump_until(&rt, || frames_of(20)(&seen.lock().unwrap()));
    drop(release);
    // Every job has finished, the slow build included (it installs, or not, inside its job).
    wait_for("the slow build", || {
        let s = rt.stats();
        s.jobs_finished == s.jobs_spawned
    });
    let control = slot.control().unwrap();
    control.step_by(3);
    pump_until(&rt, || control.step() == 3);
    seen.lock().unwrap().clear();
    control.step_by(1);
    pump_until(&rt, || frames_of(20)(&seen.lock().unwrap()));
    assert!(
        !frames_of(30)(&seen.lock().unwrap()),
        "the older build never shows"
    );
    assert_eq!(
        slot.control().unwrap().step(),
        4,
        "the slot still runs the later build"
    );

    // A failing build is reported and changes nothing.
    slot.start_in_background(
        &rt,
        || -> hostloop::Result<(Toy, SimOptions)> { panic!("bad build") },
        emit,
    )
    .unwrap();
    pump_until(&rt, || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(t, w)| t == "toy/error" && w.contains("bad build"))
    });
    assert_eq!(slot.control().unwrap().step(), 4);
    slot.stop();
    assert!(slot.control().is_none());
}

#[test]
fn steps_run_on_the_pools_workers_so_the_driver_thread_computes_nothing() {
    struct WhereAmI(Arc<Mutex<Vec<bool>>>);
    impl Simulation for WhereAmI {
        type Frame = ();
        fn step(&mut self, ctx: &StepContext<'_>) -> hostloop::Result<()> {
            self.0.lock().unwrap().push(ctx.handle().is_worker_thread());
            Ok(())
        }
        fn frame(&self) {}
        fn reset(&mut self) {}
    }
    let rt = runtime(1);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sim = rt
        .simulate(WhereAmI(seen.clone()), SimOptions::default(), |_, _, _| {})
        .unwrap();
    sim.step_by(5);
    wait_for("five steps", || sim.step() == 5);
    assert_eq!(*seen.lock().unwrap(), vec![true; 5]);
}
