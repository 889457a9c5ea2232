"""A fusion barrier for small rotation tables.

Why this exists: XLA:CPU fuses cheap-looking producers (cos, sin, the 3x3 spherical matrices)
into every element of the consumer that broadcasts them over batch and heads, so the trig runs
B*H times per table entry: measured 9-17x slower than applying precomputed tables on
[8, 1024, 6, 64]. `jax.lax.optimization_barrier` does not stop that fusion; a dot does, since
XLA never fuses a dot into a loop fusion. Multiplying by the identity at HIGHEST precision is
exact for finite tables (every output is one product by 1.0 plus zeros).

The table is flattened to rows of `k <= 16` entries first: a dot whose minor dimensions are 3
(a [..., 3, 3] spherical table) runs ~20x slower on CPU than the same dot on rows of 8, and the
flops (2k per entry) stay negligible next to the application.
"""
import jax
import jax.numpy as jnp

_ROW = (16, 8, 4, 2, 1)   # row widths tried, largest first; the first that divides the size


def materialize(table: jax.Array) -> jax.Array:
  """Returns `table` unchanged, computed as its own kernel before its consumers read it."""
  k = next(r for r in _ROW if table.size % r == 0)
  eye = jnp.eye(k, dtype=table.dtype)
  rows = table.reshape(table.size // k, k)
  return jnp.matmul(rows, eye, precision=jax.lax.Precision.HIGHEST).reshape(table.shape)
