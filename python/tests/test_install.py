"""The built wheel installs offline into a fresh virtualenv and works there."""

import os
import pathlib
import re
import subprocess
import sys
import textwrap
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 300  # making a venv and installing may be slow on a loaded machine


def cargo_version():
    text = (ROOT / "python" / "Cargo.toml").read_text()
    package = text.split("[package]", 1)[1].split("\n[", 1)[0]
    return re.search(r'^version\s*=\s*"([^"]+)"', package, re.M).group(1)


def newest_wheel():
    """The newest complete wheel: in $HOSTLOOP_WHEELS if set (scripts/python-package sets it),
    else in any target/wheels*/ directory."""
    dirs = []
    if os.environ.get("HOSTLOOP_WHEELS"):
        d = pathlib.Path(os.environ["HOSTLOOP_WHEELS"])
        dirs.append(d if d.is_absolute() else ROOT / d)
    dirs += sorted((ROOT / "target").glob("wheels*"))
    for d in dirs:
        wheels = sorted(d.glob("hostloop-*.whl"), key=lambda p: p.stat().st_mtime, reverse=True)
        for w in wheels:
            # Another build may be writing one right now: take only a complete archive.
            if zipfile.is_zipfile(w):
                with zipfile.ZipFile(w) as z:
                    if z.testzip() is None:
                        return w
    return None


def run(cmd, **kw):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, **kw)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{cmd[:3]} did not finish within {TIMEOUT} s\n{e.stdout}\n{e.stderr}")
    assert out.returncode == 0, f"{cmd}\nexit {out.returncode}\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv (no system site packages) with the wheel installed offline."""
    wheel = newest_wheel()
    if wheel is None:
        pytest.skip("no built wheel in target/wheels*/ (scripts/python-package builds one)")
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    run([base, "-m", "venv", str(venv)])
    py = venv / "bin" / "python"
    # Offline: from the file only, nothing from an index.
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    run([str(py), "-m", "pip", "install", "--no-index", "--no-deps", str(wheel)], env=env)
    return py, env, wheel


def test_fresh_venv_has_no_system_site_packages(installed):
    py, env, _ = installed
    out = run([str(py), "-c", "import sys; print(sys.prefix != sys.base_prefix);"
               "import site; print(site.ENABLE_USER_SITE)"], env=env)
    assert out.split()[0] == "True"
    cfg = (py.parent.parent / "pyvenv.cfg").read_text()
    assert re.search(r"include-system-site-packages\s*=\s*false", cfg)


def test_import_and_version(installed, tmp_path):
    py, env, wheel = installed
    out = run([str(py), "-c", "import hostloop; print(hostloop.__version__)"], cwd=tmp_path,
              env=env)
    assert out.strip() == cargo_version(), wheel
    where = run([str(py), "-c", "import hostloop; print(hostloop.__file__)"], cwd=tmp_path,
                env=env)
    assert pathlib.Path(where.strip()).is_relative_to(py.parent.parent)  # not the source tree


def test_smoke_run(installed, tmp_path):
    py, env, _ = installed
    code = textwrap.dedent('''
        import threading, hostloop
        rt = hostloop.Runtime(workers=1)
        got = []
        rt.call_soon(lambda: got.append(threading.get_ident()))
        assert rt.run_until(lambda: got, 60.0)
        assert got == [threading.get_ident()]
        task = rt.spawn(lambda a, b: a * b, 6, 7, on_main=got.append)
        assert task.result(60.0) == 42 and rt.run_until(lambda: 42 in got, 60.0)
        report = rt.shutdown(5.0)
        assert rt.closed and report["stragglers"] == 0
        print("smoke ok")
    ''')
    assert run([str(py), "-c", code], cwd=tmp_path, env=env).strip() == "smoke ok"
