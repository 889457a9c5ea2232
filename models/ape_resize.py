"""torch's bicubic resampling of a 2-D table, as fixed matrices (for absolute embeddings).

`F.interpolate(x, size, mode="bicubic", align_corners=False, antialias=...)` is separable: each
axis is a fixed `[n_out, n_in]` matrix that depends only on the two sizes. Ported checkpoints
(rope-vit / DeiT resize `pos_embed` with `antialias=False`; timm's `resample_abs_pos_embed`,
EVA-02, with `antialias=True`) only reproduce their numbers with torch's exact kernels, which
neither `jax.image.resize` (Keys a = -0.5, renormalised borders) nor any other library here
offers for the non-antialiased case: written by hand from ATen's UpSample kernels
(`upsample_bicubic2d`: a = -0.75, clamped border indices; `_upsample_bicubic2d_aa`: a = -0.5,
support widened by the scale when shrinking, taps cut at the border and renormalised).

The matrices are built with NumPy in float64 at trace time (the sizes are static) and applied
as two einsums in float32.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np

_A_PLAIN = -0.75   # torch upsample_bicubic2d (cubic_convolution1 / 2)
_A_AA = -0.5       # torch's antialiased bicubic filter (PIL's)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
  """Keys' cubic convolution kernel at distances `x`."""
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _plain_matrix(n_in: int, n_out: int) -> np.ndarray:
  """`[n_out, n_in]` of `antialias=False`: 4 taps at floor(src) - 1 .. + 2, indices clamped."""
  scale = n_in / n_out
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    # Not clamped at 0 for cubic (ATen area_pixel_compute_source_index).
    src = (i + 0.5) * scale - 0.5
    base = math.floor(src)
    t = src - base
    for offset, w in zip((-1, 0, 1, 2), _cubic(np.array([t + 1, t, 1 - t, 2 - t]), _A_PLAIN)):
      m[i, min(max(base + offset, 0), n_in - 1)] += w
  return m


def _aa_matrix(n_in: int, n_out: int) -> np.ndarray:
  """`[n_out, n_in]` of `antialias=True` (ATen `_compute_indices_min_size_weights_aa`)."""
  scale = n_in / n_out
  support = 2.0 * scale if scale >= 1.0 else 2.0
  inv = 1.0 / scale if scale >= 1.0 else 1.0
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    center = scale * (i + 0.5)
    lo = max(int(center - support + 0.5), 0)          # int(): truncation, as ATen's int64 cast
    hi = min(int(center + support + 0.5), n_in)
    j = np.arange(lo, hi)
    w = _cubic((j - center + 0.5) * inv, _A_AA)
    m[i, lo:hi] = w / w.sum() if w.sum() != 0 else 0.0
  return m


def resize_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
  """torch's bicubic (align_corners=False) resampling of one axis as `[n_out, n_in]` float64;
  the identity when `n_in == n_out`."""
  if n_in == n_out:
    return np.eye(n_in)
  return _aa_matrix(n_in, n_out) if antialias else _plain_matrix(n_in, n_out)


def resize_2d(table: jax.Array, grid: tuple[int, int], *, antialias: bool) -> jax.Array:
  """`[th, tw, C]` -> `[gh, gw, C]` float32, as torch's `F.interpolate` of the `[C, th, tw]`
  image to `(gh, gw)`, `mode="bicubic"`, `align_corners=False`, `antialias=antialias`."""
  rows = jnp.asarray(resize_matrix(table.shape[0], grid[0], antialias), jnp.float32)
  cols = jnp.asarray(resize_matrix(table.shape[1], grid[1], antialias), jnp.float32)
  table = table.astype(jnp.float32)
  return jnp.einsum("ai,bj,ijc->abc", rows, cols, table, precision=jax.lax.Precision.HIGHEST)
