"""The rotary schemes of the vision-language decoder: one registry entry per scheme.

A *scheme* (config key `model.scheme`) is everything the decoder's rotary embedding does:

  * its *position design*: how a sequence of `rope.Text` / `rope.Image` / `rope.Video` segments
    becomes (t, h, w) position ids (`rope.multimodal_positions(segments, design, **options)`),
    with the design options it reads from the model config;
  * an optional alternate id set (`alt_design`, Circle-RoPE's AGE) and which layers read it;
  * its frequency table (shared by all heads, or per key/value head for MHRoPE), its (t, h, w)
    pair sections and the checks of head_dim / sections;
  * the ids of a generated token (the decoding rule: text following the prompt);
  * how the per-layer tables are built from the ids and how they rotate q and k.

Every entry says all of this once; `models/vlm.py` looks `model.scheme` up once
(`SCHEMES.get`) and keeps the entry, the data pipeline receives the entry's position function
(`positions_fn(model_config)`), and nothing else branches on the name. The table of designs
and allocations is docs/spec/multimodal_rope.md §4 and §9, docs/spec/circle_rope.md §7.

| scheme             | position design   | frequency table                     |
|--------------------|-------------------|-------------------------------------|
| "vanilla"          | "vanilla"         | `freqs_1d` on the t column          |
| "v2pe"             | "v2pe"            | `freqs_1d` on the t column          |
| "mrope"            | "mrope"           | `freqs_mrope` (chunked)             |
| "mrope_interleave" | "spatial_reset"   | `freqs_mrope_interleaved`           |
| "mhrope"           | "spatial_reset"   | `freqs_multi_head` (KV heads)       |
| "videorope"        | "videorope"       | original VideoRoPE allocation       |
| "circle"           | "circle"          | `freqs_mrope` (chunked)             |
| "circle_age"       | "circle", and     | `freqs_mrope` (chunked)             |
|                    | "mrope" (alt) for |                                     |
|                    | the layers        |                                     |
|                    | `age_schedule`    |                                     |
|                    | leaves False      |                                     |
| "hope"             | "hope" (random    | `freqs_hope` (repo allocation, t    |
|                    | temporal scale in | pairs NoPE)                         |
|                    | training)         |                                     |
| "ilrope"           | "ilrope"          | `freqs_mrope_interleaved`           |
| "omnirope"         | "omnirope"        | `freqs_mrope` (chunked)             |
| "mmrope"           | "mmrope"          | `freqs_mmrope` (t,t,h,w,h,w,h,w)    |
| "grape"            | "mrope"           | learned GRAPE planes per layer      |
|                    |                   | (`grape_rotate`, mode "mixed")      |
| "qwen35"           | "mrope"           | MRoPE-I on the first                |
|                    |                   | `partial_rotary_dim(D, 0.25)` chans |
| "mrope_time"       | "mrope" with      | `freqs_mrope` (chunked)             |
|                    | absolute time     |                                     |
|                    | (Qwen2.5-VL)      |                                     |

Adding a scheme = one `SCHEMES.register(name, Scheme(...))` (or a `Scheme` subclass that
overrides the hooks it changes), one `configs/vlm_<name>.py` and, if it needs one, one `rope`
function. The hooks are designed for the variants planned next:

  * a new position design (IL-/Omni-/MM-RoPE): `design=` + `design_options=`, or override
    `positions` for designs `rope.multimodal_positions` does not know;
  * a new frequency table: `table=` (a function of the settings and the sections);
  * partial rotary (Qwen3.5): override `rotate` to pass `rotary_dim=` to `rope.apply`;
  * learned rotations that are not angles (GRAPE): override `rotate` (and `tables`); both get
    the calling Flax module, so `module.param(...)` creates per-layer parameters;
  * randomness in training only (HoPE's temporal scale): `tables` gets the module, whose
    `module.has_rng("scheme")` is True in training (`tasks/vlm.py` passes the step key as the
    "scheme" rng) and False at evaluation and decoding;
  * extra per-sample position inputs (Qwen2.5-VL absolute time): `absolute_time=True` makes
    the data pipeline pass each sample's seconds per temporal grid to `positions`
    (`positions_fn(...)(segments, seconds_per_grid=s)`); the decoding rule is `next_positions`.

Every check raises `ValueError` naming the option, on the host, before anything is traced.
"""
import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import rope
from models.registry import Registry

AGE_STRATEGIES = ("alternate", "lower", "upper", "all")


class RotarySettings(NamedTuple):
  """The static settings of the decoder's rotary embedding (from the model config)."""
  scheme: str
  head_dim: int
  num_heads: int       # query heads
  num_kv_heads: int
  theta: float
  sections: Optional[tuple]       # (t, h, w) pair counts; None = the scheme's default
  head_sections: Optional[tuple]  # MHRoPE (t, h, w) KV-head counts; None = default
  num_layers: int
  age_strategy: str = "alternate"


class SequencePositions(NamedTuple):
  """Ids of one unpadded sequence.

  `positions` `[L, 3]` (t, h, w) and `next_position`, the id of the token following the
  sequence; `positions_alt` / `next_position_alt` the alternate id set (equal to the primary
  pair unless the scheme has an `alt_design`).
  """
  positions: np.ndarray
  next_position: float
  positions_alt: np.ndarray
  next_position_alt: float


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


# ---------------------------------------------------------------------------------------------
# Sections and frequency tables.


def chunked_sections(head_dim: int) -> tuple:
  """(t, h, w) = 16:24:24 of D/2 (Qwen2-VL's D = 128 split scaled): (D/8, 3D/16, 3D/16)."""
  if head_dim % 16:
    raise ValueError(
        f"`head_dim`={head_dim}: the default (t, h, w) sections 16:24:24 of D/2 need head_dim "
        f"divisible by 16; set `sections` explicitly.")
  return (head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16)


def interleaved_sections(head_dim: int) -> tuple:
  """24:20:20 of D/2 (Qwen3-VL): h = w = floor(5D/32), t the rest (t is not read anyway)."""
  s = (5 * head_dim) // 32
  return (head_dim // 2 - 2 * s, s, s)


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


def videorope_freqs(head_dim: int, theta: float, sections: Sequence[int]) -> jax.Array:
  """VideoRoPE's original allocation (LTA): `[D/2, 3]` in (t, h, w) order.

  Pairs 0 .. s_h + s_w - 1 alternate h (even j) and w (odd j); the last s_t pairs (the lowest
  frequencies) read t (Wiselnn570/VideoRoPE; docs/spec/multimodal_rope.md §3 and §7.1-2).
  """
  s_t, s_h, s_w = (int(s) for s in sections)
  if s_t + s_h + s_w != head_dim // 2:
    raise ValueError(f"`sections`={tuple(sections)} must sum to head_dim/2 = {head_dim // 2}.")
  if s_h != s_w:
    raise ValueError(f"`sections`={(s_t, s_h, s_w)}: VideoRoPE alternates h and w pairs, "
                     f"so s_h must equal s_w.")
  axis = np.zeros(head_dim // 2, np.int64)
  axis[:s_h + s_w:2] = 1
  axis[1:s_h + s_w:2] = 2
  onehot = jnp.asarray(np.eye(3, dtype=np.float32)[axis])       # [D/2, 3]
  return rope.inv_freq(head_dim, theta)[:, None] * onehot


def _table_1d(s: RotarySettings, sections) -> jax.Array:
  del sections
  return rope.freqs_1d(s.head_dim, s.theta)


def _table_chunked(s: RotarySettings, sections) -> jax.Array:
  return rope.freqs_mrope(s.head_dim, s.theta, sections=sections)


def _table_interleaved(s: RotarySettings, sections) -> jax.Array:
  return rope.freqs_mrope_interleaved(s.head_dim, s.theta, sections=sections)


def _table_videorope(s: RotarySettings, sections) -> jax.Array:
  return videorope_freqs(s.head_dim, s.theta, sections)


def _table_multi_head(s: RotarySettings, sections) -> jax.Array:
  del sections
  hs = s.head_sections
  if hs is None:
    hs = default_head_sections(s.num_kv_heads)
  hs = tuple(int(h) for h in hs)
  if len(hs) != 3 or any(h < 0 for h in hs) or sum(hs) > s.num_kv_heads:
    raise ValueError(f"`head_sections`={hs} must be three KV-head counts (t, h, w) with sum <= "
                     f"`num_kv_heads`={s.num_kv_heads}.")
  return rope.freqs_multi_head(s.num_kv_heads, s.head_dim, s.theta, head_sections=hs)


# ---------------------------------------------------------------------------------------------
# The entry.


@dataclasses.dataclass(frozen=True)
class Scheme:
  """One rotary scheme. Fields are data; methods are the hooks a new scheme may override.

  Attributes:
    summary: one line for configs and docs.
    design: the position design of the primary ids (`rope.multimodal_positions`).
    table: `(settings, sections) -> ` the key heads' frequency table: `[D/2, 1]` (1-D, reads
      the t column), `[D/2, 3]` (all heads) or `[H_kv, D/2, 3]` (per KV head).
    default_sections: `head_dim -> (t, h, w)` pair counts when `model.sections` is None;
      None = the scheme has no pair sections (`model.sections` is not read).
    design_options: (model config key, design keyword) pairs forwarded to the design, e.g.
      `(("circle_alpha", "alpha"),)`; unset (None) config values take rope's defaults.
    alt_design: the design of the alternate ids (`positions_alt`), read by the layers
      `layer_uses_alt` marks; None = no alternate ids.
    alt_options: design keywords of the alternate ids (e.g. HoPE's ids at another temporal
      scale); empty = rope's defaults.
    places_video: False if the design has no rule for `rope.Video` with t > 1 frames.
    owns_params: True if `tables` / `rotate` create Flax parameters (the model's parameters
      then depend on the scheme; tests sharing weights across schemes skip it).
    keeps_text_prior: False if text-only input does not reproduce 1-D RoPE ("half" layout on
      all channels): HoPE (t pairs NoPE), GRAPE (interleaved layout), Qwen3.5 (partial).
    absolute_time: True if the ids of a `rope.Video` follow its frame rate (Qwen2.5-VL): the
      data pipeline then passes each sample's seconds per temporal grid to `positions`, which
      gives it to the design as `seconds_per_grid` (`DEFAULT_SECONDS_PER_GRID` for videos
      without their own rate). False: `positions` ignores a rate.
  """
  summary: str
  design: str
  table: Callable[[RotarySettings, Optional[tuple]], jax.Array]
  default_sections: Optional[Callable[[int], tuple]] = None
  design_options: tuple = ()
  alt_design: Optional[str] = None
  alt_options: tuple = ()
  places_video: bool = True
  owns_params: bool = False
  keeps_text_prior: bool = True
  absolute_time: bool = False

  # -- settings ------------------------------------------------------------------------------

  def sections(self, s: RotarySettings) -> Optional[tuple]:
    """The (t, h, w) pair counts in use (None for schemes without sections)."""
    if self.default_sections is None:
      return None
    if s.sections is not None:
      return tuple(int(x) for x in s.sections)
    return self.default_sections(s.head_dim)

  def check(self, s: RotarySettings) -> None:
    """Raises ValueError naming the option if the scheme cannot be built for these settings."""
    if s.head_dim % 2:
      raise ValueError(f"`head_dim`={s.head_dim} must be even (channels rotate in pairs).")
    if s.num_heads % s.num_kv_heads:
      raise ValueError(f"`num_heads`={s.num_heads} must be a multiple of "
                       f"`num_kv_heads`={s.num_kv_heads} (grouped-query attention).")
    if self.alt_design is not None and s.age_strategy not in AGE_STRATEGIES:
      raise ValueError(f"`age_strategy`={s.age_strategy!r} is not supported; allowed: "
                       f"{', '.join(map(repr, AGE_STRATEGIES))}.")
    # Builds the table once with concrete numbers: rope's own checks (sections summing to
    # D/2, head counts, ...) raise here, on the host, with their messages.
    self.freqs(s)

  def freqs(self, s: RotarySettings) -> jax.Array:
    """The key heads' frequency table (see `table`)."""
    return self.table(s, self.sections(s))

  def position_columns(self, s: RotarySettings) -> int:
    """How many id columns the table reads: 1 (t only, 1-D tables) or 3 (t, h, w)."""
    f = self.freqs(s)
    return 1 if f.ndim == 2 and f.shape[-1] == 1 else 3

  # -- positions (host side; the data pipeline calls these) ----------------------------------

  def position_options(self, model_config: Any) -> dict:
    """The design keywords set in the model config (unset ones take rope's defaults)."""
    out = {}
    for key, keyword in self.design_options:
      value = model_config.get(key) if hasattr(model_config, "get") else model_config[key]
      if value is not None:
        out[keyword] = value
    return out

  def positions(self, segments: Sequence[Any], *, seconds_per_grid: Optional[float] = None,
                **options) -> SequencePositions:
    """Ids of one unpadded sequence (segments after the 2x2 merge) under the scheme.

    `seconds_per_grid`: the sample's seconds per temporal grid of its videos (one frame per
    grid in this task), read only by schemes with `absolute_time` (None there:
    `DEFAULT_SECONDS_PER_GRID`) and ignored by the others.
    `options`: design keywords (`position_options`); the alternate ids use `alt_options`
    (empty: rope's defaults).
    """
    if self.absolute_time:
      options = dict(options, seconds_per_grid=(DEFAULT_SECONDS_PER_GRID
                                                if seconds_per_grid is None
                                                else float(seconds_per_grid)))
    if not self.places_video:
      for seg in segments:
        if isinstance(seg, rope.Video) and seg.t > 1:
          raise ValueError(
              f"`scheme`={self.name!r} cannot place {seg!r}: its position design "
              f"{self.design!r} has no rule for videos with t > 1 frames "
              f"(docs/spec/circle_rope.md §6-8). Use Video(1, h, w) frames, or a scheme "
              f"for video: {', '.join(repr(n) for n, e in SCHEMES.items() if e.places_video)}.")
    pos, nxt = rope.multimodal_positions(segments, self.design, **options)
    if self.alt_design is None:
      return SequencePositions(pos, nxt, pos, nxt)
    alt, nxt_alt = rope.multimodal_positions(segments, self.alt_design, **dict(self.alt_options))
    return SequencePositions(pos, nxt, alt, nxt_alt)

  @property
  def name(self) -> str:
    """The registered name (for messages)."""
    for n, e in SCHEMES.items():
      if e is self:
        return n
    return self.design

  # -- decoding ------------------------------------------------------------------------------

  def next_positions(self, next_position: jax.Array, k: jax.Array) -> jax.Array:
    """Ids `[B, 3]` of generated token k (0-based) of each sample: text following the prompt,
    i.e. `next_position + k` on all three axes (every design in rope continues text so)."""
    b = next_position.shape[0]
    return jnp.broadcast_to((next_position + k)[:, None], (b, 3)).astype(jnp.float32)

  # -- rotation (traced; `module` is the calling Flax module) --------------------------------

  def layer_uses_alt(self, s: RotarySettings) -> tuple:
    """Per layer, True where the layer reads `positions_alt` (AGE: where `rope.age_schedule`
    is False, i.e. its M-RoPE layers)."""
    if self.alt_design is None:
      return (False,) * s.num_layers
    schedule = np.asarray(rope.age_schedule(s.num_layers, s.age_strategy))
    return tuple(not bool(c) for c in schedule)

  def angles(self, s: RotarySettings, positions: jax.Array, freqs: jax.Array) -> Angles:
    """Rotary tables of one id set `[B, L, 3]`.

    cos/sin are taken once here so that no layer (and no query head group) computes them
    again: every scheme then costs the same per layer as 1-D RoPE.
    """
    if freqs.ndim == 2 and freqs.shape[-1] == 1:
      positions = positions[..., :1]     # 1-D tables: the three columns are equal for text
    k = rope.angles(positions.astype(jnp.float32), freqs)
    cos_k, sin_k = jnp.cos(k), jnp.sin(k)
    n_rep = s.num_heads // s.num_kv_heads
    if k.shape[-2] > 1 and n_rep > 1:
      cos_q, sin_q = jnp.repeat(cos_k, n_rep, axis=-2), jnp.repeat(sin_k, n_rep, axis=-2)
    else:
      cos_q, sin_q = cos_k, sin_k
    return Angles(k, cos_q, sin_q, cos_k, sin_k)

  def tables(self, module: Optional[nn.Module], s: RotarySettings, positions: jax.Array,
             positions_alt: jax.Array) -> list:
    """Per-layer rotary tables, each id set computed once and shared by the layers reading it.

    Args:
      module: the calling Flax module (for schemes with parameters or training randomness).
      s: the settings.
      positions, positions_alt: `[B, L, 3]` ids.

    Returns:
      `num_layers` tables (any pytree `rotate` understands; here `Angles`).
    """
    del module
    freqs = self.freqs(s)
    uses_alt = self.layer_uses_alt(s)
    main = self.angles(s, positions, freqs)
    alt = self.angles(s, positions_alt, freqs) if any(uses_alt) else None
    return [alt if a else main for a in uses_alt]

  def rotate(self, module: Optional[nn.Module], q: jax.Array, k: jax.Array,
             table: Any) -> tuple:
    """Rotated `(q [B, L, H_q, D], k [B, L, H_kv, D])` for one layer's table ("half" layout,
    HF's rotate_half: pair j = channels (j, j + D/2))."""
    del module
    return (rope.apply_cos_sin(q, table.cos_q, table.sin_q, layout="half"),
            rope.apply_cos_sin(k, table.cos_k, table.sin_k, layout="half"))


# ---------------------------------------------------------------------------------------------
# The registry.

SCHEMES: Registry[Scheme] = Registry("model.scheme")

# Seconds per temporal grid of a video without its own rate (schemes with absolute_time):
# HF's Qwen2.5-VL called without `second_per_grid_ts` (docs/API.md, clarification 3).
DEFAULT_SECONDS_PER_GRID = 1.0

_STRIDE = (("temporal_stride", "temporal_stride"),)

SCHEMES.register("vanilla", Scheme(
    "1-D RoPE over the flattened sequence (Qwen text / LLaMA)", "vanilla", _table_1d))
SCHEMES.register("mrope", Scheme(
    "Qwen2-VL M-RoPE: (t, h, w) ids, text continues after max(h, w); chunked 16:24:24",
    "mrope", _table_chunked, chunked_sections, _STRIDE))
SCHEMES.register("mrope_interleave", Scheme(
    "MRoPE-I: spatial-reset ids, t/h/w interleaved over the pairs (Qwen3-VL 24:20:20)",
    "spatial_reset", _table_interleaved, interleaved_sections, _STRIDE))
SCHEMES.register("mhrope", Scheme(
    "MHRoPE: spatial-reset ids, whole key/value heads per axis (t, h, w)",
    "spatial_reset", _table_multi_head, None, _STRIDE))
SCHEMES.register("videorope", Scheme(
    "VideoRoPE: diagonal layout, temporal stride 2, t on the lowest frequencies",
    "videorope", _table_videorope, chunked_sections, _STRIDE))
SCHEMES.register("v2pe", Scheme(
    "V2PE: 1-D ids, visual tokens advance by 1/visual_stride",
    "v2pe", _table_1d, None, (("visual_stride", "visual_stride"),)))
_CIRCLE = (("circle_alpha", "alpha"), ("circle_radius", "radius"))
SCHEMES.register("circle", Scheme(
    "Circle-RoPE: image tokens on a circle orthogonal to the text axis; chunked table",
    "circle", _table_chunked, chunked_sections, _CIRCLE, places_video=False))
SCHEMES.register("circle_age", Scheme(
    "Circle-RoPE with AGE: layers alternate Circle-RoPE and M-RoPE ids (age_strategy)",
    "circle", _table_chunked, chunked_sections, _CIRCLE, alt_design="mrope",
    places_video=False))


# ---------------------------------------------------------------------------------------------
# The multimodal extensions (docs/spec/multimodal_ext.md): subclasses overriding hooks.

HOPE_TEMPORAL_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)   # the paper's / repo's set of gamma
HOPE_EVAL_TEMPORAL_SCALE = 1.0                       # gamma at evaluation (the repo default)
_HOPE_ALT_SCALE = 2.0                                # gamma of the alternate ids (see HopeScheme)


def _table_hope(s: RotarySettings, sections) -> jax.Array:
  return rope.freqs_hope(s.head_dim, s.theta, sections, allocation="repo")


def _table_mmrope(s: RotarySettings, sections) -> jax.Array:
  del sections
  return rope.freqs_mmrope(s.head_dim, s.theta)


@dataclasses.dataclass(frozen=True)
class HopeScheme(Scheme):
  """HoPE: diagonal (VideoRoPE) ids with temporal scale gamma, t pairs NoPE (repo allocation).

  Training: gamma is drawn per sample from `HOPE_TEMPORAL_SCALES` with the "scheme" rng (the
  step's key); evaluation and decoding (no "scheme" rng): gamma = `HOPE_EVAL_TEMPORAL_SCALE`.
  The ids are affine in gamma (t' = cur + tau gamma, h/w = t' + offsets, text resumes at
  max t' + 1), so the data pipeline gives the ids at gamma = 1 (`positions`) and at gamma = 2
  (`positions_alt`, `alt_options`) and `tables` forms `p1 + (gamma - 1) (p2 - p1)`. One gamma
  per sample (the repo draws one per visual block; the task has at most one video per sample,
  images have tau = 0 and do not depend on gamma). No layer reads `positions_alt` directly.
  """

  def layer_uses_alt(self, s: RotarySettings) -> tuple:
    return (False,) * s.num_layers

  def tables(self, module, s, positions, positions_alt):
    freqs = self.freqs(s)
    gamma = jnp.full(positions.shape[:1], HOPE_EVAL_TEMPORAL_SCALE, jnp.float32)
    if module is not None and module.has_rng("scheme"):
      idx = jax.random.randint(module.make_rng("scheme"), positions.shape[:1], 0,
                               len(HOPE_TEMPORAL_SCALES))
      gamma = jnp.asarray(HOPE_TEMPORAL_SCALES, jnp.float32)[idx]
    slope = (positions_alt - positions) / (_HOPE_ALT_SCALE - 1.0)
    ids = positions + (gamma - 1.0)[:, None, None] * slope
    return [self.angles(s, ids, freqs)] * s.num_layers


QWEN35_PARTIAL_ROTARY_FACTOR = 0.25


def qwen35_rotary_dim(head_dim: int) -> int:
  """Qwen3.5's rotated channels: `partial_rotary_dim(head_dim, 0.25)` (64 of 256)."""
  try:
    return rope.partial_rotary_dim(head_dim, QWEN35_PARTIAL_ROTARY_FACTOR)
  except ValueError as e:
    raise ValueError(f"`head_dim`={head_dim} is too small for scheme 'qwen35' (partial rotary "
                     f"factor {QWEN35_PARTIAL_ROTARY_FACTOR}): {e}") from None


def qwen35_sections(head_dim: int) -> tuple:
  """Qwen3.5's MRoPE-I (t, h, w) = (11, 11, 10) of 32 rotary pairs, scaled to
  rotary_dim/2 pairs: h = round(11 n/32), w = round(10 n/32), t the rest (n = 32: exact)."""
  n = qwen35_rotary_dim(head_dim) // 2
  h, w = int(round(11 * n / 32)), int(round(10 * n / 32))
  return (n - h - w, h, w)


def _table_qwen35(s: RotarySettings, sections) -> jax.Array:
  return rope.freqs_mrope_interleaved(qwen35_rotary_dim(s.head_dim), s.theta,
                                      sections=sections)


@dataclasses.dataclass(frozen=True)
class PartialRotaryScheme(Scheme):
  """Rotates only the first `2 * table pairs` channels of each head ("half" layout inside
  that slice, HF `apply_rotary_pos_emb` with partial_rotary_factor); the rest pass through."""

  def rotate(self, module, q, k, table):
    del module
    r = 2 * table.cos_k.shape[-1]
    return (rope.apply_cos_sin(q, table.cos_q, table.sin_q, layout="half", rotary_dim=r),
            rope.apply_cos_sin(k, table.cos_k, table.sin_k, layout="half", rotary_dim=r))


GRAPE_MODE = "mixed"


def _table_cyclic(s: RotarySettings, sections) -> jax.Array:
  """GRAPE's rope-init equivalent table (pair p reads axis p mod 3; for checks / diagnostics)."""
  del sections
  return rope.freqs_cyclic(s.head_dim, s.theta)


class GrapeTable(NamedTuple):
  """One layer's GRAPE inputs: the ids `[B, L, 3]` and the plane frequencies `[P]`."""
  positions: jax.Array
  plane_freqs: jax.Array


@dataclasses.dataclass(frozen=True)
class GrapeScheme(Scheme):
  """Learned GRAPE (mode "mixed"): per attention layer planes `a, b [D/2, D]` and
  `axis_weight [D/2, 3]` shared by all heads, rope-initialised (= interleaved RoPE with pair p
  reading axis p mod 3), applied by `rope.grape_rotate` on M-RoPE ids. The tables carry the
  ids; the parameters are created in each layer's attention module (`rotate`)."""

  def check(self, s: RotarySettings) -> None:
    super().check(s)
    try:
      rope.grape_plane_freqs(s.head_dim, s.theta, GRAPE_MODE)
    except ValueError as e:
      raise ValueError(f"`head_dim`={s.head_dim} for scheme 'grape': {e}") from None

  def tables(self, module, s, positions, positions_alt):
    del module, positions_alt
    table = GrapeTable(positions.astype(jnp.float32),
                       rope.grape_plane_freqs(s.head_dim, s.theta, GRAPE_MODE))
    return [table] * s.num_layers

  def rotate(self, module, q, k, table):
    init = rope.init_grape(None, q.shape[-1], GRAPE_MODE, rope_init=True)
    names = {"a": (None, "kv"), "b": (None, "kv"), "axis_weight": (None, None)}
    params = {
        key: module.param(f"grape_{key}",
                          nn.with_logical_partitioning(lambda _, v=value: v, names[key]))
        for key, value in init.items()}
    params = nn.unbox(params)

    # q [B, L, H, D] and k [B, L, KV, D] share the planes and the ids, but two calls are faster
    # than one on their concatenation (measured 7.0 vs 7.8 ms fwd+bwd per layer at the :cpu
    # shape on XLA:CPU): normalising the planes and the [B, L, P] phase table twice costs less
    # than copying q and k into one array and slicing them (and their gradients) back.
    rotate = lambda x: rope.grape_rotate(x, table.positions, params, table.plane_freqs,
                                         mode=GRAPE_MODE)
    return rotate(q), rotate(k)


SCHEMES.register("hope", HopeScheme(
    "HoPE: diagonal ids, random temporal scale in training (1 at eval), t pairs NoPE",
    "hope", _table_hope, chunked_sections, alt_design="hope",
    alt_options=(("temporal_scale", _HOPE_ALT_SCALE),), keeps_text_prior=False))
SCHEMES.register("ilrope", Scheme(
    "IL-RoPE (repo): spatial-reset ids, MRoPE-I interleaved 24:20:20",
    "ilrope", _table_interleaved, interleaved_sections, _STRIDE))
SCHEMES.register("omnirope", Scheme(
    "Omni-RoPE (OmniGen2, repo): spatial-reset ids, chunked 16:24:24",
    "omnirope", _table_chunked, chunked_sections, _STRIDE))
SCHEMES.register("mmrope", Scheme(
    "MM-RoPE (Lumos-1): M-RoPE ids with position_scale, pairs t,t,h,w,h,w,h,w",
    "mmrope", _table_mmrope, None, _STRIDE))
SCHEMES.register("qwen35", PartialRotaryScheme(
    "Qwen3.5: M-RoPE ids, MRoPE-I (11, 11, 10) on the first partial_rotary_dim(D, 0.25) "
    "channels; the rest pass through",
    "mrope", _table_qwen35, qwen35_sections, _STRIDE, keeps_text_prior=False))
SCHEMES.register("grape", GrapeScheme(
    "GRAPE (learned, mode mixed): per-layer planes shared by heads, rope init, M-RoPE ids",
    "mrope", _table_cyclic, None, owns_params=True, keeps_text_prior=False))
SCHEMES.register("mrope_time", Scheme(
    "Qwen2.5-VL M-RoPE with absolute time: a video's t ids advance floor(seconds * 2) per "
    "frame (tokens_per_second 2, each sample's frame rate); chunked 16:24:24",
    "mrope", _table_chunked, chunked_sections, absolute_time=True))


# ---------------------------------------------------------------------------------------------
# From a model config.


def settings(model_config: Any) -> RotarySettings:
  """The static rotary settings of a model config (models/vlm.py `default_config`)."""
  c = model_config
  return RotarySettings(
      scheme=SCHEMES.canonical(c.scheme), head_dim=int(c.head_dim),
      num_heads=int(c.num_heads), num_kv_heads=int(c.num_kv_heads), theta=float(c.theta),
      sections=None if c.sections is None else tuple(int(s) for s in c.sections),
      head_sections=(None if c.head_sections is None
                     else tuple(int(s) for s in c.head_sections)),
      num_layers=int(c.depth), age_strategy=c.age_strategy)


def positions_fn(model_config: Any) -> Callable[..., SequencePositions]:
  """The position function of a model config's scheme: `segments -> SequencePositions`.

  `fn(segments, seconds_per_grid=None)`; `fn.absolute_time` (the entry's) tells the data
  pipeline whether the rate is read (`data.vlm_pipeline.PositionTable`).

  The one place the data pipeline's ids come from (tasks/vlm.py hands it to
  `data.vlm_pipeline`); the model reads the same entry, so model and data cannot disagree.
  """
  entry = SCHEMES.get(model_config.scheme)
  options = entry.position_options(model_config)

  def fn(segments, seconds_per_grid=None):
    return entry.positions(segments, seconds_per_grid=seconds_per_grid, **options)

  fn.absolute_time = entry.absolute_time   # the data pipeline passes rates only if True
  return fn
