"""The kernels every rope rotation is built from: plain jax.numpy, with an XLA:CPU special case.

Each function here computes the plain formulation (`jnp.cos` / `jnp.sin`, `jnp.concatenate` /
`jnp.stack`, autodiff, dots at HIGHEST precision) on every backend, and switches to the kernel
of `rope/_cpu.py` only when the program is lowered for CPU, through
`jax.lax.platform_dependent(..., cpu=..., default=...)`. Lowering keeps only the branch of the
target platform, so a program exported for TPU / GPU never contains the CPU kernels (and a CPU
program does not contain the plain branch). Both branches are traced, so jit, vmap and grad work
as for `lax.switch`; on CPU results equal the plain formulation up to float32 rounding
(tests/test_rope_backends.py).
"""
import functools

import jax
import jax.numpy as jnp

from rope import _cpu

_HIGHEST = jax.lax.Precision.HIGHEST


def dispatch(*args, cpu, default):
  """`cpu(*args)` when lowering for CPU, else `default(*args)`."""
  return jax.lax.platform_dependent(*args, cpu=cpu, default=default)


# --------------------------------------------------------------------------------- trig

def _plain_cos_sin(x):
  return jnp.cos(x), jnp.sin(x)


def _cpu_cos_sin_table(x):
  return tuple(_cpu.materialize(t) for t in _cpu.cos_sin(x))


def cos_sin(x: jax.Array, *, table: bool = False):
  """`(cos x, sin x)` of float32 `x`.

  `table=True` is for small tables that a rotation will broadcast over batch and heads: on CPU
  they are then computed as their own kernel (`_cpu.materialize`); elsewhere it changes nothing.
  """
  x = jnp.asarray(x, jnp.float32)
  return dispatch(x, cpu=_cpu_cos_sin_table if table else _cpu.cos_sin,
                   default=_plain_cos_sin)


# ----------------------------------------------------------------------- concatenation

def concat_channels(parts):
  """`jnp.concatenate(parts, axis=-1)` (same leading shape and dtype); on CPU a sum of
  zero-padded copies, which XLA:CPU fuses into the producers' loop (`_cpu.concat_by_padding`)."""
  parts = tuple(parts)
  return dispatch(*parts, cpu=lambda *p: _cpu.concat_by_padding(p),
                  default=lambda *p: jnp.concatenate(p, axis=-1))


# ----------------------------------------------------------------------- pair rotations

def _split_pairs(x, layout):
  half = x.shape[-1] // 2
  if layout == "half":
    return x[..., :half], x[..., half:]
  return x[..., 0::2], x[..., 1::2]


def _plain_rotate_pairs(x, cos, sin, *, layout):
  x1, x2 = _split_pairs(x, layout)
  y1, y2 = x1 * cos - x2 * sin, x2 * cos + x1 * sin
  if layout == "half":
    return jnp.concatenate([y1, y2], axis=-1)
  return jnp.stack([y1, y2], axis=-1).reshape(y1.shape[:-1] + (2 * y1.shape[-1],))


def rotate_pairs(x, cos, sin, *, layout: str, materialize: bool = True):
  """Pair `(x1, x2)` -> `(x1 cos - x2 sin, x2 cos + x1 sin)`; float32 `x [..., D]`, tables
  `[..., D/2]` broadcasting against `x`'s pairs. `materialize` only matters on CPU."""
  return dispatch(
      x, cos, sin,
      cpu=functools.partial(_cpu.rotate_pairs, layout=layout, materialize_tables=materialize),
      default=functools.partial(_plain_rotate_pairs, layout=layout))


# ---------------------------------------------------------------------- block rotations

def _plain_rotate_blocks(xb, rotations):
  # A product of real (non-identity) matrices: HIGHEST, or TPU / recent GPUs would round both
  # operands to bfloat16 / tf32.
  return jnp.einsum("...ij,...j->...i", rotations, xb, precision=_HIGHEST)


def rotate_blocks(xb, rotations):
  """`R @ x` per block: float32 `xb [..., G, g]`, `rotations [..., G, g, g]` (broadcasting)."""
  return dispatch(xb, rotations, cpu=_cpu.rotate_blocks, default=_plain_rotate_blocks)


# ------------------------------------------------------------------------ Spherical RoPE

def _split_thirds(x, layout):
  t = x.shape[-1] // 3
  if layout == "thirds":
    return x[..., :t], x[..., t:2 * t], x[..., 2 * t:]
  return x[..., 0::3], x[..., 1::3], x[..., 2::3]


def _plain_rotate_spherical(x, ca, sa, cb, sb, *, layout):
  u, v, w = _split_thirds(x, layout)
  t = sa * u + ca * w                           # row turns the (u, w) plane by alpha
  parts = (ca * u - sa * w, cb * v - sb * t, sb * v + cb * t)   # col turns (v, t) by beta
  if layout == "thirds":
    return jnp.concatenate(parts, axis=-1)
  return jnp.stack(parts, axis=-1).reshape(u.shape[:-1] + (3 * u.shape[-1],))


def rotate_spherical(x, ca, sa, cb, sb, *, layout: str, materialize: bool = True):
  """Spherical RoPE's two rounds of plane rotations of float32 `x [..., D]`."""
  return dispatch(
      x, ca, sa, cb, sb,
      cpu=functools.partial(_cpu.rotate_spherical, layout=layout,
                            materialize_tables=materialize),
      default=functools.partial(_plain_rotate_spherical, layout=layout))


# ------------------------------------------------------------------------------ matmul

def plain_matmul(a, b):
  """`a @ b`, float32 exact on every backend (HIGHEST)."""
  return jnp.matmul(a, b, precision=_HIGHEST)


# ---------------------------------------------------------------------- Cayley transform

def _plain_cayley(S):
  eye = jnp.eye(S.shape[-1], dtype=S.dtype)
  return jnp.linalg.solve(eye + S, jnp.broadcast_to(eye, S.shape) - S)


def cayley(S: jax.Array) -> jax.Array:
  """`(I + S)^-1 (I - S)` of float32 skew-symmetric `S` `[..., D, D]` (on CPU without LAPACK)."""
  return dispatch(S, cpu=_cpu.cayley, default=_plain_cayley)
