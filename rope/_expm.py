"""Matrix exponential of batches of small skew-symmetric matrices (LieRE's rotations).

Why not `jax.scipy.linalg.expm`: it picks its Pade order and number of squarings from the data
(branches and a while loop per call), which is slow on CPU, and in float32 it picks too few
squarings for 2x2 generators of norm ~3.9..7.9 (off by ~2e-3 against `torch.matrix_exp`).

Here (scaling and squaring with a fixed polynomial):
* every matrix gets its own number of squarings `s` so that `|A| / 2^s <= 1` (Frobenius norm);
* the degree-11 Taylor polynomial of the scaled matrix (truncation error `1/12! ~ 2e-9`) is
  evaluated Paterson-Stockmeyer style with 5 matrix products instead of Horner's 10;
* then up to `MAX_SQUARINGS` batched squarings, of which matrix `i` keeps the first `s_i`.
  Squaring `k` runs only if some matrix needs it (`lax.cond` on the batch maximum, which
  reverse-mode differentiates), so a batch pays for the squarings its largest matrix needs,
  not for the worst case.
The control flow is static up to those conds: it jits, vmaps and differentiates like any matmul
chain. Rounding grows with the number of squarings; for orthogonal results it stays below 1e-4
(float32) for norms up to 2048 (tested against SciPy in float64).

Products are float32-exact dots (HIGHEST) on every backend. On CPU the whole function runs with
`rope._cpu.matmul`, whose hand-written VJP avoids the transposed-lhs batched dot that XLA:CPU
runs ~12x slower than a plain one (selected by `jax.lax.platform_dependent`, rope/_kernels.py).
"""
import functools
import math

import jax
import jax.numpy as jnp

from rope import _cpu
from rope import _kernels

_THETA = 1.0          # largest Frobenius norm handed to the Taylor polynomial
_COEFFS = [1.0 / math.factorial(k) for k in range(12)]   # Taylor degree 11
MAX_SQUARINGS = 11    # norms up to 1.0 * 2^11 = 2048


def expm(a: jax.Array) -> jax.Array:
  """`exp(a)` for `a [..., g, g]` float32 (accurate for skew-symmetric `a`, |a|_F <= 2048)."""
  return _kernels.dispatch(
      a, cpu=functools.partial(_expm, matmul=_cpu.matmul),
      default=functools.partial(_expm, matmul=_kernels.plain_matmul))


POLYNOMIAL_PRODUCTS = 5   # a^2, a^3, a^4 and two Paterson-Stockmeyer steps


def squarings(a: jax.Array) -> jax.Array:
  """The number of squarings `s` of each matrix of `a [..., g, g]`: `[...]` float32, `|a|_F /
  2^s <= 1`; a batch runs `POLYNOMIAL_PRODUCTS + max(s)` batched products."""
  norm = jnp.sqrt(jnp.sum(a * a, axis=(-2, -1)))
  return jnp.clip(jnp.ceil(jnp.log2(jnp.maximum(norm, 1e-30) / _THETA)), 0, MAX_SQUARINGS)


def _expm(a: jax.Array, matmul) -> jax.Array:
  s = jax.lax.stop_gradient(squarings(a))
  a = a * jnp.exp2(-s)[..., None, None]
  eye = jnp.eye(a.shape[-1], dtype=a.dtype)
  a2 = matmul(a, a)
  a3 = matmul(a2, a)
  a4 = matmul(a2, a2)

  def block(k):  # sum_{i<4} a^(k+i) / (k+i)!, without a^4 (elementwise combinations only)
    c = _COEFFS
    return c[k] * eye + c[k + 1] * a + c[k + 2] * a2 + c[k + 3] * a3

  r = block(8)                          # Paterson-Stockmeyer: B0 + a^4 (B4 + a^4 B8)
  r = block(4) + matmul(a4, r)
  r = block(0) + matmul(a4, r)
  s_max = jnp.max(s)
  for i in range(MAX_SQUARINGS):
    r = jax.lax.cond(
        i < s_max,
        lambda r, i=i: jnp.where((i < s)[..., None, None], matmul(r, r), r),
        lambda r: r, r)
  return r
