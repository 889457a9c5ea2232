"""A small decoder-only vision-language model with a choice of multimodal RoPE schemes.

Images go through a patch encoder (patch embedding, optionally a few ViT layers with 2-D axial
RoPE), an optional 2x2 token merge and a two-layer projector; the resulting visual tokens
replace the IMAGE placeholders of the token sequence (the k-th image fills the k-th run of
placeholders). A LLaMA-style decoder (RMSNorm, SwiGLU, grouped-query attention, causal mask)
then reads the sequence, its rotary tables coming from the position ids of the batch. The
rotary scheme is one entry of `models/vlm_schemes.py` (`model.scheme`), looked up once in
`model_from_config`: the model asks the entry for its tables, its q/k rotation and its decoding
rule and never branches on the scheme's name.

Attention is `jax.nn.dot_product_attention` (`model.attention_impl`: "xla", or "cudnn" for the
cuDNN flash kernel on GPUs), the causal/padding pattern passed as its arguments (`Mask`: the
dense mask for "xla", the causal flag and key lengths for cuDNN): the rotation is applied to q
and k before, so every scheme reaches the fused kernels, the KV-cache decoding step included. Every parameter
carries logical axis names (`nn.with_logical_partitioning`, see `LOGICAL_AXES`) for sharding;
`init_params` returns them unboxed (plain arrays, the checkpoint format).

Batch format: `data.vlm_pipeline.Collator` (the keys the model reads: `model_inputs`). Usage:

  model = vlm.model_from_config(config.model, vocab_size)
  params = vlm.init_params(model, rng, vlm.dummy_inputs(config.model, image_size=32))
  logits = model.apply({"params": params}, **vlm.model_inputs(batch))     # [B, L, V]
  tokens, logits = vlm.generate(model, params, batch, max_new_tokens=8)  # greedy, KV cache

The loss at position t predicts tokens[:, t+1] (that convention belongs to the task).
"""
import functools
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import rope
from models import vlm_schemes

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ATTENTION_IMPLS = ("xla", "cudnn")   # `implementation` of jax.nn.dot_product_attention

# The logical axis names of the parameters (a sharding rule maps them onto mesh axes):
#   "embed" residual / encoder width, "mlp" MLP hidden width, "heads" query heads, "kv_heads"
#   key/value heads, "kv" per-head width, "vocab" vocabulary; None = not sharded (conv taps,
#   the 3 of a fused qkv). Layers are separate modules (not scanned), so there is no "layers".
LOGICAL_AXES = ("embed", "mlp", "heads", "kv_heads", "kv", "vocab")


def _part(init: Callable, names: tuple) -> Callable:
  """`init` returning a value boxed with its logical axis names."""
  return nn.with_logical_partitioning(init, names)


_KERNEL = nn.initializers.lecun_normal()   # the flax default of Dense / DenseGeneral / Conv
_ZEROS = nn.initializers.zeros_init()
_ONES = nn.initializers.ones_init()


def default_config() -> ml_collections.ConfigDict:
  """Every model option with its default."""
  c = ml_collections.ConfigDict()
  c.name = "vlm"
  c.width = 256                # decoder residual width
  c.depth = 4                  # decoder layers
  c.num_heads = 8              # query heads
  c.num_kv_heads = 4           # key/value heads (grouped-query attention); divides num_heads
  c.head_dim = 32              # per-head width; may differ from width / num_heads
  c.mlp_dim = 768              # SwiGLU hidden width
  c.theta = 1e6                # rotary base of the decoder (the paper's experiments: 1e6)
  # Rotary scheme, a name of models/vlm_schemes.py SCHEMES (its registry lists them all, e.g.
  # vanilla, mrope, circle_age, hope, grape). It also decides the data's position ids.
  c.scheme = "mrope_interleave"
  # (t, h, w) rotary pair counts summing to head_dim/2; None = the D=128 defaults scaled
  # (chunked 16:24:24, interleaved 24:20:20). Used by mrope, mrope_interleave, videorope, circle*.
  c.sections = ml_collections.config_dict.placeholder(tuple)
  # MHRoPE key/value heads per axis (t, h, w); None = (2, 3, 3) of 8 scaled to num_kv_heads.
  c.head_sections = ml_collections.config_dict.placeholder(tuple)
  c.age_strategy = "alternate"   # circle_age: which layers get circle ids (rope.age_schedule)
  c.circle_alpha = 0.5           # Circle-RoPE angle mix (released config)
  # Circle-RoPE radius (released config): a number, "auto" or "auto-k" (rope.multimodal_positions).
  c.circle_radius = ml_collections.FieldReference(10.0, field_type=object)
  # Position options passed to rope.multimodal_positions; None = the scheme's default
  # (mrope / spatial_reset 1, videorope 2).
  c.temporal_stride = ml_collections.config_dict.placeholder(float)
  c.visual_stride = 16.0         # v2pe: ids spent per visual block
  c.max_len = 256                # longest sequence (prompt + generated) the model accepts
  # The IMAGE placeholder id; None = data.tokenizer.IMAGE.
  c.image_token_id = ml_collections.config_dict.placeholder(int)
  c.tie_embeddings = False       # share the token embedding with the output projection
  c.dtype = "float32"            # compute dtype ("float32" | "bfloat16"); params are float32
  # jax.nn.dot_product_attention implementation: "xla" (any backend) or "cudnn" (GPU flash).
  c.attention_impl = "xla"

  c.vision = ml_collections.ConfigDict()
  c.vision.patch_size = 4        # image side must be divisible by patch_size (x2 with merge)
  c.vision.width = 128
  c.vision.depth = 2             # ViT layers with 2-D axial RoPE; 0 = patch embedding alone
  c.vision.num_heads = 4
  c.vision.mlp_dim = 512
  c.vision.theta = 100.0         # base of the encoder's axial RoPE (rope-vit)
  c.vision.merge = True          # 2x2 token merge before the projector (Qwen2-VL)
  return c


def rotary_settings(cfg: ml_collections.ConfigDict) -> vlm_schemes.RotarySettings:
  return vlm_schemes.settings(cfg)


def _attention_impl(cfg: ml_collections.ConfigDict) -> str:
  """`attention_impl`, "xla" for configs written before the option existed."""
  impl = cfg.get("attention_impl", "xla")
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"`attention_impl`={impl!r} is not supported; allowed: "
                     f"{', '.join(map(repr, ATTENTION_IMPLS))}.")
  return impl


def _positive(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def validate_config(cfg: ml_collections.ConfigDict, vocab_size: Optional[int] = None,
                    image_size: Optional[int] = None) -> None:
  """Raises ValueError naming the option if the model cannot be built as configured."""
  scheme = vlm_schemes.SCHEMES.get(cfg.scheme)
  for name in ("width", "depth", "num_heads", "num_kv_heads", "head_dim", "mlp_dim",
               "max_len"):
    _positive(name, cfg[name])
  if cfg.dtype not in DTYPES:
    raise ValueError(f"`dtype`={cfg.dtype!r} is not supported; allowed: {sorted(DTYPES)}.")
  _attention_impl(cfg)
  scheme.check(rotary_settings(cfg))
  v = cfg.vision
  for name in ("patch_size", "width", "num_heads", "mlp_dim"):
    _positive(f"vision.{name}", v[name])
  if v.depth < 0:
    raise ValueError(f"`vision.depth` must be >= 0 (0 = patch embedding alone), got {v.depth}.")
  if v.depth and (v.width % v.num_heads or (v.width // v.num_heads) % 4):
    raise ValueError(
        f"`vision.width`={v.width} / `vision.num_heads`={v.num_heads} must give a head dim "
        f"divisible by 4 (2-D axial RoPE gives a quarter of the channels to each axis).")
  if vocab_size is not None:
    _positive("vocab_size", vocab_size)
    if cfg.image_token_id is not None and not 0 <= cfg.image_token_id < vocab_size:
      raise ValueError(f"`image_token_id`={cfg.image_token_id} is outside the vocabulary "
                       f"[0, {vocab_size}).")
  if image_size is not None:
    step = v.patch_size * (2 if v.merge else 1)
    if image_size % step:
      raise ValueError(
          f"image size {image_size} must be divisible by `vision.patch_size`={v.patch_size}"
          f"{' x 2 (vision.merge)' if v.merge else ''} = {step}.")


def _image_token_id(cfg: ml_collections.ConfigDict) -> int:
  if cfg.image_token_id is not None:
    return int(cfg.image_token_id)
  try:
    from data import tokenizer  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ValueError("`image_token_id` is None and data.tokenizer (which defines IMAGE) "
                     "cannot be imported; set image_token_id.") from e
  return int(tokenizer.IMAGE)


def model_from_config(cfg: ml_collections.ConfigDict, vocab_size: int) -> "VisionLanguageModel":
  """The model of `cfg` (see `default_config`) over a vocabulary of `vocab_size` tokens."""
  validate_config(cfg, vocab_size)
  image_token_id = _image_token_id(cfg)
  if not 0 <= image_token_id < vocab_size:
    raise ValueError(f"`image_token_id`={image_token_id} is outside the vocabulary "
                     f"[0, {vocab_size}).")
  v = cfg.vision
  return VisionLanguageModel(
      vocab_size=int(vocab_size), width=int(cfg.width), mlp_dim=int(cfg.mlp_dim),
      scheme=vlm_schemes.SCHEMES.get(cfg.scheme), rotary=rotary_settings(cfg),
      attention_impl=_attention_impl(cfg), max_len=int(cfg.max_len), image_token_id=image_token_id,
      vision_patch_size=int(v.patch_size), vision_width=int(v.width),
      vision_depth=int(v.depth), vision_num_heads=int(v.num_heads),
      vision_mlp_dim=int(v.mlp_dim), vision_theta=float(v.theta), merge=bool(v.merge),
      tie_embeddings=bool(cfg.tie_embeddings), dtype=cfg.dtype)


def sequence_positions(cfg: ml_collections.ConfigDict,
                       segments: Sequence[Any]) -> vlm_schemes.SequencePositions:
  """Position ids of one unpadded sequence for the configured scheme.

  Args:
    cfg: the model config.
    segments: `rope.Text` / `rope.Image` / `rope.Video` (grids after the 2x2 merge).

  Returns:
    `(positions [L, 3], next_position, positions_alt [L, 3], next_position_alt)`, the batch
    keys of `data.vlm_pipeline.Collator` (the alt pair equals the primary one unless the
    scheme has alternate ids, e.g. "circle_age").
  """
  return vlm_schemes.positions_fn(cfg)(segments)


# ---------------------------------------------------------------------------------------------
# Building blocks.


class Mask(NamedTuple):
  """Which keys each query sees, in the two forms the attention kernels take.

  `dense`: bool `[B, Lq, Lk]` (True = may attend), what the "xla" implementation reads.
  `is_causal` + `kv_lengths` (int32 `[B]`, keys 0..n-1 valid): the same pattern for
  right-padded sequences and for one decoding step, the form cuDNN's flash kernel takes
  without materialising a mask (equal on every valid query row; tested on CPU with "xla").
  """
  dense: jax.Array
  is_causal: bool = False
  kv_lengths: Optional[jax.Array] = None


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: Optional[Any],
           implementation: str = "xla") -> jax.Array:
  """Grouped-query dot-product attention (`jax.nn.dot_product_attention`).

  Args:
    q: `[B, Lq, Hq, D]`; query head i reads key/value head i // (Hq / Hkv).
    k, v: `[B, Lk, Hkv, D]`.
    mask: a `Mask`, a bool `[B, Lq, Lk]` (True = may attend) or None (everything visible).
    implementation: "xla" or "cudnn" (`ATTENTION_IMPLS`). cuDNN gets a `Mask`'s causal flag
      and key lengths (its fused masking), "xla" the dense mask.

  Returns:
    `[B, Lq, Hq, D]` in q's dtype.
  """
  k, v = k.astype(q.dtype), v.astype(q.dtype)
  if isinstance(mask, Mask):
    if implementation == "cudnn" and (mask.is_causal or mask.kv_lengths is not None):
      return jax.nn.dot_product_attention(
          q, k, v, is_causal=mask.is_causal, key_value_seq_lengths=mask.kv_lengths,
          implementation=implementation)
    mask = mask.dense
  if mask is not None:
    mask = mask[:, None]                     # [B, 1, Lq, Lk], broadcast over heads
  return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)


def merge_2x2(x: jax.Array) -> jax.Array:
  """Concatenates each 2x2 block of patch features (Qwen2-VL's spatial merge).

  Args:
    x: `[M, gh, gw, E]` patch grid, gh and gw even.

  Returns:
    `[M, gh/2, gw/2, 4E]`; merged token (Y, X) holds patches (2Y, 2X), (2Y, 2X+1),
    (2Y+1, 2X), (2Y+1, 2X+1) in that order.
  """
  m, gh, gw, e = x.shape
  x = x.reshape(m, gh // 2, 2, gw // 2, 2, e).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(m, gh // 2, gw // 2, 4 * e)


def _dense(features, names: tuple, *, axis=-1, use_bias: bool = True, dtype=jnp.float32,
           name: Optional[str] = None) -> nn.DenseGeneral:
  """A DenseGeneral whose kernel (and bias) carry the logical axis names `names` (kernel
  shape: input axes then features; the bias takes the feature names, the last ones)."""
  n_out = 1 if isinstance(features, int) else len(features)
  return nn.DenseGeneral(features, axis=axis, use_bias=use_bias, dtype=dtype,
                         kernel_init=_part(_KERNEL, names),
                         bias_init=_part(_ZEROS, names[-n_out:]), name=name)


def _layer_norm(dtype, name: Optional[str] = None) -> nn.LayerNorm:
  return nn.LayerNorm(dtype=dtype, scale_init=_part(_ONES, ("embed",)),
                      bias_init=_part(_ZEROS, ("embed",)), name=name)


def _rms_norm(dtype, name: Optional[str] = None) -> nn.RMSNorm:
  return nn.RMSNorm(dtype=dtype, scale_init=_part(_ONES, ("embed",)), name=name)


class VisionBlock(nn.Module):
  """Pre-LN ViT block whose attention rotates q/k with fixed 2-D axial RoPE."""
  num_heads: int
  mlp_dim: int
  dtype: Any = jnp.float32
  attention_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, angles: jax.Array) -> jax.Array:
    """x: `[M, N, E]`; angles: `[N, 1, D/2]`."""
    width = x.shape[-1]
    head_dim = width // self.num_heads
    y = _layer_norm(self.dtype, name="attn_norm")(x)
    qkv = _dense((3, self.num_heads, head_dim), ("embed", None, "heads", "kv"),
                 dtype=self.dtype, name="qkv")(y)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    q, k = rope.apply(q, angles), rope.apply(k, angles)
    y = attend(q, k, v, None, self.attention_impl)
    x = x + _dense(width, ("heads", "kv", "embed"), axis=(-2, -1), dtype=self.dtype,
                   name="out")(y)
    y = _layer_norm(self.dtype, name="mlp_norm")(x)
    y = _dense(self.mlp_dim, ("embed", "mlp"), dtype=self.dtype, name="mlp_in")(y)
    y = _dense(width, ("mlp", "embed"), dtype=self.dtype, name="mlp_out")(nn.gelu(y))
    return x + y


class VisionEncoder(nn.Module):
  """Patch embedding followed by `depth` ViT blocks with 2-D axial RoPE (no class token)."""
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  theta: float
  dtype: Any = jnp.float32
  attention_impl: str = "xla"

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    """images `[M, S, S, C]` -> patch features `[M, S/p, S/p, width]`."""
    p = self.patch_size
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                kernel_init=_part(_KERNEL, (None, None, None, "embed")),
                bias_init=_part(_ZEROS, ("embed",)), name="patch_embed")(images)
    m, gh, gw, _ = x.shape
    x = x.reshape(m, gh * gw, self.width)
    if self.depth:
      # Positions are static (the grid), so the angles are a constant shared by every block.
      angles = rope.angles(rope.grid_positions(gh, gw),
                           rope.freqs_axial(self.width // self.num_heads, self.theta))
      for i in range(self.depth):
        x = VisionBlock(self.num_heads, self.mlp_dim, self.dtype, self.attention_impl,
                        name=f"block_{i}")(x, angles)
    x = _layer_norm(self.dtype, name="encoder_norm")(x)
    return x.reshape(m, gh, gw, self.width)


class RotaryTables(nn.Module):
  """The per-layer rotary tables of one forward pass (`Scheme.tables`).

  A module of its own so that a scheme's tables may own parameters or draw training
  randomness (`self.param`, `self.make_rng("scheme")` inside the entry's `tables`).
  """
  scheme: vlm_schemes.Scheme
  rotary: vlm_schemes.RotarySettings

  @nn.compact
  def __call__(self, positions: jax.Array, positions_alt: jax.Array) -> list:
    return self.scheme.tables(self, self.rotary, positions, positions_alt)


class Attention(nn.Module):
  """Causal grouped-query self-attention with rotary q/k and an optional KV cache."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  scheme: vlm_schemes.Scheme
  dtype: Any = jnp.float32
  attention_impl: str = "xla"

  @nn.compact
  def __call__(self, x, table, mask, cache=None, slots=None):
    """Attention over the sequence (cache None) or one decoding step (cache given).

    Args:
      x: `[B, L, W]` (L = 1 when decoding).
      table: the layer's rotary table from `Scheme.tables` (for the angle schemes
        `vlm_schemes.Angles`: cos/sin for q `[B, L, 1|Hq, D/2]` and k `[B, L, 1|Hkv, D/2]`).
      mask: a `Mask` of `[B, L, Lk]`; Lk = L without a cache, the cache length with one.
      cache: None, or `(keys, values)` each `[B, C, Hkv, D]` (already rotated).
      slots: int `[B]`, the cache slot this step's token goes to (per sample).

    Returns:
      `(out [B, L, W], (keys, values))`: this call's keys/values `[B, L, Hkv, D]` without a
      cache, the updated cache with one.
    """
    q = _dense((self.num_heads, self.head_dim), ("embed", "heads", "kv"), use_bias=False,
               dtype=self.dtype, name="query")(x)
    k = _dense((self.num_kv_heads, self.head_dim), ("embed", "kv_heads", "kv"),
               use_bias=False, dtype=self.dtype, name="key")(x)
    v = _dense((self.num_kv_heads, self.head_dim), ("embed", "kv_heads", "kv"),
               use_bias=False, dtype=self.dtype, name="value")(x)
    if isinstance(table, vlm_schemes.Angles):
      # Lets tests check which ids each layer really received (free unless made mutable).
      self.sow("intermediates", "rotary_angles", table.angles)
    q, k = self.scheme.rotate(self, q, k, table)
    if cache is not None:
      rows = jnp.arange(x.shape[0])
      k = cache[0].at[rows, slots].set(k[:, 0].astype(cache[0].dtype))
      v = cache[1].at[rows, slots].set(v[:, 0].astype(cache[1].dtype))
    out = attend(q, k, v, mask, self.attention_impl)
    out = _dense(x.shape[-1], ("heads", "kv", "embed"), axis=(-2, -1), use_bias=False,
                 dtype=self.dtype, name="out")(out)
    return out, (k, v)


class DecoderLayer(nn.Module):
  """LLaMA block: x + attn(rmsnorm(x)), then x + swiglu(rmsnorm(x))."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  scheme: vlm_schemes.Scheme
  dtype: Any = jnp.float32
  attention_impl: str = "xla"

  @nn.compact
  def __call__(self, x, table, mask, cache=None, slots=None):
    y = _rms_norm(self.dtype, name="attn_norm")(x)
    y, kv = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.scheme,
                      self.dtype, self.attention_impl, name="attn")(y, table, mask, cache, slots)
    x = x + y
    y = _rms_norm(self.dtype, name="mlp_norm")(x)
    dense = functools.partial(_dense, use_bias=False, dtype=self.dtype)
    y = (nn.silu(dense(self.mlp_dim, ("embed", "mlp"), name="gate")(y))
         * dense(self.mlp_dim, ("embed", "mlp"), name="up")(y))
    return x + dense(x.shape[-1], ("mlp", "embed"), name="down")(y), kv


# ---------------------------------------------------------------------------------------------
# The model.


class VisionLanguageModel(nn.Module):
  """Decoder-only VLM; see the module docstring. Build it with `model_from_config`."""
  vocab_size: int
  width: int
  mlp_dim: int
  scheme: vlm_schemes.Scheme
  rotary: vlm_schemes.RotarySettings
  max_len: int
  image_token_id: int
  vision_patch_size: int
  vision_width: int
  vision_depth: int
  vision_num_heads: int
  vision_mlp_dim: int
  vision_theta: float
  merge: bool = True
  tie_embeddings: bool = False
  dtype: str = "float32"
  attention_impl: str = "xla"

  def setup(self):
    dtype = DTYPES[self.dtype]
    self.embed = nn.Embed(self.vocab_size, self.width,
                          embedding_init=_part(nn.initializers.normal(1.0), ("vocab", "embed")),
                          dtype=dtype)
    self.vision = VisionEncoder(self.vision_patch_size, self.vision_width, self.vision_depth,
                                self.vision_num_heads, self.vision_mlp_dim, self.vision_theta,
                                dtype, self.attention_impl)
    # Projector MLP: merged visual token (4 x vision width) -> hidden -> decoder width.
    self.proj_in = _dense(self.width, ("embed", "mlp"), dtype=dtype)
    self.proj_out = _dense(self.width, ("mlp", "embed"), dtype=dtype)
    r = self.rotary
    self.rotary_tables = RotaryTables(self.scheme, r)
    self.layers = [DecoderLayer(r.num_heads, r.num_kv_heads, r.head_dim, self.mlp_dim,
                                self.scheme, dtype, self.attention_impl)
                   for _ in range(r.num_layers)]
    self.final_norm = _rms_norm(dtype)
    if not self.tie_embeddings:
      self.lm_head = _dense(self.vocab_size, ("embed", "vocab"), use_bias=False, dtype=dtype)

  # -- inputs --------------------------------------------------------------------------------

  def _check_inputs(self, tokens, images, positions, positions_alt, valid) -> None:
    """Static shape checks; they raise while tracing, before anything is compiled."""
    if tokens.ndim != 2:
      raise ValueError(f"`tokens` must be [B, L], got shape {tokens.shape}.")
    b, l = tokens.shape
    if l > self.max_len:
      raise ValueError(f"sequence length {l} (`tokens` shape {tokens.shape}) exceeds the "
                       f"model's `max_len`={self.max_len}.")
    for name, x in (("positions", positions), ("positions_alt", positions_alt)):
      if x.shape != (b, l, 3):
        raise ValueError(f"`{name}` must be [B, L, 3] = {(b, l, 3)}, got {x.shape}.")
    if valid.shape != (b, l):
      raise ValueError(f"`valid` must be [B, L] = {(b, l)}, got {valid.shape}.")
    if images.ndim != 5 or images.shape[0] != b or images.shape[2] != images.shape[3]:
      raise ValueError(f"`images` must be [B, N, S, S, C] with B={b}, got {images.shape}.")
    step = self.vision_patch_size * (2 if self.merge else 1)
    if images.shape[2] % step:
      raise ValueError(
          f"image size {images.shape[2]} must be divisible by `vision.patch_size`="
          f"{self.vision_patch_size}{' x 2 (vision.merge)' if self.merge else ''} = {step}.")

  def encode_images(self, images: jax.Array, image_valid: jax.Array) -> jax.Array:
    """images `[B, N, S, S, C]`, image_valid `[B, N]` -> visual tokens `[B, N, T, width]`.

    T = (S/p)^2, or (S/2p)^2 with the merge; tokens in raster order of the (merged) grid.
    Absent images (image_valid False) give zero tokens.
    """
    b, n, s, _, c = images.shape
    x = self.vision(images.reshape(b * n, s, s, c).astype(DTYPES[self.dtype]))
    if self.merge:
      x = merge_2x2(x)
    x = x.reshape(b, n, -1, x.shape[-1])
    x = self.proj_out(nn.gelu(self.proj_in(x)))
    return x * image_valid[:, :, None, None].astype(x.dtype)

  def embed_inputs(self, tokens: jax.Array, images: jax.Array,
                   image_valid: jax.Array) -> jax.Array:
    """Token embeddings `[B, L, width]` with visual tokens at the IMAGE placeholders.

    The j-th placeholder of a sample (counting from 0) takes visual token j of the sample's
    images flattened in order, so the k-th image fills the k-th run of T placeholders. A
    cumulative-sum index and a gather: static shapes, no Python loop over samples. Valid images
    come first (`data.vlm_pipeline.Collator`); placeholders beyond the T * (number of valid images) visual
    tokens keep their token embedding, exactly as a generated placeholder does when decoding.
    """
    x = self.embed(tokens)
    if images.shape[1] == 0:
      return x
    feats = self.encode_images(images, image_valid)
    b, n, t, w = feats.shape
    feats = feats.reshape(b, n * t, w)
    index = jnp.cumsum(tokens == self.image_token_id, axis=1) - 1
    num_visual = t * jnp.sum(image_valid, axis=1, dtype=jnp.int32)
    is_visual = (tokens == self.image_token_id) & (index < num_visual[:, None])
    gathered = jnp.take_along_axis(feats, jnp.clip(index, 0, n * t - 1)[..., None], axis=1)
    return jnp.where(is_visual[..., None], gathered.astype(x.dtype), x)

  # -- decoder -------------------------------------------------------------------------------

  def _run_layers(self, x, positions, positions_alt, mask, caches=None, slots=None):
    # One table per id set for the whole pass, shared by the layers reading it.
    per_layer = self.rotary_tables(positions, positions_alt)
    new_caches = []
    for i, layer in enumerate(self.layers):
      x, kv = layer(x, per_layer[i], mask, None if caches is None else caches[i], slots)
      new_caches.append(kv)
    x = self.final_norm(x)
    logits = self.embed.attend(x) if self.tie_embeddings else self.lm_head(x)
    return logits.astype(jnp.float32), new_caches

  def __call__(self, tokens, images, image_valid, positions, positions_alt, valid):
    """Logits of the full sequence (training / teacher forcing).

    Args:
      tokens: int32 `[B, L]`, right-padded, IMAGE placeholders where visual tokens go.
      images: float32 `[B, N, S, S, C]`.
      image_valid: bool `[B, N]`.
      positions, positions_alt: float32 `[B, L, 3]` (`data.vlm_pipeline.Collator`).
      valid: bool `[B, L]`, False on padding (padding keys are never attended to). Right
        padding (a sample's tokens first) with attention_impl "cudnn", which reads lengths.

    Returns:
      float32 logits `[B, L, vocab_size]`; position t predicts tokens[:, t+1].
    """
    logits, _ = self._prefix(tokens, images, image_valid, positions, positions_alt, valid)
    return logits

  def _prefix(self, tokens, images, image_valid, positions, positions_alt, valid):
    self._check_inputs(tokens, images, positions, positions_alt, valid)
    x = self.embed_inputs(tokens, images, image_valid)
    l = tokens.shape[1]
    causal = jnp.tril(jnp.ones((l, l), bool))
    valid = valid.astype(bool)
    # Right padding (the Collator's batches): causal + key lengths is the same pattern.
    mask = Mask(causal[None] & valid[:, None, :], is_causal=True,
                kv_lengths=jnp.sum(valid, axis=1, dtype=jnp.int32))
    return self._run_layers(x, positions, positions_alt, mask)

  def prefill(self, tokens, images, image_valid, positions, positions_alt, valid,
              cache_len: int):
    """`__call__` that also returns the KV cache: a list (per layer) of (keys, values)
    `[B, cache_len, Hkv, D]` holding the rotated keys of slots 0..L-1 (zeros after)."""
    logits, kvs = self._prefix(tokens, images, image_valid, positions, positions_alt, valid)
    pad = ((0, 0), (0, cache_len - tokens.shape[1]), (0, 0), (0, 0))
    return logits, [(jnp.pad(k, pad), jnp.pad(v, pad)) for k, v in kvs]

  def decode(self, tokens, positions, positions_alt, slots, caches):
    """One decoding step: token `[B]` at cache slot `slots[b]` with ids `positions [B, 3]`.

    The token attends to cache slots 0..slots[b] (its own included); returns
    `(logits [B, vocab_size], updated caches)`.
    """
    cache_len = caches[0][0].shape[1]
    x = self.embed(tokens[:, None])
    dense = (jnp.arange(cache_len)[None, :] <= slots[:, None])[:, None, :]   # [B, 1, C]
    mask = Mask(dense, kv_lengths=(slots + 1).astype(jnp.int32))
    logits, caches = self._run_layers(x, positions[:, None], positions_alt[:, None], mask,
                                      caches, slots)
    return logits[:, 0], caches


# ---------------------------------------------------------------------------------------------
# Inputs and generation.

_INPUT_KEYS = ("tokens", "images", "image_valid", "positions", "positions_alt")


def model_inputs(batch: Mapping[str, Any]) -> dict:
  """The keyword arguments of `VisionLanguageModel.__call__` from a `data.vlm_pipeline.Collator` batch."""
  out = {k: batch[k] for k in _INPUT_KEYS}
  out["valid"] = batch["valid"] if "valid" in batch else batch["segment_ids"]
  return out


def dummy_inputs(cfg: ml_collections.ConfigDict, image_size: int, batch_size: int = 1,
                 num_images: int = 1, channels: int = 3, length: Optional[int] = None) -> dict:
  """Zero inputs of the right shapes, e.g. for `model.init` (creates every parameter)."""
  length = cfg.max_len if length is None else length
  return {
      "tokens": jnp.zeros((batch_size, length), jnp.int32),
      "images": jnp.zeros((batch_size, num_images, image_size, image_size, channels)),
      "image_valid": jnp.ones((batch_size, num_images), bool),
      "positions": jnp.zeros((batch_size, length, 3)),
      "positions_alt": jnp.zeros((batch_size, length, 3)),
      "valid": jnp.ones((batch_size, length), bool),
  }


def init_params(model: VisionLanguageModel, rng: jax.Array, inputs: Mapping[str, Any],
                boxed: bool = False) -> Any:
  """Fresh parameters of `model` for `inputs` (e.g. `dummy_inputs`).

  boxed=False (default): plain arrays, the tree checkpoints hold. boxed=True: each leaf an
  `nn.Partitioned` with its logical axis names (`nn.get_partition_spec` of the tree gives the
  sharding; `nn.unbox` the plain tree).
  """
  params = model.init({"params": rng}, **inputs)["params"]
  return params if boxed else nn.unbox(params)


def _check_generation(model: VisionLanguageModel, batch: Mapping[str, Any],
                      max_new_tokens: int) -> None:
  """Host-side checks of a generation request (raise before compiling)."""
  _positive("max_new_tokens", max_new_tokens)
  tokens = np.asarray(batch["tokens"])
  prompt_len = np.asarray(batch["prompt_len"])
  if prompt_len.shape != tokens.shape[:1]:
    raise ValueError(f"`prompt_len` must be [B] = {tokens.shape[:1]}, got {prompt_len.shape}.")
  if tokens.shape[1] > model.max_len:
    raise ValueError(f"sequence length {tokens.shape[1]} (`tokens` shape {tokens.shape}) "
                     f"exceeds the model's `max_len`={model.max_len}.")
  if (prompt_len < 1).any() or (prompt_len > tokens.shape[1]).any():
    raise ValueError(f"`prompt_len` must be in [1, {tokens.shape[1]}], got {prompt_len}.")
  longest = int(prompt_len.max()) + max_new_tokens
  if longest > model.max_len:
    raise ValueError(
        f"prompt_len {int(prompt_len.max())} + max_new_tokens {max_new_tokens} = {longest} "
        f"exceeds the model's `max_len`={model.max_len}.")
  for key in ("next_position", "next_position_alt"):
    if np.shape(batch[key]) != tokens.shape[:1]:
      raise ValueError(f"`{key}` must be [B] = {tokens.shape[:1]}, got {np.shape(batch[key])}.")


def generate(model: VisionLanguageModel, params: Any, batch: Mapping[str, Any],
             max_new_tokens: int) -> Tuple[jax.Array, jax.Array]:
  """Greedy decoding with a KV cache.

  The prompt of sample b is tokens[b, :prompt_len[b]] (anything after it is ignored). The
  prompt is run once (prefill); generated token k of sample b then goes to cache slot
  prompt_len[b] + k with the ids of the scheme's decoding rule (`Scheme.next_positions`:
  next_position[b] + k on all three axes, next_position_alt[b] + k for the layers that read
  positions_alt) -- the ids a full-sequence forward gives text following the prompt.

  Args:
    model: from `model_from_config`.
    params: the "params" collection.
    batch: a `data.vlm_pipeline.Collator` batch (tokens, images, image_valid, positions, positions_alt,
      valid, prompt_len, next_position, next_position_alt).
    max_new_tokens: tokens to generate (prompt_len + max_new_tokens <= max_len).

  Returns:
    `(tokens int32 [B, max_new_tokens], logits float32 [B, max_new_tokens, V])`, logits[:, k]
    being the distribution token k was chosen from.
  """
  _check_generation(model, batch, max_new_tokens)
  return greedy_decode(model, params, model_inputs(batch), jnp.asarray(batch["prompt_len"]),
                       jnp.asarray(batch["next_position"]),
                       jnp.asarray(batch["next_position_alt"]), max_new_tokens=max_new_tokens)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens"))
def greedy_decode(model: VisionLanguageModel, params: Any, inputs: Mapping[str, jax.Array],
                  prompt_len: jax.Array, next_position: jax.Array,
                  next_position_alt: jax.Array, *,
                  max_new_tokens: int) -> Tuple[jax.Array, jax.Array]:
  """The traceable core of `generate` (usable inside a jitted eval step).

  Args:
    model, params: as for `generate`.
    inputs: `model_inputs(batch)`.
    prompt_len: int `[B]`; rows with 0 (batch padding) are decoded as if 1 (garbage, no NaN).
    next_position, next_position_alt: float `[B]`.
    max_new_tokens: static.

  Returns:
    as `generate`. Unlike `generate` nothing is checked: the caller guarantees
    prompt_len + max_new_tokens <= model.max_len (slots past the cache are dropped).
  """
  variables = {"params": params}
  prompt_len = jnp.maximum(prompt_len.astype(jnp.int32), 1)
  logits, caches = model.apply(variables, **inputs, cache_len=model.max_len,
                               method=VisionLanguageModel.prefill)
  first = jnp.take_along_axis(logits, (prompt_len - 1)[:, None, None], axis=1)[:, 0]

  def step(carry, k):
    caches, prev_logits = carry
    token = jnp.argmax(prev_logits, axis=-1).astype(jnp.int32)
    pos = model.scheme.next_positions(next_position, k)
    pos_alt = model.scheme.next_positions(next_position_alt, k)
    new_logits, caches = model.apply(variables, token, pos, pos_alt, prompt_len + k, caches,
                                     method=VisionLanguageModel.decode)
    return (caches, new_logits), (token, prev_logits)

  (_, last), (tokens, logits) = jax.lax.scan(step, (caches, first),
                                              jnp.arange(max_new_tokens - 1))
  tokens = jnp.concatenate([tokens.T, jnp.argmax(last, -1).astype(jnp.int32)[:, None]], 1)
  logits = jnp.concatenate([logits.transpose(1, 0, 2), last[:, None]], 1)
  return tokens, logits


_generate = greedy_decode  # the name tasks/vlm.py used first; prefer greedy_decode
