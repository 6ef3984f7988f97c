"""The add-on's engine: the `particles` plugin on the add-on's hostloop runtime, the mesh its
frames drive, and the cache export. Main thread only: everything here runs in Blender's timers,
handlers and operators; the plugin's messages reach `Session._on_message` during a pump (a tick
of `hostloop.blender`'s timer, or an export's `run_until`), on the main thread too.

The runtime is the add-on's: `hostloop.blender.register_runtime(ADDON)` makes it and attaches it
to Blender's loop when the add-on is enabled, `unregister_runtime` shuts it down when it is
disabled. A Session (Start .. Stop) loads the plugin on it and unloads it again.

Axes: the simulation is Y-up (its floor is y = 0), Blender is Z-up. Positions are converted at
this boundary, (x, y, z) -> (x, -z, y) (a +90 degree turn about X), so the mesh, the exported
files and everything downstream are in Blender's axes. Maya and Houdini are Y-up like the
simulation: a host there takes the positions as they are.
"""

import array
import collections
import os
import struct
import threading
import time

import bpy
from mathutils import Matrix

from . import locate

hostloop = locate.import_hostloop()
import hostloop.blender  # noqa: E402  (a bpy.app.timers callback pumps the runtime)

ADDON = __package__  # the name the add-on's runtime is registered under
OBJECT_NAME = "hostloop_particles"
NODES_NAME = "hostloop_particles points"
MATERIAL_NAME = "hostloop_particles"
TICK_S = 1.0 / 60.0  # the add-on's own timer: following the timeline, errors into the UI
PUMP_BUDGET_MS = 2.0  # each pump of the runtime
SHUTDOWN_DEADLINE_S = 2.0  # unloading the plugin, shutting the runtime down
# How long an export pumps per timer event before it hands the main thread back to Blender.
EXPORT_SLICE_S = 0.025
# An export re-asks for the frame it waits for after this long (see `Export.poll`).
EXPORT_REPOST_S = 2.0

# (x, y, z) -> (x, -z, y), exactly (a rotation matrix built from cos(pi/2) would add round-off).
Y_UP_TO_Z_UP = Matrix(((1, 0, 0, 0), (0, 0, -1, 0), (0, 1, 0, 0), (0, 0, 0, 1)))


def y_up_to_z_up(xyz):
    """A copy of packed x, y, z floats (an `array('f')` or a flat float buffer) in Blender's
    axes."""
    src = array.array("f")
    src.frombytes(memoryview(xyz).cast("B"))
    out = array.array("f", src)
    out[1::3] = array.array("f", [-z for z in src[2::3]])
    out[2::3] = src[1::3]
    return out


def frame_f32(arr, into=None):
    """The records of a `hostloop.Array` of f32 as one flat `array('f')`: copied, one memcpy,
    into `into` (made again when the count changed) out of the runtime's memory, which is lent
    for the sink call only. Blender's `foreach_set` takes an `array('f')` on its fast path (20k
    vertices: 0.07 ms, measured with Blender 3.4); a memoryview refuses the buffer request it
    makes (simple + format), and a ctypes array takes its slow, per-item path (5 ms)."""
    src = arr.memoryview() if arr.stride == arr.shape[1] * arr.itemsize else None
    raw = src.cast("B") if src is not None else memoryview(arr.tobytes())
    if into is None or 4 * len(into) != len(raw):
        into = array.array("f", bytes(len(raw)))
    memoryview(into).cast("B")[:] = raw
    return into


current = None  # the running Session, or None
last_report = {}  # what the last session did, kept after it stopped
# Every message the add-on's operators reported (self.report), newest last: (level, text).
reports = collections.deque(maxlen=200)


def runtime():
    """The add-on's runtime: the one `register()` made, or a new one if it was shut down
    meanwhile (the console, say)."""
    return hostloop.blender.register_runtime(
        ADDON, budget_ms=PUMP_BUDGET_MS, deadline_s=SHUTDOWN_DEADLINE_S)


def shutdown_runtime():
    """Detaches and shuts down the add-on's runtime (the add-on is being disabled); what it did
    goes into `last_report`. Returns the shutdown report, or None if there was no runtime."""
    att = hostloop.blender.attachment(ADDON)
    result = hostloop.blender.unregister_runtime(ADDON)
    if result is not None:
        last_report.update(
            shutdown="OK" if result["stragglers"] == 0 else "TIMEOUT",
            shutdown_stragglers=result["stragglers"],
            shutdown_threads_joined=result["threads_joined"],
            runtime_fd_pumps=att.fd_pumps if att else 0,
            runtime_timer_pumps=att.timer_pumps if att else 0,
            runtime_ticks=att.ticks if att else 0,
            attachment_attached_after=int(bool(att and att.attached)),
            attachment_timer_after=int(bool(att and att.timer_registered)),
        )
    return result


def window_scene():
    """The scene of Blender's first window (timers run without a window in their context)."""
    wm = bpy.context.window_manager
    if wm is not None and wm.windows:
        return wm.windows[0].scene
    return bpy.context.scene or bpy.data.scenes[0]


def timeline_playing():
    wm = bpy.context.window_manager
    return any(w.screen and w.screen.is_animation_playing for w in wm.windows) if wm else False


class Session:
    """The particles plugin on the add-on's runtime and the mesh its frames drive, configured
    from the panel's settings (`settings`: agents, kernel, rate, follow)."""

    def __init__(self, settings, point_radius=0.05):
        self.main_ident = threading.get_ident()
        self.follow = bool(settings["follow"])
        self.playing = True  # running free: playing or paused (following, the timeline decides)
        self.point_radius = point_radius
        self.rt = runtime()
        self.attachment = hostloop.blender.attachment(ADDON)
        self.library = os.path.realpath(hostloop._hostloop.__file__)  # the extension module
        self.found_by = locate.found_by
        # The newest frame (Y-up), copied out of the sink's lent memory (see frame_f32)
        self.positions = array.array("f")
        self.count = 0
        self.pending_step = None
        self.pending_configuration = 0
        self.received_step = 0
        self.configuration = 0  # the configuration number of the newest frame
        self.shown_step = 0  # the step the mesh shows
        self.shown_count = 0
        self.posted_frame = None  # the scene frame last sent to the simulation (following)
        self.repost = False
        self.timeline_was_playing = None
        self.export = None  # the running Export, if any
        self.deferred = {}  # settings changed during an export, applied when it ends
        self.errors = collections.deque()  # plugin errors still to be reported in the UI
        # The latest frames taken: (n, (step, configuration, count)), n counting from 1
        self.frame_log = collections.deque(maxlen=4096)
        self.frames_logged = 0
        self.last_error = ""  # shown in the panel until the plugin takes newer settings
        self.error_configuration = 0
        self.counters = dict(
            ticks=0, fd_pumps=0, pump_items=0, sink_calls=0, sink_off_main=0,
            frames=0, frames_other=0, frames_written=0, errors=0, pump_errors=0,
            configures=0, frame_events=0, playback_events=0, resets=0,
        )
        # The runtime's and its attachment's counters when this session began
        self._att0 = (self.attachment.fd_pumps, self.attachment.items)
        self._rings0 = self.rt.stats()["doorbell_rings"]
        # time.monotonic() of the latest ticks of the add-on's timer (the loop's cadence), what
        # each cost the main thread, and what writing each frame into the mesh cost (in the
        # sink, inside a pump); bounded for long interactive sessions
        self.tick_times = collections.deque(maxlen=100_000)
        self.tick_work_ms = collections.deque(maxlen=100_000)
        self.frame_work_ms = collections.deque(maxlen=100_000)
        self.report = {}
        self.rt.set_sink(self._on_message)
        try:
            self.plugin_path = locate.find_plugin()
            self.plugin = self.rt.load_plugin(self.plugin_path)
            self.configure(
                agents=settings["agents"], kernel=settings["kernel"], delivery="latest",
                rate=settings["rate"], **self._mode_keys())
        except BaseException:
            self.rt.set_sink(None)  # the runtime stays (it is the add-on's), idle
            raise

    # -- settings -> the plugin

    def _mode_keys(self):
        """Following the timeline: lock-step (each FrameChanged seeks), not playing on its own.
        Running free: playing (or paused) at its rate, frame changes ignored."""
        if self.follow:
            return dict(lockstep=1, playing=0)
        return dict(lockstep=0, playing=int(self.playing))

    def configure(self, **keys):
        """Sends `particles/configure` with these keys; during an export, keeps them for its end."""
        if self.export is not None and self.export.running:
            self.deferred.update(keys)
            return
        self._send_configure(keys)

    def _send_configure(self, keys):
        text = " ".join(f"{k}={_text(v)}" for k, v in keys.items())
        self.rt.post_event("particles/configure", text.encode("ascii"))
        self.counters["configures"] += 1

    def set_follow(self, follow):
        self.follow = bool(follow)
        self.posted_frame = None
        self.configure(**self._mode_keys())
        # The new driver subscribes to frame changes when it starts: the frame is sent again when
        # its first frame arrives (`repost`), and now for a running one.
        self.repost = self.follow

    def set_playing(self, playing):
        """Running free: play or pause (as the host's playback events, which keep the step)."""
        self.playing = bool(playing)
        if self.follow or (self.export is not None and self.export.running):
            return
        self.rt.post_playback(self.playing)
        self.counters["playback_events"] += 1

    def reset(self):
        self.rt.post_event("particles/reset", b"")
        self.counters["resets"] += 1

    def follow_frame(self, frame, force=False):
        """Following the timeline: the scene's frame is the simulation's step (frame N shows the
        state after N steps); a frame behind the step resets and steps again (the plugin seeks)."""
        if not self.follow or (self.export is not None and self.export.running):
            return
        if frame != self.posted_frame or force:
            self.post_frame(frame)
            self.posted_frame = frame

    def post_frame(self, frame):
        self.rt.post_frame_changed(float(frame))
        self.counters["frame_events"] += 1

    # -- sink: Blender's main thread, during a pump

    def _on_message(self, topic, payload):
        c = self.counters
        c["sink_calls"] += 1
        if threading.get_ident() != self.main_ident:
            c["sink_off_main"] += 1
        try:
            self._take(topic, payload)
        except Exception as e:
            c["pump_errors"] += 1
            self.last_error = f"{type(e).__name__}: {e}"
            raise  # the runtime reports it (sys.unraisablehook) and pumps on

    def _take(self, topic, payload):
        c = self.counters
        if topic == "particles/step":
            self.pending_step = struct.unpack_from("<Q", payload)[0]
            # Then the number of the configuration the frame belongs to: 0 is the plugin's own
            # default at load, 1 and up the configures this add-on sent and the plugin took.
            self.pending_configuration = (
                struct.unpack_from("<Q", payload, 8)[0] if len(payload) >= 16 else 1)
        elif topic == "particles/positions":
            count, comps = payload.shape
            step, configuration = self.pending_step or 0, self.pending_configuration
            if comps != 3 or payload.format != "f" or configuration == 0:
                c["frames_other"] += 1  # the plugin's default, before our configure applied
                return
            # The frame's memory is lent for this call only: copied out (one memcpy) and into
            # the mesh (and, when exporting, a file) now; the Array is not kept.
            self.positions = xyz = frame_f32(payload, self.positions)
            c["frames"] += 1
            if configuration != self.configuration:
                self.configuration = configuration
                self.repost = self.follow  # a new driver: tell it the frame (see set_follow)
                if configuration > self.error_configuration:
                    self.last_error = ""  # settings the plugin took since: the error is past
            self.received_step = step
            self.count = count
            self.frames_logged += 1
            self.frame_log.append((self.frames_logged, (step, configuration, count)))
            self._write_mesh(xyz, count, step)
            if self.export is not None and self.export.running:
                self.export.on_frame(step, configuration, xyz, count)
        elif topic == "particles/error":
            c["errors"] += 1
            self.last_error = bytes(payload).decode("utf-8", "replace")
            self.error_configuration = self.configuration
            self.errors.append(self.last_error)

    # -- the add-on's timer

    def _sync_counters(self):
        att, c = self.attachment, self.counters
        c["fd_pumps"] = att.fd_pumps - self._att0[0]
        c["pump_items"] = att.items - self._att0[1]

    def tick(self):
        """The add-on's timer (the pumps are hostloop.blender's): follow the timeline, notice
        the timeline's Play/Pause, ask an export's frame again if it is late."""
        c = self.counters
        now = time.monotonic()
        self.tick_times.append(now)
        c["ticks"] += 1
        self._sync_counters()
        exporting = self.export is not None and self.export.running
        if exporting:
            self.export.poll()
        elif self.follow:
            self.follow_frame(window_scene().frame_current, force=self.repost)
            self.repost = False
        else:
            playing = timeline_playing()
            if self.timeline_was_playing is not None and playing != self.timeline_was_playing:
                self.set_playing(playing)  # the timeline's Play/Pause plays/pauses it
            self.timeline_was_playing = playing
        self.tick_work_ms.append((time.monotonic() - now) * 1000.0)

    # -- the mesh

    def mesh(self, count=None):
        """The mesh (and its object) that shows the particles, with one vertex per particle of
        the newest frame (or `count`); made on first use and remade when the count changes."""
        count = self.count if count is None else count
        me = bpy.data.meshes.get(OBJECT_NAME)
        ob = bpy.data.objects.get(OBJECT_NAME)
        if me is None or len(me.vertices) != count:
            old = me
            me = bpy.data.meshes.new(OBJECT_NAME + ".new")
            me.vertices.add(count)
            if ob is not None:
                ob.data = me
            if old is not None:
                if old.users == 0:
                    bpy.data.meshes.remove(old)
                else:
                    old.name = OBJECT_NAME + ".old"
            me.name = OBJECT_NAME
        if ob is None:
            ob = bpy.data.objects.new(OBJECT_NAME, me)
        scene = window_scene()
        if ob.name not in scene.collection.objects:
            scene.collection.objects.link(ob)
        ensure_points_modifier(ob, self.point_radius)
        return me

    def _write_mesh(self, xyz, count, step):
        """Writes a frame (an array('f') of x, y, z, Y-up) into the mesh: `foreach_set` on its
        fast path, then `transform` turns every vertex to Z-up, in C."""
        t = time.perf_counter()
        me = self.mesh(count)
        if count:
            me.vertices.foreach_set("co", xyz)
            me.transform(Y_UP_TO_Z_UP)  # in C, for every vertex: the simulation is Y-up
        me.update()
        self.shown_step = step
        self.shown_count = count
        self.counters["frames_written"] += 1
        self.frame_work_ms.append((time.perf_counter() - t) * 1000.0)

    # -- export

    def start_export(self, directory, first, last):
        self.export = Export(self, directory, first, last)
        return self.export

    def _export_ended(self):
        """An export finished or was cancelled: give the simulation back to the panel."""
        restore = {} if self.follow else self._mode_keys()
        restore.update(self.deferred)
        self.deferred = {}
        if restore:
            self._send_configure(restore)
        self.posted_frame = None
        self.repost = self.follow

    # -- the end

    def close(self):
        """Unloads the plugin (the runtime stays: it is the add-on's); fills and returns
        `report`."""
        if self.export is not None and self.export.running:
            self.export.cancel()
        unload = {}
        try:
            unload = self.plugin.unload(SHUTDOWN_DEADLINE_S)
            rings = self.rt.stats()["doorbell_rings"] - self._rings0
            self.rt.set_sink(None)
        except hostloop.ShutDown:  # shut down meanwhile (the console, Blender's exit)
            rings = 0
        self._sync_counters()
        gaps = tick_gaps_ms(self.tick_times)
        work = sorted(self.tick_work_ms)
        frame_work = sorted(self.frame_work_ms)
        self.report = dict(self.counters)
        self.report.update(
            agents=self.shown_count,
            shown_step=self.shown_step,
            sink_on_main=int(self.counters["sink_calls"] > 0
                             and self.counters["sink_off_main"] == 0),
            tick_p50_ms=round(percentile(gaps, 50), 2),
            tick_p99_ms=round(percentile(gaps, 99), 2),
            tick_max_ms=round(max(gaps, default=0.0), 2),
            tick_work_p50_ms=round(percentile(work, 50), 2),
            tick_work_p99_ms=round(percentile(work, 99), 2),
            tick_work_max_ms=round(max(work, default=0.0), 2),
            frame_work_p50_ms=round(percentile(frame_work, 50), 2),
            frame_work_p99_ms=round(percentile(frame_work, 99), 2),
            frame_work_max_ms=round(max(frame_work, default=0.0), 2),
            doorbell_rings=rings,
            unload_stragglers=unload.get("stragglers", ""),
            plugin_loaded_after=int(self.plugin.loaded),
            hostloop_found_by=self.found_by,
        )
        return self.report


class Export:
    """Writes frames `first..last` (scene frames = simulation steps) to `directory`, one binary
    PLY file each (`frame_0001.ply`, ...; x, y, z f32 in Blender's axes), by stepping the
    session's simulation in lock-step: it asks for frame N (a FrameChanged event), writes it when
    it arrives, then asks for N + 1. The files are written in the sink, on the main thread, as
    the frames arrive; an operator's timer pumps (`pump`) and shows the progress. A file is
    written under a temporary name and renamed, so a cancelled export leaves only whole files."""

    def __init__(self, session, directory, first, last):
        if first < 0 or last < first:
            raise ValueError(f"frames {first}..{last}: the range must start at 0 or later")
        self.session = session
        self.directory = directory
        self.first, self.last = first, last
        self.next = first
        self.written = 0
        self.total = last - first + 1
        self.state = "running"  # then "finished" or "cancelled" or "failed"
        self.error = ""
        self.files = []
        # Frames of the configuration running when the export began, or of a newer one.
        self.min_configuration = session.configuration
        if not session.follow:
            # Running free: lock-step for the export (the state moves to a lock-step driver at the
            # step it reached); restored when it ends.
            session._send_configure(dict(lockstep=1, playing=0))
            self.min_configuration = session.configuration + 1
        self.asked_configuration = session.configuration
        self._ask()

    @property
    def running(self):
        return self.state == "running"

    @property
    def progress(self):
        return self.written / self.total if self.total else 1.0

    def _ask(self):
        self.asked_at = time.monotonic()
        self.session.post_frame(self.next)

    def on_frame(self, step, configuration, positions, count):
        """From the sink: write the frame if it is the one asked for, then ask for the next."""
        if configuration < self.min_configuration:
            return
        if step != self.next:
            if configuration != self.asked_configuration:
                # A new driver (lock-step switched on, or a rebuild): it may have started after
                # the frame was asked for.
                self.asked_configuration = configuration
                self._ask()
            return
        try:
            self._write(step, positions, count)
        except OSError as e:
            self.fail(f"writing frame {step}: {e}")
            return
        self.written += 1
        if self.next >= self.last:
            self.state = "finished"
            self.session._export_ended()
            return
        self.next += 1
        self._ask()

    def _write(self, step, positions, count):
        path = os.path.join(self.directory, f"frame_{step:04d}.ply")
        header = (
            "ply\nformat binary_little_endian 1.0\n"
            f"comment hostloop particles step {step}\n"
            "comment z-up (Blender axes): x y z = simulation x, -z, y\n"
            f"element vertex {count}\n"
            "property float x\nproperty float y\nproperty float z\nend_header\n"
        ).encode("ascii")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(y_up_to_z_up(positions).tobytes())
        os.replace(tmp, path)
        self.files.append(path)

    def poll(self):
        """Asks again for a frame that has not come: a FrameChanged sent while a new lock-step
        driver was starting reaches no one."""
        if self.running and time.monotonic() - self.asked_at > EXPORT_REPOST_S:
            self._ask()

    def pump(self, seconds=EXPORT_SLICE_S):
        """Pumps for up to `seconds`, sleeping on the wake fd between pumps, or until the export
        ends (frames arrive and are written meanwhile): a round trip per frame needs a pump, and
        the timer's pumps come once per turn of Blender's loop, a redraw apart."""
        if self.running:
            self.session.rt.run_until(lambda: not self.running, seconds, PUMP_BUDGET_MS)
        self.poll()

    def cancel(self):
        if self.running:
            self.state = "cancelled"
            self.session._export_ended()

    def fail(self, message):
        if self.running:
            self.state = "failed"
            self.error = message
            self.session._export_ended()


def _text(value):
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# -- what shows the particles in Object Mode: Geometry Nodes turning the vertices into points


def points_material():
    mat = bpy.data.materials.get(MATERIAL_NAME)
    if mat is None:
        mat = bpy.data.materials.new(MATERIAL_NAME)
        mat.diffuse_color = (1.0, 0.5, 0.1, 1.0)  # the solid view's colour
    return mat


def points_node_group():
    """Group Input -> Mesh to Points -> Set Material -> Group Output."""
    ng = bpy.data.node_groups.get(NODES_NAME)
    if ng is not None:
        return ng
    ng = bpy.data.node_groups.new(NODES_NAME, "GeometryNodeTree")
    if hasattr(ng, "interface"):  # Blender 4.0 and later
        ng.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
        ng.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    else:
        ng.inputs.new("NodeSocketGeometry", "Geometry")
        ng.outputs.new("NodeSocketGeometry", "Geometry")
    nodes, links = ng.nodes, ng.links
    group_in = nodes.new("NodeGroupInput")
    group_in.location = (-400, 0)
    to_points = nodes.new("GeometryNodeMeshToPoints")
    to_points.name = "Mesh to Points"
    to_points.location = (-200, 0)
    set_material = nodes.new("GeometryNodeSetMaterial")
    set_material.name = "Set Material"
    set_material.location = (0, 0)
    set_material.inputs["Material"].default_value = points_material()
    group_out = nodes.new("NodeGroupOutput")
    group_out.location = (200, 0)
    links.new(group_in.outputs[0], to_points.inputs["Mesh"])
    links.new(to_points.outputs["Points"], set_material.inputs["Geometry"])
    links.new(set_material.outputs["Geometry"], group_out.inputs[0])
    return ng


def ensure_points_modifier(ob, radius):
    mod = ob.modifiers.get("hostloop points")
    if mod is None:
        mod = ob.modifiers.new("hostloop points", "NODES")
    if mod.node_group is None:
        mod.node_group = points_node_group()
    set_point_radius(radius)
    return mod


def set_point_radius(radius):
    ng = bpy.data.node_groups.get(NODES_NAME)
    node = ng.nodes.get("Mesh to Points") if ng is not None else None
    if node is not None and abs(node.inputs["Radius"].default_value - radius) > 1e-9:
        node.inputs["Radius"].default_value = radius


def tick_gaps_ms(times):
    times = list(times)
    return [(b - a) * 1000.0 for a, b in zip(times, times[1:])]


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))] if s else 0.0
