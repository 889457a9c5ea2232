"""The device mesh: data parallelism ("data") times fully-sharded data parallelism ("fsdp").

Two mesh axes span every device of every process, `config.mesh.data` x `config.mesh.fsdp`:
  * batches are split along their leading (example) axis over BOTH axes, so every device
    computes on its own examples (`batch_sharding`);
  * parameters and optimizer state are split over "fsdp" only (trainer/sharding.py decides
    which dimension of each array, from its logical axis names), and replicated over "data".
With fsdp = 1 (the default) this is pure data parallelism: everything but the batch is
replicated. Each process supplies only its own rows of the global batch (`global_batch`), as
multi-host input pipelines do.

"fsdp" is the minor mesh axis, so on TPU pods and GPU nodes its devices are the neighbours
that `jax.make_mesh` places next to each other (the fastest links carry the per-layer
parameter all-gathers and gradient reduce-scatters of FSDP).
"""
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
AXES = (DATA_AXIS, FSDP_AXIS)
# config.mesh defaults, also for configs written before the key existed (pure data
# parallelism over every device, as every run did then).
DEFAULTS = {"data": -1, "fsdp": 1}


def upgrade_config(config: dict) -> dict:
  """A run's config (as a dict) with `mesh` filled in by `DEFAULTS` where it lacks it (a
  config.json written before the key existed trained with pure data parallelism)."""
  return dict(config, mesh=dict(DEFAULTS, **(config.get("mesh") or {})))


def mesh_shape(mesh_config: Mapping[str, Any] | None, num_devices: int) -> tuple[int, int]:
  """(data, fsdp) sizes from `config.mesh` (None or missing keys: `DEFAULTS`).

  data = -1 means "every device the fsdp axis leaves". ValueError naming mesh.data /
  mesh.fsdp unless data * fsdp == num_devices.
  """
  options = dict(DEFAULTS, **dict(mesh_config or {}))
  data, fsdp = options["data"], options["fsdp"]
  for name, value in (("data", data), ("fsdp", fsdp)):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
      raise ValueError(f"mesh.{name}={value!r} must be an integer.")
  if fsdp < 1:
    raise ValueError(f"mesh.fsdp={fsdp} must be >= 1 (1: no parameter sharding).")
  if data == -1:
    if num_devices % fsdp:
      raise ValueError(f"mesh.fsdp={fsdp} must divide the number of devices ({num_devices}).")
    data = num_devices // fsdp
  elif data < 1:
    raise ValueError(f"mesh.data={data} must be >= 1, or -1 for every device mesh.fsdp "
                     "leaves.")
  if data * fsdp != num_devices:
    raise ValueError(f"mesh.data={data} x mesh.fsdp={fsdp} = {data * fsdp} devices, but there "
                     f"are {num_devices}; set mesh.data=-1 to use every device.")
  return int(data), int(fsdp)


def make_mesh(devices: Sequence[jax.Device] | None = None,
              mesh_config: Mapping[str, Any] | None = None) -> jax.sharding.Mesh:
  """A ("data", "fsdp") mesh over `devices` (default: all devices of all processes).

  Auto axis types, so jit-ted code over sharded inputs needs no sharding annotations
  (`jax.make_mesh` defaults to Explicit axes, under which a sharded contraction is an error).
  `mesh_config`: `config.mesh` (see `mesh_shape`; None = pure data parallelism).
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(AXES),
                       devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """A full copy on every device (scalars, metrics; every parameter when fsdp = 1)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The sharding of batch arrays: leading axis split over every device, the rest whole."""
  return NamedSharding(mesh, P(AXES))


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh, process_count: int,
                     option: str) -> None:
  """Raises ValueError (naming `option`) unless the batch splits evenly over devices/hosts."""
  if global_batch_size <= 0:
    raise ValueError(f"{option}={global_batch_size} must be positive.")
  if global_batch_size % mesh.size:
    raise ValueError(
        f"{option}={global_batch_size} must be divisible by the number of devices "
        f"({mesh.size}); every device gets the same number of examples.")
  if global_batch_size % process_count:
    raise ValueError(
        f"{option}={global_batch_size} must be divisible by the number of processes "
        f"({process_count}); every process reads the same number of examples.")


def global_batch(local_batch: Any, mesh: jax.sharding.Mesh) -> Any:
  """Assembles each process's rows [b, ...] into global arrays [b * process_count, ...].

  Process p's local rows become rows [p*b, (p+1)*b) of the global array (jax's documented
  order for `make_array_from_process_local_data` with a leading-axis sharding), which is the
  layout the data pipelines produce.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)
