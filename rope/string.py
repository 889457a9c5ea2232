"""STRING (Schenck et al., ICML 2025): Cayley-STRING and Circulant-STRING.

STRING rotates by `expm(sum_a r_a L_a)` with mutually commuting skew generators, which is
`P RoPE(r) P^T` for an orthogonal `P`: exactly shift-equivariant. There is no official code;
the conventions (per-head `P`, dense and block-circulant forms) are those of
docs/spec/vision_ext.md §4.
"""
import jax
import jax.numpy as jnp

from rope import _kernels
from rope import rotary

_HIGHEST = jax.lax.Precision.HIGHEST


def cayley(S: jax.Array) -> jax.Array:
  """Cayley transform `(I - S)(I + S)^-1`, orthogonal for skew-symmetric `S`.

  Computed as the linear solve `(I + S)^-1 (I - S)` (the two factors commute); when lowered
  for CPU, that solve is a Gauss-Jordan elimination instead of LAPACK, whose batched kernels
  can deadlock XLA:CPU's thread pool (rope/_cpu.py; equal to float32 rounding, and stable
  without pivoting for skew-symmetric `S`, the transform's domain). `S = 0` gives `I`.

  Args:
    S: `[..., D, D]` (skew-symmetric, e.g. `triu(W, 1) - triu(W, 1)^T`).

  Returns:
    float32 `[..., D, D]`.
  """
  S = jnp.asarray(S)
  if S.ndim < 2 or S.shape[-1] != S.shape[-2]:
    raise ValueError(f"`S` must be [..., D, D] (square), got shape {S.shape}.")
  return _kernels.cayley(S.astype(jnp.float32))


def apply_dense(x: jax.Array, M: jax.Array, *, transpose: bool = False) -> jax.Array:
  """Per-head dense map `M x` (or `M^T x`) on the channels.

  Args:
    x: `[..., L, H, D]`.
    M: `[H|1, D, D]`.
    transpose: multiply by `M^T` instead.

  Returns:
    Same shape and dtype as `x` (float32 arithmetic at HIGHEST precision).
  """
  x = jnp.asarray(x)
  M = jnp.asarray(M)
  if x.ndim < 3:
    raise ValueError(f"`x` must be [..., L, H, D], got shape {x.shape}.")
  d, h = x.shape[-1], x.shape[-2]
  if M.ndim != 3 or M.shape[-2:] != (d, d) or M.shape[0] not in (1, h):
    raise ValueError(f"`M` must be [H|1, D, D] = [{h}|1, {d}, {d}] for `x` of shape {x.shape}, "
                     f"got {M.shape}.")
  eq = "hji,...hj->...hi" if transpose else "hij,...hj->...hi"
  y = jnp.einsum(eq, M.astype(jnp.float32), x.astype(jnp.float32), precision=_HIGHEST)
  return y.astype(x.dtype)


def string_cayley(x: jax.Array, angles: jax.Array, P: jax.Array, *,
                  layout: str = "interleaved", left: bool = True) -> jax.Array:
  """Cayley-STRING: `P @ RoPE(angles) @ P^T @ x` per token and head.

  `left=False` drops the leading `P` (`RoPE(angles) P^T x`): `q^T k` logits are unchanged,
  since `P` is orthogonal, for one product less; at inference `P^T` folds into `W_q`, `W_k`.

  Args:
    x: `[..., L, H, D]`.
    angles: `[..., L, 1|H, D/2]` of the base RoPE (any commuting table, `rope.angles`).
    P: `[H|1, D, D]` orthogonal, e.g. `cayley(S)`.
    layout: the base RoPE's pair layout.
    left: apply the leading `P`.

  Returns:
    Same shape and dtype as `x`.
  """
  x = jnp.asarray(x)
  y = rotary.apply(apply_dense(x.astype(jnp.float32), P, transpose=True), angles, layout=layout)
  if left:
    y = apply_dense(y, P)
  return y.astype(x.dtype)


def circulant_string(x: jax.Array, positions: jax.Array, c: jax.Array) -> jax.Array:
  """Circulant-STRING: `ifft(exp(sum_a positions[..., a] lambda_a) * fft(x))` per head.

  The generator of axis `a` is `C_a - C_a^T` with `C_a` circulant, first column `c_a`
  (`C[i, j] = c[(i - j) mod n]`); the DFT diagonalises it with eigenvalues
  `lambda_a = fft(c_a) - conj(fft(c_a)) = 2i Im(fft(c_a))`, so the rotation is a phase per
  frequency, `O(D log D)` per token. Dense `c [A, H|1, D]` acts on the whole head;
  block-circulant `c [A, H|1, D/b, b]` on each block of `b` channels. `c = 0` is the identity.

  Args:
    x: `[..., L, H, D]`.
    positions: `[..., L, A]`.
    c: `[A, H|1, D]` or `[A, H|1, D/b, b]`.

  Returns:
    Same shape and dtype as `x` (float32 / complex64 arithmetic).
  """
  x = jnp.asarray(x)
  positions = jnp.asarray(positions)
  c = jnp.asarray(c)
  if x.ndim < 3:
    raise ValueError(f"`x` must be [..., L, H, D], got shape {x.shape}.")
  l, h, d = x.shape[-3:]
  if c.ndim not in (3, 4) or c.shape[1] not in (1, h):
    raise ValueError(f"`c` must be [A, H|1, D] (dense) or [A, H|1, D/b, b] (block-circulant) "
                     f"with H={h}, got shape {c.shape}.")
  b = c.shape[-1]
  nb = 1 if c.ndim == 3 else c.shape[2]
  if nb * b != d:
    raise ValueError(f"`c` {c.shape} covers {nb * b} channels but `x` has head_dim {d}.")
  if positions.ndim < 2 or positions.shape[-1] != c.shape[0] or positions.shape[-2] != l:
    raise ValueError(f"`positions` must be [..., L, A] = [..., {l}, {c.shape[0]}] (tokens of "
                     f"`x`, axes of `c`), got {positions.shape}.")
  cb = c.astype(jnp.float32).reshape(c.shape[0], c.shape[1], nb, b)       # [A, H|1, G, b]
  lam = 2.0 * jnp.imag(jnp.fft.fft(cb, axis=-1))                         # [A, H|1, G, b]
  pos = positions.astype(jnp.float32)
  phase = jnp.matmul(pos, lam.reshape(lam.shape[0], -1), precision=_HIGHEST)
  phase = phase.reshape(pos.shape[:-1] + lam.shape[1:])                  # [..., L, H|1, G, b]
  xb = x.astype(jnp.float32).reshape(x.shape[:-1] + (nb, b))             # [..., L, H, G, b]
  y = jnp.fft.ifft(jax.lax.complex(jnp.cos(phase), jnp.sin(phase)) * jnp.fft.fft(xb, axis=-1),
                   axis=-1)
  return jnp.real(y).reshape(x.shape).astype(x.dtype)
