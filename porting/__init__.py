"""Released PyTorch ViT checkpoints -> this repository's ViT (models/vit.py) and a workdir.

One module per family, each `convert(state_dict, options) -> Ported` (pure: arrays in, model
config and Flax parameters out, or `PortError` naming the offending keys):
  porting/ropevit.py   naver-ai/rope-vit RoPE-Axial / Mixed (+ APE) DeiT-III, and timm copies
  porting/dinov3.py    facebookresearch/dinov3 ViTs, and timm copies
  porting/eva02.py     EVA-02 in timm's layouts (fused / unfused qkv, packed / split SwiGLU),
                       and BAAI's original names
Shared: porting/state_dict.py (reading `.pth` / `.bin` / `.npz`, key checks, the tensor
layouts), porting/workdir.py (the workdir train.py would write: config.json + an orbax
checkpoint). Entry point: scripts/port_checkpoint.py; README "Porting checkpoints".
"""
import importlib

FAMILIES = ("ropevit", "dinov3", "eva02")


def family_module(name: str):
  """The converter module of `name`; ValueError naming --from and the allowed values."""
  if name not in FAMILIES:
    raise ValueError(f"--from={name!r} is not supported; allowed: {', '.join(FAMILIES)}.")
  return importlib.import_module(f"porting.{name}")
