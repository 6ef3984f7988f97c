//! A small PNG writer: 8-bit indexed colour, filter 0, compressed with a fixed-Huffman deflate
//! (greedy LZ77 over a 32 KiB window). Enough for the demo's pictures — mostly dark background,
//! which the matcher collapses to a few bytes per row — without a dependency.

use std::io;
use std::path::Path;

/// Writes `pixels` (`width * height` palette indices, row by row) with `palette` (RGB triples)
/// as a PNG file.
pub fn write_indexed(
    path: &Path,
    width: u32,
    height: u32,
    palette: &[[u8; 3]],
    pixels: &[u8],
) -> io::Result<()> {
    assert_eq!(pixels.len(), width as usize * height as usize);
    assert!(!palette.is_empty() && palette.len() <= 256);
    let mut raw = Vec::with_capacity(pixels.len() + height as usize);
    for row in pixels.chunks_exact(width as usize) {
        raw.push(0); // filter type 0: the row as it is
        raw.extend_from_slice(row);
    }
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 3 (palette), deflate, filter method 0, no interlace.
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);

    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"PLTE", &palette.concat());
    chunk(&mut png, b"IDAT", &zlib(&raw));
    chunk(&mut png, b"IEND", &[]);
    std::fs::write(path, png)
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// CRC-32 (IEEE, reflected), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (n, entry) in table.iter_mut().enumerate() {
        let mut c = n as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8)
    })
}

fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for block in bytes.chunks(5552) {
        for &x in block {
            a += x as u32;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    b << 16 | a
}

/// Bits are packed from the least significant bit of each byte, as deflate wants.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    bits: u32,
}

impl BitWriter {
    fn put(&mut self, value: u32, count: u32) {
        self.acc |= (value as u64) << self.bits;
        self.bits += count;
        while self.bits >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.bits -= 8;
        }
    }

    /// A Huffman code, which deflate stores most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.bits > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// A literal/length symbol with the fixed Huffman code of RFC 1951, section 3.2.6.
fn fixed_symbol(w: &mut BitWriter, sym: u32) {
    match sym {
        0..=143 => w.code(0x30 + sym, 8),
        144..=255 => w.code(0x190 + sym - 144, 9),
        256..=279 => w.code(sym - 256, 7),
        _ => w.code(0xC0 + sym - 280, 8),
    }
}

fn fixed_match(w: &mut BitWriter, len: usize, dist: usize) {
    let l = LEN_BASE.partition_point(|&b| b as usize <= len) - 1;
    fixed_symbol(w, 257 + l as u32);
    w.put((len - LEN_BASE[l] as usize) as u32, LEN_EXTRA[l] as u32);
    let d = DIST_BASE.partition_point(|&b| b as usize <= dist) - 1;
    w.code(d as u32, 5);
    w.put((dist - DIST_BASE[d] as usize) as u32, DIST_EXTRA[d] as u32);
}

/// zlib stream of one fixed-Huffman deflate block.
fn zlib(data: &[u8]) -> Vec<u8> {
    const WINDOW: usize = 32 * 1024;
    const HASH_BITS: u32 = 15;
    const MAX_CHAIN: usize = 32;
    let mut w = BitWriter {
        out: vec![0x78, 0x01],
        acc: 0,
        bits: 0,
    };
    w.put(1, 1); // BFINAL
    w.put(1, 2); // BTYPE = 01, fixed Huffman codes
    let hash = |i: usize| {
        let v = (data[i] as u32) << 16 | (data[i + 1] as u32) << 8 | data[i + 2] as u32;
        (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
    };
    let mut head = vec![usize::MAX; 1 << HASH_BITS];
    let mut prev = vec![usize::MAX; data.len()];
    let insert = |head: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        if i + 2 < data.len() {
            let h = hash(i);
            prev[i] = head[h];
            head[h] = i;
        }
    };
    let mut i = 0;
    while i < data.len() {
        let (mut best_len, mut best_dist) = (0, 0);
        if i + 2 < data.len() {
            let mut cand = head[hash(i)];
            let max_len = (data.len() - i).min(258);
            let mut chain = 0;
            while cand != usize::MAX && i - cand <= WINDOW && chain < MAX_CHAIN {
                let len = data[cand..cand + max_len]
                    .iter()
                    .zip(&data[i..i + max_len])
                    .take_while(|(a, b)| a == b)
                    .count();
                if len > best_len {
                    (best_len, best_dist) = (len, i - cand);
                    if len == max_len {
                        break;
                    }
                }
                cand = prev[cand];
                chain += 1;
            }
        }
        if best_len >= 3 {
            fixed_match(&mut w, best_len, best_dist);
            for k in i..i + best_len {
                insert(&mut head, &mut prev, k);
            }
            i += best_len;
        } else {
            fixed_symbol(&mut w, data[i] as u32);
            insert(&mut head, &mut prev, i);
            i += 1;
        }
    }
    fixed_symbol(&mut w, 256); // end of block
    let mut out = w.finish();
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn adler32_matches_the_rfc_example() {
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    /// Reads deflate's bit stream: least significant bit of each byte first.
    struct Bits<'a> {
        bytes: &'a [u8],
        pos: usize,
    }

    impl Bits<'_> {
        fn bit(&mut self) -> u32 {
            let b = (self.bytes[self.pos / 8] >> (self.pos % 8)) & 1;
            self.pos += 1;
            b as u32
        }

        /// An `n`-bit number stored least significant bit first (extra bits, headers).
        fn number(&mut self, n: u8) -> usize {
            (0..n).fold(0, |v, i| v | (self.bit() as usize) << i)
        }

        /// `n` more bits of a Huffman code, which is stored most significant bit first.
        fn code(&mut self, mut code: u32, n: u32) -> u32 {
            for _ in 0..n {
                code = code << 1 | self.bit();
            }
            code
        }
    }

    /// Decodes a zlib stream of fixed-Huffman blocks (all that `zlib` writes), checking the
    /// header and the Adler-32 trailer.
    fn inflate_fixed(z: &[u8]) -> Vec<u8> {
        assert_eq!(
            (z[0] as u16 * 256 + z[1] as u16) % 31,
            0,
            "zlib header check"
        );
        let mut r = Bits {
            bytes: &z[2..z.len() - 4],
            pos: 0,
        };
        let mut out = Vec::new();
        loop {
            let last = r.bit();
            assert_eq!(r.number(2), 1, "a fixed-Huffman block");
            loop {
                // 7-bit codes are 256..=279, 8-bit ones 0..=143 and 280..=287, 9-bit 144..=255.
                let mut code = r.code(0, 7);
                let sym = if code <= 0x17 {
                    256 + code
                } else {
                    code = r.code(code, 1);
                    if (0x30..=0xBF).contains(&code) {
                        code - 0x30
                    } else if (0xC0..=0xC7).contains(&code) {
                        280 + code - 0xC0
                    } else {
                        144 + r.code(code, 1) - 0x190
                    }
                };
                match sym {
                    0..=255 => out.push(sym as u8),
                    256 => break,
                    _ => {
                        let l = (sym - 257) as usize;
                        let len = LEN_BASE[l] as usize + r.number(LEN_EXTRA[l]);
                        let d = r.code(0, 5) as usize;
                        let dist = DIST_BASE[d] as usize + r.number(DIST_EXTRA[d]);
                        for _ in 0..len {
                            out.push(out[out.len() - dist]);
                        }
                    }
                }
            }
            if last == 1 {
                break;
            }
        }
        let trailer = u32::from_be_bytes(z[z.len() - 4..].try_into().unwrap());
        assert_eq!(trailer, adler32(&out), "Adler-32 trailer");
        out
    }

    #[test]
    fn zlib_output_inflates_back_to_its_input() {
        let mut noise = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            noise ^= noise << 13;
            noise ^= noise >> 7;
            noise ^= noise << 17;
            noise as u8
        };
        let mut inputs: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"a".to_vec(),
            b"abcabcabcabcabcabcabcabcabc".to_vec(),
            vec![0; 100_000], // long runs: 258-byte matches at distance 1
            (0..70_000).map(|_| next()).collect(), // incompressible
        ];
        // Repeats far apart, up to the window's 32 KiB.
        let block: Vec<u8> = (0..32_000).map(|_| next() % 4).collect();
        inputs.push([block.as_slice(), block.as_slice(), block.as_slice()].concat());
        for input in inputs {
            let z = zlib(&input);
            assert_eq!(inflate_fixed(&z), input, "{} bytes", input.len());
        }
    }

    #[test]
    fn a_picture_of_mostly_background_compresses_well() {
        let pixels = vec![0u8; 960 * 540];
        let z = zlib(&pixels);
        assert!(z.len() < pixels.len() / 50, "{} bytes", z.len());
    }
}
