"""A fusion barrier for small rotation tables.

Why this exists: XLA:CPU fuses cheap-looking producers (cos, sin, the 3x3 spherical matrices)
into every element of the consumer that broadcasts them over batch and heads, so the trig runs
B*H times per table entry: measured 9-17x slower than applying precomputed tables on
[8, 1024, 6, 64]. `jax.lax.optimization_barrier` does not stop that fusion; a dot does, since
XLA never fuses a dot into a loop fusion. Multiplying by the identity at HIGHEST precision is
exact (every output is one product by 1.0 plus zeros) and costs L*H*W*W flops for a table of
width W, nothing next to the application itself.
"""
import jax
import jax.numpy as jnp


def materialize(table: jax.Array) -> jax.Array:
  """Returns `table` unchanged, computed as its own kernel before its consumers read it."""
  eye = jnp.eye(table.shape[-1], dtype=table.dtype)
  return jnp.matmul(table, eye, precision=jax.lax.Precision.HIGHEST)
