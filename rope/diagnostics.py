"""Diagnostics: Per-Token Distance (Circle-RoPE) and the shift-equivariance probe."""
from typing import Callable

import jax
import jax.numpy as jnp

_HIGHEST = jax.lax.Precision.HIGHEST


def ptd(text_positions: jax.Array, image_positions: jax.Array) -> jax.Array:
  """Per-Token Distance (circle_rope.md §3).

  Mean over text tokens of the mean absolute deviation of that token's Euclidean distances to
  the image tokens. 0 means every text token is equidistant from every image token.

  Args:
    text_positions: `[N_text, P]`.
    image_positions: `[N_image, P]`.

  Returns:
    float32 scalar.
  """
  t = jnp.asarray(text_positions, jnp.float32)
  i = jnp.asarray(image_positions, jnp.float32)
  if t.ndim != 2 or i.ndim != 2 or t.shape[-1] != i.shape[-1]:
    raise ValueError(f"`text_positions` [N_text, P] and `image_positions` [N_image, P] must be "
                     f"2-D with the same P, got {t.shape} and {i.shape}.")
  if t.shape[0] == 0 or i.shape[0] == 0:
    raise ValueError("`text_positions` and `image_positions` need at least one token each.")
  diff = t[:, None, :] - i[None, :, :]
  d = jnp.sqrt(jnp.sum(diff * diff, axis=-1))                       # [N_text, N_image]
  return jnp.mean(jnp.abs(d - jnp.mean(d, axis=1, keepdims=True)))


def relative_logit_gap(rotate: Callable[[jax.Array, jax.Array], jax.Array],
                       positions: jax.Array, shift: jax.Array, *, key: jax.Array,
                       head_dim: int) -> jax.Array:
  """How far an encoding is from shift-equivariance.

  Draws standard-normal q, k `[L, 1, D]` and returns the largest absolute change of the
  token-to-token logits `q'_i . k'_j` (unscaled) when every position moves by `shift`. A
  relative (shift-equivariant) encoding gives 0 up to float32 rounding.

  Args:
    rotate: `rotate(x [L, 1, D], positions [L, P]) -> x'`.
    positions: `[L, P]`.
    shift: `[P]`, added to every position.
    key: PRNG key for q and k.
    head_dim: D.

  Returns:
    float32 scalar.
  """
  positions = jnp.asarray(positions, jnp.float32)
  shift = jnp.asarray(shift, jnp.float32)
  if positions.ndim != 2 or shift.shape != positions.shape[-1:]:
    raise ValueError(f"`positions` must be [L, P] and `shift` [P], got {positions.shape} and "
                     f"{shift.shape}.")
  kq, kk = jax.random.split(key)
  shape = (positions.shape[0], 1, int(head_dim))
  q = jax.random.normal(kq, shape, jnp.float32)
  k = jax.random.normal(kk, shape, jnp.float32)

  def logits(pos):
    qr, kr = rotate(q, pos)[:, 0], rotate(k, pos)[:, 0]
    return jnp.matmul(qr, kr.T, precision=_HIGHEST)

  return jnp.max(jnp.abs(logits(positions + shift) - logits(positions)))
