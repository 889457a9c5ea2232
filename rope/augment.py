"""Prefix tokens and training-time position augmentations (DINOv3, ComRoPE).

The transforms take their random values as arguments (`augment_positions`,
`perturb_positions`) and the samplers draw them with a JAX key, so a training step can log or
replay the draws and tests can feed the values a reference stored. Math and sources:
docs/spec/vision_ext.md §1.2 (ComRoPE) and §2.2 (DINOv3).
"""
import math
import numbers
from typing import Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from rope import _checks


def _non_negative_int(name, value) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
    raise ValueError(f"`{name}` must be a non-negative integer, got {value!r}.")
  return int(value)


def _positions(positions) -> jax.Array:
  positions = jnp.asarray(positions)
  if positions.ndim < 2:
    raise ValueError(f"`positions` must be [..., L, P], got shape {positions.shape}.")
  return positions.astype(jnp.float32)


def with_prefix(positions: jax.Array, num_prefix: int, *, value=0.0) -> jax.Array:
  """Prepends `num_prefix` rows equal to `value` (class / register tokens).

  `value=0.` is the identity rotation for every variant here (the way to keep cls and
  registers unrotated with one table); `0.5` is ComRoPE's class token at the image centre.

  Args:
    positions: `[..., L, P]`.
    num_prefix: number of rows to prepend (0 returns `positions` as float32).
    value: a float, or `[P]` (one value per component).

  Returns:
    float32 `[..., num_prefix + L, P]`.
  """
  positions = _positions(positions)
  num_prefix = _non_negative_int("num_prefix", num_prefix)
  value = jnp.asarray(value, jnp.float32)
  if value.ndim > 1 or (value.ndim == 1 and value.shape[0] != positions.shape[-1]):
    raise ValueError(f"`value` must be a scalar or [P] = [{positions.shape[-1]}], got shape "
                     f"{value.shape}.")
  prefix = jnp.broadcast_to(value, positions.shape[:-2] + (num_prefix, positions.shape[-1]))
  return jnp.concatenate([prefix, positions], axis=-2)


def _per_axis(name, v, num_axes, last):
  v = jnp.asarray(v, jnp.float32)
  if v.ndim == 0 or v.shape[-1] not in (1, last):
    raise ValueError(f"`{name}` must be [..., {last}] (one value per position component"
                     f"{' or one shared value' if last != 1 else ''}), got shape {v.shape}.")
  return v[..., None, :]     # broadcast over the token axis


def augment_positions(positions: jax.Array, *, shift=None, jitter=None,
                      rescale=None) -> jax.Array:
  """DINOv3's training transform with given values: `((positions + shift) * jitter) * rescale`.

  Apply it to the patch coordinates only (`grid_positions(..., scale="centered")`), before
  `with_prefix`; DINOv3 draws new values for every block call (docs/spec/vision_ext.md §2.2).

  Args:
    positions: `[..., L, P]`.
    shift: `[..., P]` added (None: no shift).
    jitter: `[..., P]` multiplied, per axis (None: 1).
    rescale: `[..., 1]` multiplied, shared by the axes (None: 1).

  Returns:
    float32 `[..., L, P]`.
  """
  positions = _positions(positions)
  p = positions.shape[-1]
  if shift is not None:
    positions = positions + _per_axis("shift", shift, p, p)
  if jitter is not None:
    positions = positions * _per_axis("jitter", jitter, p, p)
  if rescale is not None:
    positions = positions * _per_axis("rescale", rescale, p, 1)
  return positions


def _strength(name, value, minimum):
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise ValueError(f"`{name}` must be a finite float or None, got {value!r}.")
  if value < minimum:
    raise ValueError(f"`{name}`={value!r} must be >= {minimum}.")
  return float(value)


def sample_position_augment(key: jax.Array, *, shift: Optional[float] = None,
                            jitter: Optional[float] = None, rescale: Optional[float] = None,
                            num_axes: int = 2) -> Dict[str, Optional[jax.Array]]:
  """Draws DINOv3's augmentation values (its `shift_coords`, `jitter_coords`, `rescale_coords`).

  `shift` `U(-s, s)` per axis, `jitter` `exp(U(-ln J, ln J))` per axis, `rescale`
  `exp(U(-ln R, ln R))` shared by the axes; a strength of None turns that part off.

  Args:
    key: PRNG key.
    shift, jitter, rescale: the strengths `s >= 0`, `J >= 1`, `R >= 1` (Python floats).
    num_axes: P.

  Returns:
    `{"shift": [P] | None, "jitter": [P] | None, "rescale": [1] | None}`, float32, ready for
    `augment_positions(positions, **values)`.
  """
  num_axes = _checks.positive_int("num_axes", num_axes)
  s = _strength("shift", shift, 0.0)
  j = _strength("jitter", jitter, 1.0)
  r = _strength("rescale", rescale, 1.0)
  k_shift, k_jitter, k_rescale = jax.random.split(key, 3)
  out = {"shift": None, "jitter": None, "rescale": None}
  if s is not None:
    out["shift"] = jax.random.uniform(k_shift, (num_axes,), jnp.float32, -s, s)
  if j is not None:
    lj = math.log(j)
    out["jitter"] = jnp.exp(jax.random.uniform(k_jitter, (num_axes,), jnp.float32, -lj, lj))
  if r is not None:
    lr = math.log(r)
    out["rescale"] = jnp.exp(jax.random.uniform(k_rescale, (1,), jnp.float32, -lr, lr))
  return out


def perturb_positions(positions: jax.Array, perturbation: jax.Array, offset: jax.Array, *,
                      num_prefix: int = 1, grid: Sequence[int]) -> jax.Array:
  """ComRoPE's training perturbation with given values (docs/spec/vision_ext.md §1.2).

  Patch rows (after the first `num_prefix`) get `clip(perturbation, -0.5, 0.5) / grid` added
  (the perturbation is in patch units, the positions in `(i + 0.5) / n` units); every row,
  prefix included, gets `offset`.

  Args:
    positions: `[..., num_prefix + N, A]`, e.g.
      `with_prefix(grid_positions(h, w, scale="center"), 1, value=0.5)`.
    perturbation: `[..., N, A]` in patch units.
    offset: `[..., A]`, one global shift per axis.
    num_prefix: leading rows that are not patches (not perturbed).
    grid: `A` patch counts, e.g. `(h, w)`, that divide the perturbation.

  Returns:
    float32 `[..., num_prefix + N, A]`.
  """
  positions = _positions(positions)
  num_prefix = _non_negative_int("num_prefix", num_prefix)
  a = positions.shape[-1]
  grid = tuple(grid)
  if len(grid) != a:
    raise ValueError(f"`grid`={grid!r} must give one patch count per position component "
                     f"({a}).")
  for i, n in enumerate(grid):
    _checks.positive_int(f"grid[{i}]", n)
  perturbation = jnp.asarray(perturbation, jnp.float32)
  n = positions.shape[-2] - num_prefix
  if perturbation.ndim < 2 or perturbation.shape[-2:] != (n, a):
    raise ValueError(f"`perturbation` must be [..., N, A] = [..., {n}, {a}] (the rows after "
                     f"num_prefix={num_prefix}), got shape {perturbation.shape}.")
  offset = jnp.asarray(offset, jnp.float32)
  if offset.ndim < 1 or offset.shape[-1] != a:
    raise ValueError(f"`offset` must be [..., A] = [..., {a}], got shape {offset.shape}.")
  delta = jnp.clip(perturbation, -0.5, 0.5) / jnp.asarray(grid, jnp.float32)
  delta = jnp.concatenate(
      [jnp.zeros(delta.shape[:-2] + (num_prefix, a), jnp.float32), delta], axis=-2)
  return positions + delta + offset[..., None, :]


def sample_comrope_perturbation(key: jax.Array, num_patches: int, *, intensity: float,
                                offset_intensity: float,
                                num_axes: int = 2) -> Tuple[jax.Array, jax.Array]:
  """Draws ComRoPE's training perturbation (`CustomVITConfig.get_positions`).

  Args:
    key: PRNG key.
    num_patches: N.
    intensity: `perturbation_intensity` sigma >= 0 (patch units).
    offset_intensity: `offset_intensity` >= 0.
    num_axes: A.

  Returns:
    `(perturbation [N, A] = clip(0.5 * intensity * N(0, 1), -0.5, 0.5),
    offset [A] = offset_intensity * N(0, 1))`, float32, for `perturb_positions`. (The video
    reference never perturbs the frame axis: zero that column yourself.)
  """
  num_patches = _checks.positive_int("num_patches", num_patches)
  num_axes = _checks.positive_int("num_axes", num_axes)
  intensity = _strength("intensity", intensity, 0.0)
  offset_intensity = _strength("offset_intensity", offset_intensity, 0.0)
  if intensity is None or offset_intensity is None:
    raise ValueError("`intensity` and `offset_intensity` must be floats >= 0 (0 turns a part "
                     "off), not None.")
  k_p, k_o = jax.random.split(key)
  perturbation = jnp.clip(
      0.5 * intensity * jax.random.normal(k_p, (num_patches, num_axes), jnp.float32), -0.5, 0.5)
  offset = offset_intensity * jax.random.normal(k_o, (num_axes,), jnp.float32)
  return perturbation, offset
