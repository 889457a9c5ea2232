"""Where the train state lives on the mesh: parameters and optimizer state over "fsdp".

Every model parameter carries logical axis names (models/vit.py and models/vlm.py
`LOGICAL_AXES`, boxed with `nn.with_logical_partitioning`); `FSDP_RULES` maps them onto the
mesh axis "fsdp" with Flax's logical-axis rules (`flax.linen.logical_to_mesh_axes`, as
big_vision / MaxText do): the first rule whose logical name an array has, and whose mesh axis
the array does not use yet, splits that dimension. So a kernel [embed, mlp] is split along
"embed", a bias [mlp] along "mlp", and a parameter with neither name (LayerNorm of a
non-"embed" width, position frequencies [heads, rotary, position], ...) stays whole. Every
array is replicated over "data".

Non-divisible dimensions (the choice this module makes): a dimension whose size the fsdp
axis does not divide is not split; the rules are applied again without its name, so the next
matching dimension may be split instead, and a parameter no dimension of which divides stays
replicated. `param_shardings` returns the names of those parameters so the loop can log them.
Raising instead would refuse models whose odd-sized leaves (a 10-class head, 3 heads) hold
a negligible share of the bytes; the log line says how many bytes stay replicated.

The optimizer state mirrors the parameters: every leaf of a parameter-shaped subtree (Adam /
LAMB moments) takes its parameter's sharding, every other leaf (step counts) is replicated
(`optax.tree_map_params`). `jax.jit` with these in/out shardings then makes XLA all-gather
each parameter where it is used and reduce-scatter its gradient, i.e. FSDP (ZeRO-3), while
the batch stays split over ("data", "fsdp").
"""
from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from trainer import mesh as mesh_lib

# (logical axis name, mesh axis), in order of precedence (see the module docstring). "embed"
# (the residual width) is in nearly every weight matrix; "mlp" and "vocab" catch the biases of
# the MLP and a vocabulary-sized table or bias without an "embed" dimension.
FSDP_RULES = (
    ("embed", mesh_lib.FSDP_AXIS),
    ("mlp", mesh_lib.FSDP_AXIS),
    ("vocab", mesh_lib.FSDP_AXIS),
)


def _path_name(path: tuple) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def mesh_spec(logical: P, shape: tuple[int, ...], axis_sizes: dict[str, int],
              rules=FSDP_RULES) -> P:
  """The mesh PartitionSpec of one array from its logical PartitionSpec and shape.

  Args:
    logical: one logical axis name (or None) per dimension, e.g. P("embed", "mlp"); P() for
      an array without names (replicated).
    shape: the array's shape.
    axis_sizes: {mesh axis name: size}.
    rules: (logical name, mesh axis) pairs in order of precedence.

  Returns:
    A PartitionSpec with a mesh axis (or None) per dimension; every split dimension is
    divisible by its mesh axis size (dimensions that are not lose their logical name, and the
    rules are applied again).
  """
  names = list(logical) + [None] * (len(shape) - len(logical))
  while True:
    spec = tuple(nn.logical_to_mesh_axes(names, rules))
    bad = [i for i, axis in enumerate(spec)
           if axis is not None and shape[i] % int(np.prod(
               [axis_sizes[a] for a in ((axis,) if isinstance(axis, str) else axis)]))]
    if not bad:
      return P(*spec)
    for i in bad:
      names[i] = None


def param_shardings(logical_specs: Any, shapes: Any, mesh: jax.sharding.Mesh,
                    rules=FSDP_RULES) -> tuple[Any, list[str]]:
  """NamedShardings of the parameters, and the names of those left whole on a split mesh.

  Args:
    logical_specs: pytree of logical PartitionSpecs, one per parameter (a Task's
      `param_logical_specs()`).
    shapes: the same pytree of arrays or `jax.ShapeDtypeStruct`s.
    mesh: the ("data", "fsdp") mesh.
    rules: logical-to-mesh rules (default `FSDP_RULES`).

  Returns:
    (shardings pytree, ["path/of/param", ...] of parameters not split over a mesh axis of
    size > 1 although they have a dimension with a rule's logical name, because no such
    dimension is divisible).
  """
  sizes = dict(mesh.shape)
  flat_specs = jax.tree.leaves(logical_specs, is_leaf=lambda x: isinstance(x, P))
  flat_shapes, treedef = jax.tree_util.tree_flatten_with_path(shapes)
  if len(flat_specs) != len(flat_shapes):
    raise ValueError(f"{len(flat_specs)} logical specs for {len(flat_shapes)} parameters.")
  ruled = {name for name, _ in rules}
  shardings, unsplit = [], []
  for (path, leaf), logical in zip(flat_shapes, flat_specs):
    spec = mesh_spec(logical, tuple(leaf.shape), sizes, rules)
    shardings.append(NamedSharding(mesh, spec))
    wanted = {a for name, a in rules if name in tuple(logical)}
    if ruled & set(logical) and any(sizes[a] > 1 for a in wanted) and not any(spec):
      unsplit.append(_path_name(path))
  return jax.tree_util.tree_unflatten(treedef, shardings), unsplit


def state_shardings(abstract_state: Any, params_sharding: Any, tx: optax.GradientTransformation,
                    mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """Shardings of the train state {"params", "opt_state", "step", "rng"} (trainer/step.py).

  Optimizer-state leaves inside parameter-shaped subtrees take their parameter's sharding;
  the rest (counts, the step, the rng) are replicated.
  """
  replicated = mesh_lib.replicated(mesh)
  opt = optax.tree_map_params(
      tx, lambda _, s: s, abstract_state["opt_state"], params_sharding,
      transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, NamedSharding))
  return {"params": params_sharding, "opt_state": opt,
          "step": replicated, "rng": replicated}


def bytes_per_device(tree: Any) -> dict[jax.Device, int]:
  """{device: bytes of `tree`'s arrays stored on it} (addressable shards only)."""
  out: dict[jax.Device, int] = {}
  for x in jax.tree.leaves(tree):
    for shard in x.addressable_shards:
      out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
  return out
