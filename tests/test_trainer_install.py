"""Install: declared dependencies, pinned versions, license metadata, and the `rope` name clash.

The first tests read pyproject.toml, requirements.txt, constraints.txt and the repository's
imports (no network). The last one checks the README's advice for the name clash in a fresh
virtualenv:

PyPI's `rope` (a refactoring library) and ours (distribution `rope-jax`) both install the
top-level directory `site-packages/rope/`: whichever is installed last provides
`rope/__init__.py`, and uninstalling either deletes files the other needs (after
`pip uninstall rope`, `import rope` is an empty namespace package). The README's repair,
`pip install --no-deps --force-reinstall .`, must restore ours.

Needs PyPI (PyPI's rope) and builds our wheel: runs in CI only (.ci/run sets
ROPE_INSTALL_TEST=1), or locally with that variable set.
"""
import ast
import importlib.metadata
import json
import os
import pathlib
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement

REPO = pathlib.Path(__file__).resolve().parents[1]
ci_only = pytest.mark.skipif(
    not os.environ.get("ROPE_INSTALL_TEST"),
    reason="CI only (.ci/run sets ROPE_INSTALL_TEST=1): needs PyPI and a fresh virtualenv")
# Code with its own requirements file (benchmarks/requirements.txt: PyTorch for a reference).
OWN_REQUIREMENTS = {"benchmarks/torch_vit.py"}


def _name(requirement: str) -> str:
  return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


def _requirements_txt() -> list[Requirement]:
  lines = (REPO / "requirements.txt").read_text().splitlines()
  return [Requirement(l.split("#")[0]) for l in lines if l.split("#")[0].strip()]


def _pyproject() -> dict:
  return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_requirements_txt_is_the_train_and_test_extras():
  extras = _pyproject()["project"]["optional-dependencies"]
  declared = {_name(r) for e in ("train", "test") for r in extras[e]} - {"rope-jax"}
  assert {_name(str(r)) for r in _requirements_txt()} == declared
  assert "chex" not in declared  # Nothing imports it.
  for extra in ("tpu", "cuda12", "prepare", "test", "dev", "gcs"):
    assert extra in extras
  assert any(r.startswith("jax[tpu]") for r in extras["tpu"])
  assert any(r.startswith("jax[cuda12]") for r in extras["cuda12"])
  assert any(r.startswith("tensorflow-cpu") for r in extras["prepare"])


def test_constraints_pin_every_requirement_within_its_range():
  pins = {}
  for line in (REPO / "constraints.txt").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
      name, version = line.split("==")
      pins[_name(name)] = version
  for r in _requirements_txt():
    assert _name(r.name) in pins, f"{r.name} is not pinned in constraints.txt"
    assert r.specifier.contains(pins[_name(r.name)]), (r, pins[_name(r.name)])


def _third_party_imports() -> dict[str, str]:
  """{top-level module: a file importing it} over the repository's Python files."""
  local = {p.stem for p in REPO.glob("*.py")} | {p.name for p in REPO.iterdir() if p.is_dir()}
  local |= {p.stem for p in REPO.glob("*/*.py")}  # e.g. `import test_trainer_loop`.
  found = {}
  for path in sorted(REPO.glob("**/*.py")):
    rel = path.relative_to(REPO).as_posix()
    if rel.startswith((".", "build/")) or rel in OWN_REQUIREMENTS:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [node.module]
      else:
        continue
      for name in names:
        top = name.split(".")[0]
        if top not in sys.stdlib_module_names and top not in local and top != "__future__":
          found.setdefault(top, rel)
  return found


def test_every_imported_package_is_declared():
  # Declared = requirements.txt or the distribution that provides one of them (e.g. jaxlib);
  # optional accelerator / GCS / TensorFlow imports are guarded and live in extras.
  declared = {_name(str(r)) for r in _requirements_txt()}
  optional = {"tensorflow", "libtpu", "gcsfs", "google"}
  distributions = importlib.metadata.packages_distributions()
  missing = {}
  for module, where in _third_party_imports().items():
    if module in optional:
      continue
    dists = {re.sub(r"[-_.]+", "-", d).lower() for d in distributions.get(module, [module])}
    if not dists & declared and not dists & {"jaxlib"}:  # jaxlib: jax's own pin.
      missing[module] = where
  assert not missing, f"imported but not in requirements.txt: {missing}"


def test_license_file_and_spdx_metadata():
  project = _pyproject()["project"]
  assert project["license"] == "Apache-2.0"  # PEP 639 SPDX string, not the {text=} table.
  assert project["license-files"] == ["LICENSE"]
  text = (REPO / "LICENSE").read_text()
  assert "Apache License" in text and "Version 2.0, January 2004" in text
  requires = _pyproject()["build-system"]["requires"]
  assert any(r.startswith("setuptools>=") and int(r.split(">=")[1].split(".")[0]) >= 77
             for r in requires)  # The first setuptools that reads the SPDX form.

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


@ci_only
def test_readme_repair_restores_ours_next_to_pypi_rope(tmp_path):
  readme = (REPO / "README.md").read_text()
  assert "pip install --no-deps --force-reinstall ." in readme
  wheels = tmp_path / "wheels"
  _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, REPO])
  (wheel,) = wheels.glob("rope_jax-*.whl")
  with zipfile.ZipFile(wheel) as z:  # The built metadata: SPDX expression and the file.
    metadata = z.read("rope_jax-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert "rope_jax-0.1.0.dist-info/licenses/LICENSE" in z.namelist()
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
