"""The Flax -> rope-vit weight conversion of benchmarks/torch_vit.py, checked without torch.

The reference is a NumPy forward pass written from rope-vit's `models/vit_rope.py` (torch
layouts: Conv2d `[out, in, kh, kw]` on NCHW, Linear `y = x W^T + b`, qkv reshaped to
`(B, N, 3, H, D)`, `freqs_cis = polar(1, t_x Fx + t_y Fy)` applied by complex multiplication to
the patch tokens only) run on the converted state dict; it must reproduce the Flax logits.
"""
import flax.linen as nn
import jax
import numpy as np
import pytest
from scipy import special

from benchmarks import bench_vit_step
from benchmarks import torch_vit
from models import vit

IMAGE_SIZE, PATCH = 48, 16   # a 3x3 grid: rows and columns distinguishable


def _layer_norm(x, w, b, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * w + b


def _rope_vit_forward(state, images_nchw, *, depth, num_heads, encoding):
  """rope-vit's forward pass in float64 NumPy on a torch-layout state dict."""
  s = {k: v.astype(np.float64) for k, v in state.items()}
  b, c, h, w = images_nchw.shape
  gh, gw = h // PATCH, w // PATCH
  # Conv2d with stride = kernel = patch: one dot per patch; flatten(2).transpose(1, 2).
  patches = images_nchw.reshape(b, c, gh, PATCH, gw, PATCH).transpose(0, 2, 4, 1, 3, 5)
  x = np.einsum("bijckl,ockl->bijo", patches, s["patch_embed.proj.weight"])
  x = (x + s["patch_embed.proj.bias"]).reshape(b, gh * gw, -1)
  width = x.shape[-1]
  head_dim = width // num_heads
  x = np.concatenate([np.broadcast_to(s["cls_token"], (b, 1, width)), x], axis=1)
  n = x.shape[1]
  if encoding == "mixed":
    t_x, t_y = torch_vit.grid_t_xy(gw, gh)
    fx = (t_x[:, None] * s["freqs"][0][:, None, :]).reshape(depth, n - 1, num_heads, -1)
    fy = (t_y[:, None] * s["freqs"][1][:, None, :]).reshape(depth, n - 1, num_heads, -1)
    freqs_cis = np.exp(1j * (fx + fy)).transpose(0, 2, 1, 3)      # [depth, H, N-1, D/2]
  for i in range(depth):
    t = f"blocks.{i}."
    y = _layer_norm(x, s[t + "norm1.weight"], s[t + "norm1.bias"])
    qkv = y @ s[t + "attn.qkv.weight"].T + s[t + "attn.qkv.bias"]
    qkv = qkv.reshape(b, n, 3, num_heads, head_dim).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv[0].copy(), qkv[1].copy(), qkv[2]
    if encoding == "mixed":
      for z in (q, k):
        zc = z[:, :, 1:, 0::2] + 1j * z[:, :, 1:, 1::2]
        zc = zc * freqs_cis[i][None]
        z[:, :, 1:, 0::2], z[:, :, 1:, 1::2] = zc.real, zc.imag
    logits = (q * head_dim ** -0.5) @ k.swapaxes(-2, -1)
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn /= attn.sum(-1, keepdims=True)
    y = (attn @ v).transpose(0, 2, 1, 3).reshape(b, n, width)
    y = y @ s[t + "attn.proj.weight"].T + s[t + "attn.proj.bias"]
    x = x + (s[t + "gamma_1"] * y if t + "gamma_1" in s else y)
    y = _layer_norm(x, s[t + "norm2.weight"], s[t + "norm2.bias"])
    y = y @ s[t + "mlp.fc1.weight"].T + s[t + "mlp.fc1.bias"]
    y = 0.5 * y * (1 + special.erf(y / np.sqrt(2)))
    y = y @ s[t + "mlp.fc2.weight"].T + s[t + "mlp.fc2.bias"]
    x = x + (s[t + "gamma_2"] * y if t + "gamma_2" in s else y)
  x = _layer_norm(x, s["norm.weight"], s["norm.bias"])
  return x[:, 0] @ s["head.weight"].T + s["head.bias"]


def _flax_vit(encoding, layerscale, depth):
  """A tiny Flax ViT-S/16, its params with every leaf perturbed, images, its logits."""
  config = vit.default_config()
  config.encoding, config.depth, config.train_image_size = encoding, depth, IMAGE_SIZE
  config.layerscale_init = layerscale
  model = vit.model_from_config(config, num_classes=7)
  images = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (2, IMAGE_SIZE, IMAGE_SIZE, 3)))
  params = nn.unbox(model.init(jax.random.PRNGKey(0), images, train=False)["params"])
  # Zero biases / cls token and unit norms would hide a misplaced or transposed leaf.
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  params = jax.tree_util.tree_unflatten(
      treedef, [l + 0.1 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])
  logits = np.asarray(model.apply({"params": params}, images, train=False))
  return jax.device_get(params), images.transpose(0, 3, 1, 2).astype(np.float64), logits


@pytest.mark.parametrize("encoding,layerscale", [("mixed", None), ("mixed", 0.5),
                                               ("none", None)])
def test_converted_weights_reproduce_flax_logits(encoding, layerscale):
  params, nchw, expected = _flax_vit(encoding, layerscale, depth=2)
  state = torch_vit.flax_to_torch_state(params, num_heads=6, encoding=encoding)
  got = _rope_vit_forward(state, nchw, depth=2, num_heads=6, encoding=encoding)
  np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4)
  assert ("freqs" in state) == (encoding == "mixed")
  assert ("blocks.1.gamma_2" in state) == (layerscale is not None)
  if encoding == "mixed":
    assert state["freqs"].shape == (2, 2, 6 * 32)


def test_swapping_x_and_y_freqs_changes_the_logits():
  """The conversion's (row, col) -> (y, x) order is observable, so the check above can fail."""
  params, nchw, expected = _flax_vit("mixed", None, depth=1)
  state = torch_vit.flax_to_torch_state(params, num_heads=6, encoding="mixed")
  state["freqs"] = state["freqs"][::-1].copy()
  wrong = _rope_vit_forward(state, nchw, depth=1, num_heads=6, encoding="mixed")
  assert np.max(np.abs(wrong - expected)) > 1e-2


def test_grid_t_xy_is_column_then_row_major():
  t_x, t_y = torch_vit.grid_t_xy(3, 2)      # end_x = 3 columns, end_y = 2 rows
  np.testing.assert_array_equal(t_x, [0, 1, 2, 0, 1, 2])
  np.testing.assert_array_equal(t_y, [0, 0, 0, 1, 1, 1])


def test_unknown_encoding_is_a_value_error():
  with pytest.raises(ValueError, match="encoding"):
    torch_vit.flax_to_torch_state({}, num_heads=6, encoding="axial")


def test_rows_add_the_none_baselines_at_each_head_dim():
  plan = bench_vit_step.rows(["mixed", "spherical", "liere"], "S/16")
  assert plan == [("none", "none", None), ("none@63", "none", 63),
                  ("mixed", "mixed", None), ("spherical@63", "spherical", 63),
                  ("liere", "liere", None)]
  assert bench_vit_step.rows(["none"], "S/16") == [("none", "none", None)]


def test_block_size_overrides_the_config_only_where_the_encoding_reads_it():
  plan = bench_vit_step.rows(["mixed", "liere"], "S/16", block_size=8)
  assert [r[0] for r in plan] == ["none", "mixed", "liere b8"]
  kw = dict(variant="S/16", head_dim=None, image_size=112, dtype="float32", layerscale=None)
  assert bench_vit_step.model_config("liere", **kw).block_size == 64    # configs/vit_liere.py
  assert bench_vit_step.model_config("liere", block_size=8, **kw).block_size == 8
  assert bench_vit_step.model_config("mixed", block_size=8, **kw).block_size is None


def test_every_rotary_and_bias_encoding_is_a_default_row_with_its_config_options():
  from models.vit_encodings import ENCODINGS    # pylint: disable=g-import-not-at-top
  assert {n for n, e in ENCODINGS.items() if e.kind != "absolute"} <= set(
      bench_vit_step.DEFAULT_ENCODINGS)
  # The step timed is the one trained: DINOv3 with its released rescale augmentation,
  # ComRoPE at its config's block size; sizes stay the benchmark's.
  dinov3 = bench_vit_step.model_config("dinov3", variant="S/16", head_dim=None, image_size=32,
                                       dtype="float32", layerscale=None, depth=1)
  assert dinov3.position_augment.rescale == 2.0 and vit.position_augment(dinov3) is not None
  comrope = bench_vit_step.model_config("comrope_ld", variant="S/16", head_dim=None,
                                        image_size=32, dtype="float32", layerscale=None)
  assert comrope.block_size == 2 and vit.model_dims(comrope)["head_dim"] == 64
  assert comrope.depth is None



def test_torch_runs_at_our_precision_unless_told_otherwise():
  """Like for like by default: --dtype bfloat16 --torch compares with torch's bf16 autocast."""
  parse = bench_vit_step.parse_args
  assert parse(["--torch"]).torch_dtype == "float32"
  assert parse(["--torch", "--dtype", "bfloat16"]).torch_dtype == "bfloat16"
  assert parse(["--dtype", "bfloat16", "--torch_dtype", "float32"]).torch_dtype == "float32"


def test_table_prints_both_sides_gflops_from_one_flop_count(capsys):
  entries = [{"label": "none", "encoding": "none", "head_dim": 64, "times": [2.0, 2.0, 2.0],
              "flops": 400e9, "compile_s": 1.0},
             {"label": "mixed", "encoding": "mixed", "head_dim": 64, "times": [2.5],
              "flops": 400e9, "compile_s": 1.0}]
  torch = {"mixed": {"ms_per_step": 4000.0, "images_per_s": 8.0}}
  bench_vit_step.print_table(entries, 112, 32, torch)
  lines = capsys.readouterr().out.splitlines()
  assert "torch GF/s" in lines[0]
  mixed = lines[2].split()
  # ms/step 2500, img/s 12.8, +25%, 400 GFLOP, 160 GFLOP/s | torch 4000 ms, 8 img/s, 100 GF/s,
  # JAX/torch 1.6.
  assert mixed[1:3] == ["2500.0", "12.80"] and mixed[3] == "+25.0%"
  assert mixed[4:6] == ["400.0", "160.0"] and mixed[7:] == ["4000.0", "8.00", "100.0", "1.60"]
