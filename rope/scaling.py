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

  Returns `(onehot [..., n, P] bool, rank [..., n, P] int, count [..., 1, P] int)`: which
  column a row reads, its index in that axis's ladder, and each ladder's length. NumPy when
  the table is concrete (then rows that read several axes raise), jnp when it is traced.
  """
  f = _concrete(freqs)
  xp = np if f is not None else jnp
  f = f if f is not None else freqs
  nz = f != 0
  if xp is np and np.any(nz.sum(-1) > 1):
    rows = np.argwhere(nz.sum(-1) > 1)[:3].tolist()
    raise ValueError(f"`freqs` rows {rows} read several position components; scaling and "
                     f"truncation work per axis group, so every row must read one axis "
                     f"(an axial / 1-D / M-RoPE style table, not RoPE-Mixed).")
  rank = xp.cumsum(nz.astype(xp.int32), axis=-2) - 1
  count = xp.sum(nz.astype(xp.int32), axis=-2, keepdims=True)
  return nz, rank, count


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
  if isinstance(count, np.ndarray):
    keep_n = np.vectorize(lambda n: int(proportion * int(n)))(count).astype(np.int32)
  else:
    keep_n = jnp.floor(proportion * count.astype(jnp.float32)).astype(jnp.int32)
  keep = nz & (rank < keep_n)
  return jnp.where(jnp.asarray(keep), freqs, 0.0)


def _check_method(method, allowed):
  _checks.one_of("method", method, allowed)


def _ramp(lo, hi, n, xp):
  """FiT / YaRN `linear_ramp_mask(lo, hi, n)` (hi += 0.001 when equal)."""
  hi = xp.where(lo == hi, hi + 0.001, hi)
  j = xp.arange(n, dtype=np.float32)
  return xp.clip((j - lo) / (hi - lo), 0.0, 1.0)


def _correction_range(rot_lo, rot_hi, d, theta, train_len, xp):
  """YaRN `find_correction_range`: bounds of the ramp for per-axis dim `d`."""
  def factor(rot):
    return d * math.log(train_len / (rot * 2 * math.pi)) / (2 * math.log(theta))
  lo = xp.maximum(xp.floor(factor(rot_lo)), 0)
  hi = xp.minimum(xp.ceil(factor(rot_hi)), d - 1)
  return lo, hi


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
  d = 2 * count                                                 # per-axis dim, [..., 1, P]
  j = rank.astype(np.float32) if isinstance(rank, np.ndarray) else rank.astype(jnp.float32)
  linear = freqs / s

  def ntk():
    expo = -2.0 * j / jnp.maximum(d - 2, 1).astype(jnp.float32)
    return freqs * jnp.exp(expo * jnp.log(s))

  if method == "linear":
    out = linear
  elif method == "ntk":
    out = ntk()
  else:
    if not isinstance(d, np.ndarray):
      raise ValueError(f"`method`={method!r} needs the axis groups of `freqs` at trace time; "
                       f"pass a concrete table (close over it) rather than a traced one.")
    if method == "yarn":
      ramp = _ramp_for(d, rank, theta, train_len, 32.0, 1.0)
      out = linear * ramp + freqs * (1.0 - ramp)
    else:   # ntk_by_parts
      mask = 1.0 - _ramp_for(d, rank, theta, train_len, 1.25, 0.75)
      out = linear * (1.0 - mask) + ntk() * mask
      mask = 1.0 - _ramp_for(d, rank, theta, train_len, 16.0, 2.0)
      out = out * (1.0 - mask) + freqs * mask
  return jnp.where(jnp.asarray(nz), out, 0.0)


def _ramp_for(d, rank, theta, train_len, rot_lo, rot_hi):
  """Per-row ramp value (NumPy float32) for groups of per-axis dim `d` [..., 1, P]."""
  out = np.zeros(np.broadcast_shapes(d.shape, rank.shape), np.float32)
  for dim in np.unique(d):
    dim = int(dim)
    if dim == 0:
      continue
    lo, hi = _correction_range(rot_lo, rot_hi, dim, float(theta), float(train_len), np)
    ramp = _ramp(np.float32(lo), np.float32(hi), dim // 2, np).astype(np.float32)
    r = np.clip(rank, 0, dim // 2 - 1)
    out = np.where(np.broadcast_to(d == dim, out.shape), ramp[r], out)
  return out


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
