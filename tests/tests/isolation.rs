//! Isolated plugins: a plugin loaded into a `hostloop-worker` process behaves as it does
//! in-process, and whatever its native code does — a null write, an abort, an exit, a hang, an
//! allocation it cannot get, a `kill -9` from outside — ends only the worker: the host reports
//! it on its sink, restarts the worker and resumes the plugin from its last saved state.
//!
//! Real worker processes, really crashing; every wait is for a condition, with a deadline that
//! only catches a hang.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge::sdk::plugin::{Isolation, LoadOptions, LoadedPlugin, PluginErrorKind};
use bridge::sdk::{Event, Message, Payload, Runtime};
use hostloop_tests::{fixture, test_dir, worker_program};

/// Only fires on failure.
const HANG_LIMIT: Duration = Duration::from_secs(120);

/// What the sink received: the topic, and the bytes (an array's bytes for arrays).
type Inbox = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

struct Host {
    rt: Runtime,
    inbox: Inbox,
}

impl Host {
    fn new() -> Host {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let inbox: Inbox = Arc::default();
        let sink = inbox.clone();
        rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
            let bytes = match m.payload {
                Payload::Bytes(b) => b.to_vec(),
                Payload::Array(a) => a.bytes().to_vec(),
            };
            sink.lock().unwrap().push((m.topic.to_owned(), bytes));
        })));
        Host { rt, inbox }
    }

    fn send(&self, topic: &str, bytes: &[u8]) {
        self.rt
            .post_event(Event::Custom {
                topic: topic.into(),
                bytes: bytes.to_vec(),
                coalesce: false,
            })
            .unwrap();
    }

    /// Pumps (sleeping on the doorbell) until `done` holds over what arrived.
    fn pump_until(&self, what: &str, mut done: impl FnMut(&[(String, Vec<u8>)]) -> bool) {
        let report = self
            .rt
            .run_until(
                || done(&self.inbox.lock().unwrap()),
                Duration::from_millis(2),
                HANG_LIMIT,
            )
            .unwrap();
        let got = self.inbox.lock().unwrap();
        assert!(
            report.finished,
            "{what}: nothing after {HANG_LIMIT:?}; got {:?}, crash reports {:?}",
            topics(&got),
            texts(&got, "hostloop/plugin/crashed")
        );
    }

    fn texts(&self, topic: &str) -> Vec<String> {
        texts(&self.inbox.lock().unwrap(), topic)
    }
}

fn topics(got: &[(String, Vec<u8>)]) -> Vec<String> {
    got.iter().map(|(t, _)| t.clone()).collect()
}

fn texts(got: &[(String, Vec<u8>)], topic: &str) -> Vec<String> {
    got.iter()
        .filter(|(t, _)| t == topic)
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect()
}

/// The `crashy/count` answers: (count, pid of the process that counted).
fn counts(got: &[(String, Vec<u8>)]) -> Vec<(u64, u32)> {
    got.iter()
        .filter(|(t, _)| t == "crashy/count")
        .map(|(_, b)| {
            (
                u64::from_le_bytes(b[..8].try_into().unwrap()),
                u32::from_le_bytes(b[8..12].try_into().unwrap()),
            )
        })
        .collect()
}

fn isolated() -> LoadOptions {
    LoadOptions::new()
        .isolation(Isolation::OwnProcess)
        .worker_program(worker_program())
        .save_interval(Duration::from_millis(20))
        .restart_backoff(Duration::from_millis(10))
        .echo_stderr(false)
}

/// Whether process `pid` is gone — exited *and reaped* (a zombie still has its /proc entry).
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until the main thread of worker `pid` has spun for 0.1 s of CPU time: it is inside the
/// fixture's `hang` (an idle worker's main thread sleeps in `epoll_wait`). Little CPU, so that a
/// loaded machine gets there well before a heartbeat of a few seconds ends the worker.
fn wait_until_spinning(pid: u32) {
    let cpu_ticks = || {
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime is field 14 of the line.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        rest.split_whitespace()
            .nth(11)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    wait_for("the worker spinning in the plugin", || {
        assert!(!gone(pid), "worker {pid} ended before it was seen spinning");
        cpu_ticks() >= 10
    });
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < HANG_LIMIT,
            "{what}: not after {HANG_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Counts to `n` in the plugin and waits until a state saved *after* count `n` was seen has
/// arrived (two saves later: the first may have been asked for before).
fn count_to_and_save(host: &Host, plugin: &LoadedPlugin, n: u64) -> u32 {
    let from = counts(&host.inbox.lock().unwrap())
        .last()
        .map_or(0, |c| c.0);
    for _ in from..n {
        host.send("crashy/tick", b"");
    }
    host.pump_until("the count", |got| {
        counts(got).last().map(|c| c.0) == Some(n)
    });
    let pid = counts(&host.inbox.lock().unwrap()).last().unwrap().1;
    let saves = plugin.info().saves;
    host.pump_until("two saves after the count", |_| {
        plugin.info().saves >= saves + 2
    });
    pid
}

/// Crashes the plugin's worker with `how` and checks the whole story: the host lives, the crash
/// is reported with `cause` (and the plugin's last words), the worker is reaped and restarted,
/// and the plugin counts on from its saved state in a new process.
fn crash_and_resume(how: &str, cause: &str, options: LoadOptions) {
    let host = Host::new();
    let plugin = host
        .rt
        .load_plugin_with(fixture("fixture_crashy"), &options)
        .unwrap();
    let info = plugin.info();
    assert_eq!(info.name, "crashy");
    assert_eq!(info.isolation, Isolation::OwnProcess);
    let pid = info.pid.expect("a worker pid");
    assert_ne!(pid, std::process::id(), "it runs in another process");

    assert_eq!(
        count_to_and_save(&host, &plugin, 5),
        pid,
        "counted in the worker"
    );

    if how == "kill" {
        let status = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    } else {
        host.send("crashy/crash", how.as_bytes());
    }
    host.pump_until("the crash report", |got| {
        !texts(got, "hostloop/plugin/crashed").is_empty()
    });
    let report = host.texts("hostloop/plugin/crashed").remove(0);
    assert!(report.contains("plugin: crashy"), "{report}");
    assert!(report.contains(&format!("pid: {pid}")), "{report}");
    assert!(report.contains(cause), "expected {cause:?} in:\n{report}");
    assert!(report.contains("restarting"), "{report}");
    if how != "kill" {
        assert!(
            report.contains(&format!("crashy: {how} now")),
            "the last words are in the report:\n{report}"
        );
    }
    host.pump_until("the restart", |got| {
        !texts(got, "hostloop/plugin/restarted").is_empty()
    });
    let restarted = host.texts("hostloop/plugin/restarted").remove(0);
    assert!(
        restarted.contains("from its last saved state"),
        "{restarted}"
    );
    assert!(gone(pid), "the crashed worker {pid} was reaped");

    let info = plugin.info();
    assert_eq!((info.crashes, info.restarts), (1, 1));
    assert!(info.last_crash.as_deref().unwrap().contains(cause));
    assert!(info.down.is_none());
    let new_pid = info.pid.expect("the restarted worker's pid");
    assert_ne!(new_pid, pid);

    // The state saved at 5 came back: the next tick counts 6, in the new worker.
    host.send("crashy/tick", b"");
    host.pump_until("the count after the restart", |got| {
        counts(got).last().map(|c| c.0) == Some(6)
    });
    assert_eq!(
        counts(&host.inbox.lock().unwrap()).last(),
        Some(&(6, new_pid))
    );

    let report = plugin.unload(Duration::from_secs(5));
    assert_eq!(report.stragglers, 0, "the worker quit when asked");
    wait_for("the worker reaped after unload", || gone(new_pid));
}

#[test]
fn a_null_write_ends_the_worker_not_the_host_and_the_plugin_resumes() {
    crash_and_resume("segv", "killed by signal 11 (SIGSEGV)", isolated());
}

#[test]
fn an_abort_ends_the_worker_not_the_host_and_the_plugin_resumes() {
    crash_and_resume("abort", "killed by signal 6 (SIGABRT)", isolated());
}

#[test]
fn an_exit_ends_the_worker_not_the_host_and_the_plugin_resumes() {
    crash_and_resume("exit", "exited with status 3", isolated());
}

#[test]
fn an_allocation_storm_ends_the_worker_not_the_host_and_the_plugin_resumes() {
    crash_and_resume("alloc", "killed by signal 6 (SIGABRT)", isolated());
    // (Its last words include Rust's "memory allocation of 1099511627776 bytes failed".)
}

#[test]
fn kill_9_from_outside_ends_the_worker_not_the_host_and_the_plugin_resumes() {
    crash_and_resume("kill", "killed by signal 9 (SIGKILL)", isolated());
}

#[test]
fn a_hung_worker_is_killed_at_its_heartbeat_and_the_plugin_resumes() {
    let options = isolated().heartbeat(Duration::from_secs(1));
    crash_and_resume("hang", "did not answer for 1s (hung)", options);
}

#[test]
fn a_request_pending_when_the_worker_hangs_resolves_with_an_error() {
    let host = Host::new();
    // Long enough that the test sees the worker spinning before the heartbeat ends it, on a
    // loaded machine too (the request below is answered by that heartbeat).
    let options = isolated().heartbeat(Duration::from_secs(5));
    let mut plugin = host
        .rt
        .load_plugin_with(fixture("fixture_crashy"), &options)
        .unwrap();
    let pid = plugin.info().pid.unwrap();
    host.send("crashy/crash", b"hang");
    // A pump forwards the event; the worker's main thread then spins in the plugin.
    host.rt.pump(Duration::from_millis(50)).unwrap();
    wait_until_spinning(pid);
    let start = Instant::now();
    let err = plugin
        .reload(fixture("fixture_crashy"), Duration::from_secs(5))
        .unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::Worker, "{err}");
    assert!(err.reason().contains("hung"), "{err}");
    assert!(
        start.elapsed() < HANG_LIMIT,
        "resolved by the heartbeat, not by the request's own timeout"
    );
    wait_for("the hung worker reaped", || gone(pid));
}

/// The last `crashy/ballasted` answer: (length, checksum) of the plugin's ballast.
fn ballast(host: &Host) -> Option<(u64, u64)> {
    let got = host.inbox.lock().unwrap();
    let (_, b) = got.iter().rev().find(|(t, _)| t == "crashy/ballasted")?;
    Some((
        u64::from_le_bytes(b[..8].try_into().unwrap()),
        u64::from_le_bytes(b[8..16].try_into().unwrap()),
    ))
}

/// A saved state larger than any frame may be (64 MiB) crosses in a sealed memfd both ways —
/// the worker's checkpoints to the host, the host's copy back into the restarted worker — and
/// the plugin comes back with all of it.
#[test]
fn a_state_larger_than_a_frame_is_saved_and_restored_across_a_crash() {
    let host = Host::new();
    // An 80 MiB state costs the fixture's (debug-built) main thread seconds per save on a
    // loaded machine, during which it cannot answer the heartbeat: this test is about size, so
    // the heartbeat only catches a real hang.
    let options = isolated()
        .save_interval(Duration::from_millis(200))
        .heartbeat(HANG_LIMIT);
    let plugin = host
        .rt
        .load_plugin_with(fixture("fixture_crashy"), &options)
        .unwrap();
    let size: u64 = 80 << 20;
    host.send("crashy/ballast", size.to_string().as_bytes());
    host.pump_until("the ballast", |got| {
        got.iter().any(|(t, _)| t == "crashy/ballasted")
    });
    let made = ballast(&host).unwrap();
    assert_eq!(made.0, size);
    let pid = count_to_and_save(&host, &plugin, 3);
    assert!(
        host.texts("hostloop/plugin/crashed").is_empty(),
        "the checkpoints crossed without faulting the worker: {:?}",
        host.texts("hostloop/plugin/crashed")
    );

    host.send("crashy/crash", b"segv");
    host.pump_until("the restart", |got| {
        !texts(got, "hostloop/plugin/restarted").is_empty()
    });
    let restarted = host.texts("hostloop/plugin/restarted").remove(0);
    assert!(
        restarted.contains("from its last saved state"),
        "{restarted}"
    );
    let new_pid = plugin.info().pid.expect("restarted");
    assert_ne!(new_pid, pid);
    host.inbox.lock().unwrap().clear();
    host.send("crashy/ballast", b"");
    host.send("crashy/tick", b"");
    host.pump_until("the restored ballast and count", |got| {
        !counts(got).is_empty() && got.iter().any(|(t, _)| t == "crashy/ballasted")
    });
    assert_eq!(
        ballast(&host),
        Some(made),
        "every byte of the state came back"
    );
    assert_eq!(
        counts(&host.inbox.lock().unwrap()).last(),
        Some(&(4, new_pid))
    );
    let report = plugin.unload(Duration::from_secs(5));
    assert_eq!(report.stragglers, 0);
}

#[test]
fn after_its_restart_limit_a_plugin_stays_down_and_says_why() {
    let host = Host::new();
    let options = isolated().restart_limit(2);
    let plugin = host
        .rt
        .load_plugin_with(fixture("fixture_crashy"), &options)
        .unwrap();
    for round in 1..=3 {
        let pid = plugin.info().pid.expect("running");
        host.send("crashy/crash", b"exit");
        host.pump_until("a crash report", |got| {
            texts(got, "hostloop/plugin/crashed").len() == round
        });
        if round < 3 {
            host.pump_until("a restart", |got| {
                texts(got, "hostloop/plugin/restarted").len() == round
            });
        }
        wait_for("the worker reaped", || gone(pid));
    }
    host.pump_until("the down report", |got| {
        !texts(got, "hostloop/plugin/down").is_empty()
    });
    let down = host.texts("hostloop/plugin/down").remove(0);
    assert!(down.contains("after 2 restarts"), "{down}");
    assert!(down.contains("exited with status 3"), "{down}");
    let last = host.texts("hostloop/plugin/crashed").pop().unwrap();
    assert!(last.contains("staying down"), "{last}");
    let info = plugin.info();
    assert_eq!(info.pid, None);
    assert_eq!((info.crashes, info.restarts), (3, 2));
    assert!(info.down.unwrap().contains("after 2 restarts"));
    // Unloading a plugin that is down is immediate and clean.
    let report = plugin.unload(Duration::from_secs(1));
    assert_eq!(report.stragglers, 0);
}

#[test]
fn unload_and_shutdown_end_a_hung_worker_within_their_deadline() {
    let host = Host::new();
    // A heartbeat far away: it is the deadline of unload that must end the worker.
    let options = isolated().heartbeat(Duration::from_secs(600));
    let plugin = host
        .rt
        .load_plugin_with(fixture("fixture_crashy"), &options)
        .unwrap();
    let pid = plugin.info().pid.unwrap();
    host.send("crashy/crash", b"hang");
    host.rt.pump(Duration::from_millis(50)).unwrap();
    wait_until_spinning(pid);
    let report = plugin.unload(Duration::from_millis(500));
    assert_eq!(report.stragglers, 1, "it had to be killed");
    assert!(gone(pid), "killed and reaped by the time unload returned");

    // Shutdown does the same for every worker it still has.
    let plugin = host
        .rt
        .load_plugin_with(fixture("fixture_crashy"), &options)
        .unwrap();
    let pid = plugin.info().pid.unwrap();
    host.send("crashy/crash", b"hang");
    host.rt.pump(Duration::from_millis(50)).unwrap();
    wait_until_spinning(pid);
    let report = host.rt.shutdown(Duration::from_millis(500));
    assert!(report.stragglers.is_empty());
    assert!(gone(pid), "killed and reaped by the time shutdown returned");
    // The handle outlives its runtime: unloading it now is a no-op, not a hang.
    let report = plugin.unload(Duration::from_secs(1));
    assert!(report.elapsed < HANG_LIMIT);
}

#[test]
fn plugins_of_one_group_share_a_worker_and_its_fate() {
    let host = Host::new();
    let group = isolated().isolation(Isolation::SharedProcess("sims".into()));
    let crashy = host
        .rt
        .load_plugin_with(fixture("fixture_crashy"), &group)
        .unwrap();
    let counter = host
        .rt
        .load_plugin_with(fixture("fixture_counter_v1"), &group)
        .unwrap();
    let pid = crashy.info().pid.unwrap();
    assert_eq!(counter.info().pid, Some(pid), "one worker for the group");
    assert_eq!(
        counter.info().isolation,
        Isolation::SharedProcess("sims".into())
    );
    // A plugin's name stays unique per runtime, wherever it runs.
    let err = host
        .rt
        .load_plugin_with(fixture("fixture_crashy"), &isolated())
        .unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::AlreadyLoaded, "{err}");

    host.send("crashy/crash", b"abort");
    host.pump_until("a report for each plugin of the group", |got| {
        texts(got, "hostloop/plugin/crashed").len() == 2
    });
    host.pump_until("both restarted", |got| {
        texts(got, "hostloop/plugin/restarted").len() == 2
    });
    let new_pid = crashy.info().pid.unwrap();
    assert_ne!(new_pid, pid);
    assert_eq!(counter.info().pid, Some(new_pid), "restarted together");
    drop(crashy);
    assert!(!gone(new_pid), "the worker still hosts the counter");
    drop(counter);
    wait_for("the group's worker ended with its last plugin", || {
        gone(new_pid)
    });
}

#[test]
fn a_missing_or_non_executable_worker_program_is_a_clear_load_error() {
    let host = Host::new();
    let dir = test_dir!("isolation-missing-worker");
    let missing = dir.join("no-such-worker");
    let err = host
        .rt
        .load_plugin_with(
            fixture("fixture_crashy"),
            &isolated().worker_program(&missing),
        )
        .unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::Worker, "{err}");
    assert!(err.reason().contains("no-such-worker"), "{err}");

    let not_exec = dir.join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    let err = host
        .rt
        .load_plugin_with(
            fixture("fixture_crashy"),
            &isolated().worker_program(&not_exec),
        )
        .unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::Worker, "{err}");
    assert!(err.reason().contains("not-executable"), "{err}");
    // A missing plugin is found missing before any worker starts.
    let err = host
        .rt
        .load_plugin_with(dir.join("libnothing.so"), &isolated())
        .unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::FileNotFound, "{err}");
    // A file that is not a library: the worker's loader says so, the worker is fine.
    let err = host
        .rt
        .load_plugin_with(&not_exec, &isolated())
        .unwrap_err();
    assert_eq!(err.kind(), PluginErrorKind::NotALibrary, "{err}");
    // And the host still loads plugins in workers afterwards.
    let plugin = host
        .rt
        .load_plugin_with(fixture("fixture_crashy"), &isolated())
        .unwrap();
    assert!(plugin.info().pid.is_some());
}

/// A fake worker (a shell script) that writes `bytes` (octal escapes for `printf`) to its
/// socket, then waits to be killed.
fn fake_worker(dir: &Path, name: &str, bytes: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    // `$2` is the socket's fd (`--fd N`), which may have two digits: bash, not sh, redirects
    // those. `exec sleep` keeps the pid, so killing it ends it.
    let script = format!("#!/usr/bin/env bash\nprintf '{bytes}' 1>&\"$2\"\nexec sleep 60\n");
    std::fs::write(&path, script).unwrap();
    let mut perms = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&path, perms).unwrap();
    path
}

#[test]
fn corrupt_truncated_or_oversized_frames_end_that_worker_never_the_host() {
    let host = Host::new();
    let dir = test_dir!("isolation-bad-frames");
    let cases = [
        // A length of 4 GiB: refused from the prefix alone.
        (
            "oversized",
            r"\377\377\377\377",
            "a frame of 4294967295 bytes",
        ),
        // 16 bytes announced and sent, none of them a snapshot.
        (
            "corrupt",
            r"\020\000\000\000garbage-garbage!",
            "a damaged frame",
        ),
        // 100 bytes announced, 3 sent, then silence: the heartbeat ends it.
        ("truncated", r"\144\000\000\000abc", "did not answer"),
    ];
    for (name, bytes, why) in cases {
        let program = fake_worker(&dir.join(""), name, bytes);
        let options = isolated()
            .worker_program(&program)
            .heartbeat(Duration::from_secs(1));
        let err = host
            .rt
            .load_plugin_with(fixture("fixture_crashy"), &options)
            .unwrap_err();
        assert_eq!(err.kind(), PluginErrorKind::Worker, "{name}: {err}");
        assert!(
            err.reason().contains(why),
            "{name}: expected {why:?} in {err}"
        );
    }
    // The host is fine and still runs isolated plugins.
    let plugin = host
        .rt
        .load_plugin_with(fixture("fixture_crashy"), &isolated())
        .unwrap();
    host.send("crashy/tick", b"");
    host.pump_until("a count", |got| !counts(got).is_empty());
    drop(plugin);
}

#[test]
fn an_isolated_plugin_reloads_with_its_state_in_its_worker() {
    let host = Host::new();
    let mut plugin = host
        .rt
        .load_plugin_with(fixture("fixture_counter_v1"), &isolated())
        .unwrap();
    let pid = plugin.info().pid.unwrap();
    host.send("tick", b"");
    host.pump_until("v1's step", |got| {
        got.iter().any(|(t, _)| t == "counter/step")
    });
    plugin
        .reload(fixture("fixture_counter_v2"), Duration::from_secs(10))
        .unwrap();
    let info = plugin.info();
    assert_eq!((info.generation, info.version.as_str()), (1, "2.0.0"));
    assert_eq!(info.pid, Some(pid), "reloaded inside the same worker");
    host.send("tick", b"");
    host.pump_until("v2's step", |got| {
        got.iter()
            .filter(|(t, _)| t == "counter/step")
            .any(|(_, b)| u32::from_le_bytes(b[..4].try_into().unwrap()) == 2)
    });
    // counter/step = [build u32, step u64, value u64]: v1 added 1, v2 adds 2 on top of it.
    let got = host.inbox.lock().unwrap().clone();
    let last = &got.iter().rfind(|(t, _)| t == "counter/step").unwrap().1;
    let value = u64::from_le_bytes(last[12..20].try_into().unwrap());
    assert_eq!(value, 3, "the state crossed the reload inside the worker");
}

/// The particles plugin's frames of steps 0..=`last` of a 1000-particle simulation, by step:
/// `particles/step` (a u64) is followed by that step's `particles/positions`.
fn particle_frames(host: &Host, agents: usize, last: u64) -> Vec<Vec<u8>> {
    let bytes_per_frame = agents * 3 * 4;
    host.send(
        "particles/configure",
        format!("agents={agents} delivery=every").as_bytes(),
    );
    let frames = |got: &[(String, Vec<u8>)]| {
        let mut out: Vec<Option<Vec<u8>>> = vec![None; last as usize + 1];
        let mut step = None;
        for (topic, bytes) in got {
            match topic.as_str() {
                "particles/step" => step = Some(u64::from_le_bytes(bytes[..8].try_into().unwrap())),
                "particles/positions" if bytes.len() == bytes_per_frame => {
                    if let Some(s) = step.take().filter(|&s| s <= last) {
                        out[s as usize].get_or_insert_with(|| bytes.clone());
                    }
                }
                _ => step = None,
            }
        }
        out
    };
    host.pump_until("steps 0 to the last of the rebuilt simulation", |got| {
        frames(got).iter().all(Option::is_some)
    });
    frames(&host.inbox.lock().unwrap())
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

/// Steps 0..=`last` of `agents` particles, in-process and isolated, compared bit for bit.
fn compare_particles(agents: usize, last: u64) -> bridge::sdk::plugin::PluginInfo {
    let here = Host::new();
    let local = here.rt.load_plugin(fixture("hostloop_particles")).unwrap();
    let expected = particle_frames(&here, agents, last);
    drop(local);

    let there = Host::new();
    let remote = there
        .rt
        .load_plugin_with(fixture("hostloop_particles"), &isolated())
        .unwrap();
    assert!(remote.info().pid.is_some());
    let got = particle_frames(&there, agents, last);
    assert_eq!(got.len(), expected.len());
    for (step, (a, b)) in got.iter().zip(&expected).enumerate() {
        assert!(
            a == b,
            "step {step}: the isolated frame differs from the in-process one"
        );
    }
    // The frames really move (a comparison of two empty runs would prove nothing).
    assert_ne!(expected[0], expected[last as usize]);
    remote.info()
}

#[test]
fn the_particles_plugin_gives_bit_identical_frames_in_process_and_isolated() {
    compare_particles(1000, 20);
}

#[test]
fn large_frames_travel_through_shared_memory_bit_identical() {
    // 100k particles: 1.2 MB per frame, above the 64 KiB inline limit.
    let info = compare_particles(100_000, 5);
    assert!(
        info.shared_payloads >= 6,
        "every frame through a shared region: {info:?}"
    );
}
