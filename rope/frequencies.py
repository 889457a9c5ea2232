"""Frequency tables of the commuting (2x2-block) RoPE variants.

Every commuting variant rotates pair `j` of head `h` by
`angle[l, h, j] = sum_p positions[l, p] * freqs[h, j, p]`; the variants differ only in the
table `freqs` (and in how positions are designed). Tables are float32 and follow the position
order in their last axis: for images index 0 is `row`, 1 is `col`; for multimodal sequences
0/1/2 are `t/h/w`.

Fixed tables are built with NumPy in float32 exactly as the reference code does (so that
`angles` reproduces HF / rope-vit to the last bit), then handed to JAX as constants.
"""
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rope import _checks


def _inv_freq_np(head_dim: int, theta: float) -> np.ndarray:
  # HF: 1 / theta ** (arange(0, D, 2).float() / D), all float32.
  exps = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
  return (np.float32(1.0) / (np.float32(theta) ** exps)).astype(np.float32)


def _log_warp_np(inv: np.ndarray, log_scale: float) -> np.ndarray:
  # GRAPE's `log_freq_scale`: exp(log(inv) / s) in float32 (= base theta ** (1/s)).
  if not (isinstance(log_scale, (int, float, np.floating)) and not isinstance(log_scale, bool)
          and log_scale > 0):
    raise ValueError(f"`log_scale`={log_scale!r} must be a positive number (1. = no warp).")
  if log_scale == 1:
    return inv
  return np.exp(np.log(inv) / np.float32(log_scale)).astype(np.float32)


def inv_freq(head_dim: int, theta: float = 10000.0, *, log_scale: float = 1.0) -> jax.Array:
  """The 1-D RoPE frequency ladder `theta ** (-2j / D)`.

  Args:
    head_dim: D, even.
    theta: the base ("rope_theta").
    log_scale: GRAPE's `log_freq_scale` s: `exp(log(inv_freq) / s)`, i.e. the ladder of base
      `theta ** (1 / s)` (docs/spec/multimodal_ext.md §4); 1. (default) leaves it unchanged.

  Returns:
    float32 `[D/2]`; entry 0 is the highest frequency (1).
  """
  head_dim = _checks.positive_int("head_dim", head_dim)
  _checks.divisible("head_dim", head_dim, 2, "channels rotate in pairs")
  return jnp.asarray(_log_warp_np(_inv_freq_np(head_dim, theta), log_scale))


def freqs_1d(head_dim: int, theta: float = 10000.0) -> jax.Array:
  """1-D RoPE (RoFormer / LLaMA / Qwen text): `[D/2, 1]`."""
  return inv_freq(head_dim, theta)[:, None]


def _axial_ladder_np(head_dim: int, theta: float) -> np.ndarray:
  # rope-vit: 1 / theta ** (arange(0, dim, 4)[: dim // 4].float() / dim).
  exps = np.arange(0, head_dim, 4, dtype=np.float32)[: head_dim // 4] / np.float32(head_dim)
  return (np.float32(1.0) / (np.float32(theta) ** exps)).astype(np.float32)


def freqs_axial(head_dim: int, theta: float = 100.0, *, first: str = "col") -> jax.Array:
  """rope-vit RoPE-Axial: `[D/2, 2]` in (row, col) order.

  Pairs `0..D/4-1` turn with `col` and pairs `D/4..D/2-1` with `row`, both at
  `theta ** (-4j / D)`. With `theta=10.` and positions `grid_positions(..., scale="pi")` this is
  the Axial RoPE of the Spherical-RoPE paper (`100 ** (-2t/D) == 10 ** (-4t/D)`).
  `first="row"` swaps the halves: pairs `0..D/4-1` turn with `row` (EVA-02, FiT and DINOv3
  order, docs/spec/vision_ext.md §8.6); checkpoints only load with their own order.
  """
  head_dim = _checks.positive_int("head_dim", head_dim)
  _checks.divisible("head_dim", head_dim, 4,
                    "axial RoPE gives a quarter of the channels' pairs to each axis")
  _checks.one_of("first", first, ("col", "row"))
  f = _axial_ladder_np(head_dim, theta)
  table = np.zeros((head_dim // 2, 2), np.float32)
  lo, hi = (1, 0) if first == "col" else (0, 1)
  table[: head_dim // 4, lo] = f   # rope-vit: x = col first
  table[head_dim // 4:, hi] = f    # then y = row
  return jnp.asarray(table)


def init_mixed_freqs(key: jax.Array, num_heads: int, head_dim: int,
                     theta: float = 10.0) -> jax.Array:
  """rope-vit RoPE-Mixed initialisation of one layer's learnable frequencies.

  Magnitudes `m_j = theta ** (-4j / D)`, one random direction `a_h ~ U[0, 2pi)` per head; the
  first half of the pairs points along `a_h`, the second half orthogonal to it:
  rows `j < D/4` are `m_j (sin a_h, cos a_h)`, rows `j >= D/4` are `m_{j-D/4} (cos a_h, -sin a_h)`
  in (row, col) order (rope-vit's `(Fy, Fx)`).

  Args:
    key: PRNG key.
    num_heads: H.
    head_dim: D, divisible by 4.
    theta: base of the magnitude ladder (rope-vit uses 10 for Mixed).

  Returns:
    float32 `[H, D/2, 2]`.
  """
  num_heads = _checks.positive_int("num_heads", num_heads)
  head_dim = _checks.positive_int("head_dim", head_dim)
  _checks.divisible("head_dim", head_dim, 4,
                    "RoPE-Mixed splits the pairs into two orthogonal halves")
  m = jnp.asarray(_axial_ladder_np(head_dim, theta))                        # [D/4]
  a = jax.random.uniform(key, (num_heads, 1), jnp.float32) * (2 * jnp.pi)  # [H, 1]
  s, c = jnp.sin(a), jnp.cos(a)
  first = jnp.stack([m * s, m * c], axis=-1)                               # [H, D/4, 2]
  second = jnp.stack([m * c, -m * s], axis=-1)
  return jnp.concatenate([first, second], axis=1)


def _check_sections(sections: Sequence[int], head_dim: int, name: str = "sections") -> tuple:
  sections = tuple(int(s) for s in sections)
  if len(sections) != 3 or any(s < 0 for s in sections):
    raise ValueError(f"`{name}` must be three non-negative pair counts (t, h, w), "
                     f"got {sections!r}.")
  if sum(sections) != head_dim // 2:
    raise ValueError(
        f"`{name}`={sections} must sum to head_dim/2 = {head_dim // 2} (head_dim={head_dim}); "
        f"the defaults are for head_dim 128, e.g. use (8, 12, 12) chunked or (11, 11, 10) "
        f"interleaved for head_dim 64.")
  return sections


def _table_from_axes(head_dim: int, theta: float, axis_of_pair: np.ndarray) -> jax.Array:
  table = np.zeros((head_dim // 2, 3), np.float32)
  table[np.arange(head_dim // 2), axis_of_pair] = _inv_freq_np(head_dim, theta)
  return jnp.asarray(table)


def _head_dim_even(head_dim: int) -> int:
  head_dim = _checks.positive_int("head_dim", head_dim)
  _checks.divisible("head_dim", head_dim, 2, "channels rotate in pairs")
  return head_dim


def freqs_mrope(head_dim: int, theta: float = 1e6,
                sections: Sequence[int] = (16, 24, 24)) -> jax.Array:
  """Qwen2-VL M-RoPE, chunked allocation: `[D/2, 3]` (t, h, w).

  Pairs `[0, s_t)` read `t`, the next `s_h` read `h`, the last `s_w` read `w`, each at its
  1-D frequency `theta ** (-2j/D)` (so `t` gets the highest frequencies).
  """
  head_dim = _head_dim_even(head_dim)
  sections = _check_sections(sections, head_dim)
  return _table_from_axes(head_dim, theta, np.repeat([0, 1, 2], sections))


def freqs_mrope_interleaved(head_dim: int, theta: float = 1e6,
                            sections: Sequence[int] = (24, 20, 20)) -> jax.Array:
  """MRoPE-Interleave (Qwen3-VL, the paper's MRoPE-I): `[D/2, 3]`.

  Start all-`t`; pairs `1, 4, 7, ... < 3 s_h` read `h`, pairs `2, 5, 8, ... < 3 s_w` read `w`
  (HF's `apply_interleaved_mrope`; `s_t` is not read, `t` keeps whatever is left).
  """
  head_dim = _head_dim_even(head_dim)
  sections = _check_sections(sections, head_dim)
  axis = np.zeros(head_dim // 2, np.int64)
  axis[1:3 * sections[1]:3] = 1
  axis[2:3 * sections[2]:3] = 2
  return _table_from_axes(head_dim, theta, axis)


VIDEOROPE_ALLOCATIONS = ("original", "repo")


def _videorope_axes(head_dim: int, sections: Sequence[int], allocation: str) -> np.ndarray:
  _checks.one_of("allocation", allocation, VIDEOROPE_ALLOCATIONS)
  sections = _check_sections(sections, head_dim)
  s_t, s_h, s_w = sections
  if allocation == "repo":
    # Multimodal-RoPEs' re-implementation (also HoPE's): start all-t, odd j < 2 s_h -> h,
    # even 2 <= j < 2 s_w -> w (pair 0 stays on t).
    j = np.arange(head_dim // 2)
    axis = np.zeros(head_dim // 2, np.int64)
    axis[(j % 2 == 1) & (j < 2 * s_h)] = 1
    axis[(j % 2 == 0) & (j >= 2) & (j < 2 * s_w)] = 2
    return axis
  if s_h != s_w:
    raise ValueError(f"`sections`={sections}: VideoRoPE alternates h and w, so s_h must "
                     f"equal s_w.")
  spatial = np.tile([1, 2], s_h)
  return np.concatenate([spatial, np.zeros(s_t, np.int64)])


def freqs_videorope(head_dim: int, theta: float = 1e6,
                    sections: Sequence[int] = (16, 24, 24), *,
                    allocation: str = "original") -> jax.Array:
  """VideoRoPE's low-frequency temporal allocation (LTA): `[D/2, 3]`.

  `allocation="original"` (VideoRoPE's code): the first `s_h + s_w` pairs alternate `h` (even
  j) and `w` (odd j); the last `s_t` pairs (the lowest frequencies) read `t`.
  `allocation="repo"` (the Multimodal-RoPEs re-implementation, also used by HoPE): start all-`t`,
  odd `j < 2 s_h` read `h`, even `2 <= j < 2 s_w` read `w`; with (16, 24, 24) `t` keeps pair 0
  and pairs 48..63 (docs/spec/multimodal_ext.md §1).
  """
  head_dim = _head_dim_even(head_dim)
  return _table_from_axes(head_dim, theta, _videorope_axes(head_dim, sections, allocation))


def freqs_hope(head_dim: int, theta: float = 1e6, sections: Sequence[int] = (16, 24, 24), *,
               allocation: str = "repo") -> jax.Array:
  """HoPE: `freqs_videorope(...)` with the `t` column zeroed (those pairs are NoPE): `[D/2, 3]`.

  The reference code zeroes the t coordinate of every token (text included), so the pairs
  VideoRoPE gives to `t` carry no position. `allocation="repo"` (default, the reference code)
  also zeroes pair 0, the highest frequency; `"original"` zeroes only the lowest-frequency `t`
  pairs (the paper). docs/spec/multimodal_ext.md §1.
  """
  head_dim = _head_dim_even(head_dim)
  axis = _videorope_axes(head_dim, sections, allocation)
  table = np.zeros((head_dim // 2, 3), np.float32)    # built in NumPy: a constant under jit
  keep = axis != 0
  table[np.arange(head_dim // 2)[keep], axis[keep]] = _inv_freq_np(head_dim, theta)[keep]
  return jnp.asarray(table)


def freqs_mmrope(head_dim: int, theta: float = 1e6,
                 pattern: Sequence[int] = (0, 0, 1, 2, 1, 2, 1, 2)) -> jax.Array:
  """MM-RoPE (Lumos-1): pair `j` reads axis `pattern[j % len(pattern)]` (0 t, 1 h, 2 w).

  The default "meta component" of 8 pairs splits t : h : w as 2 : 3 : 3 over the whole spectrum
  (docs/spec/multimodal_ext.md §3). Returns float32 `[D/2, 3]`.
  """
  head_dim = _head_dim_even(head_dim)
  try:
    pattern = tuple(int(p) for p in pattern)
  except (TypeError, ValueError):
    raise ValueError(f"`pattern`={pattern!r} must be a sequence of axis indices 0, 1, 2.") from None
  if not pattern or any(p not in (0, 1, 2) for p in pattern):
    raise ValueError(f"`pattern`={pattern!r} must be a non-empty sequence of axis indices "
                     f"0 (t), 1 (h), 2 (w).")
  axis = np.asarray(pattern)[np.arange(head_dim // 2) % len(pattern)]
  return _table_from_axes(head_dim, theta, axis)


def freqs_cyclic(head_dim: int, theta: float = 1e6) -> jax.Array:
  """Pair `j` reads axis `j % 3` over all pairs (GRAPE's canonical `"interleaved"`): `[D/2, 3]`.

  Not MRoPE-I's pattern (`freqs_mrope_interleaved`), which stops cycling after `3 s_h` pairs.
  For a warped GRAPE table pass `theta ** (1 / log_scale)` (docs/spec/multimodal_ext.md §4).
  """
  head_dim = _head_dim_even(head_dim)
  return _table_from_axes(head_dim, theta, np.arange(head_dim // 2) % 3)


def freqs_multi_head(num_heads: int, head_dim: int, theta: float = 1e6,
                     head_sections: Sequence[int] = (2, 3, 3)) -> jax.Array:
  """MHRoPE: whole heads per axis, each with the full frequency ladder: `[H, D/2, 3]`.

  KV head `g` reads axis `A(g)` on every pair, `A = [t]*n_t + [h]*n_h + [w]*n_w`; heads beyond
  `sum(head_sections)` get zero frequencies (NoPE). `num_heads` counts key/value heads; with
  grouped-query attention, query head `i` uses KV head `i // (H_q / H_kv)`, i.e.
  `jnp.repeat(freqs, H_q // H_kv, axis=0)` (HF's `repeat_kv`).
  """
  num_heads = _checks.positive_int("num_heads", num_heads)
  head_dim = _head_dim_even(head_dim)
  head_sections = tuple(int(s) for s in head_sections)
  if len(head_sections) != 3 or any(s < 0 for s in head_sections):
    raise ValueError(f"`head_sections` must be three non-negative head counts (t, h, w), "
                     f"got {head_sections!r}.")
  if sum(head_sections) > num_heads:
    raise ValueError(f"`head_sections`={head_sections} asks for {sum(head_sections)} heads "
                     f"but `num_heads`={num_heads} (the number of key/value heads).")
  table = np.zeros((num_heads, head_dim // 2, 3), np.float32)
  axes = np.repeat([0, 1, 2], head_sections)
  table[np.arange(len(axes)), :, axes] = _inv_freq_np(head_dim, theta)
  return jnp.asarray(table)
