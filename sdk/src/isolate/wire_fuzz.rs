//! Frames from worker processes are untrusted (issue #16, item 5): mutated real frames —
//! bit flips, truncations, extensions, edited length fields and sealed-bytes announcements,
//! hostile values — through [`Inbox::next`] and [`Msg::decode`] are errors (or messages),
//! never panics, and a decoded message never holds more heap than its frame's bytes.
//!
//! Allocation is bounded structurally here, not by a counting allocator (that would count
//! every other unit test of the crate): `decode` borrows from the frame through the snapshot
//! reader, whose length prefixes are checked against the bytes that remain before anything is
//! read, and allocates only by copying such a borrowed slice (`to_owned`, `to_vec`) into the
//! message, plus an error's text. So the message's heap bytes, checked below for every case,
//! are its allocation, and they are at most the frame's length. A length prefix is refused
//! above [`MAX_FRAME`] before anything is allocated, and a frame is decoded from the bytes
//! already received, never from a buffer sized by its prefix. Sealed bytes are mapped, not
//! copied, and only after the memfd proved to be sealed and of the announced size.
//!
//! The mutator is a seeded xorshift; a failure names the seed and the frame.

use std::os::fd::OwnedFd;

use super::*;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEED: u64 = 0x5EED_F4A3_E000_0001;

const HOSTILE: [u64; 7] = [
    1 << 40,
    u64::MAX,
    u64::MAX / 4 + 1,
    1 << 32,
    i64::MAX as u64,
    MAX_SEALED + 1,
    0,
];

/// `bytes` mutated; `lengths` are where its `u64` length fields are.
fn mutate(rng: &mut Rng, bytes: &[u8], lengths: &[usize]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let len = b.len();
    match rng.below(6) {
        0 => {
            for _ in 0..=rng.below(3) {
                let bit = rng.below(len * 8);
                b[bit / 8] ^= 1 << (bit % 8);
            }
        }
        1 => b.truncate(rng.below(len)),
        2 => (0..=rng.below(32)).for_each(|_| b.push(rng.next() as u8)),
        3 if !lengths.is_empty() => {
            let at = lengths[rng.below(lengths.len())];
            let old = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
            let new = match rng.below(3) {
                0 => HOSTILE[rng.below(HOSTILE.len())],
                1 => old.wrapping_add(1 + rng.below(64) as u64),
                _ => old.wrapping_sub(1 + rng.below(64) as u64),
            };
            b[at..at + 8].copy_from_slice(&new.to_le_bytes());
        }
        3 | 4 => {
            let value = HOSTILE[rng.below(HOSTILE.len())].to_le_bytes();
            let at = rng.below(len);
            let end = (at + [1, 2, 4, 8][rng.below(4)]).min(len);
            b[at..end].copy_from_slice(&value[..end - at]);
        }
        _ => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(16));
            if rng.below(2) == 0 {
                b.drain(at..at + n);
            } else {
                let copy = b[at..at + n].to_vec();
                b.splice(at..at, copy);
            }
        }
    }
    b
}

/// Where a frame body's payload starts (see the snapshot layout).
fn payload_start(body: &[u8]) -> usize {
    23 + usize::from(body[10])
}

/// A frame (length prefix and body) whose body is an intact snapshot of `payload`: damage
/// behind the checksum, which only the message decoder can find.
fn frame_of(payload: &[u8]) -> Vec<u8> {
    let mut w = SnapshotWriter::new(KIND, VERSION);
    for &b in payload {
        w.u8(b);
    }
    let body = w.finish();
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// The heap bytes a decoded message holds.
fn heap(msg: &Msg) -> usize {
    let bytes = |b: &WireBytes| match b {
        WireBytes::Inline(v) => v.capacity(),
        WireBytes::Sealed(_) => 0, // mapped, not allocated
    };
    match msg {
        Msg::Load { path, .. } | Msg::Reload { path, .. } => path.capacity(),
        Msg::Restore { state, .. } => bytes(state),
        Msg::Event(Event::SceneOpened { path } | Event::SceneSaved { path }) => path.capacity(),
        Msg::Event(Event::Custom { topic, bytes, .. }) => topic.capacity() + bytes.capacity(),
        Msg::Blob { name, .. } => name.capacity(),
        Msg::RunTask { name, input, .. } => name.capacity() + bytes(input),
        Msg::Loaded { name, version, .. } => name.capacity() + version.capacity(),
        Msg::Done { bytes: b, .. } => bytes(b),
        Msg::Failed { reason, .. } => reason.capacity(),
        Msg::Emit { topic, payload } => {
            topic.capacity()
                + match payload {
                    WirePayload::Bytes(b) | WirePayload::Array { bytes: b, .. } => b.capacity(),
                    WirePayload::Shared { .. } => 0,
                }
        }
        _ => 0,
    }
}

/// Where a payload's `u64` length fields may be: every offset holding a nonzero `u64` no
/// larger than the bytes after it (the prefixes of its strings and byte fields are among them;
/// a few other values too, which only adds cases).
fn length_fields(payload: &[u8]) -> Vec<usize> {
    (0..payload.len().saturating_sub(7))
        .filter(|&at| {
            let v = u64::from_le_bytes(payload[at..at + 8].try_into().unwrap());
            v > 0 && v <= (payload.len() - at - 8) as u64
        })
        .collect()
}

/// Decodes one frame through an inbox, with `fds` beside it.
fn next_of(frame: Vec<u8>, fds: Vec<OwnedFd>) -> Result<Option<Msg>, WireError> {
    let mut inbox = Inbox {
        buf: frame,
        ..Inbox::default()
    };
    inbox.fds.extend(fds);
    inbox.next()
}

#[test]
fn mutated_frames_are_errors_or_messages_within_their_own_size() {
    let mut rng = Rng(SEED);
    let messages = super::tests::all();
    let (mut tried, mut rejected, mut waiting, mut largest) = (0usize, 0usize, 0usize, 0usize);
    const PER_MESSAGE: usize = 400;
    for msg in &messages {
        let frame = msg.encode();
        let body = &frame[4..];
        let payload = &body[payload_start(body)..body.len() - 4];
        let lengths = length_fields(payload);
        let framed: Vec<usize> = lengths
            .iter()
            .map(|at| at + 4 + payload_start(body))
            .collect();
        for case in 0..PER_MESSAGE {
            // Half damage the frame as it is (the checksum or the prefix finds it), half the
            // payload behind an intact checksum.
            let resealed = case % 2 == 1;
            let bad = if resealed {
                frame_of(&mutate(&mut rng, payload, &lengths))
            } else {
                mutate(&mut rng, &frame, &framed)
            };
            if bad == frame {
                continue;
            }
            tried += 1;
            let len = bad.len();
            // Bytes after a whole frame are the next frame's: the first one still decodes.
            let extended = bad.starts_with(&frame);
            let shown = format!("{} case {case} of seed {SEED:#x}: {bad:02x?}", msg.name());
            let result = std::panic::catch_unwind(|| next_of(bad, Vec::new()))
                .unwrap_or_else(|_| panic!("{shown}: panicked"));
            match result {
                Err(_) => rejected += 1,
                Ok(None) => {
                    // Only a frame whose prefix announces more than arrived waits for more.
                    assert!(!resealed, "{shown}: an intact frame waits");
                    waiting += 1;
                }
                Ok(Some(m)) if extended => assert_eq!(&m, msg, "{shown}"),
                Ok(Some(m)) => {
                    assert!(resealed, "{shown}: a damaged container decoded as {m:?}");
                    assert!(heap(&m) <= len, "{shown}: {} heap bytes", heap(&m));
                    largest = largest.max(heap(&m));
                }
            }
        }
    }
    println!(
        "wire frames: seed {SEED:#x}, {tried} bad frames tried over {} messages, {rejected} \
         rejected, {waiting} waiting for more bytes, {} decoded; largest decoded message holds \
         {largest} heap bytes (bound: its frame's length)",
        messages.len(),
        tried - rejected - waiting
    );
    assert!(rejected * 2 > tried, "{rejected} of {tried}");
}

#[test]
fn a_frame_prefix_above_the_limit_is_refused_and_below_it_waits_without_allocating() {
    let good = Msg::Ping { seq: 1 }.encode();
    for n in [MAX_FRAME as u32 + 1, u32::MAX, 1 << 31] {
        let mut bad = good.clone();
        bad[..4].copy_from_slice(&n.to_le_bytes());
        assert_eq!(
            next_of(bad, Vec::new()).unwrap_err(),
            WireError::Oversized(n as usize)
        );
    }
    // At the limit: the inbox waits for the bytes, its buffer as it was.
    let mut bad = good.clone();
    bad[..4].copy_from_slice(&(MAX_FRAME as u32).to_le_bytes());
    let mut inbox = Inbox {
        buf: bad,
        ..Inbox::default()
    };
    let capacity = inbox.buf.capacity();
    assert_eq!(inbox.next().unwrap(), None);
    assert_eq!(inbox.buf.capacity(), capacity);
}

#[cfg(target_os = "linux")]
#[test]
fn sealed_bytes_announced_with_a_mutated_length_or_a_wrong_fd_are_errors() {
    let big: Vec<u8> = (0..super::super::shm::INLINE_MAX + 3)
        .map(|i| (i % 251) as u8)
        .collect();
    let blob = Blob::sealed("hostloop-wire", &big).unwrap();
    let messages = [
        Msg::Done {
            req: 7,
            bytes: WireBytes::Sealed(blob.clone()),
        },
        Msg::Restore {
            req: 8,
            slot: 1,
            state: WireBytes::Sealed(blob.clone()),
        },
        Msg::RunTask {
            req: 9,
            slot: 2,
            name: "sum".into(),
            input: WireBytes::Sealed(blob.clone()),
        },
    ];
    let mut rng = Rng(SEED ^ 0xF00D);
    let (mut tried, mut rejected) = (0, 0);
    for msg in &messages {
        let frame = msg.encode();
        let body = &frame[4..];
        let payload = &body[payload_start(body)..body.len() - 4];
        // The announced length: the last 8 bytes of the payload.
        let announced = payload.len() - 8;
        assert_eq!(
            u64::from_le_bytes(payload[announced..].try_into().unwrap()),
            big.len() as u64
        );
        // Intact, with its fd: the same bytes, mapped.
        let got = next_of(frame.clone(), vec![blob.dup_fd().unwrap()]).unwrap();
        assert_eq!(got.as_ref(), Some(msg));
        for case in 0..200 {
            let bad = frame_of(&mutate(&mut rng, payload, &[announced]));
            let shown = format!("{} case {case}: {bad:02x?}", msg.name());
            let len = bad.len();
            tried += 1;
            let fd = blob.dup_fd().unwrap();
            let result = std::panic::catch_unwind(|| next_of(bad, vec![fd]))
                .unwrap_or_else(|_| panic!("{shown}: panicked"));
            match result {
                // Sealed bytes decode only as the memfd's own; anything else within its frame.
                Ok(Some(m)) => match m.sealed() {
                    Some(sealed) => assert_eq!(&sealed[..], &big[..], "{shown}"),
                    None => assert!(heap(&m) <= len, "{shown}: {m:?}"),
                },
                Ok(None) => panic!("{shown}: an intact frame waits"),
                Err(_) => rejected += 1,
            }
        }
        // Every wrong fd beside an intact frame: none, not a memfd, unsealed, another size.
        let unsealed = rustix::fs::memfd_create("unsealed", rustix::fs::MemfdFlags::empty())
            .and_then(|fd| rustix::fs::ftruncate(&fd, big.len() as u64).map(|()| fd))
            .unwrap();
        let other = Blob::sealed("other", &big[1..]).unwrap().dup_fd().unwrap();
        let null = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        for (what, fds) in [
            ("no fd", vec![]),
            ("/dev/null", vec![null]),
            ("an unsealed memfd", vec![unsealed]),
            ("a memfd of another size", vec![other]),
        ] {
            assert!(
                matches!(next_of(frame.clone(), fds), Err(WireError::Sealed(_))),
                "{}: {what}",
                msg.name()
            );
        }
    }
    println!(
        "wire sealed bytes: seed {:#x}, {tried} bad announcements tried, {rejected} rejected",
        SEED ^ 0xF00D
    );
    assert!(rejected * 2 > tried);
}
