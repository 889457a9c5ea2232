"""Position ids of image + text (+ video) sequences for the multimodal RoPE schemes.

A sequence is a list of segments: `Text(n)`, `Image(h, w)`, `Video(t, h, w)`, where `h, w` is the
grid the language model sees (after any patch merge). Segments are static Python structures,
so positions are computed on the host with NumPy (float64, cast to float32 at the end): that is
what an input pipeline wants, and under `jit` the result is a constant. `circle_offsets` is also
available as a traceable JAX function (alpha, radius and dff_rate may be traced, e.g. vmapped).

Specs: multimodal_rope.md §2 and §9 (vanilla, V2PE, M-RoPE, spatial reset, VideoRoPE) and
circle_rope.md §1 and §7 (Circle-RoPE, AGE).
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

SCHEMES = ("vanilla", "mrope", "spatial_reset", "videorope", "v2pe", "circle")
_OPTIONS = {
    "vanilla": {},
    "mrope": {"temporal_stride": 1.0},
    "spatial_reset": {"temporal_stride": 1.0},
    "videorope": {"temporal_stride": 2.0},
    "v2pe": {"visual_stride": 16.0},
    "circle": {"alpha": 0.5, "radius": 10.0, "dff_rate": 0.0, "move_to_origin": True,
               "move_to_positive": False},
}
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
  return out


def _visual_block(seg: Union[Image, Video], cur: float, scheme: str, o: dict) -> Tuple[np.ndarray, float]:
  """Positions `[T*H*W, 3]` (float64) of one visual block starting at `cur`, and the next start."""
  t_, h_, w_ = seg.t, seg.h, seg.w
  tau, y, x = (a.reshape(-1).astype(np.float64)
               for a in np.meshgrid(np.arange(t_), np.arange(h_), np.arange(w_), indexing="ij"))
  n = t_ * h_ * w_
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
      MHRoPE), `"videorope"`, `"v2pe"` or `"circle"` (Circle-RoPE).
    **options: `temporal_stride` (mrope, spatial_reset: 1; videorope: 2), `visual_stride`
      (v2pe: 16), and for circle `alpha` (0.5), `radius` (10., `"auto"`, `"auto-k"`),
      `dff_rate` (0.), `move_to_origin` (True), `move_to_positive` (False, `"auto"`, a number).

  Returns:
    `(positions, next_position)`: float32 NumPy `[L, 3]` (columns t, h, w; text tokens have
    three equal components) and the float position the next text token would get (HF's
    `rope_delta + L`): a token generated at 0-based sequence index `s >= L` gets
    `next_position + (s - L)` on all three components.
  """
  o = _options(scheme, options)
  if not segments:
    raise ValueError("`segments` is empty; give at least one Text/Image/Video.")
  cur = 0.0
  out = []
  for i, seg in enumerate(segments):
    if isinstance(seg, Text):
      s = cur + np.arange(seg.n, dtype=np.float64)
      out.append(np.stack([s, s, s], -1))
      cur += seg.n
    elif isinstance(seg, (Image, Video)):
      pos, cur = _visual_block(seg, cur, scheme, o)
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
