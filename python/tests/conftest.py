import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PARTICLES = ROOT / "target" / "release" / "libhostloop_particles.so"
TEMPLATE = ROOT / "target" / "release" / "libhostloop_plugin_template.so"


@pytest.fixture
def rt():
    import hostloop
    r = hostloop.Runtime(workers=1)
    yield r
    r.shutdown(5.0)


@pytest.fixture
def particles():
    if not PARTICLES.is_file():
        pytest.skip("build it: cargo build --release -p hostloop-particles")
    return str(PARTICLES)


@pytest.fixture
def template():
    """The plugin template's build (a second plugin, "orbits")."""
    if not TEMPLATE.is_file():
        pytest.skip("build it: cargo build --release -p hostloop-plugin-template")
    return str(TEMPLATE)
