"""The add-on's interface: the settings (on the scene), the operators, the sidebar panel
(View3D > Sidebar > hostloop) and the timer and handlers that tie the simulation to the
timeline. (The runtime's pumps are not here: `hostloop.blender`'s own timer runs them.)"""

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import engine

panel_draws = 0  # how many times the panel was drawn (a test reads it)


def report(op, level, message):
    """`op.report`, also kept in `engine.reports` (what a script can read back)."""
    engine.reports.append((level, message))
    op.report({level}, message)


def _changed(key):
    def update(settings, context):
        s = engine.current
        if s is None:
            return  # read by Start
        if key == "follow_timeline":
            s.set_follow(settings.follow_timeline)
        elif key == "point_radius":
            engine.set_point_radius(settings.point_radius)
            s.point_radius = settings.point_radius
        elif key == "kernel":
            s.configure(kernel=settings.kernel.lower())
        else:
            s.configure(**{key: getattr(settings, key)})
    return update


class HostloopParticlesSettings(bpy.types.PropertyGroup):
    # No hard maximum: the plugin has its own (16,000,000) and says so when refusing.
    agents: IntProperty(
        name="Particles", description="How many particles (changing it restarts the simulation)",
        default=20_000, min=1, soft_max=1_000_000, update=_changed("agents"))
    kernel: EnumProperty(
        name="Kernel", description="The code that steps the particles (both give the same result)",
        items=[("RUST", "Rust", "The Rust loop"), ("CPP", "C++", "The C++ kernel, through cxx")],
        default="RUST", update=_changed("kernel"))
    rate: FloatProperty(
        name="Rate", description="Steps per second when running free (0: as fast as it goes)",
        default=60.0, min=0.0, soft_max=240.0, update=_changed("rate"))
    follow_timeline: BoolProperty(
        name="Follow Timeline",
        description="The scene frame is the simulation step: playing, scrubbing and jumping in "
                    "the timeline drive it. Off: it runs free at its rate",
        default=True, update=_changed("follow_timeline"))
    point_radius: FloatProperty(
        name="Radius", description="The radius of the points drawn for the particles",
        default=0.05, min=0.001, soft_max=0.5, subtype="DISTANCE", unit="LENGTH",
        update=_changed("point_radius"))
    cache_dir: StringProperty(
        name="Cache Folder", description="Where Export Cache writes frame_NNNN.ply files",
        default="//hostloop_cache/", subtype="DIR_PATH")


def settings_of(scene):
    p = scene.hostloop_particles
    return dict(agents=p.agents, kernel=p.kernel.lower(), rate=p.rate,
                follow=p.follow_timeline)


def _export_progress(_wm):
    s = engine.current
    e = s.export if s is not None else None
    return 100.0 * e.progress if e is not None else 0.0


class HOSTLOOP_PARTICLES_OT_start(bpy.types.Operator):
    bl_idname = "hostloop_particles.start"
    bl_label = "Start"
    bl_description = "Load the particles plugin and show its frames in the scene"

    @classmethod
    def poll(cls, context):
        return engine.current is None

    def execute(self, context):
        p = context.scene.hostloop_particles
        try:
            engine.current = engine.Session(settings_of(context.scene), p.point_radius)
        except Exception as e:  # a missing or refused library: say so where the user looks
            report(self, "ERROR", f"hostloop particles could not start: {e}")
            return {"CANCELLED"}
        if p.follow_timeline:
            engine.current.follow_frame(context.scene.frame_current)
        if not bpy.app.timers.is_registered(_tick):
            bpy.app.timers.register(_tick, first_interval=0.0, persistent=True)
        report(self, "INFO", f"hostloop particles started ({engine.current.plugin_path})")
        return {"FINISHED"}


class HOSTLOOP_PARTICLES_OT_stop(bpy.types.Operator):
    bl_idname = "hostloop_particles.stop"
    bl_label = "Stop"
    bl_description = ("Unload the particles plugin (the mesh stays; hostloop's runtime idles "
                      "until the add-on is disabled)")

    @classmethod
    def poll(cls, context):
        return engine.current is not None

    def execute(self, context):
        r = stop()
        report(self, "INFO", f"hostloop particles stopped at step {r.get('shown_step', 0)}")
        return {"FINISHED"}


class HOSTLOOP_PARTICLES_OT_play_pause(bpy.types.Operator):
    bl_idname = "hostloop_particles.play_pause"
    bl_label = "Play/Pause"
    bl_description = ("Following the timeline: play or stop the timeline. Running free: play or "
                      "pause the simulation (it keeps its step)")

    @classmethod
    def poll(cls, context):
        return engine.current is not None

    def execute(self, context):
        s = engine.current
        if context.scene.hostloop_particles.follow_timeline:
            bpy.ops.screen.animation_play()  # a toggle, as the timeline's own button
        else:
            s.set_playing(not s.playing)
        return {"FINISHED"}


class HOSTLOOP_PARTICLES_OT_reset(bpy.types.Operator):
    bl_idname = "hostloop_particles.reset"
    bl_label = "Reset"
    bl_description = ("Back to the start: step 0 when running free, the scene's first frame when "
                      "following the timeline")

    @classmethod
    def poll(cls, context):
        return engine.current is not None

    def execute(self, context):
        scene = context.scene
        if scene.hostloop_particles.follow_timeline:
            scene.frame_set(scene.frame_start)
        else:
            engine.current.reset()
        return {"FINISHED"}


class HOSTLOOP_PARTICLES_OT_export_cache(bpy.types.Operator):
    bl_idname = "hostloop_particles.export_cache"
    bl_label = "Export Cache"
    bl_description = ("Step the simulation through the scene's frame range and write one PLY file "
                      "per frame to the cache folder (Esc or Cancel stops it)")

    @classmethod
    def poll(cls, context):
        s = engine.current
        return s is not None and (s.export is None or not s.export.running)

    def invoke(self, context, event):
        s = engine.current
        scene = context.scene
        raw = scene.hostloop_particles.cache_dir
        directory = bpy.path.abspath(raw)
        if raw.startswith("//") and not bpy.data.filepath:
            report(self, "ERROR", "Export Cache: save the .blend file first, or choose an "
                                  "absolute cache folder (it is relative to the file)")
            return {"CANCELLED"}
        try:
            os.makedirs(directory, exist_ok=True)
            if not os.access(directory, os.W_OK):
                raise PermissionError(f"cannot write to {directory}")
            self.export = s.start_export(directory, scene.frame_start, scene.frame_end)
        except (OSError, ValueError) as e:
            report(self, "ERROR", f"Export Cache: {e}")
            return {"CANCELLED"}
        self.progress = self.export.progress_shown = []  # what the progress bar showed
        wm = context.window_manager
        wm.progress_begin(0, self.export.total)
        self.timer = wm.event_timer_add(0.02, window=context.window)
        wm.modal_handler_add(self)
        report(self, "INFO", f"Exporting frames {scene.frame_start}-{scene.frame_end} to "
                             f"{directory}")
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        e = self.export
        if event.type == "ESC" and event.value == "PRESS":
            e.cancel()
        elif event.type == "TIMER" and e.running:
            if engine.current is not e.session:
                e.fail("the simulation was stopped")
            else:
                try:
                    e.pump()  # frames arrive and are written meanwhile
                except engine.hostloop.HostloopError as err:  # the runtime was shut down
                    e.fail(str(err))
        if not self.progress or e.written != self.progress[-1]:
            self.progress.append(e.written)
            context.window_manager.progress_update(e.written)
            _redraw_panels()
        if e.running:
            return {"PASS_THROUGH"}  # the rest of Blender keeps working
        return self._end(context)

    def _end(self, context):
        wm = context.window_manager
        wm.event_timer_remove(self.timer)
        wm.progress_end()
        e = self.export
        e.ended = True
        _redraw_panels()
        where = e.directory
        if e.state == "finished":
            report(self, "INFO", f"Exported {e.written} frames to {where}")
            return {"FINISHED"}
        if e.state == "cancelled":
            report(self, "WARNING", f"Export cancelled: {e.written} of {e.total} frames "
                                    f"written to {where}")
        else:
            report(self, "ERROR", f"Export failed after {e.written} frames: {e.error}")
        return {"CANCELLED"}


class HOSTLOOP_PARTICLES_OT_export_cancel(bpy.types.Operator):
    bl_idname = "hostloop_particles.export_cancel"
    bl_label = "Cancel"
    bl_description = "Stop the export (the frames written so far stay)"

    @classmethod
    def poll(cls, context):
        s = engine.current
        return s is not None and s.export is not None and s.export.running

    def execute(self, context):
        engine.current.export.cancel()
        return {"FINISHED"}


class HOSTLOOP_PARTICLES_OT_report(bpy.types.Operator):
    """Shows a message from the simulation (the plugin's errors arrive between operators)."""
    bl_idname = "hostloop_particles.report"
    bl_label = "hostloop particles message"
    bl_options = {"INTERNAL"}

    level: EnumProperty(items=[(k, k.title(), "") for k in ("ERROR", "WARNING", "INFO")])
    message: StringProperty()

    def execute(self, context):
        report(self, self.level, self.message)
        return {"FINISHED"}


class VIEW3D_PT_hostloop_particles(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "hostloop"
    bl_label = "hostloop particles"

    def draw(self, context):
        global panel_draws
        layout = self.layout
        p = context.scene.hostloop_particles
        s = engine.current
        exporting = s is not None and s.export is not None and s.export.running

        box = layout.box()
        if s is None:
            box.label(text="Not running", icon="INFO")
            box.operator("hostloop_particles.start", icon="PLAY")
        else:
            box.label(text=f"{s.shown_count:,} particles, step {s.shown_step}", icon="PARTICLES")
            if exporting:
                box.label(text="Exporting the cache", icon="EXPORT")
            elif s.follow:
                box.label(text="Following the timeline", icon="TIME")
            else:
                box.label(text=f"Running free, {'playing' if s.playing else 'paused'}",
                          icon="PLAY" if s.playing else "PAUSE")
            box.operator("hostloop_particles.stop", icon="CANCEL")

        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        col.enabled = not exporting
        col.prop(p, "agents")
        col.prop(p, "kernel")
        sub = col.column()
        sub.use_property_split = False
        sub.prop(p, "follow_timeline")
        sub = col.row()
        sub.enabled = not p.follow_timeline
        sub.prop(p, "rate")
        col.prop(p, "point_radius")

        row = layout.row(align=True)
        row.enabled = s is not None and not exporting
        playing = context.screen.is_animation_playing if p.follow_timeline else (
            s is not None and s.playing)
        row.operator("hostloop_particles.play_pause", text="Pause" if playing else "Play",
                     icon="PAUSE" if playing else "PLAY")
        row.operator("hostloop_particles.reset", icon="FILE_REFRESH")

        box = layout.box()
        box.label(text="Cache", icon="FILE_CACHE")
        box.prop(p, "cache_dir", text="")
        if exporting:
            e = s.export
            box.prop(context.window_manager, "hostloop_export_progress", slider=True,
                     text=f"Frame {e.next} ({e.written} of {e.total})")
            box.operator("hostloop_particles.export_cancel", icon="CANCEL")
        else:
            scene = context.scene
            box.operator("hostloop_particles.export_cache", icon="EXPORT",
                         text=f"Export Cache ({scene.frame_start}-{scene.frame_end})")

        if s is not None and s.last_error:
            box = layout.box()
            box.alert = True
            width = int(context.region.width / (8 * context.preferences.view.ui_scale)) - 5
            for i, line in enumerate(_wrap(s.last_error, max(16, width))):
                box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
        panel_draws += 1


def _wrap(text, width):
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line] if line else lines


def _redraw_panels():
    wm = bpy.context.window_manager
    for w in wm.windows:
        for area in w.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


# -- the timer and the handlers


def _tick():
    """The add-on's timer, on the main thread: the session's tick, and the plugin's errors
    into Blender's UI (an operator's report, which a pump's sink cannot make)."""
    s = engine.current
    if s is None:
        return None
    try:
        s.tick()
        while s.errors:
            _show_error(s.errors.popleft())
    except Exception as e:  # a timer that raises is dropped by Blender: keep running, count it
        s.counters["pump_errors"] += 1
        s.last_error = f"{type(e).__name__}: {e}"
        print(f"hostloop particles: {s.last_error}")
    return engine.TICK_S


def _show_error(message):
    """A plugin error, in Blender's status bar and Info log (and the panel shows the last)."""
    wm = bpy.context.window_manager
    window = wm.windows[0] if wm.windows else None
    try:
        if window is not None:
            with bpy.context.temp_override(window=window):
                bpy.ops.hostloop_particles.report(level="ERROR", message=message)
        else:
            bpy.ops.hostloop_particles.report(level="ERROR", message=message)
    except RuntimeError:
        pass  # bpy.ops raises for an operator that reported an error: that was the point
    _redraw_panels()


@bpy.app.handlers.persistent
def on_frame_change(scene, *_args):
    s = engine.current
    if s is not None:
        s.follow_frame(scene.frame_current)


@bpy.app.handlers.persistent
def on_load_post(*_args):
    """Another .blend was opened: its scene's settings apply (the object is made again if the
    file has none)."""
    s = engine.current
    if s is None:
        return
    scene = engine.window_scene()
    p = scene.hostloop_particles
    s.follow = p.follow_timeline
    s.point_radius = p.point_radius
    settings = settings_of(scene)
    s.configure(agents=settings["agents"], kernel=settings["kernel"], rate=settings["rate"],
                **s._mode_keys())
    s.posted_frame = None  # the next frame (the configure rebuilds) makes the mesh if missing


def stop():
    """Stops the running session (if any): unloads the plugin; returns its report."""
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    s, engine.current = engine.current, None
    if s is None:
        return {}
    engine.last_report = s.close()
    engine.last_report["timer_registered_after"] = int(bpy.app.timers.is_registered(_tick))
    _redraw_panels()
    return engine.last_report


classes = (
    HostloopParticlesSettings,
    HOSTLOOP_PARTICLES_OT_start,
    HOSTLOOP_PARTICLES_OT_stop,
    HOSTLOOP_PARTICLES_OT_play_pause,
    HOSTLOOP_PARTICLES_OT_reset,
    HOSTLOOP_PARTICLES_OT_export_cache,
    HOSTLOOP_PARTICLES_OT_export_cancel,
    HOSTLOOP_PARTICLES_OT_report,
    VIEW3D_PT_hostloop_particles,
)


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.hostloop_particles = bpy.props.PointerProperty(type=HostloopParticlesSettings)
    bpy.types.WindowManager.hostloop_export_progress = FloatProperty(
        name="Progress", subtype="PERCENTAGE", min=0.0, max=100.0, get=_export_progress)
    bpy.app.handlers.frame_change_post.append(on_frame_change)
    bpy.app.handlers.load_post.append(on_load_post)


def unregister():
    stop()
    for handlers, fn in ((bpy.app.handlers.frame_change_post, on_frame_change),
                         (bpy.app.handlers.load_post, on_load_post)):
        while fn in handlers:
            handlers.remove(fn)
    del bpy.types.WindowManager.hostloop_export_progress
    del bpy.types.Scene.hostloop_particles
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
