"""Resolution scaling (FiT's VisionNTK / VisionYaRN) and p-RoPE truncation of axial tables.

Both act on a commuting table `freqs [..., D/2, P]` per *axis group*: the rows whose only
non-zero column is that axis, taken in table order as that axis's ladder `j = 0, 1, ...`
(highest frequency first), as `freqs_axial` / `freqs_eva` / `freqs_1d` build them. Spec:
docs/spec/vision_ext.md §5 (FiT code `fit/model/rope.py`, Gemma `rope_proportion`).
"""
import math
import numbers
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rope import _checks

METHODS = ("linear", "ntk", "ntk_by_parts", "yarn")
SCALE_METHODS = ("none", "linear", "ntk", "ntk_by_parts", "yarn", "pro1", "pro2")


def _concrete(a):
  """`a` as a NumPy array when its values are known at trace time, else None."""
  try:
    return np.asarray(a)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _table(freqs):
  freqs = jnp.asarray(freqs)
  if freqs.ndim < 2:
    raise ValueError(f"`freqs` must be a table [..., D/2, P], got shape {freqs.shape}.")
  return freqs.astype(jnp.float32)


def _groups(freqs):
  """Axis-group structure of `freqs [..., n, P]`.

  Returns jnp `(onehot [..., n, P] bool, rank [..., n, P] int32, count [..., 1, P] int32)`:
  which column a row reads, its index in that axis's ladder, and each ladder's length. Works on
  traced tables too (a table built inside `jit` is traced); a concrete table whose rows read
  several axes raises.
  """
  f = _concrete(freqs)
  if f is not None and np.any((f != 0).sum(-1) > 1):
    rows = np.argwhere((f != 0).sum(-1) > 1)[:3].tolist()
    raise ValueError(f"`freqs` rows {rows} read several position components; scaling and "
                     f"truncation work per axis group, so every row must read one axis "
                     f"(an axial / 1-D / M-RoPE style table, not RoPE-Mixed).")
  nz = freqs != 0
  rank = jnp.cumsum(nz.astype(jnp.int32), axis=-2) - 1
  count = jnp.sum(nz.astype(jnp.int32), axis=-2, keepdims=True)
  return nz, rank, count


def _lookup(values, index):
  """`values[index]` for a host table `values [n + 1]` and an int array `index` (exact)."""
  return jnp.asarray(np.asarray(values))[index]


def truncate_freqs(freqs: jax.Array, proportion: float) -> jax.Array:
  """p-RoPE: in each axis group keep the first `int(proportion * n)` rows, zero the rest.

  The zeroed pairs get angle 0 (they pass through unrotated). On a 1-D table this is Gemma's
  `rope_proportion`; on an axial table each axis keeps its highest frequencies
  (docs/spec/vision_ext.md §5.2). `truncate_freqs(f, 1.)` is `f`.

  Args:
    freqs: `[..., D/2, P]`, every row reading at most one axis (clarification 13 of API.md).
    proportion: in [0, 1].

  Returns:
    float32, same shape.
  """
  if isinstance(proportion, bool) or not isinstance(proportion, numbers.Real) or not (
      0.0 <= proportion <= 1.0):
    raise ValueError(f"`proportion` must be a float in [0, 1], got {proportion!r}.")
  freqs = _table(freqs)
  nz, rank, count = _groups(freqs)
  # int(proportion * n) in Python (float64) for every possible group length n, then looked
  # up: exact for traced tables too.
  keep_n = _lookup([int(proportion * n) for n in range(freqs.shape[-2] + 1)], count)
  return jnp.where(nz & (rank < keep_n), freqs, 0.0)


def _check_method(method, allowed):
  _checks.one_of("method", method, allowed)


def _correction_range(rot_lo, rot_hi, d, theta, train_len):
  """YaRN / FiT `find_correction_range` for per-axis dim `d` (Python floats, as FiT)."""
  def factor(rot):
    return (d * math.log(train_len / (rot * 2 * math.pi))) / (2 * math.log(theta))
  lo = max(math.floor(factor(rot_lo)), 0)
  hi = min(math.ceil(factor(rot_hi)), d - 1)
  if lo == hi:
    hi += 0.001          # FiT's linear_ramp_mask: prevent a singularity
  return lo, hi


def _ramp(rank, count, rot_lo, rot_hi, theta, train_len):
  """FiT's `linear_ramp_mask(lo, hi, d/2)` per row: `clip((j - lo) / (hi - lo), 0, 1)`.

  `lo`, `hi` depend on the group's per-axis dim `d = 2 * count`; they are computed on the host
  for every possible `count` and looked up, so traced tables get FiT's exact bounds.
  """
  bounds = [_correction_range(rot_lo, rot_hi, 2 * n, theta, train_len) if n else (0.0, 1.0)
            for n in range(rank.shape[-2] + 1)]
  lo = _lookup(np.array([b[0] for b in bounds], np.float32), count)
  hi = _lookup(np.array([b[1] for b in bounds], np.float32), count)
  return jnp.clip((rank.astype(jnp.float32) - lo) / (hi - lo), 0.0, 1.0)


def scale_freqs(freqs: jax.Array, scale, *, method: str, train_len: float,
                theta: float = 1e4) -> jax.Array:
  """FiT's resolution scaling of an axial table, per axis (docs/spec/vision_ext.md §5.1).

  For an axis group of `n` rows (per-axis dim `d = 2n`), ladder index `j`, scale `s` of that
  axis:
    * `"linear"` (position interpolation): `f_j / s`;
    * `"ntk"` (VisionNTK): base `theta * s ** (d / (d - 2))`, i.e. `f_j * s ** (-2j / (d - 2))`;
    * `"yarn"` (VisionYaRN): `(f_j / s) * ramp_j + f_j * (1 - ramp_j)`, ramp from 0 at
      `floor(k(32))` to 1 at `ceil(k(1))`, `k(r) = d ln(train_len / (2 pi r)) / (2 ln theta)`;
    * `"ntk_by_parts"`: linear/NTK blended over the ramp `k(1.25)..k(0.75)`, then blended
      with the unscaled ladder over `k(16)..k(2)`.
  FiT also multiplies cos and sin by an amplitude: `attention_scale`, passed to `apply`.

  Args:
    freqs: `[..., D/2, P]` axial table built with `theta` (e.g. `freqs_eva(D, 1e4)` for FiT).
    scale: `[P]` (or a scalar for every axis), used as given: the caller clamps it,
      `max(n / train_len, 1)` per axis (FiT's decoupled "Vision" variants) or the larger of
      the two for both axes (coupled). May be traced.
    method: `"linear"`, `"ntk"`, `"ntk_by_parts"` or `"yarn"`.
    train_len: FiT's `ori_max_pe_len` (training grid length per axis).
    theta: the ladder's base.

  Returns:
    float32 `[..., D/2, P]`.
  """
  _check_method(method, METHODS)
  if isinstance(train_len, bool) or not isinstance(train_len, numbers.Real) or train_len <= 0:
    raise ValueError(f"`train_len` must be a positive number, got {train_len!r}.")
  if isinstance(theta, bool) or not isinstance(theta, numbers.Real) or theta <= 1:
    raise ValueError(f"`theta` must be a number > 1, got {theta!r}.")
  freqs = _table(freqs)
  p = freqs.shape[-1]
  scale = jnp.asarray(scale, jnp.float32)
  if scale.ndim > 1 or (scale.ndim == 1 and scale.shape[0] not in (1, p)):
    raise ValueError(f"`scale` must be a scalar or [P] = [{p}], got shape {scale.shape}.")
  s = jnp.broadcast_to(scale, (p,))
  nz, rank, count = _groups(freqs)
  j = rank.astype(jnp.float32)
  d = (2 * count).astype(jnp.float32)                            # per-axis dim, [..., 1, P]
  theta, train_len = float(theta), float(train_len)
  linear = freqs / s

  def ntk():   # base theta * s ** (d / (d - 2)): f_j * s ** (-2j / (d - 2))
    return freqs * jnp.exp(-2.0 * j / jnp.maximum(d - 2.0, 1.0) * jnp.log(s))

  if method == "linear":
    out = linear
  elif method == "ntk":
    out = ntk()
  elif method == "yarn":
    ramp = _ramp(rank, count, 32.0, 1.0, theta, train_len)
    out = linear * ramp + freqs * (1.0 - ramp)
  else:   # ntk_by_parts
    mask = 1.0 - _ramp(rank, count, 1.25, 0.75, theta, train_len)
    out = linear * (1.0 - mask) + ntk() * mask
    mask = 1.0 - _ramp(rank, count, 16.0, 2.0, theta, train_len)
    out = out * (1.0 - mask) + freqs * mask
  return jnp.where(nz, out, 0.0)


def attention_scale(method: str, test_size: Sequence[int], train_len: float) -> jax.Array:
  """FiT's amplitude on cos and sin (both q and k: logits scale by its square).

  * `"yarn"`: `0.1 ln s + 1` with `s = max(h, w) / train_len` (1 when `s <= 1`), computed from
    the larger side even for decoupled scaling (docs/spec/vision_ext.md §5.1, §8.7);
  * `"pro1"`: `sqrt(ln(2n) / ln L)`, `n = max(h, w)`, `L = train_len`; `"pro2"`: the same
    with `n = h * w`, `L = train_len ** 2`; 1 when `2n <= L` (their tables are
    `scale_freqs(method="ntk")`);
  * `"none"`, `"linear"`, `"ntk"`, `"ntk_by_parts"`: 1.

  Args:
    method: one of the above.
    test_size: `(h, w)` in patches.
    train_len: FiT's `ori_max_pe_len`.

  Returns:
    float32 scalar, for `apply(..., amplitude=)`.
  """
  _check_method(method, SCALE_METHODS)
  test_size = tuple(test_size)
  if len(test_size) != 2:
    raise ValueError(f"`test_size` must be (h, w) in patches, got {test_size!r}.")
  if isinstance(train_len, bool) or not isinstance(train_len, numbers.Real) or train_len <= 0:
    raise ValueError(f"`train_len` must be a positive number, got {train_len!r}.")
  h, w = (jnp.asarray(t, jnp.float32) for t in test_size)
  train_len = jnp.float32(train_len)
  if method == "yarn":
    s = jnp.maximum(h, w) / train_len
    return jnp.where(s <= 1.0, 1.0, 0.1 * jnp.log(s) + 1.0).astype(jnp.float32)
  if method in ("pro1", "pro2"):
    n, big_l = (jnp.maximum(h, w), train_len) if method == "pro1" else (h * w, train_len ** 2)
    n2 = 2.0 * n
    amp = jnp.sqrt(jnp.log(n2) / jnp.log(big_l))
    return jnp.where(n2 / big_l <= 1.0, 1.0, amp).astype(jnp.float32)
  return jnp.ones((), jnp.float32)
