"""XLA:CPU kernels: the only place where rope departs from plain jax.numpy.

Everything here exists because XLA:CPU runs the plain formulation (`rope/_kernels.py`) slowly
(or, for `cayley`, can deadlock on it), and is selected only when lowering for CPU (`rope._kernels` dispatches with
`jax.lax.platform_dependent(..., cpu=<kernel here>, default=<plain jnp>)`): a program lowered
or exported for TPU or GPU never contains any of it (tests/test_export.py reads the exported
modules). Every kernel equals the plain formulation up to float32 rounding, values and
gradients (tests/test_rope_backends.py). Nothing here is public.

| kernel | why on XLA:CPU |
|---|---|
| `cos_sin` | `jnp.cos` / `jnp.sin` run one element at a time (~6 ns each, ~10x a multiply) |
| `materialize` | XLA:CPU fuses trig tables into every batch element / head that reads them |
| `interleave_by_padding`, `concat_by_padding` | concatenate / stack along the minor axis is not vectorised |
| `rotate_pairs`, `rotate_blocks`, `rotate_spherical` (custom VJPs) | autodiff's table gradients are batch reductions through strided slices, ~20-40x the forward |
| `sum_to_shape` | a reduction over a major axis runs as a strided loop, ~27x unrolled adds |
| `matmul` (custom VJP) | the transposed-lhs batched dot of autodiff runs ~12x slower |
| `cayley` (custom JVP) | jaxlib's batched LAPACK solves can deadlock XLA:CPU's thread pool |
"""
import functools
from typing import Tuple

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST

# ------------------------------------------------------------------------------ trig
#
# Why: XLA:CPU evaluates `cos` / `sin` one element at a time (measured ~6 ns per element, ~10x
# an elementwise multiply), and a rotation table has L * H * D/2 of them. This is a Cody-Waite
# reduction plus the minimax polynomials of Cephes' `sinf` / `cosf`, written with multiplies
# and adds only, so XLA vectorises it:
#
# * `k = round(x * 2/pi)`, `r = x - k * pi/2`, exactly enough for every |x| <= 2^24 (angles of
#   positions up to 16M): pi/2 = C1 + C2 + C3 + C4 where C1..C3 have 11 significant bits, and
#   `k` (an integer, |k| < 2^24) is split into `kh` (a multiple of 2^11 with <= 13 significant
#   bits) and `kl` (|kl| <= 2^10), so every product `kh * Ci`, `kl * Ci` (i <= 3) is exact and
#   the subtractions, largest first, lose nothing (Cody-Waite); C4 (float32) carries pi/2 to
#   ~57 bits, so the reduction error stays ~1e-12 even at |k| ~ 2^23.
# * `sin r`, `cos r` on |r| <= pi/4 by degree-7 / degree-8 polynomials (Cephes, < 1 ulp there);
# * the quadrant `k mod 4` picks and signs them.
# * |x| > 2^24 (no position encoding produces them; one float32 ulp of such an angle is >= 2
#   rad): the whole table falls back to `jnp.cos` / `jnp.sin` (a `lax.cond` on max |x|; under
#   `vmap` of a batched table the cond becomes a select, which computes both: still exact,
#   only slower).
#
# Measured against float64 cos / sin of the same float32 angle (tests/test_rope_backends.py):
# <= ~1.2e-7 absolute at every |x| <= 2^24, cos 0 = 1 and sin 0 = 0 exactly.

_TWO_OVER_PI = 0.636619772367581343
_C1 = 1.5703125                      # pi/2 rounded to 11 significant bits
_C2 = 4.837512969970703125e-4        # the next 11 bits
_C3 = 7.549533620476722717e-8        # the next 11 bits
_C4 = 2.5633440682570896e-12         # the rest, float32
_SPLIT = 2048.0                      # k = kh + kl, kh a multiple of 2^11
EXACT_BOUND = 2.0 ** 24              # largest |x| the reduction is exact for


def _poly_cos_sin(x):
  k = jnp.round(x * _TWO_OVER_PI)
  kh = jnp.round(k * (1.0 / _SPLIT)) * _SPLIT
  kl = k - kh
  r = x - kh * _C1
  r = r - kl * _C1
  r = r - kh * _C2
  r = r - kl * _C2
  r = r - kh * _C3
  r = r - kl * _C3
  r = r - k * _C4
  # `x * 2/pi` rounds to float32, so above |x| ~ 2^21 `k` can be off by one (|r| up to 3pi/4):
  # one more exact step with the small k2 = round(r * 2/pi) in {-1, 0, 1} brings |r| to pi/4.
  k2 = jnp.round(r * _TWO_OVER_PI)
  r = (((r - k2 * _C1) - k2 * _C2) - k2 * _C3) - k2 * _C4       # |r| <= pi/4 (+ rounding)
  z = r * r
  s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4))
  c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3
                                                          + z * 2.443315711809948e-5))
  q = (k.astype(jnp.int32) + k2.astype(jnp.int32)) & 3         # quadrant (two's complement)
  swap = (q & 1) == 1
  cos = jnp.where(swap, s, c)
  sin = jnp.where(swap, c, s)
  cos = jnp.where((q == 1) | (q == 2), -cos, cos)
  sin = jnp.where(q >= 2, -sin, sin)
  return cos, sin


def _libm_cos_sin(x):
  return jnp.cos(x), jnp.sin(x)


@jax.custom_jvp
def cos_sin(x: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """`(cos x, sin x)` of a float32 array (any shape), each float32."""
  x = jnp.asarray(x, jnp.float32)
  if x.size == 0:
    return _poly_cos_sin(x)
  in_range = jnp.max(jnp.abs(x)) <= EXACT_BOUND      # False for NaN: the polynomial gives NaN
  in_range = in_range | jnp.isnan(jnp.max(jnp.abs(x)))
  return jax.lax.cond(in_range, _poly_cos_sin, _libm_cos_sin, x)


@cos_sin.defjvp
def _cos_sin_jvp(primals, tangents):
  # The exact derivatives (d cos = -sin dx, d sin = cos dx) rather than those of the polynomial.
  (x,), (dx,) = primals, tangents
  cos, sin = cos_sin(x)
  return (cos, sin), (-sin * dx, cos * dx)


# --------------------------------------------------------------------- fusion barrier
#
# Why: XLA:CPU fuses cheap-looking producers (cos, sin, the 3x3 spherical matrices) into every
# element of the consumer that broadcasts them over batch and heads, so the trig runs B*H times
# per table entry: measured 9-17x slower than applying precomputed tables on [8, 1024, 6, 64].
# `jax.lax.optimization_barrier` does not stop that fusion; a dot does, since XLA never fuses a
# dot into a loop fusion. Multiplying by the identity at HIGHEST precision is exact for finite
# tables (every output is one product by 1.0 plus zeros). The table is flattened to rows of
# `k <= 16` entries first: a dot whose minor dimensions are 3 (a [..., 3, 3] spherical table)
# runs ~20x slower on CPU than the same dot on rows of 8.

_ROW = (16, 8, 4, 2, 1)   # row widths tried, largest first; the first that divides the size


def materialize(table: jax.Array) -> jax.Array:
  """Returns `table` unchanged, computed as its own kernel before its consumers read it."""
  if table.size == 0:
    return table
  k = next(r for r in _ROW if table.size % r == 0)
  eye = jnp.eye(k, dtype=table.dtype)
  rows = table.reshape(table.size // k, k)
  return jnp.matmul(rows, eye, precision=_HIGHEST).reshape(table.shape)


# ------------------------------------------------------------------ reverse broadcasting
#
# Why not `jnp.sum`: XLA:CPU reduces a major axis with a strided inner loop, measured 27x slower
# than the same sum written as unrolled adds of whole slices ([8, 1024, 6, 32] summed over the
# 8: 13.7 ms vs 0.51 ms), and the VJPs below sum over the batch. Long axes go through a
# ones-vector matmul (1.5x the unrolled adds, any length).

_UNROLL_MAX = 32   # axes up to this length are summed as unrolled adds


def _sum_axis0(a: jax.Array) -> jax.Array:
  n = a.shape[0]
  if n <= _UNROLL_MAX:
    out = a[0]
    for i in range(1, n):
      out = out + a[i]
    return out
  ones = jnp.ones((1, n), a.dtype)
  flat = jnp.matmul(ones, a.reshape(n, -1), precision=_HIGHEST)
  return flat.reshape(a.shape[1:])


def sum_to_shape(a: jax.Array, shape: tuple) -> jax.Array:
  """Sums `a` over the axes that broadcasting added to (or stretched from 1 in) `shape`."""
  lead = a.ndim - len(shape)
  if lead:
    a = _sum_axis0(a.reshape((-1,) + a.shape[lead:]))
  for i, (n, m) in enumerate(zip(shape, a.shape)):
    if n == 1 and m != 1:
      a = jnp.expand_dims(_sum_axis0(jnp.moveaxis(a, i, 0)), i)
  return a


# ------------------------------------------------------------------ joining channel parts

def interleave_by_padding(parts, axis):
  """Joins equally shaped `parts [..., n]` into `[..., k*n]` as a sum of zero-padded copies.

  `axis=-1` concatenates (part `i` fills channels `i*n .. i*n+n-1`); `axis=None` interleaves
  (part `i` fills channels `i, i+k, ...`). Why not `jnp.concatenate` / `jnp.stack`: XLA:CPU's
  fusion emitter does not vectorise a loop whose output selects between operands along the
  minor axis (~2.5x slower than `x * c` on [8, 1024, 6, 64]); a sum of pads is a plain
  elementwise loop and runs at the speed of `x * c`. Equal to the concatenation (every output
  is one part's value plus exact zeros; only a -0.0 becomes +0.0).
  """
  k = len(parts)
  lead = [(0, 0, 0)] * (parts[0].ndim - 1)
  zero = jnp.zeros((), parts[0].dtype)
  if axis == -1:
    n = parts[0].shape[-1]
    return sum(jax.lax.pad(p, zero, lead + [(i * n, (k - 1 - i) * n, 0)])
               for i, p in enumerate(parts))
  # Interior padding puts part i's entries k apart, starting at i (~20% faster than padding a
  # trailing axis of size k and reshaping).
  return sum(jax.lax.pad(p, zero, lead + [(i, k - 1 - i, k - 1)]) for i, p in enumerate(parts))


def concat_by_padding(parts):
  """`jnp.concatenate(parts, axis=-1)` of float parts of any widths, as a sum of zero-padded
  copies (why: `interleave_by_padding`). Partial rotary joins the rotated channels and the
  pass-through ones this way."""
  width = sum(p.shape[-1] for p in parts)
  lead = [(0, 0, 0)] * (parts[0].ndim - 1)
  zero = jnp.zeros((), parts[0].dtype)
  out, start = None, 0
  for p in parts:
    n = p.shape[-1]
    padded = jax.lax.pad(p, zero, lead + [(start, width - start - n, 0)])
    out = padded if out is None else out + padded
    start += n
  return out


# ------------------------------------------------------------------- pair rotations (2x2)

def _split_pairs(x, layout):
  half = x.shape[-1] // 2
  if layout == "half":
    return x[..., :half], x[..., half:]
  return x[..., 0::2], x[..., 1::2]


def _rotate_pairs_impl(x, cos, sin, layout):
  x1, x2 = _split_pairs(x, layout)
  return interleave_by_padding([x1 * cos - x2 * sin, x2 * cos + x1 * sin],
                               axis=-1 if layout == "half" else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _rotate_pairs(x, cos, sin, layout):
  return _rotate_pairs_impl(x, cos, sin, layout)


def _rotate_pairs_fwd(x, cos, sin, layout):
  return _rotate_pairs_impl(x, cos, sin, layout), (x, cos, sin)


def _rotate_pairs_bwd(layout, res, dy):
  # Hand-written because XLA:CPU runs autodiff's table gradient (a batch reduction of strided
  # products through the pads) ~20x slower than the forward for per-head tables.
  x, cos, sin = res
  dx = _rotate_pairs_impl(dy, cos, -sin, layout)            # rotation by -angle
  x1, x2 = _split_pairs(x, layout)
  g1, g2 = _split_pairs(dy, layout)
  dcos = sum_to_shape(g1 * x1 + g2 * x2, cos.shape)
  dsin = sum_to_shape(g2 * x1 - g1 * x2, sin.shape)
  return dx, dcos, dsin


_rotate_pairs.defvjp(_rotate_pairs_fwd, _rotate_pairs_bwd)


def rotate_pairs(x, cos, sin, *, layout, materialize_tables):
  """Pair `(x1, x2)` -> `(x1 cos - x2 sin, x2 cos + x1 sin)`; float32 in and out."""
  if materialize_tables:
    cos, sin = materialize(cos), materialize(sin)
  return _rotate_pairs(x, cos, sin, layout)


# --------------------------------------------------------------- block rotations (g x g)

_UNROLL_MAX_BLOCK = 16   # largest block applied as unrolled multiply-adds; larger use a dot


def _unrolled(xb, rotations):
  # y_i = sum_j R_ij x_j as g broadcast multiply-adds over whole blocks: XLA:CPU vectorises
  # these, while a reduction over a minor axis of size g (or a batched g x g dot) is ~10x
  # slower for g = 3 or 8.
  y = rotations[..., :, 0] * xb[..., 0:1]
  for j in range(1, xb.shape[-1]):
    y = y + rotations[..., :, j] * xb[..., j:j + 1]
  return y


@jax.custom_vjp
def _rotate_blocks(xb, rotations):
  return _unrolled(xb, rotations)


def _rotate_blocks_fwd(xb, rotations):
  return _unrolled(xb, rotations), (xb, rotations)


def _rotate_blocks_bwd(res, dy):
  # Hand-written because autodiff of `_unrolled` differentiates g slices of `xb`, i.e. a sum of
  # g zero-padded cotangents and g minor-axis reductions: ~40x the forward on CPU.
  xb, rotations = res
  dx = _unrolled(dy, materialize(jnp.swapaxes(rotations, -1, -2)))   # R^T dy
  outer = dy[..., :, None] * xb[..., None, :]                        # [..., G, g, g]
  return sum_to_shape(dx, xb.shape), sum_to_shape(outer, rotations.shape)


_rotate_blocks.defvjp(_rotate_blocks_fwd, _rotate_blocks_bwd)


def rotate_blocks(xb, rotations):
  """`R @ x` per block: xb `[..., G, g]`, rotations `[..., G, g, g]` (broadcasting), float32."""
  rotations = materialize(rotations)
  if rotations.shape[-1] <= _UNROLL_MAX_BLOCK:
    return _rotate_blocks(xb, rotations)
  return jnp.einsum("...ij,...j->...i", rotations, xb, precision=_HIGHEST)


# ------------------------------------------------------ Spherical RoPE (two plane rounds)

def _split_thirds(x, layout):
  t = x.shape[-1] // 3
  if layout == "thirds":
    return x[..., :t], x[..., t:2 * t], x[..., 2 * t:]
  return x[..., 0::3], x[..., 1::3], x[..., 2::3]


def _join_thirds(parts, layout):
  return interleave_by_padding(list(parts), axis=-1 if layout == "thirds" else None)


def _rounds(u, v, w, ca, sa, cb, sb):
  t = sa * u + ca * w
  return ca * u - sa * w, cb * v - sb * t, sb * v + cb * t


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _rotate_spherical(x, ca, sa, cb, sb, layout):
  return _join_thirds(_rounds(*_split_thirds(x, layout), ca, sa, cb, sb), layout)


def _rotate_spherical_fwd(x, ca, sa, cb, sb, layout):
  return _rotate_spherical(x, ca, sa, cb, sb, layout), (x, ca, sa, cb, sb)


def _rotate_spherical_bwd(layout, res, dy):
  # Hand-written for the same reason as `_rotate_pairs`: autodiff's table gradients are batch
  # reductions through strided slices and pads, ~20x the forward on XLA:CPU. Each round is a
  # plane rotation, so its transpose is the rotation by minus the angle.
  x, ca, sa, cb, sb = res
  u, v, w = _split_thirds(x, layout)
  gu, gv, gw = _split_thirds(dy, layout)
  t = sa * u + ca * w
  gv0 = cb * gv + sb * gw                      # round 2: (v, t) -> (v', w')
  gt = cb * gw - sb * gv
  gu0 = ca * gu + sa * gt                      # round 1: (u, w) -> (u', t)
  gw0 = ca * gt - sa * gu
  dx = _join_thirds((gu0, gv0, gw0), layout)
  s = lambda a, ref: sum_to_shape(a, ref.shape)
  return (dx, s(gu * u + gt * w, ca), s(gt * u - gu * w, sa),
          s(gv * v + gw * t, cb), s(gw * v - gv * t, sb))


_rotate_spherical.defvjp(_rotate_spherical_fwd, _rotate_spherical_bwd)


def rotate_spherical(x, ca, sa, cb, sb, *, layout, materialize_tables):
  """Spherical RoPE's two plane rounds on float32 `x`; tables `[..., L, 1|H, D/3]`."""
  tables = (ca, sa, cb, sb)
  if materialize_tables:
    tables = tuple(materialize(t) for t in tables)
  return _rotate_spherical(x, *tables, layout)


# ---------------------------------------------------------------- batched matmul (expm)

@jax.custom_vjp
def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
  """`a @ b` for `[..., g, g]` batches, float32 exact (HIGHEST)."""
  return jnp.matmul(a, b, precision=_HIGHEST)


def _matmul_fwd(a, b):
  return matmul(a, b), (a, b)


def _matmul_bwd(res, g):
  # Why: autodiff's `a^T @ g` is a transposed-lhs batched dot, which XLA:CPU runs ~12x slower
  # than a plain one (9408 8x8 matrices): transposing `a` explicitly (the barrier keeps XLA from
  # folding the transpose back into the dot's dimension numbers) halves expm's gradient cost.
  a, b = res
  da = jnp.matmul(g, jnp.swapaxes(b, -1, -2), precision=_HIGHEST)
  at = jax.lax.optimization_barrier(jnp.swapaxes(a, -1, -2))
  db = jnp.matmul(at, g, precision=_HIGHEST)
  return da, db


matmul.defvjp(_matmul_fwd, _matmul_bwd)


# ---------------------------------------------------------------------- Cayley transform
#
# Why: `jnp.linalg.solve` on CPU is jaxlib's LAPACK (getrf / trsm as FFI custom calls), whose
# batched kernels split the batch over XLA:CPU's intra-op thread pool and block the calling pool
# thread until the parts are done (`jax::ParallelBatchMap`). When as many such solves run at once
# as the pool has threads, every thread waits and the program never returns: measured with jax
# 0.10.2 on 2 cores, a ViT-S Cayley-STRING training step (one [H, D, D] solve per layer, forward
# and backward) hangs from depth 4 on, on its second call. This Gauss-Jordan elimination is
# plain XLA ops (no custom call), and its derivative is written in closed form.
#
# No pivoting is needed for the Cayley transform's `I + S`, S skew-symmetric: x^T (I + S) x =
# |x|^2, and the same holds for every Schur complement C of it (y^T C y = x^T (I + S) x >= |y|^2
# for x = [-A11^-1 A12 y; y]), so every pivot (a diagonal entry of one) is >= 1.

def _gauss_jordan_solve(a, b):
  """`a^-1 b` for `[..., D, D]` `a` whose pivots need no exchange (see above)."""
  d = a.shape[-1]
  m = jnp.concatenate([a, b], axis=-1)                                    # [..., D, 2D]
  rows = jnp.arange(d)[:, None]                                          # [D, 1]

  def eliminate(k, m):
    row = jax.lax.dynamic_slice_in_dim(m, k, 1, axis=-2)                 # [..., 1, 2D]
    row = row / jax.lax.dynamic_slice_in_dim(row, k, 1, axis=-1)          # pivot -> 1
    col = jax.lax.dynamic_slice_in_dim(m, k, 1, axis=-1)                 # [..., D, 1]
    return jnp.where(rows == k, row, m - col * row)

  return jax.lax.fori_loop(0, d, eliminate, m)[..., d:]   # [..., D, b's columns]


@jax.custom_jvp
def cayley(S: jax.Array) -> jax.Array:
  """`(I + S)^-1 (I - S)` for skew-symmetric float32 `S` `[..., D, D]`."""
  eye = jnp.broadcast_to(jnp.eye(S.shape[-1], dtype=S.dtype), S.shape)
  return _gauss_jordan_solve(eye + S, eye - S)


@cayley.defjvp
def _cayley_jvp(primals, tangents):
  # P = X (I - S) with X = (I + S)^-1, dX = -X dS X: dP = -X dS (X (I - S) + I) = -X dS (P + I),
  # linear in dS (so autodiff can transpose it). One elimination gives both P and X.
  (S,), (dS,) = primals, tangents
  d = S.shape[-1]
  eye = jnp.broadcast_to(jnp.eye(d, dtype=S.dtype), S.shape)
  px = _gauss_jordan_solve(eye + S, jnp.concatenate([eye - S, eye], axis=-1))
  p, x = px[..., :d], px[..., d:]
  x_ds = jnp.matmul(x, dS, precision=_HIGHEST)
  return p, -jnp.matmul(x_ds, p + eye, precision=_HIGHEST)
