"""Which accelerator a run asks for, and a one-line error when JAX finds only CPUs.

Without its accelerator library (libtpu from `jax[tpu]`, the CUDA plugin from `jax[cuda12]`)
JAX falls back to the CPU with one INFO line, and a pod or GPU run would "train" for days on
CPU. A run asks for an accelerator with `config.platform` ("tpu" / "gpu") or with --multihost
(auto-detected pods and clusters), and then stops at start-up naming the package to install.

Two checks, both pure functions of what they are given:
* `check_installed` before `jax.distributed.initialize()` (which must come before JAX looks
  at its devices): is the accelerator's package importable at all?
* `check_devices` after it: did JAX actually find such a device (driver, JAX_PLATFORMS, ...)?
"""
import importlib.util
from typing import Collection, Mapping

PLATFORMS = ("any", "tpu", "gpu")
# The pip package that brings each platform to JAX, with this repository's extra.
INSTALL = {"tpu": "jax[tpu] (pip install -e \".[tpu]\")",
           "gpu": "jax[cuda12] (pip install -e \".[cuda12]\")"}
# Modules those packages install (libtpu; jax-cuda12-plugin registers a PJRT plugin module).
MODULES = {"tpu": ("libtpu",), "gpu": ("jax_plugins.xla_cuda12", "jax_cuda12_plugin")}


def wanted(platform: str, multihost: bool) -> tuple[str, ...]:
  """The platforms that satisfy a run: () = any device (CPU included).

  Args:
    platform: `config.platform`, one of PLATFORMS.
    multihost: --multihost (auto-detected cluster): a TPU or a GPU is needed.

  Raises:
    ValueError naming config.platform and the allowed values.
  """
  if platform not in PLATFORMS:
    raise ValueError(f"config.platform={platform!r}; allowed: {', '.join(PLATFORMS)}.")
  if platform != "any":
    return (platform,)
  return ("tpu", "gpu") if multihost else ()


def _who(platform: str, multihost: bool) -> str:
  if platform != "any":
    return f"config.platform={platform!r} asks for a {platform.upper()}"
  return "--multihost asks for a TPU pod or GPU cluster"


def _install(want: Collection[str]) -> str:
  return " or ".join(f"install {INSTALL[p]}" for p in want)


def installed_platforms() -> set[str]:
  """The accelerator platforms whose JAX package is importable here (without importing it)."""
  found = set()
  for platform, modules in MODULES.items():
    for module in modules:
      try:
        if importlib.util.find_spec(module) is not None:
          found.add(platform)
      except (ImportError, ValueError):  # A parent package missing.
        continue
  return found


def check_installed(platform: str, multihost: bool, installed: Collection[str]) -> str | None:
  """One line naming the package to install if none of the wanted platforms is; else None."""
  want = wanted(platform, multihost)
  if not want or set(want) & set(installed):
    return None
  return f"{_who(platform, multihost)}, but its JAX package is not installed: {_install(want)}."


def check_devices(platform: str, multihost: bool, device_platforms: Collection[str],
                  environ: Mapping[str, str]) -> str | None:
  """One line if JAX's devices (`jax.devices()` platforms) are none of the wanted ones."""
  want = wanted(platform, multihost)
  if not want or set(want) & set(device_platforms):
    return None
  forced = environ.get("JAX_PLATFORMS")
  hint = (f" (JAX_PLATFORMS={forced} is set: unset it)" if forced else
          "; if it is installed, check the driver (nvidia-smi) or the TPU runtime (a TPU VM)")
  return (f"{_who(platform, multihost)}, but JAX found only "
          f"{', '.join(sorted(set(device_platforms))) or 'no'} devices: {_install(want)}{hint}.")
