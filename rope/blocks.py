"""Rotations that do not commute: LieRE (learned skew generators) and Spherical RoPE.

Both produce per-token block-diagonal rotations `[..., L, H|1, D/g, g, g]` applied by
`apply_blocks`: block `b` of a head is channels `b*g .. b*g+g-1`, multiplied as a column vector.
"""
import jax
import jax.numpy as jnp
import numpy as np

from rope import _checks
from rope import _kernels
from rope import comrope


def init_liere(key: jax.Array, num_axes: int, num_heads: int, head_dim: int,
               block_size: int = 8) -> jax.Array:
  """Raw LieRE generator parameters, drawn `U[0, 1) * 2pi` as upstream.

  Args:
    key: PRNG key.
    num_axes: A, position components (2 for images: row, col; 3 for video).
    num_heads: H.
    head_dim: D, divisible by `block_size`.
    block_size: g (2 gives RoPE-Mixed; 64 the dense LieRE_64).

  Returns:
    float32 `[A, H, D/g, g, g]`; only the strict upper triangle is used (`liere_generators`).
  """
  num_axes = _checks.positive_int("num_axes", num_axes)
  num_heads = _checks.positive_int("num_heads", num_heads)
  head_dim = _checks.positive_int("head_dim", head_dim)
  block_size = _checks.positive_int("block_size", block_size)
  if block_size < 2:
    raise ValueError(f"`block_size`={block_size} must be >= 2 (a rotation needs a plane).")
  _checks.divisible("head_dim", head_dim, block_size,
                    f"LieRE splits each head into blocks of block_size={block_size} channels")
  shape = (num_axes, num_heads, head_dim // block_size, block_size, block_size)
  return jax.random.uniform(key, shape, jnp.float32) * (2 * jnp.pi)


def liere_generators(params: jax.Array) -> jax.Array:
  """Skew-symmetric generators `S = triu(W, 1) - triu(W, 1)^T`, same shape as `params`."""
  upper = jnp.triu(params.astype(jnp.float32), 1)
  return upper - jnp.swapaxes(upper, -1, -2)


def liere_rotations(positions: jax.Array, params: jax.Array) -> jax.Array:
  """LieRE rotations `expm(sum_a positions[..., a] * S_a)` per token, head and block.

  Args:
    positions: `[..., L, A]`.
    params: raw generator parameters `[A, H, D/g, g, g]` (from `init_liere` or a checkpoint).

  Returns:
    float32 `[..., L, H, D/g, g, g]`, orthogonal; the identity at position 0.
  """
  positions = jnp.asarray(positions)
  params = jnp.asarray(params)
  _checks.square_blocks("params", params.shape, 5, "[A, H, D/g, g, g]")
  _checks.block_positions(positions.shape, "params", params.shape)
  # LieRE is the general commuting-or-not block exponential with its own generators.
  return comrope.skew_rotations(positions, liere_generators(params))   # [..., L, H, G, g, g]


def spherical_freqs(head_dim: int, theta: float = 100.0) -> jax.Array:
  """Spherical RoPE's fixed frequencies `theta ** (-2t / D)`, `t = 0..D/3-1`: `[D/3]`."""
  head_dim = _checks.positive_int("head_dim", head_dim)
  _checks.divisible("head_dim", head_dim, 3,
                    "Spherical RoPE rotates channel triplets (the paper uses 60 or 63)")
  exps = np.arange(head_dim // 3, dtype=np.float32) * np.float32(2.0) / np.float32(head_dim)
  return jnp.asarray((np.float32(theta) ** -exps).astype(np.float32))


def _spherical_angles(positions, freqs):
  """Returns (alpha, beta) `[..., L, H|1, D/3]`: alpha from row, beta from col."""
  positions = jnp.asarray(positions).astype(jnp.float32)
  freqs = jnp.asarray(freqs).astype(jnp.float32)
  if positions.ndim < 2 or positions.shape[-1] != 2:
    raise ValueError(f"`positions` must be [..., L, 2] (row, col), got {positions.shape}.")
  if freqs.ndim == 1:
    f_row = f_col = freqs[None]                                  # [1, T]
  elif freqs.ndim == 3 and freqs.shape[-1] == 2:
    f_row, f_col = freqs[..., 0], freqs[..., 1]                  # [H, T]
  else:
    raise ValueError(f"`freqs` must be [D/3] (fixed) or [H, D/3, 2] (learned, (row, col)), "
                     f"got shape {freqs.shape}.")
  row = positions[..., 0, None, None]                            # [..., L, 1, 1]
  col = positions[..., 1, None, None]
  return row * f_row, col * f_col


def spherical_rotations(positions: jax.Array, freqs: jax.Array) -> jax.Array:
  """Spherical RoPE: per channel triplet, two plane rotations about different axes.

  In triplet `t` (channels `3t, 3t+1, 3t+2` = (u, v, w)) `row` first turns the (u, w) plane by
  `alpha = f_row[t] * row`, then `col` turns the (v, w) plane by `beta = f_col[t] * col`:
  `R = M_u(beta) @ M_v(alpha)` (the authors' code; spec vision_rope.md §5.1).

  Args:
    positions: `[..., L, 2]` (row, col), usually `grid_positions(..., scale="pi")`.
    freqs: `[D/3]` fixed (`spherical_freqs`) or `[H, D/3, 2]` learned, last axis (row, col).

  Returns:
    float32 `[..., L, 1|H, D/3, 3, 3]`.
  """
  alpha, beta = _spherical_angles(positions, freqs)
  (ca, sa), (cb, sb) = _kernels.cos_sin(alpha), _kernels.cos_sin(beta)
  zero = jnp.zeros_like(ca)
  rows = [
      jnp.stack([ca, zero, -sa], -1),
      jnp.stack([-sb * sa, cb, -sb * ca], -1),
      jnp.stack([cb * sa, sb, cb * ca], -1),
  ]
  return jnp.stack(rows, -2)


def apply_blocks(x: jax.Array, rotations: jax.Array) -> jax.Array:
  """Multiplies each contiguous block of `g` channels by its `g x g` rotation: `R @ x_block`.

  Args:
    x: `[..., L, H, D]`.
    rotations: `[..., L, H|1, D/g, g, g]`; leading dims broadcast against `x`'s.

  Returns:
    Same shape and dtype as `x` (arithmetic in float32).
  """
  x = jnp.asarray(x)
  rotations = jnp.asarray(rotations)
  if x.ndim < 3:
    raise ValueError(f"`x` must be [..., L, H, D], got shape {x.shape}.")
  if rotations.ndim < 5 or rotations.shape[-1] != rotations.shape[-2]:
    raise ValueError(f"`rotations` must be [..., L, H|1, D/g, g, g], got {rotations.shape}.")
  l, h, d = x.shape[-3:]
  g, nb = rotations.shape[-1], rotations.shape[-3]
  if nb * g != d:
    raise ValueError(f"`rotations` has {nb} blocks of {g} channels = {nb * g}, but `x` has "
                     f"head_dim {d} (shapes {rotations.shape} vs {x.shape}).")
  if rotations.shape[-4] not in (1, h):
    raise ValueError(f"`rotations` has {rotations.shape[-4]} heads but `x` has {h}; use 1 or H.")
  if rotations.shape[-5] != l:
    raise ValueError(f"`rotations` covers {rotations.shape[-5]} tokens but `x` has {l}.")
  xb = x.astype(jnp.float32).reshape(x.shape[:-1] + (nb, g))          # [..., L, H, G, g]
  y = _kernels.rotate_blocks(xb, rotations.astype(jnp.float32))
  return y.reshape(y.shape[:-2] + (d,)).astype(x.dtype)
