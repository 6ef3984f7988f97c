"""Batch mode: Blender without an event loop (`-b`) runs the particles plugin and exports frames.

    blender -b --factory-startup --python-exit-code 1 \
        --python examples/hosts/blender/run_batch.py -- --frames 50 --out /tmp/frames

It uses the hostloop Python package as the add-on does (found by the add-on's `locate.py`: from a
checkout, the newest built wheel; `HOSTLOOP_WHEEL` overrides) and registers its runtime with
`hostloop.blender.register_runtime`, as an add-on's `register()` does in any mode. In background
mode `bpy.app.timers` never fire, so nothing would pump; this script hands the main thread to
hostloop instead: `rt.run_until` pumps on it, sleeping on the wake fd (GIL released) between
pumps, until the sink has received N frames. The plugin runs with `delivery=every` (the
simulation waits for the host, so no frame is skipped); the sink writes frame k to
`OUT/frame_%04d.ply` (binary little-endian PLY, xyz f32 in Blender's Z-up axes, converted from
the simulation's Y-up as the add-on does; the step in a comment) as it arrives, on the main
thread, copied out of the runtime's lent memory. With `--blend` the last frame is also stored as
a mesh in `OUT/particles.blend`.

Then what `hostloop.blender` promises, checked here without a GUI: a callback that raises
inside a pump goes to `sys.unraisablehook` and the pumps go on; File > New (`wm.read_homefile`)
keeps the attachment and its timer, and its `load_post` handler puts the timer back if it went
missing; the timer's tick (called by hand, as no timer fires here) pumps only when the wake fd
is readable, and a pump keeps its budget (items of 1 ms, 2 ms budget: at most two per pump); an
attachment whose runtime is shut down detaches itself; `unregister_runtime` shuts the runtime
down and no hostloop thread is left (`/proc/self/task` before and after; Blender's own threads
aside). Prints `key=value` lines; exits 0 only if every check held.
"""

import argparse
import collections
import os
import struct
import sys
import threading
import time
import traceback

import bpy

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the checkout
from hostloop_particles import locate  # noqa: E402  (finds the hostloop package)

hostloop = locate.import_hostloop()
import hostloop.blender  # noqa: E402
from hostloop_particles.engine import frame_f32, y_up_to_z_up  # noqa: E402

NAME = "run_batch"
# Threads that are Blender's, not hostloop's: its task pool and jemalloc's background threads
# (which more allocations may start at any time).
BLENDER_THREADS = ("blender", "jemalloc_bg_thd")


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="run_batch.py", description="export particle frames")
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--out", required=True)
    p.add_argument("--agents", type=int, default=20_000)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--blend", action="store_true", help="also save the last frame as a mesh")
    return p.parse_args(argv)


def threads():
    """{tid: name} of this process's threads."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                out[tid] = f.read().strip()
        except OSError:
            pass  # ended meanwhile
    return out


def ply_header(count, step):
    return (
        "ply\nformat binary_little_endian 1.0\n"
        f"comment hostloop particles step {step}\n"
        "comment z-up (Blender axes): x y z = simulation x, -z, y\n"
        f"element vertex {count}\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    ).encode("ascii")


class Exporter:
    def __init__(self, args):
        self.args = args
        self.main_ident = threading.get_ident()
        self.pending_step = None
        self.pending_configuration = None
        self.written = 0
        self.written_after_raise = 0  # frames written after the raising callback ran
        self.raised = False
        self.midway = None  # called once, from the sink, when the first frame is written
        self.start_frames = 0  # step 0: the simulation's start state, before its first step
        self.steps_seen = []  # the first steps received, for error messages
        self.frames_other = 0
        self.sink_off_main = 0
        self.errors = []
        self.last = None  # the last frame's positions (Z-up, a copy), kept for --blend

    def on_message(self, topic, payload):  # the sink: main thread, inside the runtime's pumps
        if threading.get_ident() != self.main_ident:
            self.sink_off_main += 1
        if topic == "particles/step":
            self.pending_step = struct.unpack_from("<Q", payload)[0]
            # Then the number of the configuration the frame belongs to: 0 is the plugin's own
            # default (100,000 particles, latest delivery), 1 the configure posted below. The
            # particle count alone cannot tell them apart when --agents is the default's.
            self.pending_configuration = (
                struct.unpack_from("<Q", payload, 8)[0] if len(payload) >= 16 else None)
        elif topic == "particles/positions":
            count, comps = payload.shape
            ours = self.pending_configuration is None or self.pending_configuration >= 1
            if comps != 3 or count != self.args.agents or not ours:
                self.frames_other += 1  # from before the configure event applied
                return
            step, self.pending_step = self.pending_step, None
            if len(self.steps_seen) < 8:
                self.steps_seen.append(step)
            if self.written >= self.args.frames:
                return  # frames after the N-th, arriving before run_until returned
            if step == 0 and self.written == 0 and self.start_frames == 0:
                self.start_frames += 1  # the start state is not a simulated frame: not exported
                return
            expected = self.written + 1
            if step != expected:
                self.errors.append(
                    f"expected step {expected}, got {step} (first steps: {self.steps_seen})")
                return
            path = os.path.join(self.args.out, f"frame_{step:04d}.ply")
            xyz = y_up_to_z_up(frame_f32(payload))  # lent memory: copied now, not kept
            with open(path, "wb") as f:
                f.write(ply_header(count, step))
                f.write(xyz.tobytes())
            self.written += 1
            self.written_after_raise += self.raised
            if self.midway is not None:
                self.midway, midway = None, self.midway
                midway()
            if self.written == self.args.frames:
                self.last = xyz
        elif topic == "particles/error":
            self.errors.append(bytes(payload).decode("utf-8", "replace"))

    def done(self):  # run_until's condition, after each pump
        return (self.written >= self.args.frames and self.raised) or bool(self.errors)

def save_blend(out, positions, count):
    mesh = bpy.data.meshes.new("hostloop_particles")
    mesh.vertices.add(count)
    mesh.vertices.foreach_set("co", positions)
    mesh.update()
    ob = bpy.data.objects.new("hostloop_particles", mesh)
    bpy.context.scene.collection.objects.link(ob)
    path = os.path.join(out, "particles.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    return path


def tick_until(att, cond, limit_s):
    """Calls the attachment's timer callback, as Blender's loop would, until cond()."""
    end = time.monotonic() + limit_s
    while not cond():
        if time.monotonic() > end:
            return False
        interval = att.tick()
        if interval is None:
            return False
        time.sleep(min(interval, 0.005))
    return True


def drain(att, limit_s):
    """Ticks until a tick finds the wake fd not readable (the frames still queued are pumped)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if att.tick() == att.interval_s:
            return True
    return False


def main():
    args = parse_args()
    if args.frames < 1:
        raise SystemExit("--frames must be at least 1")
    os.makedirs(args.out, exist_ok=True)
    r = {}
    checks = {}
    exporter = Exporter(args)
    started = time.monotonic()
    unraisable = []
    default_hook = sys.unraisablehook

    def hook(u):
        unraisable.append(u.exc_value)
        default_hook(u)

    sys.unraisablehook = hook

    threads_before = threads()
    rt = hostloop.blender.register_runtime(NAME, deadline_s=2.0)  # as an add-on's register()
    att = hostloop.blender.attachment(NAME)
    r["register_twice_same"] = int(hostloop.blender.register_runtime(NAME) is rt)
    rt.set_sink(exporter.on_message)
    plugin = rt.load_plugin(locate.find_plugin())
    pumps0 = rt.stats()["pumps"]
    rt.post_event("particles/configure",
                  f"agents={args.agents} delivery=every rate=0 playing=1".encode("ascii"))

    def boom():
        exporter.raised = True
        raise RuntimeError("a callback that raises, on purpose")

    # After the first frame, from the sink (inside a pump): a callback that raises, run by a
    # later pump among the frames; the frames written after it show that the loop lived.
    after_raise = []

    def midway():
        rt.call_soon(boom)
        rt.call_soon(lambda: after_raise.append(exporter.raised))  # queued behind it

    exporter.midway = midway
    try:
        finished = rt.run_until(lambda: exporter.done() and after_raise, args.timeout_s, 2.0)
    except Exception:
        traceback.print_exc()
        finished = False
    run_s = time.monotonic() - started
    pumps = rt.stats()["pumps"] - pumps0
    threads_during = threads()
    unload = plugin.unload(2.0)
    rt.set_sink(None)
    r["callback_error_reported"] = int(any(
        isinstance(e, RuntimeError) and "on purpose" in str(e) for e in unraisable))
    r["frames_after_callback_error"] = exporter.written_after_raise
    checks["the raising callback was reported"] = r["callback_error_reported"] == 1
    r["ran_after_callback_error"] = int(after_raise == [True])
    checks["the loop lived: the callback queued after it ran"] = after_raise == [True]

    # File > New: the attachment and its timer stay; load_post puts a missing timer back.
    loads0 = att.loads
    bpy.ops.wm.read_homefile(use_empty=True)
    r["attached_after_new_file"] = int(att.attached and att.timer_registered)
    bpy.app.timers.unregister(att._timer)  # as if something had dropped it
    bpy.ops.wm.read_homefile(use_empty=True)
    r["loads_seen"] = att.loads - loads0
    r["timer_reregistered"] = att.reregistered
    r["attached_after_reload"] = int(att.attached and att.timer_registered)
    checks["the attachment survived File > New"] = (
        r["attached_after_new_file"] == 1 and r["attached_after_reload"] == 1
        and r["loads_seen"] == 2 and att.reregistered == 1)

    # The timer's tick, by hand: it pumps only when the wake fd is readable.
    drained = drain(att, 30.0)
    fd0, idle0 = att.fd_pumps, att.idle_ticks
    r["idle_interval_s"] = att.tick() if drained else "not idle"
    r["idle_tick_pumped"] = att.fd_pumps - fd0
    ran = []
    rt.call_soon(lambda: ran.append(att.fd_pumps))
    r["busy_interval_s"] = att.tick()
    r["busy_tick_pumped"] = att.fd_pumps - fd0
    checks["an idle tick does not pump, a readable fd does"] = (
        drained and r["idle_tick_pumped"] == 0 and r["busy_tick_pumped"] == 1 and len(ran) == 1
        and r["busy_interval_s"] == hostloop.blender.BUSY_INTERVAL_S
        and att.idle_ticks > idle0)

    # Budgets: 50 items of at least 1 ms each, 2 ms budget: the clock is read after each item,
    # so no pump runs more than two of them; the rest wait for the next ticks.
    per_pump = []
    for _ in range(50):
        rt.call_soon(lambda: (time.sleep(0.001), per_pump.append(att.fd_pumps)))
    tick_until(att, lambda: len(per_pump) == 50, 60.0)
    most = collections.Counter(per_pump).most_common(1)[0][1] if per_pump else 0
    r["budget_items_ran"] = len(per_pump)
    r["budget_most_per_pump"] = most
    checks["the budget held: at most 2 items of 1 ms per 2 ms pump"] = (
        len(per_pump) == 50 and most <= 2)

    # A runtime shut down behind its attachment's back: the next tick ends the timer, detached.
    rt2 = hostloop.Runtime(workers=1)
    att2 = hostloop.blender.attach(rt2)
    rt2.shutdown(2.0)
    r["tick_after_shutdown"] = repr(att2.tick())
    r["self_detached"] = int(not att2.attached and not att2.timer_registered)
    checks["an attachment detaches itself once its runtime is shut down"] = (
        r["tick_after_shutdown"] == "None" and r["self_detached"] == 1)

    # unregister: shut down, detached, and no hostloop thread left
    shutdown = hostloop.blender.unregister_runtime(NAME)
    r["unregister_again"] = repr(hostloop.blender.unregister_runtime(NAME))
    threads_after = threads()
    born = {t: n for t, n in threads_during.items() if t not in threads_before}
    ours = {t: n for t, n in born.items() if n not in BLENDER_THREADS}
    left = {t: n for t, n in threads_after.items() if t in ours}
    r["hostloop_threads_during"] = ",".join(sorted(set(ours.values())))
    r["hostloop_threads_left"] = ",".join(sorted(left.values()))
    r["attached_after_unregister"] = int(att.attached or att.timer_registered)
    checks["hostloop's threads were seen"] = any(n.startswith("hostloop") for n in ours.values())
    checks["no hostloop thread left after unregister"] = not left
    checks["unregister detached"] = r["attached_after_unregister"] == 0

    elapsed = time.monotonic() - started
    blend = save_blend(args.out, exporter.last, args.agents) if args.blend and exporter.last else ""
    files = sorted(f for f in os.listdir(args.out) if f.startswith("frame_"))
    report = {
        "host": "blender-batch",
        "blender": bpy.app.version_string.split()[0],
        "background": int(bpy.app.background),
        "hostloop": hostloop.__version__,
        "hostloop_found_by": locate.found_by,
        "driver": "run_until",
        "run_until": "OK" if finished else "TIMEOUT",
        "frames_requested": args.frames,
        "frames_written": exporter.written,
        "frame_files": len(files),
        "frames_before_configure": exporter.frames_other,
        "start_frames": exporter.start_frames,
        "agents": args.agents,
        "pumps": pumps,
        "run_s": f"{run_s:.2f}",
        "sink_on_main": int(exporter.sink_off_main == 0 and exporter.written > 0),
        "errors": len(exporter.errors),
        "blend": os.path.basename(blend) if blend else "",
        "unload_stragglers": unload["stragglers"],
        "shutdown_stragglers": shutdown["stragglers"],
        "shutdown": "OK" if shutdown["stragglers"] == 0 else "TIMEOUT",
        "seconds": f"{elapsed:.2f}",
    }
    report.update(r)
    checks.update({
        "run_until finished": finished,
        "frames 1..N written": exporter.written == args.frames,
        "no errors": not exporter.errors,
        "clean shutdown": report["shutdown"] == "OK",
        "the same runtime for a second register": r["register_twice_same"] == 1,
        "a second unregister returns None": r["unregister_again"] == "None",
    })
    failed = [k for k, ok in checks.items() if not ok]
    report["checks"] = len(checks)
    report["checks_failed"] = len(failed)
    for k, v in report.items():
        print(f"{k}={v}")
    for e in exporter.errors[:5]:
        print(f"error: {e}", file=sys.stderr)
    for k in failed:
        print(f"check failed: {k}", file=sys.stderr)
    sys.stdout.flush()
    sys.unraisablehook = default_hook
    return 0 if not failed else 1


try:
    code = main()
except BaseException:
    traceback.print_exc()
    code = 1
sys.stdout.flush()
sys.stderr.flush()
# In -b mode Blender exits when the script ends; sys.exit gives the exit code for both cases.
sys.exit(code)
