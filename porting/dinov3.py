"""facebookresearch/dinov3 (dinov3/models/vision_transformer.py) ViT backbones -> our ViT.

Token order [cls, registers (`storage_tokens`), patches row-major] (`model.num_registers`),
pre-norm blocks with LayerScale (`ls1.gamma`, `ls2.gamma`), LayerNorm eps 1e-5, qkv bias
times its `bias_mask` (no k bias: `model.qkv_bias="qv"`; the mask is folded into the stored
bias), MLP `fc2(GELU(fc1 x))` or SwiGLU `w3(SiLU(w1 x) * w2 x)`, final norm on every token;
RoPE rotate-half, row first, centred coordinates per axis (encoding `dinov3`, base 100) with the
stored `rope_embed.periods` (released files: bfloat16-rounded, `model.periods_dtype`). No
classifier (head Identity): the port gets a zero head; the class / register / patch features
are the normed tokens (models/vit.py sows them as "features").

Key names accepted: the released `.pth` files (flat state_dicts) and timm's copies
(`vit_*_patch16_dinov3*.lvd1689m`): `reg_token`, `gamma_1` / `gamma_2`, `attn.q_bias` /
`attn.v_bias`, SwiGLU `mlp.fc1_g` / `mlp.fc1_x` / `mlp.fc2`, and no `periods` (timm computes
them in float32, so the port does too), no `bias_mask`, no `mask_token`. `mask_token` (unused
at inference) and `local_cls_norm.*` (local crops in training, 7B / SAT) are ignored.
"""
from typing import Optional

import numpy as np

from porting import state_dict as sdl
from porting.state_dict import PortError

FAMILY = "DINOv3"
LAYERSCALE_INIT = 1e-5   # dinov3 layerscale_init (only matters for new layers)
BASE = 100.0             # pos_embed_rope_base of every released model


def _periods_dtype(stored: np.ndarray, head_dim: int) -> str:
  """"bfloat16" or "float32": which rounding of the base-100 formula (DINOv3's
  RopePositionEmbedding, in float32; also rope.freqs_dinov3's) the stored periods are."""
  formula = (np.float32(BASE) ** (np.float32(2.0) * np.arange(head_dim // 4, dtype=np.float32)
                                  / np.float32(head_dim // 2))).astype(np.float32)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top  (bf16 rounding)
  bf16 = np.asarray(jnp.asarray(formula).astype(jnp.bfloat16).astype(jnp.float32))
  if np.array_equal(stored, bf16) and not np.array_equal(stored, formula):
    return "bfloat16"
  if np.allclose(stored, formula, rtol=1e-6, atol=0):
    return "float32"
  raise PortError(f"rope_embed.periods {stored.tolist()} is neither the base-{BASE:g} formula "
                  f"{formula.tolist()} nor its bfloat16 rounding (other RoPE settings are not "
                  f"supported).")


def convert(sd: dict, *, num_heads: Optional[int] = None, image_size: Optional[int] = None,
            rope_grid=None) -> sdl.Ported:
  """A DINOv3 state_dict -> `Ported` (PortError naming the keys that do not fit).

  `num_heads`: default from `rope_embed.periods` (head_dim / 4 values), else width / 64 (every
  released model but the 7B, whose file has the periods). `image_size`: the training size
  written to the config (default 224; DINOv3's positions are normalised to every grid, so it
  only sets eval.py's default resolutions). `rope_grid` is refused."""
  if rope_grid is not None:
    raise PortError("--rope_grid: DINOv3 normalises positions to every grid; it has no "
                    "reference grid (leave --rope_grid unset).")
  width, channels, patch, depth = sdl.trunk(sd, FAMILY)
  d = width
  timm = "reg_token" in sd
  reg_key = "reg_token" if timm else "storage_tokens"
  registers = sdl.need(sd, reg_key, 3, FAMILY).shape[1]
  periods = sd.get("rope_embed.periods")
  if periods is not None and periods.ndim == 1 and periods.shape[0] >= 1:
    from_periods = d // (4 * periods.shape[0])
    if num_heads is not None and num_heads != from_periods:
      raise PortError(f"--num_heads={num_heads}: rope_embed.periods {list(periods.shape)} "
                      f"means head_dim {4 * periods.shape[0]}, i.e. {from_periods} heads.")
    num_heads = from_periods
  swiglu = any(f"blocks.0.mlp.{n}.weight" in sd for n in ("w1", "fc1_g"))
  gate, value, out = (("w1", "w2", "w3") if "blocks.0.mlp.w1.weight" in sd
                      else ("fc1_g", "fc1_x", "fc2") if swiglu else (None, "fc1", "fc2"))
  mlp_dim = sdl.need(sd, f"blocks.0.mlp.{value}.weight", 2, FAMILY).shape[0]
  dims = sdl.sizes(width, depth, num_heads, mlp_dim, patch)
  heads, hd = dims["num_heads"], dims["head_dim"]
  if hd % 4:
    raise PortError(f"--num_heads={heads}: head_dim {hd} is not divisible by 4 (2-D RoPE).")
  if timm:
    bias = "q_v" if "blocks.0.attn.q_bias" in sd else "none"
  else:
    bias = "qkv" if "blocks.0.attn.qkv.bias" in sd else "none"

  expected = {"cls_token": (1, 1, d), reg_key: (1, registers, d),
              "patch_embed.proj.weight": (d, channels, patch, patch),
              "patch_embed.proj.bias": (d,), "norm.weight": (d,), "norm.bias": (d,)}
  if periods is not None:
    expected["rope_embed.periods"] = (hd // 4,)
  for i in range(depth):
    b = f"blocks.{i}."
    ls = ("gamma_1", "gamma_2") if timm else ("ls1.gamma", "ls2.gamma")
    expected.update({b + ls[0]: (d,), b + ls[1]: (d,),
                     b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                     b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                     b + "attn.qkv.weight": (3 * d, d),
                     b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                     b + f"mlp.{value}.weight": (mlp_dim, d), b + f"mlp.{value}.bias": (mlp_dim,),
                     b + f"mlp.{out}.weight": (d, mlp_dim), b + f"mlp.{out}.bias": (d,)})
    if swiglu:
      expected.update({b + f"mlp.{gate}.weight": (mlp_dim, d),
                       b + f"mlp.{gate}.bias": (mlp_dim,)})
    if bias == "qkv":
      expected.update({b + "attn.qkv.bias": (3 * d,), b + "attn.qkv.bias_mask": (3 * d,)})
    elif bias == "q_v":
      expected.update({b + "attn.q_bias": (d,), b + "attn.v_bias": (d,)})
  sdl.check(sd, expected, optional=[r"mask_token", r"local_cls_norm\.(weight|bias)"])

  qkv_bias = "none" if bias == "none" else "qv"
  masks = []
  flat = {"embedding/kernel": sdl.conv_patch(sd["patch_embed.proj.weight"]),
          "embedding/bias": sd["patch_embed.proj.bias"], "cls": sd["cls_token"],
          "registers": sd[reg_key],
          "norm_final/scale": sd["norm.weight"], "norm_final/bias": sd["norm.bias"]}
  for i in range(depth):
    b, o = f"blocks.{i}.", f"encoderblock_{i}/"
    ls = ("gamma_1", "gamma_2") if timm else ("ls1.gamma", "ls2.gamma")
    flat.update({
        o + "norm_attn/scale": sd[b + "norm1.weight"], o + "norm_attn/bias": sd[b + "norm1.bias"],
        o + "attention/qkv/kernel": sdl.qkv_kernel(sd[b + "attn.qkv.weight"], heads),
        o + "attention/out/kernel": sdl.out_kernel(sd[b + "attn.proj.weight"], heads),
        o + "attention/out/bias": sd[b + "attn.proj.bias"],
        o + "layerscale_attn/ls": sd[b + ls[0]], o + "layerscale_mlp/ls": sd[b + ls[1]],
        o + "norm_mlp/scale": sd[b + "norm2.weight"], o + "norm_mlp/bias": sd[b + "norm2.bias"],
        o + "mlp/fc1/kernel": sdl.linear(sd[b + f"mlp.{value}.weight"]),
        o + "mlp/fc1/bias": sd[b + f"mlp.{value}.bias"],
        o + "mlp/fc2/kernel": sdl.linear(sd[b + f"mlp.{out}.weight"]),
        o + "mlp/fc2/bias": sd[b + f"mlp.{out}.bias"]})
    if swiglu:
      flat.update({o + "mlp/gate/kernel": sdl.linear(sd[b + f"mlp.{gate}.weight"]),
                   o + "mlp/gate/bias": sd[b + f"mlp.{gate}.bias"]})
    if bias == "qkv":
      mask = sd[b + "attn.qkv.bias_mask"]
      masks.append((b + "attn.qkv.bias_mask", mask))
      qkv = (sd[b + "attn.qkv.bias"] * mask).reshape(3, heads, hd)
    elif bias == "q_v":
      qkv = np.stack([sd[b + "attn.q_bias"], np.zeros(d, np.float32),
                      sd[b + "attn.v_bias"]]).reshape(3, heads, hd)
    if bias != "none":
      flat[o + "attention/qkv/bias"] = qkv
  # The effective bias is bias * bias_mask: with the mask [1]*D + [0]*D + [1]*D (every
  # released model) that is "qv"; all ones would be a plain qkv bias.
  patterns = {("qv" if np.array_equal(m, np.repeat([1.0, 0.0, 1.0], d)) else
               "qkv" if np.all(m == 1.0) else None) for _, m in masks}
  if None in patterns or len(patterns) > 1:
    bad = [k for k, m in masks if not np.array_equal(m, np.repeat([1.0, 0.0, 1.0], d))]
    raise PortError(f"{', '.join(bad[:4])}: bias_mask is not [1]*D + [0]*D + [1]*D in every "
                    f"block (only that mask, or none, is supported).")
  if patterns:
    qkv_bias = patterns.pop()

  periods_dtype = "float32" if periods is None else _periods_dtype(periods, hd)
  model = dict(encoding="dinov3", theta=BASE, norm_eps=1e-5, num_registers=int(registers),
               layerscale_init=LAYERSCALE_INIT, pool="cls", qkv_bias=qkv_bias,
               mlp="swiglu" if swiglu else "gelu", periods_dtype=periods_dtype, **dims)
  notes = ["no classifier head in DINOv3 files: a new zero head (fine-tune with "
           "train.py --config.init_from)"]
  if periods is None:
    notes.append("no rope_embed.periods in the file (timm copy): float32 periods, as timm "
                 "computes them (the original weights carry bfloat16 ones)")
  if num_heads is None:
    notes.append(f"num_heads {heads} (width / 64; --num_heads to change)")
  return sdl.Ported(model=model, params=sdl.nest(flat), image_size=image_size or 224,
                    notes=notes)
