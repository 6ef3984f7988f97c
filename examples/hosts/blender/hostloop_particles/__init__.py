"""hostloop particles: a Blender add-on that runs the `particles` hostloop plugin on hostloop's
worker pool and shows its frames as points in the scene.

The sidebar panel (View3D > Sidebar > hostloop) starts and stops it and holds its settings:
particles, kernel, rate, following the timeline (the scene frame is the simulation step:
playing, scrubbing and jumping drive it; off, it runs free at its rate, and the timeline's
Play/Pause plays and pauses it), Play/Pause, Reset, and Export Cache (one PLY file per frame of
the scene's range, with a progress bar and Cancel). The plugin's errors are shown in Blender's
status bar and Info log, and in the panel.

Blender has no API to watch a file descriptor, so a `bpy.app.timers` callback polls hostloop's
doorbell fd with a zero-timeout `select` at 60 Hz and pumps (2 ms budget) only when it is
readable. Frames reach the sink during that pump, on Blender's main thread; the newest one is
written into the mesh `hostloop_particles` with `vertices.foreach_set("co", ...)`, turned from
the simulation's Y-up into Blender's Z-up (`mesh.transform`), and a Geometry Nodes modifier
(Mesh to Points, Set Material) draws its vertices as points in Object Mode. bpy is only ever
touched on the main thread. Stopping, or disabling the add-on, unloads the plugin and shuts
hostloop down.

The native libraries are found in `lib/` beside this file (the zip made by `make-zip` ships
them there), else in `target/release/` of the repository this add-on sits in; `HOSTLOOP_LIB`
and `HOSTLOOP_PARTICLES` (paths) override both.
"""

bl_info = {
    "name": "hostloop particles",
    "author": "hostloop",
    "version": (0, 2, 0),
    "blender": (3, 2, 0),
    "location": "View3D > Sidebar > hostloop",
    "description": "Runs the hostloop particles plugin off the main thread; its frames drive "
                   "a point cloud, following the timeline",
    "category": "Object",
}

if "engine" in locals():  # the add-on is being enabled again: reload its modules
    import importlib

    hostloop = importlib.reload(hostloop)  # noqa: F821
    engine = importlib.reload(engine)  # noqa: F821
    ui = importlib.reload(ui)  # noqa: F821
else:
    from . import hostloop, engine, ui  # noqa: F401


def register():
    ui.register()


def unregister():
    ui.unregister()
