//! Snapshots: round trips, the documented layout, and rejection of damaged, foreign and hostile
//! bytes — with an error, never a panic, never an allocation bomb.

mod common;
use common::crc32c;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hostloop::{SnapshotError, SnapshotReader, SnapshotWriter};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// The largest allocation a thread makes, to show that hostile lengths allocate nothing.

struct LargestAllocation;

thread_local! {
    // `const`-initialised and without a destructor: using it never allocates.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every method forwards to `System` unchanged, which upholds `GlobalAlloc`'s contract;
// `note` only updates a thread-local counter and never allocates.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller upholds `alloc`'s contract, which is `System.alloc`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller upholds `realloc`'s contract; `ptr` came from `System` (via us).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `dealloc`'s contract; `ptr` came from `System` (via us).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Runs `f` and returns its result with the largest allocation it made on this thread.
fn largest_allocation_in<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|largest| largest.set(0));
    let result = f();
    (result, LARGEST.with(Cell::get))
}

// ---------------------------------------------------------------------------------------------
// Helpers

const KIND: &str = "particles";

/// A small snapshot with one value of every type.
fn small_snapshot() -> Vec<u8> {
    let mut w = SnapshotWriter::new(KIND, 3);
    w.u8(0xAB)
        .u16(0xBEEF)
        .u32(0xDEAD_BEEF)
        .u64(u64::MAX - 1)
        .i32(-7)
        .i64(i64::MIN)
        .f32(1.5)
        .f64(-2.25)
        .bool(true)
        .bool(false)
        .bytes(&[1, 2, 3])
        .str("héllo")
        .f32s(&[0.5, -1.0])
        .f64s(&[3.0])
        .u32s(&[1, 2, 3])
        .u64s(&[u64::MAX]);
    w.finish()
}

/// Reads what [`small_snapshot`] wrote, checking every value.
fn read_small_snapshot(bytes: &[u8]) -> Result<(), SnapshotError> {
    let mut r = SnapshotReader::open(bytes, KIND, 1..=3)?;
    assert_eq!(r.version(), 3);
    assert_eq!(r.u8()?, 0xAB);
    assert_eq!(r.u16()?, 0xBEEF);
    assert_eq!(r.u32()?, 0xDEAD_BEEF);
    assert_eq!(r.u64()?, u64::MAX - 1);
    assert_eq!(r.i32()?, -7);
    assert_eq!(r.i64()?, i64::MIN);
    assert_eq!(r.f32()?, 1.5);
    assert_eq!(r.f64()?, -2.25);
    assert!(r.bool()?);
    assert!(!r.bool()?);
    assert_eq!(r.bytes()?, &[1, 2, 3]);
    assert_eq!(r.str()?, "héllo");
    assert_eq!(r.f32s()?, [0.5, -1.0]);
    assert_eq!(r.f64s()?, [3.0]);
    assert_eq!(r.u32s()?, [1, 2, 3]);
    assert_eq!(r.u64s()?, [u64::MAX]);
    r.finish()
}

/// A snapshot whose payload is exactly `payload`, checksum and all.
fn snapshot_with_payload(payload: &[u8]) -> Vec<u8> {
    let mut w = SnapshotWriter::new(KIND, 1);
    for &b in payload {
        w.u8(b);
    }
    w.finish()
}

/// Opens `bytes` and, if that works, reads values as `ops` says (each byte picks a read), then
/// finishes. Errors are fine; the point is that nothing panics.
fn open_and_read(bytes: &[u8], ops: &[u8]) {
    let Ok(mut r) = SnapshotReader::open(bytes, KIND, 0..=u32::MAX) else {
        return;
    };
    let mut f32s = vec![1.0f32; 3];
    let mut u64s = Vec::new();
    for &op in ops {
        let _ = match op % 20 {
            0 => r.u8().map(drop),
            1 => r.u16().map(drop),
            2 => r.u32().map(drop),
            3 => r.u64().map(drop),
            4 => r.i32().map(drop),
            5 => r.i64().map(drop),
            6 => r.f32().map(drop),
            7 => r.f64().map(drop),
            8 => r.bool().map(drop),
            9 => r.bytes().map(drop),
            10 => r.str().map(drop),
            11 => r.f32s().map(drop),
            12 => r.f64s().map(drop),
            13 => r.u32s().map(drop),
            14 => r.u64s().map(drop),
            15 => r.f32s_into(&mut f32s),
            16 => r.u64s_into(&mut u64s),
            17 => r.clone().finish(),
            18 => r.f64s_into(&mut Vec::new()),
            _ => r.u32s_into(&mut Vec::new()),
        };
    }
    let _ = r.finish();
}

// ---------------------------------------------------------------------------------------------
// Round trips

#[test]
fn every_type_round_trips() {
    read_small_snapshot(&small_snapshot()).unwrap();
}

#[test]
fn empty_and_large_slices_round_trip() {
    let large_f32: Vec<f32> = (0..300_000).map(|i| i as f32 * 0.25 - 7.0).collect();
    let large_u64: Vec<u64> = (0..100_000u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    let large_bytes: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();

    let mut w = SnapshotWriter::new(KIND, 1);
    w.f32s(&[]).f64s(&[]).u32s(&[]).u64s(&[]).bytes(&[]).str("");
    w.f32s(&large_f32).u64s(&large_u64).bytes(&large_bytes);
    let bytes = w.finish();

    let mut r = SnapshotReader::open(&bytes, KIND, 1..=1).unwrap();
    assert_eq!(r.f32s().unwrap(), Vec::<f32>::new());
    assert_eq!(r.f64s().unwrap(), Vec::<f64>::new());
    assert_eq!(r.u32s().unwrap(), Vec::<u32>::new());
    assert_eq!(r.u64s().unwrap(), Vec::<u64>::new());
    assert_eq!(r.bytes().unwrap(), &[] as &[u8]);
    assert_eq!(r.str().unwrap(), "");
    assert_eq!(r.f32s().unwrap(), large_f32);
    assert_eq!(r.u64s().unwrap(), large_u64);
    assert_eq!(r.bytes().unwrap(), &large_bytes[..]);
    r.finish().unwrap();
}

#[test]
fn nan_bit_patterns_infinities_and_negative_zero_are_preserved() {
    let f32_bits = [
        0x7FC0_0000u32, // quiet NaN
        0x7F80_0001,    // signalling NaN
        0xFFC1_2345,    // negative NaN with a payload
        0x7F80_0000,    // +inf
        0xFF80_0000,    // -inf
        0x8000_0000,    // -0.0
        0x0000_0001,    // smallest subnormal
    ];
    let f64_bits = [
        0x7FF8_0000_0000_0000u64,
        0x7FF0_0000_0000_0001,
        0xFFF8_DEAD_BEEF_0001,
        0x8000_0000_0000_0000,
        0x0000_0000_0000_0001,
    ];
    let f32s: Vec<f32> = f32_bits.iter().map(|&b| f32::from_bits(b)).collect();
    let f64s: Vec<f64> = f64_bits.iter().map(|&b| f64::from_bits(b)).collect();

    let mut w = SnapshotWriter::new(KIND, 1);
    w.f32s(&f32s).f64s(&f64s).f32(-0.0).f64(-0.0);
    for &x in &f32s {
        w.f32(x);
    }
    let bytes = w.finish();

    let mut r = SnapshotReader::open(&bytes, KIND, 1..=1).unwrap();
    let bits32 = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    let bits64 = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
    assert_eq!(bits32(r.f32s().unwrap()), f32_bits);
    assert_eq!(bits64(r.f64s().unwrap()), f64_bits);
    assert_eq!(r.f32().unwrap().to_bits(), 0x8000_0000);
    assert_eq!(r.f64().unwrap().to_bits(), 0x8000_0000_0000_0000);
    for &b in &f32_bits {
        assert_eq!(r.f32().unwrap().to_bits(), b);
    }
    r.finish().unwrap();
}

#[test]
fn into_reads_replace_the_contents_and_reuse_the_allocation() {
    let mut w = SnapshotWriter::new(KIND, 1);
    w.f32s(&[1.0, 2.0]).u64s(&[9]);
    let bytes = w.finish();

    let mut r = SnapshotReader::open(&bytes, KIND, 1..=1).unwrap();
    let mut positions = Vec::with_capacity(64);
    positions.extend([7.0f32; 10]);
    let buffer = positions.as_ptr();
    r.f32s_into(&mut positions).unwrap();
    assert_eq!(positions, [1.0, 2.0]);
    assert_eq!(positions.as_ptr(), buffer);

    let mut ids = vec![1u64, 2, 3];
    r.u64s_into(&mut ids).unwrap();
    assert_eq!(ids, [9]);
    r.finish().unwrap();
}

#[test]
fn an_older_schema_version_in_range_opens_and_reports_its_version() {
    let mut w = SnapshotWriter::new(KIND, 1);
    w.u64(5);
    let bytes = w.finish();
    let mut r = SnapshotReader::open(&bytes, KIND, 1..=4).unwrap();
    assert_eq!(r.version(), 1);
    assert_eq!(r.u64().unwrap(), 5);
    r.finish().unwrap();
}

#[test]
fn the_writer_counts_payload_bytes_and_chains() {
    let mut w = SnapshotWriter::new(KIND, 1);
    w.reserve(1024);
    assert_eq!(w.payload_len(), 0);
    w.u32(1).f32s(&[1.0, 2.0]);
    assert_eq!(w.payload_len(), 4 + 8 + 8);
    assert_eq!(w.finish().len(), 27 + KIND.len() + 20);
}

#[test]
#[should_panic(expected = "at most 255")]
fn a_kind_longer_than_255_bytes_panics_at_the_writer() {
    let _ = SnapshotWriter::new(&"k".repeat(256), 1);
}

// ---------------------------------------------------------------------------------------------
// The documented format

#[test]
fn the_bytes_follow_the_documented_layout() {
    let bytes = small_snapshot();
    let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());

    assert_eq!(&bytes[..8], b"HLSNAP\r\n");
    assert_eq!(u16_at(8), 1);
    let k = usize::from(bytes[10]);
    assert_eq!(&bytes[11..11 + k], KIND.as_bytes());
    assert_eq!(u32_at(11 + k), 3);
    let n = u64_at(15 + k) as usize;
    assert_eq!(bytes.len(), 27 + k + n);
    assert_eq!(u32_at(23 + k + n), crc32c(&bytes[..23 + k + n]));

    // The payload starts with the values as documented: u8, u16, u32, u64.
    let p = 23 + k;
    assert_eq!(bytes[p], 0xAB);
    assert_eq!(u16_at(p + 1), 0xBEEF);
    assert_eq!(u32_at(p + 3), 0xDEAD_BEEF);
    assert_eq!(u64_at(p + 7), u64::MAX - 1);
}

#[test]
fn the_format_does_not_change_between_builds() {
    let mut w = SnapshotWriter::new("t", 7);
    w.u32(0x0102_0304).bool(true).f32s(&[1.0, -0.0]);
    #[rustfmt::skip]
    let expected: [u8; 49] = [
        0x48, 0x4C, 0x53, 0x4E, 0x41, 0x50, 0x0D, 0x0A, // magic "HLSNAP\r\n"
        0x01, 0x00,                                     // format 1
        0x01, 0x74,                                     // kind "t"
        0x07, 0x00, 0x00, 0x00,                         // schema version 7
        0x15, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // payload length 21
        0x04, 0x03, 0x02, 0x01,                         // u32
        0x01,                                           // bool
        0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // f32s: count 2
        0x00, 0x00, 0x80, 0x3F,                         //   1.0
        0x00, 0x00, 0x00, 0x80,                         //   -0.0
        0x0E, 0x61, 0x90, 0xD6,                         // CRC-32C
    ];
    assert_eq!(w.finish(), expected);
}

// ---------------------------------------------------------------------------------------------
// Damaged bytes

#[test]
fn truncation_at_every_length_is_rejected_as_truncated() {
    let bytes = small_snapshot();
    for len in 0..bytes.len() {
        match SnapshotReader::open(&bytes[..len], KIND, 1..=3) {
            Err(SnapshotError::Truncated { needed, available }) => {
                assert_eq!(available, len as u64);
                assert!(needed > available, "at {len}: needs {needed}");
            }
            other => panic!("truncated to {len} bytes: {other:?}"),
        }
    }
    // Once the header is complete, the error names the whole length.
    let header = 23 + KIND.len();
    assert_eq!(
        SnapshotReader::open(&bytes[..header], KIND, 1..=3).unwrap_err(),
        SnapshotError::Truncated {
            needed: bytes.len() as u64,
            available: header as u64
        }
    );
}

#[test]
fn appended_bytes_are_rejected_as_a_length_mismatch() {
    let mut bytes = small_snapshot();
    let declared = bytes.len() as u64;
    bytes.push(0);
    assert_eq!(
        SnapshotReader::open(&bytes, KIND, 1..=3).unwrap_err(),
        SnapshotError::LengthMismatch {
            declared,
            actual: declared + 1
        }
    );
}

#[test]
fn flipping_any_byte_is_rejected() {
    let original = small_snapshot();
    let k = KIND.len();
    let payload_len_field = 15 + k..23 + k;
    for mask in [0x01u8, 0xFF] {
        for at in 0..original.len() {
            let mut bytes = original.clone();
            bytes[at] ^= mask;
            let err = SnapshotReader::open(&bytes, KIND, 1..=3)
                .err()
                .unwrap_or_else(|| panic!("byte {at} ^ {mask:#04x} was accepted"));
            // Where the damage can be named, it is.
            match at {
                0..8 => assert_eq!(err, SnapshotError::BadMagic, "byte {at}"),
                8..10 => assert!(
                    matches!(err, SnapshotError::UnsupportedFormat(_)),
                    "byte {at}: {err:?}"
                ),
                10 => {} // the kind's length: fields shift, any container error will do
                _ if payload_len_field.contains(&at) => assert!(
                    matches!(
                        err,
                        SnapshotError::Truncated { .. } | SnapshotError::LengthMismatch { .. }
                    ),
                    "byte {at}: {err:?}"
                ),
                // Kind, schema version, payload and the checksum itself.
                _ => assert!(
                    matches!(err, SnapshotError::ChecksumMismatch { .. }),
                    "byte {at}: {err:?}"
                ),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Foreign bytes

#[test]
fn a_snapshot_of_another_kind_is_rejected_as_wrong_kind() {
    let mut w = SnapshotWriter::new("fluid", 3);
    w.u32(1);
    let bytes = w.finish();
    let err = SnapshotReader::open(&bytes, KIND, 1..=3).unwrap_err();
    assert_eq!(
        err,
        SnapshotError::WrongKind {
            expected: KIND.to_owned(),
            found: "fluid".to_owned()
        }
    );
    assert_eq!(
        err.to_string(),
        r#"snapshot is of kind "fluid", expected "particles""#
    );
}

#[test]
fn a_schema_version_outside_the_range_is_rejected() {
    let bytes = small_snapshot(); // version 3
    for range in [4..=9, 0..=2, 5..=5] {
        assert_eq!(
            SnapshotReader::open(&bytes, KIND, range.clone()).unwrap_err(),
            SnapshotError::UnsupportedVersion {
                found: 3,
                supported: range
            }
        );
    }
    let err = SnapshotReader::open(&bytes, KIND, 4..=9).unwrap_err();
    assert_eq!(
        err.to_string(),
        "snapshot schema version 3 is not supported (supported: 4..=9)"
    );
}

#[test]
fn random_bytes_are_rejected_as_not_a_snapshot() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut random = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state as u8
    };
    for len in [1, 7, 8, 100, 4096] {
        let mut bytes: Vec<u8> = (0..len).map(|_| random()).collect();
        bytes[0] = b'X'; // not a prefix of the magic
        assert_eq!(
            SnapshotReader::open(&bytes, KIND, 1..=3).unwrap_err(),
            SnapshotError::BadMagic
        );
    }
    let text = b"{\"particles\": [1, 2, 3]}";
    assert_eq!(
        SnapshotReader::open(text, KIND, 1..=3).unwrap_err(),
        SnapshotError::BadMagic
    );
}

#[test]
fn an_empty_slice_is_rejected_as_truncated() {
    assert_eq!(
        SnapshotReader::open(&[], KIND, 1..=3).unwrap_err(),
        SnapshotError::Truncated {
            needed: 8,
            available: 0
        }
    );
}

#[test]
fn another_container_format_is_rejected() {
    let mut bytes = small_snapshot();
    bytes[8..10].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(
        SnapshotReader::open(&bytes, KIND, 1..=3).unwrap_err(),
        SnapshotError::UnsupportedFormat(2)
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile or mismatched payloads (intact checksums)

#[test]
fn a_hostile_length_prefix_fails_without_allocating() {
    for count in [u64::MAX, u64::MAX / 4 + 1, 1 << 40, 9] {
        // The count, then 8 bytes: fewer than any of these counts needs.
        let mut w = SnapshotWriter::new(KIND, 1);
        w.u64(count).u64(0);
        let bytes = w.finish();
        let mut r = SnapshotReader::open(&bytes, KIND, 1..=1).unwrap();

        let (result, largest) = largest_allocation_in(|| r.f32s());
        assert!(
            matches!(
                result,
                Err(SnapshotError::UnexpectedEnd { remaining: 8, .. })
            ),
            "{count}: {result:?}"
        );
        assert_eq!(largest, 0, "{count}");

        let mut out = Vec::new();
        let (result, largest) = largest_allocation_in(|| r.u64s_into(&mut out));
        assert!(
            matches!(result, Err(SnapshotError::UnexpectedEnd { .. })),
            "{result:?}"
        );
        assert_eq!(largest, 0);
        assert_eq!(out.capacity(), 0);

        let (result, largest) = largest_allocation_in(|| r.bytes().map(<[u8]>::len));
        assert!(
            matches!(result, Err(SnapshotError::UnexpectedEnd { .. })),
            "{result:?}"
        );
        assert_eq!(largest, 0);

        // The failed reads consumed nothing.
        assert_eq!(r.remaining(), 16);
    }
}

#[test]
fn reading_more_than_was_written_is_an_unexpected_end() {
    let mut w = SnapshotWriter::new(KIND, 1);
    w.u16(1);
    let bytes = w.finish();
    let mut r = SnapshotReader::open(&bytes, KIND, 1..=1).unwrap();
    assert_eq!(
        r.u32().unwrap_err(),
        SnapshotError::UnexpectedEnd {
            needed: 4,
            remaining: 2
        }
    );
    assert_eq!(r.u16().unwrap(), 1);
    assert_eq!(
        r.u8().unwrap_err(),
        SnapshotError::UnexpectedEnd {
            needed: 1,
            remaining: 0
        }
    );
}

#[test]
fn finishing_with_unread_bytes_reports_trailing_bytes() {
    let mut w = SnapshotWriter::new(KIND, 1);
    w.u32(1).u64(2);
    let bytes = w.finish();
    let mut r = SnapshotReader::open(&bytes, KIND, 1..=1).unwrap();
    assert_eq!(r.u32().unwrap(), 1);
    assert_eq!(r.remaining(), 8);
    assert_eq!(r.finish().unwrap_err(), SnapshotError::TrailingBytes(8));
}

#[test]
fn an_invalid_bool_or_string_is_rejected_and_consumes_nothing() {
    let mut w = SnapshotWriter::new(KIND, 1);
    w.u8(2).bytes(&[0xFF, 0xFE]);
    let bytes = w.finish();
    let mut r = SnapshotReader::open(&bytes, KIND, 1..=1).unwrap();
    assert!(matches!(r.bool().unwrap_err(), SnapshotError::Invalid(_)));
    assert_eq!(r.u8().unwrap(), 2);
    assert_eq!(r.str().unwrap_err(), SnapshotError::InvalidUtf8);
    assert_eq!(r.bytes().unwrap(), &[0xFF, 0xFE]);
    r.finish().unwrap();
}

#[test]
fn snapshot_errors_convert_into_the_crate_error() {
    fn restore(bytes: &[u8]) -> hostloop::Result<u32> {
        let mut r = SnapshotReader::open(bytes, KIND, 1..=1)?;
        Ok(r.u32()?)
    }
    let err = restore(b"nope").unwrap_err();
    assert!(matches!(err, hostloop::Error::Failed(_)));
    assert_eq!(
        err.to_string(),
        "failed: not a snapshot: the data does not start with the snapshot magic"
    );
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(
        source.downcast_ref::<SnapshotError>(),
        Some(&SnapshotError::BadMagic)
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests: whatever the bytes, the reader answers with values or errors, never a panic.

/// A value of any type the writer takes; floats as bits, so NaNs compare.
#[derive(Debug, Clone)]
enum Value {
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    I32(i32),
    I64(i64),
    F32(u32),
    F64(u64),
    Bool(bool),
    Bytes(Vec<u8>),
    Str(String),
    F32s(Vec<u32>),
    F64s(Vec<u64>),
    U32s(Vec<u32>),
    U64s(Vec<u64>),
}

fn value() -> impl Strategy<Value = Value> {
    use proptest::collection::vec;
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<u16>().prop_map(Value::U16),
        any::<u32>().prop_map(Value::U32),
        any::<u64>().prop_map(Value::U64),
        any::<i32>().prop_map(Value::I32),
        any::<i64>().prop_map(Value::I64),
        any::<u32>().prop_map(Value::F32),
        any::<u64>().prop_map(Value::F64),
        any::<bool>().prop_map(Value::Bool),
        vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
        vec(any::<char>(), 0..8).prop_map(|c| Value::Str(c.into_iter().collect())),
        vec(any::<u32>(), 0..16).prop_map(Value::F32s),
        vec(any::<u64>(), 0..16).prop_map(Value::F64s),
        vec(any::<u32>(), 0..16).prop_map(Value::U32s),
        vec(any::<u64>(), 0..16).prop_map(Value::U64s),
    ]
}

fn write(w: &mut SnapshotWriter, value: &Value) {
    match value {
        Value::U8(v) => w.u8(*v),
        Value::U16(v) => w.u16(*v),
        Value::U32(v) => w.u32(*v),
        Value::U64(v) => w.u64(*v),
        Value::I32(v) => w.i32(*v),
        Value::I64(v) => w.i64(*v),
        Value::F32(v) => w.f32(f32::from_bits(*v)),
        Value::F64(v) => w.f64(f64::from_bits(*v)),
        Value::Bool(v) => w.bool(*v),
        Value::Bytes(v) => w.bytes(v),
        Value::Str(v) => w.str(v),
        Value::F32s(v) => w.f32s(&v.iter().map(|&b| f32::from_bits(b)).collect::<Vec<_>>()),
        Value::F64s(v) => w.f64s(&v.iter().map(|&b| f64::from_bits(b)).collect::<Vec<_>>()),
        Value::U32s(v) => w.u32s(v),
        Value::U64s(v) => w.u64s(v),
    };
}

/// Reads a value of the same type as `like`.
fn read(r: &mut SnapshotReader<'_>, like: &Value) -> Result<Value, SnapshotError> {
    Ok(match like {
        Value::U8(_) => Value::U8(r.u8()?),
        Value::U16(_) => Value::U16(r.u16()?),
        Value::U32(_) => Value::U32(r.u32()?),
        Value::U64(_) => Value::U64(r.u64()?),
        Value::I32(_) => Value::I32(r.i32()?),
        Value::I64(_) => Value::I64(r.i64()?),
        Value::F32(_) => Value::F32(r.f32()?.to_bits()),
        Value::F64(_) => Value::F64(r.f64()?.to_bits()),
        Value::Bool(_) => Value::Bool(r.bool()?),
        Value::Bytes(_) => Value::Bytes(r.bytes()?.to_vec()),
        Value::Str(_) => Value::Str(r.str()?.to_owned()),
        Value::F32s(_) => Value::F32s(r.f32s()?.into_iter().map(f32::to_bits).collect()),
        Value::F64s(_) => Value::F64s(r.f64s()?.into_iter().map(f64::to_bits).collect()),
        Value::U32s(_) => Value::U32s(r.u32s()?),
        Value::U64s(_) => Value::U64s(r.u64s()?),
    })
}

/// A change to a valid snapshot.
#[derive(Debug, Clone)]
enum Mutation {
    Set { at: usize, byte: u8 },
    Truncate { len: usize },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len().max(1);
    match mutation {
        Mutation::Set { at, byte } => {
            if let Some(b) = bytes.get_mut(at % len) {
                *b = *byte;
            }
        }
        Mutation::Truncate { len: to } => bytes.truncate(to % len),
        Mutation::Insert { at, bytes: new } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Remove { at, len: n } => {
            let at = at % len;
            let end = (at + n).min(bytes.len());
            bytes.drain(at.min(end)..end);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_are_rejected_or_read_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..128),
        magic_prefix in any::<bool>(),
        ops in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut input = if magic_prefix { b"HLSNAP\r\n\x01\x00".to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        open_and_read(&input, &ops);
    }

    #[test]
    fn any_payload_with_a_valid_checksum_is_read_without_panicking(
        payload in proptest::collection::vec(any::<u8>(), 0..96),
        ops in proptest::collection::vec(any::<u8>(), 0..24),
    ) {
        open_and_read(&snapshot_with_payload(&payload), &ops);
    }

    #[test]
    fn mutated_snapshots_are_rejected_or_read_without_panicking(
        values in proptest::collection::vec(value(), 0..8),
        mutations in proptest::collection::vec(mutation(), 1..4),
        ops in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut w = SnapshotWriter::new(KIND, 1);
        for v in &values {
            write(&mut w, v);
        }
        let original = w.finish();
        let mut bytes = original.clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let one_byte_or_truncation =
            matches!(mutations[..], [Mutation::Set { .. } | Mutation::Truncate { .. }]);
        if bytes != original && one_byte_or_truncation {
            // A truncation, or a one-byte burst the checksum always catches.
            prop_assert!(SnapshotReader::open(&bytes, KIND, 0..=u32::MAX).is_err());
        }
        open_and_read(&bytes, &ops);
    }

    #[test]
    fn any_values_round_trip(values in proptest::collection::vec(value(), 0..24)) {
        let mut w = SnapshotWriter::new(KIND, 9);
        for v in &values {
            write(&mut w, v);
        }
        let bytes = w.finish();
        let mut r = SnapshotReader::open(&bytes, KIND, 9..=9).unwrap();
        for v in &values {
            let back = read(&mut r, v).unwrap();
            prop_assert_eq!(format!("{back:?}"), format!("{v:?}"));
        }
        prop_assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn any_f32_and_u64_vectors_round_trip(
        f32_bits in proptest::collection::vec(any::<u32>(), 0..512),
        u64s in proptest::collection::vec(any::<u64>(), 0..512),
    ) {
        let f32s: Vec<f32> = f32_bits.iter().map(|&b| f32::from_bits(b)).collect();
        let mut w = SnapshotWriter::new(KIND, 1);
        w.f32s(&f32s).u64s(&u64s);
        let bytes = w.finish();

        let mut r = SnapshotReader::open(&bytes, KIND, 1..=1).unwrap();
        let back: Vec<u32> = r.f32s().unwrap().into_iter().map(f32::to_bits).collect();
        prop_assert_eq!(back, f32_bits);
        prop_assert_eq!(r.u64s().unwrap(), u64s);
        prop_assert_eq!(r.finish(), Ok(()));
    }
}
