"""Vision Transformer (Flax linen) with a registered position encoding.

Pre-norm ViT as in timm / DeiT-III (qkv bias, exact GELU, LayerNorm eps 1e-6, optional
LayerScale and stochastic depth), sizes Ti / S / B by a variant string such as "S/16", class
token or global average pooling. The position encoding is one registry name
(`model.encoding`, models/vit_encodings.py): `model_from_config` looks it up once and hands the
entry to the model, which asks the entry for everything (parameters, tables, rotation, logit
bias, absolute embedding) and never branches on the name.

Released checkpoints (rope-vit, DINOv3, EVA-02; porting/, README "Porting checkpoints") need
options that default to the model above: explicit sizes (`num_heads`, `mlp_dim`), register
tokens, a k-less qkv bias, SwiGLU and sub-LN MLPs, class-token-kept mean pooling and a norm
after pooling, torch's bicubic APE resampling, a RoPE reference grid and DINOv3's bf16 periods
(`PORTING_DEFAULTS`).

Any image size divisible by the patch size is accepted: rotary positions follow the reference
convention of the encoding, absolute embeddings are bicubically resized from the training grid.

Attention is `jax.nn.dot_product_attention` (`model.attention_impl`), tokens before heads
(`[B, L, H, D]`), so TPU / GPU reach their fused kernels; an encoding's logit bias is its
`bias` argument.

Every parameter carries logical axis names (`LOGICAL_AXES`): `model.init` returns them boxed
(`nn.Partitioned`), `nn.get_partition_spec` gives their specs, and `nn.unbox` the plain arrays
the training loop keeps (tasks/classification.py).

Usage:
  config = default_config(); config.encoding = "mixed"
  model = model_from_config(config, num_classes=1000)
  params = nn.unbox(model.init(jax.random.PRNGKey(0), images, train=False)["params"])
  logits = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
"""
import functools
import re
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from ml_collections import config_dict
import numpy as np

from models import activations
from models import matmul
from models import vit_encodings
from models.vit_encodings import ENCODINGS

# width, depth, heads, mlp_dim (timm / DeiT).
VARIANTS = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
}
POOLS = ("cls", "gap", "gap_cls")
QKV_BIASES = ("qkv", "qv", "none")
MLPS = ("gelu", "swiglu")
FINAL_NORMS = ("tokens", "pooled")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ATTENTION_IMPLS = ("xla", "cudnn")   # jax.nn.dot_product_attention(implementation=...)

# The logical axis names of every parameter (one vocabulary for the models; a mesh maps them
# to mesh axes with `nn.logical_to_mesh_axes` / `flax.linen.logical_axis_rules`).
LOGICAL_AXES = {
    "embed": "token width (the residual stream)",
    "mlp": "MLP hidden units",
    "heads": "attention heads",
    "kv": "channels of one head (head_dim)",
    "qkv": "the query / key / value stack of the fused projection (3)",
    "classes": "classifier outputs",
    "patch_rows": "pixel rows of a patch (embedding kernel)",
    "patch_cols": "pixel columns of a patch (embedding kernel)",
    "channels": "image channels",
    "grid_rows": "patch-grid rows of an absolute embedding table",
    "grid_cols": "patch-grid columns of an absolute embedding table",
    "rotary": "rotation groups of one head (channel pairs, triplets or blocks)",
    "position": "position coordinates (row, col)",
}
_TRUNC_NORMAL = nn.initializers.truncated_normal(stddev=0.02)  # timm / DeiT Linear init.


def default_config() -> ml_collections.ConfigDict:
  """Every model option with its default (the model part of a training config)."""
  c = ml_collections.ConfigDict()
  c.name = "vit"                # model family (the task picks models.<name>).
  c.variant = "S/16"            # size Ti | S | B, "/", patch size in pixels.
  c.depth = None                # None: the variant's depth (12); an int overrides it.
  c.head_dim = None             # None: width / heads of the variant; an int sets width =
  #                               heads * head_dim and mlp_dim = 4 * width (e.g. 60 or 63).
  c.pool = "cls"                # "cls" (class token) | "gap" (mean of patch tokens, no cls) |
  #                               "gap_cls" (a class token that attends but is not read: mean
  #                               of the patch tokens; timm global_pool="avg", EVA-02).
  c.prune_last_block = True     # with pool "cls": the last block computes the class token's
  #                               output only (k, v still see every token). The patch tokens'
  #                               last outputs feed nothing, so logits and gradients are the
  #                               same, for fewer FLOPs. False keeps them (e.g. to read final
  #                               patch features with capture_intermediates).
  c.encoding = "mixed"          # a name of models.vit_encodings.ENCODINGS (none, ape, sincos,
  #                               axial, mixed, liere, spherical, spherical_learned, axial_pi,
  #                               axial_learned, mixed_pi, uniform, comrope_ap, comrope_ld,
  #                               string_cayley, string_circulant, dinov3, eva02, prope,
  #                               lookhere, fire); old names (rope_mixed, ...)
  #                               and the old key `posenc` are accepted (upgrade_config).
  c.theta = None                # frequency base; None: the entry's default (axial 100, mixed
  #                               10 (init), spherical 100, axial_pi 10). Refused by entries
  #                               without one.
  c.position_scale = None       # None: the entry's ("index" rope-vit, "unit" LieRE, "pi"
  #                               Spherical-paper variants, ...); or a scale of
  #                               vit_encodings.POSITION_SCALES. "index_interp" (EVA-02's
  #                               interpolation onto the training grid's range; eval.py
  #                               --positions) only for entries with integer positions.
  c.rope_scaling = "none"       # test-time frequency scaling beyond the training grid (FiT;
  #                               eval.py --rope_scaling): "none" | "linear" | "ntk" |
  #                               "ntk_by_parts" | "yarn", per axis s = max(n / n_train, 1),
  #                               YaRN with its attention amplitude. Only entries with a fixed
  #                               ladder over integer positions (axial, prope, string_cayley,
  #                               eva02 with position_scale "index"). Adds no parameter.
  c.block_size = None           # LieRE / ComRoPE block size g; None: the entry's default
  #                               (LieRE 8, ComRoPE 2, the reference config's).
  c.omega = None                # Uniform RoPE frequency; None: 1/pi (authors' code). uniform only.
  c.position_augment = ml_collections.ConfigDict(dict(
      # Training-time position augmentation, honoured by every rotary encoding, drawn from
      # the step key, never at evaluation. A strength of None turns its part off (all None:
      # off). DINOv3: shift U(-s, s) and jitter exp U(-ln J, ln J) per axis, rescale
      # exp U(-ln R, ln R) shared (DINOv3's released setting: rescale 2). ComRoPE: per-patch
      # perturbation clip(0.5 * sigma * N(0, 1), -0.5, 0.5) patches, global offset
      # sigma_off * N(0, 1) (position units). models/vit_encodings.py token_positions.
      shift=config_dict.placeholder(float), jitter=config_dict.placeholder(float),
      rescale=config_dict.placeholder(float), perturbation=config_dict.placeholder(float),
      offset=config_dict.placeholder(float)))
  c.ape = False                 # also add a learned APE to the patch tokens (rope-vit
  #                               "RoPE + APE"); only with a rotary (or bias) encoding.
  c.attention_impl = "xla"      # jax.nn.dot_product_attention implementation: "xla" (every
  #                               platform) | "cudnn" (GPU, bfloat16 only).
  c.train_image_size = 224      # training resolution: "unit"/"pi" positions are normalised to
  #                               its grid and the APE is stored for it.
  c.dropout = 0.0               # dropout after the embedding, in the MLP, after attention/MLP.
  c.drop_path = 0.0             # stochastic depth, linearly increasing to this at the last layer.
  c.layerscale_init = None      # None: no LayerScale; a float: its initial value (DeiT-III 1e-4).
  c.dtype = "float32"           # compute dtype "float32" | "bfloat16" (params stay float32).
  # Options for released checkpoints (scripts/port_checkpoint.py, README "Porting
  # checkpoints"); each default is the model above.
  c.num_heads = None            # None: the variant's heads; an int overrides them (width =
  #                               num_heads * head_dim).
  c.mlp_dim = None              # None: 4 * width; an int: the MLP's hidden width (SwiGLU's
  #                               hidden width: EVA-02 int(8 D / 3), DINOv3 aligned to 64).
  c.norm_eps = 1e-6             # LayerNorm epsilon (DINOv3: 1e-5).
  c.num_registers = 0           # register tokens after the class token (DINOv3: 4), never
  #                               rotated, never pooled.
  c.qkv_bias = "qkv"            # "qkv" | "qv" (no k bias: DINOv3 bias_mask, EVA-02) | "none".
  c.mlp = "gelu"                # "gelu" (fc2(GELU(fc1 x))) | "swiglu" (fc2(SiLU(gate x) * fc1 x)).
  c.mlp_norm = False            # a LayerNorm over the MLP's hidden units before fc2 (EVA-02
  #                               sub-LN).
  c.final_norm = "tokens"       # "tokens": the final LayerNorm on every token, then pool;
  #                               "pooled": pool, then the LayerNorm (timm fc_norm, EVA-02).
  c.ape_resize = "bicubic"      # APE resampling to other grids: "bicubic" (jax.image.resize) |
  #                               "torch_bicubic" (F.interpolate, rope-vit / DeiT) |
  #                               "torch_bicubic_antialias" (timm resample_abs_pos_embed, EVA-02).
  c.rope_grid = None            # None: positions normalised to the training grid; [h, w]: to
  #                               this grid instead (EVA-02 ref_feat_shape, (16, 16)).
  c.periods_dtype = "float32"   # encoding dinov3: "float32" | "bfloat16" (the released
  #                               checkpoints' bf16-rounded rope_embed.periods).
  return c


# Options added for ported checkpoints, with the defaults that reproduce the model before them.
PORTING_DEFAULTS = dict(num_heads=None, mlp_dim=None, norm_eps=1e-6, num_registers=0,
                        qkv_bias="qkv", mlp="gelu", mlp_norm=False, final_norm="tokens",
                        ape_resize="bicubic", rope_grid=None, periods_dtype="float32")


def upgrade_config(config) -> ml_collections.ConfigDict:
  """A model config written by any earlier version, in today's keys and names.

  Configs (config.json of old workdirs, old config files) from before the registry name the
  encoding `posenc` with the old values (`rope_mixed`, `ape_learned`, ...): the key becomes
  `encoding` and the value its registry name (`ENCODINGS.canonical`); options added since
  (`prune_last_block`, `attention_impl`, `position_augment`, `rope_scaling`,
  `PORTING_DEFAULTS`) get their
  defaults, which
  reproduce the old model, and the old default `block_size` 8 becomes None (the entry's). The
  parameters are unchanged, so old checkpoints restore into the upgraded model. An unknown
  name is left for `validate_config` to refuse (listing the allowed ones). Returns a new,
  unlocked ConfigDict (or `config` itself if nothing changes).
  """
  d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  changed = False
  if "posenc" in d:
    if "encoding" in d:
      raise ValueError(f"model.posenc={d['posenc']!r} (the old name of model.encoding) and "
                       f"model.encoding={d['encoding']!r} are both set; keep model.encoding.")
    d["encoding"] = d.pop("posenc")
    changed = True
  if d.get("encoding") in ENCODINGS and ENCODINGS.canonical(d["encoding"]) != d["encoding"]:
    d["encoding"] = ENCODINGS.canonical(d["encoding"])
    changed = True
  if "position_augment" not in d and d.get("block_size") == 8:
    # Written before position_augment came in, with it model.block_size None (= the entry's
    # default): block_size was 8, LieRE's default, stored for every encoding. None gives the
    # same model (LieRE's default is still 8; no other entry then read it), so resuming such a
    # run is not a config change.
    d["block_size"] = None
    changed = True
  for key, default in (("prune_last_block", True), ("attention_impl", "xla"),
                       ("rope_scaling", "none"),
                       ("position_augment", {k: None for k in vit_encodings.AUGMENT_KEYS}),
                       *PORTING_DEFAULTS.items()):
    if key not in d:
      d[key] = default
      changed = True
  if not changed and isinstance(config, ml_collections.ConfigDict):
    return config
  return ml_collections.ConfigDict(d)


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
  head_dim = width // heads
  if config.get("num_heads") is not None:
    heads = int(config.num_heads)
  if config.head_dim is not None:
    head_dim = int(config.head_dim)
  if heads * head_dim != width:
    width = heads * head_dim
    mlp_dim = 4 * width
  if config.get("mlp_dim") is not None:
    mlp_dim = int(config.mlp_dim)
  if config.depth is not None:
    depth = int(config.depth)
  return dict(width=width, depth=depth, num_heads=heads, head_dim=head_dim,
              mlp_dim=mlp_dim, patch_size=patch)


def _positive_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def _number(value: Any) -> bool:
  return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def encoding_options(config, entry: vit_encodings.Encoding) -> vit_encodings.Options:
  """The entry's resolved options: config values, else the entry's defaults."""
  dims = model_dims(config)
  train_grid = int(config.train_image_size) // dims["patch_size"]
  pick = lambda value, default: default if value is None or default is None else float(value)
  return vit_encodings.Options(
      num_heads=dims["num_heads"], head_dim=dims["head_dim"], width=dims["width"],
      train_grid=(train_grid, train_grid),
      scale=(config.position_scale or entry.scale) if entry.scale else None,
      theta=pick(config.theta, entry.theta), omega=pick(config.omega, entry.omega),
      block_size=(entry.block_size if config.block_size is None else int(config.block_size)),
      depth=dims["depth"],
      augment=position_augment(config),
      rope_grid=(None if config.get("rope_grid") is None
                 else tuple(int(n) for n in config.rope_grid)),
      periods_dtype=config.get("periods_dtype", "float32"),
      ape_resize=config.get("ape_resize", "bicubic"),
      rope_scaling=config.get("rope_scaling") or "none")


def position_augment(config) -> Optional[tuple]:
  """`model.position_augment` as `Options.augment`: None if every strength is None."""
  aug = config.get("position_augment") or {}
  values = tuple(aug.get(k) for k in vit_encodings.AUGMENT_KEYS)
  if all(v is None for v in values):
    return None
  return tuple(None if v is None else float(v) for v in values)


def validate_config(config, image_size: int) -> None:
  """Checks a model config for images of `image_size` pixels; ValueError naming the option."""
  config = upgrade_config(config)
  if config.name != "vit":
    raise ValueError(f"model.name={config.name!r}; models.vit builds only 'vit'.")
  _, patch = parse_variant(config.variant)
  for key in ("depth", "head_dim", "num_heads", "mlp_dim"):
    value = config[key]
    if value is not None and not _positive_int(value):
      raise ValueError(f"model.{key}={value!r} must be None or a positive integer.")
  for key, allowed in (("pool", POOLS), ("qkv_bias", QKV_BIASES), ("mlp", MLPS),
                       ("final_norm", FINAL_NORMS), ("ape_resize", vit_encodings.APE_RESIZES),
                       ("periods_dtype", vit_encodings.PERIODS_DTYPES)):
    if config[key] not in allowed:
      raise ValueError(f"model.{key}={config[key]!r} is not supported; allowed: {allowed}.")
  if not isinstance(config.mlp_norm, bool):
    raise ValueError(f"model.mlp_norm={config.mlp_norm!r} must be True or False.")
  if not isinstance(config.num_registers, (int, np.integer)) or isinstance(
      config.num_registers, bool) or config.num_registers < 0:
    raise ValueError(f"model.num_registers={config.num_registers!r} must be an integer >= 0.")
  if not _number(config.norm_eps) or not config.norm_eps > 0:
    raise ValueError(f"model.norm_eps={config.norm_eps!r} must be a number > 0.")
  grid = config.rope_grid
  if grid is not None and (not isinstance(grid, (list, tuple)) or len(grid) != 2
                           or not all(_positive_int(n) for n in grid)):
    raise ValueError(f"model.rope_grid={grid!r} must be None or [rows, cols] (positive "
                     f"integers).")
  if not isinstance(config.prune_last_block, bool):
    raise ValueError(f"model.prune_last_block={config.prune_last_block!r} must be True or "
                     f"False.")
  if config.dtype not in DTYPES:
    raise ValueError(f"model.dtype={config.dtype!r} is not supported; allowed: {tuple(DTYPES)}.")
  if config.attention_impl not in ATTENTION_IMPLS:
    raise ValueError(f"model.attention_impl={config.attention_impl!r} is not supported; "
                     f"allowed: {ATTENTION_IMPLS}.")
  if config.attention_impl == "cudnn" and config.dtype != "bfloat16":
    raise ValueError("model.attention_impl='cudnn' needs model.dtype='bfloat16' (cuDNN's "
                     "fused attention has no float32 kernel).")
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
  _validate_encoding(config)


def _validate_encoding(config) -> None:
  """The encoding's options, asked of its registry entry."""
  name = config.encoding
  entry = ENCODINGS.get(name)           # ValueError naming model.encoding and the names
  users = lambda field: [n for n, e in ENCODINGS.items() if getattr(e, field) is not None]
  for key, field in (("theta", "theta"), ("omega", "omega"), ("position_scale", "scale")):
    value = config[key]
    if value is None:
      continue
    if getattr(entry, field) is None:
      raise ValueError(f"model.{key}={value!r} is not used by encoding={name!r}; only by "
                       f"{users(field)}. Leave it None.")
    if key == "position_scale":
      if value not in vit_encodings.POSITION_SCALES:
        raise ValueError(f"model.position_scale={value!r}; allowed: None or "
                         f"{vit_encodings.POSITION_SCALES}.")
    elif not _number(value) or (key == "theta" and value <= 0):
      raise ValueError(f"model.{key}={value!r} must be a "
                       f"{'positive ' if key == 'theta' else ''}number.")
  if not isinstance(config.ape, bool):
    raise ValueError(f"model.ape={config.ape!r} must be True or False.")
  if config.periods_dtype != "float32" and not entry.uses_periods_dtype:
    raise ValueError(f"model.periods_dtype={config.periods_dtype!r} is read by the dinov3 "
                     f"encoding only; encoding={name!r} needs the default 'float32'.")
  if config.rope_grid is not None and entry.scale is None:
    raise ValueError(f"model.rope_grid={config.rope_grid!r} sets where positions are "
                     f"normalised; encoding={name!r} has no 2-D positions (leave it None).")
  if config.ape and not entry.uses_positions:
    raise ValueError(f"model.ape=True adds a learned APE to a rotary encoding; encoding="
                     f"{name!r} is {entry.kind} (use encoding='ape' for APE alone).")
  aug = config.get("position_augment") or {}
  unknown = sorted(set(aug) - set(vit_encodings.AUGMENT_KEYS))
  if unknown:
    raise ValueError(f"model.position_augment: unknown keys {unknown}; allowed: "
                     f"{vit_encodings.AUGMENT_KEYS}.")
  for key, minimum in zip(vit_encodings.AUGMENT_KEYS, (0.0, 1.0, 1.0, 0.0, 0.0)):
    value = aug.get(key)
    if value is not None and (not _number(value) or not np.isfinite(value) or value < minimum):
      raise ValueError(f"model.position_augment.{key}={value!r} must be None or a number "
                       f">= {minimum}.")
  if position_augment(config) is not None and entry.kind != "rotary":
    raise ValueError(f"model.position_augment is set but encoding={name!r} is {entry.kind}; "
                     f"the position augmentation needs a rotary encoding (leave it all None).")
  _validate_test_time(config, name, entry)
  if entry.uses_block_size and config.block_size is not None and (
      not _positive_int(config.block_size) or config.block_size < 2):
    raise ValueError(f"model.block_size={config.block_size!r} must be an integer >= 2.")
  error = entry.error(encoding_options(config, entry))
  if error:
    raise ValueError(f"model.head_dim / model.variant: encoding={name!r}: {error}.")


def _validate_test_time(config, name: str, entry: vit_encodings.Encoding) -> None:
  """model.rope_scaling and position_scale 'index_interp': only where they are defined
  (models/vit_encodings.py explains which entries and why)."""
  names = lambda ok: [n for n, e in ENCODINGS.items() if ok(e)]
  method = config.get("rope_scaling", "none")
  if method not in vit_encodings.ROPE_SCALINGS:
    raise ValueError(f"model.rope_scaling={method!r}; allowed: {vit_encodings.ROPE_SCALINGS}.")
  scale = config.position_scale or entry.scale
  if method != "none":
    if not entry.scalable:
      raise ValueError(
          f"model.rope_scaling={method!r} re-spaces a fixed frequency ladder over integer "
          f"positions; encoding={name!r} has none. Encodings that accept it: "
          f"{names(lambda e: e.scalable)}.")
    if scale != "index":
      raise ValueError(
          f"model.rope_scaling={method!r} needs integer positions, model.position_scale="
          f"'index'; encoding={name!r} uses {scale!r} (for eva02 set position_scale 'index': "
          f"FiT's setting; eval.py --positions=index).")
  if config.position_scale == "index_interp" and entry.scale not in vit_encodings.INTEGER_SCALES:
    raise ValueError(
        f"model.position_scale='index_interp' interpolates integer positions onto the "
        f"training grid; encoding={name!r} uses {entry.scale!r} positions. Encodings that "
        f"accept it: {names(lambda e: e.scale in vit_encodings.INTEGER_SCALES)}.")


def _logical(init, *axes):
  return nn.with_logical_partitioning(init, axes)


class MlpBlock(nn.Module):
  """Transformer MLP with dropout: `fc2(GELU(fc1 x))` (kind "gelu") or SwiGLU
  `fc2(SiLU(gate x) * fc1 x)` (kind "swiglu"); `norm`: a LayerNorm over the hidden units
  before fc2 (EVA-02's sub-LN, parameter "norm")."""
  mlp_dim: int
  dropout: float = 0.0
  kind: str = "gelu"
  norm: bool = False
  norm_eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    dense = lambda n, axes, name: matmul.Dense(n, kernel_init=_TRUNC_NORMAL, axes=axes,
                                               dtype=self.dtype, name=name)
    width = x.shape[-1]
    if self.kind == "swiglu":
      gate = dense(self.mlp_dim, ("embed", "mlp"), "gate")(x)
      x = nn.silu(gate) * dense(self.mlp_dim, ("embed", "mlp"), "fc1")(x)
    else:
      x = dense(self.mlp_dim, ("embed", "mlp"), "fc1")(x)
      x = activations.gelu(x)  # timm / torch GELU is the exact (erf) one.
    if self.norm:
      x = _layer_norm(self.dtype, "norm", self.norm_eps, axis_name="mlp")(x)
    x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
    x = dense(width, ("mlp", "embed"), "fc2")(x)
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
  """Multi-head self-attention; the encoding entry rotates q and k and / or biases the logits.

  Attributes:
    num_heads: H.
    head_dim: D.
    encoding: the registry entry (models/vit_encodings.py).
    options: its resolved options.
    attention_impl: `jax.nn.dot_product_attention` implementation ("xla" | "cudnn").
    dropout: output dropout.
    queries: None, or attend from the first `queries` tokens only.
    layer: this layer's index (for an entry's per-layer bias, `Encoding.bias_per_layer`).
    qkv_bias: "qkv" | "qv" (the k bias masked to zero) | "none" (`QKV_BIASES`).
    dtype: compute dtype.
  """
  num_heads: int
  head_dim: int
  encoding: vit_encodings.Encoding
  options: vit_encodings.Options
  attention_impl: str = "xla"
  dropout: float = 0.0
  queries: Optional[int] = None
  layer: int = 0
  qkv_bias: str = "qkv"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, tokens: Optional[dict], shared: Optional[dict], *,
               deterministic: bool) -> jax.Array:
    """Args: x `[B, L, width]`; tokens: the entry's positions (or None); shared: the tables
    built once per forward pass (entries without parameters), or None. Returns `[B, Q, width]`:
    Q = L, or the first `queries` tokens only (keys and values are still every token)."""
    h, d = self.num_heads, self.head_dim
    width = x.shape[-1]
    enc = self.encoding
    rotary = enc.kind == "rotary"
    # An entry with `group` rotates groups of adjacent channels (the reference layout); the
    # projection emits q and k with those groups strided (models/vit_encodings.py explains
    # why), by re-indexing the stored kernel: the parameters keep the reference layout.
    group = enc.group if rotary else None
    reorder = functools.partial(to_strided, group=group) if group else None
    qkv = matmul.Einsum((width, 3, h, d), "bld,dkhe->kblhe", kernel_init=_TRUNC_NORMAL,
                        reorder=reorder, axes=("embed", "qkv", "heads", "kv"),
                        use_bias=self.qkv_bias != "none",
                        bias_mask=(1.0, 0.0, 1.0) if self.qkv_bias == "qv" else None,
                        dtype=self.dtype, name="qkv")(x)                # [3, B, L, H, D]
    q, k, v = matmul.unstack(qkv)
    params = (vit_encodings.Posenc(enc, self.options, name="posenc")()
              if enc.uses_positions and enc.params else {})
    if rotary:
      # Named scopes only label the HLO (profiles, benchmarks/op_breakdown.py): no numerics.
      with jax.named_scope("rope"):
        tables = shared if enc.shared else enc.tables(params, tokens, self.options)
        q, k = enc.rotate(q, tables), enc.rotate(k, tables)
    bias = None
    if enc.bias is not None:
      layer = (self.layer,) if enc.bias_per_layer else ()
      bias = enc.bias(params, tokens, self.options, *layer)
    if self.is_mutable_collection("intermediates"):
      # For analysis and tests: rotated q, k as [B, L, H, D] in the reference channel order
      # (logits = q . k / sqrt(D) + bias).
      restore = functools.partial(from_strided, group=group) if group else (lambda a: a)
      if rotary and enc.to_reference is not None:
        restore = lambda a, r=restore: r(enc.to_reference(a, tables))
      self.sow("intermediates", "q", restore(q))
      self.sow("intermediates", "k", restore(k))
    if self.queries is not None:
      q = q[:, :self.queries]
      if bias is not None:
        bias = bias[..., :self.queries, :]
    with jax.named_scope("sdpa"):
      out = matmul.dot_product_attention(q, k, v, bias, scale=d ** -0.5,
                                         implementation=self.attention_impl)   # [B, Q, H, D]
    out = matmul.Einsum((h, d, width), "blhd,hde->ble", kernel_init=_TRUNC_NORMAL,
                        axes=("heads", "kv", "embed"), dtype=self.dtype, name="out")(out)
    return nn.Dropout(self.dropout)(out, deterministic=deterministic)


class LayerScale(nn.Module):
  """Per-channel scale of a residual branch (CaiT / DeiT-III); parameter `ls`."""
  init_value: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ls = self.param("ls", _logical(nn.initializers.constant(self.init_value), "embed"),
                    (x.shape[-1],))
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


def _layer_norm(dtype, name: str, eps: float = 1e-6, axis_name: str = "embed") -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name,
                      scale_init=_logical(nn.initializers.ones, axis_name),
                      bias_init=_logical(nn.initializers.zeros, axis_name))


class EncoderBlock(nn.Module):
  """Pre-norm transformer block: x + DP(LS(attn(LN x))), then x + DP(LS(mlp(LN x))).

  `outputs`: None, or compute the block's output for the first `outputs` tokens only
  (`[B, L, width]` -> `[B, outputs, width]`; they still attend to every token)."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  encoding: vit_encodings.Encoding
  options: vit_encodings.Options
  attention_impl: str = "xla"
  dropout: float = 0.0
  drop_path: float = 0.0
  layerscale_init: Optional[float] = None
  outputs: Optional[int] = None
  layer: int = 0
  norm_eps: float = 1e-6
  qkv_bias: str = "qkv"
  mlp: str = "gelu"
  mlp_norm: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, tokens, shared, *, deterministic: bool):
    def branch(y, name):
      if self.layerscale_init is not None:
        y = LayerScale(self.layerscale_init, name=f"layerscale_{name}")(y)
      return DropPath(self.drop_path)(y, deterministic=deterministic)

    y = _layer_norm(self.dtype, "norm_attn", self.norm_eps)(x)
    y = Attention(self.num_heads, self.head_dim, self.encoding, self.options,
                  attention_impl=self.attention_impl, dropout=self.dropout,
                  queries=self.outputs, layer=self.layer, qkv_bias=self.qkv_bias,
                  dtype=self.dtype, name="attention")(
                      y, tokens, shared, deterministic=deterministic)
    if self.outputs is not None:
      x = x[:, :self.outputs]
    x = x + branch(y, "attn")
    y = _layer_norm(self.dtype, "norm_mlp", self.norm_eps)(x)
    y = MlpBlock(self.mlp_dim, dropout=self.dropout, kind=self.mlp, norm=self.mlp_norm,
                 norm_eps=self.norm_eps, dtype=self.dtype, name="mlp")(
                     y, deterministic=deterministic)
    return x + branch(y, "mlp")


class ViT(nn.Module):
  """ViT classifier. Build it with `model_from_config`, which validates and resolves options.

  Attributes mirror the resolved config: sizes, the `encoding` entry and its resolved
  `options` (sizes, `theta`, `omega`, `scale` set to the entry's default if unset, `train_grid`
  = train_image_size // patch_size per axis), and `absolute`: the entry whose embedding is
  added to the patch tokens (the encoding itself if absolute, the `ape` entry with
  `model.ape=True`, else None).

  Token order: [class token (pool "cls" / "gap_cls"), `num_registers` registers, patches
  (row-major)]. With the "features" collection mutable (`mutable=["features"]`), the
  final-normed tokens are sown as "normed" (`[B, L, width]`; under `final_norm="pooled"` the
  pooled, normed vector `[B, width]`), e.g. DINOv3's class / register / patch features
  (prune_last_block=False to keep the patches). A collection of its own, so that
  `capture_intermediates` sees the modules only.
  """
  num_classes: int
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  encoding: vit_encodings.Encoding
  options: vit_encodings.Options
  absolute: Optional[vit_encodings.Encoding] = None
  pool: str = "cls"
  prune_last_block: bool = True
  attention_impl: str = "xla"
  dropout: float = 0.0
  drop_path: float = 0.0
  layerscale_init: Optional[float] = None
  norm_eps: float = 1e-6
  num_registers: int = 0
  qkv_bias: str = "qkv"
  mlp: str = "gelu"
  mlp_norm: bool = False
  final_norm: str = "tokens"
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
    enc, options = self.encoding, self.options

    x = matmul.PatchEmbed(self.width, p, axes=("patch_rows", "patch_cols", "channels", "embed"),
                          dtype=self.dtype, name="embedding")(images)
    x = x.reshape(b, grid[0] * grid[1], self.width)
    if self.absolute is not None:
      params = vit_encodings.Posenc(self.absolute, options, name="posenc")()
      ape = self.absolute.embed(params, grid, options)
      x = x + ape.astype(x.dtype)        # patch tokens only, before the class token (rope-vit)
    prefix = []
    if self.pool in ("cls", "gap_cls"):
      prefix.append(self.param("cls", _logical(nn.initializers.zeros, None, None, "embed"),
                               (1, 1, self.width)))
    if self.num_registers:
      prefix.append(self.param("registers", _logical(nn.initializers.normal(0.02), None, None,
                                                     "embed"),
                               (1, self.num_registers, self.width)))
    num_prefix = sum(t.shape[1] for t in prefix)
    if num_prefix:
      x = jnp.concatenate([jnp.broadcast_to(t.astype(x.dtype), (b,) + t.shape[1:])
                           for t in prefix] + [x], axis=1)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)

    # Positions, and the tables of entries without parameters, depend only on the grid:
    # computed once here (no batch axis) and shared by every layer and example.
    tokens, shared = None, None
    if enc.uses_positions:
      # The step key: for entries that ask for it, and for the position augmentation.
      wants_key = enc.train_key or (options.augment is not None and enc.kind == "rotary")
      key = self.make_rng("dropout") if (train and wants_key) else None
      tokens = enc.positions(grid, options, num_prefix, key)
      if enc.shared and enc.tables is not None:
        with jax.named_scope("rope"):
          shared = enc.tables({}, tokens, options)

    rates = np.linspace(0.0, self.drop_path, self.depth) if self.depth > 1 else [self.drop_path]
    for i in range(self.depth):
      # Under class-token pooling only the class token's last output is read: the last block
      # skips the patch tokens' out-projection, residual and MLP (exact; see prune_last_block).
      outputs = 1 if (i == self.depth - 1 and self.pool == "cls" and
                      self.prune_last_block) else None
      x = EncoderBlock(self.num_heads, head_dim, self.mlp_dim, enc, options,
                       attention_impl=self.attention_impl, dropout=self.dropout,
                       drop_path=float(rates[i]), layerscale_init=self.layerscale_init,
                       outputs=outputs, layer=i, norm_eps=self.norm_eps,
                       qkv_bias=self.qkv_bias, mlp=self.mlp, mlp_norm=self.mlp_norm,
                       dtype=self.dtype, name=f"encoderblock_{i}")(
                           x, tokens, shared, deterministic=not train)
    norm = _layer_norm(self.dtype, "norm_final", self.norm_eps)
    if self.final_norm == "tokens":
      x = norm(x)
      self.sow("features", "normed", x)
    # "gap" has registers only as prefix tokens, "gap_cls" the class token too: both average
    # the patch tokens alone.
    x = x[:, 0] if self.pool == "cls" else x[:, num_prefix:].mean(axis=1)
    if self.final_norm == "pooled":
      x = norm(x)
      self.sow("features", "normed", x)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    logits = matmul.Dense(self.num_classes, kernel_init=_TRUNC_NORMAL, axes=("embed", "classes"),
                          dtype=self.dtype, name="head")(x)
    return logits.astype(jnp.float32)


def model_from_config(model_config, num_classes: int) -> ViT:
  """Validates `model_config` (at its train_image_size; old keys and names are upgraded by
  `upgrade_config`) and builds the ViT with its encoding's registry entry."""
  model_config = upgrade_config(model_config)
  validate_config(model_config, model_config.train_image_size)
  if not _positive_int(num_classes):
    raise ValueError(f"num_classes={num_classes!r} must be a positive integer.")
  dims = model_dims(model_config)
  entry = ENCODINGS.get(model_config.encoding)
  absolute = entry if entry.kind == "absolute" else (
      vit_encodings.APE if model_config.ape else None)
  return ViT(
      num_classes=int(num_classes), patch_size=dims["patch_size"], width=dims["width"],
      depth=dims["depth"], num_heads=dims["num_heads"], mlp_dim=dims["mlp_dim"],
      encoding=entry, options=encoding_options(model_config, entry), absolute=absolute,
      pool=model_config.pool, prune_last_block=model_config.prune_last_block,
      attention_impl=model_config.attention_impl, dropout=float(model_config.dropout),
      drop_path=float(model_config.drop_path),
      layerscale_init=(None if model_config.layerscale_init is None
                       else float(model_config.layerscale_init)),
      norm_eps=float(model_config.norm_eps), num_registers=int(model_config.num_registers),
      qkv_bias=model_config.qkv_bias, mlp=model_config.mlp, mlp_norm=model_config.mlp_norm,
      final_norm=model_config.final_norm,
      dtype=DTYPES[model_config.dtype])
