//! Shared read-only blobs: a 256 MiB blob made once by the host and read, byte for byte, by a
//! plugin in the host's process and by plugins in two worker processes, takes the memory of one
//! copy, not three: every process maps the same sealed pages (read from `/proc`). Its own test
//! binary, so that no other test's memory moves the numbers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bridge::sdk::plugin::{Isolation, LoadOptions};
use bridge::sdk::{Event, Message, Payload, Runtime};
use hostloop_tests::{fixture, worker_program};

/// What the sink received: topic and bytes.
type Inbox = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

const HANG_LIMIT: Duration = Duration::from_secs(300);
const MIB: u64 = 1 << 20;
const SIZE: u64 = 256 * MIB;

fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0u64, |a, &b| a.wrapping_mul(31).wrapping_add(u64::from(b)))
}

/// A `key:   N kB` field of a `/proc` file, in bytes.
fn kb_field(path: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {key} in {path}:\n{text}"))
        * 1024
}

#[test]
fn a_blob_read_by_three_plugins_in_three_processes_is_in_memory_once() {
    let shmem_before = kb_field("/proc/meminfo", "Shmem:");
    let rt = Runtime::builder().workers(1).build().unwrap();
    let inbox: Inbox = Arc::default();
    let sink = inbox.clone();
    rt.set_sink(Some(Box::new(move |m: &Message<'_>| {
        if let Payload::Bytes(b) = m.payload {
            sink.lock().unwrap().push((m.topic.to_owned(), b.to_vec()));
        }
    })));
    let expected = {
        let bytes: Vec<u8> = (0..SIZE)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let sum = checksum(&bytes);
        let blob = rt.create_blob("scene/mesh", &bytes).unwrap();
        assert_eq!(blob.len() as u64, SIZE);
        sum
    }; // the source bytes are freed: only the sealed blob remains

    let isolated = LoadOptions::new()
        .isolation(Isolation::OwnProcess)
        .worker_program(worker_program())
        .echo_stderr(false);
    let _a = rt.load_plugin(fixture("fixture_reader_a")).unwrap();
    let b = rt
        .load_plugin_with(fixture("fixture_reader_b"), &isolated)
        .unwrap();
    let c = rt
        .load_plugin_with(fixture("fixture_reader_c"), &isolated)
        .unwrap();
    let pids = [
        std::process::id(),
        b.info().pid.unwrap(),
        c.info().pid.unwrap(),
    ];
    assert!(pids[0] != pids[1] && pids[1] != pids[2] && pids[0] != pids[2]);

    rt.post_event(Event::Custom {
        topic: "reader/read".into(),
        bytes: b"scene/mesh".to_vec(),
        coalesce: false,
    })
    .unwrap();
    let report = rt
        .run_until(
            || inbox.lock().unwrap().len() == 3,
            Duration::from_millis(2),
            HANG_LIMIT,
        )
        .unwrap();
    assert!(
        report.finished,
        "three answers: {:?}",
        inbox.lock().unwrap()
    );
    for (topic, answer) in inbox.lock().unwrap().iter() {
        let len = u64::from_le_bytes(answer[..8].try_into().unwrap());
        let sum = u64::from_le_bytes(answer[8..16].try_into().unwrap());
        let pid = u32::from_le_bytes(answer[16..20].try_into().unwrap());
        assert_eq!(len, SIZE, "{topic}: the whole blob");
        assert_eq!(sum, expected, "{topic}: the same bytes");
        let which = ["reader-a/read", "reader-b/read", "reader-c/read"]
            .iter()
            .position(|t| t == topic)
            .unwrap();
        assert_eq!(pid, pids[which], "{topic} answered from its own process");
    }

    // Each process has all of it resident (it read every byte)...
    let mut pss = 0;
    for pid in pids {
        let rss_shmem = kb_field(&format!("/proc/{pid}/status"), "RssShmem:");
        assert!(
            rss_shmem >= SIZE - 8 * MIB,
            "process {pid} maps the blob: RssShmem {} MiB",
            rss_shmem / MIB
        );
        pss += kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss_Shmem:");
    }
    // ...and the three share one copy: their proportional shares add up to one blob, not three.
    assert!(
        pss < SIZE + 32 * MIB && pss > SIZE - 32 * MIB,
        "the shared pages are counted once across the three: Pss_Shmem sums to {} MiB",
        pss / MIB
    );
    let shmem_growth = kb_field("/proc/meminfo", "Shmem:").saturating_sub(shmem_before);
    assert!(
        shmem_growth < SIZE + SIZE / 2,
        "the system's shared memory grew by one copy ({} MiB), not three",
        shmem_growth / MIB
    );
    println!(
        "256 MiB blob, 3 readers in 3 processes: Pss_Shmem sum {} MiB, system Shmem +{} MiB",
        pss / MIB,
        shmem_growth / MIB
    );
}
