"""Patch-grid positions, with the three scale conventions of the vision references."""
from typing import Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from rope import _checks

SCALES = ("index", "unit", "pi")


def _axis(n: int, n_train: int, scale: str) -> np.ndarray:
  if scale == "index":   # rope-vit: integer patch indices, no normalisation.
    return np.arange(n, dtype=np.float32)
  s = n / n_train
  if scale == "unit":    # LieRE: [0, n/n_train], i.e. [0, 1] at the training resolution.
    return np.linspace(0.0, s, n, dtype=np.float64).astype(np.float32)
  # "pi", Spherical-RoPE paper: [-s pi, s pi].
  return np.linspace(-s * np.pi, s * np.pi, n, dtype=np.float64).astype(np.float32)


def grid_positions(height: int, width: int, *, scale: str = "index",
                   train_size: Optional[Tuple[int, int]] = None) -> jax.Array:
  """`(row, col)` positions of an `height x width` patch grid, row-major.

  Args:
    height, width: the grid (image size // patch size).
    scale: `"index"` integers `0..n-1` (rope-vit); `"unit"` `linspace(0, n/n_train, n)`
      (LieRE); `"pi"` `linspace(-s pi, s pi, n)` with `s = n/n_train` (Spherical RoPE).
    train_size: `(h_train, w_train)`, the grid of the training resolution (default: this grid);
      a larger grid then extends the positions (resolution extrapolation).

  Returns:
    float32 `[height * width, 2]`; token `r * width + c` is `(row_r, col_c)`.
  """
  rows, cols = _grid_axes(height, width, scale, train_size)
  grid = np.stack(np.meshgrid(rows, cols, indexing="ij"), axis=-1)
  return jnp.asarray(grid.reshape(height * width, 2))


def grid_axes(height: int, width: int, *, scale: str = "index",
              train_size: Optional[Tuple[int, int]] = None) -> Tuple[jax.Array, jax.Array]:
  """The row and column coordinates of `grid_positions` (same arguments), `([h], [w])`.

  `grid_positions(h, w, ...)[r * w + c] == (rows[r], cols[c])`; feed them to
  `rope.grid_cos_sin` to compute a grid's tables from per-axis trig.
  """
  rows, cols = _grid_axes(height, width, scale, train_size)
  return jnp.asarray(rows), jnp.asarray(cols)


def _grid_axes(height, width, scale, train_size) -> Tuple[np.ndarray, np.ndarray]:
  """Checked host (NumPy) coordinates: usable under jit with static sizes."""
  height = _checks.positive_int("height", height)
  width = _checks.positive_int("width", width)
  _checks.one_of("scale", scale, SCALES)
  if train_size is None:
    train_size = (height, width)
  if len(tuple(train_size)) != 2:
    raise ValueError(f"`train_size` must be (h_train, w_train), got {train_size!r}.")
  h_train = _checks.positive_int("train_size[0]", train_size[0])
  w_train = _checks.positive_int("train_size[1]", train_size[1])
  return _axis(height, h_train, scale), _axis(width, w_train, scale)
