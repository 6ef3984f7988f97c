"""The quickstart examples (python/examples) run as written, each in a fresh interpreter, and
print the result they got back on the main thread."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "python" / "examples"
QUICKSTART = ROOT / "python" / "docs" / "quickstart.md"
EXPECTED = f"result {sum(i * i for i in range(1000))} on MainThread"


def run_example(name, tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONDONTWRITEBYTECODE="1")
    # A fresh interpreter in an empty directory: only the installed hostloop can import.
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )


def check(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.stdout.strip().splitlines() == [EXPECTED], proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_quickstart_asyncio(tmp_path):
    check(run_example("quickstart_asyncio.py", tmp_path))


def test_quickstart_qt(tmp_path):
    if importlib.util.find_spec("PyQt5") is None:
        pytest.skip("PyQt5 is not installed (apt-get install python3-pyqt5)")
    check(run_example("quickstart_qt.py", tmp_path))


def test_quickstart_doc_shows_the_asyncio_example_as_written():
    """The README's quickstart code is the file this test runs, and it stays within 15 lines."""
    source = (EXAMPLES / "quickstart_asyncio.py").read_text()
    assert len(source.strip().splitlines()) <= 15
    blocks = re.findall(r"```python\n(.*?)```", QUICKSTART.read_text(), re.S)
    assert source in blocks
    assert f"It prints `{EXPECTED}`" in QUICKSTART.read_text()
