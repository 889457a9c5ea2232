"""Spherical RoPE applied as two rounds of plane rotations, without 3 x 3 matrices.

`spherical_rotations` + `apply_blocks` is the reference form: a `[L, H|1, D/3, 3, 3]` table
of matrices, 9 entries per 3 channels. This module computes the same rotation from the four
tables `cos / sin alpha`, `cos / sin beta` (each `[L, H|1, D/3]`): in triplet `(u, v, w)`,

  t  = sin(a) u + cos(a) w                    (row turns the (u, w) plane by alpha)
  u' = cos(a) u - sin(a) w
  v' = cos(b) v - sin(b) t                    (col turns the (v, w') plane by beta)
  w' = sin(b) v + cos(b) t

which is `R = M_u(beta) @ M_v(alpha)` of `spherical_rotations` (equal up to float32 rounding:
the products are grouped differently). On CPU it is several times faster: the tables are 4/9 the size
(per-head learned tables are as large as a batch element of q), the trig runs per grid axis
(`spherical_grid_cos_sin`), and `layout="thirds"` reads whole contiguous runs of channels
instead of stride-3 triplets (the ViT emits q / k in that order, `models.vit.to_strided`).
"""
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp

from rope import _checks
from rope import _kernels
from rope import blocks

LAYOUTS = ("interleaved", "thirds")
Tables = Tuple[jax.Array, jax.Array, jax.Array, jax.Array]


def spherical_cos_sin(positions: jax.Array, freqs: jax.Array) -> Tables:
  """`(cos alpha, sin alpha, cos beta, sin beta)` of `spherical_rotations`' angles.

  Args:
    positions: `[..., L, 2]` (row, col).
    freqs: `[D/3]` fixed or `[H, D/3, 2]` learned, last axis (row, col).

  Returns:
    float32, each `[..., L, 1|H, D/3]` (materialised on CPU: they contain trig).
  """
  alpha, beta = blocks._spherical_angles(positions, freqs)
  return _kernels.cos_sin(alpha, table=True) + _kernels.cos_sin(beta, table=True)


def spherical_grid_cos_sin(axes: Sequence[jax.Array], freqs: jax.Array) -> Tables:
  """`spherical_cos_sin` of a row-major grid, with trig of each axis alone.

  alpha depends only on the row and beta only on the column, so the tables of the `h * w`
  tokens are broadcasts of `h` (resp. `w`) rows of trig. The broadcasts are left unmaterialised:
  pass them to `apply_spherical(..., materialize=False)`.

  Args:
    axes: `(rows [h], cols [w])`, e.g. `grid_axes(h, w, scale="pi")`.
    freqs: `[D/3]` or `[H, D/3, 2]`.

  Returns:
    float32, each `[h * w, 1|H, D/3]`.
  """
  if len(axes) != 2 or any(jnp.ndim(a) != 1 for a in axes):
    raise ValueError(f"`axes` must be (rows, cols), two 1-D arrays, got shapes "
                     f"{[tuple(jnp.shape(a)) for a in axes]}.")
  rows, cols = (jnp.asarray(a, jnp.float32) for a in axes)
  h, w = rows.shape[0], cols.shape[0]
  # Positions (row, 0) and (0, col): the angles of each axis alone, as `_spherical_angles`.
  alpha, _ = blocks._spherical_angles(jnp.stack([rows, jnp.zeros_like(rows)], -1), freqs)
  _, beta = blocks._spherical_angles(jnp.stack([jnp.zeros_like(cols), cols], -1), freqs)
  ca, sa, cb, sb = _kernels.cos_sin(alpha, table=True) + _kernels.cos_sin(beta, table=True)
  over_cols = lambda t: jnp.broadcast_to(t[:, None], (h, w) + t.shape[1:]).reshape(
      (h * w,) + t.shape[1:])
  over_rows = lambda t: jnp.broadcast_to(t[None], (h, w) + t.shape[1:]).reshape(
      (h * w,) + t.shape[1:])
  return over_cols(ca), over_cols(sa), over_rows(cb), over_rows(sb)


def apply_spherical(x: jax.Array, tables: Tables, *, layout: str = "interleaved",
                    materialize: bool = True) -> jax.Array:
  """Applies Spherical RoPE from its four tables: `apply_blocks(x, spherical_rotations(...))`.

  Args:
    x: `[..., L, H, D]`, D divisible by 3.
    tables: `(cos alpha, sin alpha, cos beta, sin beta)`, each `[..., L, 1|H, D/3]`, from
      `spherical_cos_sin` or `spherical_grid_cos_sin`.
    layout: `"interleaved"`: triplet `t` is channels `(3t, 3t+1, 3t+2)` (the reference);
      `"thirds"`: `(t, t + D/3, t + 2D/3)`, for channels reordered by `models.vit.to_strided`.
    materialize: on CPU, compute the tables as their own kernel first (default; see
      `rope.apply_cos_sin`; no effect on TPU / GPU). False lets XLA form cheap tables (`spherical_grid_cos_sin`'s
      broadcasts) inside the rotation.

  Returns:
    Same shape and dtype as `x` (arithmetic in float32).
  """
  x = jnp.asarray(x)
  _checks.one_of("layout", layout, LAYOUTS)
  if x.ndim < 3:
    raise ValueError(f"`x` must be [..., L, H, D], got shape {x.shape}.")
  if len(tables) != 4:
    raise ValueError(f"`tables` must be (cos alpha, sin alpha, cos beta, sin beta), got "
                     f"{len(tables)} arrays.")
  l, h, d = x.shape[-3:]
  _checks.divisible("x.shape[-1] (head_dim)", d, 3, "Spherical RoPE rotates channel triplets")
  for name, t in zip(("cos alpha", "sin alpha", "cos beta", "sin beta"), tables):
    if t.ndim < 3 or t.shape[-1] != d // 3 or t.shape[-2] not in (1, h) or t.shape[-3] != l:
      raise ValueError(f"`tables` ({name}) must be [..., L, 1|H, D/3] = [..., {l}, 1|{h}, "
                       f"{d // 3}] for `x` of shape {x.shape}, got {tuple(t.shape)}.")
  tables = [jnp.asarray(t, jnp.float32) for t in tables]
  return _kernels.rotate_spherical(x.astype(jnp.float32), *tables, layout=layout,
                                   materialize=materialize).astype(x.dtype)
