"""Angles from positions and their application to queries / keys (commuting variants)."""
from typing import Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from rope import _checks
from rope import _kernels

LAYOUTS = ("half", "interleaved")


def angles(positions: jax.Array, freqs: jax.Array) -> jax.Array:
  """Rotation angles `angle[..., l, h, j] = sum_p positions[..., l, p] * freqs[h, j, p]`.

  Computed as a float32 broadcast multiply + sum, never a reduced-precision `dot`: on TPU or
  recent GPUs a default-precision matmul would round the positions and cost up to ~0.1 rad.

  Args:
    positions: `[..., L, P]`.
    freqs: `[D/2, P]` (shared by all heads) or `[H, D/2, P]` (per head).

  Returns:
    float32 `[..., L, 1, D/2]` for a shared table, `[..., L, H, D/2]` for a per-head one.
  """
  positions = jnp.asarray(positions)
  freqs = jnp.asarray(freqs)
  _checks.ndim_in("freqs", freqs.shape, (2, 3), "[D/2, P] or [H, D/2, P]")
  _checks.ndim_in("positions", positions.shape, range(2, 99), "[..., L, P]")
  if positions.shape[-1] != freqs.shape[-1]:
    raise ValueError(
        f"`positions` has {positions.shape[-1]} components per token (shape "
        f"{positions.shape}) but `freqs` expects {freqs.shape[-1]} (shape {freqs.shape}); the "
        f"last axes must match.")
  if freqs.ndim == 2:
    freqs = freqs[None]                                              # [1, D/2, P]
  pos = positions.astype(jnp.float32)[..., None, None, :]           # [..., L, 1, 1, P]
  freqs = freqs.astype(jnp.float32)
  # Unrolled over the (static, small) P rather than `jnp.sum(pos * freqs, -1)`: XLA:CPU may turn
  # the broadcast product into a separate [..., L, H, D/2, P] array and reduce it with a slow
  # minor-axis kernel (measured 40x slower with two position sets in one step). Same sum order,
  # bit-identical.
  out = pos[..., 0] * freqs[..., 0]
  for p in range(1, freqs.shape[-1]):
    out = out + pos[..., p] * freqs[..., p]
  return out                                                       # [..., L, 1|H, D/2]


def grid_cos_sin(axes: Sequence[jax.Array], freqs: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """`cos` and `sin` of `angles` on a product grid, from trig of each axis alone.

  For positions that form a grid (`grid_positions`, video `t x h x w`), the angle of token
  `(r, c)` is `a_r + b_c`, so `cos = cos a cos b - sin a sin b` and `sin = sin a cos b +
  cos a sin b`: trig on `h + w` coordinates instead of `h * w` tokens (trig costs ~20
  multiply-adds per entry on CPU, `rope/_cpu.py`, and dominated learned per-head tables).
  Equal to `cos / sin(angles(grid, freqs))` up to float32 rounding (~1e-7 absolute; the sum
  `a + b` is not rounded first, so large angles come out slightly more accurate).

  Args:
    axes: P 1-D coordinate arrays `[n_1], ..., [n_P]`, e.g. `grid_axes(h, w)`; the grid is
      row-major (the last axis varies fastest), as `grid_positions`.
    freqs: `[D/2, P]` (shared) or `[H, D/2, P]` (per head).

  Returns:
    float32 `(cos, sin)`, each `[n_1 * ... * n_P, 1|H, D/2]`: products of materialised
    per-axis trig, cheap enough to pass to `apply_cos_sin(..., materialize=False)`.
  """
  freqs = jnp.asarray(freqs)
  _checks.ndim_in("freqs", freqs.shape, (2, 3), "[D/2, P] or [H, D/2, P]")
  axes = [jnp.asarray(a) for a in axes]
  if len(axes) != freqs.shape[-1] or any(a.ndim != 1 for a in axes):
    raise ValueError(f"`axes` must be {freqs.shape[-1]} 1-D coordinate arrays (one per position "
                     f"component of `freqs` {freqs.shape}), got shapes "
                     f"{[tuple(a.shape) for a in axes]}.")
  if freqs.ndim == 2:
    freqs = freqs[None]                                              # [1, D/2, P]
  freqs = freqs.astype(jnp.float32)
  cos = sin = None
  for p, coord in enumerate(axes):
    a = coord.astype(jnp.float32)[:, None, None] * freqs[..., p]     # [n_p, 1|H, D/2]
    # A table: on CPU materialised, or XLA:CPU recomputes the trig for every token it is
    # combined into.
    cp, sp = _kernels.cos_sin(a, table=True)
    if cos is None:
      cos, sin = cp, sp
      continue
    n = cos.shape[0] * cp.shape[0]
    cos, sin = ((cos[:, None] * cp[None] - sin[:, None] * sp[None]).reshape((n,) + cp.shape[1:]),
                (sin[:, None] * cp[None] + cos[:, None] * sp[None]).reshape((n,) + cp.shape[1:]))
  return cos, sin


def _check_apply(x_shape, angles_shape, layout):
  _checks.one_of("layout", layout, LAYOUTS)
  if len(x_shape) < 3:
    raise ValueError(f"`x` must be [..., L, H, D], got shape {tuple(x_shape)}.")
  d = x_shape[-1]
  _checks.divisible("x.shape[-1] (head_dim)", d, 2, "channels rotate in pairs")
  if len(angles_shape) < 3 or angles_shape[-1] != d // 2:
    raise ValueError(f"`angles` must be [..., L, 1|H, D/2] = [..., L, 1|H, {d // 2}] for `x` of "
                     f"shape {tuple(x_shape)}, got {tuple(angles_shape)}.")
  if angles_shape[-2] not in (1, x_shape[-2]):
    raise ValueError(f"`angles` has {angles_shape[-2]} heads but `x` has {x_shape[-2]}; "
                     f"use 1 (shared) or H.")
  if angles_shape[-3] != x_shape[-3]:
    raise ValueError(f"`angles` covers {angles_shape[-3]} tokens but `x` has {x_shape[-3]} "
                     f"(shapes {tuple(angles_shape)} vs {tuple(x_shape)}).")


def _resolve_rotary_dim(x_shape, angles_shape, rotary_dim, table="angles") -> int:
  """`rotary_dim` checked against `x` and `angles` (default: `2 * angles.shape[-1]`); `table`
  names the table argument in errors."""
  if len(x_shape) < 3:
    raise ValueError(f"`x` must be [..., L, H, D], got shape {tuple(x_shape)}.")
  if len(angles_shape) < 1:
    raise ValueError(f"`{table}` must be [..., L, 1|H, rotary_dim/2], got {tuple(angles_shape)}.")
  d = x_shape[-1]
  if rotary_dim is None:
    rotary_dim = 2 * angles_shape[-1]
    if rotary_dim > d:
      raise ValueError(f"`{table}` must be [..., L, 1|H, D/2] = [..., L, 1|H, {d // 2}] (or "
                       f"fewer pairs, for partial rotation) for `x` of shape {tuple(x_shape)}, "
                       f"got {tuple(angles_shape)}.")
    return rotary_dim
  if not isinstance(rotary_dim, int) or isinstance(rotary_dim, bool):
    raise ValueError(f"`rotary_dim` must be an int, got {rotary_dim!r}.")
  if rotary_dim < 2 or rotary_dim % 2 or rotary_dim > d:
    raise ValueError(f"`rotary_dim`={rotary_dim} must be even and in [2, D={d}] (channels rotate "
                     f"in pairs inside x[..., :rotary_dim]).")
  if angles_shape[-1] != rotary_dim // 2:
    raise ValueError(f"`rotary_dim`={rotary_dim} needs `{table}` with rotary_dim/2 = "
                     f"{rotary_dim // 2} pairs, got {tuple(angles_shape)}.")
  return rotary_dim


def apply(x: jax.Array, angles: jax.Array, *, layout: str = "half",
          rotary_dim: Optional[int] = None, amplitude=1.0) -> jax.Array:
  """Rotates each channel pair of `x` by its angle.

  Args:
    x: queries or keys `[..., L, H, D]`, any float dtype.
    angles: `[..., L, 1|H, rotary_dim/2]` from `angles(...)`; leading dims broadcast against
      `x`'s.
    layout: `"half"` pairs channel `j` with `j + rotary_dim/2` (HF / Qwen rotate-half);
      `"interleaved"` pairs `2j` with `2j+1` (RoFormer, rope-vit).
    rotary_dim: the channels rotated, `x[..., :rotary_dim]` (pairs formed inside that slice);
      `x[..., rotary_dim:]` passes through unchanged (GPT-NeoX / Qwen3.5 partial rotary).
      Default `2 * angles.shape[-1]` (all of `D` for a full table).
    amplitude: multiplies the rotated channels (YaRN / FiT attention scale); a float or a
      float32 scalar array.

  Returns:
    `x` rotated, same shape and dtype (arithmetic in float32).
  """
  x = jnp.asarray(x)
  angles = jnp.asarray(angles)
  rotary_dim = _resolve_rotary_dim(x.shape, angles.shape, rotary_dim)
  _check_apply(x.shape[:-1] + (rotary_dim,), angles.shape, layout)
  cos, sin = _kernels.cos_sin(angles.astype(jnp.float32))
  if not (isinstance(amplitude, (int, float)) and amplitude == 1):
    amplitude = jnp.asarray(amplitude, jnp.float32)
    cos, sin = cos * amplitude, sin * amplitude
  return apply_cos_sin(x, cos, sin, layout=layout, rotary_dim=rotary_dim)


def partial_rotary_dim(head_dim: int, factor: float) -> int:
  """HF's rotary dim for `partial_rotary_factor`: `int(head_dim * factor)`, rounded down to even.

  E.g. Qwen3.5's `partial_rotary_dim(256, 0.25) == 64`.
  """
  if not isinstance(head_dim, int) or head_dim < 2:
    raise ValueError(f"`head_dim` must be an int >= 2, got {head_dim!r}.")
  if not 0 < factor <= 1:
    raise ValueError(f"`factor`={factor!r} must be in (0, 1].")
  dim = int(head_dim * factor)
  dim -= dim % 2
  if dim < 2:
    raise ValueError(f"`factor`={factor!r} leaves fewer than 2 of head_dim={head_dim} channels "
                     f"to rotate.")
  return dim


def apply_cos_sin(x: jax.Array, cos: jax.Array, sin: jax.Array, *,
                  layout: str = "half", rotary_dim: Optional[int] = None,
                  materialize: bool = True) -> jax.Array:
  """`apply` with precomputed `cos(angles)`, `sin(angles)` (each `[..., L, 1|H, D/2]`).

  Use this when the same angles serve many calls (every layer, q and k): the tables are then
  computed once instead of being fused into every application.

  Args:
    x, layout: as `apply`.
    cos, sin: the tables, `[..., L, 1|H, rotary_dim/2]`.
    rotary_dim: as `apply` (default `2 * cos.shape[-1]`): `x[..., rotary_dim:]` passes
      through, joined to the rotated channels in the same pass on CPU
      (`_kernels.concat_channels`).
    materialize: on CPU, compute the tables as their own kernel before the rotation reads
      them (the default; no effect when lowering for TPU / GPU). Needed when they contain
      trig, which XLA:CPU would otherwise recompute for every batch element and head. Pass
      False for tables that are cheap products of small materialised ones, such as
      `grid_cos_sin`'s (4 multiplies per entry): XLA then forms them inside the rotation
      instead of writing a `[L, H, D/2]` table and re-reading it for every batch element
      (per-head tables on [8, 1024, 6, 64]: 0.87 ms instead of 1.98 ms; bit-identical).
  """
  x = jnp.asarray(x)
  cos, sin = jnp.asarray(cos, jnp.float32), jnp.asarray(sin, jnp.float32)
  rotary_dim = _resolve_rotary_dim(x.shape, cos.shape, rotary_dim, table="cos")
  _check_apply(x.shape[:-1] + (rotary_dim,), cos.shape, layout)
  dtype = x.dtype
  xf = x[..., :rotary_dim].astype(jnp.float32)
  rotated = _kernels.rotate_pairs(xf, cos, sin, layout=layout,
                                  materialize=materialize).astype(dtype)
  if rotary_dim == x.shape[-1]:
    return rotated
  return _kernels.concat_channels([rotated, x[..., rotary_dim:]])
