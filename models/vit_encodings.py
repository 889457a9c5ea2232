"""The ViT's position encodings: one registry, one entry per encoding (`model.encoding`).

An entry (`Encoding`) says everything about its encoding once: the reference it reproduces,
its kind, its position convention, which config options it reads and their defaults, the
head_dim it can split, its Flax parameters with their init and logical axes, how it builds its
tables and how it rotates q / k (or biases the attention logits). `models/vit.py` looks the
name up once (`ENCODINGS.get(config.encoding)`) and only ever talks to the entry; nothing else
branches on the name. All rotary math comes from the `rope` package (its contract:
docs/API.md; the references' conventions: docs/spec/vision_rope.md).

| encoding            | reference                    | parameters / frequencies        | positions |
|---------------------|------------------------------|---------------------------------|-----------|
| `none`              | -                            | -                               | -         |
| `ape`               | DeiT-III / rope-vit pos_embed| `[h, w, width]`, trunc-normal   | -         |
| `sincos`            | big_vision posemb_sincos_2d  | fixed `[h, w, width]`           | -         |
| `axial`             | rope-vit RoPE-Axial          | `freqs_axial(D, theta=100)`     | `index`   |
| `mixed`             | rope-vit RoPE-Mixed          | per layer, `init_mixed_freqs`   | `index`   |
| `liere`             | LieRE_g (true per layer)     | per layer, `init_liere(g=8)`    | `unit`    |
| `spherical`         | Spherical RoPE (fixed)       | `spherical_freqs(D, theta=100)` | `pi`      |
| `spherical_learned` | Learned Spherical RoPE       | per layer `[H, D/3, 2]`, U[0,1) | `pi`      |
| `axial_pi`          | Spherical paper's Axial      | `freqs_axial(D, theta=10)`      | `pi`      |
| `axial_learned`     | Learned Axial                | per layer `[H, D/4, 2]`, U[0,1) | `pi`      |
| `mixed_pi`          | Spherical paper's Mixed      | per layer `[H, D/2, 2]`, U[0,1) | `pi`      |
| `uniform`           | Uniform RoPE                 | one frequency `omega` (1/pi)    | `pi`      |
| `comrope_ap`/`_ld`  | ComRoPE (Longin-Yu/ComRoPE)  | per layer `P` (+ LD `theta`)    | `center`, cls at 0.5 |
| `string_cayley`     | Cayley-STRING (spec §4)      | per layer `W` -> `cayley`, axial| `index`   |
| `string_circulant`  | Circulant-STRING (spec §4)   | per layer `c [2, H, D]`         | `index`   |
| `dinov3`            | DINOv3 RoPE                  | `freqs_dinov3(D, base=100)`     | `centered`|
| `eva02`             | EVA-02 (timm)                | `freqs_eva(D, theta=1e4)`       | `index_interp` |
| `prope`             | 2-D p-RoPE, p = 0.25         | truncated `freqs_axial(D, 100)` | `index`   |
| `lookhere`          | LookHere (logit bias)        | fixed per-layer bias            | grid      |
| `fire`              | FIRE (logit bias, 1-D index) | per layer MLP, `c`, `multiplier`| token index |

Training-time position augmentation (`model.position_augment`, `Options.augment`): DINOv3's
shift / jitter / rescale and ComRoPE's perturbation / offset, drawn in `token_positions` from the
step key, honoured by every rotary entry, never at evaluation. ComRoPE's offset also moves the
class tokens where an entry rotates them (ComRoPE, LieRE); entries whose tables prepend the
identity for them (pair / triplet tables) or that rotate the patches only (STRING) keep them
unrotated.

Test-time resolution options (eval.py; they add no parameter, so a trained checkpoint is
evaluated under them):
* `model.rope_scaling` (`Options.rope_scaling`): FiT's VisionNTK / VisionYaRN frequency
  scaling (`rope.scale_freqs`, docs/spec/vision_ext.md §5.1), per axis by
  `s = max(n / n_train, 1)` (decoupled), with `rope.attention_scale`'s amplitude on the patch
  tokens' rotary tables (class tokens stay unrotated). Only entries with `scalable=True`
  accept it: a fixed frequency ladder per axis over integer positions (`axial`, `prope`,
  `string_cayley`'s base table, and `eva02` once `model.position_scale='index'`: FiT's exact
  setting). Learned tables (mixed, *_learned, ComRoPE, Circulant-STRING, LieRE) have no ladder
  for NTK / YaRN to re-space; normalised coordinates (`unit`, `pi`, `center`, `centered`) have
  no training length in position units for YaRN's ramp and already bound the positions.
* `model.position_scale='index_interp'`: EVA-02's interpolation (integer positions mapped
  onto the training grid's range, `i * n_train / n`) for the entries with integer positions
  (`index`, or `index_interp` natively: eva02).

Old names (the `model.posenc` values of configs and checkpoints written before the registry)
are aliases: `ape_learned` -> `ape`, `ape_sincos` -> `sincos`, `rope_axial` -> `axial`,
`rope_mixed` -> `mixed`. `model.ape=True` adds the `ape` entry's embedding to a rotary
encoding (rope-vit's "RoPE + APE"; configs/vit_axial_ape.py, configs/vit_mixed_ape.py).

Conventions shared by the rotary entries:
* Positions are `(row, col)` from `rope.grid_axes(gh, gw, scale=..., train_size=train_grid)`,
  so a grid larger or smaller than in training gets the reference's extrapolation (`index`:
  larger integers; `unit`: `[0, n/n_train]`; `pi`: `[-s*pi, s*pi]`).
* The class token gets position `(0, 0)`. Every rotation here is exactly the identity at 0
  (cos 0 = 1, sin 0 = 0, expm(0) = I), so the class token is never rotated, as in all three
  reference codebases, without slicing q and k.
* The references pair adjacent channels ("interleaved"). The model emits q and k with each
  rotation group of `group` adjacent channels spread `D/group` apart (`models.vit.to_strided`,
  applied to the qkv kernel, so the parameters stay in the reference layout); an entry with
  `group` set therefore rotates with `layout="half"` (pairs) or `"thirds"` (triplets): q . k is
  unchanged when q and k list their channels in the same order, and contiguous halves are
  cheaper to rotate than strided pairs. Entries without `group` (LieRE's contiguous blocks)
  see the reference order.
* An entry without parameters builds its tables once per forward pass, shared by every layer;
  an entry with parameters builds them per layer from that layer's parameters. Tables have no
  batch axis: they broadcast over the batch.

Parameters live in modules named "posenc" (top level for absolute embeddings, inside each
attention layer for rotary ones): checkpoints keep their paths, and trainer/optim.py excludes
every path containing "posenc" from weight decay.

Adding an encoding: README.md "Adding an encoding" (one `rope` function, one `register` call
here, one configs/vit_<name>.py).
"""
import dataclasses
import functools
import math
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import rope
from models import ape_resize
from models.registry import Registry

KINDS = ("none", "absolute", "rotary", "bias")
POSITION_SCALES = ("index", "unit", "pi", "center", "centered", "index_interp")  # rope's
AUGMENT_KEYS = ("shift", "jitter", "rescale", "perturbation", "offset")   # model.position_augment
ROPE_SCALINGS = ("none", "linear", "ntk", "ntk_by_parts", "yarn")   # model.rope_scaling
INTEGER_SCALES = ("index", "index_interp")   # entries that accept position_scale index_interp
DEFAULT_BLOCK_SIZE = 8
APE_RESIZES = ("bicubic", "torch_bicubic", "torch_bicubic_antialias")   # model.ape_resize
PERIODS_DTYPES = ("float32", "bfloat16")                                 # model.periods_dtype


@dataclasses.dataclass(frozen=True)
class Options:
  """The resolved options an entry's functions receive (built by `models.vit` from the config).

  Attributes:
    num_heads, head_dim, width: H, D and the token width H * D.
    train_grid: (th, tw) patch grid at the training resolution (`unit` / `pi` positions and
      absolute tables are normalised to it).
    scale: position convention (config `position_scale`, else the entry's `scale`).
    theta, omega: config value, else the entry's default (None if the entry reads neither).
    block_size: LieRE's / ComRoPE's block size g (config `block_size`).
    depth: number of layers (per-layer biases, LookHere).
    augment: training-time position augmentation (config `position_augment`), None = off, or
      the strengths `(shift, jitter, rescale, perturbation, offset)` (each a float or None):
      DINOv3's shift `U(-s, s)`, jitter `exp U(-ln J, ln J)` per axis, rescale
      `exp U(-ln R, ln R)` shared (`rope.sample_position_augment`), then ComRoPE's per-patch
      perturbation `clip(0.5 sigma N(0, 1), -0.5, 0.5)` patches and global offset
      `sigma_off N(0, 1)` (`rope.sample_comrope_perturbation`). Applied only in training, drawn
      from the step key (`token_positions`).
    rope_grid: the grid the positions are normalised to (`unit`, `pi`, `index_interp`), None:
      `train_grid`. EVA-02's `ref_feat_shape` (16 x 16 for every released model, also those
      fine-tuned at 336 / 448 px) differs from its training grid (config `rope_grid`).
    periods_dtype: "float32" | "bfloat16": the dtype of DINOv3's stored `periods` (config
      `periods_dtype`; read by the `dinov3` entry only).
    ape_resize: how an absolute table is resampled to another grid (config `ape_resize`,
      `APE_RESIZES`).
    rope_scaling: test-time frequency scaling of `scalable` entries (config `rope_scaling`):
      "none", or a `rope.scale_freqs` method ("linear", "ntk", "ntk_by_parts", "yarn"),
      applied where the grid exceeds `train_grid` (`scale_ladder`).
  """
  num_heads: int
  head_dim: int
  width: int
  train_grid: tuple[int, int]
  scale: Optional[str] = None
  theta: Optional[float] = None
  omega: Optional[float] = None
  block_size: int = DEFAULT_BLOCK_SIZE
  depth: int = 1
  augment: Optional[tuple] = None
  rope_grid: Optional[tuple[int, int]] = None
  periods_dtype: str = "float32"
  ape_resize: str = "bicubic"
  rope_scaling: str = "none"


@dataclasses.dataclass(frozen=True)
class Param:
  """One Flax parameter of an entry.

  Attributes:
    name: parameter name inside the "posenc" module (checkpoint path).
    init: `init(key, options) -> array` (float32).
    axes: one logical axis name per dimension (models/vit.py `LOGICAL_AXES`); None: never
      sharded.
  """
  name: str
  init: Callable[[jax.Array, Options], jax.Array]
  axes: tuple[Optional[str], ...]


Tokens = dict   # token_positions(...): {"positions": [L, 2], "axes": (rows, cols)}
Tables = dict   # an entry's tables, e.g. {"cos", "sin": [L, H|1, D/2]}


def _augment(rows, cols, patches, prefix, grid, options, key):
  """Training-time augmentation of the grid coordinates (Options.augment), drawn from `key`.

  DINOv3's shift / jitter / rescale are per-axis affine maps, so the grid stays a product grid
  (the per-axis `axes` are transformed alike, `rope.augment_positions` on the tokens).
  ComRoPE's perturbation moves every patch separately, in patch units (the grid spacing of the
  entry's convention; `rope.perturb_positions` for "center" positions), and the offset moves
  every token, prefix included, in position units: the grid is then no longer a product grid
  (`axes` None, tables from the tokens' positions)."""
  shift, jitter, rescale, perturbation, offset = options.augment
  k_aug, k_perturb = jax.random.split(key)
  axes = (rows, cols)
  if (shift, jitter, rescale) != (None, None, None):
    v = rope.sample_position_augment(k_aug, shift=shift, jitter=jitter, rescale=rescale)
    patches = rope.augment_positions(patches, **v)
    one = lambda a, i: rope.augment_positions(
        a[:, None], **{n: (None if x is None else x[i:i + 1] if n != "rescale" else x)
                       for n, x in v.items()})[:, 0]
    axes = (one(rows, 0), one(cols, 1))
  if (perturbation, offset) != (None, None):
    delta, off = rope.sample_comrope_perturbation(
        k_perturb, grid[0] * grid[1], intensity=perturbation or 0.0,
        offset_intensity=offset or 0.0)
    spacing = jnp.stack([(a[1] - a[0]) if a.shape[0] > 1 else jnp.float32(1.0)
                         for a in (rows, cols)])
    patches = patches + jnp.clip(delta, -0.5, 0.5) * spacing
    prefix = prefix + off
    patches = patches + off
    axes = None
  return patches, prefix, axes


def token_positions(grid: tuple[int, int], options: Options, num_prefix: int,
                    key: Optional[jax.Array] = None, *, prefix: float = 0.0) -> Tokens:
  """Positions of all tokens: `num_prefix` class / register tokens at (prefix, prefix), then
  the grid.

  Args:
    grid: (gh, gw) patch grid of the current images.
    options: `options.scale` (a `rope.grid_positions` scale; None: the entry has no 2-D
      positions, e.g. a bias over the token index), `options.rope_grid` (else
      `options.train_grid`), `options.augment`.
    num_prefix: number of class and register tokens in front of the patches.
    key: in training, the step key (`Encoding.train_key` or `options.augment` set): the
      position augmentation `options.augment` is drawn from it. None (evaluation): no
      augmentation.
    prefix: the class tokens' coordinate (0: the identity of every rotation; 0.5: ComRoPE).

  Returns:
    `{"positions": float32 [num_prefix + gh*gw, 2] (row, col), row-major over the grid;
    "axes": (rows [gh], cols [gw]), the grid's coordinates (for per-axis trig), or None when
    the augmentation moved patches separately; "grid"; "num_prefix"}`.
  """
  out = {"grid": tuple(grid), "num_prefix": num_prefix, "positions": None, "axes": None}
  if options.scale is None:
    return out
  reference = options.rope_grid or options.train_grid
  rows, cols = rope.grid_axes(grid[0], grid[1], scale=options.scale, train_size=reference)
  patches = rope.grid_positions(grid[0], grid[1], scale=options.scale, train_size=reference)
  prefix_pos = jnp.full((num_prefix, 2), prefix, jnp.float32)
  axes = (rows, cols)
  if key is not None and options.augment is not None:
    patches, prefix_pos, axes = _augment(rows, cols, patches, prefix_pos, grid, options, key)
  out.update(positions=jnp.concatenate([prefix_pos, patches], axis=0), axes=axes)
  return out


@dataclasses.dataclass(frozen=True)
class Encoding:
  """Everything about one position encoding.

  Attributes:
    reference: the code / paper it reproduces (documentation).
    kind: "none"; "absolute" (`embed` adds a table to the patch tokens); "rotary" (`rotate`
      turns q and k in every layer); "bias" (`bias` is added to the attention logits). A rotary
      entry may also have a `bias`.
    scale: default position convention (`rope.grid_positions` scale); None: positions unused
      and the `position_scale` option is refused.
    theta: default frequency base; None: the `theta` option is refused.
    omega: default single frequency (Uniform RoPE); None: the `omega` option is refused.
    uses_block_size: reads the `block_size` option (LieRE, ComRoPE).
    block_size: its default when the option is None.
    multiple: head_dim must be divisible by it (None: by `block_size` if `uses_block_size`,
      else anything); `channels` says why, for the error message.
    group: q / k arrive strided by this group (`models.vit.to_strided`); None: reference order.
    params: the Flax parameters, created in a module named "posenc" (per layer for rotary /
      bias entries, once at the top for absolute ones).
    tables: `tables(params, tokens, options) -> Tables`, from this layer's (or, without
      params, no) parameters; without params it runs once per forward pass.
    rotate: `rotate(x [B, L, H, D], tables) -> x` rotated (same shape and dtype).
    bias: `bias(params, tokens, options) -> [1|B, H|1, L, L]` float32 logit bias, passed to
      `jax.nn.dot_product_attention` (relative-bias baselines); None: no bias.
    bias_per_layer: `bias` takes a fourth argument, the attention layer's index (0-based), for
      biases that differ per layer without parameters (LookHere's layer slopes).
    embed: `embed(params, grid, options) -> [gh*gw, width]` (absolute entries).
    positions: `positions(grid, options, num_prefix, key) -> Tokens` (default
      `token_positions`; an entry may override it, e.g. with normalised coordinates).
    train_key: in training, `positions` always gets a key drawn from the "dropout" rng stream
      (the step key); it also gets one whenever `options.augment` is set (every rotary entry
      honours the position augmentation through `token_positions`); at evaluation None.
    check: extra validation `check(options) -> error message or None`.
    uses_periods_dtype: reads `options.periods_dtype` (DINOv3's bf16-stored periods); the
      `periods_dtype` option is refused for the other entries.
    scalable: its tables come from a fixed per-axis frequency ladder (base `theta`) over
      integer positions and pass it through `scale_ladder`, so it accepts
      `model.rope_scaling` (module docstring).
    to_reference: `to_reference(x, tables) -> x` for an entry whose `rotate` returns q, k in
      other orthonormal coordinates than the reference's (the same logits, fewer products;
      STRING): maps them to the reference's rotated q, k (for sown intermediates only).
  """
  reference: str
  kind: str
  scale: Optional[str] = None
  theta: Optional[float] = None
  omega: Optional[float] = None
  uses_block_size: bool = False
  block_size: int = DEFAULT_BLOCK_SIZE
  multiple: Optional[int] = None
  channels: str = ""
  group: Optional[int] = None
  params: tuple[Param, ...] = ()
  tables: Optional[Callable[[dict, Tokens, Options], Tables]] = None
  rotate: Optional[Callable[[jax.Array, Tables], jax.Array]] = None
  bias: Optional[Callable[..., jax.Array]] = None
  bias_per_layer: bool = False
  embed: Optional[Callable[[dict, tuple[int, int], Options], jax.Array]] = None
  positions: Callable[..., Tokens] = token_positions
  train_key: bool = False
  check: Optional[Callable[[Options], Optional[str]]] = None
  uses_periods_dtype: bool = False
  scalable: bool = False
  to_reference: Optional[Callable[[jax.Array, Tables], jax.Array]] = None

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"Encoding kind={self.kind!r}; allowed: {KINDS}.")
    if self.kind == "rotary" and (self.rotate is None or self.tables is None):
      raise ValueError("a rotary Encoding needs `tables` and `rotate`.")
    if self.kind == "bias" and self.bias is None:
      raise ValueError("a bias Encoding needs `bias`.")
    if self.kind == "absolute" and self.embed is None:
      raise ValueError("an absolute Encoding needs `embed`.")

  @property
  def uses_positions(self) -> bool:
    """True if the attention layers need token positions (rotary or bias entries)."""
    return self.kind in ("rotary", "bias")

  @property
  def shared(self) -> bool:
    """True if the tables depend only on positions: built once per forward pass."""
    return self.uses_positions and not self.params

  def error(self, options: Options) -> Optional[str]:
    """Why the model's sizes do not fit this entry, or None."""
    multiple = self.multiple
    if multiple is None and self.uses_block_size:
      multiple = options.block_size
    if multiple and options.head_dim % multiple:
      what = f"block_size={multiple}" if self.multiple is None else str(multiple)
      return (f"head_dim={options.head_dim} cannot be split: it needs head_dim % {what} == 0 "
              f"({self.channels})")
    return self.check(options) if self.check else None


ENCODINGS: Registry[Encoding] = Registry("model.encoding")


# ------------------------------------------------------------------------------ helpers


def _with_class_tokens(tokens: Tokens, tables: Tables, identity: dict) -> Tables:
  """Prepends the class tokens at (0, 0) to grid tables `{name: [gh*gw, ...]}`, each filled
  with its value at angle 0 (`identity[name]`: 1 for a cos, 0 for a sin), so they are exactly
  not rotated."""
  num_prefix = tokens["positions"].shape[0] - next(iter(tables.values())).shape[0]
  return {name: jnp.concatenate([jnp.full((num_prefix,) + t.shape[1:], identity[name], t.dtype),
                                 t], axis=0)
          for name, t in tables.items()}


def pair_tables(tokens: Tokens, freqs: jax.Array, amplitude: float = 1.0) -> Tables:
  """`{"cos", "sin": [L, 1|H, D/2]}` of 2x2 rotations of channel pairs by the angles
  `positions @ freqs` (`freqs [D/2, 2]` or `[H, D/2, 2]`, (row, col)). Trig runs per grid axis
  (`rope.grid_cos_sin`: gh + gw rows, not gh * gw tokens). `amplitude` (YaRN's attention
  scale, `scale_ladder`) multiplies the patch tokens' cos and sin, not the class tokens'."""
  if tokens["axes"] is None:     # augmented per patch: no product grid
    ang = rope.angles(tokens["positions"][tokens["num_prefix"]:], freqs)
    cos, sin = jnp.cos(ang), jnp.sin(ang)
  else:
    cos, sin = rope.grid_cos_sin(tokens["axes"], freqs)               # [gh*gw, 1|H, D/2]
  if amplitude != 1.0:
    cos, sin = cos * amplitude, sin * amplitude
  return _with_class_tokens(tokens, {"cos": cos, "sin": sin}, {"cos": 1.0, "sin": 0.0})


def axis_scales(grid: tuple[int, int], options: Options) -> tuple[float, float]:
  """FiT's decoupled scale per axis, `s = max(n / n_train, 1)` (host floats: grids are
  static). Never below 1: a smaller grid keeps the training ladder (FiT does not shrink)."""
  return tuple(max(n / t, 1.0) for n, t in zip(grid, options.train_grid))


def scale_ladder(freqs: jax.Array, tokens: Tokens, options: Options
                 ) -> tuple[jax.Array, float]:
  """A `scalable` entry's ladder under `options.rope_scaling` at this grid, and the amplitude.

  Args:
    freqs: the entry's fixed axial table `[D/2, 2]` (every row reads one axis), built with
      base `options.theta`, for integer positions.
    tokens: `token_positions(...)` (its `grid`).
    options: `rope_scaling`, `train_grid` (square: FiT's `ori_max_pe_len` is its side),
      `theta`.

  Returns:
    `(freqs', amplitude)`: `rope.scale_freqs(freqs, (s_row, s_col), ...)`, with the columns of
    an axis whose `s` is 1 kept bitwise (so the training grid and "none" are exactly today's
    model), and `rope.attention_scale` as a host float (1 except YaRN beyond the grid).
  """
  method = options.rope_scaling
  scales = axis_scales(tokens["grid"], options)
  if method == "none" or scales == (1.0, 1.0):
    return freqs, 1.0
  train_len = options.train_grid[0]
  scaled = rope.scale_freqs(freqs, jnp.asarray(scales, jnp.float32), method=method,
                            train_len=train_len, theta=options.theta)
  scaled = jnp.where(jnp.asarray([s == 1.0 for s in scales]), freqs, scaled)
  # The amplitude depends only on the static grid: a host float, so tables skip a multiply
  # by exactly 1 (linear / NTK) and the value is not traced under jit.
  with jax.ensure_compile_time_eval():
    amplitude = float(rope.attention_scale(method, tokens["grid"], train_len))
  return scaled, amplitude


def scaled_pair_tables(tokens: Tokens, freqs: jax.Array, options: Options,
                       post: Optional[Callable[[jax.Array], jax.Array]] = None) -> Tables:
  """`pair_tables` of a `scalable` entry's ladder after `scale_ladder` (then `post`, e.g.
  p-RoPE's truncation, which must see the full ladder's ranks first)."""
  freqs, amplitude = scale_ladder(freqs, tokens, options)
  return pair_tables(tokens, post(freqs) if post else freqs, amplitude)


def rotate_pairs(x: jax.Array, tables: Tables) -> jax.Array:
  """Pair rotation of strided q / k (`group=2`: pair j is channels (j, j + D/2)).

  The tables are per-axis trig broadcast over the grid (plus the class token's ones and
  zeros): `materialize=False` lets XLA form them inside the rotation rather than re-read a
  written [L, H, D/2] table for every image of the batch."""
  return rope.apply_cos_sin(x, tables["cos"], tables["sin"], layout="half", materialize=False)


def triplet_tables(tokens: Tokens, freqs: jax.Array) -> Tables:
  """Spherical RoPE's `{"ca", "sa", "cb", "sb": [L, 1|H, D/3]}` (cos / sin of its row angle
  alpha and column angle beta; `rope.apply_spherical`), trig per grid axis."""
  if tokens["axes"] is None:     # augmented per patch: no product grid
    tables = rope.spherical_cos_sin(tokens["positions"][tokens["num_prefix"]:], freqs)
  else:
    tables = rope.spherical_grid_cos_sin(tokens["axes"], freqs)        # [gh*gw, 1|H, D/3]
  identity = {"ca": 1.0, "sa": 0.0, "cb": 1.0, "sb": 0.0}
  return _with_class_tokens(tokens, dict(zip(identity, tables)), identity)


def rotate_triplets(x: jax.Array, tables: Tables) -> jax.Array:
  """Spherical rotation of strided q / k (`group=3`: triplet t is (t, t + D/3, t + 2D/3))."""
  return rope.apply_spherical(x, tuple(tables[n] for n in ("ca", "sa", "cb", "sb")),
                              layout="thirds", materialize=False)   # as rotate_pairs


def rotate_blocks(x: jax.Array, tables: Tables) -> jax.Array:
  """Block rotations `{"blocks": [L, H|1, D/g, g, g]}` of contiguous channels (LieRE)."""
  return rope.apply_blocks(x, tables["blocks"])


def uniform_init(key, shape) -> jax.Array:
  """U[0, 1): the init of every learned frequency in the Spherical-RoPE authors' code."""
  return jax.random.uniform(key, shape, jnp.float32)


def _axial_table(freqs: jax.Array) -> jax.Array:
  """Learned Axial: `[H, D/4, 2]` (row, col) -> `[H, D/2, 2]` in the freqs_axial layout.

  Pairs `0..D/4-1` turn with col only, pairs `D/4..D/2-1` with row only; the zeros stay zero
  under training because they are not parameters (otherwise it would become Mixed RoPE).
  """
  zeros = jnp.zeros_like(freqs[..., 0])
  first = jnp.stack([zeros, freqs[..., 1]], axis=-1)    # x = col
  second = jnp.stack([freqs[..., 0], zeros], axis=-1)   # y = row
  return jnp.concatenate([first, second], axis=-2)


def sincos_2d(height: int, width: int, dim: int, temperature: float = 10_000.0) -> np.ndarray:
  """big_vision's 2-D sin-cos embedding: `[height, width, dim]` float32.

  Channels are `[sin(col*w), cos(col*w), sin(row*w), cos(row*w)]`, each `dim/4` wide, with
  `w_j = temperature ** (-j / (dim/4 - 1))`.
  """
  if dim % 4:
    raise ValueError(f"width={dim} must be divisible by 4 for encoding='sincos'.")
  q = dim // 4
  omega = 1.0 / temperature ** (np.arange(q, dtype=np.float64) / max(q - 1, 1))
  row, col = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  xr = col[..., None] * omega
  yr = row[..., None] * omega
  pe = np.concatenate([np.sin(xr), np.cos(xr), np.sin(yr), np.cos(yr)], axis=-1)
  return pe.astype(np.float32)


def resize_ape(table: jax.Array, grid: tuple[int, int], method: str = "bicubic") -> jax.Array:
  """Bicubic interpolation of an absolute embedding to another grid (identity on its own grid).

  Pixel-centre aligned (`align_corners=False`), in one of three conventions (`APE_RESIZES`):
  "bicubic" (default): `jax.image.resize`, Keys kernel a = -0.5, no anti-aliasing; close to,
  but not the same numbers as, torch's (a = -0.75) off the grid points. "torch_bicubic" and
  "torch_bicubic_antialias": exactly torch's `F.interpolate(mode="bicubic",
  align_corners=False, antialias=False / True)` (`models.ape_resize`), what rope-vit / DeiT and
  timm's `resample_abs_pos_embed` (EVA-02) do, so ported checkpoints give their numbers at
  every resolution.

  Args:
    table: `[th, tw, C]`.
    grid: (gh, gw).
    method: one of `APE_RESIZES`.

  Returns:
    `[gh, gw, C]` float32.
  """
  if method == "bicubic":
    return jax.image.resize(table, (grid[0], grid[1], table.shape[-1]), method="bicubic",
                            antialias=False)
  return ape_resize.resize_2d(table, grid, antialias=(method == "torch_bicubic_antialias"))


def _flat(table: jax.Array, grid: tuple[int, int], method: str = "bicubic") -> jax.Array:
  return resize_ape(table, grid, method).reshape(grid[0] * grid[1], table.shape[-1])


# ------------------------------------------------------------------------------ entries

ENCODINGS.register("none", Encoding(reference="no position information", kind="none"))

APE = ENCODINGS.register("ape", Encoding(
    reference="DeiT-III / rope-vit learned pos_embed (no class-token slot)",
    kind="absolute",
    params=(Param("ape", lambda key, o: nn.initializers.truncated_normal(stddev=0.02)(
        key, o.train_grid + (o.width,), jnp.float32), ("grid_rows", "grid_cols", "embed")),),
    embed=lambda p, grid, o: _flat(p["ape"], grid, o.ape_resize),
), aliases=("ape_learned",))

ENCODINGS.register("sincos", Encoding(
    reference="big_vision posemb_sincos_2d",
    kind="absolute",
    embed=lambda p, grid, o: _flat(jnp.asarray(sincos_2d(*o.train_grid, o.width)), grid,
                                   o.ape_resize),
    check=lambda o: (f"a width divisible by 4 is needed, got {o.width}" if o.width % 4
                     else None),
), aliases=("ape_sincos",))

_PAIRS = dict(kind="rotary", channels="channel pairs", group=2, rotate=rotate_pairs)
_QUARTERS = dict(_PAIRS, multiple=4,
                 channels="channel pairs, split into two halves (x / y, or two directions)")
_TRIPLETS = dict(kind="rotary", multiple=3, channels="channel triplets", group=3,
                 rotate=rotate_triplets)
# Learned frequency tables: [H, pairs or triplets, (row, col)].
_FREQ_AXES = ("heads", "rotary", "position")

ENCODINGS.register("axial", Encoding(
    reference="rope-vit RoPE-Axial", scale="index", theta=100.0, **_QUARTERS, scalable=True,
    tables=lambda p, t, o: scaled_pair_tables(t, rope.freqs_axial(o.head_dim, theta=o.theta),
                                              o),
), aliases=("rope_axial",))

ENCODINGS.register("mixed", Encoding(
    reference="rope-vit RoPE-Mixed (learned, per layer)", scale="index", theta=10.0,
    **_QUARTERS,
    params=(Param("freqs", lambda key, o: rope.init_mixed_freqs(
        key, o.num_heads, o.head_dim, theta=o.theta), _FREQ_AXES),),
    tables=lambda p, t, o: pair_tables(t, p["freqs"]),
), aliases=("rope_mixed",))

ENCODINGS.register("liere", Encoding(
    reference="LieRE_g (StanfordMIMI/LieRE), true per-layer generators", kind="rotary",
    scale="unit", uses_block_size=True,
    channels="LieRE rotates contiguous blocks of block_size channels",
    params=(Param("generators", lambda key, o: rope.init_liere(
        key, num_axes=2, num_heads=o.num_heads, head_dim=o.head_dim, block_size=o.block_size),
        ("position", "heads", "rotary", None, None)),),
    tables=lambda p, t, o: {"blocks": rope.liere_rotations(t["positions"], p["generators"])},
    rotate=rotate_blocks,
))

ENCODINGS.register("spherical", Encoding(
    reference="Spherical RoPE, fixed frequencies (ChasevdG/CARE)", scale="pi", theta=100.0,
    **_TRIPLETS,
    tables=lambda p, t, o: triplet_tables(t, rope.spherical_freqs(o.head_dim, theta=o.theta)),
))

ENCODINGS.register("spherical_learned", Encoding(
    reference="Learned Spherical RoPE (ChasevdG/CARE)", scale="pi", **_TRIPLETS,
    params=(Param("freqs", lambda key, o: uniform_init(
        key, (o.num_heads, o.head_dim // 3, 2)), _FREQ_AXES),),
    tables=lambda p, t, o: triplet_tables(t, p["freqs"]),
))

ENCODINGS.register("axial_pi", Encoding(
    reference="the Spherical paper's Axial ([-pi, pi] positions)", scale="pi", theta=10.0,
    **_QUARTERS,
    tables=lambda p, t, o: pair_tables(t, rope.freqs_axial(o.head_dim, theta=o.theta)),
))

ENCODINGS.register("axial_learned", Encoding(
    reference="the Spherical paper's Learned Axial", scale="pi", **_QUARTERS,
    params=(Param("freqs", lambda key, o: uniform_init(
        key, (o.num_heads, o.head_dim // 4, 2)), _FREQ_AXES),),
    tables=lambda p, t, o: pair_tables(t, _axial_table(p["freqs"])),
))

ENCODINGS.register("mixed_pi", Encoding(
    reference="the Spherical paper's Mixed (U[0, 1) init)", scale="pi",
    **dict(_PAIRS, multiple=2),
    params=(Param("freqs", lambda key, o: uniform_init(
        key, (o.num_heads, o.head_dim // 2, 2)), _FREQ_AXES),),
    tables=lambda p, t, o: pair_tables(t, p["freqs"]),
))

# Axial layout with one shared frequency: freqs_axial at theta=1 has every ladder entry 1.
# Default omega 1/pi: the authors' code ("one cycle per image" would be 1.0).
ENCODINGS.register("uniform", Encoding(
    reference="Uniform RoPE (the Spherical paper)", scale="pi", omega=1.0 / math.pi,
    **_QUARTERS,
    tables=lambda p, t, o: pair_tables(t, o.omega * rope.freqs_axial(o.head_dim, theta=1.0)),
))


# ------------------------------------------------------------- vision extensions (issue #14)
# Spec and reference conventions: docs/spec/vision_ext.md.


def _comrope_param(name, variant):
  return lambda key, o: rope.init_comrope(key, o.num_heads, o.head_dim, variant=variant,
                                          block_size=o.block_size)[name]


def _comrope_check(variant):
  def check(o):
    need = o.block_size * (2 if variant == "ap" else 1)
    if o.head_dim % need:
      return (f"ComRoPE-{variant.upper()} needs head_dim % {need} == 0 (block_size="
              f"{o.block_size}{', cycled through 2 axes' if variant == 'ap' else ''}), got "
              f"{o.head_dim}")
    return None
  return check


def _comrope_tables(variant):
  def tables(p, t, o):
    gens = rope.comrope_generators(p, variant=variant)
    return {"blocks": rope.skew_rotations(t["positions"], gens)}
  return tables


# ComRoPE (Longin-Yu/ComRoPE): positions (i + 0.5) / n per axis, the class token at the image
# centre (0.5, 0.5) and rotated (its code); P ~ N(0, 1), LD theta ~ N(0, 1) (init_std 1);
# block_size from model.block_size (the reference config's default 2: configs/vit_comrope_*).
for _variant in ("ap", "ld"):
  ENCODINGS.register(f"comrope_{_variant}", Encoding(
      reference=f"ComRoPE-{_variant.upper()} (Longin-Yu/ComRoPE model.py)", kind="rotary",
      scale="center", uses_block_size=True, block_size=2,
      channels="ComRoPE rotates contiguous blocks of block_size channels",
      params=((Param("P", _comrope_param("P", _variant), ("heads", "rotary", None, None)),)
              + ((Param("theta", _comrope_param("theta", _variant), ("position", "rotary")),)
                 if _variant == "ld" else ())),
      tables=_comrope_tables(_variant), rotate=rotate_blocks,
      positions=functools.partial(token_positions, prefix=0.5),
      check=_comrope_check(_variant),
  ))

STRING_INIT_STD = 0.3    # W of S = triu(W, 1) - triu(W, 1)^T (the goldens' scale; not pinned)
CIRCULANT_INIT_STD = 0.02


def _skew(w: jax.Array) -> jax.Array:
  upper = jnp.triu(w, 1)
  return upper - jnp.swapaxes(upper, -1, -2)


def _patches(tokens: Tokens) -> jax.Array:
  """The patch tokens' positions `[gh*gw, 2]` (without the class tokens)."""
  return tokens["positions"][tokens["num_prefix"]:]


def _prefix_at_origin(t: Tokens) -> jax.Array:
  """All tokens' positions `[L, 2]` with the class tokens at exactly 0 (whatever the position
  augmentation did to them): STRING's rotation there is exactly the identity."""
  patches = _patches(t)
  return jnp.concatenate([jnp.zeros((t["num_prefix"], patches.shape[-1]), patches.dtype),
                          patches], axis=0)


def _string_amplitude(y, t):
  """`y` with the patch rows (not the class tokens) scaled by `amplitude` (YaRN), if any."""
  if "amplitude" not in t:
    return y
  # One multiply by a per-token factor `[1, L, 1, ...]` (1 on the class tokens), rather than
  # slicing the class tokens off and concatenating them back along the token axis.
  a = jnp.asarray(t["amplitude"], y.dtype)
  scale = jnp.where(jnp.arange(y.shape[1]) < t["num_prefix"], jnp.ones((), y.dtype), a)
  return y * scale.reshape((1, -1) + (1,) * (y.ndim - 2))


# STRING rotates by P R(r) P^T (P: per-head Cayley map, or the fixed real Fourier basis of the
# circulant form). Attention needs only q^T k, and P is orthogonal, so the layers rotate into
# P's coordinates, R(r) P^T x, for every token (class tokens at r = 0: P^T x), one [D, D]
# product less per q / k (issue 14's step-overhead goal). The logits are those of the reference
# to float32 rounding; `to_reference` (applying P) gives the reference's rotated q, k for the
# sown intermediates (analysis, tests).
def _string_tables(p, t, o):
  """Cayley-STRING over rope-vit's axial table (theta 100, integer positions), per head P;
  the base table through `scale_ladder` (`amplitude` only when it is not 1)."""
  freqs, amplitude = scale_ladder(rope.freqs_axial(o.head_dim, theta=o.theta), t, o)
  tables = {"angles": rope.angles(_prefix_at_origin(t), freqs),     # [L, D/2]
            "P": rope.cayley(_skew(p["W"])), "num_prefix": t["num_prefix"]}
  if amplitude != 1.0:
    tables["amplitude"] = amplitude
  return tables


def _string_rotate(x, t):
  # a R P^T x on the patches (the amplitude scales the rotated rows; P is orthogonal).
  y = rope.string_cayley(x, t["angles"], t["P"], layout="interleaved", left=False)
  return _string_amplitude(y, t)


ENCODINGS.register("string_cayley", Encoding(
    reference="Cayley-STRING (Schenck et al. 2025; spec §4: per-head P, axial base RoPE)",
    kind="rotary", scale="index", theta=100.0, multiple=4, scalable=True,
    channels="channel pairs of an axial RoPE, split into row / col halves",
    params=(Param("W", lambda key, o: STRING_INIT_STD * jax.random.normal(
        key, (o.num_heads, o.head_dim, o.head_dim), jnp.float32), ("heads", "kv", None)),),
    tables=_string_tables,
    rotate=_string_rotate,
    to_reference=lambda x, t: rope.apply_dense(x, t["P"]),
))

ENCODINGS.register("string_circulant", Encoding(
    reference="Circulant-STRING (Schenck et al. 2025; spec §4: dense per-head circulant)",
    kind="rotary", scale="index",
    params=(Param("c", lambda key, o: CIRCULANT_INIT_STD * jax.random.normal(
        key, (2, o.num_heads, o.head_dim), jnp.float32), ("position", "heads", "kv")),),
    tables=lambda p, t, o: {"positions": _prefix_at_origin(t), "c": p["c"]},
    rotate=lambda x, t: rope.circulant_string(x, t["positions"], t["c"], left=False),
    to_reference=lambda x, t: jnp.einsum(
        "ji,...j->...i", jnp.asarray(rope.circulant_basis(x.shape[-1]), x.dtype), x,
        precision=jax.lax.Precision.HIGHEST),
))

# DINOv3: rotate-half on the reference channel order (group None), row-first periods
# base^(4j/D) with base 100, coordinates 2 (i + 0.5) / n - 1, prefix tokens not rotated.
ENCODINGS.register("dinov3", Encoding(
    reference="DINOv3 RopePositionEmbedding (base 100, rotate-half, row first)",
    kind="rotary", scale="centered", theta=100.0, multiple=4,
    channels="channel pairs (j, j + D/2), split into row / col quarters",
    tables=lambda p, t, o: pair_tables(t, rope.freqs_dinov3(o.head_dim, base=o.theta,
                                                            periods_dtype=o.periods_dtype)),
    uses_periods_dtype=True,
    rotate=rotate_pairs,
))

# EVA-02 (timm RotaryEmbeddingCat): theta 1e4, row first, interleaved (group 2), integer
# positions interpolated to the training grid at other resolutions (`index_interp`).
ENCODINGS.register("eva02", Encoding(
    reference="EVA-02 2-D RoPE (timm RotaryEmbeddingCat, ref_feat_shape = training grid)",
    scale="index_interp", theta=1e4, **_QUARTERS, scalable=True,
    tables=lambda p, t, o: scaled_pair_tables(t, rope.freqs_eva(o.head_dim, theta=o.theta), o),
))

PROPE_PROPORTION = 0.25   # Gemma's rope_proportion of the global layers (spec §5.2)


def _prope_check(o):
  if int(PROPE_PROPORTION * (o.head_dim // 4)) < 1:
    return (f"p-RoPE keeps int({PROPE_PROPORTION} * head_dim / 4) frequencies per axis: "
            f"head_dim={o.head_dim} keeps none (needs head_dim >= {int(4 / PROPE_PROPORTION)})")
  return None


ENCODINGS.register("prope", Encoding(
    reference=f"p-RoPE (Barbero et al.) on rope-vit's axial table, p = {PROPE_PROPORTION}",
    scale="index", theta=100.0, **_QUARTERS, scalable=True,
    tables=lambda p, t, o: scaled_pair_tables(
        t, rope.freqs_axial(o.head_dim, theta=o.theta), o,
        post=lambda f: rope.truncate_freqs(f, PROPE_PROPORTION)),
    check=_prope_check,
))


# LookHere's head directions. The reference (GreenCUBIC/lookhere lookhere.py,
# create_lh_layer_tensor) assigns a set name to heads by fixed rules: one set ("halves": up /
# down / left / right) cycles over a multiple of 4 heads; at exactly 6 heads (ViT-S) it only
# takes a split "a-b", giving heads 0-3 set a and heads 4-5 the first two heads of set b (a
# single name fails there: `sh[1]`). Its slopes then allow only a non-directional b ("none",
# "zero", "center" and their mixes: 2 slopes 0.25, 0.0625); a directional b yields 8 slopes
# for 6 heads and fails too. No 6-head configuration is documented: the released LH-180 / 90 /
# 45 models are ViT-B/16 (the README builds them with vision_transformer.py's defaults, 12
# heads), their lh_config inside the checkpoints (not available). Our choice at 6 heads,
# "halves-none", keeps the four directional heads of "halves" and gives the other two the full
# field of view with the reference's distance penalties ("zero" would give them no position
# information); other head counts follow the reference's rules or are refused (ViT-Ti's 3).
def lookhere_directions(num_heads: int) -> str:
  """The direction set used: "halves" for a multiple of 4 heads, "halves-none" otherwise
  (the reference's 6-head rule needs a split "a-b"; see the comment above)."""
  return "halves" if num_heads % 4 == 0 else "halves-none"


def _lookhere_check(o):
  try:
    rope.lookhere_bias(2, 2, head_directions=lookhere_directions(o.num_heads),
                       num_heads=o.num_heads, depth=1)
  except ValueError as e:
    return f"LookHere needs a multiple of 4 heads, or 6 (S; not Ti's 3): {e}"
  return None


LOOKHERE_LAYER_SLOPES = (1.5, 0.5)   # (first, last) layer slope; global slope 1


def _lookhere_bias(p, t, o, layer):
  """Layer `layer`'s `[1, H, L, L]`: `rope.lookhere_bias` of that layer alone (its slope of
  linspace(first, last, depth) as a one-layer stack: the same numbers as layer `layer` of
  the whole `[depth, H, L, L]` stack, without building the stack in every layer)."""
  (gh, gw), n = t["grid"], t["num_prefix"]
  slope = float(np.linspace(*LOOKHERE_LAYER_SLOPES, o.depth)[layer])
  return rope.lookhere_bias(gh, gw, head_directions=lookhere_directions(o.num_heads),
                            num_heads=o.num_heads, depth=1, layer_slopes=(slope, slope),
                            num_prefix=n)


ENCODINGS.register("lookhere", Encoding(
    reference="LookHere (GreenCUBIC/lookhere create_lh_bias_tensor; slopes 1, (1.5, 0.5))",
    kind="bias", bias=_lookhere_bias, bias_per_layer=True, check=_lookhere_check,
))

FIRE_HIDDEN = 32


def _torch_linear(fan_in):
  """torch.nn.Linear's default init U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (weights and bias)."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def _fire_bias(p, t, o):
  (gh, gw), n = t["grid"], t["num_prefix"]
  params = dict(p, L=jnp.abs(p["multiplier"] * 512.0))
  del params["multiplier"]
  return rope.fire_bias(n + gh * gw, params)[None]


ENCODINGS.register("fire", Encoding(
    reference="FIRE (Li et al. 2024), 1-D over the row-major token index (spec §6.2)",
    kind="bias", bias=_fire_bias,
    params=(
        Param("W1", lambda key, o: _torch_linear(1)(key, (FIRE_HIDDEN,)), ("mlp",)),
        Param("b1", lambda key, o: _torch_linear(1)(key, (FIRE_HIDDEN,)), ("mlp",)),
        Param("W2", lambda key, o: _torch_linear(FIRE_HIDDEN)(
            key, (o.num_heads, FIRE_HIDDEN)), ("heads", "mlp")),
        Param("b2", lambda key, o: _torch_linear(FIRE_HIDDEN)(key, (o.num_heads,)), ("heads",)),
        Param("c", lambda key, o: jnp.asarray(0.1, jnp.float32), ()),
        Param("multiplier", lambda key, o: jnp.asarray(1.0, jnp.float32), ()),
    ),
))


class Posenc(nn.Module):
  """The parameters of one entry, as `{name: array}`; the module is always named "posenc".

  Each parameter is created with its logical axis names (`nn.with_logical_partitioning`), so
  `model.init` returns them boxed like every other parameter of the ViT.
  """
  encoding: Encoding
  options: Options

  @nn.compact
  def __call__(self) -> dict:
    def init(p):
      return nn.with_logical_partitioning(lambda key: p.init(key, self.options), p.axes)
    return {p.name: self.param(p.name, init(p)) for p in self.encoding.params}

