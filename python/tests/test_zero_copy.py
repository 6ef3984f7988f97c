"""Sink arrays without a copy: a simulation's frame reaches Python as a view of hostloop's own
memory (lent past the sink call), and an Array used after its call returned is refused."""

import gc
import threading
import tracemalloc

import pytest

import hostloop

AGENTS = 1_000_000
FRAME_BYTES = AGENTS * 3 * 4  # 12 MB of float32 xyz


def _run(rt, particles, on_frame, agents=AGENTS, isolation="in_process", frames=2):
    """Loads the particles plugin, calls ``on_frame(arr)`` inside the sink for ``frames``
    full-size frames, and returns what it returned."""
    seen = []

    def sink(topic, payload):
        if topic == "particles/positions" and len(payload) == agents and len(seen) < frames:
            seen.append(on_frame(payload))

    rt.set_sink(sink)
    plugin = rt.load_plugin(particles, isolation=isolation)
    rt.post_event("particles/configure", f"agents={agents}".encode())
    assert rt.run_until(lambda: len(seen) >= frames, 120.0), "no full-size frame arrived"
    rt.set_sink(None)
    plugin.unload(10.0)
    return seen


def test_a_frame_is_lent_not_copied(rt, particles):
    np = pytest.importorskip("numpy")

    def on_frame(arr):
        tracemalloc.start()
        view = np.asarray(arr)
        mv = arr.memoryview()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return {
            "lent": arr.lent,
            "addr": arr.address,
            "np_addr": view.__array_interface__["data"][0],
            "mv_shape": mv.shape,
            "shape": view.shape,
            "readonly": not view.flags.writeable and mv.readonly,
            "peak": peak,
            "first": view[:4].copy(),
        }

    got = _run(rt, particles, on_frame)
    for g in got:
        assert g["lent"], "a simulation's frame should be lent"
        # The numpy array is the frame's own memory: same address, nothing of its size
        # allocated by Python while the views were made.
        assert g["np_addr"] == g["addr"]
        assert g["shape"] == (AGENTS, 3) and g["mv_shape"] == (AGENTS, 3)
        assert g["readonly"]
        assert g["peak"] < FRAME_BYTES // 100, f"{g['peak']} bytes allocated for a view"
        assert np.isfinite(g["first"]).all()


def test_use_after_the_call_is_refused_and_kept_views_stay_valid(rt, particles):
    np = pytest.importorskip("numpy")
    kept = {}

    def on_frame(arr):
        if "arr" not in kept:
            kept["arr"] = arr
            kept["view"] = np.asarray(arr)  # made inside the call: keeps the memory alive
            kept["mv"] = arr.memoryview()
            kept["copy"] = np.asarray(arr).copy()
            kept["keep"] = arr.keep()
        return True

    _run(rt, particles, on_frame, frames=3)
    arr = kept["arr"]
    assert not arr.valid
    for use in (arr.memoryview, arr.tobytes, arr.keep, lambda: arr.address,
                lambda: arr.__array_interface__):
        with pytest.raises(hostloop.HostloopError, match="keep"):
            use()
    with pytest.raises(Exception):
        np.asarray(arr, dtype=np.float32)
    # What was made inside the call still reads the frame it showed (later frames were
    # written elsewhere), and so does the kept Array.
    assert np.array_equal(kept["view"], kept["copy"])
    assert np.array_equal(np.asarray(kept["mv"]), kept["copy"])
    k = kept["keep"]
    assert k.valid and k.lent
    assert np.array_equal(np.asarray(k), kept["copy"])
    assert k.tobytes() == kept["copy"].tobytes()
    # Dropping everything releases the lease (the producer may reuse the buffer again).
    kept.clear()
    del arr, k
    gc.collect()


def test_memoryview_without_numpy(rt, particles):
    def on_frame(arr):
        mv = arr.memoryview()
        return arr.lent, mv.format, mv.shape, mv.readonly, mv.nbytes, mv[0, 0] == mv[0, 0]

    for lent, fmt, shape, ro, nbytes, same in _run(rt, particles, on_frame, agents=10_000):
        assert lent and fmt == "f" and shape == (10_000, 3) and ro and nbytes == 120_000 and same


def test_frames_from_a_worker_process_arrive_as_copies(rt, particles):
    """An isolated plugin's frames come through shared memory the worker reuses: the sink gets
    a copy (lent is False), with the same validity rules."""
    main = threading.get_ident()

    def on_frame(arr):
        return arr.lent, arr.shape, len(arr.tobytes()), threading.get_ident()

    for lent, shape, n, tid in _run(rt, particles, on_frame, agents=10_000, isolation="own_process"):
        assert not lent and shape == (10_000, 3) and n == 120_000 and tid == main
