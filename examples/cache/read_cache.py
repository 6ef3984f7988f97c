"""Reads a hostloop frame cache with numpy, by memory map: arrays are views, nothing is loaded.

    python3 read_cache.py CACHE          # lists the frames

The layout is in the `hostloop::cache` rustdoc (sdk/src/cache.rs). Headers are checked (their
CRC-32C, computed here in pure Python: they are a few hundred bytes); a torn or damaged tail
ends the listing with a note on stderr, after the good frames.
"""
import mmap, struct, sys
import numpy as np

TYPES = {1: np.uint8, 2: np.int32, 3: np.uint32, 4: np.int64, 5: np.uint64, 6: np.float32, 7: np.float64}
TABLE = []
for c in range(256):
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    TABLE.append(c)

def crc32c(b):
    c = 0xFFFFFFFF
    for x in b:
        c = (c >> 8) ^ TABLE[(c ^ x) & 0xFF]
    return c ^ 0xFFFFFFFF

def frames(path):
    """Yields (step, topic, payloads) per frame: numpy arrays of shape (count, components) (or
    (count,) for one component) viewing the map, or a memoryview for a bytes payload."""
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if len(m) < 64 or m[:8] != b"HLCACH\r\n" or m[8:10] != b"\x01\x00" or crc32c(m[:12]) != struct.unpack_from("<I", m, 12)[0]:
        raise ValueError(f"{path}: not a hostloop frame cache of format 1")
    at = 64
    while at + 32 <= len(m):
        magic, n, length, step, tlen = struct.unpack_from("<4sIQQH", m, at)
        end = at + 32 + 32 * n + tlen
        if magic != b"HLFR" or end + 4 > len(m) or crc32c(m[at:end]) != struct.unpack_from("<I", m, end)[0] or at + length > len(m):
            break
        payloads = []
        for i in range(n):
            code, comps, count, off = struct.unpack_from("<IIQQ", m, at + 32 + 32 * i)
            if code == 0:
                payloads.append(memoryview(m)[at + off:at + off + count])
            else:
                a = np.frombuffer(m, TYPES[code], count * comps, at + off)
                payloads.append(a.reshape(count, comps) if comps > 1 else a)
        yield step, bytes(m[end - tlen:end]).decode(), payloads
        at += length
    if at < len(m):
        print(f"{path}: read up to byte {at} of {len(m)}: a torn or damaged frame", file=sys.stderr)

if __name__ == "__main__":
    for step, topic, payloads in frames(sys.argv[1]):
        shapes = ", ".join(f"{p.dtype}{list(p.shape)}" if isinstance(p, np.ndarray) else f"{len(p)} bytes" for p in payloads)
        print(f"step {step} {topic}: {shapes}")
