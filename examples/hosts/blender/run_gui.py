"""Runs the hostloop particles add-on in Blender's GUI through its panel's operators and settings,
as a user would, and checks what they would see.

    xvfb-run -a blender --factory-startup --enable-event-simulate --window-geometry 0 0 1200 800 \
        --python-exit-code 1 --python examples/hosts/blender/run_gui.py -- --out /tmp/hl-gui

It turns the splash screen off (the window is checked for it), enables the add-on from the
directory of this script once the window has drawn (the add-on uses the hostloop Python package,
found by its `locate.py`: from a checkout, the newest built wheel; `HOSTLOOP_WHEEL` overrides;
enabling it registers its runtime with `hostloop.blender.register_runtime`), builds a scene (a
ground plane), presses Start, and then, one step after the other, waits for what each action
must lead to: frames reach the mesh; hostloop.blender's timer pumps only when the wake fd is
readable; a callback that raises inside a pump is reported (sys.unraisablehook) and the frames
keep coming; a pump keeps its 2 ms budget (items of 1 ms: at most two per pump); a new rate and
Play/Pause apply without resetting the step, and the timeline's Play/Pause plays and pauses the
simulation running free; Particles (the mesh follows) and Kernel rebuild; too many particles is
refused and reported in Blender's UI; following the timeline, frame 30 shows step 30, scrubbing
back to 10 shows step 10, and the particles lie on the ground (Z-up); timeline playback drives
the steps; Reset; Export Cache writes frames start..end with progress, and Cancel stops another
export cleanly; a bad cache folder is reported; saving and opening the .blend file keeps
hostloop's timer and the simulation running. It clicks the sidebar's hostloop tab (which needs
--enable-event-simulate) and takes a screenshot of the panel beside the particles falling onto
the ground plane (OUT/screenshot.png), presses Stop, disables the add-on (hostloop shuts down:
no thread of it is left, compared by /proc/self/task before and after, Blender's own aside),
prints `key=value` lines and quits: exit 0 only if every check held.

Every wait is for a condition, with a deadline of HOSTLOOP_WAIT_S seconds (default 120) each: a
loaded machine, where Blender's software OpenGL under Xvfb redraws at 1-5 Hz, is slow rather
than failing. It always exits on its own: a failed check exits 1, a watchdog thread exits 3 after
HOSTLOOP_HARD_LIMIT_S seconds (default 1200).
"""

import argparse
import array
import collections
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback

import addon_utils
import bpy
from mathutils import Euler

HERE = os.path.dirname(os.path.abspath(__file__))
ADDON = "hostloop_particles"
WAIT_S = float(os.environ.get("HOSTLOOP_WAIT_S", "120"))
HARD_LIMIT_S = float(os.environ.get("HOSTLOOP_HARD_LIMIT_S", "1200"))
AGENTS = 20_000
# Threads that are Blender's, not hostloop's: its task pool ("blender"), Mesa's ("llvmpipe-N",
# "blender:disk$N") and jemalloc's background threads, which more allocations may start.
BLENDER_THREAD_PREFIXES = ("blender", "llvmpipe-", "jemalloc_bg_thd")

# The splash screen would cover the viewport: off before the window opens (this script runs
# first; --factory-startup keeps the preference from being saved).
bpy.context.preferences.view.show_splash = False


def fail(code, message):
    print(f"FAIL blender-gui: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)  # from a timer or a thread, sys.exit would only end the callback


watchdog = threading.Timer(HARD_LIMIT_S, fail, (3, f"still running after {HARD_LIMIT_S:.0f} s"))
watchdog.daemon = True  # a non-daemon thread would keep Blender from quitting
watchdog.start()


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="run_gui.py")
    p.add_argument("--out", help="where the export cache and the screenshots go "
                                 "(default: a temporary directory, removed at the end)")
    return p.parse_args(argv)


class Wait:
    """What a scenario step waits for: `cond()` true, before `deadline_s` seconds have passed."""

    def __init__(self, cond, what, deadline_s=None, at_least_s=0.0, ticks=0):
        self.cond, self.what = cond, what
        self.started = time.monotonic()
        self.deadline_s = WAIT_S if deadline_s is None else deadline_s
        self.at_least_s = at_least_s  # and at least this long (to see that something stays)
        self.ticks = ticks  # and at least this many of the add-on's timer ticks
        self.ticks0 = None

    def done(self, ticks):
        if self.ticks0 is None:
            self.ticks0 = ticks
        elapsed = time.monotonic() - self.started
        if elapsed >= self.at_least_s and ticks - self.ticks0 >= self.ticks and self.cond():
            return True
        if elapsed > self.deadline_s:
            fail(1, f"waited {elapsed:.0f} s for {self.what}: {state_line()}")
        return False


def wait(cond, what, **kw):
    return Wait(cond, what, **kw)


def pause(seconds, ticks=0):
    return Wait(lambda: True, f"{seconds} s", at_least_s=seconds, ticks=ticks)


def state_line():
    if ADDON not in sys.modules:
        return "the add-on is not enabled"
    s = engine().current
    if s is None:
        return "no session"
    return (f"shown_step={s.shown_step} shown_count={s.shown_count} received={s.received_step} "
            f"configuration={s.configuration} follow={s.follow} playing={s.playing} "
            f"export={getattr(s.export, 'state', None)} counters={s.counters} "
            f"last_error={s.last_error!r}")


def engine():
    return sys.modules[ADDON].engine


def hostloop():
    return engine().hostloop


def ui():
    return sys.modules[ADDON].ui


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


unraisable = []  # what reached sys.unraisablehook (then printed as usual)


def _hook(u, default=sys.unraisablehook):
    unraisable.append(u.exc_value)
    default(u)


sys.unraisablehook = _hook


# -- Blender's UI, as a click would reach it


def window():
    return bpy.context.window_manager.windows[0]


def view3d():
    for area in window().screen.areas:
        if area.type == "VIEW_3D":
            return area
    fail(1, "no 3D viewport in the window")


def region(area, kind):
    return next(r for r in area.regions if r.type == kind)


def override():
    area = view3d()
    return bpy.context.temp_override(window=window(), area=area, region=region(area, "WINDOW"))


def op(name, *args, **kw):
    """Calls a hostloop_particles operator as its panel button would: its result, as text
    ("FINISHED"), or "ERROR: <the report>" for one that reported an error (bpy.ops raises)."""
    try:
        with override():
            return ",".join(getattr(bpy.ops.hostloop_particles, name)(*args, **kw))
    except RuntimeError as e:
        return f"ERROR: {e}"


def screen_op(name, **kw):
    with override():
        return getattr(bpy.ops.screen, name)(**kw)


def screenshot(path):
    with bpy.context.temp_override(window=window()):
        bpy.ops.screen.screenshot(filepath=path)
    return path


def coloured_fraction(path, box, test):
    """The fraction of pixels in `box` (x0, y0, x1, y1 as fractions of the image, y up) for
    which test(r, g, b) holds."""
    im = bpy.data.images.load(path)
    try:
        w, h = im.size
        px = array.array("f", bytes(4 * 4 * w * h))
        im.pixels.foreach_get(px)
    finally:
        bpy.data.images.remove(im)
    x0, y0, x1, y1 = int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)
    hit = n = 0
    for y in range(y0, y1, 2):
        row = 4 * y * w
        for x in range(x0, x1, 2):
            i = row + 4 * x
            n += 1
            hit += bool(test(px[i], px[i + 1], px[i + 2]))
    return hit / max(n, 1)


def splash_like(r, g, b):  # the splash's picture: colourful or bright, not the viewport's greys
    return max(r, g, b) - min(r, g, b) > 0.15 or max(r, g, b) > 0.8


def particle_like(r, g, b):  # the points' orange, lit by the solid view's studio light (the
    return r - b > 0.15 and r > g > b + 0.03  # ground, the sky and the UI are grey)


# -- the scene


def build_scene(scene):
    cube = bpy.data.objects.get("Cube")
    if cube is not None:
        bpy.data.objects.remove(cube)  # the particles fall where it stands
    me = bpy.data.meshes.new("ground")
    s = 8.0
    me.from_pydata([(-s, -s, 0), (s, -s, 0), (s, s, 0), (-s, s, 0)], [], [(0, 1, 2, 3)])
    me.update()
    mat = bpy.data.materials.new("ground")
    mat.diffuse_color = (0.55, 0.58, 0.62, 1.0)
    me.materials.append(mat)
    ground = bpy.data.objects.new("ground", me)
    scene.collection.objects.link(ground)
    space = view3d().spaces.active
    space.overlay.show_floor = False  # the plane is the floor
    space.overlay.show_extras = False  # no camera and light in the middle of the particles
    r3d = space.region_3d
    r3d.view_rotation = Euler((math.radians(70), 0.0, math.radians(38))).to_quaternion()
    r3d.view_location = (0.0, 0.0, 3.5)
    r3d.view_distance = 27.0
    view3d().tag_redraw()


def snapshot(mesh):
    buf = array.array("f", bytes(12 * len(mesh.vertices)))
    mesh.vertices.foreach_get("co", buf)
    return buf


def read_ply(path):
    data = open(path, "rb").read()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    return data[:end].decode("ascii"), array.array("f", data[end:])


# -- the scenario: each `yield` waits for a condition


class Run:
    def __init__(self, args):
        self.args = args
        self.out = args.out or tempfile.mkdtemp(prefix="hostloop-gui-")
        os.makedirs(self.out, exist_ok=True)
        self.started = time.monotonic()
        self.r = {}
        self.checks = {}
        self.calls = 0  # the driver's calls (one per turn of Blender's loop, at most)

    def check(self, name, ok):
        self.checks[name] = bool(ok)
        if not ok:
            print(f"check failed: {name} ({state_line()})", file=sys.stderr, flush=True)

    def ticks(self):
        """The add-on's timer ticks; before Start, the driver's own calls."""
        s = engine().current if ADDON in sys.modules else None
        return s.counters["ticks"] if s is not None else self.calls

    def new_reports(self, since, level):
        return [m for lv, m in list(engine().reports)[since:] if lv == level]

    def frames_since(self, mark):
        """(step, configuration, count) of the frames the sink took since `mark`."""
        s = engine().current
        return [f for i, f in s.frame_log if i > mark]

    def scenario(self):
        r, check = self.r, self.check
        wm = bpy.context.window_manager

        # -- the window as it first shows: no splash screen over the viewport
        yield wait(lambda: True, "the window's first draws", at_least_s=2.0, ticks=10)
        shot = screenshot(os.path.join(self.out, "startup.png"))
        splash = coloured_fraction(shot, (0.3, 0.5, 0.7, 0.75), splash_like)
        drawn = coloured_fraction(shot, (0.0, 0.0, 1.0, 1.0), lambda r, g, b: g > 0.1)
        r["startup_colourful_fraction"] = f"{splash:.3f}"
        r["startup_drawn_fraction"] = f"{drawn:.3f}"
        r["splash_shown"] = int(splash > 0.15)
        check("the window was drawn (Blender's greys, not black)", drawn > 0.5)
        check("no splash screen over the viewport", splash <= 0.15)

        # -- the add-on, enabled as the checkbox in Preferences does: its runtime starts
        self.threads_before = threads()

        def raise_error(e):
            raise e

        addon = addon_utils.enable(ADDON, default_set=False, handle_error=raise_error)
        if addon is None:
            fail(1, "the add-on did not enable")
        att = hostloop().blender.attachment(engine().ADDON)
        if att is None or not att.attached or not att.timer_registered:
            fail(1, f"enabling the add-on did not attach its runtime: {att!r}")
        r["hostloop_found_by"] = sys.modules[ADDON].locate.found_by

        # -- the panel's settings, then Start
        scene = window().scene
        build_scene(scene)
        p = scene.hostloop_particles
        p.agents, p.rate, p.follow_timeline = AGENTS, 60.0, False
        r["start"] = op("start")
        s = engine().current
        if s is None:
            fail(1, f"Start did not start: {list(engine().reports)[-3:]}")
        r["library"] = os.path.relpath(s.library, os.path.dirname(HERE))
        yield wait(lambda: s.shown_count == AGENTS and s.shown_step > 0,
                   f"a frame of {AGENTS} particles in the mesh")
        mesh = s.mesh()
        first, first_step = snapshot(mesh), s.shown_step
        window_start = time.monotonic()

        def progressed():
            c = s.counters
            ticks = sum(1 for t in s.tick_times if t >= window_start)
            return (c["frames"] >= 3 and c["frames_written"] >= 2 and c["fd_pumps"] >= 3
                    and ticks >= 4 and s.shown_step > first_step)

        yield wait(progressed, "frames, mesh writes, doorbell pumps and ticks")
        second = snapshot(mesh)
        moved = max(abs(a - b) for a, b in zip(first, second))
        r["mesh_vertices"] = len(mesh.vertices)
        r["mesh_matches_frame"] = int(second == engine().y_up_to_z_up(s.positions))
        r["first_step"] = first_step
        r["moved"] = int(moved > 1e-3)
        times = [t for t in s.tick_times if t >= window_start]
        gaps = engine().tick_gaps_ms(times)
        r["window_ticks"] = len(times)
        r["window_tick_p50_ms"] = round(engine().percentile(gaps, 50), 2)
        r["window_tick_p99_ms"] = round(engine().percentile(gaps, 99), 2)
        # hostloop.blender's timer: every pump came from a readable wake fd
        r["attachment_ticks"] = att.ticks
        r["attachment_idle_ticks"] = att.idle_ticks
        check("every pump was gated on the wake fd",
              att.fd_pumps >= 3 and att.timer_pumps == 0 and att.ticks >= att.fd_pumps)
        self.threads_during = threads()

        # -- a callback that raises inside a pump: reported, and the loop lives
        def boom():
            raise RuntimeError("a callback that raises, on purpose")

        since, pumps0 = len(unraisable), att.fd_pumps
        s.rt.call_soon(boom)
        yield wait(lambda: any("on purpose" in str(e) for e in unraisable[since:]),
                   "the raising callback to be reported to sys.unraisablehook")
        n, pumps1 = s.received_step, att.fd_pumps
        yield wait(lambda: s.received_step > n + 3 and att.fd_pumps > pumps1 + 3,
                   "frames to keep coming after the raising callback")
        r["callback_error_reported"] = 1
        r["frames_after_callback_error"] = s.received_step - n
        r["attached_after_callback_error"] = int(att.attached and att.error is None)
        check("the loop lived through a raising callback",
              att.attached and att.fd_pumps > pumps0 and s.counters["pump_errors"] == 0)

        # -- the budget: 40 items of at least 1 ms, 2 ms per pump. The clock is read after
        #    every item, so no pump runs more than two of them; the rest wait for later ticks.
        per_pump = []
        for _ in range(40):
            s.rt.call_soon(lambda: (time.sleep(0.001), per_pump.append(att.fd_pumps)))
        yield wait(lambda: len(per_pump) == 40, "40 items of 1 ms to run")
        most = collections.Counter(per_pump).most_common(1)[0][1]
        r["budget_most_per_pump"] = most
        r["budget_pumps"] = len(set(per_pump))
        check("the budget held: at most 2 items of 1 ms per 2 ms pump", most <= 2)

        # -- Rate: applied to the running simulation, which keeps its step
        step0, cfg0, mark = s.received_step, s.configuration, s.frames_logged
        p.rate = 5.0
        yield wait(lambda: s.configuration > cfg0, "the new rate to apply")
        t0, n0 = time.monotonic(), s.received_step
        yield wait(lambda: s.received_step >= n0 + 3, "3 steps at 5 steps/s", at_least_s=3.0)
        elapsed = time.monotonic() - t0
        r["rate5_steps_per_s"] = f"{(s.received_step - n0) / elapsed:.1f}"
        check("rate=5 runs at most 5 steps/s", s.received_step - n0 <= 5 * elapsed + 3)
        r["rate_kept_step"] = int(min(f[0] for f in self.frames_since(mark)) >= step0)
        check("a new rate keeps the step", r["rate_kept_step"])
        p.rate = 60.0

        # -- Play/Pause (the panel's button), running free: the step holds, then goes on
        yield from self.pause_and_play(s, "button", lambda: op("play_pause"),
                                       lambda: op("play_pause"))
        # ... and the timeline's Play/Pause plays and pauses it too
        op("play_pause")
        yield wait(lambda: not s.playing, "the pause")
        yield from self.pause_and_play(
            s, "timeline", lambda: None, lambda: screen_op("animation_play"),
            paused_already=True)
        screen_op("animation_cancel", restore_frame=True)
        yield wait(lambda: not s.playing, "the timeline's stop to pause the simulation")
        op("play_pause")  # running free again, for what follows
        yield wait(lambda: s.playing, "play")

        # -- Particles: a rebuild, and the mesh follows the count
        p.agents = 5000
        yield wait(lambda: s.shown_count == 5000 and len(s.mesh().vertices) == 5000,
                   "the mesh to have 5000 vertices")
        r["mesh_vertices_after_agents"] = len(s.mesh().vertices)
        # -- Kernel: C++
        cfg = s.configuration
        p.kernel = "CPP"
        yield wait(lambda: s.configuration > cfg and s.shown_count == 5000, "the C++ kernel")
        n = s.received_step
        yield wait(lambda: s.received_step > n + 3, "steps with the C++ kernel")
        r["kernel_cpp_errors"] = s.counters["errors"]

        # -- an error: more particles than the plugin takes, shown in Blender's UI
        since, errors0 = len(engine().reports), s.counters["errors"]
        p.agents = 20_000_000
        yield wait(lambda: any("agents" in m for m in self.new_reports(since, "ERROR")),
                   "an error report about agents")
        r["error_report"] = self.new_reports(since, "ERROR")[0]
        r["plugin_errors"] = s.counters["errors"] - errors0
        n = s.received_step
        yield wait(lambda: s.received_step > n + 3, "the simulation to run on after the refusal")
        check("the refused count left the simulation as it was", s.shown_count == 5000)
        check("the panel shows the error", "agents" in s.last_error)
        p.agents = AGENTS
        p.kernel = "RUST"
        yield wait(lambda: s.shown_count == AGENTS, f"{AGENTS} particles again")

        # -- Follow Timeline: the scene frame is the step; scrubbing seeks
        cfg = s.configuration
        p.follow_timeline = True
        yield wait(lambda: s.configuration > cfg, "lock-step to apply")
        scene.frame_set(30)
        yield wait(lambda: s.shown_step == 30 and s.received_step == 30, "frame 30 -> step 30")
        r["frame30_step"] = s.shown_step
        scene.frame_set(10)
        yield wait(lambda: s.shown_step == 10 and s.received_step == 10,
                   "scrubbing back to frame 10 -> step 10")
        r["frame10_step"] = s.shown_step
        scene.frame_current = 300  # as typing a frame number
        yield wait(lambda: s.shown_step == 300 and s.received_step == 300,
                   "frame 300 -> step 300")
        # Z-up: the floor is z = 0 in Blender; the box the particles started in spans -5..5 in
        # x and y. Without the conversion, y would be the height (never below 0).
        co = snapshot(s.mesh())
        xs, ys, zs = co[0::3], co[1::3], co[2::3]
        r["z_min"], r["z_max"] = f"{min(zs):.4f}", f"{max(zs):.4f}"
        r["y_min"], r["y_max"] = f"{min(ys):.4f}", f"{max(ys):.4f}"
        r["z_up_matches_frame"] = int(co == engine().y_up_to_z_up(s.positions))
        check("the particles lie on the floor z=0 (Z-up)",
              -1e-3 <= min(zs) < 0.05 and min(ys) < -3.0 and max(zs) < 10.5)
        ob = bpy.data.objects[engine().OBJECT_NAME]
        r["points_modifier"] = ",".join(m.type for m in ob.modifiers)

        # -- timeline playback drives the steps
        scene.frame_set(1)
        yield wait(lambda: s.shown_step == 1, "frame 1 -> step 1")
        screen_op("animation_play")
        yield wait(lambda: s.shown_step >= 8, "playback to drive the simulation to step 8")
        screen_op("animation_cancel", restore_frame=False)
        yield wait(lambda: s.shown_step == scene.frame_current,
                   "the step to settle at the frame playback stopped at")
        r["playback_stopped_at"] = scene.frame_current
        check("playback moved the frame", scene.frame_current > 1)
        # -- Reset (following the timeline): back to the first frame
        scene.frame_start = 1
        op("reset")
        yield wait(lambda: scene.frame_current == 1 and s.shown_step == 1, "Reset -> frame 1")

        # -- Export Cache: frames 1..24, in lock-step, progress shown, the UI keeps running
        cache = os.path.join(self.out, "cache")
        p.cache_dir = cache
        scene.frame_start, scene.frame_end = 1, 24
        scene.frame_set(100)
        yield wait(lambda: s.shown_step == 100, "frame 100 before the export")
        since = len(engine().reports)
        r["export_invoke"] = op("export_cache", "INVOKE_DEFAULT")
        e = s.export
        ticks0 = s.counters["ticks"]
        yield wait(lambda: e.state != "running" and hasattr(e, "ended"),
                   "the export to finish")
        r["export_state"] = e.state
        r["export_written"] = e.written
        r["export_progress_shown"] = ",".join(map(str, e.progress_shown))
        r["export_ticks_during"] = s.counters["ticks"] - ticks0
        r["export_report"] = (self.new_reports(since, "INFO") or [""])[-1]
        names = sorted(f for f in os.listdir(cache))
        r["export_files"] = len(names)
        check("Export Cache wrote frame_0001..frame_0024.ply",
              names == [f"frame_{k:04d}.ply" for k in range(1, 25)])
        ok_files = True
        for k in range(1, 25):
            header, xyz = read_ply(os.path.join(cache, f"frame_{k:04d}.ply"))
            ok_files &= (f"comment hostloop particles step {k}\n" in header
                         and f"element vertex {AGENTS}\n" in header
                         and len(xyz) == 3 * AGENTS and min(xyz[2::3]) >= -1e-3)
        check("each file holds its step's particles, Z-up", ok_files)
        yield wait(lambda: s.shown_step == 100 and s.received_step == 100,
                   "the simulation back at the scene's frame after the export")
        scene.frame_set(24)  # the viewport shows what the file holds, bit for bit
        yield wait(lambda: s.shown_step == 24, "frame 24")
        _, xyz = read_ply(os.path.join(cache, "frame_0024.ply"))
        r["export_matches_viewport"] = int(snapshot(s.mesh()) == xyz)

        # -- Cancel: a long export running free, stopped mid-way; the simulation runs on
        cfg = s.configuration
        p.follow_timeline = False
        yield wait(lambda: s.configuration > cfg and s.playing, "running free")
        cache2 = os.path.join(self.out, "cache-cancelled")
        p.cache_dir = cache2
        scene.frame_end = 100_000
        since = len(engine().reports)
        op("export_cache", "INVOKE_DEFAULT")
        e = s.export
        yield wait(lambda: e.written >= 5 and len(e.progress_shown) >= 3
                   and wm.hostloop_export_progress > 0,
                   "5 frames of the long export, its progress shown 3 times and in the panel")
        r["cancel_panel_progress"] = f"{wm.hostloop_export_progress:.4f}"
        r["export_cancel"] = op("export_cancel")
        yield wait(lambda: e.state != "running" and hasattr(e, "ended"),
                   "the export to stop")
        r["cancel_progress_shown"] = len(e.progress_shown)
        names = sorted(os.listdir(cache2))
        r["cancel_state"] = e.state
        r["cancel_written"] = e.written
        r["cancel_files"] = len(names)
        r["cancel_report"] = (self.new_reports(since, "WARNING") or [""])[-1]
        check("Cancel left whole files 1..k and nothing else",
              e.state == "cancelled" and 5 <= e.written < 100_000
              and names == [f"frame_{k:04d}.ply" for k in range(1, e.written + 1)])
        n = s.received_step
        yield wait(lambda: s.received_step > n + 5 and not s.follow,
                   "the simulation to run free again after the cancel")
        scene.frame_end = 250

        # -- a cache folder that cannot be made: reported
        blocker = os.path.join(self.out, "a-file")
        open(blocker, "w").close()
        p.cache_dir = os.path.join(blocker, "cache")
        since = len(engine().reports)
        r["bad_dir_export"] = op("export_cache", "INVOKE_DEFAULT")
        r["bad_dir_report"] = (self.new_reports(since, "ERROR") or [""])[-1]
        p.cache_dir = "//hostloop_cache/"  # the default, as a user would see it

        # -- File > Save As, then File > Open of that file: hostloop's timer is persistent (and
        #    its load_post handler would put it back), the session runs on in the loaded file
        cfg = s.configuration
        p.follow_timeline = True
        yield wait(lambda: s.configuration > cfg, "lock-step again")
        blend = os.path.join(self.out, "scene.blend")
        bpy.ops.wm.save_as_mainfile(filepath=blend)
        loads0, pumps0, cfg = att.loads, att.fd_pumps, s.configuration
        r["open_file"] = ",".join(bpy.ops.wm.open_mainfile(filepath=blend))
        r["attachment_loads"] = att.loads - loads0
        r["attached_after_open"] = int(att.attached and att.timer_registered)
        r["addon_timer_after_open"] = int(bpy.app.timers.is_registered(ui()._tick))
        r["session_after_open"] = int(engine().current is s)
        scene = window().scene  # the loaded file's
        p = scene.hostloop_particles
        check("opening a file kept hostloop's timer and the session",
              r["attachment_loads"] == 1 and r["attached_after_open"] == 1
              and r["addon_timer_after_open"] == 1 and r["session_after_open"] == 1)

        # -- the screenshot: the panel, and the particles falling onto the ground plane
        scene.frame_set(50)
        yield wait(lambda: s.shown_step == 50 and s.configuration > cfg,
                   "frame 50 in the opened file")
        r["fd_pumps_after_open"] = att.fd_pumps - pumps0
        yield from self.show_panel()
        shot = screenshot(os.path.join(self.out, "screenshot.png"))
        r["screenshot"] = os.path.basename(shot)
        points = coloured_fraction(shot, (0.05, 0.15, 0.6, 0.9), particle_like)
        r["screenshot_particle_fraction"] = f"{points:.4f}"
        check("the particles are visible in Object Mode", points > 0.003)

        # -- Stop (the plugin unloads; the runtime idles), then disable the add-on (the runtime
        #    is unregistered: detached and shut down, and no thread of it is left)
        r["stop"] = op("stop")
        r["attached_after_stop"] = int(att.attached)
        addon_utils.disable(ADDON, default_set=False)
        report = dict(engine().last_report)  # the session's, and the runtime's shutdown
        report.update(r)
        report["session_after_disable"] = int(sys.modules[ADDON].engine.current is not None)
        report["attachment_after_disable"] = int(
            att.attached or att.timer_registered
            or hostloop().blender.attachment(engine().ADDON) is not None)
        after = threads()
        born = {t: n for t, n in self.threads_during.items() if t not in self.threads_before}
        ours = {t: n for t, n in born.items() if not n.startswith(BLENDER_THREAD_PREFIXES)}
        left = {t: n for t, n in after.items() if t in ours}
        report["hostloop_threads_during"] = ",".join(sorted(set(ours.values())))
        report["hostloop_threads_left"] = ",".join(sorted(left.values()))
        report["hostloop_threads_left_count"] = len(left)
        check("hostloop's threads were seen while it ran",
              any(n.startswith("hostloop") for n in ours.values()))
        check("no hostloop thread left after disabling", not left)
        self.finish(report)

    def pause_and_play(self, s, how, do_pause, do_play, paused_already=False):
        """Pauses (unless already paused), sees the step hold, plays, sees it go on from there."""
        if not paused_already:
            do_pause()
            yield wait(lambda: not s.playing, f"pause ({how})")
        yield pause(1.0, ticks=3)  # frames already on their way arrive
        held = s.received_step
        yield pause(1.5, ticks=5)
        self.r[f"paused_steps_{how}"] = s.received_step - held
        self.check(f"paused ({how}): the step holds", s.received_step == held)
        mark = s.frames_logged
        do_play()
        yield wait(lambda: s.playing and s.received_step > held + 3, f"play ({how})")
        self.r[f"play_kept_step_{how}"] = int(min(f[0] for f in self.frames_since(mark)) >= held)
        self.check(f"play ({how}) goes on from the step", self.r[f"play_kept_step_{how}"])

    def show_panel(self):
        """Opens the sidebar and clicks its hostloop tab (the lowest one), walking up the tab
        strip until the panel draws."""
        area = view3d()
        area.spaces.active.show_region_ui = True
        area.tag_redraw()
        yield pause(0.5, ticks=2)
        if not bpy.app.use_event_simulate:
            fail(1, "run with --enable-event-simulate: the script clicks the sidebar's tab")
        w, ui_module = window(), ui()
        sidebar = region(area, "UI")
        x = sidebar.x + sidebar.width - 8
        for y in range(sidebar.y + sidebar.height // 2, sidebar.y + sidebar.height, 12):
            before = ui_module.panel_draws
            w.event_simulate(type="MOUSEMOVE", value="NOTHING", x=x, y=y)
            w.event_simulate(type="LEFTMOUSE", value="PRESS", x=x, y=y)
            w.event_simulate(type="LEFTMOUSE", value="RELEASE", x=x, y=y)
            yield pause(0.3, ticks=4)  # a turn or more of Blender's loop: it redrew
            if ui_module.panel_draws > before:
                break
        # move the pointer off the panel (no tooltip), draw once more with the state now
        w.event_simulate(type="MOUSEMOVE", value="NOTHING", x=area.x + 40, y=area.y + 40)
        before = ui_module.panel_draws
        area.tag_redraw()
        yield wait(lambda: ui_module.panel_draws > before, "the panel to draw", ticks=2)
        self.r["panel_draws"] = ui_module.panel_draws

    def finish(self, report):
        report["blender"] = bpy.app.version_string.split()[0]
        report["seconds"] = f"{time.monotonic() - self.started:.2f}"
        for k, v in report.items():
            print(f"{k}={v}")
        checks = dict(self.checks)
        checks.update({
            "Start finished": report.get("start") == "FINISHED",
            "frames reached the sink": report.get("frames", 0) > 0,
            "the sink ran on the main thread": report.get("sink_on_main") == 1,
            "the doorbell fd drove pumps": report.get("fd_pumps", 0) > 0,
            "frames were written into the mesh": report.get("frames_written", 0) > 0,
            "the mesh has one vertex per particle": report.get("mesh_vertices") == AGENTS,
            "the mesh moved": report.get("moved") == 1,
            "the mesh holds the last frame, Z-up": report.get("mesh_matches_frame") == 1,
            "Particles changed the mesh": report.get("mesh_vertices_after_agents") == 5000,
            "the C++ kernel ran without errors": report.get("kernel_cpp_errors") == 0,
            "the refused count was reported": "agents must be" in report.get("error_report", ""),
            "one plugin error (the refusal)": report.get("plugin_errors") == 1,
            "no pump errors": report.get("pump_errors") == 0,
            "frame 30 -> step 30": report.get("frame30_step") == 30,
            "frame 10 -> step 10": report.get("frame10_step") == 10,
            "the mesh holds frame 300, Z-up": report.get("z_up_matches_frame") == 1,
            "a Geometry Nodes modifier draws the points": report.get("points_modifier") == "NODES",
            "the export ran modal": report.get("export_invoke") == "RUNNING_MODAL",
            "the export finished": report.get("export_state") == "finished",
            "the export's progress reached 24 of 24":
                report.get("export_progress_shown", "").endswith(",24"),
            "the cancelled export's progress moved": report.get("cancel_progress_shown", 0) >= 3,
            "the export reported": "Exported 24 frames" in report.get("export_report", ""),
            "the exported frame 24 is the viewport's frame 24":
                report.get("export_matches_viewport") == 1,
            "Cancel finished": report.get("export_cancel") == "FINISHED",
            "the cancel was reported": "Export cancelled" in report.get("cancel_report", ""),
            "a bad cache folder was reported as an error":
                report.get("bad_dir_export", "").startswith("ERROR: ")
                and "Export Cache" in report.get("bad_dir_report", ""),
            "the panel drew": report.get("panel_draws", 0) > 0,
            "Stop finished": report.get("stop") == "FINISHED",
            "stopping unregistered the add-on's timer": report.get("timer_registered_after") == 0,
            "stopping kept the runtime attached": report.get("attached_after_stop") == 1,
            "disabling left no session": report.get("session_after_disable") == 0,
            "disabling detached the runtime": report.get("attachment_after_disable") == 0,
            "the raising callback was reported": report.get("callback_error_reported") == 1,
            "clean shutdown": report.get("shutdown") == "OK"
            and report.get("shutdown_stragglers") == 0,
        })
        failed = [name for name, ok in checks.items() if not ok]
        print(f"checks={len(checks)}")
        print(f"checks_failed={len(failed)}", flush=True)
        if failed:
            fail(1, "; ".join(failed))
        if not self.args.out:
            shutil.rmtree(self.out, ignore_errors=True)
        bpy.ops.wm.quit_blender()  # exit code 0


class Driver:
    """A bpy.app.timers callback on the main thread: advances the scenario whenever the
    condition it waits for holds."""

    def __init__(self, run):
        self.run = run
        self.steps = run.scenario()
        self.waiting = None

    def __call__(self):
        self.run.calls += 1
        try:
            while self.waiting is None or self.waiting.done(self.run.ticks()):
                try:
                    self.waiting = next(self.steps)
                except StopIteration:
                    return None
            return 0.05
        except Exception:
            traceback.print_exc()
            fail(1, f"the scenario raised ({state_line()})")


def main():
    args = parse_args()
    if bpy.app.background:
        fail(1, "bpy.app.timers do not run in background mode (-b); run the GUI (xvfb-run)")
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    sys.dont_write_bytecode = True  # no __pycache__ in the checkout
    # The scenario enables the add-on once the window has drawn; persistent: it opens a file.
    bpy.app.timers.register(Driver(Run(args)), first_interval=0.1, persistent=True)


try:
    main()
except SystemExit:
    raise
except BaseException:
    traceback.print_exc()
    fail(1, "run_gui.py raised during start-up")
