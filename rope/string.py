"""STRING (Schenck et al., ICML 2025): Cayley-STRING and Circulant-STRING.

STRING rotates by `expm(sum_a r_a L_a)` with mutually commuting skew generators, which is
`P RoPE(r) P^T` for an orthogonal `P`: exactly shift-equivariant. There is no official code;
the conventions (per-head `P`, dense and block-circulant forms) are those of
docs/spec/vision_ext.md §4.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

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


def circulant_basis(head_dim: int, block: int | None = None) -> np.ndarray:
  """The fixed orthogonal basis `B` in which every (block-)circulant STRING is a RoPE.

  A skew-symmetric circulant generator of size `b` acts on the real Fourier pair
  `(cos 2 pi j k / b, sin 2 pi j k / b)_j` (`0 < k < b/2`) as a plane rotation and is zero on
  the constant (and, for even `b`, the alternating) mode. `B`'s rows are these orthonormal
  vectors of every block of `block` channels, laid out for `apply(layout="half")`: the
  cosine rows of all blocks (`G m` of them, `m = (b - 1) // 2`), then the sine rows in the same
  order, then the fixed modes. So `circulant_string(x, p, c, left=False) = apply(B x, angles)`
  and `circulant_string(x, p, c) = B^T` of that.

  Args:
    head_dim: `D`.
    block: `b`, the circulant block (None: `D`, dense); `D % b == 0`.

  Returns:
    float32 NumPy `[D, D]`, orthogonal (`B B^T = I`).
  """
  b = head_dim if block is None else block
  if not (isinstance(head_dim, int) and isinstance(b, int) and 0 < b <= head_dim
          and head_dim % b == 0):
    raise ValueError(f"`block` must divide `head_dim` {head_dim}, got {block!r}.")
  return _circulant_basis(head_dim, b)[0].astype(np.float32)


@functools.lru_cache(maxsize=None)
def _circulant_basis(d: int, b: int) -> tuple[np.ndarray, np.ndarray]:
  """(`B` float64 `[D, D]` of `circulant_basis`, `sin(2 pi j k / b)` float64 `[b, m]`)."""
  m = (b - 1) // 2
  j = np.arange(b)[:, None]
  k = np.arange(1, m + 1)[None]
  cos, sin = np.cos(2 * np.pi * j * k / b), np.sin(2 * np.pi * j * k / b)   # [b, m]
  fixed = [np.ones(b) / np.sqrt(b)] + ([(-1.0) ** np.arange(b) / np.sqrt(b)] if b % 2 == 0
                                       else [])
  g = d // b
  rows = np.zeros((d, d))
  for blk in range(g):
    cols = slice(blk * b, (blk + 1) * b)
    rows[blk * m:(blk + 1) * m, cols] = cos.T * np.sqrt(2 / b)
    rows[g * m + blk * m:g * m + (blk + 1) * m, cols] = sin.T * np.sqrt(2 / b)
    for f, vec in enumerate(fixed):
      rows[2 * g * m + blk * len(fixed) + f, cols] = vec
  return rows, sin


def circulant_string(x: jax.Array, positions: jax.Array, c: jax.Array, *,
                     left: bool = True) -> jax.Array:
  """Circulant-STRING: `ifft(exp(sum_a positions[..., a] lambda_a) * fft(x))` per head.

  The generator of axis `a` is `C_a - C_a^T` with `C_a` circulant, first column `c_a`
  (`C[i, j] = c[(i - j) mod n]`); the DFT diagonalises it with eigenvalues
  `lambda_a = fft(c_a) - conj(fft(c_a)) = 2i Im(fft(c_a))`, so the rotation is a phase per
  frequency. Dense `c [A, H|1, D]` acts on the whole head; block-circulant
  `c [A, H|1, D/b, b]` on each block of `b` channels. `c = 0` is the identity.

  Computed without complex numbers (the same map to float32 rounding): in the real Fourier
  basis `B = circulant_basis(D, b)` each frequency `k` is a plane rotation by
  `sum_a positions[..., a] 2 sum_j c_a[j] sin(2 pi j k / b)`, i.e. a RoPE with learned
  frequencies, `B^T apply(B x, angles)`: two `[D, D]` products shared by every head (one
  large matmul each, fast on every backend; FFTs of 64 points are not) and a `half`-layout
  rotation. `left=False` drops the final `B^T`: `q^T k` logits are unchanged (`B` is
  orthogonal) for one product less.

  Args:
    x: `[..., L, H, D]`.
    positions: `[..., L, A]`.
    c: `[A, H|1, D]` or `[A, H|1, D/b, b]`.
    left: apply the final `B^T` (the STRING rotation itself); False: its coordinates in `B`.

  Returns:
    Same shape and dtype as `x` (float32 arithmetic).
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
  basis, sin = _circulant_basis(d, b)
  m = sin.shape[1]
  cb = c.astype(jnp.float32).reshape(c.shape[0], c.shape[1], nb, b)       # [A, H|1, G, b]
  # Frequencies 2 sum_j c[j] sin(2 pi j k / b) = -2 Im(fft(c))_k: [A, H|1, G m].
  freqs = 2.0 * jnp.einsum("ahgj,jk->ahgk", cb, jnp.asarray(sin, jnp.float32),
                           precision=_HIGHEST).reshape(c.shape[0], c.shape[1] * nb * m)
  angles = jnp.matmul(positions.astype(jnp.float32), freqs, precision=_HIGHEST)
  angles = angles.reshape(positions.shape[:-1] + (c.shape[1], nb * m))    # [..., L, H|1, G m]
  basis = jnp.asarray(basis, jnp.float32)
  z = jnp.einsum("ij,...j->...i", basis, x.astype(jnp.float32), precision=_HIGHEST)
  if m:
    z = rotary.apply(z, angles, layout="half", rotary_dim=2 * nb * m)
  if left:
    z = jnp.einsum("ji,...j->...i", basis, z, precision=_HIGHEST)
  return z.astype(x.dtype)
