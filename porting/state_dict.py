"""PyTorch state_dicts for the converters: reading, key checks, torch -> Flax tensor layouts.

A state_dict here is `{name: np.ndarray float32}` under the original names. Files:
* `.npz`: arrays under their names, or under `sd/<name>` (then only those are read, e.g. the
  golden files of tests/golden/checkpoints); needs no torch.
* `.pth` / `.pt` / `.bin`: `torch.load(..., weights_only=True)` (torch needed), unwrapped from
  the `model` / `model_ema` / `module` / `state_dict` entry a training checkpoint nests it in
  (rope-vit's `pytorch_model.bin` keeps it under `model`), as timm's loaders do.

Layouts (golden README "Conventions"): torch Linear `[out, in]` is Flax `W.T`; Conv2d
`[out, in, kh, kw]` is `[kh, kw, in, out]`; a fused qkv `[3D, D]` is q, k, v stacked, head-major
inside each.
"""
import dataclasses
import os
import re
from typing import Any, Iterable, Mapping, Optional

import numpy as np


class PortError(ValueError):
  """A checkpoint that does not fit the family; the message is one line naming the keys."""


@dataclasses.dataclass
class Ported:
  """A converted checkpoint.

  Attributes:
    model: model config values (models/vit.py default_config keys) of the family's ViT.
    params: Flax parameters, nested dicts of float32 arrays, without "head" when the
      checkpoint has none.
    image_size: the checkpoint's native resolution (its APE's grid; else the option given).
    notes: what a user should know (defaults taken for facts the file does not hold).
  """
  model: dict
  params: dict
  image_size: int
  notes: list


def load(path: str) -> dict[str, np.ndarray]:
  """The state_dict in `path` (see the module docstring); PortError naming the file."""
  if not os.path.isfile(path):
    raise PortError(f"--input={path}: no such file.")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npz":
    with np.load(path, allow_pickle=False) as z:
      names = list(z.files)
      prefixed = [n for n in names if n.startswith("sd/")]
      if prefixed:
        return {n[len("sd/"):]: np.asarray(z[n], np.float32) for n in prefixed}
      return {n: np.asarray(z[n], np.float32) for n in names if z[n].dtype.kind in "fiub"}
  if ext in (".pth", ".pt", ".bin"):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError:
      raise PortError(f"--input={path}: reading {ext} files needs torch (pip install torch), "
                      "or save the state_dict's arrays as an .npz under the same names.") from None
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model_ema", "model", "module", "state_dict"):
      if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
        obj = obj[key]
    if not isinstance(obj, Mapping):
      raise PortError(f"--input={path}: holds a {type(obj).__name__}, not a state_dict.")
    return {k: v.detach().float().cpu().numpy() for k, v in obj.items()
            if hasattr(v, "detach")}
  raise PortError(f"--input={path}: unknown file type {ext!r}; allowed: .pth, .pt, .bin, .npz.")


def check(sd: Mapping[str, np.ndarray], expected: Mapping[str, tuple],
          optional: Iterable[str] = (), ignored: Iterable[str] = ()) -> None:
  """PortError naming every missing key, extra key and shape mismatch, or None.

  Args:
    sd: the state_dict.
    expected: `{name: shape}` that must all be present with these shapes.
    optional: names (regular expressions, full match) that may be present (any shape) and are
      not used (buffers the forward recomputes, pre-training-only tensors).
    ignored: names of `sd` already consumed by an earlier, looser check.
  """
  optional = [re.compile(p) for p in optional]
  ignored = set(ignored)
  missing = sorted(k for k in expected if k not in sd)
  extra = sorted(k for k in sd if k not in expected and k not in ignored
                 and not any(p.fullmatch(k) for p in optional))
  shapes = sorted(f"{k} {list(sd[k].shape)} (expected {list(expected[k])})"
                  for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k]))
  problems = []
  if missing:
    problems.append(f"missing keys: {', '.join(_few(missing))}")
  if extra:
    problems.append(f"unexpected keys: {', '.join(_few(extra))}")
  if shapes:
    problems.append(f"shape mismatch: {'; '.join(_few(shapes))}")
  if problems:
    raise PortError("; ".join(problems) + ".")


def _few(items: list, limit: int = 8) -> list:
  return items if len(items) <= limit else items[:limit] + [f"... ({len(items) - limit} more)"]


def need(sd: Mapping[str, np.ndarray], name: str, ndim: int, family: str) -> np.ndarray:
  """`sd[name]` with `ndim` dimensions (the tensors sizes are read from); PortError else."""
  if name not in sd:
    raise PortError(f"missing key: {name} (every {family} checkpoint has it; is this a "
                    f"{family} state_dict?).")
  if sd[name].ndim != ndim:
    raise PortError(f"shape mismatch: {name} {list(sd[name].shape)} (expected {ndim} "
                    f"dimensions).")
  return sd[name]


def trunk(sd: Mapping[str, np.ndarray], family: str) -> tuple[int, int, int, int]:
  """(width, input channels, patch size, depth) read from the patch embedding and the blocks;
  PortError naming the key when either is missing."""
  w = need(sd, "patch_embed.proj.weight", 4, family)
  depth = depth_of(sd)
  if depth == 0:
    raise PortError("missing keys: blocks.0.* (no transformer blocks in the file).")
  return w.shape[0], w.shape[1], w.shape[2], depth


def depth_of(sd: Mapping[str, np.ndarray]) -> int:
  """1 + the largest `blocks.<i>.` index (0 without blocks)."""
  found = [int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m]
  return 1 + max(found) if found else 0


def linear(w: np.ndarray) -> np.ndarray:
  """torch Linear weight `[out, in]` -> Flax Dense kernel `[in, out]`."""
  return np.ascontiguousarray(w.T)


def conv_patch(w: np.ndarray) -> np.ndarray:
  """torch Conv2d weight `[D, C, p, p]` -> PatchEmbed kernel `[p, p, C, D]`."""
  return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def qkv_kernel(w: np.ndarray, heads: int) -> np.ndarray:
  """Fused qkv `[3D, D]` -> `[D, 3, H, hd]` (models/vit.py Attention's qkv kernel)."""
  width = w.shape[1]
  return np.ascontiguousarray(w.T.reshape(width, 3, heads, w.shape[0] // (3 * heads)))


def out_kernel(w: np.ndarray, heads: int) -> np.ndarray:
  """Attention proj `[D, H*hd]` -> `[H, hd, D]`."""
  return np.ascontiguousarray(w.T.reshape(heads, w.shape[1] // heads, w.shape[0]))


def layer_norm(sd: Mapping[str, np.ndarray], prefix: str) -> dict:
  return {"scale": sd[f"{prefix}.weight"], "bias": sd[f"{prefix}.bias"]}


def dense(sd: Mapping[str, np.ndarray], prefix: str) -> dict:
  return {"kernel": linear(sd[f"{prefix}.weight"]), "bias": sd[f"{prefix}.bias"]}


def square_grid(n: int, key: str) -> int:
  """The side of a square grid of `n` patches; PortError naming `key` otherwise."""
  side = int(round(np.sqrt(n)))
  if side * side != n:
    raise PortError(f"shape mismatch: {key} has {n} patch positions, not a square grid.")
  return side


def variant(width: int, patch: int) -> str:
  """A `model.variant` string: the size with this width if there is one (readability; every
  size is set explicitly anyway), else "S"."""
  names = {192: "Ti", 384: "S", 768: "B"}
  return f"{names.get(width, 'S')}/{patch}"


def sizes(width: int, depth: int, heads: Optional[int], mlp_dim: int, patch: int,
          default_head_dim: int = 64) -> dict:
  """Model config sizes (variant, depth, num_heads, head_dim, mlp_dim); PortError if `width`
  cannot be split into `heads` heads."""
  if heads is None:
    heads = max(1, width // default_head_dim)
  if heads < 1 or width % heads:
    raise PortError(f"--num_heads={heads}: the width {width} (patch_embed.proj.weight) is not "
                    f"divisible by it.")
  return dict(variant=variant(width, patch), depth=depth, num_heads=heads,
              head_dim=width // heads, mlp_dim=mlp_dim)


def nest(flat: Mapping[str, Any]) -> dict:
  """`{"a/b/c": x}` -> `{"a": {"b": {"c": x}}}`."""
  out: dict = {}
  for path, value in flat.items():
    node = out
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return out


# Keys only one family has (for "a file of another family"; the key checks catch the rest).
MARKERS = {
    "dinov3": ("storage_tokens", "reg_token", "rope_embed.periods", "blocks.0.ls1.gamma"),
    "eva02": ("blocks.0.attn.q_proj.weight", "blocks.0.mlp.fc1_g.weight",
              "blocks.0.mlp.fc1_x.weight", "blocks.0.mlp.ffn_ln.weight", "fc_norm.weight"),
    "ropevit": ("freqs", "rope.freqs", "blocks.0.gamma_1"),
}


def detect(sd: Mapping[str, np.ndarray]) -> tuple[Optional[str], Optional[str]]:
  """(family, the key that says so) of a state_dict, or (None, None). DINOv3 and EVA-02 are
  asked first: timm's copies of DINOv3 also have rope-vit's `gamma_1`."""
  for family, keys in MARKERS.items():
    for key in keys:
      if key in sd:
        return family, key
  return None, None


def check_family(sd: Mapping[str, np.ndarray], family: str, path: str) -> None:
  """PortError if `sd` is recognisably another family's checkpoint."""
  found, key = detect(sd)
  if found is not None and found != family:
    raise PortError(f"--input={path} looks like a {found} checkpoint (it has {key!r}), not "
                    f"{family}: use --from={found}.")
