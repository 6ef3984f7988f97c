#!/usr/bin/env python3
"""Main-thread delivery from Python: hostloop against what tool authors write today, in one run.

(a) throughput: N results from K producer threads delivered to a Python callback on the main
    thread. hostloop: producers ``rt.call_soon(cb)``, the main thread sleeps in ``poll`` on
    ``rt.wake_fd()`` and pumps (and, with Qt, the same through ``hostloop.qt.attach``). The
    peer: producers ``queue.Queue.put(result)``, the main thread drains the queue with
    ``get_nowait()`` at every tick of a 60 Hz timer (a ``QTimer`` under PyQt5/PySide with
    ``QT_QPA_PLATFORM=offscreen``, as in Maya, Houdini or Nuke tools; else a plain 60 Hz sleep
    loop standing for ``bpy.app.timers``). Each tick drains everything queued.
(b) latency at a 60 Hz host tick: one producer posts a result every ~5 ms stamped with
    ``time.perf_counter_ns()``, to both at once; the host loop runs a 60 Hz frame tick.
    hostloop's delivery wakes on the fd between ticks; the peer sees results at ticks only.
    p50/p99 of post -> callback.
(c) a 1M-particle frame (f32 x3, 12 MB) from the particles plugin handed to a Python sink:
    the time to get a numpy view (``numpy.asarray(arr)``) against copying it
    (``arr.tobytes()``, ``bytes(arr.memoryview())``), inside the sink call, on the same frames;
    and the pump that delivers a frame (the sink takes only the view), mean and p99.

Ratios are hostloop / peer: above 1 is better for rates, below 1 for times. A missed target is
reported, not an error: the exit status is non-zero only when a run failed.

    scripts/python-bench [--quick] [--json]
"""

import argparse
import functools
import json
import os
import pathlib
import platform
import queue
import select
import statistics
import struct
import sys
import threading
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import hostloop  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
PARTICLES = ROOT / "target" / "release" / "libhostloop_particles.so"
TICK_S = 1.0 / 60.0


class BenchError(Exception):
    """A run failed (not a missed target)."""


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]


def find_qt(peer):
    """(QtCore, binding name) for the Qt peer, or (None, reason)."""
    if peer == "sleep":
        return None, "--peer sleep"
    try:
        from hostloop.qt import find_qtcore
    except ImportError:
        find_qtcore = None
    try:
        if find_qtcore is not None:
            qc = find_qtcore()
        else:
            from PyQt5 import QtCore as qc
    except ImportError as e:
        if peer == "qt":
            raise BenchError(f"--peer qt: no Qt binding imports: {e}") from e
        return None, f"no Qt binding ({e})"
    return qc, qc.__name__.split(".")[0]


def qt_app(QtCore):
    app = QtCore.QCoreApplication.instance()
    if app is None:
        app = QtCore.QCoreApplication(["hostloop-bench"])
    return app


def qt_exec(app):
    return app.exec() if hasattr(app, "exec") else app.exec_()


def precise(QtCore, timer):
    kind = getattr(QtCore.Qt, "PreciseTimer", None)
    if kind is None:
        kind = QtCore.Qt.TimerType.PreciseTimer
    timer.setTimerType(kind)


# ---------------------------------------------------------------- (a) throughput


class Counter:
    """The result callback both sides deliver to: counts, checks the thread, notes the end."""

    def __init__(self, n, on_done=None):
        self.n = n
        self.got = 0
        self.off_main = 0
        self.main = threading.get_ident()
        self.t_done = None
        self.on_done = on_done

    def deliver(self, result):
        if threading.get_ident() != self.main:
            self.off_main += 1
        self.got += 1
        if self.got == self.n:
            self.t_done = time.perf_counter()
            if self.on_done is not None:
                self.on_done()


def producers(k, n, put):
    """k threads, n results in all; each waits for ``go`` then calls put(result) flat out."""
    go = threading.Event()
    errors = []
    shares = [n // k + (1 if i < n % k else 0) for i in range(k)]

    def run(i, share):
        try:
            go.wait()
            base = i << 40
            for j in range(share):
                put(base | j)
        except BaseException as e:  # noqa: BLE001 - reported as the run's error
            errors.append(f"producer {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=run, args=(i, s), daemon=True) for i, s in enumerate(shares)]
    for t in threads:
        t.start()
    return go, threads, errors


def hostloop_put(rt, deliver, refused):
    """A producer's post: ``rt.call_soon``; at the backlog limit, back off and retry."""

    def put(r):
        cb = functools.partial(deliver, r)
        while True:
            try:
                rt.call_soon(cb)
                return
            except hostloop.ShutDown:
                raise
            except hostloop.HostloopError:
                refused[0] += 1
                time.sleep(0.0005)

    return put


def finish(name, counter, t0, go_threads, errors, timeout_s, extra=None):
    go, threads = go_threads
    for t in threads:
        t.join(timeout_s)
    if errors:
        raise BenchError(f"{name}: {errors[0]}")
    if counter.t_done is None:
        raise BenchError(f"{name}: {counter.got} of {counter.n} results in {timeout_s:.0f} s")
    if counter.off_main:
        raise BenchError(f"{name}: {counter.off_main} callbacks ran off the main thread")
    dt = counter.t_done - t0
    row = {"name": name, "results": counter.n, "seconds": dt, "per_s": counter.n / dt}
    row.update(extra or {})
    return row


def tp_hostloop_poll(n, k, budget_ms, timeout_s):
    rt = hostloop.Runtime(workers=1)
    try:
        c = Counter(n)
        refused = [0]
        go, threads, errors = producers(k, n, hostloop_put(rt, c.deliver, refused))
        p = select.poll()
        p.register(rt.wake_fd(), select.POLLIN)
        t0 = time.perf_counter()
        go.set()
        deadline = t0 + timeout_s
        while c.got < n and not errors:
            if time.perf_counter() > deadline:
                break
            if p.poll(50):  # sleeps with the GIL released
                rt.pump(budget_ms)
        return finish("hostloop: call_soon, poll(wake_fd) + pump", c, t0, (go, threads), errors,
                      timeout_s, {"backlog_retries": refused[0]})
    finally:
        rt.shutdown(5.0)


def tp_hostloop_qt(QtCore, n, k, budget_ms, timeout_s):
    from hostloop import qt as hlqt

    app = qt_app(QtCore)
    rt = hostloop.Runtime(workers=1)
    att = None
    try:
        c = Counter(n, on_done=app.quit)
        refused = [0]
        go, threads, errors = producers(k, n, hostloop_put(rt, c.deliver, refused))
        att = hlqt.attach(rt, budget_ms=budget_ms, QtCore=QtCore)
        guard = QtCore.QTimer()
        guard.setSingleShot(True)
        guard.timeout.connect(app.quit)
        guard.start(int(timeout_s * 1000))
        t0 = time.perf_counter()
        go.set()
        qt_exec(app)
        guard.stop()
        return finish("hostloop: call_soon, hostloop.qt.attach", c, t0, (go, threads), errors,
                      timeout_s, {"backlog_retries": refused[0]})
    finally:
        if att is not None:
            att.detach()
        rt.shutdown(5.0)


def drain(q, deliver):
    """The peer's tick: everything queued, to the callback."""
    get = q.get_nowait
    while True:
        try:
            r = get()
        except queue.Empty:
            return
        deliver(r)


def tp_peer_qt(QtCore, n, k, timeout_s):
    app = qt_app(QtCore)
    c = Counter(n)
    q = queue.Queue()
    go, threads, errors = producers(k, n, q.put)
    t0 = [0.0]

    def tick():
        drain(q, c.deliver)
        if c.got >= n or errors or time.perf_counter() - t0[0] > timeout_s:
            app.quit()

    timer = QtCore.QTimer()
    precise(QtCore, timer)
    timer.setInterval(round(TICK_S * 1000))
    timer.timeout.connect(tick)
    timer.start()
    t0[0] = time.perf_counter()
    go.set()
    qt_exec(app)
    timer.stop()
    return finish("peer: queue.Queue, QTimer 60 Hz drains", c, t0[0], (go, threads), errors,
                  timeout_s)


def tp_peer_sleep(n, k, timeout_s):
    c = Counter(n)
    q = queue.Queue()
    go, threads, errors = producers(k, n, q.put)
    t0 = time.perf_counter()
    go.set()
    next_tick = t0
    while c.got < n and not errors and time.perf_counter() - t0 < timeout_s:
        next_tick += TICK_S
        left = next_tick - time.perf_counter()
        if left > 0:
            time.sleep(left)
        drain(q, c.deliver)
    return finish("peer: queue.Queue, 60 Hz sleep loop drains", c, t0, (go, threads), errors,
                  timeout_s)


# ---------------------------------------------------------------- (b) latency


class Latency:
    """Both sides' callbacks: post -> callback latency in ns, and the thread check."""

    def __init__(self, m, on_done=None):
        self.m = m
        self.hostloop = []
        self.peer = []
        self.main = threading.get_ident()
        self.off_main = 0
        self.on_done = on_done
        self.done = False

    def _check(self):
        if threading.get_ident() != self.main:
            self.off_main += 1
        if not self.done and len(self.hostloop) >= self.m and len(self.peer) >= self.m:
            self.done = True
            if self.on_done is not None:
                self.on_done()

    def on_hostloop(self, ts):
        self.hostloop.append(time.perf_counter_ns() - ts)
        self._check()

    def on_peer(self, ts):
        self.peer.append(time.perf_counter_ns() - ts)
        self._check()


def latency_producer(rt, q, lat, m, period_s):
    """One thread: every ~period_s, a stamped result to hostloop and one to the queue (which
    goes first alternates)."""
    errors = []

    def run():
        try:
            nxt = time.perf_counter()
            for i in range(m):
                nxt += period_s
                left = nxt - time.perf_counter()
                if left > 0:
                    time.sleep(left)
                if i & 1:
                    q.put(time.perf_counter_ns())
                    rt.call_soon(functools.partial(lat.on_hostloop, time.perf_counter_ns()))
                else:
                    rt.call_soon(functools.partial(lat.on_hostloop, time.perf_counter_ns()))
                    q.put(time.perf_counter_ns())
        except BaseException as e:  # noqa: BLE001
            errors.append(f"latency producer: {type(e).__name__}: {e}")

    t = threading.Thread(target=run, daemon=True)
    return t, errors


def latency_qt(QtCore, m, period_s, budget_ms, timeout_s):
    app = qt_app(QtCore)
    rt = hostloop.Runtime(workers=1)
    q = queue.Queue()
    lat = Latency(m, on_done=app.quit)
    notifier = att = None
    try:
        try:
            from hostloop import qt as hlqt

            att = hlqt.attach(rt, budget_ms=budget_ms, QtCore=QtCore)
            how = "hostloop.qt.attach (QSocketNotifier on wake_fd)"
        except ImportError:
            sn = QtCore.QSocketNotifier
            notifier = sn(rt.wake_fd(), getattr(sn, "Read", None) or sn.Type.Read)
            notifier.activated.connect(lambda *_: rt.pump(budget_ms))
            how = "QSocketNotifier on wake_fd"
        ticks = [0]

        def frame():
            ticks[0] += 1
            drain(q, lat.on_peer)  # the peer: what arrived since the last frame

        timer = QtCore.QTimer()
        precise(QtCore, timer)
        timer.setInterval(round(TICK_S * 1000))
        timer.timeout.connect(frame)
        guard = QtCore.QTimer()
        guard.setSingleShot(True)
        guard.timeout.connect(app.quit)
        t, errors = latency_producer(rt, q, lat, m, period_s)
        timer.start()
        guard.start(int(timeout_s * 1000))
        t.start()
        qt_exec(app)
        timer.stop()
        guard.stop()
        t.join(timeout_s)
        return check_latency(lat, errors, timeout_s, ticks[0], how,
                             "QTimer 60 Hz (PreciseTimer)")
    finally:
        if att is not None:
            att.detach()
        if notifier is not None:
            notifier.setEnabled(False)
        rt.shutdown(5.0)


def latency_poll(m, period_s, budget_ms, timeout_s):
    """No Qt: a host loop that sleeps in poll() on the wake fd until its next 60 Hz frame."""
    rt = hostloop.Runtime(workers=1)
    q = queue.Queue()
    lat = Latency(m)
    try:
        p = select.poll()
        p.register(rt.wake_fd(), select.POLLIN)
        t, errors = latency_producer(rt, q, lat, m, period_s)
        t0 = time.perf_counter()
        next_tick = t0 + TICK_S
        ticks = 0
        t.start()
        while not lat.done and not errors and time.perf_counter() - t0 < timeout_s:
            left = next_tick - time.perf_counter()
            if left > 0 and p.poll(max(1, int(left * 1000))):
                rt.pump(budget_ms)
            if time.perf_counter() >= next_tick:
                next_tick += TICK_S
                ticks += 1
                drain(q, lat.on_peer)
        t.join(timeout_s)
        return check_latency(lat, errors, timeout_s, ticks, "poll(wake_fd) between frames",
                             "poll loop, 60 Hz frames")
    finally:
        rt.shutdown(5.0)


def check_latency(lat, errors, timeout_s, ticks, how, tick):
    if errors:
        raise BenchError(errors[0])
    if not lat.done:
        raise BenchError(f"latency: {len(lat.hostloop)}/{len(lat.peer)} of {lat.m} results "
                         f"in {timeout_s:.0f} s")
    if lat.off_main:
        raise BenchError(f"latency: {lat.off_main} callbacks ran off the main thread")
    ms = lambda v: v / 1e6  # noqa: E731
    return {
        "samples": lat.m,
        "ticks": ticks,
        "host_tick": tick,
        "hostloop_wakes_by": how,
        "hostloop_p50_ms": ms(percentile(lat.hostloop, 50)),
        "hostloop_p99_ms": ms(percentile(lat.hostloop, 99)),
        "peer_p50_ms": ms(percentile(lat.peer, 50)),
        "peer_p99_ms": ms(percentile(lat.peer, 99)),
    }


# ---------------------------------------------------------------- (c) 1M-particle frame


def frames_bench(plugin_path, agents, frames, budget_ms, timeout_s):
    """Frames from the particles plugin: view vs copy inside the sink, and the delivering pump.

    Frames alternate: on "pump" frames the sink takes only a numpy view and the pump that
    delivered it is timed; on "copy" frames it also times ``tobytes()`` and
    ``bytes(memoryview())``. The view is timed on every frame."""
    import numpy as np

    rt = hostloop.Runtime()
    want_bytes = agents * 3 * 4
    st = {
        "configuration": None, "seen": 0, "in_pump": 0, "kind": None, "view_ns": [],
        "tobytes_ns": [], "mvbytes_ns": [], "pump_ms": [], "lent": [], "errors": [],
        "checked": False, "other": 0,
    }
    warmup = 2

    def sink(topic, payload):
        if topic == "particles/step":
            b = bytes(payload)
            st["configuration"] = struct.unpack_from("<Q", b, 8)[0] if len(b) >= 16 else None
        elif topic == "particles/error":
            st["errors"].append(bytes(payload).decode("utf-8", "replace"))
        elif topic == "particles/positions":
            if st["configuration"] != 1 or len(payload) != agents:
                st["other"] += 1  # the default 100k simulation, before our configure applied
                return
            st["seen"] += 1
            st["in_pump"] += 1
            if st["seen"] <= warmup:
                st["kind"] = "warmup"
                return
            kind = "pump" if st["seen"] % 2 else "copy"
            st["kind"] = kind
            t0 = time.perf_counter_ns()
            v = np.asarray(payload)
            t1 = time.perf_counter_ns()
            st["view_ns"].append(t1 - t0)
            st["lent"].append(getattr(payload, "lent", None))
            if v.shape != (agents, 3) or v.dtype != np.float32:
                st["errors"].append(f"view: shape {v.shape} dtype {v.dtype}")
            if kind == "copy":
                t0 = time.perf_counter_ns()
                a = payload.tobytes()
                t1 = time.perf_counter_ns()
                b = bytes(payload.memoryview())
                t2 = time.perf_counter_ns()
                st["tobytes_ns"].append(t1 - t0)
                st["mvbytes_ns"].append(t2 - t1)
                if not st["checked"]:
                    st["checked"] = True
                    if not (len(a) == len(b) == want_bytes and a == b and v.tobytes() == a):
                        st["errors"].append("view and copies differ")
                del a, b
            del v  # views keep the frame's memory: drop them before the call returns

    try:
        rt.set_sink(sink)
        plugin = rt.load_plugin(str(plugin_path))
        rt.post_event("particles/configure",
                      f"agents={agents} delivery=latest playing=1".encode("ascii"))
        p = select.poll()
        p.register(rt.wake_fd(), select.POLLIN)
        need = warmup + 2 * frames
        t_start = time.perf_counter()
        while st["seen"] < need and not st["errors"]:
            if time.perf_counter() - t_start > timeout_s:
                raise BenchError(f"frames: {st['seen']} of {need} {agents}-particle frames in "
                                 f"{timeout_s:.0f} s")
            if not p.poll(50):
                continue
            st["in_pump"] = 0
            st["kind"] = None
            t0 = time.perf_counter_ns()
            rt.pump(budget_ms)
            dt = time.perf_counter_ns() - t0
            if st["in_pump"] == 1 and st["kind"] == "pump":
                st["pump_ms"].append(dt / 1e6)
        elapsed = time.perf_counter() - t_start
        plugin.unload(5.0)
    finally:
        rt.shutdown(5.0)
    if st["errors"]:
        raise BenchError(f"frames: {st['errors'][0]}")
    us = lambda v: v / 1e3  # noqa: E731
    lent = st["lent"]
    return {
        "agents": agents,
        "frame_mb": want_bytes / 1e6,
        "frames": len(st["view_ns"]),
        "frames_per_s": st["seen"] / elapsed,
        "lent": (lent[0] if lent and all(x == lent[0] for x in lent) else
                 ("mixed" if lent else None)),
        "view_mean_us": us(statistics.fmean(st["view_ns"])),
        "view_p99_us": us(percentile(st["view_ns"], 99)),
        "tobytes_mean_us": us(statistics.fmean(st["tobytes_ns"])),
        "tobytes_p99_us": us(percentile(st["tobytes_ns"], 99)),
        "mvbytes_mean_us": us(statistics.fmean(st["mvbytes_ns"])),
        "mvbytes_p99_us": us(percentile(st["mvbytes_ns"], 99)),
        "copy_frames": len(st["tobytes_ns"]),
        "pump_frames": len(st["pump_ms"]),
        "pump_mean_ms": statistics.fmean(st["pump_ms"]) if st["pump_ms"] else float("nan"),
        "pump_p99_ms": percentile(st["pump_ms"], 99),
    }


# ---------------------------------------------------------------- report


def fmt_rate(v):
    return f"{v / 1e6:.2f} M/s" if v >= 1e6 else f"{v / 1e3:.1f} k/s"


def fmt_ms(v):
    return f"{v * 1000:.0f} us" if v < 1 else f"{v:.2f} ms"


def fmt_us(v):
    return f"{v:.1f} us" if v < 1000 else f"{v / 1000:.2f} ms"


def table(rows):
    head = ("benchmark", "hostloop", "peer", "ratio", "target", "met?")
    w = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    out = ["  ".join(str(h).ljust(w[i]) if i == 0 else str(h).rjust(w[i])
                     for i, h in enumerate(head)),
           "  ".join("-" * x for x in w)]
    for r in rows:
        out.append("  ".join(str(c).ljust(w[i]) if i == 0 else str(c).rjust(w[i])
                             for i, c in enumerate(r)))
    return "\n".join(out)


def finite(v):
    """``v`` with NaN (nothing measured) as None, so the JSON is strict."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [finite(x) for x in v]
    return v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for CI")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--results", type=int, default=None, help="(a) results (default 200000)")
    ap.add_argument("--producers", type=int, default=2, help="(a) producer threads")
    ap.add_argument("--samples", type=int, default=None, help="(b) latency samples (1000)")
    ap.add_argument("--frames", type=int, default=None,
                    help="(c) frames of each kind (default 50: 50 view+copy, 50 pump)")
    ap.add_argument("--agents", type=int, default=1_000_000, help="(c) particles per frame")
    ap.add_argument("--budget-ms", type=float, default=2.0, help="hostloop's pump budget")
    ap.add_argument("--peer", choices=("auto", "qt", "sleep"), default="auto",
                    help="the peer's timer: a QTimer (auto: if a Qt binding imports) or a "
                         "60 Hz sleep loop (stands for bpy.app.timers)")
    ap.add_argument("--plugin", default=os.environ.get("HOSTLOOP_PARTICLES", str(PARTICLES)),
                    help="the particles plugin (default target/release/libhostloop_particles.so)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: a,b,c")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds per part")
    args = ap.parse_args(argv)
    n = args.results or (20_000 if args.quick else 200_000)
    m = args.samples or (120 if args.quick else 1000)
    f = args.frames or (4 if args.quick else 50)
    skip = set(filter(None, args.skip.split(",")))
    if args.producers < 1 or n < args.producers or m < 1 or f < 1 or args.agents < 1:
        ap.error("sizes must be positive (and --results >= --producers)")

    QtCore, qt_name = find_qt(args.peer)
    numpy_version = None
    try:
        import numpy
        numpy_version = numpy.__version__
    except ImportError:
        pass
    env = {
        "hostloop": hostloop.__version__,
        "python": platform.python_version(),
        "qt": (f"{qt_name} (Qt {QtCore.qVersion()}, QT_QPA_PLATFORM="
               f"{os.environ.get('QT_QPA_PLATFORM')})" if QtCore else None),
        "numpy": numpy_version,
        "cpus": os.cpu_count(),
        "mode": "quick" if args.quick else "full",
    }
    peer = ("queue.Queue + QTimer 60 Hz (" + qt_name + ")" if QtCore else
            f"queue.Queue + 60 Hz sleep loop (stands for bpy.app.timers; {qt_name})")
    results = {"env": env, "peer": peer}
    rows = []

    if "a" not in skip:
        hl = [tp_hostloop_poll(n, args.producers, args.budget_ms, args.timeout)]
        if QtCore is not None:
            hl.append(tp_hostloop_qt(QtCore, n, args.producers, args.budget_ms, args.timeout))
            pr = tp_peer_qt(QtCore, n, args.producers, args.timeout)
        else:
            pr = tp_peer_sleep(n, args.producers, args.timeout)
        results["throughput"] = {"producers": args.producers, "hostloop": hl, "peer": pr}
        for h in hl:
            how = h["name"].split(", ", 1)[1]
            r = h["per_s"] / pr["per_s"]
            rows.append((f"(a) {n} results, {args.producers} producers -> main: {how}",
                         fmt_rate(h["per_s"]), fmt_rate(pr["per_s"]), f"{r:.3f}x", "> 1.00x",
                         "yes" if r > 1 else "NO"))

    if "b" not in skip:
        if QtCore is not None:
            lat = latency_qt(QtCore, m, 0.005, args.budget_ms, args.timeout)
        else:
            lat = latency_poll(m, 0.005, args.budget_ms, args.timeout)
        results["latency"] = lat
        for q in ("p50", "p99"):
            h, p = lat[f"hostloop_{q}_ms"], lat[f"peer_{q}_ms"]
            r = h / p
            rows.append((f"(b) latency {q}, 1 result / 5 ms, 60 Hz tick", fmt_ms(h), fmt_ms(p),
                         f"{r:.3f}x", "< 1.00x", "yes" if r < 1 else "NO"))

    if "c" not in skip:
        if numpy_version is None:
            raise BenchError("(c) needs numpy (pip install numpy), or pass --skip c")
        if not pathlib.Path(args.plugin).is_file():
            raise BenchError(f"(c) needs the particles plugin at {args.plugin}: "
                             "cargo build --release -p hostloop-particles (or --skip c)")
        fr = frames_bench(args.plugin, args.agents, f, args.budget_ms, args.timeout)
        results["frame"] = fr
        mb = f"{fr['frame_mb']:.0f} MB"
        for key, label in (("tobytes", "arr.tobytes()"), ("mvbytes", "bytes(arr.memoryview())")):
            r = fr["view_mean_us"] / fr[f"{key}_mean_us"]
            rows.append((f"(c) {mb} frame: numpy.asarray(arr) vs {label}, mean",
                         fmt_us(fr["view_mean_us"]), fmt_us(fr[f"{key}_mean_us"]), f"{r:.4f}x",
                         "< 1.00x", "yes" if r < 1 else "NO"))
        rows.append((f"(c) {mb} frame: numpy.asarray(arr) p99 vs arr.tobytes() p99",
                     fmt_us(fr["view_p99_us"]), fmt_us(fr["tobytes_p99_us"]),
                     f"{fr['view_p99_us'] / fr['tobytes_p99_us']:.4f}x", "-", "-"))
        rows.append((f"(c) {mb} frame: pump delivering it (sink takes a view), mean",
                     f"{fr['pump_mean_ms']:.2f} ms", "-", "-", "-", "-"))
        rows.append((f"(c) {mb} frame: pump delivering it (sink takes a view), p99",
                     f"{fr['pump_p99_ms']:.2f} ms", "-", "-", "-", "-"))

    if args.json:
        print(json.dumps(finite(results), indent=2, sort_keys=True))
        return 0
    print("hostloop Python delivery bench: " + ", ".join(
        f"{k} {v}" for k, v in env.items() if v is not None))
    print(f"peer: {peer}; ratios are hostloop / peer (rates: above 1 is better; times: below)")
    print()
    print(table(rows))
    if "throughput" in results:
        t = results["throughput"]
        retries = sum(h.get("backlog_retries", 0) for h in t["hostloop"])
        print("\n(a) seconds to the last delivery: " + ", ".join(
            f"{h['name']} {h['seconds']:.3f}" for h in t["hostloop"] + [t["peer"]])
            + f"; hostloop backlog retries: {retries}")
    if "latency" in results:
        lat = results["latency"]
        print(f"(b) host tick: {lat['host_tick']}, {lat['ticks']} ticks; hostloop wakes by "
              f"{lat['hostloop_wakes_by']}; the peer drains its queue at each tick; "
              f"{lat['samples']} samples each")
    if "frame" in results:
        fr = results["frame"]
        lent = fr["lent"]
        how = {True: "lent: the views point into hostloop's memory, no copy before the callback",
               False: "copied into the Array before the callback (not lent)",
               None: "copied into the Array before the callback (this build has no lending)"}
        print(f"(c) {fr['agents']} particles, {fr['frames']} frames with the view timed "
              f"({fr['copy_frames']} also copied, {fr['pump_frames']} pumps timed), "
              f"{fr['frames_per_s']:.1f} frames/s delivered; payload: "
              f"{how.get(lent, str(lent))}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"delivery bench: error: {e}", file=sys.stderr)
        sys.exit(1)
