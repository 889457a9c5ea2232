"""EVA-02 image classifiers / MIM encoders (timm `Eva`, baaivision/EVA) -> our ViT.

Pre-norm blocks without LayerScale, q and v biases only (`model.qkv_bias="qv"`), SwiGLU MLP
`fc2(subLN(SiLU(gate x) * value x))` (`model.mlp="swiglu"`, `model.mlp_norm` when the file has
the sub-LN), LayerNorm eps 1e-6; APE `pos_embed [1, 1 + N, D]` with the class slot first: the
class slot is never resized, so `cls_token + pos_embed[:, 0]` is folded into our class token
and the rest is the patch APE, resized like timm's `resample_abs_pos_embed` (bicubic,
antialias: `model.ape_resize="torch_bicubic_antialias"`); pooling: mean of the patch tokens
(class token excluded, `model.pool="gap_cls"`), then `fc_norm` (`model.final_norm="pooled"`),
then the head. RoPE interleaved, row first, theta 1e4, positions `i * ref / n` on the
reference grid `ref_feat_shape` (encoding `eva02`, `model.rope_grid`; not in the file: 16 x 16
for every released EVA-02, --rope_grid to change).

Key names accepted (golden README "EVA-02"):
* base / large: `attn.q_proj` (+ bias), `attn.k_proj` (no bias), `attn.v_proj` (+ bias);
  `mlp.fc1_g` (gate), `mlp.fc1_x` (value), `mlp.norm` (sub-LN), `mlp.fc2`;
* tiny / small: fused `attn.qkv.weight` with `attn.q_bias` / `attn.v_bias`; packed `mlp.fc1`
  `[2 * hidden, D]` whose first half is the gate, no sub-LN;
* BAAI's original names, renamed as timm's `checkpoint_filter_fn` does (`mlp.w1` / `w2` / `w3`
  / `w12`, `mlp.ffn_ln`), and MIM files (`mask_token`, `lm_head.*` dropped; their final `norm`
  is the pooled norm).
EVA-CLIP towers (`attn.norm`, `attn.inner_attn_ln`: scale_attn_inner) are not supported: their
extra keys are refused.
"""
from typing import Optional

import numpy as np

from porting import state_dict as sdl
from porting.state_dict import PortError

FAMILY = "EVA-02"
REF_GRID = (16, 16)   # timm ref_feat_shape of every eva02_* model (also the 336 / 448 ones)
_RENAMES = (("mlp.ffn_ln", "mlp.norm"), ("mlp.w12", "mlp.fc1"), ("mlp.w1", "mlp.fc1_g"),
            ("mlp.w2", "mlp.fc1_x"), ("mlp.w3", "mlp.fc2"))


def _timm_names(sd: dict) -> dict:
  """BAAI's original names -> timm's (timm eva.py checkpoint_filter_fn)."""
  mim = "mask_token" in sd
  out = {}
  for k, v in sd.items():
    if mim and k in ("mask_token", "lm_head.weight", "lm_head.bias"):
      continue
    if mim and k in ("norm.weight", "norm.bias") and "fc_norm.weight" not in sd:
      k = "fc_" + k
    for old, new in _RENAMES:
      k = k.replace(old, new)
    if "blocks.0.attn.q_proj.weight" in sd:
      k = k.replace("attn.q_bias", "attn.q_proj.bias").replace("attn.v_bias", "attn.v_proj.bias")
    out[k] = v
  return out


def convert(sd: dict, *, num_heads: Optional[int] = None, image_size: Optional[int] = None,
            rope_grid=None) -> sdl.Ported:
  """An EVA-02 state_dict -> `Ported` (PortError naming the keys that do not fit).

  `num_heads`: default width / 64 (every released EVA-02). `rope_grid`: timm's
  `ref_feat_shape` (rows, cols), default (16, 16). `image_size` must agree with `pos_embed`."""
  sd = _timm_names(sd)
  width, channels, patch, depth = sdl.trunk(sd, FAMILY)
  d = width
  pos = sdl.need(sd, "pos_embed", 3, FAMILY)
  grid = sdl.square_grid(pos.shape[1] - 1, "pos_embed (after its class slot)")
  fused = "blocks.0.attn.qkv.weight" in sd
  packed = "blocks.0.mlp.fc1.weight" in sd
  subln = "blocks.0.mlp.norm.weight" in sd
  if packed:
    mlp_dim = sdl.need(sd, "blocks.0.mlp.fc1.weight", 2, FAMILY).shape[0] // 2
  else:
    mlp_dim = sdl.need(sd, "blocks.0.mlp.fc1_x.weight", 2, FAMILY).shape[0]
  dims = sdl.sizes(width, depth, num_heads, mlp_dim, patch)
  heads, hd = dims["num_heads"], dims["head_dim"]
  if hd % 4:
    raise PortError(f"--num_heads={heads}: head_dim {hd} is not divisible by 4 (2-D RoPE).")
  qkv_bias = "qv" if ("blocks.0.attn.q_bias" in sd or "blocks.0.attn.q_proj.bias" in sd) \
      else "none"
  layerscale = "blocks.0.gamma_1" in sd
  has_head = "head.weight" in sd
  classes = sd["head.weight"].shape[0] if has_head and sd["head.weight"].ndim == 2 else 0

  expected = {"cls_token": (1, 1, d), "pos_embed": (1, 1 + grid * grid, d),
              "patch_embed.proj.weight": (d, channels, patch, patch),
              "patch_embed.proj.bias": (d,), "fc_norm.weight": (d,), "fc_norm.bias": (d,)}
  if has_head:
    expected.update({"head.weight": (classes, d), "head.bias": (classes,)})
  for i in range(depth):
    b = f"blocks.{i}."
    expected.update({b + "norm1.weight": (d,), b + "norm1.bias": (d,),
                     b + "norm2.weight": (d,), b + "norm2.bias": (d,),
                     b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
                     b + "mlp.fc2.weight": (d, mlp_dim), b + "mlp.fc2.bias": (d,)})
    if layerscale:
      expected.update({b + "gamma_1": (d,), b + "gamma_2": (d,)})
    if fused:
      expected[b + "attn.qkv.weight"] = (3 * d, d)
      if qkv_bias == "qv":
        expected.update({b + "attn.q_bias": (d,), b + "attn.v_bias": (d,)})
    else:
      expected.update({b + f"attn.{n}_proj.weight": (d, d) for n in "qkv"})
      if qkv_bias == "qv":
        expected.update({b + "attn.q_proj.bias": (d,), b + "attn.v_proj.bias": (d,)})
    if packed:
      expected.update({b + "mlp.fc1.weight": (2 * mlp_dim, d), b + "mlp.fc1.bias": (2 * mlp_dim,)})
    else:
      expected.update({b + f"mlp.{n}.{p}": (mlp_dim, d) if p == "weight" else (mlp_dim,)
                       for n in ("fc1_g", "fc1_x") for p in ("weight", "bias")})
    if subln:
      expected.update({b + "mlp.norm.weight": (mlp_dim,), b + "mlp.norm.bias": (mlp_dim,)})
  # timm's non-persistent RoPE buffers, should a file carry them.
  sdl.check(sd, expected, optional=[r"rope\..*"])

  flat = {"embedding/kernel": sdl.conv_patch(sd["patch_embed.proj.weight"]),
          "embedding/bias": sd["patch_embed.proj.bias"],
          # The class token always gets the class slot of the APE (never resized).
          "cls": sd["cls_token"] + sd["pos_embed"][:, :1],
          "posenc/ape": sd["pos_embed"][0, 1:].reshape(grid, grid, d),
          "norm_final/scale": sd["fc_norm.weight"], "norm_final/bias": sd["fc_norm.bias"]}
  if has_head:
    flat.update({"head/kernel": sdl.linear(sd["head.weight"]), "head/bias": sd["head.bias"]})
  zeros = np.zeros(d, np.float32)
  for i in range(depth):
    b, o = f"blocks.{i}.", f"encoderblock_{i}/"
    if fused:
      qkv = sd[b + "attn.qkv.weight"]
      q_b, v_b = (sd.get(b + "attn.q_bias"), sd.get(b + "attn.v_bias"))
    else:
      qkv = np.concatenate([sd[b + f"attn.{n}_proj.weight"] for n in "qkv"], axis=0)
      q_b, v_b = (sd.get(b + "attn.q_proj.bias"), sd.get(b + "attn.v_proj.bias"))
    if packed:
      gate_w, value_w = np.split(sd[b + "mlp.fc1.weight"], 2, axis=0)   # gate first
      gate_b, value_b = np.split(sd[b + "mlp.fc1.bias"], 2, axis=0)
    else:
      gate_w, gate_b = sd[b + "mlp.fc1_g.weight"], sd[b + "mlp.fc1_g.bias"]
      value_w, value_b = sd[b + "mlp.fc1_x.weight"], sd[b + "mlp.fc1_x.bias"]
    flat.update({
        o + "norm_attn/scale": sd[b + "norm1.weight"], o + "norm_attn/bias": sd[b + "norm1.bias"],
        o + "attention/qkv/kernel": sdl.qkv_kernel(qkv, heads),
        o + "attention/out/kernel": sdl.out_kernel(sd[b + "attn.proj.weight"], heads),
        o + "attention/out/bias": sd[b + "attn.proj.bias"],
        o + "norm_mlp/scale": sd[b + "norm2.weight"], o + "norm_mlp/bias": sd[b + "norm2.bias"],
        o + "mlp/gate/kernel": sdl.linear(gate_w), o + "mlp/gate/bias": gate_b,
        o + "mlp/fc1/kernel": sdl.linear(value_w), o + "mlp/fc1/bias": value_b,
        o + "mlp/fc2/kernel": sdl.linear(sd[b + "mlp.fc2.weight"]),
        o + "mlp/fc2/bias": sd[b + "mlp.fc2.bias"]})
    if qkv_bias == "qv":
      flat[o + "attention/qkv/bias"] = np.stack([q_b, zeros, v_b]).reshape(3, heads, hd)
    if subln:
      flat.update({o + "mlp/norm/scale": sd[b + "mlp.norm.weight"],
                   o + "mlp/norm/bias": sd[b + "mlp.norm.bias"]})
    if layerscale:
      flat.update({o + "layerscale_attn/ls": sd[b + "gamma_1"],
                   o + "layerscale_mlp/ls": sd[b + "gamma_2"]})

  ref = REF_GRID if rope_grid is None else tuple(int(n) for n in rope_grid)
  size = grid * patch
  if image_size not in (None, size):
    raise PortError(f"--image_size={image_size}: pos_embed is a {grid}x{grid} grid of "
                    f"{patch}-pixel patches, i.e. {size} px.")
  model = dict(encoding="eva02", ape=True, ape_resize="torch_bicubic_antialias",
               rope_grid=list(ref), pool="gap_cls", final_norm="pooled", mlp="swiglu",
               mlp_norm=subln, qkv_bias=qkv_bias, norm_eps=1e-6,
               layerscale_init=1e-5 if layerscale else None, **dims)
  notes = []
  if rope_grid is None:
    notes.append(f"RoPE reference grid {ref} (timm ref_feat_shape of every released EVA-02; "
                 "--rope_grid to change)")
  if num_heads is None:
    notes.append(f"num_heads {heads} (width / 64; --num_heads to change)")
  if not has_head:
    notes.append("no classifier head in the file: a new zero head")
  return sdl.Ported(model=model, params=sdl.nest(flat), image_size=size, notes=notes)
