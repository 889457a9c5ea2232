"""The device mesh and the shardings of pure data parallelism.

One mesh axis, "data", spans every device of every process. Parameters and optimizer state
are replicated; batches are split along their leading (example) axis. Each process supplies
only its own rows of the global batch (`global_batch`), as multi-host input pipelines do.
"""
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A 1-axis ("data") mesh over `devices` (default: all devices of all processes).

  Auto axis types, so jit-ted code over a batch-sharded input needs no sharding annotations
  (`jax.make_mesh` defaults to Explicit axes, under which a sharded contraction is an error).
  """
  devices = jax.devices() if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The sharding of parameters, optimizer state and scalars: a full copy on every device."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The sharding of batch arrays: leading axis split over "data", the rest whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


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
