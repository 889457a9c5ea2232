"""Position encodings of the ViT, selected by one config string `posenc`.

Absolute encodings are added to the patch tokens once; rotary encodings turn q and k of every
attention layer after the projection. All rotary math comes from the `rope` package; this
module only decides, per encoding, which frequencies / parameters and which positions to use
(`shared/spec/vision_rope.md` §12), and owns the learnable ones as Flax parameters.

| posenc              | reference                     | frequencies / parameters                     | positions |
|---------------------|-------------------------------|----------------------------------------------|-----------|
| `none`              | -                             | -                                            | -         |
| `ape_learned`       | DeiT-III / rope-vit pos_embed | `[h, w, width]`, trunc-normal(0.02)          | -         |
| `ape_sincos`        | big_vision posemb_sincos_2d   | fixed `[h, w, width]`                        | -         |
| `rope_axial`        | rope-vit RoPE-Axial           | `freqs_axial(D, theta=100)`                  | `index`   |
| `rope_mixed`        | rope-vit RoPE-Mixed           | per layer `init_mixed_freqs(theta=10)`       | `index`   |
| `liere`             | LieRE_g (true per layer, §4.6)| per layer `init_liere(block_size=8)`         | `unit`    |
| `spherical`         | Spherical RoPE (fixed)        | `spherical_freqs(D, theta=100)`              | `pi`      |
| `spherical_learned` | Learned Spherical RoPE        | per layer `[H, D/3, 2]`, U[0, 1)             | `pi`      |
| `axial_pi`          | Spherical paper's Axial       | `freqs_axial(D, theta=10)`                   | `pi`      |
| `axial_learned`     | Learned Axial                 | per layer `[H, D/4, 2]`, U[0, 1)             | `pi`      |
| `mixed_pi`          | Spherical paper's Mixed       | per layer `[H, D/2, 2]`, U[0, 1)             | `pi`      |
| `uniform`           | Uniform RoPE                  | one frequency `omega` (1/pi) on every pair   | `pi`      |

Conventions shared by every rotary encoding:
* Positions are `(row, col)` from `rope.grid_positions(gh, gw, scale=..., train_size=train_grid)`,
  so a grid larger or smaller than in training gets the reference's extrapolation (`index`:
  larger integers; `unit`: `[0, n/n_train]`; `pi`: `[-s*pi, s*pi]`).
* The class token gets position `(0, 0)`. Every rotation here is exactly the identity at 0
  (cos 0 = 1, sin 0 = 0, expm(0) = I), so the class token is never rotated, as in all three
  reference codebases, without slicing q and k.
* Pairs are adjacent channels (`layout="interleaved"`), as in rope-vit, LieRE and CARE.
* Rotations that depend only on positions (fixed frequencies) are computed once per forward
  pass by `fixed_rotation` and shared by all layers; per-layer parameters give per-layer
  rotations (`LayerRotation`). Neither has a batch axis: they broadcast over the batch.

Parameter paths all contain "posenc" (the module names), which excludes them from weight decay.
"""
import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import rope


@dataclasses.dataclass(frozen=True)
class RopeKind:
  """Static description of one rotary encoding.

  Attributes:
    scale: default position convention (`rope.grid_positions` scale) of the reference.
    head_dim_multiple: head_dim must be divisible by this (None: by `block_size`, LieRE).
    theta: default frequency base, or None if the encoding has no `theta` option.
    learned: True if every layer owns its own (learnable) rotation parameters.
    uses_omega: True if the encoding reads the `omega` option (Uniform RoPE).
    group: the channels one rotation turns together, adjacent in the reference layout: 2 for
      2x2 turns of channel pairs (`{"cos", "sin"}`), 3 for Spherical's channel triplets
      (`{"ca", "sa", "cb", "sb"}`). The ViT emits q / k strided by the group
      (`models.vit.to_strided`), where the rotation reads contiguous runs of channels. None:
      contiguous blocks of `block_size` channels (`{"blocks"}`, LieRE), not reordered.
  """
  scale: str
  head_dim_multiple: Optional[int]
  theta: Optional[float]
  learned: bool
  uses_omega: bool = False
  group: Optional[int] = 2


ROPE_KINDS = {
    "rope_axial": RopeKind("index", 4, 100.0, learned=False),
    "rope_mixed": RopeKind("index", 4, 10.0, learned=True),
    "liere": RopeKind("unit", None, None, learned=True, group=None),
    "spherical": RopeKind("pi", 3, 100.0, learned=False, group=3),
    "spherical_learned": RopeKind("pi", 3, None, learned=True, group=3),
    "axial_pi": RopeKind("pi", 4, 10.0, learned=False),
    "axial_learned": RopeKind("pi", 4, None, learned=True),
    "mixed_pi": RopeKind("pi", 2, None, learned=True),
    "uniform": RopeKind("pi", 4, None, learned=False, uses_omega=True),
}
APE_KINDS = ("ape_learned", "ape_sincos")
POSENCS = ("none",) + APE_KINDS + tuple(ROPE_KINDS)
POSITION_SCALES = ("index", "unit", "pi")
DEFAULT_BLOCK_SIZE = 8
DEFAULT_OMEGA = 1.0 / math.pi   # the authors' code; "one cycle per image" would be 1.0


def head_dim_error(posenc: str, head_dim: int, block_size: int) -> Optional[str]:
  """Why `head_dim` cannot be split by the encoding, or None if it can."""
  if posenc not in ROPE_KINDS:
    return None
  if posenc == "liere":
    if head_dim % block_size:
      return (f"block_size={block_size} must divide head_dim={head_dim} for posenc='liere' "
              f"(LieRE rotates contiguous blocks of block_size channels)")
    return None
  multiple = ROPE_KINDS[posenc].head_dim_multiple
  if head_dim % multiple:
    why = {2: "channel pairs", 3: "channel triplets",
           4: "channel pairs, split into two halves (x / y, or two directions)"}
    return (f"head_dim={head_dim} cannot be split by posenc={posenc!r}: it needs "
            f"head_dim % {multiple} == 0 ({why[multiple]})")
  return None


def token_positions(grid: tuple[int, int], train_grid: tuple[int, int], scale: str,
                    num_prefix: int) -> dict:
  """Positions of all tokens: `num_prefix` class tokens at (0, 0), then the patch grid.

  Args:
    grid: (gh, gw) patch grid of the current images.
    train_grid: (th, tw) patch grid at the training resolution (`unit` / `pi` normalise to it).
    scale: "index" | "unit" | "pi".
    num_prefix: number of class tokens in front of the patches (0 or 1).

  Returns:
    `{"positions": float32 [num_prefix + gh*gw, 2] (row, col), row-major over the grid;
    "axes": (rows [gh], cols [gw]), the grid's coordinates (for per-axis trig)}`.
  """
  axes = rope.grid_axes(grid[0], grid[1], scale=scale, train_size=train_grid)
  patches = rope.grid_positions(grid[0], grid[1], scale=scale, train_size=train_grid)
  prefix = jnp.zeros((num_prefix, 2), jnp.float32)
  return {"positions": jnp.concatenate([prefix, patches], axis=0), "axes": axes}


def _uniform_freqs(head_dim: int, omega: float) -> jax.Array:
  # Axial layout with one shared frequency: freqs_axial at theta=1 has every ladder entry 1.
  return omega * rope.freqs_axial(head_dim, theta=1.0)


def fixed_rotation(posenc: str, tokens: dict, head_dim: int, theta: Optional[float],
                   omega: Optional[float]) -> Optional[dict]:
  """The rotation of an encoding whose frequencies are fixed (shared by all layers).

  Args:
    posenc: one of POSENCS.
    tokens: `token_positions(...)`.
    head_dim: D.
    theta: frequency base (already resolved to the default if unset).
    omega: Uniform RoPE's frequency.

  Returns:
    None if the encoding has no fixed rotation (not rotary, or per-layer parameters), else a
    rotation (see `rotate`): `{"cos", "sin": [L, 1, D/2]}` or `{"ca", "sa", "cb", "sb":
    [L, 1, D/3]}` (Spherical).
  """
  if posenc not in ROPE_KINDS or ROPE_KINDS[posenc].learned:
    return None
  if posenc in ("rope_axial", "axial_pi"):
    return _commuting(tokens, rope.freqs_axial(head_dim, theta=theta))
  if posenc == "uniform":
    return _commuting(tokens, _uniform_freqs(head_dim, omega))
  if posenc == "spherical":
    return _spherical(tokens, rope.spherical_freqs(head_dim, theta=theta))
  raise AssertionError(f"unhandled fixed posenc {posenc!r}")


def _uniform_init(key, shape, dtype=jnp.float32):
  # U[0, 1): the init of every learned frequency in the Spherical-RoPE authors' code.
  return jax.random.uniform(key, shape, dtype)


def _axial_table(freqs: jax.Array) -> jax.Array:
  """Learned Axial: `[H, D/4, 2]` (row, col) -> `[H, D/2, 2]` in the freqs_axial layout.

  Pairs `0..D/4-1` turn with col only, pairs `D/4..D/2-1` with row only; the zeros stay zero
  under training because they are not parameters (otherwise it would become Mixed RoPE).
  """
  zeros = jnp.zeros_like(freqs[..., 0])
  first = jnp.stack([zeros, freqs[..., 1]], axis=-1)    # x = col
  second = jnp.stack([freqs[..., 0], zeros], axis=-1)   # y = row
  return jnp.concatenate([first, second], axis=-2)


class LayerRotation(nn.Module):
  """The rotation one attention layer applies to its queries and keys.

  For fixed encodings this returns the shared `fixed` rotation; for learned ones the layer owns
  its per-head parameters and computes its rotation from the shared positions (no batch axis).

  Attributes:
    posenc: a key of ROPE_KINDS.
    num_heads: H.
    head_dim: D.
    theta: frequency base for the rope_mixed init (unused by the other learned encodings).
    block_size: LieRE block size g.
  """
  posenc: str
  num_heads: int
  head_dim: int
  theta: Optional[float] = None
  block_size: int = DEFAULT_BLOCK_SIZE

  @nn.compact
  def __call__(self, tokens: dict, fixed: Optional[dict]) -> dict:
    """Args: tokens: `token_positions(...)`; fixed: `fixed_rotation(...)`. Returns a rotation."""
    if not ROPE_KINDS[self.posenc].learned:
      return fixed
    h, d = self.num_heads, self.head_dim
    if self.posenc == "rope_mixed":
      freqs = self.param("freqs", lambda key: rope.init_mixed_freqs(key, h, d, theta=self.theta))
      return _commuting(tokens, freqs)
    if self.posenc == "mixed_pi":
      freqs = self.param("freqs", _uniform_init, (h, d // 2, 2))
      return _commuting(tokens, freqs)
    if self.posenc == "axial_learned":
      freqs = self.param("freqs", _uniform_init, (h, d // 4, 2))
      return _commuting(tokens, _axial_table(freqs))
    if self.posenc == "spherical_learned":
      freqs = self.param("freqs", _uniform_init, (h, d // 3, 2))
      return _spherical(tokens, freqs)
    if self.posenc == "liere":
      generators = self.param(
          "generators",
          lambda key: rope.init_liere(key, num_axes=2, num_heads=h, head_dim=d,
                                      block_size=self.block_size))
      return {"blocks": rope.liere_rotations(tokens["positions"], generators)}
    raise AssertionError(f"unhandled learned posenc {self.posenc!r}")


def _with_class_tokens(tokens: dict, tables: dict, identity: dict) -> dict:
  """Prepends the class tokens at (0, 0) to grid tables `{name: [gh*gw, ...]}`, each filled
  with its value at angle 0 (`identity[name]`: 1 for a cos, 0 for a sin), so they are exactly
  not rotated."""
  num_prefix = tokens["positions"].shape[0] - next(iter(tables.values())).shape[0]
  return {name: jnp.concatenate([jnp.full((num_prefix,) + t.shape[1:], identity[name], t.dtype),
                                 t], axis=0)
          for name, t in tables.items()}


def _commuting(tokens: dict, freqs: jax.Array) -> dict:
  """`{"cos", "sin": [L, 1|H, D/2]}` of the tokens' angles, once per rotation (reused for q
  and k, and by every layer when shared). Trig runs per grid axis (`rope.grid_cos_sin`)."""
  cos, sin = rope.grid_cos_sin(tokens["axes"], freqs)                 # [gh*gw, 1|H, D/2]
  return _with_class_tokens(tokens, {"cos": cos, "sin": sin}, {"cos": 1.0, "sin": 0.0})


def _spherical(tokens: dict, freqs: jax.Array) -> dict:
  """Spherical RoPE's `{"ca", "sa", "cb", "sb": [L, 1|H, D/3]}` (cos / sin of its row angle
  alpha and column angle beta; `rope.apply_spherical`), trig per grid axis."""
  tables = rope.spherical_grid_cos_sin(tokens["axes"], freqs)          # [gh*gw, 1|H, D/3]
  identity = {"ca": 1.0, "sa": 0.0, "cb": 1.0, "sb": 0.0}
  return _with_class_tokens(tokens, dict(zip(identity, tables)), identity)


def heads_first(rotation: dict, num_heads: int) -> dict:
  """A rotation `[L, H|1, ...]` re-laid out as `[H, L, ...]` for heads-first q / k.

  The rope functions act elementwise over the (token, head) axes and only ask that the
  rotation's two axes before the channel axes match those of `x`, so rotating `[B, H, L, D]`
  with the swapped (and head-broadcast) rotation is exactly the `[B, L, H, D]` computation.
  """
  def swap(r):
    r = jnp.swapaxes(r, 0, 1)
    return jnp.broadcast_to(r, (num_heads,) + r.shape[1:])
  return {name: swap(r) for name, r in rotation.items()}


def rotate(x: jax.Array, rotation: dict, strided: bool = False) -> jax.Array:
  """Rotates queries or keys.

  Args:
    x: `[B, L, H, D]`, or heads-first `[B, H, L, D]` with a `heads_first` rotation.
    rotation: `{"cos", "sin": [L, H|1, D/2]}` (commuting 2x2 rotations of channel pairs, by
      the angles whose cos / sin these are), `{"ca", "sa", "cb", "sb": [L, H|1, D/3]}`
      (Spherical RoPE's triplets) or `{"blocks": [L, H|1, D/g, g, g]}` (block rotations of
      contiguous channels).
    strided: False: the reference channel layout (pairs (2j, 2j+1), triplets (3t, 3t+1,
      3t+2)); True: channels reordered by `models.vit.to_strided` (pairs (j, j + D/2),
      triplets (t, t + D/3, t + 2D/3)).

  Returns:
    Same shape and dtype as `x`.
  """
  # The tables are per-axis trig broadcast over the grid (plus the class token's ones and
  # zeros): XLA forms them inside the rotation (materialize=False) rather than re-reading a
  # written [H, L, D/2] table for every image of the batch.
  if "blocks" in rotation:
    return rope.apply_blocks(x, rotation["blocks"])
  if "ca" in rotation:
    tables = tuple(rotation[n] for n in ("ca", "sa", "cb", "sb"))
    return rope.apply_spherical(x, tables, layout="thirds" if strided else "interleaved",
                                materialize=False)
  return rope.apply_cos_sin(x, rotation["cos"], rotation["sin"],
                            layout="half" if strided else "interleaved", materialize=False)


def sincos_2d(height: int, width: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
  """big_vision's 2-D sin-cos embedding: `[height, width, dim]` float32.

  Channels are `[sin(col*w), cos(col*w), sin(row*w), cos(row*w)]`, each `dim/4` wide, with
  `w_j = temperature ** (-j / (dim/4 - 1))`.
  """
  if dim % 4:
    raise ValueError(f"width={dim} must be divisible by 4 for posenc='ape_sincos'.")
  q = dim // 4
  omega = 1.0 / temperature ** (np.arange(q, dtype=np.float64) / max(q - 1, 1))
  row, col = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  xr = col[..., None] * omega
  yr = row[..., None] * omega
  pe = np.concatenate([np.sin(xr), np.cos(xr), np.sin(yr), np.cos(yr)], axis=-1)
  return pe.astype(np.float32)


def resize_ape(table: jax.Array, grid: tuple[int, int]) -> jax.Array:
  """Bicubic interpolation of an absolute embedding to another grid (identity on its own grid).

  As timm / DeiT (`F.interpolate(..., mode="bicubic", align_corners=False)`): pixel-centre
  aligned and without anti-aliasing when shrinking. (jax uses the Keys kernel a = -0.5, torch
  a = -0.75; the two differ slightly off the grid points.)

  Args:
    table: `[th, tw, C]`.
    grid: (gh, gw).

  Returns:
    `[gh, gw, C]` float32.
  """
  return jax.image.resize(table, (grid[0], grid[1], table.shape[-1]), method="bicubic",
                          antialias=False)


def _trunc_normal_002(key, shape, dtype=jnp.float32):
  return nn.initializers.truncated_normal(stddev=0.02)(key, shape, dtype)


class AbsolutePosenc(nn.Module):
  """Absolute position embedding of the patch tokens (no class-token slot, as in rope-vit).

  Stored (or, for sin-cos, built) on the training grid and bicubically resized to other grids.

  Attributes:
    kind: "learned" (parameter `ape`, trunc-normal std 0.02 as DeiT) or "sincos".
    train_grid: (th, tw).
    width: embedding width.
  """
  kind: str
  train_grid: tuple[int, int]
  width: int

  @nn.compact
  def __call__(self, grid: tuple[int, int]) -> jax.Array:
    """Returns the embedding of a `grid` (gh, gw) of patches: `[gh*gw, width]` float32."""
    shape = (self.train_grid[0], self.train_grid[1], self.width)
    if self.kind == "learned":
      table = self.param("ape", _trunc_normal_002, shape)
    elif self.kind == "sincos":
      table = jnp.asarray(sincos_2d(*shape))
    else:
      raise ValueError(f"AbsolutePosenc kind={self.kind!r}; allowed: 'learned', 'sincos'.")
    return resize_ape(table, grid).reshape(grid[0] * grid[1], self.width)
