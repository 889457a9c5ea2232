"""models.activations.gelu: the exact (erf) GELU and its derivative against float64 closed forms."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from models import activations


def _reference(x):
  """float64 GELU x Phi(x) and its derivative Phi(x) + x phi(x), from math.erf."""
  x = np.asarray(x, np.float64)
  cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
  pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
  return x * cdf, cdf + x * pdf


def test_value_and_derivative_match_float64():
  x = jnp.linspace(-9.0, 9.0, 20001, dtype=jnp.float32)
  want, dwant = _reference(x)
  np.testing.assert_allclose(activations.gelu(x), want, atol=2e-6, rtol=2e-6)
  np.testing.assert_allclose(jax.vmap(jax.grad(activations.gelu))(x), dwant, atol=2e-6, rtol=2e-6)
  # Second derivative through the custom JVP is autodiff of the closed form: 2 phi - x^2 phi.
  d2 = jax.vmap(jax.grad(jax.grad(activations.gelu)))(x[::100])
  xs = np.asarray(x[::100], np.float64)
  pdf = np.exp(-0.5 * xs * xs) / math.sqrt(2 * math.pi)
  np.testing.assert_allclose(d2, (2 - xs * xs) * pdf, atol=5e-6)


def test_agrees_with_jax_nn_gelu_and_keeps_dtype():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 7, 33)) * 3
  np.testing.assert_allclose(activations.gelu(x), jax.nn.gelu(x, approximate=False), atol=1e-6)
  assert activations.gelu(jnp.zeros(())) == 0.0
  xb = x.astype(jnp.bfloat16)
  yb, vjp = jax.vjp(activations.gelu, xb)
  assert yb.dtype == jnp.bfloat16 and vjp(jnp.ones_like(yb))[0].dtype == jnp.bfloat16
  np.testing.assert_allclose(yb.astype(jnp.float32), jax.nn.gelu(xb.astype(jnp.float32),
                                                                 approximate=False),
                             atol=0.02, rtol=0.01)
