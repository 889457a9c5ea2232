"""Rotary schemes of the vision-language decoder: scheme -> positions, frequencies, angles.

A scheme is a pair (position design, frequency allocation) (`multimodal_rope.md` §9,
`circle_rope.md` §7):

| scheme             | `rope.multimodal_positions` scheme | frequency table                |
|--------------------|------------------------------------|--------------------------------|
| "vanilla"          | "vanilla"                          | `freqs_1d` on the t column     |
| "v2pe"             | "v2pe"                             | `freqs_1d` on the t column     |
| "mrope"            | "mrope"                            | `freqs_mrope` (chunked)        |
| "mrope_interleave" | "spatial_reset"                    | `freqs_mrope_interleaved`      |
| "mhrope"           | "spatial_reset"                    | `freqs_multi_head` (KV heads)  |
| "videorope"        | "videorope"                        | original VideoRoPE allocation  |
| "circle"           | "circle"                           | `freqs_mrope` (chunked)        |
| "circle_age"       | "circle", and "mrope" for the      | `freqs_mrope` (chunked)        |
|                    | layers `age_schedule` leaves False |                                |

Every layer uses one of at most two id sets: the primary `positions` and, for "circle_age"
only, `positions_alt` (the M-RoPE ids of the same segments). Angles are computed once per id
set per forward pass and shared by all layers that read that set; that is what keeps every
scheme as cheap as 1-D RoPE.

Everything here is a pure function of static settings (config values, shapes) and arrays; the
checks raise `ValueError` on the host, before anything is traced.
"""
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

import rope

SCHEMES = ("vanilla", "mrope", "mrope_interleave", "mhrope", "videorope", "v2pe",
           "circle", "circle_age")

# Which `rope.multimodal_positions` design each scheme's primary ids come from.
POSITION_SCHEME = {
    "vanilla": "vanilla",
    "v2pe": "v2pe",
    "mrope": "mrope",
    "mrope_interleave": "spatial_reset",
    "mhrope": "spatial_reset",
    "videorope": "videorope",
    "circle": "circle",
    "circle_age": "circle",
}
# The id set of the layers that do not use the primary ids (AGE's M-RoPE layers).
ALT_POSITION_SCHEME = {"circle_age": "mrope"}

AGE_STRATEGIES = ("alternate", "lower", "upper", "all")


class RotarySettings(NamedTuple):
  """Everything the decoder needs to know about its rotary scheme (all static)."""
  scheme: str
  head_dim: int
  num_heads: int       # query heads
  num_kv_heads: int
  theta: float
  sections: Optional[tuple]       # (t, h, w) pair counts; None = `default_sections`
  head_sections: Optional[tuple]  # MHRoPE (t, h, w) KV-head counts; None = default
  num_layers: int
  age_strategy: str = "alternate"


def check_scheme(scheme: Any) -> str:
  if scheme not in SCHEMES:
    raise ValueError(f"`scheme`={scheme!r} is not a known rotary scheme; allowed: "
                     f"{', '.join(map(repr, SCHEMES))}.")
  return scheme


def default_sections(scheme: str, head_dim: int) -> Optional[tuple]:
  """Pair counts (t, h, w) summing to D/2, scaled from the D = 128 defaults.

  Chunked (M-RoPE, Circle-RoPE) and VideoRoPE: 16:24:24 of 64 pairs -> (D/8, 3D/16, 3D/16),
  e.g. (8, 12, 12) for D = 64. Interleaved (MRoPE-I): 24:20:20 -> h = w = floor(5D/32), t the
  rest, e.g. (12, 10, 10) for D = 64 (t is not read by the interleaved table anyway).
  1-D and multi-head schemes have no pair sections (None).
  """
  half = head_dim // 2
  if scheme in ("mrope", "circle", "circle_age", "videorope"):
    if head_dim % 16:
      raise ValueError(
          f"`head_dim`={head_dim}: the default (t, h, w) sections of scheme {scheme!r} "
          f"(16:24:24 of D/2) need head_dim divisible by 16; set `sections` explicitly.")
    return (head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16)
  if scheme == "mrope_interleave":
    s = (5 * head_dim) // 32
    return (half - 2 * s, s, s)
  return None


def default_head_sections(num_kv_heads: int) -> tuple:
  """MHRoPE KV heads per axis (t, h, w): (2, 3, 3) of 8 (the repo default), scaled.

  h and w get floor(3 n / 8) heads each (at least 1) and t the rest, so no head is NoPE and
  text-only inputs reproduce 1-D RoPE exactly.
  """
  n_hw = max(1, (3 * num_kv_heads) // 8)
  n_t = num_kv_heads - 2 * n_hw
  if n_t < 1:
    raise ValueError(
        f"scheme 'mhrope' gives whole key/value heads to t, h and w, so it needs "
        f"`num_kv_heads` >= 3, got {num_kv_heads}.")
  return (n_t, n_hw, n_hw)


def validate(settings: RotarySettings) -> None:
  """Raises ValueError (naming the option) if the scheme cannot be built for these shapes."""
  check_scheme(settings.scheme)
  if settings.head_dim % 2:
    raise ValueError(f"`head_dim`={settings.head_dim} must be even (channels rotate in pairs).")
  if settings.num_heads % settings.num_kv_heads:
    raise ValueError(f"`num_heads`={settings.num_heads} must be a multiple of "
                     f"`num_kv_heads`={settings.num_kv_heads} (grouped-query attention).")
  if settings.scheme == "circle_age" and settings.age_strategy not in AGE_STRATEGIES:
    raise ValueError(f"`age_strategy`={settings.age_strategy!r} is not supported; allowed: "
                     f"{', '.join(map(repr, AGE_STRATEGIES))}.")
  if settings.scheme == "mhrope" and settings.head_sections is not None:
    hs = tuple(settings.head_sections)
    if len(hs) != 3 or any(int(s) < 0 for s in hs) or sum(hs) > settings.num_kv_heads:
      raise ValueError(
          f"`head_sections`={hs} must be three KV-head counts (t, h, w) with sum <= "
          f"`num_kv_heads`={settings.num_kv_heads}.")
  if settings.scheme == "videorope":
    s_t, s_h, s_w = _sections(settings)
    if s_h != s_w:
      raise ValueError(f"`sections`={(s_t, s_h, s_w)}: VideoRoPE alternates h and w pairs, "
                       f"so s_h must equal s_w.")
  # Builds the table once with concrete numbers: rope's own checks (sections summing to D/2,
  # head counts, ...) raise here, on the host, with their messages.
  kv_freqs(settings)


def _sections(settings: RotarySettings) -> tuple:
  if settings.sections is not None:
    return tuple(int(s) for s in settings.sections)
  return default_sections(settings.scheme, settings.head_dim)


def videorope_freqs(head_dim: int, theta: float, sections: Sequence[int]) -> jax.Array:
  """VideoRoPE's original allocation (LTA): `[D/2, 3]` in (t, h, w) order.

  Pairs 0 .. s_h + s_w - 1 alternate h (even j) and w (odd j); the last s_t pairs (the lowest
  frequencies) read t (Wiselnn570/VideoRoPE; `multimodal_rope.md` §3 and §7.1-2).
  """
  s_t, s_h, s_w = (int(s) for s in sections)
  if s_t + s_h + s_w != head_dim // 2:
    raise ValueError(f"`sections`={tuple(sections)} must sum to head_dim/2 = {head_dim // 2}.")
  axis = np.zeros(head_dim // 2, np.int64)
  axis[:s_h + s_w:2] = 1
  axis[1:s_h + s_w:2] = 2
  onehot = jnp.asarray(np.eye(3, dtype=np.float32)[axis])       # [D/2, 3]
  return rope.inv_freq(head_dim, theta)[:, None] * onehot


def kv_freqs(settings: RotarySettings) -> jax.Array:
  """The scheme's frequency table for the key heads.

  Returns:
    `[D/2, 1]` (1-D schemes, read with positions[..., :1]), `[D/2, 3]` (shared by all heads) or
    `[H_kv, D/2, 3]` (MHRoPE).
  """
  s, d, theta = settings.scheme, settings.head_dim, settings.theta
  if s in ("vanilla", "v2pe"):
    return rope.freqs_1d(d, theta)
  if s in ("mrope", "circle", "circle_age"):
    return rope.freqs_mrope(d, theta, sections=_sections(settings))
  if s == "mrope_interleave":
    return rope.freqs_mrope_interleaved(d, theta, sections=_sections(settings))
  if s == "videorope":
    return videorope_freqs(d, theta, _sections(settings))
  if s == "mhrope":
    hs = settings.head_sections
    if hs is None:
      hs = default_head_sections(settings.num_kv_heads)
    return rope.freqs_multi_head(settings.num_kv_heads, d, theta, head_sections=tuple(hs))
  check_scheme(s)
  raise AssertionError(f"scheme {s!r} has no frequency table")


def layer_uses_alt(settings: RotarySettings) -> tuple:
  """Per layer, True where the layer reads `positions_alt` instead of `positions`.

  Only "circle_age" has such layers: those where `rope.age_schedule` is False (its M-RoPE
  layers).
  """
  if settings.scheme != "circle_age":
    return (False,) * settings.num_layers
  schedule = np.asarray(rope.age_schedule(settings.num_layers, settings.age_strategy))
  return tuple(not bool(c) for c in schedule)


class Angles(NamedTuple):
  """Rotary tables of one id set, computed once per forward pass.

  `angles`: the key angles `[B, L, 1|H_kv, D/2]` (kept for inspection); `cos_k`, `sin_k` their
  cosines and sines; `cos_q`, `sin_q` the query tables `[B, L, 1|H_q, D/2]` (for MHRoPE each
  KV head's tables repeated `H_q / H_kv` times: query head i <-> KV head i // n_rep, as HF's
  `repeat_kv`; otherwise the key tables themselves).
  """
  angles: jax.Array
  cos_q: jax.Array
  sin_q: jax.Array
  cos_k: jax.Array
  sin_k: jax.Array


def angles(settings: RotarySettings, positions: jax.Array, freqs: jax.Array) -> Angles:
  """Rotary tables of one id set.

  Args:
    settings: the scheme.
    positions: `[B, L, 3]` float32 (t, h, w).
    freqs: `kv_freqs(settings)`.

  Returns:
    `Angles`. cos/sin are taken once here so that no layer (and no query head group) computes
    them again: every scheme then costs the same per layer as 1-D RoPE.
  """
  if freqs.ndim == 2 and freqs.shape[-1] == 1:
    positions = positions[..., :1]     # 1-D schemes: the three columns are equal for text
  k = rope.angles(positions.astype(jnp.float32), freqs)
  cos_k, sin_k = jnp.cos(k), jnp.sin(k)
  n_rep = settings.num_heads // settings.num_kv_heads
  if k.shape[-2] > 1 and n_rep > 1:
    cos_q, sin_q = jnp.repeat(cos_k, n_rep, axis=-2), jnp.repeat(sin_k, n_rep, axis=-2)
  else:
    cos_q, sin_q = cos_k, sin_k
  return Angles(k, cos_q, sin_q, cos_k, sin_k)


def layer_angles(settings: RotarySettings, positions: jax.Array,
                 positions_alt: jax.Array) -> list:
  """Per-layer angles, each id set computed once and shared by the layers that read it.

  Args:
    settings: the scheme.
    positions: `[B, L, 3]` primary ids.
    positions_alt: `[B, L, 3]` ids of the AGE M-RoPE layers (ignored by other schemes).

  Returns:
    a list of `num_layers` `Angles` (the same objects repeated).
  """
  freqs = kv_freqs(settings)
  uses_alt = layer_uses_alt(settings)
  main = angles(settings, positions, freqs)
  alt = angles(settings, positions_alt, freqs) if any(uses_alt) else None
  return [alt if a else main for a in uses_alt]


def position_options(scheme: str, *, temporal_stride: Optional[float] = None,
                     visual_stride: Optional[float] = None,
                     circle_alpha: float = 0.5, circle_radius: Any = 10.0) -> dict:
  """Keyword options for `rope.multimodal_positions` of the scheme's primary ids."""
  pos_scheme = POSITION_SCHEME[check_scheme(scheme)]
  if pos_scheme in ("mrope", "spatial_reset", "videorope"):
    return {} if temporal_stride is None else {"temporal_stride": temporal_stride}
  if pos_scheme == "v2pe":
    return {} if visual_stride is None else {"visual_stride": visual_stride}
  if pos_scheme == "circle":
    return {"alpha": circle_alpha, "radius": circle_radius}
  return {}


def sequence_positions(scheme: str, segments: Sequence[Any], **options):
  """Positions of one unpadded sequence for a scheme.

  Args:
    scheme: one of `SCHEMES`.
    segments: `rope.Text` / `rope.Image` / `rope.Video` list (grids after the 2x2 merge).
    **options: `position_options` keywords (temporal_stride, visual_stride, circle_alpha,
      circle_radius).

  Returns:
    `(positions [L, 3], next_position, positions_alt [L, 3], next_position_alt)`; the alt pair
    equals the primary pair except for "circle_age" (its M-RoPE ids).
  """
  check_scheme(scheme)
  pos_scheme = POSITION_SCHEME[scheme]
  if pos_scheme == "circle":
    for seg in segments:
      if isinstance(seg, rope.Video) and seg.t > 1:
        raise ValueError(
            f"`scheme`={scheme!r} cannot place {seg!r}: Circle-RoPE maps single images onto "
            f"its circle and has no rule for videos with t > 1 frames (circle_rope.md §6-8). "
            f"Use Video(1, h, w) frames, or a scheme for video: "
            f"{', '.join(repr(s) for s in SCHEMES if not s.startswith('circle'))}.")
  positions, nxt = rope.multimodal_positions(segments, pos_scheme,
                                             **position_options(scheme, **options))
  if scheme in ALT_POSITION_SCHEME:
    alt_scheme = ALT_POSITION_SCHEME[scheme]
    alt, nxt_alt = rope.multimodal_positions(
        segments, POSITION_SCHEME[alt_scheme],
        **position_options(alt_scheme, temporal_stride=options.get("temporal_stride")))
  else:
    alt, nxt_alt = positions, nxt
  return positions, nxt, alt, nxt_alt
