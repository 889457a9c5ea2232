"""PyTorch eager reference of issue 5: rope-vit's ViT-S/16 RoPE-Mixed, one AdamW training step.

  python -m benchmarks.torch_vit --image_size 224 --batch_size 32 --repeats 3 --json
  python -m benchmarks.torch_vit --parity --json     # logits vs the Flax models.vit (needs jax)
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python -m benchmarks.torch_vit

The model follows naver-ai/rope-vit `models/vit_rope.py` (`mixed_deit_small_patch16_LS`)
on top of DeiT / timm's pre-norm ViT: patch conv, class token, blocks
`x + LS(attn(LN x))`, `x + LS(mlp(LN x))` with qkv bias, exact GELU, LayerNorm eps 1e-6, final
LayerNorm, class-token head. LayerScale is optional (`--layerscale`, rope-vit's `_LS` models use
1e-4; the Flax default config has none, so neither has it by default). RoPE-Mixed as rope-vit:
one parameter `freqs [2, depth, H*D/2]` ((x, y) = (col, row) frequencies of every layer),
`freqs_cis` computed once per forward from the grid positions with `torch.polar`, and
`apply_rotary_emb` (complex multiplication of adjacent channel pairs) on q and k of the patch
tokens only, written back in place as rope-vit does; attention is the manual
`softmax((q * scale) @ k^T) @ v`. `--encoding none` drops the rotation. Training step:
`F.cross_entropy`, `backward`, `torch.optim.AdamW` (weight decay 0.05 on weights, none on
biases, norms, cls token and freqs, as timm's parameter groups with rope-vit's no_weight_decay).

torch is imported lazily (this module's pure-numpy weight conversion, `flax_to_torch_state`, is
used without it). Install it with `pip install -r benchmarks/requirements.txt`.
"""
import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Mapping, Optional

import numpy as np

ENCODINGS = ("none", "mixed")
ADAMW_IMPLS = ("default", "foreach", "fused")
NUM_CLASSES = 1000
_MISSING_TORCH = ("benchmarks.torch_vit needs PyTorch: pip install -r benchmarks/requirements.txt "
                  "(torch==2.13.0, CPU wheel).")


def import_torch():
  """torch, or SystemExit naming the requirements file."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SystemExit(_MISSING_TORCH) from None
  return torch


def flax_to_torch_state(params: Mapping[str, Any], *, num_heads: int,
                        encoding: str) -> dict[str, np.ndarray]:
  """The state dict of `build_model(...)` holding the weights of a Flax `models.vit.ViT`.

  Args:
    params: the Flax ViT's params (pool "cls", no APE; LayerScale optional), numpy or jax arrays.
    num_heads: H.
    encoding: "none" or "mixed".

  Returns:
    name -> float32 numpy array, named and laid out as torch/timm/rope-vit:
    Conv2d `[out, in, kh, kw]` (Flax `[kh, kw, in, out]`), Linear `[out, in]` (Flax Dense
    `[in, out]`), qkv output index `(k, h, d)` row-major (Flax Einsum kernel `[width, 3, H, D]`),
    proj input index `(h, d)` (Flax `[H, D, width]`), and for mixed
    `freqs[0, i] = x (col)`, `freqs[1, i] = y (row)` frequencies of layer i flattened over
    `(h, j)`, from Flax's per-layer `[H, D/2, 2]` in (row, col) order.
  """
  if encoding not in ENCODINGS:
    raise ValueError(f"encoding={encoding!r}; allowed: {ENCODINGS}.")
  f32 = lambda a: np.asarray(a, np.float32)
  depth = sum(1 for name in params if name.startswith("encoderblock_"))
  width = params["cls"].shape[-1]
  state = {
      "cls_token": f32(params["cls"]).reshape(1, 1, width),
      "patch_embed.proj.weight": f32(params["embedding"]["kernel"]).transpose(3, 2, 0, 1),
      "patch_embed.proj.bias": f32(params["embedding"]["bias"]),
      "norm.weight": f32(params["norm_final"]["scale"]),
      "norm.bias": f32(params["norm_final"]["bias"]),
      "head.weight": f32(params["head"]["kernel"]).T,
      "head.bias": f32(params["head"]["bias"]),
  }
  freqs_x, freqs_y = [], []
  for i in range(depth):
    p = params[f"encoderblock_{i}"]
    a = p["attention"]
    t = f"blocks.{i}."
    qkv = f32(a["qkv"]["kernel"])                                  # [width, 3, H, D]
    out = f32(a["out"]["kernel"])                                  # [H, D, width]
    state.update({
        t + "norm1.weight": f32(p["norm_attn"]["scale"]),
        t + "norm1.bias": f32(p["norm_attn"]["bias"]),
        t + "attn.qkv.weight": qkv.reshape(width, -1).T,
        t + "attn.qkv.bias": f32(a["qkv"]["bias"]).reshape(-1),
        t + "attn.proj.weight": out.reshape(-1, width).T,
        t + "attn.proj.bias": f32(a["out"]["bias"]),
        t + "norm2.weight": f32(p["norm_mlp"]["scale"]),
        t + "norm2.bias": f32(p["norm_mlp"]["bias"]),
        t + "mlp.fc1.weight": f32(p["mlp"]["fc1"]["kernel"]).T,
        t + "mlp.fc1.bias": f32(p["mlp"]["fc1"]["bias"]),
        t + "mlp.fc2.weight": f32(p["mlp"]["fc2"]["kernel"]).T,
        t + "mlp.fc2.bias": f32(p["mlp"]["fc2"]["bias"]),
    })
    if "layerscale_attn" in p:
      state[t + "gamma_1"] = f32(p["layerscale_attn"]["ls"])
      state[t + "gamma_2"] = f32(p["layerscale_mlp"]["ls"])
    if encoding == "mixed":
      freqs = f32(a["posenc"]["freqs"])                            # [H, D/2, (row, col)]
      if freqs.shape[0] != num_heads:
        raise ValueError(f"num_heads={num_heads} but the freqs of layer {i} have "
                         f"{freqs.shape[0]} heads.")
      freqs_x.append(freqs[..., 1].reshape(-1))
      freqs_y.append(freqs[..., 0].reshape(-1))
  if encoding == "mixed":
    state["freqs"] = np.stack([np.stack(freqs_x), np.stack(freqs_y)])   # [2, depth, H*D/2]
  return state


def grid_t_xy(end_x: int, end_y: int) -> tuple[np.ndarray, np.ndarray]:
  """rope-vit `init_t_xy`: (col, row) of each patch, row-major, float32 `[end_x * end_y]`."""
  t = np.arange(end_x * end_y, dtype=np.float32)
  return (t % end_x).astype(np.float32), np.floor_divide(t, end_x).astype(np.float32)


def build_model(*, width: int, depth: int, num_heads: int, mlp_dim: int, patch_size: int,
                image_size: int, encoding: str, layerscale: Optional[float] = None,
                theta: float = 10.0, num_classes: int = NUM_CLASSES):
  """rope-vit's ViT (see the module docstring) as a `torch.nn.Module`, timm-initialised."""
  if encoding not in ENCODINGS:
    raise ValueError(f"encoding={encoding!r}; allowed: {ENCODINGS}.")
  torch = import_torch()
  nn = torch.nn
  head_dim = width // num_heads

  def init_random_2d_freqs():
    # rope-vit init_random_2d_freqs(dim, num_heads, theta): [2 (x, y), H, D/2].
    mag = 1 / (theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim))
    fx, fy = [], []
    for _ in range(num_heads):
      a = torch.rand(1) * 2 * torch.pi
      fx.append(torch.cat([mag * torch.cos(a), mag * torch.cos(torch.pi / 2 + a)], dim=-1))
      fy.append(torch.cat([mag * torch.sin(a), mag * torch.sin(torch.pi / 2 + a)], dim=-1))
    return torch.stack([torch.stack(fx), torch.stack(fy)])

  def apply_rotary_emb(xq, xk, freqs_cis):
    # rope-vit apply_rotary_emb with freqs_cis [H, N, D/2] broadcast over the batch. rope-vit
    # trains under AMP, where `.float()` casts, i.e. copies; in float32 it is a no-op and the
    # complex view would alias qkv, which the in-place write below then corrupts for backward
    # (torch raises), hence the explicit copy: the same work as the AMP cast.
    as_complex = lambda x: torch.view_as_complex(
        x.float().clone(memory_format=torch.contiguous_format).reshape(*x.shape[:-1], -1, 2))
    xq_, xk_ = as_complex(xq), as_complex(xk)
    freqs_cis = freqs_cis.view(1, *freqs_cis.shape)
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)

  class Mlp(nn.Module):

    def __init__(self):
      super().__init__()
      self.fc1 = nn.Linear(width, mlp_dim)
      self.act = nn.GELU()
      self.fc2 = nn.Linear(mlp_dim, width)

    def forward(self, x):
      return self.fc2(self.act(self.fc1(x)))

  class Attention(nn.Module):

    def __init__(self):
      super().__init__()
      self.scale = head_dim ** -0.5
      self.qkv = nn.Linear(width, 3 * width, bias=True)
      self.proj = nn.Linear(width, width)

    def forward(self, x, freqs_cis):
      b, n, c = x.shape
      qkv = self.qkv(x).reshape(b, n, 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
      q, k, v = qkv[0], qkv[1], qkv[2]
      # record_function scopes only label the profile (op_kind_seconds), as in models/vit.py.
      if freqs_cis is not None:
        with torch.profiler.record_function("rope"):
          q[:, :, 1:], k[:, :, 1:] = apply_rotary_emb(q[:, :, 1:], k[:, :, 1:], freqs_cis)
      with torch.profiler.record_function("sdpa"):
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
      return self.proj(out)

  class Block(nn.Module):

    def __init__(self):
      super().__init__()
      self.norm1 = nn.LayerNorm(width, eps=1e-6)
      self.attn = Attention()
      self.norm2 = nn.LayerNorm(width, eps=1e-6)
      self.mlp = Mlp()
      if layerscale is not None:
        self.gamma_1 = nn.Parameter(layerscale * torch.ones(width))
        self.gamma_2 = nn.Parameter(layerscale * torch.ones(width))

    def forward(self, x, freqs_cis):
      y = self.attn(self.norm1(x), freqs_cis)
      x = x + (self.gamma_1 * y if layerscale is not None else y)
      y = self.mlp(self.norm2(x))
      return x + (self.gamma_2 * y if layerscale is not None else y)

  class PatchEmbed(nn.Module):

    def __init__(self):
      super().__init__()
      self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
      return self.proj(x).flatten(2).transpose(1, 2)

  class RopeViT(nn.Module):

    def __init__(self):
      super().__init__()
      self.patch_embed = PatchEmbed()
      self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
      self.blocks = nn.ModuleList([Block() for _ in range(depth)])
      self.norm = nn.LayerNorm(width, eps=1e-6)
      self.head = nn.Linear(width, num_classes)
      if encoding == "mixed":
        freqs = torch.stack([init_random_2d_freqs() for _ in range(depth)], dim=1)
        self.freqs = nn.Parameter(freqs.view(2, depth, -1).clone())
        grid = image_size // patch_size
        t_x, t_y = grid_t_xy(grid, grid)
        self.register_buffer("freqs_t_x", torch.from_numpy(t_x))
        self.register_buffer("freqs_t_y", torch.from_numpy(t_y))
      self.apply(self._init_weights)
      nn.init.trunc_normal_(self.cls_token, std=0.02)

    @staticmethod
    def _init_weights(m):
      if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
      elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)

    def compute_mixed_cis(self, t_x, t_y):
      # rope-vit compute_mixed_cis: [depth, H, N, D/2] complex, kept in float32.
      n = t_x.shape[0]
      with torch.autocast("cpu", enabled=False):
        fx = (t_x.unsqueeze(-1) @ self.freqs[0].unsqueeze(-2)).view(depth, n, num_heads, -1)
        fy = (t_y.unsqueeze(-1) @ self.freqs[1].unsqueeze(-2)).view(depth, n, num_heads, -1)
        angles = (fx + fy).permute(0, 2, 1, 3)
        return torch.polar(torch.ones_like(angles), angles)

    def forward(self, x):
      b, _, h, w = x.shape
      x = self.patch_embed(x)
      x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
      if encoding == "mixed":
        if self.freqs_t_x.shape[0] != x.shape[1] - 1:
          t_x, t_y = (torch.from_numpy(t) for t in grid_t_xy(w // patch_size, h // patch_size))
        else:
          t_x, t_y = self.freqs_t_x, self.freqs_t_y
        with torch.profiler.record_function("rope"):
          freqs_cis = self.compute_mixed_cis(t_x, t_y)
        for i, blk in enumerate(self.blocks):
          x = blk(x, freqs_cis[i])
      else:
        for blk in self.blocks:
          x = blk(x, None)
      return self.head(self.norm(x)[:, 0])

  return RopeViT()


def make_optimizer(model, impl: str = "default", lr: float = 1e-3, weight_decay: float = 0.05):
  """AdamW with timm's groups: no decay on 1-D params, biases, cls_token and freqs."""
  if impl not in ADAMW_IMPLS:
    raise ValueError(f"--adamw={impl!r}; allowed: {ADAMW_IMPLS}.")
  torch = import_torch()
  decay, no_decay = [], []
  for name, p in model.named_parameters():
    skip = p.ndim <= 1 or name.endswith(".bias") or name in ("cls_token", "freqs")
    (no_decay if skip else decay).append(p)
  groups = [{"params": no_decay, "weight_decay": 0.0},
            {"params": decay, "weight_decay": weight_decay}]
  options = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[impl]
  return torch.optim.AdamW(groups, lr=lr, **options)


def time_training_step(*, variant: str = "S/16", encoding: str = "mixed",
                       image_size: int = 224, batch_size: int = 32, repeats: int = 3,
                       warmup: int = 1, layerscale: Optional[float] = None,
                       dtype: str = "float32", adamw: str = "default",
                       breakdown: int = 0) -> dict:
  """Median wall time of one eager training step; a JSON-able dict. `breakdown` > 0 also
  profiles that many more steps (`op_kind_seconds`)."""
  torch = import_torch()
  from models import vit  # pylint: disable=g-import-not-at-top  # sizes only (no jax backend).
  size, patch = vit.parse_variant(variant)
  width, depth, heads, mlp_dim = vit.VARIANTS[size]
  if image_size % patch:
    raise ValueError(f"--image_size={image_size} is not divisible by the patch size {patch}.")
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"--dtype={dtype!r}; allowed: float32, bfloat16.")
  torch.manual_seed(0)
  model = build_model(width=width, depth=depth, num_heads=heads, mlp_dim=mlp_dim,
                      patch_size=patch, image_size=image_size, encoding=encoding,
                      layerscale=layerscale)
  model.train()
  opt = make_optimizer(model, adamw)
  images = torch.randn(batch_size, 3, image_size, image_size)
  labels = torch.randint(0, NUM_CLASSES, (batch_size,))
  autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")

  def step():
    opt.zero_grad(set_to_none=True)
    with autocast:
      logits = model(images)
    loss = torch.nn.functional.cross_entropy(logits.float(), labels)
    loss.backward()
    opt.step()
    return loss

  for _ in range(warmup):
    step()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    step()
    times.append(time.perf_counter() - t0)
  seconds = statistics.median(times)
  kinds = op_kind_seconds(step, steps=breakdown) if breakdown else None
  return {"op_kind_seconds": kinds, "encoding": encoding, "variant": variant, "image_size": image_size,
          "batch_size": batch_size, "dtype": dtype, "adamw": adamw, "repeats": repeats,
          "ms_per_step": seconds * 1e3, "images_per_s": batch_size / seconds,
          "times_ms": [t * 1e3 for t in times], "torch": torch.__version__,
          "threads": torch.get_num_threads(), "ld_preload": os.environ.get("LD_PRELOAD", "")}


_DOT_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::convolution",
            "aten::_convolution", "aten::mkldnn_convolution", "aten::convolution_backward",
            "aten::_mkldnn_convolution_backward", "aten::linear_backward")
_NORM_OPS = ("aten::native_layer_norm", "aten::native_layer_norm_backward")


def op_kind_seconds(step, *, steps: int) -> dict:
  """Seconds per step by op kind, the same kinds as benchmarks/op_breakdown.py, from
  `torch.profiler` (self CPU time of every op):

  * rope / attention: ops under the `rope` / `sdpa` record_function scopes of the model, and
    the autograd nodes of those ops in the backward pass (matched by sequence number);
  * optimizer: under `Optimizer.step` / `Optimizer.zero_grad`;
  * dots: matrix products and convolutions (`_DOT_OPS`), elsewhere;
  * normalisation: LayerNorm forward and backward;
  * elementwise: the rest (activations, adds, copies, the loss).
  """
  torch = import_torch()
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
    for _ in range(steps):
      step()
  events = list(prof.events())
  scope_seq = {}   # forward op sequence number -> scope, for the backward nodes
  def scope_of(e):
    while e is not None:
      if e.name in ("rope", "sdpa"):
        return e.name
      if e.name.startswith(("Optimizer.step", "Optimizer.zero_grad")):
        return "optimizer"
      if e.name.startswith("autograd::engine::evaluate_function") and e.sequence_nr in scope_seq:
        return scope_seq[e.sequence_nr]
      e = e.cpu_parent
    return None
  for e in events:
    if e.sequence_nr >= 0 and not e.name.startswith("autograd::"):
      s = scope_of(e)
      if s in ("rope", "sdpa"):
        scope_seq[e.sequence_nr] = s
  from benchmarks import op_breakdown  # pylint: disable=g-import-not-at-top  # KINDS (no backend)
  totals = dict.fromkeys(op_breakdown.KINDS, 0.0)
  for e in events:
    s = scope_of(e)
    if s == "sdpa":
      kind = "attention"
    elif s is not None:
      kind = s
    elif e.name in _DOT_OPS:
      kind = "dots"
    elif e.name in _NORM_OPS:
      kind = "normalisation"
    else:
      kind = "elementwise"
    totals[kind] += e.self_cpu_time_total * 1e-6
  return {k: v / steps for k, v in totals.items()}


def parity(*, image_size: int = 32, depth: int = 2, batch_size: int = 2, seed: int = 0,
           encodings=ENCODINGS) -> dict[str, float]:
  """max |logits| difference, Flax models.vit vs this model with the converted weights.

  Builds the Flax ViT-S/16 (float32, cls pool, `depth` layers) for each encoding, initialises it,
  copies its params with `flax_to_torch_state` and compares logits on the same random images.
  """
  torch = import_torch()
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from models import vit  # pylint: disable=g-import-not-at-top
  out = {}
  for encoding in encodings:
    config = vit.default_config()
    config.encoding, config.depth, config.train_image_size = encoding, depth, image_size
    model = vit.model_from_config(config, NUM_CLASSES)
    dims = vit.model_dims(config)
    images = np.asarray(jax.random.normal(jax.random.PRNGKey(seed + 1),
                                          (batch_size, image_size, image_size, 3)))
    params = nn.unbox(model.init(jax.random.PRNGKey(seed), images, train=False)["params"])
    # Random (not zero) biases, cls token and head, so a misplaced one shows in the logits.
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 2), len(leaves))
    leaves = [l + 0.05 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    ref = np.asarray(model.apply({"params": params}, images, train=False))
    tm = build_model(width=dims["width"], depth=dims["depth"], num_heads=dims["num_heads"],
                     mlp_dim=dims["mlp_dim"], patch_size=dims["patch_size"],
                     image_size=image_size, encoding=encoding)
    state = flax_to_torch_state(jax.device_get(params), num_heads=dims["num_heads"],
                                encoding=encoding)
    state = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    buffers = {k: v for k, v in tm.state_dict().items() if k.startswith("freqs_t_")}
    tm.load_state_dict({**state, **buffers}, strict=True)
    tm.eval()
    with torch.no_grad():
      got = tm(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
    out[encoding] = float(np.max(np.abs(got - ref)))
    out[encoding + "_max_abs_logit"] = float(np.max(np.abs(ref)))
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--variant", default="S/16")
  parser.add_argument("--encoding", default="mixed", choices=ENCODINGS)
  parser.add_argument("--image_size", type=int, default=224)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--layerscale", type=float, default=None,
                      help="LayerScale init (rope-vit _LS models: 1e-4); default none")
  parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="bfloat16: torch.autocast on CPU (parameters stay float32)")
  parser.add_argument("--adamw", default="default", choices=ADAMW_IMPLS,
                      help="torch.optim.AdamW implementation (default: torch's choice)")
  parser.add_argument("--parity", action="store_true",
                      help="compare logits with the Flax models.vit instead of timing")
  parser.add_argument("--json", action="store_true", help="print one JSON line")
  parser.add_argument("--breakdown", type=int, default=0,
                      help="also profile this many steps and report seconds per op kind")
  args = parser.parse_args(argv)
  for name in ("image_size", "batch_size", "repeats"):
    if getattr(args, name) < 1:
      raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}.")
  if args.parity:
    result = parity()
  else:
    result = time_training_step(
        variant=args.variant, encoding=args.encoding, image_size=args.image_size,
        batch_size=args.batch_size, repeats=args.repeats, warmup=args.warmup,
        layerscale=args.layerscale, dtype=args.dtype, adamw=args.adamw,
        breakdown=args.breakdown)
  if args.json:
    print(json.dumps(result))
  else:
    for k, v in result.items():
      print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
