"""Exact (erf) GELU with a hand-written derivative.

Why not `jax.nn.gelu(x, approximate=False)`: it is written with `erfc`, which XLA:CPU expands
into a longer polynomial with two branches, and autodiff differentiates that expansion. Here
the forward is timm's / torch's `nn.GELU` formula, x * (1 + erf(x / sqrt 2)) / 2, and the
derivative is the closed form Phi(x) + x phi(x) (`jax.custom_jvp`). Measured on [32, 50, 1536]
float32 (2 cores, AMD Zen 3): forward 2.45 -> 1.13 ms, forward + backward 5.3 -> 2.9 ms. The two
agree to 1e-6 absolute; in the far negative tail (x < -5.5, |GELU| < 1e-7) this form rounds to
0 like torch's.
"""
import jax
import jax.numpy as jnp
import numpy as np

_INV_SQRT2 = np.float32(1 / np.sqrt(2))
_INV_SQRT_2PI = np.float32(1 / np.sqrt(2 * np.pi))


def _cdf(x: jax.Array) -> jax.Array:
  return 0.5 + 0.5 * jax.lax.erf(x * _INV_SQRT2)


@jax.custom_jvp
def gelu(x: jax.Array) -> jax.Array:
  """x * Phi(x), elementwise, any shape; computed in float32, returned in x's dtype."""
  y = x.astype(jnp.float32)
  return (y * _cdf(y)).astype(x.dtype)


@gelu.defjvp
def _gelu_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  y = x.astype(jnp.float32)
  cdf = _cdf(y)
  slope = cdf + y * jnp.exp(-0.5 * y * y) * _INV_SQRT_2PI
  return (y * cdf).astype(x.dtype), (slope * dx.astype(jnp.float32)).astype(dx.dtype)
