"""Fixed 2-D frequency tables of DINOv3 and EVA-02 (row-first axial tables).

Both give a quarter of the pairs to each axis with one ladder shared by the axes, `row` first
(rope-vit's `freqs_axial` puts `col` first). DINOv3 applies its table in the `half` layout,
EVA-02 in the `interleaved` one. Spec: docs/spec/vision_ext.md §2 and §3.
"""
import math
import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from rope import _checks
from rope import frequencies


def _positive_float(name, value) -> float:
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
      math.isfinite(value) and value > 0):
    raise ValueError(f"`{name}` must be a positive finite float, got {value!r}.")
  return float(value)


def dinov3_periods(head_dim: int, base: Optional[float] = None, *,
                   min_period: Optional[float] = None,
                   max_period: Optional[float] = None) -> jax.Array:
  """DINOv3's `periods` buffer `[D/4]` (float32, computed as the original does).

  `base` form: `base ** (2j / (D/2))`; period form: `min * (max/min) ** linspace(0, 1, D/4)`
  (evaluated as the original, `((max/min) ** e / (max/min)) * max`). Arguments as
  `freqs_dinov3`.
  """
  return jnp.asarray(_dinov3_periods_np(head_dim, base, min_period, max_period))


def _dinov3_periods_np(head_dim, base, min_period, max_period) -> np.ndarray:
  head_dim = _checks.positive_int("head_dim", head_dim)
  _checks.divisible("head_dim", head_dim, 4,
                    "DINOv3 gives a quarter of the channels' pairs to each axis")
  periods_given = (min_period is not None, max_period is not None)
  if base is not None and any(periods_given):
    raise ValueError("Give either `base` or (`min_period`, `max_period`) to freqs_dinov3, "
                     f"not both (got base={base!r}, min_period={min_period!r}, "
                     f"max_period={max_period!r}).")
  if any(periods_given) and not all(periods_given):
    raise ValueError("`min_period` and `max_period` go together; got "
                     f"min_period={min_period!r}, max_period={max_period!r}.")
  n = head_dim // 4
  if all(periods_given):
    lo = _positive_float("min_period", min_period)
    hi = _positive_float("max_period", max_period)
    ratio = np.float32(hi / lo)
    exps = np.linspace(0.0, 1.0, n, dtype=np.float32)
    periods = (ratio ** exps / ratio) * np.float32(hi)
  else:
    base = _positive_float("base", 100.0 if base is None else base)
    exps = np.float32(2.0) * np.arange(n, dtype=np.float32) / np.float32(head_dim // 2)
    periods = np.float32(base) ** exps
  return periods.astype(np.float32)


def freqs_dinov3(head_dim: int, base: Optional[float] = None, *,
                 min_period: Optional[float] = None,
                 max_period: Optional[float] = None,
                 periods_dtype: str = "float32") -> jax.Array:
  """DINOv3 RoPE table `[D/2, 2]` = `2 pi / period`, row first; use with `layout="half"`.

  Rows `j < D/4` read `row` at `2 pi / period_j`, rows `j >= D/4` read `col` at
  `2 pi / period_{j - D/4}` (`RopePositionEmbedding`: angles `2 pi c / period`, row ladder then
  col ladder, tiled twice, rotate-half). Positions: `grid_positions(h, w, scale="centered")`;
  the prefix tokens (cls + 4 registers) stay unrotated.

  Args:
    head_dim: D, divisible by 4.
    base: period base (every released config: 100); the default when no period is given.
    min_period, max_period: the other form, both or neither; exclusive with `base`.
    periods_dtype: "float32" (the formula), or "bfloat16": the periods rounded to bfloat16
      (round to nearest even) before `2 pi / period`, as the released DINOv3 checkpoints store
      their `rope_embed.periods` buffer (timm's RotaryEmbeddingDinoV3 notes it).

  Returns:
    float32 `[D/2, 2]`.
  """
  _checks.one_of("periods_dtype", periods_dtype, ("float32", "bfloat16"))
  periods = _dinov3_periods_np(head_dim, base, min_period, max_period)
  if periods_dtype == "bfloat16":
    periods = periods.astype(jnp.bfloat16).astype(np.float32)
  f = (np.float32(2.0 * math.pi) / periods).astype(np.float32)
  n = f.shape[0]
  table = np.zeros((2 * n, 2), np.float32)
  table[:n, 0] = f
  table[n:, 1] = f
  return jnp.asarray(table)


def freqs_eva(head_dim: int, theta: float = 1e4) -> jax.Array:
  """EVA-02 (timm `RotaryEmbeddingCat`) table: `freqs_axial(head_dim, theta, first="row")`.

  `[D/2, 2]`, rows `j < D/4` read `row` at `theta ** (-4j/D)`, the rest `col`; use with
  `layout="interleaved"` and `grid_positions(h, w, scale="index_interp", train_size=(16, 16))`
  at a fine-tune resolution (or `"index"` at the pre-train grid); cls untouched.
  """
  return frequencies.freqs_axial(head_dim, theta, first="row")
