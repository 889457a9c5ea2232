"""Test session setup.

Four fake CPU devices so that data-parallel code is exercised by every test run. This must
happen before anything imports jax, which is why it lives here and not in a fixture.
"""
import os
import signal

# XLA:CPU options for compile-bound tests: the tests' tiny programs are dominated by compile
# time, not run time.
#  - LLVM optimisation level 0 halves it (a ViT train step: 8.1 -> 4.5 s; the suite -29%).
#  - XLA's classic elemental emitters instead of the MLIR fusion emitters (jax 0.10's default)
#    compile the same fusions 2.4x faster at -O0 (a tiny ViT's value-and-grad at 3 grids:
#    24-30 -> 10-12 s; slower than the default without -O0, so only together).
# Neither turns on fast-math: the programs compute the same functions, at the tolerances the
# tests state. The default compiler path stays covered: tests/test_trainer_processes.py runs
# train.py with XLA's default options, and the benchmarks use them.
FAST_COMPILE_XLA_FLAGS = ("--xla_backend_optimization_level=0 "
                          "--xla_cpu_use_fusion_emitters=false")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 "
                      + FAST_COMPILE_XLA_FLAGS)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests compare against float32 references; keep XLA from using faster, less exact paths.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

# A test run started in the background by a non-interactive shell (`pytest ... &`) inherits
# SIGINT ignored, and so would the train.py processes of the Ctrl-C tests, where
# trainer/preemption.py then rightly leaves it ignored (as nohup asks). Those tests stand for a
# Ctrl-C in a terminal: the test process takes Python's own handler back, and exec resets a
# handled signal to its default in every child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)


def load_script(name: str):
  """scripts/<name>.py as a module, loaded once per process (scripts are not a package; some
  define absl flags, which a second load would define again)."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  if name not in sys.modules:
    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
  return sys.modules[name]
