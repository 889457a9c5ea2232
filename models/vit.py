"""Vision Transformer (Flax linen) with a configurable position encoding.

Pre-norm ViT as in timm / DeiT-III (qkv bias, exact GELU, LayerNorm eps 1e-6, optional
LayerScale and stochastic depth), sizes Ti / S / B by a variant string such as "S/16", class
token or global average pooling. The position encoding is one config string (`posenc`, see
`models.vit_posenc`): absolute embeddings are added to the patch tokens, rotary encodings turn
q and k in every layer (never the class token).

Any image size divisible by the patch size is accepted: rotary positions follow the reference
convention of the encoding, absolute embeddings are bicubically resized from the training grid.

Usage:
  config = default_config(); config.posenc = "rope_mixed"
  model = model_from_config(config, num_classes=1000)
  params = model.init(jax.random.PRNGKey(0), images, train=False)["params"]
  logits = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
"""
import functools
import re
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from models import activations
from models import matmul
from models import vit_posenc

# width, depth, heads, mlp_dim (timm / DeiT).
VARIANTS = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
}
POOLS = ("cls", "gap")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def default_config() -> ml_collections.ConfigDict:
  """Every model option with its default (the model part of a training config)."""
  c = ml_collections.ConfigDict()
  c.name = "vit"                # model family (the task picks models.<name>).
  c.variant = "S/16"            # size Ti | S | B, "/", patch size in pixels.
  c.depth = None                # None: the variant's depth (12); an int overrides it.
  c.head_dim = None             # None: width / heads of the variant; an int sets width =
  #                               heads * head_dim and mlp_dim = 4 * width (e.g. 60 or 63).
  c.pool = "cls"                # "cls" (class token) | "gap" (mean of patch tokens, no cls).
  c.prune_last_block = True     # with pool "cls": the last block computes the class token's
  #                               output only (k, v still see every token). The patch tokens'
  #                               last outputs feed nothing, so logits and gradients are the
  #                               same; ViT-S/16 at 112 px: ~6% fewer FLOPs per step. False keeps
  #                               them (e.g. to read final patch features with
  #                               capture_intermediates).
  c.posenc = "rope_mixed"       # one of models.vit_posenc.POSENCS (none, ape_learned,
  #                               ape_sincos, rope_axial, rope_mixed, liere, spherical,
  #                               spherical_learned, axial_pi, axial_learned, mixed_pi, uniform).
  c.theta = None                # frequency base; None: the reference's (rope_axial 100,
  #                               rope_mixed 10 (init), spherical 100, axial_pi 10). Only
  #                               allowed for those four.
  c.position_scale = None       # None: the reference's ("index" rope-vit, "unit" LieRE, "pi"
  #                               Spherical-paper variants); or "index" | "unit" | "pi".
  c.block_size = 8              # LieRE block size g (must divide head_dim); liere only.
  c.omega = None                # Uniform RoPE frequency; None: 1/pi (authors' code). uniform only.
  c.ape = False                 # also add a learned APE to the patch tokens (rope-vit
  #                               "RoPE + APE"); only with a rotary posenc.
  c.train_image_size = 224      # training resolution: "unit"/"pi" positions are normalised to
  #                               its grid and the APE is stored for it.
  c.dropout = 0.0               # dropout after the embedding, in the MLP, after attention/MLP.
  c.drop_path = 0.0             # stochastic depth, linearly increasing to this at the last layer.
  c.layerscale_init = None      # None: no LayerScale; a float: its initial value (DeiT-III 1e-4).
  c.dtype = "float32"           # compute dtype "float32" | "bfloat16" (params stay float32).
  return c


def parse_variant(variant: str) -> tuple[str, int]:
  """"S/16" -> ("S", 16); ValueError naming `variant` otherwise."""
  m = re.fullmatch(r"(\w+)/(\d+)", str(variant))
  if not m or m.group(1) not in VARIANTS or int(m.group(2)) < 1:
    raise ValueError(f"model.variant={variant!r} is not supported; use <size>/<patch> with size "
                     f"in {sorted(VARIANTS)} and a positive patch size, e.g. 'S/16'.")
  return m.group(1), int(m.group(2))


def model_dims(config) -> dict:
  """Resolved sizes: width, depth, num_heads, head_dim, mlp_dim, patch_size."""
  size, patch = parse_variant(config.variant)
  width, depth, heads, mlp_dim = VARIANTS[size]
  if config.head_dim is not None:
    width = heads * int(config.head_dim)
    mlp_dim = 4 * width
  if config.depth is not None:
    depth = int(config.depth)
  return dict(width=width, depth=depth, num_heads=heads, head_dim=width // heads,
              mlp_dim=mlp_dim, patch_size=patch)


def _positive_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _number(value: Any) -> bool:
  return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _prune_last_block(config) -> Any:
  """`config.prune_last_block`; True for configs written before the option existed."""
  return config.get("prune_last_block", True)


def validate_config(config, image_size: int) -> None:
  """Checks a model config for images of `image_size` pixels; ValueError naming the option."""
  if config.name != "vit":
    raise ValueError(f"model.name={config.name!r}; models.vit builds only 'vit'.")
  _, patch = parse_variant(config.variant)
  for key in ("depth", "head_dim"):
    value = config[key]
    if value is not None and not _positive_int(value):
      raise ValueError(f"model.{key}={value!r} must be None or a positive integer.")
  if config.pool not in POOLS:
    raise ValueError(f"model.pool={config.pool!r} is not supported; allowed: {POOLS}.")
  prune = _prune_last_block(config)
  if not isinstance(prune, bool):
    raise ValueError(f"model.prune_last_block={prune!r} must be True or False.")
  if config.dtype not in DTYPES:
    raise ValueError(f"model.dtype={config.dtype!r} is not supported; allowed: {tuple(DTYPES)}.")
  for key in ("dropout", "drop_path"):
    if not _number(config[key]) or not 0.0 <= config[key] < 1.0:
      raise ValueError(f"model.{key}={config[key]!r} must be a number in [0, 1).")
  if config.layerscale_init is not None and (
      not _number(config.layerscale_init) or config.layerscale_init <= 0):
    raise ValueError(f"model.layerscale_init={config.layerscale_init!r} must be None or > 0.")
  for key, size in (("train_image_size", config.train_image_size), ("image_size", image_size)):
    if not _positive_int(size):
      raise ValueError(f"{key}={size!r} must be a positive integer.")
    if size % patch:
      raise ValueError(f"{key}={size} is not divisible by the patch size {patch} of "
                       f"model.variant={config.variant!r}.")
  _validate_posenc(config, model_dims(config))


def _validate_posenc(config, dims: dict) -> None:
  posenc = config.posenc
  if posenc not in vit_posenc.POSENCS:
    raise ValueError(f"model.posenc={posenc!r} is unknown; allowed: {vit_posenc.POSENCS}.")
  kind = vit_posenc.ROPE_KINDS.get(posenc)
  if config.theta is not None:
    if kind is None or kind.theta is None:
      users = [k for k, v in vit_posenc.ROPE_KINDS.items() if v.theta is not None]
      raise ValueError(f"model.theta={config.theta!r} is not used by posenc={posenc!r}; "
                       f"only by {users}. Leave it None.")
    if not _number(config.theta) or config.theta <= 0:
      raise ValueError(f"model.theta={config.theta!r} must be a positive number.")
  if config.omega is not None:
    if posenc != "uniform":
      raise ValueError(f"model.omega={config.omega!r} is only used by posenc='uniform'.")
    if not _number(config.omega):
      raise ValueError(f"model.omega={config.omega!r} must be a number.")
  if config.position_scale is not None:
    if kind is None:
      raise ValueError(f"model.position_scale={config.position_scale!r} is only used by the "
                       f"rotary encodings {tuple(vit_posenc.ROPE_KINDS)}.")
    if config.position_scale not in vit_posenc.POSITION_SCALES:
      raise ValueError(f"model.position_scale={config.position_scale!r}; allowed: None or "
                       f"{vit_posenc.POSITION_SCALES}.")
  if not isinstance(config.ape, bool):
    raise ValueError(f"model.ape={config.ape!r} must be True or False.")
  if config.ape and kind is None:
    raise ValueError(f"model.ape=True adds a learned APE to a rotary encoding; posenc="
                     f"{posenc!r} is not rotary (use posenc='ape_learned' for APE alone).")
  if posenc == "liere" and (not _positive_int(config.block_size) or config.block_size < 2):
    raise ValueError(f"model.block_size={config.block_size!r} must be an integer >= 2.")
  error = vit_posenc.head_dim_error(posenc, dims["head_dim"], config.block_size)
  if error:
    raise ValueError(f"model.head_dim / model.variant: {error}.")
  if posenc == "ape_sincos" and dims["width"] % 4:
    raise ValueError(f"model.head_dim: posenc='ape_sincos' needs a width divisible by 4, "
                     f"got {dims['width']}.")


_TRUNC_NORMAL = nn.initializers.truncated_normal(stddev=0.02)  # timm / DeiT Linear init.


class MlpBlock(nn.Module):
  """Transformer MLP: Dense -> GELU -> Dense, with dropout."""
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    dense = lambda n, name: matmul.Dense(n, kernel_init=_TRUNC_NORMAL, dtype=self.dtype,
                                         name=name)
    width = x.shape[-1]
    x = dense(self.mlp_dim, "fc1")(x)
    x = activations.gelu(x)  # timm / torch GELU is the exact (erf) one.
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    x = dense(width, "fc2")(x)
    return nn.Dropout(self.dropout)(x, deterministic=deterministic)


def to_strided(a: jax.Array, group: int) -> jax.Array:
  """qkv kernel `[..., 3, H, D]` or bias `[3, H, D]`: q and k channels reordered so that each
  rotation group of `group` adjacent channels (c*group + i, i < group) becomes strided
  (i * D/group + c); v is unchanged. For pairs, (2j, 2j+1) becomes the rotate-half pair (j, j +
  D/2); for Spherical's triplets, (3t, 3t+1, 3t+2) becomes (t, t + D/3, t + 2D/3)."""
  qk, v = a[..., :2, :, :], a[..., 2:, :, :]
  d = qk.shape[-1]
  qk = jnp.swapaxes(qk.reshape(qk.shape[:-1] + (d // group, group)), -1, -2).reshape(qk.shape)
  return jnp.concatenate([qk, v], axis=-3)


def from_strided(x: jax.Array, group: int) -> jax.Array:
  """The inverse channel order of `to_strided` on q or k `[..., D]`."""
  d = x.shape[-1]
  return jnp.swapaxes(x.reshape(x.shape[:-1] + (group, d // group)), -1, -2).reshape(x.shape)


class Attention(nn.Module):
  """Multi-head self-attention with the position rotation applied to q and k.

  Attributes:
    num_heads: H.
    head_dim: D.
    posenc: the config string; rotary ones rotate q and k (see vit_posenc.LayerRotation).
    theta, block_size: options of the per-layer rotary parameters.
    dropout: output dropout.
    queries: None, or attend from the first `queries` tokens only.
    dtype: compute dtype.
  """
  num_heads: int
  head_dim: int
  posenc: str
  theta: Optional[float] = None
  block_size: int = vit_posenc.DEFAULT_BLOCK_SIZE
  dropout: float = 0.0
  queries: Optional[int] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, positions: Optional[dict], fixed: Optional[dict], *,
               deterministic: bool) -> jax.Array:
    """Args: x `[B, L, width]`; positions: `vit_posenc.token_positions(...)` (or None); fixed:
    the shared rotation (or None). Returns `[B, Q, width]`: Q = L, or the first `queries`
    tokens only (keys and values are still every token)."""
    h, d = self.num_heads, self.head_dim
    width = x.shape[-1]
    # Heads before tokens throughout ([B, H, L, D]): the projection writes that layout directly
    # and both attention einsums batch over (B, H) without transposes (measured ~5% faster
    # training steps on CPU than [B, L, H, D] + jax.nn.dot_product_attention).
    # Pair rotations turn adjacent channels (2j, 2j+1), Spherical RoPE triplets (3t, 3t+1,
    # 3t+2): the reference layout. q . k is unchanged when q and k list their channels in the
    # same other order, so the projection emits them strided ((evens, odds); (u's, v's, w's))
    # and the rotation reads contiguous runs of channels (rotate-half is ~2.5x faster on CPU
    # than strided pairs). The parameters stay in the reference layout (checkpoints port
    # unchanged). LieRE's contiguous blocks are left as they are.
    group = (vit_posenc.ROPE_KINDS[self.posenc].group
             if self.posenc in vit_posenc.ROPE_KINDS else None)
    reorder = functools.partial(to_strided, group=group) if group else None
    qkv = matmul.Einsum((width, 3, h, d), "bld,dkhe->kbhle", kernel_init=_TRUNC_NORMAL,
                        reorder=reorder, dtype=self.dtype, name="qkv")(x)      # [3, B, H, L, D]
    q, k, v = matmul.unstack(qkv)
    if self.posenc in vit_posenc.ROPE_KINDS:
      rotation = vit_posenc.LayerRotation(self.posenc, h, d, theta=self.theta,
                                          block_size=self.block_size, name="posenc")(
                                              positions, fixed)
      rotation = vit_posenc.heads_first(rotation, h)             # once for q and k
      q = vit_posenc.rotate(q, rotation, strided=bool(group))
      k = vit_posenc.rotate(k, rotation, strided=bool(group))
    if self.is_mutable_collection("intermediates"):
      # For analysis and tests: rotated q, k as [B, L, H, D] in the reference channel order
      # (logits = q . k / sqrt(D)).
      restore = functools.partial(from_strided, group=group) if group else (lambda a: a)
      self.sow("intermediates", "q", restore(jnp.swapaxes(q, 1, 2)))
      self.sow("intermediates", "k", restore(jnp.swapaxes(k, 1, 2)))
    if self.queries is not None:
      q = q[:, :, :self.queries]
    logits = matmul.einsum("bhqd,bhkd->bhqk", q * jnp.asarray(d ** -0.5, q.dtype), k,
                           self.dtype)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = matmul.einsum("bhqk,bhkd->bhqd", probs, v, self.dtype)
    out = matmul.Einsum((h, d, width), "bhld,hde->ble", kernel_init=_TRUNC_NORMAL,
                        dtype=self.dtype, name="out")(out)   # [B, L, width]
    return nn.Dropout(self.dropout)(out, deterministic=deterministic)


class LayerScale(nn.Module):
  """Per-channel scale of a residual branch (CaiT / DeiT-III); parameter `ls`."""
  init_value: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ls = self.param("ls", nn.initializers.constant(self.init_value), (x.shape[-1],))
    return x * ls.astype(x.dtype)


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per example (rng "dropout")."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class EncoderBlock(nn.Module):
  """Pre-norm transformer block: x + DP(LS(attn(LN x))), then x + DP(LS(mlp(LN x))).

  `outputs`: None, or compute the block's output for the first `outputs` tokens only
  (`[B, L, width]` -> `[B, outputs, width]`; they still attend to every token)."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  posenc: str
  theta: Optional[float] = None
  block_size: int = vit_posenc.DEFAULT_BLOCK_SIZE
  dropout: float = 0.0
  drop_path: float = 0.0
  layerscale_init: Optional[float] = None
  outputs: Optional[int] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, fixed, *, deterministic: bool):
    def branch(y, name):
      if self.layerscale_init is not None:
        y = LayerScale(self.layerscale_init, name=f"layerscale_{name}")(y)
      return DropPath(self.drop_path)(y, deterministic=deterministic)

    norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)
    y = norm("norm_attn")(x)
    y = Attention(self.num_heads, self.head_dim, self.posenc, theta=self.theta,
                  block_size=self.block_size, dropout=self.dropout, queries=self.outputs,
                  dtype=self.dtype, name="attention")(y, positions, fixed,
                                                      deterministic=deterministic)
    if self.outputs is not None:
      x = x[:, :self.outputs]
    x = x + branch(y, "attn")
    y = norm("norm_mlp")(x)
    y = MlpBlock(self.mlp_dim, dropout=self.dropout, dtype=self.dtype, name="mlp")(
        y, deterministic=deterministic)
    return x + branch(y, "mlp")


class ViT(nn.Module):
  """ViT classifier. Build it with `model_from_config`, which validates and resolves options.

  Attributes mirror the resolved config: sizes, `posenc` and its resolved options (`theta`,
  `omega`, `position_scale` already set to the reference default if unset), `train_grid` =
  train_image_size // patch_size per axis.
  """
  num_classes: int
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  pool: str = "cls"
  prune_last_block: bool = True
  posenc: str = "rope_mixed"
  theta: Optional[float] = None
  omega: Optional[float] = None
  position_scale: Optional[str] = None
  block_size: int = vit_posenc.DEFAULT_BLOCK_SIZE
  ape: bool = False
  train_grid: tuple[int, int] = (14, 14)
  dropout: float = 0.0
  drop_path: float = 0.0
  layerscale_init: Optional[float] = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    """images `[B, H, W, C]` (H, W divisible by the patch size) -> logits `[B, num_classes]`."""
    b, height, width, _ = images.shape
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(f"images of {height}x{width} pixels are not divisible by the patch "
                       f"size {p} (model.variant).")
    grid = (height // p, width // p)
    head_dim = self.width // self.num_heads

    x = matmul.PatchEmbed(self.width, p, dtype=self.dtype, name="embedding")(images)
    x = x.reshape(b, grid[0] * grid[1], self.width)
    if self.posenc in vit_posenc.APE_KINDS or self.ape:
      kind = "sincos" if self.posenc == "ape_sincos" else "learned"
      ape = vit_posenc.AbsolutePosenc(kind, self.train_grid, self.width, name="posenc")(grid)
      x = x + ape.astype(x.dtype)        # patch tokens only, before the class token (rope-vit)
    num_prefix = 1 if self.pool == "cls" else 0
    if num_prefix:
      cls = self.param("cls", nn.initializers.zeros, (1, 1, self.width))
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, self.width)), x], axis=1)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)

    # Positions and fixed rotations depend only on the grid: computed once here (no batch axis)
    # and shared by every layer and example.
    positions, fixed = None, None
    if self.posenc in vit_posenc.ROPE_KINDS:
      positions = vit_posenc.token_positions(grid, self.train_grid, self.position_scale,
                                             num_prefix)
      fixed = vit_posenc.fixed_rotation(self.posenc, positions, head_dim, self.theta,
                                        self.omega)

    rates = np.linspace(0.0, self.drop_path, self.depth) if self.depth > 1 else [self.drop_path]
    for i in range(self.depth):
      # Under class-token pooling only the class token's last output is read: the last block
      # skips the patch tokens' out-projection, residual and MLP (exact; see prune_last_block).
      outputs = 1 if (i == self.depth - 1 and self.pool == "cls" and
                      self.prune_last_block) else None
      x = EncoderBlock(self.num_heads, head_dim, self.mlp_dim, self.posenc, theta=self.theta,
                       block_size=self.block_size, dropout=self.dropout,
                       drop_path=float(rates[i]), layerscale_init=self.layerscale_init,
                       outputs=outputs, dtype=self.dtype, name=f"encoderblock_{i}")(
                           x, positions, fixed, deterministic=not train)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm_final")(x)
    x = x[:, 0] if self.pool == "cls" else x.mean(axis=1)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    logits = matmul.Dense(self.num_classes, kernel_init=_TRUNC_NORMAL, dtype=self.dtype,
                          name="head")(x)
    return logits.astype(jnp.float32)


def model_from_config(model_config, num_classes: int) -> ViT:
  """Validates `model_config` (at its train_image_size) and builds the ViT."""
  validate_config(model_config, model_config.train_image_size)
  if not _positive_int(num_classes):
    raise ValueError(f"num_classes={num_classes!r} must be a positive integer.")
  dims = model_dims(model_config)
  kind = vit_posenc.ROPE_KINDS.get(model_config.posenc)
  theta, omega, scale = None, None, None
  if kind is not None:
    theta = model_config.theta if model_config.theta is not None else kind.theta
    scale = model_config.position_scale or kind.scale
    if kind.uses_omega:
      omega = model_config.omega if model_config.omega is not None else vit_posenc.DEFAULT_OMEGA
  train_grid = model_config.train_image_size // dims["patch_size"]
  return ViT(
      num_classes=int(num_classes), patch_size=dims["patch_size"], width=dims["width"],
      depth=dims["depth"], num_heads=dims["num_heads"], mlp_dim=dims["mlp_dim"],
      pool=model_config.pool, prune_last_block=_prune_last_block(model_config),
      posenc=model_config.posenc,
      theta=None if theta is None else float(theta),
      omega=None if omega is None else float(omega), position_scale=scale,
      block_size=int(model_config.block_size), ape=bool(model_config.ape),
      train_grid=(train_grid, train_grid), dropout=float(model_config.dropout),
      drop_path=float(model_config.drop_path),
      layerscale_init=(None if model_config.layerscale_init is None
                       else float(model_config.layerscale_init)),
      dtype=DTYPES[model_config.dtype])
