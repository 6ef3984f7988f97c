"""Runs the hostloop particles add-on in Blender's GUI for a few seconds and checks it.

    xvfb-run -a blender --factory-startup --window-geometry 0 0 640 480 \
        --python-exit-code 1 --python examples/hosts/blender/run_gui.py

Enables the add-on (from the directory of this script), lets Blender's event loop run it, takes
two snapshots of the mesh's vertices a few seconds apart (they must differ: the particles fell),
checks the mesh holds the last frame the sink received, disables the add-on (which unloads the
plugin and shuts hostloop down), prints `key=value` lines and quits: exit 0 only if every check
held. It always exits on its own: errors exit 1, a watchdog thread exits 3 after
HOSTLOOP_HARD_LIMIT_S seconds. HOSTLOOP_SECONDS (default 4) sets the run's shortest length; it then
runs on until the progress the test checks was made (3 frames, 2 written into the mesh, 3
doorbell pumps, 4 timer ticks), at most HOSTLOOP_PROGRESS_LIMIT_S (default 90) more seconds, so a
loaded machine is slow rather than failing.
"""

import array
import os
import sys
import threading
import time
import traceback

import addon_utils
import bpy

HERE = os.path.dirname(os.path.abspath(__file__))
ADDON = "hostloop_particles"
SECONDS = float(os.environ.get("HOSTLOOP_SECONDS", "4"))
HARD_LIMIT_S = float(os.environ.get("HOSTLOOP_HARD_LIMIT_S", "180"))
# After SECONDS, how much longer a slow (loaded) run may take to show the progress checked.
PROGRESS_LIMIT_S = float(os.environ.get("HOSTLOOP_PROGRESS_LIMIT_S", "90"))


def fail(code, message):
    print(f"FAIL blender-gui: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)  # from a timer or a thread, sys.exit would only end the callback


watchdog = threading.Timer(HARD_LIMIT_S, fail, (3, f"still running after {HARD_LIMIT_S:.0f} s"))
watchdog.daemon = True  # a non-daemon thread would keep Blender from quitting
watchdog.start()


def snapshot(mesh):
    buf = array.array("f", bytes(12 * len(mesh.vertices)))
    mesh.vertices.foreach_get("co", buf)
    return buf


class Driver:
    def __init__(self, addon):
        self.addon = addon
        self.started = time.monotonic()
        self.first = None
        self.first_step = 0
        self.window_start = 0.0
        self.result = {}

    def __call__(self):  # a bpy.app.timers callback, on the main thread
        try:
            return self.step()
        except Exception:
            traceback.print_exc()
            fail(1, "the driver raised")

    def step(self):
        s = self.addon.session
        elapsed = time.monotonic() - self.started
        if s is None:
            fail(1, "the add-on has no session")
        if self.first is None:
            if s.shown_step > 0 and elapsed >= 1.0:
                self.first = snapshot(s.mesh())
                self.first_step = s.shown_step
                self.window_start = time.monotonic()
            elif elapsed > SECONDS + 30:
                fail(1, f"no frame reached the mesh in {elapsed:.0f} s "
                        f"(counters: {s.counters}, last error: {s.last_error!r})")
            return 0.1
        if s.dirty:
            return 0.05
        # Run at least SECONDS, then until the loop has shown what the test checks (frames into
        # the mesh, doorbell pumps, timer ticks in the window): a loaded machine gets more time
        # (up to PROGRESS_LIMIT_S) instead of a failure for being slow; a frozen one still fails.
        if elapsed < 1.0 + SECONDS or (
            not self.progressed(s) and elapsed < 1.0 + SECONDS + PROGRESS_LIMIT_S
        ):
            return 0.1
        # The mesh holds the newest frame the sink received (nothing newer is waiting).
        mesh = s.mesh()
        second = snapshot(mesh)
        moved = max(abs(a - b) for a, b in zip(self.first, second))
        r = self.result
        r["mesh_vertices"] = len(mesh.vertices)
        r["mesh_matches_frame"] = int(second == s.positions)
        r["first_step"] = self.first_step
        r["moved_max"] = f"{moved:.4f}"
        r["moved"] = int(moved > 1e-3)
        # The loop's cadence between the two snapshots (start-up, the first redraws and their
        # shader compiles, are left out): the gaps between the add-on's timer ticks.
        times = [t for t in s.tick_times if t >= self.window_start]
        gaps = self.addon.tick_gaps_ms(times)
        r["window_s"] = f"{time.monotonic() - self.window_start:.2f}"
        r["window_ticks"] = len(times)
        r["window_tick_p50_ms"] = round(self.addon.percentile(gaps, 50), 2)
        r["window_tick_p99_ms"] = round(self.addon.percentile(gaps, 99), 2)
        r["window_tick_max_ms"] = round(max(gaps, default=0.0), 2)
        self.finish()
        return None

    def progressed(self, s):
        c = s.counters
        window_ticks = sum(1 for t in s.tick_times if t >= self.window_start)
        return (
            c["frames"] >= 3
            and c["frames_written"] >= 2
            and c["fd_pumps"] >= 3
            and window_ticks >= 4
            and s.shown_step > self.first_step
        )

    def finish(self):
        addon_utils.disable(ADDON, default_set=False)
        report = dict(self.addon.last_report)
        report.update(self.result)
        report["session_after_disable"] = int(self.addon.session is not None)
        report["blender"] = bpy.app.version_string.split()[0]
        report["seconds"] = f"{time.monotonic() - self.started:.2f}"
        for k, v in report.items():
            print(f"{k}={v}")
        checks = {
            "frames reached the sink": report.get("frames", 0) > 0,
            "the sink ran on the main thread": report.get("sink_on_main") == 1,
            "the doorbell fd drove pumps": report.get("fd_pumps", 0) > 0,
            "frames were written into the mesh": report.get("frames_written", 0) > 0,
            "the mesh has one vertex per particle": r_eq(report, "mesh_vertices", "agents"),
            "the mesh moved": report.get("moved") == 1,
            "the mesh holds the last frame": report.get("mesh_matches_frame") == 1,
            "no plugin or pump errors": report.get("errors") == 0
            and report.get("pump_errors") == 0,
            "disable unregistered the timer": report.get("timer_registered_after") == 0,
            "clean shutdown": report.get("shutdown") == "OK"
            and report.get("shutdown_stragglers") == 0,
        }
        failed = [name for name, ok in checks.items() if not ok]
        print(f"checks_failed={len(failed)}", flush=True)
        if failed:
            fail(1, "; ".join(failed))
        bpy.ops.wm.quit_blender()  # exit code 0


def r_eq(report, a, b):
    return a in report and report.get(a) == report.get(b)


def main():
    if bpy.app.background:
        fail(1, "bpy.app.timers do not run in background mode (-b); run the GUI (xvfb-run)")
    if HERE not in sys.path:
        sys.path.insert(0, HERE)

    def raise_error(e):
        raise e

    addon = addon_utils.enable(ADDON, default_set=False, handle_error=raise_error)
    if addon is None or addon.session is None:
        fail(1, "the add-on did not enable")
    bpy.app.timers.register(Driver(addon), first_interval=0.1)


try:
    main()
except SystemExit:
    raise
except BaseException:
    traceback.print_exc()
    fail(1, "run_gui.py raised during start-up")
