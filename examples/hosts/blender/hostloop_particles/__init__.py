"""hostloop particles: a Blender add-on that runs the `particles` hostloop plugin on hostloop's
worker pool and shows its frames as points in the scene.

The sidebar panel (View3D > Sidebar > hostloop) starts and stops it and holds its settings:
particles, kernel, rate, following the timeline (the scene frame is the simulation step:
playing, scrubbing and jumping drive it; off, it runs free at its rate, and the timeline's
Play/Pause plays and pauses it), Play/Pause, Reset, and Export Cache (one PLY file per frame of
the scene's range, with a progress bar and Cancel). The plugin's errors are shown in Blender's
status bar and Info log, and in the panel.

It uses the hostloop Python package (`import hostloop`): enabling the add-on registers its
runtime with `hostloop.blender.register_runtime`, which attaches it to Blender's loop (a
persistent `bpy.app.timers` callback polls the runtime's wake fd with a zero-timeout `select`
and pumps, 2 ms budget, only when it is readable); disabling it unregisters the runtime, which
shuts it down. Frames reach the sink during those pumps, on Blender's main thread, and go
straight from the runtime's memory into the mesh `hostloop_particles`
(`vertices.foreach_set("co", ...)`), turned from the simulation's Y-up into Blender's Z-up
(`mesh.transform`); a Geometry Nodes modifier (Mesh to Points, Set Material) draws its vertices
as points in Object Mode. bpy is only ever touched on the main thread.

The package is found as `locate.py` says: importable already, else `vendor/` beside this file
(the zip made by `make-zip` ships it there), else a wheel of the checkout this add-on sits in.
The plugin: `lib/` beside this file (the zip), else the checkout's `target/release/`;
`HOSTLOOP_WHEEL` and `HOSTLOOP_PARTICLES` (paths) override both.
"""

bl_info = {
    "name": "hostloop particles",
    "author": "hostloop",
    "version": (0, 3, 0),
    "blender": (3, 2, 0),
    "location": "View3D > Sidebar > hostloop",
    "description": "Runs the hostloop particles plugin off the main thread; its frames drive "
                   "a point cloud, following the timeline",
    "category": "Object",
}

if "engine" in locals():  # the add-on is being enabled again: reload its modules
    import importlib

    locate = importlib.reload(locate)  # noqa: F821
    engine = importlib.reload(engine)  # noqa: F821
    ui = importlib.reload(ui)  # noqa: F821
else:
    from . import locate, engine, ui  # noqa: F401


def register():
    engine.runtime()  # hostloop.blender.register_runtime: made and attached once
    try:
        ui.register()
    except BaseException:
        engine.shutdown_runtime()
        raise


def unregister():
    try:
        ui.unregister()  # stops a running session: unloads the plugin
    finally:
        engine.shutdown_runtime()  # hostloop.blender.unregister_runtime: detached, shut down
