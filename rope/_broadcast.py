"""Reverse of broadcasting, for the hand-written VJPs of the rotation kernels.

Why not `jnp.sum`: XLA:CPU reduces a major axis with a strided inner loop, measured 27x slower
than the same sum written as unrolled adds of whole slices ([8, 1024, 6, 32] summed over the
8: 13.7 ms vs 0.51 ms), and the VJPs of the rotations sum over the batch. Long axes go through
a ones-vector matmul (1.5x the unrolled adds, any length).
"""
import jax
import jax.numpy as jnp

_UNROLL_MAX = 32   # axes up to this length are summed as unrolled adds


def _sum_axis0(a: jax.Array) -> jax.Array:
  n = a.shape[0]
  if n <= _UNROLL_MAX:
    out = a[0]
    for i in range(1, n):
      out = out + a[i]
    return out
  ones = jnp.ones((1, n), a.dtype)
  flat = jnp.matmul(ones, a.reshape(n, -1), precision=jax.lax.Precision.HIGHEST)
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
