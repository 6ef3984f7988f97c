"""Batch mode: Blender without an event loop (`-b`) runs the particles plugin and exports frames.

    blender -b --factory-startup --python-exit-code 1 \
        --python examples/hosts/blender/run_batch.py -- --frames 50 --out /tmp/frames

In background mode `bpy.app.timers` never fire, so nothing would pump hostloop's main-thread
queue. Instead this script hands the main thread to hostloop: `hl_runtime_run_until` pumps on
it, sleeping on the doorbell between pumps, until the sink has received N frames. The plugin runs
with `delivery=every` (the simulation waits for the host, so no frame is skipped); the sink
writes frame k to `OUT/frame_%04d.ply` (binary little-endian PLY, xyz f32 in Blender's Z-up axes,
converted from the simulation's Y-up as the add-on does; the step in a comment) as it arrives, on
the main thread. With `--blend` the last frame is also stored as a mesh in
`OUT/particles.blend`. Prints `key=value` lines; exits 0 only if frames 1..N were all written in
order.
"""

import argparse
import array
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
from hostloop_particles import hostloop  # noqa: E402  (the add-on's ctypes binding)
from hostloop_particles.engine import y_up_to_z_up  # noqa: E402  (Y-up -> Blender's Z-up)


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="run_batch.py", description="export particle frames")
    p.add_argument("--frames", type=int, default=50)
    p.add_argument("--out", required=True)
    p.add_argument("--agents", type=int, default=20_000)
    p.add_argument("--timeout-s", type=float, default=120.0)
    p.add_argument("--blend", action="store_true", help="also save the last frame as a mesh")
    return p.parse_args(argv)


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
        self.start_frames = 0  # step 0: the simulation's start state, before its first step
        self.steps_seen = []  # the first steps received, for error messages
        self.frames_other = 0
        self.sink_off_main = 0
        self.errors = []
        self.last = None  # the last frame's positions, kept for --blend

    def on_message(self, m):  # the sink: main thread, inside the runtime's own pumps
        if threading.get_ident() != self.main_ident:
            self.sink_off_main += 1
        if m.topic == "particles/step":
            b = m.bytes()
            self.pending_step = struct.unpack_from("<Q", b)[0]
            # Then the number of the configuration the frame belongs to: 0 is the plugin's own
            # default (100,000 particles, latest delivery), 1 the configure posted below. The
            # particle count alone cannot tell them apart when --agents is the default's.
            self.pending_configuration = struct.unpack_from("<Q", b, 8)[0] if len(b) >= 16 else None
        elif m.topic == "particles/positions":
            comps, count, data = m.array_f32()
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
            xyz = y_up_to_z_up(array.array("f", bytes(memoryview(data).cast("B"))))
            with open(path, "wb") as f:
                f.write(ply_header(count, step))
                f.write(xyz.tobytes())
            self.written += 1
            if self.written == self.args.frames:
                self.last = xyz
        elif m.topic == "particles/error":
            self.errors.append(m.bytes().decode("utf-8", "replace"))

    def done(self):  # run_until's condition, after each pump
        return self.written >= self.args.frames or bool(self.errors)


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


def main():
    args = parse_args()
    if args.frames < 1:
        raise SystemExit("--frames must be at least 1")
    os.makedirs(args.out, exist_ok=True)
    exporter = Exporter(args)
    started = time.monotonic()
    rt = hostloop.Runtime(thread_name="blender-batch")
    rt.set_sink(exporter.on_message)
    plugin = None
    try:
        plugin = rt.load_plugin(
            hostloop.find_artifact("libhostloop_particles.so", "HOSTLOOP_PARTICLES"))
        rt.post_custom("particles/configure",
                       f"agents={args.agents} delivery=every rate=0 playing=1".encode("ascii"))
        if not rt.has_run_until():
            raise RuntimeError("this libhostloop has no hl_runtime_run_until (batch mode)")
        finished, run = rt.run_until(exporter.done, budget_us=2000,
                                     timeout_ms=int(args.timeout_s * 1000))
    finally:
        unload = plugin.unload(deadline_ms=2000) if plugin is not None else None
        status = rt.shutdown(deadline_ms=2000)
    elapsed = time.monotonic() - started
    blend = save_blend(args.out, exporter.last, args.agents) if args.blend and exporter.last else ""
    files = sorted(f for f in os.listdir(args.out) if f.startswith("frame_"))
    report = {
        "host": "blender-batch",
        "blender": bpy.app.version_string.split()[0],
        "background": int(bpy.app.background),
        "driver": "hl_runtime_run_until",
        "run_until": "OK" if finished else "TIMEOUT",
        "frames_requested": args.frames,
        "frames_written": exporter.written,
        "frame_files": len(files),
        "frames_before_configure": exporter.frames_other,
        "start_frames": exporter.start_frames,
        "agents": args.agents,
        "pumps": run.pumps,
        "items_ran": run.ran,
        "run_ms": f"{run.elapsed_us / 1000:.0f}",
        "sink_on_main": int(exporter.sink_off_main == 0 and exporter.written > 0),
        "errors": len(exporter.errors),
        "blend": os.path.basename(blend) if blend else "",
        "unload_stragglers": unload.stragglers if unload else "",
        "shutdown_stragglers": rt.shutdown_report.stragglers,
        "shutdown": status.replace("HL_STATUS_", ""),
        "seconds": f"{elapsed:.2f}",
    }
    for k, v in report.items():
        print(f"{k}={v}")
    for e in exporter.errors[:5]:
        print(f"error: {e}", file=sys.stderr)
    sys.stdout.flush()
    ok = (finished and exporter.written == args.frames and not exporter.errors
          and status == "HL_STATUS_OK")
    return 0 if ok else 1


try:
    code = main()
except BaseException:
    traceback.print_exc()
    code = 1
sys.stdout.flush()
sys.stderr.flush()
# In -b mode Blender exits when the script ends; sys.exit gives the exit code for both cases.
sys.exit(code)
