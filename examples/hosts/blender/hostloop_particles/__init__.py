"""hostloop particles: a Blender add-on that runs the `particles` hostloop plugin on hostloop's
worker pool and shows its frames as the vertices of a mesh.

Blender has no API to watch a file descriptor, so a `bpy.app.timers` callback polls hostloop's
doorbell fd with a zero-timeout `select` at 60 Hz and pumps (2 ms budget) only when it is
readable. Frames reach the sink during that pump, on Blender's main thread; the newest one is
written into the mesh with `vertices.foreach_set("co", ...)` + `mesh.update()` — bpy is only ever
touched there. Disabling the add-on unregisters the timer, unloads the plugin and shuts hostloop
down.

Environment: `HOSTLOOP_AGENTS` (particles, default 20000), `HOSTLOOP_RATE` (simulation steps
per second, default 60; 0 = as fast as the workers go), `HOSTLOOP_LIB`, `HOSTLOOP_PARTICLES`
(library paths; default `target/release/` of the repository this add-on sits in).
"""

bl_info = {
    "name": "hostloop particles",
    "author": "hostloop",
    "version": (0, 1, 0),
    "blender": (3, 0, 0),
    "location": "the object 'hostloop_particles' in the scene",
    "description": "Runs the hostloop particles plugin off the main thread; frames drive a mesh",
    "category": "Object",
}

import array
import collections
import ctypes
import os
import select
import struct
import threading
import time

import bpy

from . import hostloop

OBJECT_NAME = "hostloop_particles"
TICK_S = 1.0 / 60.0
PUMP_BUDGET_US = 2000


class Session:
    """One runtime + the particles plugin + the mesh they drive. Main thread only."""

    def __init__(self, agents, rate):
        self.agents = agents
        self.main_ident = threading.get_ident()
        self.rt = hostloop.Runtime(thread_name="blender-hl")
        self.fd = self.rt.wake_fd()
        self.rt.set_sink(self._on_message)
        # The newest frame, copied out of the sink's borrowed memory. foreach_set takes an
        # array('f') on its fast path; a ctypes buffer (format '<f') on its slow one (20k
        # vertices: 0.07 ms against 5 ms, measured with Blender 3.4).
        self.positions = array.array("f", bytes(12 * agents))
        self.pending_step = None
        self.pending_configuration = None
        self.shown_step = 0
        self.received_step = 0
        self.dirty = False
        self.counters = dict(
            ticks=0, fd_pumps=0, idle_ticks=0, pump_items=0, sink_calls=0, sink_off_main=0,
            frames=0, frames_other=0, frames_written=0, errors=0, pump_errors=0,
        )
        # time.monotonic() of the latest ticks (the loop's cadence), and what each cost the main
        # thread (select + pump + mesh write); bounded for long interactive sessions
        self.tick_times = collections.deque(maxlen=100_000)
        self.tick_work_ms = collections.deque(maxlen=100_000)
        self.last_error = ""
        self.report = {}
        try:
            path = hostloop.find_artifact("libhostloop_particles.so", "HOSTLOOP_PARTICLES")
            self.plugin = self.rt.load_plugin(path)
            config = f"agents={agents} delivery=latest rate={rate:g} playing=1"
            self.rt.post_custom("particles/configure", config.encode("ascii"))
        except BaseException:
            self.rt.shutdown(deadline_ms=2000)  # leave no threads behind in Blender
            raise

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
            # default, 1 the configure sent at load (None from a build that does not say).
            self.pending_configuration = struct.unpack_from("<Q", b, 8)[0] if len(b) >= 16 else None
        elif m.topic == "particles/positions":
            comps, count, data = m.array_f32()
            ours = self.pending_configuration is None or self.pending_configuration >= 1
            if comps != 3 or count != self.agents or not ours:
                c["frames_other"] += 1  # a frame from before the configure event applied
                return
            ctypes.memmove(self.positions.buffer_info()[0], data, 12 * count)
            c["frames"] += 1
            self.received_step = self.pending_step or 0
            self.dirty = True
        elif m.topic == "particles/error":
            c["errors"] += 1
            self.last_error = m.bytes().decode("utf-8", "replace")

    # -- the timer: Blender's main thread

    def tick(self):
        c = self.counters
        now = time.monotonic()
        self.tick_times.append(now)
        c["ticks"] += 1
        readable, _, _ = select.select([self.fd], [], [], 0)
        if readable:
            c["fd_pumps"] += 1
            c["pump_items"] += self.rt.pump(PUMP_BUDGET_US).ran
        else:
            c["idle_ticks"] += 1
        if self.dirty:
            self._write_mesh()
        self.tick_work_ms.append((time.monotonic() - now) * 1000.0)

    def mesh(self):
        """The mesh (and its object) that shows the particles, made on first use."""
        me = bpy.data.meshes.get(OBJECT_NAME)
        if me is None or len(me.vertices) != self.agents:
            if me is not None:
                me.name = OBJECT_NAME + ".old"
            me = bpy.data.meshes.new(OBJECT_NAME)
            me.vertices.add(self.agents)
        ob = bpy.data.objects.get(OBJECT_NAME)
        if ob is None:
            ob = bpy.data.objects.new(OBJECT_NAME, me)
        elif ob.data != me:
            ob.data = me
        scene = bpy.context.scene or bpy.data.scenes[0]
        if ob.name not in scene.collection.objects:
            scene.collection.objects.link(ob)
        return me

    def _write_mesh(self):
        me = self.mesh()
        me.vertices.foreach_set("co", self.positions)
        me.update()
        self.dirty = False
        self.shown_step = self.received_step
        self.counters["frames_written"] += 1

    def close(self):
        """Unloads the plugin and shuts hostloop down; fills and returns `report`."""
        unload = self.plugin.unload(deadline_ms=2000)
        stats = self.rt.stats()
        status = self.rt.shutdown(deadline_ms=2000)
        gaps = tick_gaps_ms(self.tick_times)
        work = sorted(self.tick_work_ms)
        self.report = dict(self.counters)
        self.report.update(
            agents=self.agents,
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


def tick_gaps_ms(times):
    times = list(times)
    return [(b - a) * 1000.0 for a, b in zip(times, times[1:])]


def percentile(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))] if s else 0.0


session = None  # the running Session while the add-on is enabled
last_report = {}  # what the last session did, kept after the add-on is disabled


def _tick():
    s = session
    if s is None:
        return None
    try:
        s.tick()
    except Exception as e:  # a timer that raises is dropped by Blender: keep running, count it
        s.counters["pump_errors"] += 1
        s.last_error = f"{type(e).__name__}: {e}"
        print(f"hostloop particles: {s.last_error}")
    return TICK_S


def register():
    global session
    session = Session(int(os.environ.get("HOSTLOOP_AGENTS", "20000")),
                      float(os.environ.get("HOSTLOOP_RATE", "60")))
    bpy.app.timers.register(_tick, first_interval=0.0, persistent=True)


def unregister():
    global session, last_report
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    s, session = session, None
    if s is not None:
        last_report = s.close()
        last_report["timer_registered_after"] = int(bpy.app.timers.is_registered(_tick))
