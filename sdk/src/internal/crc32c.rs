//! CRC-32C (Castagnoli; reflected polynomial `0x82F63B78`, initial value and final XOR
//! `0xFFFFFFFF`), the checksum of snapshots and frame caches.
//!
//! On x86-64 with SSE 4.2 (every x86-64 CPU since 2008) the `crc32` instruction computes it.
//! One chain of it runs at 8 bytes per 3 cycles (the instruction's latency); it can start one
//! per cycle, so long inputs are cut into three blocks whose CRCs run side by side and are then
//! joined with a table-driven "append this many zero bytes" operator (Mark Adler's method, as
//! in zlib's `crc32_combine`): about 8 bytes per cycle. Elsewhere a slicing-by-8 table computes
//! it, at about a byte per cycle. All paths give the same value for every input (a test checks
//! every length and alignment, across the block sizes).

/// A running CRC-32C: [`update`](Crc32c::update) with consecutive pieces of the bytes, then
/// [`finish`](Crc32c::finish). The pieces may be cut anywhere.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Crc32c(u32);

impl Crc32c {
    pub(crate) fn new() -> Self {
        Crc32c(!0)
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) -> &mut Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE 4.2, checked just above.
            self.0 = unsafe { update_sse42(self.0, bytes) };
            return self;
        }
        self.0 = update_table(self.0, bytes);
        self
    }

    pub(crate) fn finish(&self) -> u32 {
        !self.0
    }
}

/// The CRC-32C of `bytes`.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    Crc32c::new().update(bytes).finish()
}

/// The block of the three side-by-side chains for long inputs, and for what is left of them.
const LONG: usize = 8192;
const SHORT: usize = 256;

/// `crc32c_shift(&LONG_ZEROS, c)` is the CRC register `c` advanced over `LONG` zero bytes.
static LONG_ZEROS: [[u32; 256]; 4] = zeros_tables(LONG);
static SHORT_ZEROS: [[u32; 256]; 4] = zeros_tables(SHORT);

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn update_sse42(crc: u32, bytes: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut c0 = u64::from(crc);
    let mut rest = bytes;
    // Three independent chains over three consecutive blocks; the register is linear in the
    // bytes, so CRC(a ‖ b) = shift(CRC(a), |b|) ^ CRC₀(b), where CRC₀ starts from zero.
    for (block, zeros) in [(LONG, &LONG_ZEROS), (SHORT, &SHORT_ZEROS)] {
        while rest.len() >= 3 * block {
            let (a, tail) = rest.split_at(block);
            let (b, tail) = tail.split_at(block);
            let (c, tail) = tail.split_at(block);
            let (a, b, c) = (
                a.as_chunks::<8>().0,
                b.as_chunks::<8>().0,
                c.as_chunks::<8>().0,
            );
            let (mut c1, mut c2) = (0u64, 0u64);
            for i in 0..a.len() {
                c0 = _mm_crc32_u64(c0, u64::from_le_bytes(a[i]));
                c1 = _mm_crc32_u64(c1, u64::from_le_bytes(b[i]));
                c2 = _mm_crc32_u64(c2, u64::from_le_bytes(c[i]));
            }
            let joined = crc32c_shift(zeros, c0 as u32) ^ c1 as u32;
            c0 = u64::from(crc32c_shift(zeros, joined) ^ c2 as u32);
            rest = tail;
        }
    }
    let (chunks, tail) = rest.as_chunks::<8>();
    for c in chunks {
        c0 = _mm_crc32_u64(c0, u64::from_le_bytes(*c));
    }
    let mut crc = c0 as u32;
    for &b in tail {
        crc = _mm_crc32_u8(crc, b);
    }
    crc
}

/// The register `crc` advanced over the zero bytes `zeros` was made for.
#[inline]
fn crc32c_shift(zeros: &[[u32; 256]; 4], crc: u32) -> u32 {
    zeros[0][(crc & 0xFF) as usize]
        ^ zeros[1][((crc >> 8) & 0xFF) as usize]
        ^ zeros[2][((crc >> 16) & 0xFF) as usize]
        ^ zeros[3][(crc >> 24) as usize]
}

/// A 32×32 matrix over GF(2), column `n` being the image of bit `n`, times `vec`.
const fn gf2_times(mat: &[u32; 32], mut vec: u32) -> u32 {
    let mut sum = 0;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 != 0 {
            sum ^= mat[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

const fn gf2_square(mat: &[u32; 32]) -> [u32; 32] {
    let mut sq = [0u32; 32];
    let mut n = 0;
    while n < 32 {
        sq[n] = gf2_times(mat, mat[n]);
        n += 1;
    }
    sq
}

/// The operator that advances a register over `len` zero bytes; `len` a power of two.
const fn zeros_operator(len: usize) -> [u32; 32] {
    assert!(len.is_power_of_two());
    // One zero bit: shift right, folding the polynomial in when bit 0 falls out.
    let mut op = [0u32; 32];
    op[0] = 0x82F6_3B78;
    let mut n = 1;
    while n < 32 {
        op[n] = 1 << (n - 1);
        n += 1;
    }
    // Square three times for one zero byte, then once per doubling up to `len` bytes.
    let mut squarings = 3 + len.trailing_zeros();
    while squarings > 0 {
        op = gf2_square(&op);
        squarings -= 1;
    }
    op
}

/// The operator of `zeros_operator(len)` applied to each byte in each of four positions.
const fn zeros_tables(len: usize) -> [[u32; 256]; 4] {
    let op = zeros_operator(len);
    let mut tables = [[0u32; 256]; 4];
    let mut n = 0;
    while n < 256 {
        let mut k = 0;
        while k < 4 {
            tables[k][n] = gf2_times(&op, (n as u32) << (8 * k));
            k += 1;
        }
        n += 1;
    }
    tables
}

/// Slicing by 8: one table look-up per byte, eight independent ones per 8 bytes.
fn update_table(mut crc: u32, bytes: &[u8]) -> u32 {
    let t = &CRC32C_TABLES;
    let (chunks, tail) = bytes.as_chunks::<8>();
    for c in chunks {
        let low = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(low & 0xFF) as usize]
            ^ t[6][((low >> 8) & 0xFF) as usize]
            ^ t[5][((low >> 16) & 0xFF) as usize]
            ^ t[4][(low >> 24) as usize]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    for &b in tail {
        crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xFF) as usize];
    }
    crc
}

/// `CRC32C_TABLES[0]` is the byte-at-a-time table; `CRC32C_TABLES[k][b]` is the CRC of byte `b`
/// followed by `k` zero bytes. A `static`, so it lives once in read-only memory.
static CRC32C_TABLES: [[u32; 256]; 8] = crc32c_tables();

const fn crc32c_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = tables[k - 1][i];
            tables[k][i] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
            k += 1;
        }
        i += 1;
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit by bit, straight from the definition.
    fn crc32c_reference(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc32c_matches_the_published_check_values() {
        // The standard check value and the RFC 3720 (iSCSI) test vectors.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46DD_794E);
        assert_eq!(crc32c(&[]), 0);
    }

    #[test]
    fn every_path_matches_the_bit_by_bit_definition_at_every_length_and_alignment() {
        let data: Vec<u8> = (0u32..300)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..8 {
            for end in start..data.len() {
                let bytes = &data[start..end];
                let want = crc32c_reference(bytes);
                assert_eq!(crc32c(bytes), want, "{start}..{end}");
                assert_eq!(!update_table(!0, bytes), want, "table {start}..{end}");
            }
        }
    }

    #[test]
    fn the_side_by_side_chains_match_one_chain_across_the_block_sizes() {
        let data: Vec<u8> = (0u32..(3 * LONG as u32 + 3 * SHORT as u32) * 2 + 100)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let mut lengths: Vec<usize> = Vec::new();
        for base in [
            3 * SHORT,
            3 * LONG,
            3 * LONG + 3 * SHORT,
            6 * LONG,
            data.len() - 8,
        ] {
            lengths.extend(base.saturating_sub(9)..=base + 9);
        }
        for len in lengths {
            for start in [0, 1, 5] {
                let bytes = &data[start..(start + len).min(data.len())];
                assert_eq!(crc32c(bytes), !update_table(!0, bytes), "{start}+{len}");
            }
        }
    }

    #[test]
    fn the_zeros_operator_appends_zero_bytes() {
        for (len, zeros) in [(LONG, &LONG_ZEROS), (SHORT, &SHORT_ZEROS)] {
            for reg in [1u32, 0x8000_0000, 0xDEAD_BEEF, !0] {
                assert_eq!(
                    crc32c_shift(zeros, reg),
                    update_table(reg, &vec![0u8; len]),
                    "{len} zero bytes from {reg:#x}"
                );
            }
        }
    }

    #[test]
    fn pieces_give_the_crc_of_the_whole() {
        let data: Vec<u8> = (0u32..1000).map(|i| (i * 7 + 3) as u8).collect();
        let whole = crc32c(&data);
        for cut in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let mut c = Crc32c::new();
            c.update(&data[..cut]).update(&data[cut..]);
            assert_eq!(c.finish(), whole, "cut at {cut}");
        }
    }
}
