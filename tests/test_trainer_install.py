"""The README's install advice for the `rope` name clash, checked in a fresh virtualenv.

PyPI's `rope` (a refactoring library) and ours (distribution `rope-jax`) both install the
top-level directory `site-packages/rope/`: whichever is installed last provides
`rope/__init__.py`, and uninstalling either deletes files the other needs (after
`pip uninstall rope`, `import rope` is an empty namespace package). The README's repair,
`pip install --no-deps --force-reinstall .`, must restore ours.

Needs PyPI (PyPI's rope) and builds our wheel: runs in CI only (.ci/run sets
ROPE_INSTALL_TEST=1), or locally with that variable set.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(
    not os.environ.get("ROPE_INSTALL_TEST"),
    reason="CI only (.ci/run sets ROPE_INSTALL_TEST=1): needs PyPI and a fresh virtualenv")

# Which `rope` a fresh interpreter finds, without importing it (ours needs jax, the venv has
# only the packages under test).
WHICH = r"""
import importlib.util, json, os
spec = importlib.util.find_spec("rope")
init = spec.origin if spec and spec.origin and os.path.exists(spec.origin) else None
text = open(init).read() if init else ""
print(json.dumps({"init": init, "ours": "from rope.blocks import" in text,
                  "pypi": "refactor" in text or "VERSION_INFO" in text}))
"""


def _run(cmd, **kwargs):
  proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600,
                        **kwargs)
  assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
  return proc.stdout


def test_readme_repair_restores_ours_next_to_pypi_rope(tmp_path):
  readme = (REPO / "README.md").read_text()
  assert "pip install --no-deps --force-reinstall ." in readme
  wheels = tmp_path / "wheels"
  _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, REPO])
  (wheel,) = wheels.glob("rope_jax-*.whl")
  venv = tmp_path / "venv"
  _run([sys.executable, "-m", "venv", "--without-pip", venv])
  python = venv / "bin" / "python"
  pip = [sys.executable, "-m", "pip", "--python", python]

  def which():
    return json.loads(_run([python, "-c", WHICH], cwd=tmp_path))  # Not the clone's rope/.

  _run(pip + ["install", "-q", "--no-deps", "rope"])  # PyPI's, e.g. from an IDE plugin.
  assert which()["pypi"]
  _run(pip + ["install", "-q", "--no-deps", wheel])
  assert which()["ours"]  # Installed last: its __init__.py overwrote PyPI's.
  _run(pip + ["uninstall", "-q", "-y", "rope"])  # The trap: deletes our __init__.py too.
  assert which()["init"] is None
  _run(pip + ["install", "-q", "--no-deps", "--force-reinstall", wheel])  # The README's repair.
  assert which()["ours"]
