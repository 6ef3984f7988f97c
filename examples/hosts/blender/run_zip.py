"""Installs the add-on's zip the way a Blender user does, and checks that it runs.

    BLENDER_USER_CONFIG=$tmp/config BLENDER_USER_SCRIPTS=$tmp/scripts \
    xvfb-run -a blender --python-exit-code 1 --python examples/hosts/blender/run_zip.py -- \
        --zip target/hostloop_particles-0.3.0.zip

What Preferences > Add-ons > Install... and the add-on's checkbox do: `preferences.addon_install`
of the zip, then `preferences.addon_enable`. Then the panel's Start, with the scene following
the timeline: frame 20 must show step 20, with the hostloop package the zip put in the add-on's
`vendor/` and the plugin in its `lib/` (the test runs it with no HOSTLOOP_* variable set, from a
directory away from the checkout, with a user config and scripts folder of its own). Stop,
disable (the runtime shuts down), print `key=value` lines, quit; exit 0 only if every check
held. Each wait has a
deadline of HOSTLOOP_WAIT_S seconds (default 120); a watchdog exits 3 after
HOSTLOOP_HARD_LIMIT_S (default 600).
"""

import argparse
import os
import sys
import threading
import time
import traceback

import bpy

ADDON = "hostloop_particles"
WAIT_S = float(os.environ.get("HOSTLOOP_WAIT_S", "120"))
HARD_LIMIT_S = float(os.environ.get("HOSTLOOP_HARD_LIMIT_S", "600"))

bpy.context.preferences.view.show_splash = False  # a fresh user config would show it


def fail(code, message):
    print(f"FAIL blender-zip: {message}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


watchdog = threading.Timer(HARD_LIMIT_S, fail, (3, f"still running after {HARD_LIMIT_S:.0f} s"))
watchdog.daemon = True
watchdog.start()


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="run_zip.py")
    p.add_argument("--zip", required=True)
    return p.parse_args(argv)


def override():
    w = bpy.context.window_manager.windows[0]
    return bpy.context.temp_override(window=w, screen=w.screen)


def steps(args):
    r = {}
    r["hostloop_env"] = ",".join(sorted(k for k in os.environ if k.startswith("HOSTLOOP_")
                                        and k not in ("HOSTLOOP_WAIT_S", "HOSTLOOP_HARD_LIMIT_S")))
    with override():
        r["install"] = ",".join(bpy.ops.preferences.addon_install(
            filepath=os.path.abspath(args.zip), overwrite=True))
        r["enable"] = ",".join(bpy.ops.preferences.addon_enable(module=ADDON))
    addon = sys.modules.get(ADDON)
    if addon is None:
        fail(1, f"{ADDON} is not loaded after addon_enable ({r})")
    addons_dir = bpy.utils.user_resource("SCRIPTS", path="addons")
    where = os.path.dirname(os.path.realpath(addon.__file__))
    r["installed_in_user_addons"] = int(where == os.path.realpath(os.path.join(addons_dir, ADDON)))
    r["vendor_in_addon"] = int(os.path.isfile(os.path.join(where, "vendor", "hostloop",
                                                        "__init__.py")))
    r["hostloop_found_by"] = addon.locate.found_by
    hostloop = addon.engine.hostloop
    r["hostloop_from_zip"] = int(os.path.dirname(os.path.realpath(hostloop.__file__))
                                 == os.path.join(where, "vendor", "hostloop"))
    scene = bpy.context.window_manager.windows[0].scene
    scene.hostloop_particles.agents = 5000
    scene.hostloop_particles.follow_timeline = True
    try:
        with override():
            r["start"] = ",".join(bpy.ops.hostloop_particles.start())
    except RuntimeError as e:  # the operator reported an error: it could not start
        fail(1, f"Start: {e}")
    s = addon.engine.current
    r["library_from_zip"] = int(os.path.dirname(s.library)
                                == os.path.join(where, "vendor", "hostloop"))
    r["plugin_from_zip"] = int(os.path.dirname(os.path.realpath(s.plugin_path))
                               == os.path.join(where, "lib"))
    scene.frame_set(20)
    yield lambda: s.shown_step == 20 and s.shown_count == 5000
    r["shown_step"] = s.shown_step
    r["shown_count"] = s.shown_count
    with override():
        r["stop"] = ",".join(bpy.ops.hostloop_particles.stop())
    with override():
        r["disable"] = ",".join(bpy.ops.preferences.addon_disable(module=ADDON))
    report = dict(addon.engine.last_report)  # the session's, and the runtime's shutdown
    report.update(r)
    for k, v in report.items():
        print(f"{k}={v}")
    checks = {
        "no HOSTLOOP_* variable": r["hostloop_env"] == "",
        "installed": r["install"] == "FINISHED" and r["enable"] == "FINISHED",
        "in the user's add-ons folder": r["installed_in_user_addons"] == 1,
        "the package is in the add-on's vendor/": r["vendor_in_addon"] == 1,
        "hostloop imported from vendor/": r["hostloop_found_by"] == "vendor"
        and r["hostloop_from_zip"] == 1,
        "Start": r["start"] == "FINISHED",
        "hostloop's extension module from the zip": r["library_from_zip"] == 1,
        "the plugin from the zip": r["plugin_from_zip"] == 1,
        "frame 20 -> step 20": r["shown_step"] == 20,
        "sink on the main thread": report.get("sink_on_main") == 1,
        "clean shutdown": report.get("shutdown") == "OK",
        "disabled": r["disable"] == "FINISHED",
    }
    failed = [k for k, ok in checks.items() if not ok]
    print(f"checks_failed={len(failed)}", flush=True)
    if failed:
        fail(1, "; ".join(failed))
    bpy.ops.wm.quit_blender()
    yield None


class Driver:
    def __init__(self, args):
        self.steps = steps(args)
        self.cond = None
        self.since = time.monotonic()

    def __call__(self):
        try:
            while self.cond is None or self.cond():
                self.cond = next(self.steps)
                self.since = time.monotonic()
                if self.cond is None:
                    return None
            if time.monotonic() - self.since > WAIT_S:
                s = sys.modules[ADDON].engine.current
                fail(1, f"no step 20 after {WAIT_S:.0f} s: {s and s.counters}, "
                        f"{s and s.last_error!r}")
            return 0.05
        except StopIteration:
            return None
        except Exception:
            traceback.print_exc()
            fail(1, "run_zip.py raised")


try:
    bpy.app.timers.register(Driver(parse_args()), first_interval=0.5)
except SystemExit:
    raise
except BaseException:
    traceback.print_exc()
    fail(1, "run_zip.py raised during start-up")
