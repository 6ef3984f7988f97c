"""The add-on's engine: one hostloop runtime running the `particles` plugin, the mesh its frames
drive, and the cache export. Main thread only: everything here runs in Blender's timers,
handlers and operators; the plugin's messages reach `Session._on_message` during a pump, on the
main thread too.

Axes: the simulation is Y-up (its floor is y = 0), Blender is Z-up. Positions are converted at
this boundary, (x, y, z) -> (x, -z, y) (a +90 degree turn about X), so the mesh, the exported
files and everything downstream are in Blender's axes. Maya and Houdini are Y-up like the
simulation: a host there takes the positions as they are.
"""

import array
import collections
import ctypes
import os
import select
import struct
import threading
import time

import bpy
from mathutils import Matrix

from . import hostloop

OBJECT_NAME = "hostloop_particles"
NODES_NAME = "hostloop_particles points"
MATERIAL_NAME = "hostloop_particles"
TICK_S = 1.0 / 60.0
PUMP_BUDGET_US = 2000
# How long an export pumps per timer event before it hands the main thread back to Blender.
EXPORT_SLICE_S = 0.025
# An export re-asks for the frame it waits for after this long (see `Export.poll`).
EXPORT_REPOST_S = 2.0

# (x, y, z) -> (x, -z, y), exactly (a rotation matrix built from cos(pi/2) would add round-off).
Y_UP_TO_Z_UP = Matrix(((1, 0, 0, 0), (0, 0, -1, 0), (0, 1, 0, 0), (0, 0, 0, 1)))


def y_up_to_z_up(xyz):
    """A copy of packed x, y, z floats (an `array('f')`) in Blender's axes."""
    out = array.array("f", xyz)
    out[1::3] = array.array("f", [-z for z in xyz[2::3]])
    out[2::3] = xyz[1::3]
    return out


current = None  # the running Session, or None
last_report = {}  # what the last session did, kept after it stopped
# Every message the add-on's operators reported (self.report), newest last: (level, text).
reports = collections.deque(maxlen=200)


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
    """A runtime, the particles plugin and the mesh they drive, configured from the panel's
    settings (`settings`: agents, kernel, rate, follow)."""

    def __init__(self, settings, point_radius=0.05):
        self.main_ident = threading.get_ident()
        self.follow = bool(settings["follow"])
        self.playing = True  # running free: playing or paused (following, the timeline decides)
        self.point_radius = point_radius
        self.rt = hostloop.Runtime(thread_name="blender-hl")
        self.library = hostloop.library_path
        self.fd = self.rt.wake_fd()
        self.rt.set_sink(self._on_message)
        # The newest frame as the plugin sent it (Y-up), copied out of the sink's borrowed memory.
        # foreach_set takes an array('f') on its fast path (20k vertices: 0.07 ms, against 5 ms
        # for a ctypes buffer, measured with Blender 3.4).
        self.positions = array.array("f")
        self.count = 0
        self.pending_step = None
        self.pending_configuration = 0
        self.received_step = 0
        self.configuration = 0  # the configuration number of the newest frame
        self.shown_step = 0  # the step the mesh shows
        self.shown_count = 0
        self.dirty = False
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
            ticks=0, fd_pumps=0, idle_ticks=0, pump_items=0, sink_calls=0, sink_off_main=0,
            frames=0, frames_other=0, frames_written=0, errors=0, pump_errors=0,
            configures=0, frame_events=0, playback_events=0, resets=0,
        )
        # time.monotonic() of the latest ticks (the loop's cadence), and what each cost the main
        # thread (select + pump + mesh write); bounded for long interactive sessions
        self.tick_times = collections.deque(maxlen=100_000)
        self.tick_work_ms = collections.deque(maxlen=100_000)
        self.report = {}
        try:
            self.plugin_path = hostloop.find_artifact("libhostloop_particles.so",
                                                      "HOSTLOOP_PARTICLES")
            self.plugin = self.rt.load_plugin(self.plugin_path)
            self.configure(
                agents=settings["agents"], kernel=settings["kernel"], delivery="latest",
                rate=settings["rate"], **self._mode_keys())
        except BaseException:
            self.rt.shutdown(deadline_ms=2000)  # leave no threads behind in Blender
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
        self.rt.post_custom("particles/configure", text.encode("ascii"))
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
        kind = hostloop.EVENT_PLAYBACK_STARTED if playing else hostloop.EVENT_PLAYBACK_STOPPED
        self.rt.post_event(kind)
        self.counters["playback_events"] += 1

    def reset(self):
        self.rt.post_custom("particles/reset")
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
        self.rt.post_event(hostloop.EVENT_FRAME_CHANGED, frame=float(frame))
        self.counters["frame_events"] += 1

    # -- sink: Blender's main thread, during a pump

    def _on_message(self, m):
        c = self.counters
        c["sink_calls"] += 1
        if threading.get_ident() != self.main_ident:
            c["sink_off_main"] += 1
        if m.topic == "particles/step":
            b = m.bytes()
            self.pending_step = struct.unpack_from("<Q", b)[0]
            # Then the number of the configuration the frame belongs to: 0 is the plugin's own
            # default at load, 1 and up the configures this add-on sent and the plugin took.
            self.pending_configuration = struct.unpack_from("<Q", b, 8)[0] if len(b) >= 16 else 1
        elif m.topic == "particles/positions":
            comps, count, data = m.array_f32()
            step, configuration = self.pending_step or 0, self.pending_configuration
            if comps != 3 or configuration == 0:
                c["frames_other"] += 1  # the plugin's default, before our configure applied
                return
            if len(self.positions) != 3 * count:
                self.positions = array.array("f", bytes(12 * count))
            if count:
                ctypes.memmove(self.positions.buffer_info()[0], data, 12 * count)
            self.count = count
            c["frames"] += 1
            if configuration != self.configuration:
                self.configuration = configuration
                self.repost = self.follow  # a new driver: tell it the frame (see set_follow)
                if configuration > self.error_configuration:
                    self.last_error = ""  # settings the plugin took since: the error is past
            self.received_step = step
            self.dirty = True
            self.frames_logged += 1
            self.frame_log.append((self.frames_logged, (step, configuration, count)))
            if self.export is not None and self.export.running:
                self.export.on_frame(step, configuration, self.positions, count)
        elif m.topic == "particles/error":
            c["errors"] += 1
            self.last_error = m.bytes().decode("utf-8", "replace")
            self.error_configuration = self.configuration
            self.errors.append(self.last_error)

    # -- pumping

    def pump_if_ready(self, timeout=0.0):
        readable, _, _ = select.select([self.fd], [], [], timeout)
        if not readable:
            return False
        self.counters["fd_pumps"] += 1
        self.counters["pump_items"] += self.rt.pump(PUMP_BUDGET_US).ran
        return True

    def tick(self):
        """The add-on's timer: pump when the doorbell rang, follow the timeline, show the newest
        frame."""
        c = self.counters
        now = time.monotonic()
        self.tick_times.append(now)
        c["ticks"] += 1
        if not self.pump_if_ready():
            c["idle_ticks"] += 1
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
        if self.dirty:
            self._write_mesh()
        self.tick_work_ms.append((time.monotonic() - now) * 1000.0)

    # -- the mesh

    def mesh(self):
        """The mesh (and its object) that shows the particles, with one vertex per particle of
        the newest frame; made on first use and remade when the count changes."""
        count = self.count
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

    def _write_mesh(self):
        me = self.mesh()
        if self.count:
            me.vertices.foreach_set("co", self.positions)
            me.transform(Y_UP_TO_Z_UP)  # in C, for every vertex: the simulation is Y-up
        me.update()
        self.dirty = False
        self.shown_step = self.received_step
        self.shown_count = self.count
        self.counters["frames_written"] += 1

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
        """Unloads the plugin and shuts hostloop down; fills and returns `report`."""
        if self.export is not None and self.export.running:
            self.export.cancel()
        unload = self.plugin.unload(deadline_ms=2000)
        stats = self.rt.stats()
        status = self.rt.shutdown(deadline_ms=2000)
        gaps = tick_gaps_ms(self.tick_times)
        work = sorted(self.tick_work_ms)
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
            doorbell_rings=stats.doorbell_rings,
            unload_stragglers=unload.stragglers,
            shutdown_stragglers=self.rt.shutdown_report.stragglers,
            shutdown=status.replace("HL_STATUS_", ""),
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
        """Pumps for up to `seconds` (frames arrive and are written meanwhile)."""
        end = time.monotonic() + seconds
        while self.running:
            left = end - time.monotonic()
            if left <= 0:
                break
            self.session.pump_if_ready(min(left, 0.005))
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
