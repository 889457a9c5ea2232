"""naver-ai/rope-vit (deit/models_v2_rope.py) RoPE-Axial / RoPE-Mixed DeiT-III -> our ViT.

The model is ours exactly: pre-norm blocks with LayerScale (`gamma_1`, `gamma_2`), qkv bias,
exact GELU, LayerNorm eps 1e-6, class-token pooling after the final norm; RoPE interleaved,
column first, integer positions (encodings `axial`, theta 100, or `mixed` with the stored
per-layer `freqs`); APE `pos_embed [1, N, D]` without a class slot, added to the patch tokens
before the class token (`model.ape`), resized like `F.interpolate(bicubic, align_corners=False)`
(`model.ape_resize="torch_bicubic"`).

Key names accepted:
* the released files (`rope_{axial,mixed}[_ape]_deit_{small,base,large}_patch16_LS`): `freqs`
  `[2, depth, heads * hd/2]` (axis 0 (x = col, y = row), head-major last axis), qkv `bias`;
  `freqs_t_x` / `freqs_t_y` (positions at the build size) are ignored: the model recomputes them.
* timm's copies (`vit_*_patch16_rope[_mixed][_ape]_224.naver_in1k`, timm's Eva): `rope.freqs`
  `[2, depth, heads, hd/2]` (gives the head count), `attn.q_bias` / `attn.v_bias` (timm keeps
  the k bias at zero: `model.qkv_bias="qv"`), APE resized with antialiasing as timm does.
"""
from typing import Optional

import numpy as np

from porting import state_dict as sdl
from porting.state_dict import PortError

FAMILY = "rope-vit"
LAYERSCALE_INIT = 1e-4   # rope-vit's RoPE_Layer_scale_init_Block (only matters for new layers)


def _freqs(sd, depth: int, width: int, heads: int) -> Optional[tuple[str, tuple]]:
  """(key, expected shape) of the Mixed frequencies, or None (Axial)."""
  if "rope.freqs" in sd:
    return "rope.freqs", (2, depth, heads, width // heads // 2)
  if "freqs" in sd:
    return "freqs", (2, depth, width // 2)
  return None


def convert(sd: dict, *, num_heads: Optional[int] = None, image_size: Optional[int] = None,
            rope_grid=None) -> sdl.Ported:
  """A rope-vit state_dict -> `Ported` (PortError naming the keys that do not fit).

  `num_heads`: the head count (the released files do not store it; timm's 4-D `rope.freqs`
  does); default width / 64 (every released model). `image_size`: the native resolution when
  there is no APE to read it from (default 224). `rope_grid` is refused (integer positions)."""
  if rope_grid is not None:
    raise PortError("--rope_grid: rope-vit uses integer positions at every resolution; it has "
                    "no reference grid (leave --rope_grid unset).")
  width, channels, patch, depth = sdl.trunk(sd, FAMILY)
  if "rope.freqs" in sd:
    stored = sdl.need(sd, "rope.freqs", 4, FAMILY).shape[2]
    if num_heads is not None and num_heads != stored:
      raise PortError(f"--num_heads={num_heads}: rope.freqs {list(sd['rope.freqs'].shape)} "
                      f"has {stored} heads.")
    num_heads = stored
  mlp_dim = sdl.need(sd, "blocks.0.mlp.fc1.weight", 2, FAMILY).shape[0]
  dims = sdl.sizes(width, depth, num_heads, mlp_dim, patch)
  heads, hd = dims["num_heads"], dims["head_dim"]
  if hd % 4:
    raise PortError(f"--num_heads={heads}: head_dim {hd} is not divisible by 4 (2-D RoPE).")
  timm = "blocks.0.attn.q_bias" in sd
  freqs = _freqs(sd, depth, width, heads)
  ape = "pos_embed" in sd
  grid = None
  if ape:
    pos = sdl.need(sd, "pos_embed", 3, FAMILY)
    grid = sdl.square_grid(pos.shape[1], "pos_embed")
  has_head = "head.weight" in sd
  classes = sd["head.weight"].shape[0] if has_head and sd["head.weight"].ndim == 2 else 0

  d = width
  expected = {"cls_token": (1, 1, d), "patch_embed.proj.weight": (d, channels, patch, patch),
              "patch_embed.proj.bias": (d,), "norm.weight": (d,), "norm.bias": (d,)}
  if has_head:
    expected.update({"head.weight": (classes, d), "head.bias": (classes,)})
  if ape:
    expected["pos_embed"] = (1, grid * grid, d)
  if freqs:
    expected[freqs[0]] = freqs[1]
  for i in range(depth):
    b = f"blocks.{i}."
    expected.update({b + "gamma_1": (d,), b + "gamma_2": (d,),
                     b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                     b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                     b + "attn.qkv.weight": (3 * d, d),
                     b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                     b + "mlp.fc1.weight": (mlp_dim, d), b + "mlp.fc1.bias": (mlp_dim,),
                     b + "mlp.fc2.weight": (d, mlp_dim), b + "mlp.fc2.bias": (d,)})
    if timm:
      expected.update({b + "attn.q_bias": (d,), b + "attn.v_bias": (d,)})
    else:
      expected[b + "attn.qkv.bias"] = (3 * d,)
  sdl.check(sd, expected, optional=[r"freqs_t_[xy]", r"rope\.t_[xy]"])

  flat = {"embedding/kernel": sdl.conv_patch(sd["patch_embed.proj.weight"]),
          "embedding/bias": sd["patch_embed.proj.bias"], "cls": sd["cls_token"],
          "norm_final/scale": sd["norm.weight"], "norm_final/bias": sd["norm.bias"]}
  if has_head:
    flat.update({"head/kernel": sdl.linear(sd["head.weight"]), "head/bias": sd["head.bias"]})
  if ape:
    flat["posenc/ape"] = sd["pos_embed"].reshape(grid, grid, d)
  for i in range(depth):
    b, o = f"blocks.{i}.", f"encoderblock_{i}/"
    if timm:
      bias = np.stack([sd[b + "attn.q_bias"], np.zeros(d, np.float32), sd[b + "attn.v_bias"]])
    else:
      bias = sd[b + "attn.qkv.bias"]
    flat.update({
        o + "norm_attn/scale": sd[b + "norm1.weight"], o + "norm_attn/bias": sd[b + "norm1.bias"],
        o + "attention/qkv/kernel": sdl.qkv_kernel(sd[b + "attn.qkv.weight"], heads),
        o + "attention/qkv/bias": bias.reshape(3, heads, hd),
        o + "attention/out/kernel": sdl.out_kernel(sd[b + "attn.proj.weight"], heads),
        o + "attention/out/bias": sd[b + "attn.proj.bias"],
        o + "layerscale_attn/ls": sd[b + "gamma_1"], o + "layerscale_mlp/ls": sd[b + "gamma_2"],
        o + "norm_mlp/scale": sd[b + "norm2.weight"], o + "norm_mlp/bias": sd[b + "norm2.bias"],
        o + "mlp/fc1/kernel": sdl.linear(sd[b + "mlp.fc1.weight"]),
        o + "mlp/fc1/bias": sd[b + "mlp.fc1.bias"],
        o + "mlp/fc2/kernel": sdl.linear(sd[b + "mlp.fc2.weight"]),
        o + "mlp/fc2/bias": sd[b + "mlp.fc2.bias"]})
    if freqs:
      # [2 (x = col, y = row), heads, hd/2] -> ours [heads, hd/2, (row, col)].
      f = sd[freqs[0]][:, i].reshape(2, heads, hd // 2)
      flat[o + "attention/posenc/freqs"] = np.stack([f[1], f[0]], axis=-1)

  model = dict(encoding="mixed" if freqs else "axial", ape=ape,
               ape_resize="torch_bicubic_antialias" if timm else "torch_bicubic",
               layerscale_init=LAYERSCALE_INIT, pool="cls", norm_eps=1e-6,
               qkv_bias="qv" if timm else "qkv", **dims)
  notes = []
  if num_heads is None:
    notes.append(f"num_heads {heads} (width / 64, as every released rope-vit model; the file "
                 "does not store it: --num_heads to change)")
  if not ape:
    notes.append(f"image size {image_size or 224} (no APE to read it from; --image_size)")
  if not has_head:
    notes.append("no classifier head in the file: a new zero head")
  size = grid * patch if ape else (image_size or 224)
  if ape and image_size not in (None, size):
    raise PortError(f"--image_size={image_size}: pos_embed is a {grid}x{grid} grid of "
                    f"{patch}-pixel patches, i.e. {size} px.")
  return sdl.Ported(model=model, params=sdl.nest(flat), image_size=size, notes=notes)
