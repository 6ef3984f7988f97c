#!/usr/bin/env python3
"""A Python host on a GLib main loop, driving the particles plugin through the hostloop package.

`hostloop.glib.attach` makes the GLib loop watch hostloop's wake fd (`GLib.unix_fd_add_full`)
and pump with a 2 ms budget when it becomes readable; a 60 Hz `GLib.timeout_add` "frame" tick
pumps too (the host's frame) and records the loop's cadence. Frames arrive through the sink on
this (the main) thread. After `--seconds` (and on until `--min-frames`/`--min-ticks` were
reached, at most `--max-seconds`) it unloads the plugin, shuts hostloop down and prints
`key=value` lines.

Run with a Python that has the package (`scripts/python-package` makes target/python-venv,
which also sees the distribution's PyGObject, `python3-gi`):
    target/python-venv/bin/python examples/hosts/python-glib/host.py --seconds 3
"""

import argparse
import os
import struct
import sys
import threading
import time

import gi

gi.require_version("GLib", "2.0")
from gi.repository import GLib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
try:
    import hostloop  # noqa: E402
    import hostloop.glib  # noqa: E402
except ImportError as e:
    sys.exit(f"host.py needs the hostloop package ({e}): run scripts/python-package first and "
             "use its venv's python (target/python-venv/bin/python)")


def find_plugin(file_name, env):
    """`$<env>` when set, else target/release/<file_name> of CARGO_TARGET_DIR or this checkout."""
    if os.environ.get(env):
        return os.environ[env]
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    path = os.path.join(target, "release", file_name)
    if not os.path.isfile(path):
        sys.exit(f"{path} not found: cargo build --release -p hostloop-particles, or set {env}")
    return path


def percentile(values, q):
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100.0 * (len(s) - 1))))]


class Host:
    def __init__(self, args):
        self.args = args
        self.prefix = args.prefix
        self.main_ident = threading.get_ident()
        self.loop = GLib.MainLoop()

        self.rt = hostloop.Runtime(workers=args.workers or None)
        self.rt.set_sink(self.on_message)
        self.attachment = None

        # what arrived
        self.sink_calls = 0
        self.sink_off_main = 0
        self.frames = 0  # positions messages of the configured size
        self.frames_other = 0  # frames of another size (before the configuration applied)
        self.frames_skipped = 0  # steps never shown (latest delivery skips stale frames)
        self.restarts = 0  # step numbers going back (the sim rebuilt by a configure)
        self.first_step = None  # a (re)built simulation delivers its start state as step 0
        self.last_step = -1
        self.pending_step = None
        self.pending_configuration = None
        self.errors = []
        self.bad_frames = 0
        self.first_copy = None
        self.last_copy = None
        # who pumped: the attachment counts the fd's pumps, the frame tick counts its own
        self.timer_pumps = self.timer_items = 0
        self.frames_by = {"fd": 0, "timer": 0}
        # the frame tick's cadence
        self.ticks = 0
        self.tick_times = []

    # -- the sink: main thread, inside a pump

    def on_unraisable(self, u):
        """The runtime reports a sink (or other callback) that raised here: count it too."""
        self.errors.append(f"{u.exc_type.__name__}: {u.exc_value} ({u.err_msg or 'callback'})")
        self.previous_hook(u)

    def on_message(self, topic, payload):
        self.sink_calls += 1
        if threading.get_ident() != self.main_ident:
            self.sink_off_main += 1
        if topic == self.prefix + "/step":
            b = payload
            self.pending_step = struct.unpack_from("<Q", b)[0]
            # Then the number of the configuration the frame belongs to (0: the plugin's own
            # default; the configure this host sends at start is 1).
            self.pending_configuration = struct.unpack_from("<Q", b, 8)[0] if len(b) >= 16 else None
        elif topic == self.prefix + "/positions":
            if isinstance(payload, bytes) or payload.format != "f":
                self.bad_frames += 1
                return
            count, comps = payload.shape
            if comps != 3:
                self.bad_frames += 1
                return
            want = 1 if self.args.configure else 0  # without a configure, the default is ours
            ours = self.pending_configuration is None or self.pending_configuration >= want
            if (self.args.agents and count != self.args.agents) or not ours:
                self.frames_other += 1
                return
            step = self.pending_step
            if step is None:
                self.bad_frames += 1  # a positions message must follow its step
                return
            if self.first_step is None:
                self.first_step = step
            elif step <= self.last_step:
                self.restarts += 1
            else:
                self.frames_skipped += step - self.last_step - 1
            self.last_step = step
            self.pending_step = None
            self.frames += 1
            # Inside the attachment's pump it is the wake fd's doing, else the frame tick's.
            self.frames_by["fd" if self.attachment.pumping == "fd" else "timer"] += 1
            if self.first_copy is None:
                self.first_copy = payload.tobytes()
            elif self.frames % 30 == 0:
                self.last_copy = payload.tobytes()
        elif topic == self.prefix + "/error":
            self.errors.append(bytes(payload).decode("utf-8", "replace"))

    # -- GLib sources (the wake fd's is hostloop.glib's)

    def on_frame(self):
        self.ticks += 1
        self.tick_times.append(time.monotonic())
        try:
            ran = self.rt.pump(self.args.budget_us / 1000.0)
        except Exception as e:  # a failed pump: stop the run, report it
            self.errors.append(f"pump (timer): {type(e).__name__}: {e}")
            self.loop.quit()
            return GLib.SOURCE_REMOVE
        self.timer_pumps += 1
        self.timer_items += ran
        return GLib.SOURCE_CONTINUE

    def on_check_end(self):
        """Ends the run once --seconds have passed and --min-frames/--min-ticks were reached
        (a loaded machine takes longer), or at --max-seconds whatever was reached."""
        ran = time.monotonic() - self.started
        args = self.args
        reached = self.frames >= args.min_frames and self.ticks >= args.min_ticks
        if (ran >= args.seconds and reached) or ran >= args.max_seconds:
            self.loop.quit()
            self.end_source = None
            return GLib.SOURCE_REMOVE
        return GLib.SOURCE_CONTINUE

    # -- the run

    def run(self):
        args = self.args
        self.previous_hook = sys.unraisablehook
        sys.unraisablehook = self.on_unraisable
        plugin = self.rt.load_plugin(args.plugin)
        if args.configure:
            self.rt.post_event(self.prefix + "/configure", args.configure.encode("ascii"))
        # One call: the default main context watches the wake fd and pumps when it is readable.
        self.attachment = hostloop.glib.attach(self.rt, budget_ms=args.budget_us / 1000.0)
        tick_source = GLib.timeout_add(1000 // 60, self.on_frame)
        self.started = time.monotonic()
        self.end_source = GLib.timeout_add(50, self.on_check_end)
        try:
            self.loop.run()
        finally:
            ran_s = time.monotonic() - self.started
            if self.end_source is not None:  # the run ended otherwise (a failed pump)
                GLib.source_remove(self.end_source)
            if GLib.MainContext.default().find_source_by_id(tick_source) is not None:
                GLib.source_remove(tick_source)
            self.attachment.detach()
        unload = plugin.unload(2.0)
        stats = self.rt.stats()
        shutdown = self.rt.shutdown(2.0)
        sys.unraisablehook = self.previous_hook
        return ran_s, unload, stats, shutdown

    def report(self, ran_s, unload, stats, shutdown):
        gaps_ms = [(b - a) * 1000.0 for a, b in zip(self.tick_times, self.tick_times[1:])]
        moved = int(self.first_copy is not None and self.last_copy is not None
                    and self.first_copy != self.last_copy)
        att = self.attachment
        lines = {
            "host": "python-glib",
            "hostloop_version": hostloop.__version__,
            "glib_version": f"{GLib.MAJOR_VERSION}.{GLib.MINOR_VERSION}.{GLib.MICRO_VERSION}",
            "seconds": f"{ran_s:.2f}",
            "agents": self.args.agents,
            "frames": self.frames,
            "frames_per_s": f"{self.frames / ran_s:.1f}" if ran_s > 0 else "0",
            "frames_skipped": self.frames_skipped,
            "frames_before_configure": self.frames_other,
            "first_step": self.first_step,
            "last_step": self.last_step,
            "restarts": self.restarts,
            "bad_frames": self.bad_frames,
            "moved": moved,
            "sink_calls": self.sink_calls,
            "sink_on_main": int(self.sink_calls > 0 and self.sink_off_main == 0),
            "sink_off_main": self.sink_off_main,
            "fd_pumps": att.fd_pumps,
            "fd_items": att.items,
            "frames_via_fd": self.frames_by["fd"],
            "timer_pumps": self.timer_pumps,
            "timer_items": self.timer_items,
            "frames_via_timer": self.frames_by["timer"],
            "ticks": self.ticks,
            "frame_p50_ms": f"{percentile(gaps_ms, 50):.2f}",
            "frame_p99_ms": f"{percentile(gaps_ms, 99):.2f}",
            "frame_max_ms": f"{max(gaps_ms) if gaps_ms else 0:.2f}",
            "pump_p99_us": f"{stats['pump_p99_s'] * 1e6:.0f}",
            "budget_overruns": stats["budget_overruns"],
            "doorbell_rings": stats["doorbell_rings"],
            "sink_dropped": stats["sink_dropped"],
            "errors": len(self.errors),
            "unload_dropped": unload["dropped"],
            "unload_stragglers": unload["stragglers"],
            "shutdown_stragglers": shutdown["stragglers"],
            "shutdown": "OK" if shutdown["stragglers"] == 0 else "TIMEOUT",
        }
        for k, v in lines.items():
            print(f"{k}={v}")
        for e in self.errors[:5]:
            print(f"error: {e}", file=sys.stderr)
        sys.stdout.flush()
        return 0 if not self.errors and lines["shutdown"] == "OK" else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0, help="run at least this long")
    p.add_argument("--min-frames", type=int, default=0,
                   help="then on until this many frames arrived (a loaded machine is slower)")
    p.add_argument("--min-ticks", type=int, default=0,
                   help="and until the 60 Hz tick ran this many times")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="but never longer than this")
    p.add_argument("--agents", type=int, default=100_000,
                   help="particles (frames of another size are not counted; 0 = any size)")
    p.add_argument("--delivery", choices=("latest", "every"), default="latest")
    p.add_argument("--workers", type=int, default=0, help="hostloop workers (0 = the default)")
    p.add_argument("--budget-us", type=int, default=2000, help="pump budget")
    p.add_argument("--plugin", default=None,
                   help="plugin library (default: target/release/libhostloop_particles.so)")
    p.add_argument("--prefix", default="particles", help="the plugin's topic prefix")
    p.add_argument("--configure", default=None,
                   help="the configure event's text (default: from --agents/--delivery)")
    args = p.parse_args()
    if args.plugin is None:
        args.plugin = find_plugin("libhostloop_particles.so", "HOSTLOOP_PARTICLES")
    if args.configure is None and args.prefix == "particles":
        args.configure = f"agents={args.agents} delivery={args.delivery} playing=1"
    host = Host(args)
    return host.report(*host.run())


if __name__ == "__main__":
    sys.exit(main())
