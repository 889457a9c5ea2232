"""Patch-grid positions, with the three scale conventions of the vision references."""
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from rope import _checks

SCALES = ("index", "unit", "pi", "center", "centered", "index_interp")
NORMALIZE = ("separate", "min", "max")


def _axis(n: int, n_train: int, scale: str, d: int = 0) -> np.ndarray:
  if scale == "index":   # rope-vit: integer patch indices, no normalisation.
    return np.arange(n, dtype=np.float32)
  if scale == "center":  # ComRoPE: patch centres (i + 0.5) / n, at every resolution.
    return ((np.arange(n, dtype=np.float32) + np.float32(0.5)) / np.float32(n)).astype(np.float32)
  if scale == "centered":  # DINOv3: arange(0.5, n) / d, then 2c - 1 (float32 as upstream).
    c = (np.arange(n, dtype=np.float32) + np.float32(0.5)) / np.float32(d)
    return (np.float32(2.0) * c - np.float32(1.0)).astype(np.float32)
  if scale == "index_interp":  # EVA-02 / timm ref_feat_shape: i / n * n_train (float32).
    return (np.arange(n, dtype=np.float32) / np.float32(n) * np.float32(n_train)).astype(np.float32)
  s = n / n_train
  if scale == "unit":    # LieRE: [0, n/n_train], i.e. [0, 1] at the training resolution.
    return np.linspace(0.0, s, n, dtype=np.float64).astype(np.float32)
  # "pi", Spherical-RoPE paper: [-s pi, s pi].
  return np.linspace(-s * np.pi, s * np.pi, n, dtype=np.float64).astype(np.float32)


def grid_positions(height: int, width: int, *, scale: str = "index",
                   train_size: Optional[Tuple[int, int]] = None,
                   normalize: str = "separate") -> jax.Array:
  """`(row, col)` positions of an `height x width` patch grid, row-major.

  Args:
    height, width: the grid (image size // patch size).
    scale: `"index"` integers `0..n-1` (rope-vit); `"unit"` `linspace(0, n/n_train, n)`
      (LieRE); `"pi"` `linspace(-s pi, s pi, n)` with `s = n/n_train` (Spherical RoPE);
      `"center"` `(i + 0.5) / n` (ComRoPE; `train_size` is ignored: the reference renormalises
      at every resolution); `"centered"` `2 (i + 0.5) / d - 1` (DINOv3, `d` set by `normalize`);
      `"index_interp"` `i * n_train / n` (EVA-02 / timm `ref_feat_shape` fine-tune
      interpolation). Spec: docs/spec/vision_ext.md §1.2, §2.1, §3.
    train_size: `(h_train, w_train)`, the grid of the training resolution (default: this grid);
      a larger grid then extends the positions (resolution extrapolation).
    normalize: `"centered"` only: `d` is each axis's own length (`"separate"`, DINOv3's
      default), `min(h, w)` (`"min"`) or `max(h, w)` (`"max"`) for both axes.

  Returns:
    float32 `[height * width, 2]`; token `r * width + c` is `(row_r, col_c)`.
  """
  rows, cols = _grid_axes(height, width, scale, train_size, normalize)
  grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)
  return jnp.asarray(grid.reshape(height * width, 2))


def grid_axes(height: int, width: int, *, scale: str = "index",
              train_size: Optional[Tuple[int, int]] = None,
              normalize: str = "separate") -> Tuple[jax.Array, jax.Array]:
  """The row and column coordinates of `grid_positions` (same arguments), `([h], [w])`.

  `grid_positions(h, w, ...)[r * w + c] == (rows[r], cols[c])`; feed them to
  `rope.grid_cos_sin` to compute a grid's tables from per-axis trig.
  """
  rows, cols = _grid_axes(height, width, scale, train_size, normalize)
  return jnp.asarray(rows), jnp.asarray(cols)


def _grid_axes(height, width, scale, train_size,
               normalize="separate") -> Tuple[np.ndarray, np.ndarray]:
  """Checked host (NumPy) coordinates: usable under jit with static sizes."""
  height = _checks.positive_int("height", height)
  width = _checks.positive_int("width", width)
  _checks.one_of("scale", scale, SCALES)
  _checks.one_of("normalize", normalize, NORMALIZE)
  if train_size is None:
    train_size = (height, width)
  if len(tuple(train_size)) != 2:
    raise ValueError(f"`train_size` must be (h_train, w_train), got {train_size!r}.")
  h_train = _checks.positive_int("train_size[0]", train_size[0])
  w_train = _checks.positive_int("train_size[1]", train_size[1])
  d_row, d_col = {"separate": (height, width), "min": (min(height, width),) * 2,
                  "max": (max(height, width),) * 2}[normalize]
  return _axis(height, h_train, scale, d_row), _axis(width, w_train, scale, d_col)
