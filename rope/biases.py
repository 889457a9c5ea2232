"""Non-rotary baselines: additive attention-logit biases (LookHere, FIRE).

Not rotations: the result is added to the (scaled) `q . k` logits. Spec:
docs/spec/vision_ext.md §6 (LookHere code `GreenCUBIC/lookhere` `create_lh_bias_tensor`; FIRE
from the paper's appendix listing, 1-D).
"""
import itertools
import numbers
from typing import Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from rope import _checks

_HIGHEST = jax.lax.Precision.HIGHEST
BF16_MAX = float(jnp.finfo(jnp.bfloat16).max)   # 3.3895e38, torch.finfo(torch.bfloat16).max

# LookHere's head-direction sets: four heads' lists of directions each (the reference's
# `dir_short_hand`). A head with several directions is blocked wherever any of them blocks.
DIRECTION_SETS = {
    "none": [[]] * 4,
    "zero": [["zero"]] * 4,
    "none1zero3": [[]] + [["zero"]] * 3,
    "none2zero2": [[]] * 2 + [["zero"]] * 2,
    "none3zero1": [[]] * 3 + [["zero"]],
    "center": [["center"]] * 4,
    "halves": [["up"], ["down"], ["left"], ["right"]],
    "corners": [["up", "left"], ["up", "right"], ["down", "left"], ["down", "right"]],
    "triangles": [["tri_up"], ["tri_down"], ["tri_left"], ["tri_right"]],
    "diagonals": [["diag_up_right"], ["diag_up_left"], ["diag_down_right"],
                  ["diag_down_left"]],
    "eighths1": [["tri_up", "left"], ["tri_down", "left"], ["tri_left", "up"],
                 ["tri_right", "up"]],
    "eighths2": [["tri_up", "right"], ["tri_down", "right"], ["tri_left", "down"],
                 ["tri_right", "down"]],
    "zerohalves": [["zero", "up"], ["zero", "down"], ["zero", "left"], ["zero", "right"]],
    "zerocorners": [["zero", "up", "left"], ["zero", "up", "right"], ["zero", "down", "left"],
                    ["zero", "down", "right"]],
    "zerotriangles": [["zero", "tri_up"], ["zero", "tri_down"], ["zero", "tri_left"],
                      ["zero", "tri_right"]],
}
DISTANCES = ("linear", "sqrt", "square")


def _head_layout(name: str, num_heads: int):
  """The reference's assignment of direction sets to heads: (head_names, head_directions)."""
  parts = name.split("-")
  for p in parts:
    _checks.one_of("head_directions", p, DIRECTION_SETS)
  dirs = [DIRECTION_SETS[p] for p in parts]
  if num_heads == 6 and len(parts) == 2:
    return [parts[0]] * 4 + [parts[1]] * 2, dirs[0] + dirs[1][:2]
  if len(parts) == 1 and num_heads % 4 == 0:
    return [parts[0]] * num_heads, dirs[0] * (num_heads // 4)
  if len(parts) == 2 and num_heads == 12:
    return [parts[0]] * 8 + [parts[1]] * 4, dirs[0] * 2 + dirs[1]
  if len(parts) == 2 and num_heads == 16:
    return [parts[0]] * 8 + [parts[1]] * 8, dirs[0] * 2 + dirs[1] * 2
  if len(parts) == 3 and num_heads == 12:
    return [parts[0]] * 4 + [parts[1]] * 4 + [parts[2]] * 4, dirs[0] + dirs[1] + dirs[2]
  if len(parts) == 3 and num_heads == 16:
    return [parts[0]] * 8 + [parts[1]] * 4 + [parts[2]] * 4, dirs[0] * 2 + dirs[1] + dirs[2]
  if len(parts) == 4 and num_heads == 16:
    return ([parts[0]] * 4 + [parts[1]] * 4 + [parts[2]] * 4 + [parts[3]] * 4,
            dirs[0] + dirs[1] + dirs[2] + dirs[3])
  raise ValueError(f"`head_directions`={name!r} with `num_heads`={num_heads} is not a layout of "
                   f"the reference: one set needs a multiple of 4 heads; 'a-b' needs 6, 12 or "
                   f"16 heads; 'a-b-c' 12 or 16; 'a-b-c-d' 16.")


def _head_slopes(head_names) -> np.ndarray:
  slopes = []
  for kind, group in itertools.groupby(head_names):
    n = len(list(group))
    if "zero" in kind or "center" in kind or "none" in kind:
      base = [0.25, 0.0625, 0.015625, 0.00390625]
      slopes.append(base[:2] if n == 2 else base if n == 4 else np.repeat(base, n // 4))
    else:
      slopes.append(np.repeat(np.exp2(-np.arange(1, n / 4 + 1)), 4))
  slopes = np.concatenate(slopes).astype(np.float64)
  if slopes.shape[0] != len(head_names):
    raise ValueError(f"`head_directions` gives {slopes.shape[0]} head slopes for "
                     f"{len(head_names)} heads (a layout the reference cannot build).")
  return slopes


def _blocked_masks(height: int, width: int):
  """`{direction: [N, N] bool}`, True where a query (row) may NOT look at a key (column)."""
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  y, x = rows.reshape(-1), cols.reshape(-1)
  dy = y[None, :] - y[:, None]          # key row - query row (y grows downward)
  dx = x[None, :] - x[:, None]          # key col - query col
  allowed_tri = {"up": np.abs(dx) <= -dy, "down": np.abs(dx) <= dy,
                 "right": dx >= np.abs(dy), "left": -dx >= np.abs(dy)}
  blocked = {"up": dy > 0, "down": dy < 0, "left": dx > 0, "right": dx < 0}
  for k, v in allowed_tri.items():
    blocked["tri_" + k] = ~v
  for a in ("up", "down"):
    for b in ("left", "right"):
      blocked[f"diag_{a}_{b}"] = ~allowed_tri[a] & ~allowed_tri[b]
  return blocked, np.stack([y, x], -1)


def _lookhere_layer(height, width, name, num_heads, distance):
  """One layer's unsigned, unscaled-by-layer bias `[H, N, N]` (inf where blocked) and slopes."""
  head_names, head_dirs = _head_layout(name, num_heads)
  slopes = _head_slopes(head_names)
  blocked, yx = _blocked_masks(height, width)
  diff = (yx[:, None, :] - yx[None, :, :]).astype(np.float64)
  dist = np.sqrt(np.sum(diff * diff, -1))
  dist = {"linear": dist, "sqrt": dist ** 0.5, "square": dist ** 2}[distance]
  center = np.array([(height - 1) / 2, (width - 1) / 2])
  center_map = np.broadcast_to(np.sqrt(np.sum((yx - center) ** 2, -1))[None, :], dist.shape)
  lh = np.tile(dist, (num_heads, 1, 1))
  for h in range(num_heads):
    mask = np.zeros(dist.shape, bool)
    for d in head_dirs[h]:
      if d == "center":
        lh[h] = center_map
      elif d == "zero":
        lh[h] = 0.0
      else:
        mask = mask | blocked[d]
    lh[h][mask] = np.inf
  return slopes[:, None, None] * lh


def lookhere_bias(height: int, width: int, *, head_directions: Union[str, Sequence[str]],
                  num_heads: int, depth: int, global_slope: float = 1.0,
                  layer_slopes: Tuple[float, float] = (1.5, 0.5), distance: str = "linear",
                  num_prefix: int = 1) -> jax.Array:
  """LookHere's directional distance penalties, one `[H, N', N']` map per layer.

  `bias[l, h, q, k] = -global_slope * layer_slope_l * head_slope_h * dist(q, k)` where head
  `h`'s direction lets query `q` see key `k`, `-finfo(bfloat16).max` where it does not; values
  rounded to bfloat16 as the reference (`create_lh_bias_tensor`), returned as float32, with
  zero rows and columns for the `num_prefix` leading tokens (`LookHere.set_pos_embed`).
  Directions ("y grows downward"): `up` sees keys with `k_row <= q_row`, `down` `>=`, `left`
  `k_col <= q_col`, `right` `>=`; `tri_*` are 90-degree cones; several names intersect.
  At a new resolution rebuild it for the new grid (that is LookHere's extrapolation).

  Args:
    height, width: the patch grid (`N = height * width`, row-major tokens).
    head_directions: a set name of the reference (`"halves"`, `"corners"`, `"triangles"`,
      `"diagonals"`, `"eighths1"`, ..., or `"a-b"` splits such as `"halves-corners"`), or one
      name per layer.
    num_heads: H.
    depth: number of layers.
    global_slope: the reference's `global_slope` (may be changed at test time).
    layer_slopes: `(first, last)`, spread linearly over the layers (the reference has no
      default; `(1.5, 0.5)` is the golden configuration's).
    distance: `"linear"` (Euclidean), `"sqrt"` or `"square"` of it.
    num_prefix: cls / register tokens first, with zero bias.

  Returns:
    float32 `[depth, H, num_prefix + N, num_prefix + N]`, to add to `q . k * scale`.
  """
  height = _checks.positive_int("height", height)
  width = _checks.positive_int("width", width)
  num_heads = _checks.positive_int("num_heads", num_heads)
  depth = _checks.positive_int("depth", depth)
  _checks.one_of("distance", distance, DISTANCES)
  if isinstance(num_prefix, bool) or not isinstance(num_prefix, numbers.Integral) or (
      num_prefix < 0):
    raise ValueError(f"`num_prefix` must be a non-negative integer, got {num_prefix!r}.")
  layer_slopes = tuple(layer_slopes)
  if len(layer_slopes) != 2:
    raise ValueError(f"`layer_slopes` must be (first, last), got {layer_slopes!r}.")
  if isinstance(head_directions, str):
    lh = _lookhere_layer(height, width, head_directions, num_heads, distance)
  else:
    names = list(head_directions)
    if len(names) != depth or not all(isinstance(n, str) for n in names):
      raise ValueError(f"`head_directions` must be a set name or one name per layer "
                       f"(depth={depth}), got {head_directions!r}.")
    lh = np.stack([_lookhere_layer(height, width, n, num_heads, distance) for n in names])
  ls = np.linspace(layer_slopes[0], layer_slopes[1], depth)[:, None, None, None]
  lh = global_slope * ls * lh
  lh = np.nan_to_num(lh, posinf=BF16_MAX)
  lh = -np.asarray(lh, jnp.bfloat16).astype(np.float32)    # NumPy cast (ml_dtypes), as torch's
  lh = np.broadcast_to(lh, (depth,) + lh.shape[-3:])
  n = height * width + num_prefix
  out = np.zeros((depth, num_heads, n, n), np.float32)
  out[..., num_prefix:, num_prefix:] = lh
  return jnp.asarray(out)


def _fire_normalized_distance(num_tokens, c, threshold, eps):
  pos = jnp.arange(num_tokens, dtype=jnp.float32)
  rel = pos[:, None] - pos[None, :]
  norm = jnp.maximum(pos, jnp.abs(threshold))[:, None]
  rel = jnp.log(jnp.abs(c * rel) + 1.0)
  norm = jnp.log(jnp.abs(c * norm) + 1.0) + eps
  return rel / norm                                                  # [L, L]


def fire_bias(num_tokens: int, params: dict, *, eps: float = 1e-6) -> jax.Array:
  """FIRE (Li et al., ICLR 2024): a learned bias of the log-normalised relative distance.

  `b_h(i, j) = mlp(psi(i - j) / (psi(max(i, |L|)) + eps))_h` with `psi(x) = log(|c x| + 1)`
  and `mlp = Linear(1, 32) -> ReLU -> Linear(32, H)`, as the paper's listing (bidirectional:
  `|i - j|`; add a causal mask yourself). 1-D over the token index: for an image, the
  row-major patch index (no 2-D form exists in the sources; docs/spec/vision_ext.md §6.2).

  Args:
    num_tokens: L.
    params: `{"W1": [32], "b1": [32], "W2": [H, 32], "b2": [H], "c": scalar (init 0.1),
      "L": scalar}`, `L` the learned threshold itself (`|multiplier * init_L|`, init 512).
    eps: added to the normaliser.

  Returns:
    float32 `[H, L, L]`, to add to the logits.
  """
  num_tokens = _checks.positive_int("num_tokens", num_tokens)
  need = ("W1", "b1", "W2", "b2", "c", "L")
  if not isinstance(params, dict) or any(k not in params for k in need):
    raise ValueError(f"`params` must be a dict with keys {need}, got "
                     f"{sorted(params) if isinstance(params, dict) else type(params).__name__}.")
  w1, b1, w2, b2 = (jnp.asarray(params[k], jnp.float32) for k in ("W1", "b1", "W2", "b2"))
  c, thr = jnp.asarray(params["c"], jnp.float32), jnp.asarray(params["L"], jnp.float32)
  if w1.ndim != 1 or b1.shape != w1.shape or w2.ndim != 2 or w2.shape[1] != w1.shape[0] or (
      b2.shape != w2.shape[:1]) or c.ndim or thr.ndim:
    raise ValueError(f"`params` shapes must be W1 [M], b1 [M], W2 [H, M], b2 [H], c and L "
                     f"scalars; got W1 {w1.shape}, b1 {b1.shape}, W2 {w2.shape}, b2 {b2.shape}, "
                     f"c {c.shape}, L {thr.shape}.")
  nd = _fire_normalized_distance(num_tokens, c, thr, eps)
  hidden = jax.nn.relu(nd[..., None] * w1 + b1)                      # [L, L, M]
  out = jnp.matmul(hidden, w2.T, precision=_HIGHEST) + b2             # [L, L, H]
  return jnp.moveaxis(out, -1, 0)
