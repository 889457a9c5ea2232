"""Test session setup.

Four fake CPU devices so that data-parallel code is exercised by every test run. This must
happen before anything imports jax, which is why it lives here and not in a fixture.
"""
import os

# LLVM optimisation level 0 for XLA:CPU: the tests' tiny programs are dominated by compile time,
# which this halves (a ViT train step: 8.1 -> 4.5 s; the suite's CPU time -29%); it changes how
# fast the generated code runs, not what it computes (fast-math stays off).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 "
                      "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compare against float32 references; keep XLA from using faster, less exact paths.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")


def load_launch_sweep():
  """scripts/launch_sweep.py as a module, loaded once per process (it defines absl flags,
  which a second load would define again)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  if "launch_sweep" not in sys.modules:
    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "launch_sweep.py"
    spec = importlib.util.spec_from_file_location("launch_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules["launch_sweep"] = module
  return sys.modules["launch_sweep"]
