//! The C++ and Rust kernels agree, and a C++ exception is a step error, not an abort.

use std::sync::{Arc, Mutex};

use hostloop::{Runtime, SimOptions, Simulation};
use hostloop_particles::{Kernel, Particles};

fn run(kernel: Kernel, steps: u64, n: usize) -> (Vec<f32>, Option<String>) {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let last = Arc::new(Mutex::new(None));
    let l = last.clone();
    let mut p = Particles::new(n, kernel);
    p.grain = 997;
    let sim = rt
        .simulate(
            p,
            SimOptions::default(),
            move |pos: &hostloop::Shared<Vec<f32>>, info, _| {
                *l.lock().unwrap() = Some((info.step, pos.to_vec()));
            },
        )
        .unwrap();
    sim.seek(steps);
    let start = std::time::Instant::now();
    loop {
        rt.pump(std::time::Duration::from_millis(5)).unwrap();
        if let Some(e) = sim.last_error() {
            return (Vec::new(), Some(e));
        }
        if last
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|(s, _)| *s == steps)
        {
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "hang");
        std::thread::yield_now();
    }
    let positions = last.lock().unwrap().take().unwrap().1;
    (positions, None)
}

#[test]
fn the_cpp_and_rust_kernels_produce_the_same_positions_bit_for_bit() {
    let (rust, e1) = run(Kernel::Rust, 120, 50_001);
    let (cpp, e2) = run(Kernel::Cpp, 120, 50_001);
    assert!(e1.is_none() && e2.is_none());
    assert_eq!(rust.len(), 3 * 50_001);
    let same = rust
        .iter()
        .zip(&cpp)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "kernels disagree");
    // And the particles really moved and bounced (nothing fell through the floor).
    let start = Particles::new(50_001, Kernel::Rust).positions();
    assert_ne!(rust, start);
    assert!(rust.chunks(3).all(|p| p[1] >= 0.0));
}

#[test]
fn a_cpp_exception_becomes_the_steps_error_and_the_host_lives_on() {
    let rt = Runtime::builder().workers(1).build().unwrap();
    let mut p = Particles::new(1000, Kernel::Cpp);
    p.dt = -1.0; // the C++ kernel throws std::invalid_argument
    let sim = rt.simulate(p, SimOptions::default(), |_, _, _| {}).unwrap();
    sim.step_by(1);
    let start = std::time::Instant::now();
    while sim.last_error().is_none() {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "hang");
        std::thread::yield_now();
    }
    let e = sim.last_error().unwrap();
    assert!(e.contains("dt must not be negative"), "{e}");
    assert_eq!(sim.step(), 0);
    // The runtime and the process are fine.
    let job = rt.spawn(|_| Ok(2)).unwrap();
    while !job.is_finished() {
        std::thread::yield_now();
    }
    assert_eq!(job.try_result().unwrap().unwrap(), 2);
    let _ = Particles::new(1, Kernel::Rust).frame();
}

#[test]
fn a_snapshot_resumes_the_particles_exactly() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let got = Arc::new(Mutex::new(None));
    let g = got.clone();
    let sim = rt
        .simulate(
            Particles::new(10_000, Kernel::Rust),
            SimOptions::default(),
            |_, _, _| {},
        )
        .unwrap();
    sim.seek(40);
    sim.save(move |r, _| *g.lock().unwrap() = Some(r));
    let start = std::time::Instant::now();
    while got.lock().unwrap().is_none() {
        rt.pump(std::time::Duration::from_millis(5)).unwrap();
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "hang");
        std::thread::yield_now();
    }
    let bytes = got.lock().unwrap().take().unwrap().unwrap();
    assert_eq!(sim.step(), 40, "the save waited for the seek before it");
    drop(sim);
    // Resume from the snapshot (here with the C++ kernel) and compare with a straight run.
    let last = Arc::new(Mutex::new(None));
    let l = last.clone();
    let resumed = rt
        .simulate(
            Particles::new(10_000, Kernel::Cpp),
            SimOptions::default(),
            move |p: &hostloop::Shared<Vec<f32>>, info, _| {
                *l.lock().unwrap() = Some((info.step, p.to_vec()))
            },
        )
        .unwrap();
    resumed.restore(bytes);
    let frame_at = |step: u64| {
        let start = std::time::Instant::now();
        while last
            .lock()
            .unwrap()
            .as_ref()
            .is_none_or(|(s, _)| *s != step)
        {
            rt.pump(std::time::Duration::from_millis(5)).unwrap();
            assert!(resumed.last_error().is_none(), "{:?}", resumed.last_error());
            assert!(start.elapsed() < std::time::Duration::from_secs(30), "hang");
            std::thread::yield_now();
        }
        last.lock().unwrap().take().unwrap().1
    };
    // The restore publishes step 40's frame: the saved state, not a fresh start.
    let at_40 = frame_at(40);
    let (straight_40, _) = run(Kernel::Rust, 40, 10_000);
    assert!(at_40
        .iter()
        .zip(&straight_40)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
    resumed.seek(60);
    let resumed_positions = frame_at(60);
    let (straight, _) = run(Kernel::Rust, 60, 10_000);
    assert!(resumed_positions
        .iter()
        .zip(&straight)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

/// The crate documentation's example (doctests are off for this cdylib crate; see Cargo.toml).
#[test]
fn the_crate_example_runs() -> Result<(), Box<dyn std::error::Error>> {
    use hostloop::{Runtime, SimOptions};
    use hostloop_particles::{Kernel, Particles};

    let rt = Runtime::builder().workers(1).build()?;
    let sim = rt.simulate(
        Particles::new(10_000, Kernel::Rust),
        SimOptions::default(),
        |positions, info, _main| {
            // On the main thread: `positions` is x, y, z per particle, ready for a host mesh.
            assert_eq!(positions.len(), 3 * 10_000);
            let _ = info.step;
        },
    )?;
    sim.step_by(10);
    Ok(())
}
