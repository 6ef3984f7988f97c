//! The example simulations as plugins: `libhostloop_particles.so` and `libhostloop_crowd.so`,
//! loaded into a host runtime, configured through host events, answering through the sink, and
//! hot-reloaded with their state.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::sdk::plugin::LoadedPlugin;
use bridge::sdk::{Event, Message, Payload, Runtime, SimOptions};
use hostloop_particles::{Kernel, Particles};
use hostloop_tests::fixture;

/// Only fires on failure.
const HANG_LIMIT: Duration = Duration::from_secs(120);

/// What the sink received, in order: (topic, step or element count, the f32 values if any).
#[derive(Debug, Clone, PartialEq)]
enum Got {
    Step(u64),
    Floats(Vec<f32>, usize),
    Bytes(usize),
    Error(String),
}

struct Host {
    rt: Runtime,
    inbox: Arc<Mutex<Vec<(String, Got)>>>,
}

impl Host {
    fn new() -> Host {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let sink = inbox.clone();
        rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
            let got = match m.payload {
                Payload::Bytes(b) if m.topic.ends_with("/step") => {
                    Got::Step(u64::from_le_bytes(b[..8].try_into().unwrap()))
                }
                Payload::Bytes(b) if m.topic.ends_with("/error") => {
                    Got::Error(String::from_utf8_lossy(b).into_owned())
                }
                Payload::Bytes(b) => Got::Bytes(b.len()),
                Payload::Array(a) if a.elem().size() == 4 => Got::Floats(
                    a.bytes()
                        .chunks_exact(4)
                        .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
                        .collect(),
                    a.components(),
                ),
                Payload::Array(a) => Got::Bytes(a.count()),
            };
            sink.lock().unwrap().push((m.topic.to_owned(), got));
        })));
        Host { rt, inbox }
    }

    fn configure(&self, topic: &str, text: &str) {
        self.rt
            .post_event(Event::Custom {
                topic: topic.into(),
                bytes: text.as_bytes().to_vec(),
                coalesce: false,
            })
            .unwrap();
    }

    /// Pumps (sleeping on the doorbell) until `done` holds over what arrived.
    fn pump_until(&self, what: &str, mut done: impl FnMut(&[(String, Got)]) -> bool) {
        let report = self
            .rt
            .run_until(
                || done(&self.inbox.lock().unwrap()),
                Duration::from_millis(2),
                HANG_LIMIT,
            )
            .unwrap();
        assert!(report.finished, "{what}: nothing after {HANG_LIMIT:?}");
    }

    fn take(&self) -> Vec<(String, Got)> {
        std::mem::take(&mut *self.inbox.lock().unwrap())
    }
}

/// The last `(step, values)` pair in `got` with the given positions topic.
fn last_frame(got: &[(String, Got)], topic: &str) -> Option<(u64, Vec<f32>, usize)> {
    let i = got.iter().rposition(|(t, _)| t == topic)?;
    let Got::Floats(values, components) = got[i].1.clone() else {
        return None;
    };
    match got[..i].last() {
        Some((_, Got::Step(step))) => Some((*step, values, components)),
        _ => None,
    }
}

fn steps(got: &[(String, Got)]) -> Vec<u64> {
    got.iter()
        .filter_map(|(_, g)| match g {
            Got::Step(s) => Some(*s),
            _ => None,
        })
        .collect()
}

fn reload(plugin: &mut LoadedPlugin, name: &str) {
    plugin
        .reload(fixture(name), Duration::from_secs(10))
        .expect("hot reload");
}

#[test]
fn the_particles_plugin_plays_configures_and_matches_the_library_bit_for_bit() {
    let host = Host::new();
    let mut plugin = host.rt.load_plugin(fixture("hostloop_particles")).unwrap();
    assert_eq!(plugin.info().name, "particles");
    // At load: 100k particles, playing.
    host.pump_until("a frame of the default simulation", |got| {
        last_frame(got, "particles/positions")
            .is_some_and(|(s, v, c)| s > 0 && v.len() == 300_000 && c == 3)
    });

    // Every frame, in order, from a rebuilt simulation of 1000 particles.
    host.configure("particles/configure", "agents=1000 delivery=every");
    host.pump_until("every frame up to 30", |got| {
        steps(got).contains(&30)
            && last_frame(got, "particles/positions").is_some_and(|(_, v, _)| v.len() == 3000)
    });
    let got = host.take();
    let after: Vec<u64> = {
        // The rebuilt simulation starts at step 0; older frames precede it.
        let all = steps(&got);
        let start = all
            .iter()
            .rposition(|&s| s == 0)
            .expect("the rebuilt start");
        all[start..].to_vec()
    };
    assert_eq!(
        after,
        (0..after.len() as u64).collect::<Vec<_>>(),
        "every frame, in order"
    );

    // The plugin's frames are the library's: step 10 of the same simulation in this process.
    host.configure("particles/configure", "playing=0");
    host.configure("particles/reset", "");
    let expected = Arc::new(Mutex::new(None));
    let slot = expected.clone();
    let local = host
        .rt
        .simulate(
            Particles::new(1000, Kernel::Rust),
            SimOptions::default(),
            move |f: &bridge::sdk::Shared<Vec<f32>>, info, _| {
                if info.step == 10 {
                    *slot.lock().unwrap() = Some(f.to_vec());
                }
            },
        )
        .unwrap();
    local.seek(10);
    host.pump_until("the local step 10", |_| expected.lock().unwrap().is_some());
    host.take();
    host.configure("particles/configure", "kernel=cpp playing=1");
    host.pump_until("step 10 from the plugin (C++ kernel)", |got| {
        steps(got).contains(&10)
    });
    let got = host.take();
    let i = got.iter().position(|(_, g)| *g == Got::Step(10)).unwrap();
    let Got::Floats(values, _) = &got[i + 1].1 else {
        panic!("positions follow the step: {:?}", got[i + 1]);
    };
    let expected = expected.lock().unwrap().clone().unwrap();
    assert!(
        values
            .iter()
            .map(|v| v.to_bits())
            .eq(expected.iter().map(|v| v.to_bits())),
        "the plugin's C++ frame at step 10 equals the library's Rust frame"
    );
    local.stop();

    // Bad input is refused with a reason, and the simulation goes on as it was.
    host.configure("particles/configure", "agents=0");
    host.configure("particles/configure", "colour=blue");
    host.pump_until("two refusals", |got| {
        got.iter()
            .filter(|(_, g)| matches!(g, Got::Error(_)))
            .count()
            == 2
    });
    let errors: Vec<String> = host
        .take()
        .into_iter()
        .filter_map(|(_, g)| match g {
            Got::Error(e) => Some(e),
            _ => None,
        })
        .collect();
    assert!(errors[0].contains("agents must be"), "{errors:?}");
    assert!(errors[1].contains("unknown key `colour`"), "{errors:?}");
    host.pump_until("frames after the refusals", |got| {
        last_frame(got, "particles/positions").is_some_and(|(_, v, _)| v.len() == 3000)
    });

    // A hot reload keeps the configuration and the step.
    let before = steps(&host.take()).into_iter().max().unwrap_or(0);
    reload(&mut plugin, "hostloop_particles");
    assert_eq!(plugin.info().generation, 1);
    host.pump_until("frames of the reloaded build", |got| !steps(got).is_empty());
    let got = host.take();
    let resumed = steps(&got);
    assert!(
        resumed[0] >= before,
        "resumed at {} after {before}",
        resumed[0]
    );
    assert!(
        last_frame(&got, "particles/positions").is_some_and(|(_, v, _)| v.len() == 3000),
        "the reloaded build kept 1000 particles"
    );
    let report = plugin.unload(Duration::from_secs(10));
    assert_eq!(report.stragglers, 0);
}

#[test]
fn the_crowd_plugin_moves_its_camera_live_and_keeps_its_agents_across_a_reload() {
    let host = Host::new();
    let mut plugin = host.rt.load_plugin(fixture("hostloop_crowd")).unwrap();
    assert_eq!(plugin.info().name, "crowd");
    host.pump_until("a frame of 100k agents", |got| {
        last_frame(got, "crowd/positions")
            .is_some_and(|(s, v, c)| s > 0 && v.len() == 200_000 && c == 2)
    });
    assert!(host
        .take()
        .iter()
        .any(|(t, g)| t == "crowd/modes" && *g == Got::Bytes(100_000)));

    host.configure("crowd/configure", "agents=2000 delivery=every rate=0");
    host.pump_until("frames of 2000 agents", |got| {
        last_frame(got, "crowd/positions").is_some_and(|(s, v, _)| s >= 5 && v.len() == 4000)
    });
    // Live: the camera, goal and thinning change without a rebuild (the steps go on).
    let before = steps(&host.take()).into_iter().max().unwrap();
    host.configure("crowd/configure", "view=-10,-10,10,10 goal=0,0 thin=2");
    host.pump_until("steps after the live change", |got| {
        steps(got).iter().any(|&s| s > before + 5)
    });
    let got = host.take();
    assert!(
        !steps(&got).contains(&0),
        "a live change does not rebuild: {:?}",
        steps(&got)
    );
    host.configure("crowd/configure", "view=1,2,3");
    host.pump_until("a refusal", |got| {
        got.iter().any(|(_, g)| matches!(g, Got::Error(_)))
    });
    let got = host.take();
    assert!(got
        .iter()
        .any(|(_, g)| matches!(g, Got::Error(e) if e.contains("view"))));

    // The live change's edit waits in the driver while it is blocked on the full `every`
    // stream (4 frames), and a blocked driver cannot be saved with it pending: `save_state`
    // would time out. So wait until the driver has published past it: the edit arrived before
    // the refusal was handled, when at most 4 frames waited and a 5th was being published, so a
    // step beyond `before + 5` was taken after the edit was applied. (Steps after the live
    // change do not prove that: a pump can deliver the stream's backlog before the event.)
    let before = steps(&got).into_iter().max().unwrap_or(0);
    host.pump_until("a step taken after the live edit", |got| {
        steps(got).iter().any(|&s| s > before + 5)
    });
    let before = steps(&host.take()).into_iter().max().unwrap_or(before);
    reload(&mut plugin, "hostloop_crowd");
    host.pump_until("frames of the reloaded build", |got| {
        last_frame(got, "crowd/positions").is_some()
    });
    let got = host.take();
    assert!(
        steps(&got)[0] >= before,
        "resumed at {:?} after {before}",
        steps(&got)
    );
    assert!(last_frame(&got, "crowd/positions").is_some_and(|(_, v, _)| v.len() == 4000));
    plugin.unload(Duration::from_secs(10));
}

/// The template's docs tell its author to rebuild the build its host loads: every `cargo`
/// command they show for the template uses the release profile, and the generic host they
/// run it in (`cargo run --release -p hostloop-host -- target/release/lib....so`) is given the
/// library of that profile — a debug rebuild would never reach a host watching the release
/// library.
#[test]
fn the_template_docs_rebuild_the_profile_their_host_loads() {
    let dir = hostloop_tests::repo_root().join("examples/plugin-template");
    let mut commands = Vec::new();
    for file in ["README.md", "src/lib.rs"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for line in text.lines() {
            let mut rest = line;
            while let Some(at) = rest.find("cargo ") {
                let cmd = &rest[at..];
                let end = cmd.find(['`', ')']).unwrap_or(cmd.len());
                if cmd.contains("hostloop-plugin-template")
                    || cmd.contains("hostloop_plugin_template")
                {
                    commands.push((file, cmd[..end].trim().to_owned()));
                }
                rest = &cmd[end..];
            }
        }
    }
    let host_runs: Vec<&String> = commands
        .iter()
        .map(|(_, c)| c)
        .filter(|c| c.starts_with("cargo run") && c.contains("-p hostloop-host"))
        .collect();
    assert!(
        !host_runs.is_empty(),
        "the generic host's command is shown: {commands:?}"
    );
    assert!(
        commands
            .iter()
            .any(|(_, c)| c.starts_with("cargo build") && c.contains("-p hostloop-plugin-template")),
        "a rebuild command is shown: {commands:?}"
    );
    for (file, cmd) in &commands {
        assert!(
            cmd.contains("--release"),
            "{file}: `{cmd}` is not the release build"
        );
    }
    for cmd in host_runs {
        let libraries: Vec<&str> = cmd
            .split_whitespace()
            .filter(|w| w.ends_with(".so"))
            .collect();
        assert!(
            !libraries.is_empty()
                && libraries
                    .iter()
                    .all(|l| l.starts_with("target/release/libhostloop_plugin_template")),
            "`{cmd}` gives the host the release library"
        );
    }
}

/// The template is a starting point, not a workspace member only: copied out of the
/// repository, with its one dependency pointed at this checkout (the step its README gives),
/// it builds on its own, and the library it builds loads as the `orbits` plugin and sends
/// frames.
#[test]
fn the_plugin_template_builds_and_loads_once_copied_out_of_the_workspace() {
    let root = hostloop_tests::repo_root();
    let src = root.join("examples/plugin-template");
    // Outside the repository (a copy inside it would be claimed by its workspace).
    let dir = std::env::temp_dir().join(format!("hostloop-template-copy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let copy = dir.join("my-tool");
    copy_dir(&src, &copy);
    let manifest = std::fs::read_to_string(copy.join("Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("workspace = true") && !manifest.contains(".workspace"),
        "the template leans on the workspace:\n{manifest}"
    );
    let sdk = root.join("sdk");
    let pointed = manifest.replace(
        "path = \"../../sdk\"",
        &format!("path = {:?}", sdk.display().to_string()),
    );
    assert_ne!(
        pointed, manifest,
        "the README's dependency line is in Cargo.toml"
    );
    std::fs::write(copy.join("Cargo.toml"), pointed).unwrap();
    // The repository's lock file pins the versions already in the local registry cache, so the
    // copy builds without the network (a user's copy resolves its own).
    std::fs::copy(root.join("Cargo.lock"), copy.join("Cargo.lock")).unwrap();
    // A target directory of its own that survives runs (a first build compiles hostloop).
    let target = root.join("target").join("template-copy");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(&copy)
        .args(["build", "--offline", "--lib"])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_PKG_NAME");
    hostloop_tests::run(&mut cmd, std::time::Duration::from_secs(900))
        .assert_success("cargo build in a copy of the template");
    let lib = target.join("debug").join("libhostloop_plugin_template.so");
    assert!(lib.is_file(), "{} was not built", lib.display());

    let rt = Runtime::builder().workers(1).build().unwrap();
    let steps = Arc::new(Mutex::new(0u64));
    let seen = steps.clone();
    rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
        if let ("orbits/step", Payload::Bytes(b)) = (m.topic, m.payload) {
            if let Ok(b) = <[u8; 8]>::try_from(b) {
                *seen.lock().unwrap() = u64::from_le_bytes(b);
            }
        }
    })));
    let plugin = rt.load_plugin(&lib).unwrap();
    assert_eq!(plugin.info().name, "orbits");
    let report = rt
        .run_until(
            || *steps.lock().unwrap() >= 3,
            std::time::Duration::from_millis(2),
            std::time::Duration::from_secs(120),
        )
        .unwrap();
    assert!(report.finished, "the copied plugin's frames did not arrive");
    drop(plugin);
    let _ = std::fs::remove_dir_all(&dir);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A reconfigure changes only what it names: `rate`, `playing`, `delivery` and `lockstep`
/// apply to the running simulation and its step goes on (no frame after them is of a step
/// before them); only a key that changes the state (`agents`) starts again at step 0.
#[test]
fn reconfiguring_keys_that_need_no_rebuild_keeps_the_running_simulation_and_its_step() {
    let host = Host::new();
    let plugin = host.rt.load_plugin(fixture("hostloop_particles")).unwrap();
    host.configure("particles/configure", "agents=2000");
    host.pump_until("the 2000-particle simulation past step 20", |got| {
        last_frame(got, "particles/positions").is_some_and(|(s, v, _)| s >= 20 && v.len() == 6000)
    });
    // Each entry is sent as one configure or more (a pause and a play again).
    for texts in [
        &["rate=500"][..],
        &["delivery=every"],
        &["lockstep=1 rate=0", "lockstep=0"],
        &["playing=0", "playing=1"],
        &["delivery=latest"],
    ] {
        host.take();
        // Frames already queued may still arrive; the step reached is read after a pump.
        host.pump_until("a frame", |got| !steps(got).is_empty());
        let before = steps(&host.take()).into_iter().max().unwrap();
        for text in texts {
            host.configure("particles/configure", text);
        }
        let text = texts.join(", then ");
        host.pump_until("20 more steps", |got| {
            steps(got)
                .into_iter()
                .max()
                .is_some_and(|s| s >= before + 20)
        });
        let got = host.take();
        let after = steps(&got);
        assert!(
            after.iter().all(|&s| s >= before),
            "`{text}` went back from step {before}: {after:?}"
        );
        assert!(
            last_frame(&got, "particles/positions").is_some_and(|(_, v, _)| v.len() == 6000),
            "`{text}` kept the 2000 particles"
        );
    }
    // A state key does rebuild: it starts again from step 0 (a `latest` host may see a later
    // first step, never the old simulation's).
    host.pump_until("a frame", |got| !steps(got).is_empty());
    let before = steps(&host.take()).into_iter().max().unwrap();
    host.configure("particles/configure", "agents=1000");
    host.pump_until("the rebuilt simulation", |got| {
        last_frame(got, "particles/positions").is_some_and(|(_, v, _)| v.len() == 3000)
    });
    let got = host.take();
    let first = got
        .iter()
        .position(|(_, g)| matches!(g, Got::Floats(v, _) if v.len() == 3000))
        .unwrap();
    let Some((_, Got::Step(step))) = got[..first]
        .iter()
        .rev()
        .find(|(_, g)| matches!(g, Got::Step(_)))
    else {
        panic!("no step before the first rebuilt frame")
    };
    assert!(
        *step < before,
        "the rebuilt simulation's first frame is step {step}, after {before}"
    );
    assert_eq!(plugin.unload(Duration::from_secs(10)).stragglers, 0);
}

/// A condition over the (step, configuration) pairs received.
type StepsDone = dyn Fn(&[(u64, u64)]) -> bool;

/// Every frame names the configuration it belongs to (`<name>/step` = step, configuration): a
/// host that configures the particles plugin to its own default size (100,000) can tell the
/// frames it asked for from the default simulation's, which the size alone cannot. Numbers
/// count accepted configures; a refused one counts nothing.
#[test]
fn frames_name_their_configuration_even_at_the_defaults_own_size() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let got: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let sink = got.clone();
    rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
        if let ("particles/step", Payload::Bytes(b)) = (m.topic, m.payload) {
            assert_eq!(b.len(), 16, "step and configuration");
            let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
            sink.lock().unwrap().push((word(0), word(8)));
        }
    })));
    let plugin = rt.load_plugin(fixture("hostloop_particles")).unwrap();
    let wait = |what: &str, done: &StepsDone| {
        let report = rt
            .run_until(
                || done(&got.lock().unwrap()),
                Duration::from_millis(2),
                Duration::from_secs(120),
            )
            .unwrap();
        assert!(report.finished, "{what}: {:?}", got.lock().unwrap().last());
    };
    wait("frames of the default", &|g| {
        g.iter().any(|&(s, c)| c == 0 && s > 0)
    });
    let post = |text: &str| {
        rt.post_event(Event::Custom {
            topic: "particles/configure".into(),
            bytes: text.as_bytes().to_vec(),
            coalesce: false,
        })
        .unwrap();
    };
    post("agents=0"); // refused: counts nothing
    post("agents=100000 delivery=every");
    wait("10 frames of configuration 1", &|g| {
        g.iter().filter(|&&(_, c)| c == 1).count() >= 10
    });
    let g = got.lock().unwrap().clone();
    let first = g.iter().position(|&(_, c)| c == 1).unwrap();
    assert!(g[..first].iter().all(|&(_, c)| c == 0), "{g:?}");
    let ours: Vec<u64> = g[first..].iter().map(|&(s, _)| s).collect();
    assert!(
        g[first..].iter().all(|&(_, c)| c == 1),
        "only frames of configuration 1 follow"
    );
    assert_eq!(
        ours,
        (0..ours.len() as u64).collect::<Vec<_>>(),
        "the configured simulation's every frame, from its step 0"
    );
    // A live change is a configuration too: the running simulation's frames take its number.
    post("rate=0");
    wait("frames of configuration 2", &|g| {
        g.iter().any(|&(_, c)| c == 2)
    });
    let g = got.lock().unwrap().clone();
    let at = g.iter().position(|&(_, c)| c == 2).unwrap();
    assert!(g[at].0 > 0, "the live change kept the step: {:?}", g[at]);
    assert_eq!(plugin.unload(Duration::from_secs(10)).stragglers, 0);
}

/// A host keeps the particles plugin's frames past their sink calls (`Message::lend`): the
/// frames are the plugin's own memory, they stay intact while the simulation plays on, and a
/// reload or an unload neither waits for the leases nor invalidates them (the old library
/// stays mapped; releasing the leases afterwards runs its code safely).
#[test]
fn leases_on_a_plugins_frames_outlive_reload_and_unload_without_holding_them_up() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    /// Each kept frame and a copy of it taken when it arrived.
    type Kept = Arc<Mutex<Vec<(bridge::sdk::Lease, Vec<f32>)>>>;
    let leases: Kept = Arc::default();
    let kept = leases.clone();
    rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
        if m.topic == "particles/positions" {
            let lease = m.lend().expect("the plugin's frames are lendable");
            let copy = lease
                .bytes()
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
                .collect();
            kept.lock().unwrap().push((lease, copy));
        }
    })));
    let mut plugin = rt.load_plugin(fixture("hostloop_particles")).unwrap();
    rt.post_event(Event::Custom {
        topic: "particles/configure".into(),
        bytes: b"agents=1000 playing=1".to_vec(),
        coalesce: false,
    })
    .unwrap();
    let wait = |n: usize| {
        let report = rt
            .run_until(
                || leases.lock().unwrap().len() >= n,
                Duration::from_millis(2),
                HANG_LIMIT,
            )
            .unwrap();
        assert!(report.finished, "{n} frames did not arrive");
    };
    wait(5);
    let intact = |what: &str| {
        for (i, (lease, copy)) in leases.lock().unwrap().iter().enumerate() {
            let now: Vec<f32> = lease
                .bytes()
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(&now, copy, "{what}: kept frame {i} changed");
        }
    };
    intact("while playing");
    let started = std::time::Instant::now();
    plugin
        .reload(fixture("hostloop_particles"), Duration::from_secs(10))
        .expect("a reload with leases out");
    let n = leases.lock().unwrap().len();
    wait(n + 3);
    intact("after the reload");
    let report = plugin.unload(Duration::from_secs(10));
    assert_eq!(
        report.stragglers, 0,
        "leases are not stragglers: {report:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "reload and unload waited for the leases"
    );
    intact("after the unload");
    // Released on another thread, after the unload.
    let held = std::mem::take(&mut *leases.lock().unwrap());
    std::thread::spawn(move || drop(held)).join().unwrap();
    rt.set_sink(None);
}
