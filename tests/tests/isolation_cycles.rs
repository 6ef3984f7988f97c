//! 200 spawn / crash / restart cycles of an isolated plugin leave nothing behind: the host's
//! open fds, its child processes and zombies return to where they started, and no `/dev/shm`
//! segment or temporary file is left. Its own test binary, so that no other test opens fds or
//! starts processes meanwhile.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::sdk::plugin::{Isolation, LoadOptions};
use bridge::sdk::{Event, Message, Payload, Runtime};
use hostloop_tests::{fixture, worker_program};

const HANG_LIMIT: Duration = Duration::from_secs(300);
const CYCLES: usize = 200;

/// What this process holds: open fds, live children, zombie children, `/dev/shm` entries and
/// temporary files named for hostloop.
#[derive(Debug, PartialEq, Eq)]
struct Holdings {
    fds: usize,
    children: usize,
    zombies: usize,
    shm: Vec<String>,
    temp: Vec<String>,
}

fn names(dir: &std::path::Path, only_ours: bool) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !only_ours || n.to_lowercase().contains("hostloop"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn holdings() -> Holdings {
    let me = std::process::id().to_string();
    let (mut children, mut zombies) = (0, 0);
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command's closing parenthesis: state, then ppid.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if ppid == Some(me.as_str()) {
            if state == Some("Z") {
                zombies += 1;
            } else {
                children += 1;
            }
        }
    }
    Holdings {
        fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
        children,
        zombies,
        shm: names(std::path::Path::new("/dev/shm"), false),
        temp: names(&std::env::temp_dir(), true),
    }
}

#[test]
fn two_hundred_crash_restart_cycles_leave_no_fd_process_zombie_or_segment_behind() {
    let before = holdings();
    {
        let rt = Runtime::builder().workers(2).build().unwrap();
        let inbox: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = inbox.clone();
        rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
            if let Payload::Bytes(_) = m.payload {
                sink.lock().unwrap().push(m.topic.to_owned());
            }
        })));
        let count = |topic: &str| inbox.lock().unwrap().iter().filter(|t| *t == topic).count();
        let options = LoadOptions::new()
            .isolation(Isolation::OwnProcess)
            .worker_program(worker_program())
            .restart_limit(u32::MAX)
            .restart_backoff(Duration::ZERO)
            .echo_stderr(false);
        let plugin = rt
            .load_plugin_with(fixture("fixture_crashy"), &options)
            .unwrap();
        let mut with_one_worker = None;
        for cycle in 1..=CYCLES {
            let pid = plugin.info().pid.expect("a worker runs");
            rt.post_event(Event::Custom {
                topic: "crashy/crash".into(),
                bytes: b"exit".to_vec(),
                coalesce: false,
            })
            .unwrap();
            let report = rt
                .run_until(
                    || count("hostloop/plugin/restarted") == cycle,
                    Duration::from_millis(2),
                    HANG_LIMIT,
                )
                .unwrap();
            assert!(report.finished, "cycle {cycle}: no restart");
            assert_eq!(count("hostloop/plugin/crashed"), cycle);
            assert_ne!(plugin.info().pid, Some(pid));
            let now = holdings();
            assert_eq!(
                now.zombies, 0,
                "cycle {cycle}: the crashed worker was reaped"
            );
            assert_eq!(now.children, 1, "cycle {cycle}: one worker at a time");
            match with_one_worker {
                None => with_one_worker = Some(now.fds),
                Some(fds) => assert_eq!(now.fds, fds, "cycle {cycle}: fds do not grow"),
            }
        }
        assert_eq!(plugin.info().restarts as usize, CYCLES);
        drop(plugin);
        drop(rt);
    }
    assert_eq!(holdings(), before, "everything the cycles opened is closed");
}
