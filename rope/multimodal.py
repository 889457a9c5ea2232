"""Position ids of image + text (+ video) sequences for the multimodal RoPE schemes.

A sequence is a list of segments: `Text(n)`, `Image(h, w)`, `Video(t, h, w)`, where `h, w` is the
grid the language model sees (after any patch merge). Segments are static Python structures,
so positions are computed on the host with NumPy (float64, cast to float32 at the end): that is
what an input pipeline wants, and under `jit` the result is a constant. `circle_offsets` is also
available as a traceable JAX function (alpha, radius and dff_rate may be traced, e.g. vmapped).

Specs: multimodal_rope.md §2 and §9 (vanilla, V2PE, M-RoPE, spatial reset, VideoRoPE),
circle_rope.md §1 and §7 (Circle-RoPE, AGE) and docs/spec/multimodal_ext.md §1-3, §6, §8 (HoPE,
IL-RoPE, Omni-RoPE, MM-RoPE, Qwen2.5-VL absolute time).
"""
import dataclasses
import math
from typing import Any, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from rope import _checks


@dataclasses.dataclass(frozen=True)
class Text:
  """`n` text-type tokens (words, `<vision_start>`, `<vision_end>`, timestamps)."""
  n: int

  def __post_init__(self):
    _checks.positive_int("Text.n", self.n)

  @property
  def num_tokens(self) -> int:
    return self.n


@dataclasses.dataclass(frozen=True)
class Video:
  """`t` frames (temporal patches) of an `h x w` token grid, tokens in (t, row, col) order."""
  t: int
  h: int
  w: int

  def __post_init__(self):
    for name in ("t", "h", "w"):
      _checks.positive_int(f"{type(self).__name__}.{name}", getattr(self, name))

  @property
  def num_tokens(self) -> int:
    return self.t * self.h * self.w


@dataclasses.dataclass(frozen=True)
class Image:
  """One `h x w` token grid; behaves exactly as `Video(1, h, w)` in every scheme."""
  h: int
  w: int

  def __post_init__(self):
    for name in ("h", "w"):
      _checks.positive_int(f"Image.{name}", getattr(self, name))

  @property
  def t(self) -> int:
    return 1

  @property
  def num_tokens(self) -> int:
    return self.h * self.w


Segment = Union[Text, Image, Video]

SCHEMES = ("vanilla", "mrope", "spatial_reset", "videorope", "v2pe", "circle", "hope", "ilrope",
           "omnirope", "mmrope")
TIME_ROUNDINGS = ("float", "int_seconds")
_OPTIONS = {
    "vanilla": {},
    "mrope": {"temporal_stride": 1.0, "seconds_per_grid": None, "tokens_per_second": 2,
              "time_rounding": "float"},
    "spatial_reset": {"temporal_stride": 1.0},
    "videorope": {"temporal_stride": 2.0},
    "v2pe": {"visual_stride": 16.0},
    "circle": {"alpha": 0.5, "radius": 10.0, "dff_rate": 0.0, "move_to_origin": True,
               "move_to_positive": False},
    "hope": {"temporal_scale": 1.0},
    "ilrope": {"temporal_stride": 1.0},
    "omnirope": {"temporal_stride": 1.0},
    "mmrope": {"temporal_stride": 1.0, "position_scale": (1.0, 1.0, 1.0)},
}
# Schemes whose ids are another scheme's (docs/spec/multimodal_ext.md §2).
_ALIASES = {"ilrope": "spatial_reset", "omnirope": "spatial_reset"}
AGE_STRATEGIES = ("alternate", "lower", "upper", "all")

# Basis of the plane orthogonal to the text direction (1, 1, 1)/sqrt(3), in (w, h, t) order.
_U = np.array([-1.0, 1.0, 0.0]) / math.sqrt(2.0)
_V = np.array([-1.0, -1.0, 2.0]) / math.sqrt(6.0)


def _resolve_radius(radius: Any, x, y, xp):
  """Fixed radius, or `"auto"` / `"auto-k"`: k * |max entry of the centred grid| (code §6-1)."""
  if isinstance(radius, str):
    if radius == "auto":
      k = 1.0
    elif radius.startswith("auto-"):
      try:
        k = float(radius[len("auto-"):])
      except ValueError:
        raise ValueError(f"`radius`={radius!r}: use a number, 'auto' or 'auto-k' with a "
                         f"number k (e.g. 'auto-2').") from None
    else:
      raise ValueError(f"`radius`={radius!r}: use a number, 'auto' or 'auto-k'.")
    return k * xp.abs(xp.maximum(xp.maximum(x.max(), y.max()), 0.0))
  return radius


def _circle_offsets(xp, height, width, alpha, radius, dff_rate, move_to_origin,
                    move_to_positive):
  """Circle-RoPE CIP of one image, written once for NumPy and jax.numpy: `[H*W, 3]` (t, h, w)."""
  hh, ww = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                       indexing="ij")
  if move_to_origin:
    x, y = ww - (width - 1) / 2.0, hh - (height - 1) / 2.0
  else:
    x, y = ww, hh
  x, y = x.reshape(-1), y.reshape(-1)
  r = _resolve_radius(radius, xp.asarray(x), xp.asarray(y), xp)
  phi = np.arctan2(y, x)                     # static: depends only on the grid
  span = phi.max() - phi.min()
  theta_sa = 2 * np.pi * (phi - phi.min()) / span if span > 0 else phi
  theta_ga = 2 * np.pi * np.arange(height * width) / (height * width)
  theta = alpha * theta_sa + (1 - alpha) * theta_ga
  cx, cy = r * xp.cos(theta), r * xp.sin(theta)
  d = cx[:, None] * _U + cy[:, None] * _V                              # [N, 3] (w, h, t)
  d = (1 - dff_rate) * d + dff_rate * (x[:, None] * _U + y[:, None] * _V)
  if move_to_positive is not False and move_to_positive is not None:
    offset = 0.0 if move_to_positive == "auto" else move_to_positive
    d = d + xp.abs(d.min()) + offset
  return d[:, ::-1]                                                    # (t, h, w)


def circle_offsets(height: int, width: int, *, alpha=0.5, radius=10.0, dff_rate=0.0,
                   move_to_origin: bool = True, move_to_positive=False) -> jax.Array:
  """Circle-RoPE offsets of an image's tokens on a circle orthogonal to the text axis.

  The centred grid is mapped onto a circle of radius `radius` (angle = alpha * normalised atan2
  + (1 - alpha) * raster-index angle) lying in the plane orthogonal to (1, 1, 1), so every text
  token `p (1, 1, 1)` is equidistant from all of an image's tokens (a cone; PTD = 0).

  Args:
    height, width: the token grid (static).
    alpha: mix of the spatial-origin and grid-index angles (0.5 released; may be traced).
    radius: circle radius (10.), or `"auto"` / `"auto-k"` (k * largest centred coordinate).
    dff_rate: blend weight of the tilted un-circled grid (0. = off; 1. = no circle).
    move_to_origin: centre the grid first (released config: True).
    move_to_positive: False, `"auto"` or a number: shift along (1, 1, 1) so all offsets >= it.

  Returns:
    float32 `[height * width, 3]` offsets `(dt, dh, dw)`, tokens row-major; each row sums to 0
    and has norm `radius` (without DFF / move_to_positive). Add the segment start to place it.
  """
  height = _checks.positive_int("height", height)
  width = _checks.positive_int("width", width)
  return _circle_offsets(jnp, height, width, jnp.asarray(alpha, jnp.float32),
                         radius if isinstance(radius, str) else jnp.asarray(radius, jnp.float32),
                         jnp.asarray(dff_rate, jnp.float32), move_to_origin,
                         move_to_positive).astype(jnp.float32)


def _options(scheme: str, options: dict) -> dict:
  _checks.one_of("scheme", scheme, SCHEMES)
  allowed = _OPTIONS[scheme]
  unknown = sorted(set(options) - set(allowed))
  if unknown:
    raise ValueError(
        f"unknown option(s) {unknown} for scheme={scheme!r}; allowed: "
        f"{sorted(allowed) if allowed else 'none'}.")
  out = dict(allowed)
  out.update(options)
  if "dff_rate" in out and isinstance(out["dff_rate"], bool):
    out["dff_rate"] = 1.0 if out["dff_rate"] else 0.0   # the official code's True means 1.0
  if isinstance(out.get("radius"), str):
    _resolve_radius(out["radius"], np.zeros(1), np.zeros(1), np)   # raises on a bad string
  for name in ("temporal_stride", "visual_stride"):
    if name in out and not float(out[name]) > 0:
      raise ValueError(f"`{name}`={out[name]!r} must be a positive number.")
  mtp = out.get("move_to_positive", False)
  if not (mtp is False or mtp is None or mtp == "auto" or isinstance(mtp, (int, float))):
    raise ValueError(f"`move_to_positive`={mtp!r}: use False, 'auto' or a number.")
  if "time_rounding" in out:
    _checks.one_of("time_rounding", out["time_rounding"], TIME_ROUNDINGS)
    tps = out["tokens_per_second"]
    if isinstance(tps, bool) or not isinstance(tps, (int, float, np.integer, np.floating)) \
        or not tps > 0:
      raise ValueError(f"`tokens_per_second`={tps!r} must be a positive number.")
    if out["seconds_per_grid"] is not None and float(out["temporal_stride"]) != 1.0:
      raise ValueError(f"`seconds_per_grid` and `temporal_stride`={out['temporal_stride']!r} "
                       f"both set the temporal step of videos; give one of them.")
  if "position_scale" in out:
    ps = out["position_scale"]
    try:
      ps = tuple(float(v) for v in ps)
    except (TypeError, ValueError):
      ps = ()
    if len(ps) != 3 or not all(v > 0 for v in ps):
      raise ValueError(f"`position_scale`={out['position_scale']!r} must be three positive "
                       f"numbers (t, h, w).")
    out["position_scale"] = ps
  return out


def _per_segment(name: str, value: Any, count: int, what: str) -> list:
  """A scalar option broadcast to `count` segments, or a sequence with one value per segment."""
  if value is None:
    return [None] * count
  if isinstance(value, (str, bytes)):
    raise ValueError(f"`{name}`={value!r} must be a positive number or one per {what}.")
  if np.ndim(value) == 0:
    values = [value] * max(count, 1)           # checked even when nothing uses it
  else:
    values = list(np.asarray(value).reshape(-1)) if np.ndim(value) == 1 else None
    if values is None or len(values) != count:
      raise ValueError(f"`{name}` has {len(values) if values is not None else np.shape(value)} "
                       f"values but the sequence has {count} {what}(s); give a scalar or one "
                       f"value per {what}.")
  out = []
  for v in values:
    try:
      v = float(v)
    except (TypeError, ValueError):
      v = float("nan")
    if not v > 0:
      raise ValueError(f"`{name}`={value!r} must be a positive number or one per {what}.")
    out.append(v)
  return out[:count]


def _video_time_offsets(tau: np.ndarray, spg: float, tps, rounding: str) -> np.ndarray:
  """Qwen2.5-VL temporal offsets of frames `tau` (docs/spec/multimodal_ext.md §6)."""
  if rounding == "float":   # transformers 4.49: floor(f32(f32(tau * spg) * tps))
    t = (tau.astype(np.float32) * np.float32(spg)).astype(np.float32) * np.float32(tps)
    return np.floor(t.astype(np.float32)).astype(np.float64)
  return np.floor(tau * float(int(spg)) * float(tps))   # 4.57.1: int(spg) first


def _visual_block(seg: Union[Image, Video], cur: float, scheme: str, o: dict) -> Tuple[np.ndarray, float]:
  """Positions `[T*H*W, 3]` (float64) of one visual block starting at `cur`, and the next start."""
  t_, h_, w_ = seg.t, seg.h, seg.w
  tau, y, x = (a.reshape(-1).astype(np.float64)
               for a in np.meshgrid(np.arange(t_), np.arange(h_), np.arange(w_), indexing="ij"))
  n = t_ * h_ * w_
  scheme = _ALIASES.get(scheme, scheme)
  if scheme == "vanilla":
    s = cur + np.arange(n, dtype=np.float64)
    return np.stack([s, s, s], -1), cur + n
  if scheme == "v2pe":
    s = (cur - 1) + np.arange(1, n + 1, dtype=np.float64) * (o["visual_stride"] / n)
    return np.stack([s, s, s], -1), math.ceil(s[-1]) + 1
  if scheme == "circle":
    if t_ > 1:
      raise ValueError(f"scheme='circle' cannot place a video of t={t_} frames (the official "
                       f"Circle-RoPE maps one image grid); use Image segments per frame or "
                       f"another scheme.")
    d = _circle_offsets(np, h_, w_, o["alpha"], o["radius"], o["dff_rate"],
                        o["move_to_origin"], o["move_to_positive"])
    pos = cur + d
    return pos, float(pos.max()) + 1
  if scheme == "hope":
    # VideoRoPE's diagonal layout with the temporal factor gamma (multimodal_ext.md §1).
    gamma = float(o["temporal_scale"])
    tt = cur + tau * gamma
    return (np.stack([tt, tt + y - (h_ - 1) // 2, tt + x - (w_ - 1) // 2], -1),
            cur + (t_ - 1) * gamma + 1)
  if scheme == "mmrope":
    # M-RoPE with per-axis scaled in-block offsets; text resumes at the block max + 1 (§3).
    s_t, s_h, s_w = o["position_scale"]
    pos = np.stack([cur + tau * float(o["temporal_stride"]) * s_t, cur + y * s_h,
                    cur + x * s_w], -1)
    return pos, float(pos.max()) + 1
  if scheme == "mrope" and isinstance(seg, Video) and o.get("seconds_per_grid") is not None:
    # Qwen2.5-VL absolute time (§6); images are never scaled. Text resumes at block max + 1.
    tt = cur + _video_time_offsets(tau, o["seconds_per_grid"], o["tokens_per_second"],
                                   o["time_rounding"])
    pos = np.stack([tt, cur + y, cur + x], -1)
    return pos, float(pos.max()) + 1
  delta = float(o["temporal_stride"])
  tt = cur + tau * delta
  nxt = cur + max((t_ - 1) * delta, h_ - 1, w_ - 1) + 1
  if scheme == "mrope":
    return np.stack([tt, cur + y, cur + x], -1), nxt
  if scheme == "spatial_reset":
    return np.stack([tt, y, x], -1), nxt
  # videorope: diagonal layout centred on the temporal id.
  return (np.stack([tt, tt + y - (h_ - 1) // 2, tt + x - (w_ - 1) // 2], -1),
          cur + (t_ - 1) * delta + 1)


def multimodal_positions(segments: Sequence[Segment], scheme: str,
                         **options) -> Tuple[np.ndarray, float]:
  """Position ids `(t, h, w)` of a multimodal sequence.

  Args:
    segments: `Text(n)`, `Image(h, w)` and `Video(t, h, w)` in sequence order.
    scheme: `"vanilla"` (flat 1-D), `"mrope"` (Qwen2-VL), `"spatial_reset"` (MRoPE-I /
      MHRoPE), `"videorope"`, `"v2pe"`, `"circle"` (Circle-RoPE), `"hope"` (HoPE),
      `"ilrope"` / `"omnirope"` (IL-RoPE / Omni-RoPE as the reference code builds them: the
      ids of `"spatial_reset"`) or `"mmrope"` (MM-RoPE, Lumos-1).
    **options: `temporal_stride` (mrope, spatial_reset, ilrope, omnirope, mmrope: 1;
      videorope: 2), `visual_stride` (v2pe: 16), and for circle `alpha` (0.5), `radius` (10.,
      `"auto"`, `"auto-k"`), `dff_rate` (0.), `move_to_origin` (True), `move_to_positive`
      (False, `"auto"`, a number). docs/spec/multimodal_ext.md:
      hope `temporal_scale` (1.): gamma in `t' = cur + tau * gamma` (VideoRoPE's diagonal layout,
      next text at `max(t') + 1`), a float or one value per `Image` / `Video` segment (HoPE's
      training draws it at random from (0.5, 0.75, 1, 1.25, 1.5): the caller's job).
      mmrope `position_scale` ((1., 1., 1.)): in-block offsets `(tau * temporal_stride, y, x)`
      multiplied per axis (Lumos-1: (4, 8, 8)); next text at the block maximum + 1.
      mrope `seconds_per_grid` (None), `tokens_per_second` (2), `time_rounding` ("float"):
      Qwen2.5-VL absolute time for `Video` segments, `t = cur + floor(tau * seconds_per_grid *
      tokens_per_second)` in float32 (transformers 4.49); `seconds_per_grid` a float or one per
      `Video` (HF without `second_per_grid_ts` = 1.); `time_rounding="int_seconds"` truncates
      `seconds_per_grid` to an int first (transformers 4.57.1); `None` keeps Qwen2-VL's
      `tau * temporal_stride`. Images are never scaled; text resumes at the block max + 1.

  Returns:
    `(positions, next_position)`: float32 NumPy `[L, 3]` (columns t, h, w; text tokens have
    three equal components) and the float position the next text token would get (HF's
    `rope_delta + L`): a token generated at 0-based sequence index `s >= L` gets
    `next_position + (s - L)` on all three components.
  """
  o = _options(scheme, options)
  if not segments:
    raise ValueError("`segments` is empty; give at least one Text/Image/Video.")
  for i, seg in enumerate(segments):
    if not isinstance(seg, (Text, Image, Video)):
      raise ValueError(f"`segments[{i}]`={seg!r} is not a rope.Text, rope.Image or rope.Video.")
  # Options given per visual segment (HoPE's gamma) or per Video (Qwen2.5-VL seconds).
  num_visual = sum(isinstance(s, (Image, Video)) for s in segments)
  num_videos = sum(isinstance(s, Video) for s in segments)
  gammas = (_per_segment("temporal_scale", o["temporal_scale"], num_visual,
                         "Image/Video segment") if "temporal_scale" in o else None)
  seconds = (_per_segment("seconds_per_grid", o["seconds_per_grid"], num_videos, "Video segment")
             if o.get("seconds_per_grid") is not None else None)
  i_visual = i_video = 0
  cur = 0.0
  out = []
  for i, seg in enumerate(segments):
    if isinstance(seg, Text):
      s = cur + np.arange(seg.n, dtype=np.float64)
      out.append(np.stack([s, s, s], -1))
      cur += seg.n
    elif isinstance(seg, (Image, Video)):
      o_seg = o
      if gammas is not None:
        o_seg = dict(o, temporal_scale=gammas[i_visual])
      if seconds is not None and isinstance(seg, Video):
        o_seg = dict(o, seconds_per_grid=seconds[i_video])
      i_visual += 1
      i_video += isinstance(seg, Video)
      pos, cur = _visual_block(seg, cur, scheme, o_seg)
      out.append(pos)
    else:
      raise ValueError(f"`segments[{i}]`={seg!r} is not a rope.Text, rope.Image or rope.Video.")
  return np.concatenate(out, 0).astype(np.float32), float(np.float32(cur))


def age_schedule(num_layers: int, strategy: str = "alternate") -> np.ndarray:
  """Circle-RoPE's Alternating Geometry Encoding: which layers use the circle ids.

  Args:
    num_layers: decoder depth.
    strategy: `"alternate"` circle in layers 0, 2, 4, ... (the released `strategy_4`),
      `"lower"` the lower half (`strategy_2`), `"upper"` the upper half (`strategy_3`),
      `"all"` every layer.

  Returns:
    bool NumPy `[num_layers]` (static, so a model can pick each layer's ids in Python).
  """
  num_layers = _checks.positive_int("num_layers", num_layers)
  _checks.one_of("strategy", strategy, AGE_STRATEGIES)
  idx = np.arange(num_layers)
  if strategy == "alternate":
    return idx % 2 == 0
  if strategy == "lower":
    return idx < num_layers // 2
  if strategy == "upper":
    return idx >= num_layers // 2
  return np.ones(num_layers, bool)
