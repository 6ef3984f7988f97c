"""Where the add-on finds the hostloop Python package and the particles plugin.

The package (``import_hostloop``), first found wins:
  1. ``$HOSTLOOP_WHEEL``, the path of a hostloop wheel (an override, for tests and
     development): unpacked once, see 4;
  2. already importable (pip-installed for Blender's Python, on PYTHONPATH, or imported by
     another add-on: one copy per Blender process);
  3. ``vendor/`` beside this file, where the zip from ``make-zip`` ships it;
  4. from a checkout: the newest ``target/wheels*/hostloop-*.whl`` above this file (symlinks
     resolved), unpacked once into ``target/blender-vendor/<digest>/``.
The wheel is abi3 (CPython 3.10 and later), so one file serves every Blender from 3.1 on.

The plugin (``find_plugin``): ``$HOSTLOOP_PARTICLES`` (a path, an override); else
``lib/libhostloop_particles.so`` beside this file (the zip); else ``target/release/`` of
``$CARGO_TARGET_DIR`` or of the nearest directory above this file that has one (a checkout).
"""

import glob
import hashlib
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
VENDOR = os.path.join(HERE, "vendor")
PLUGIN = "libhostloop_particles.so"

found_by = ""  # how the package was found: "HOSTLOOP_WHEEL", "importable", "vendor", "checkout"


def _checkout_targets():
    """``target/`` directories of the checkout this file sits in, nearest first."""
    here = os.path.dirname(os.path.realpath(__file__))
    while True:
        candidate = os.path.join(here, "target")
        if os.path.isdir(candidate):
            yield candidate
        parent = os.path.dirname(here)
        if parent == here:
            return
        here = parent


def _newest_checkout_wheel():
    for target in _checkout_targets():
        wheels = glob.glob(os.path.join(target, "wheels*", "hostloop-*.whl"))
        if wheels:
            return max(wheels, key=os.path.getmtime)
    return None


def unpack_wheel(wheel, into):
    """Unpacks the ``hostloop/`` package of ``wheel`` into ``into/<digest of the wheel>/``
    (once: a complete earlier unpacking is reused) and returns that directory."""
    with open(wheel, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    dest = os.path.join(into, digest)
    if os.path.isfile(os.path.join(dest, "hostloop", "__init__.py")):
        return dest
    os.makedirs(into, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".unpack-", dir=into)
    try:
        with zipfile.ZipFile(wheel) as z:
            names = [n for n in z.namelist() if n.startswith("hostloop/")]
            if not any(n == "hostloop/__init__.py" for n in names):
                raise ImportError(f"{wheel} holds no hostloop package")
            z.extractall(tmp, names)
        try:
            os.rename(tmp, dest)  # atomic: another Blender unpacking at once loses the race
        except OSError:
            if not os.path.isfile(os.path.join(dest, "hostloop", "__init__.py")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _prepend(path):
    if path not in sys.path:
        sys.path.insert(0, path)
    importlib.invalidate_caches()


def import_hostloop():
    """Imports and returns the ``hostloop`` package, found as the module docstring says; an
    ImportError that says where it looked if it is nowhere."""
    global found_by
    if "hostloop" in sys.modules:
        found_by = found_by or "importable"
        return importlib.import_module("hostloop")
    wheel = os.environ.get("HOSTLOOP_WHEEL")
    if wheel:
        if not os.path.isfile(wheel):
            raise ImportError(f"HOSTLOOP_WHEEL={wheel} is not a file")
        _prepend(unpack_wheel(wheel, os.path.join(tempfile.gettempdir(), "hostloop-wheels")))
        found_by = "HOSTLOOP_WHEEL"
    elif importlib.util.find_spec("hostloop") is not None:
        found_by = "importable"
    elif os.path.isfile(os.path.join(VENDOR, "hostloop", "__init__.py")):
        _prepend(VENDOR)
        found_by = "vendor"
    else:
        wheel = _newest_checkout_wheel()
        if wheel is None:
            raise ImportError(
                "the hostloop Python package was not found: it is not importable, not in "
                f"{VENDOR} (install the add-on from the zip that examples/hosts/blender/make-zip "
                "makes), and there is no target/wheels*/hostloop-*.whl above "
                f"{os.path.dirname(os.path.realpath(__file__))} (build it with "
                "scripts/python-package)")
        target = os.path.dirname(os.path.dirname(wheel))
        _prepend(unpack_wheel(wheel, os.path.join(target, "blender-vendor")))
        found_by = "checkout"
    return importlib.import_module("hostloop")


def find_plugin():
    """The path of the particles plugin (see the module docstring); FileNotFoundError saying
    where it looked if it is nowhere."""
    if os.environ.get("HOSTLOOP_PARTICLES"):
        return os.environ["HOSTLOOP_PARTICLES"]
    beside = os.path.join(HERE, "lib", PLUGIN)
    if os.path.isfile(beside):
        return beside
    cargo = os.environ.get("CARGO_TARGET_DIR")
    if cargo and os.path.isfile(os.path.join(cargo, "release", PLUGIN)):
        return os.path.join(cargo, "release", PLUGIN)
    for target in _checkout_targets():
        candidate = os.path.join(target, "release", PLUGIN)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"{PLUGIN} not found: not in {os.path.dirname(beside)}, nor in target/release above "
        f"{os.path.dirname(os.path.realpath(__file__))}; build it with cargo build --release "
        "-p hostloop-particles, or set HOSTLOOP_PARTICLES")
