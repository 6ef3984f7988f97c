//! The crowd: agents with their own logic, visibility thinning, determinism, snapshots.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hostloop::{Runtime, SimControl, SimOptions};
use hostloop_crowd::{Crowd, CrowdFrame};

type Last = Arc<Mutex<Option<(u64, CrowdFrame)>>>;

fn start(rt: &Runtime, crowd: Crowd) -> (SimControl, Last) {
    let last: Last = Arc::default();
    let l = last.clone();
    let sim = rt
        .simulate(
            crowd,
            SimOptions::default(),
            move |f: &CrowdFrame, info, _| {
                *l.lock().unwrap() = Some((info.step, f.clone()));
            },
        )
        .unwrap();
    (sim, last)
}

fn frame_at(rt: &Runtime, sim: &SimControl, last: &Last, step: u64) -> CrowdFrame {
    let start = Instant::now();
    while last
        .lock()
        .unwrap()
        .as_ref()
        .is_none_or(|(s, _)| *s != step)
    {
        rt.pump(Duration::from_millis(5)).unwrap();
        assert!(sim.last_error().is_none(), "{:?}", sim.last_error());
        assert!(start.elapsed() < Duration::from_secs(60), "hang");
        std::thread::yield_now();
    }
    last.lock().unwrap().take().unwrap().1
}

#[test]
fn a_hundred_thousand_agents_run_their_state_machines_deterministically() {
    let run = |workers: usize| {
        let rt = Runtime::builder().workers(workers).build().unwrap();
        let (sim, last) = start(&rt, Crowd::new(100_000));
        sim.seek(120);
        frame_at(&rt, &sim, &last, 120)
    };
    let one = run(1);
    let two = run(2);
    assert_eq!(one, two, "identical with 1 and 2 workers");
    assert_eq!(one.positions.len(), 200_000);
    // Every mode occurs: the agents really follow their own logic.
    for mode in 0..3u8 {
        assert!(one.modes.contains(&mode), "no agent in mode {mode}");
    }
}

#[test]
fn agents_outside_the_view_are_thinned() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let mut crowd = Crowd::new(40_000);
    crowd.thin_k = 4;
    let visible = |c: &Crowd| {
        let [x0, y0, x1, y1] = c.view;
        c.agents()
            .iter()
            .filter(|a| a.pos[0] >= x0 && a.pos[0] <= x1 && a.pos[1] >= y0 && a.pos[1] <= y1)
            .count()
    };
    let inside = visible(&crowd);
    assert!(inside > 0 && inside < 40_000);
    // One step moves every visible agent but only about a quarter of the others (each steps
    // on every 4th frame, staggered by index).
    let before = crowd.frame_positions();
    let after = {
        let (sim, last) = start(&rt, crowd.clone());
        sim.step_by(1);
        frame_at(&rt, &sim, &last, 1).positions
    };
    let [x0, y0, x1, y1] = crowd.view;
    let (mut outside, mut moved_outside) = (0usize, 0usize);
    for i in 0..40_000 {
        let (x, y) = (before[2 * i], before[2 * i + 1]);
        if !(x >= x0 && x <= x1 && y >= y0 && y <= y1) {
            outside += 1;
            if after[2 * i] != x || after[2 * i + 1] != y {
                moved_outside += 1;
            }
        }
    }
    let share = moved_outside as f64 / outside as f64;
    assert!(
        (0.2..0.3).contains(&share),
        "{share} of the invisible agents stepped, expected ~1/4"
    );
}

#[test]
fn a_snapshot_resumes_the_crowd_exactly() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let (sim, last) = start(&rt, Crowd::new(20_000));
    sim.seek(50);
    let saved = Arc::new(Mutex::new(None));
    let s = saved.clone();
    sim.save(move |r, _| *s.lock().unwrap() = Some(r));
    let straight = {
        sim.seek(90);
        frame_at(&rt, &sim, &last, 90)
    };
    let bytes = saved.lock().unwrap().take().unwrap().unwrap();
    let (resumed, last2) = start(&rt, Crowd::new(20_000));
    resumed.restore(bytes);
    let _ = frame_at(&rt, &resumed, &last2, 50);
    resumed.seek(90);
    assert_eq!(frame_at(&rt, &resumed, &last2, 90), straight);
}

/// The crate documentation's example (doctests are off for this cdylib crate; see Cargo.toml).
#[test]
fn the_crate_example_runs() -> Result<(), Box<dyn std::error::Error>> {
    use hostloop::{Runtime, SimOptions};
    use hostloop_crowd::Crowd;

    let rt = Runtime::builder().workers(1).build()?;
    let sim = rt.simulate(
        Crowd::new(100_000),
        SimOptions::default(),
        |frame, _info, _main| {
            // On the main thread: x, y per agent, and each agent's state as a byte.
            assert_eq!(frame.positions.len(), 2 * 100_000);
        },
    )?;
    sim.step_by(10);
    Ok(())
}
