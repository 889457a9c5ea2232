"""A full ViT classification config from an encoding name (used by every configs/vit_*.py).

The encoding name is the registry name (`model.encoding`, models/vit_encodings.py); a config
file is `get_config("<name>", arg)`, plus model options for a variant of an entry (e.g.
configs/vit_axial_ape.py: `get_config("axial", arg, ape=True)`).

Default: the Spherical-RoPE paper's CIFAR-100 ViT-S recipe (van de Geijn et al., App. G and
Table 6; docs/spec/vision_rope.md §9.1). Its text and tables conflict; taken here:
  * patch 4x4 on 32x32 (text; Table 6's "16x16" would leave a 2x2 grid),
  * 6 heads x head_dim 60 = width 360, MLP 1440, depth 12 (text "60 x heads" with ViT-S's
    6 heads; Table 6's 12 heads would make it 720 wide, not a ViT-S),
  * global batch 1024 with LAMB lr 4e-3 (Table 6; the text says 256 - 4e-3 is the DeiT-III
    LAMB rate for large batches, and Table 6 lists both numbers together),
  * 400 epochs, 5 linear warm-up epochs, cosine, weight decay 0.05, grad clip 1.0 (norm not
    stated: timm Lamb's default), dropout 0.1, stochastic depth 0.1,
  * LayerScale on, init 1e-4 (DeiT-III; the paper gives no value),
  * RandomResizedCrop(32), flip, 3-Augment, colour jitter 0.3, Mixup 0.8, CutMix 1.0 with
    soft-target cross-entropy (data.vision recipe "spherical_cifar100"),
  * LieRE dense (block_size = head_dim): the paper implemented LieRE "following the
    pseudo-code" (one head_dim x head_dim generator per axis).
Expected top-1 (Table 2, mean of 3 seeds): APE 64.2, Axial 72.1, Uniform 70.5, Spherical 73.2,
Learned Axial 72.9, LieRE 73.1, Mixed 74.7, Learned Spherical 74.1 (the paper's own
implementations: axial_pi / mixed_pi / uniform / spherical*; rope_axial / rope_mixed are
rope-vit's versions with integer positions).

Arguments (after the colon, see configs.common.parse_arg):
  :imagenet  the paper's ImageNet-1k ViT-S/16 recipe: 224 px, head_dim 64 (63 for the
             Spherical encodings, Table 5), batch 512 and lr 4e-3 (Table 5; text: 256 and 3e-3),
             200 epochs, no dropout / stochastic depth / Mixup / CutMix, LayerScale 1e-4
             (Table 5 says LayerScale "1"; read as "on"), 3-Augment + RRC + jitter
             ("spherical_imagenet"). Needs tfds-prepared imagenet2012 (data.data_dir).
             Decoding + augmentation in data.worker_processes = 32 processes per host:
             size it with README "Input workers".
  :fmnist    a real CPU-sized run on Fashion-MNIST (28 px, patch 4 -> 7x7 grid, 3 heads x 24
             = width 72, depth 4, batch 128, LAMB lr 1e-2, 3 epochs = 1407 steps, pad-crop +
             flip, evals also at 20/36/44 px): ~4-5 min on 2 CPU cores (tcmalloc). Seed 0
             top-1 at 28 px: 69.2% (none) to 83.0% (liere); Spherical 82.0%, and
             eval.py at 16/20/28/36/40/48/56 px: README "Results" / docs/results/vit_fmnist.md.
  :smoke     a tiny run on sklearn's 8x8 digits (patch 2 -> 4x4 grid, width 36, depth 2,
             batch 64, LAMB lr 1e-2, 600 steps, evals also at 4/6/12/16 px): 1-2 min on
             2 CPU cores, ~85-90% top-1.
"""
import importlib
import pathlib

import ml_collections
from ml_collections import config_dict

from configs import common
from data import vision
from models import vit
from models.vit_encodings import ENCODINGS

MODES = ("smoke", "fmnist", "imagenet")  # Besides the default (CIFAR-100).

# Model keys whose default is None, with the type a command-line value gets.
_OPTIONAL_MODEL_KEYS = {"depth": int, "head_dim": int, "num_heads": int, "mlp_dim": int,
                        "theta": float, "omega": float,
                        "position_scale": str, "layerscale_init": float,
                        "block_size": int}


def _overridable(section: ml_collections.ConfigDict, types: dict) -> None:
  """Turns None defaults into typed placeholders so that `--config.x=v` can set them."""
  for key in list(section.keys()):
    if section[key] is None:
      section[key] = config_dict.placeholder(types.get(key, object))


def config_names() -> tuple[str, ...]:
  """The names <x> of every configs/vit_<x>.py (the runs of configs/sweep_vit.py), sorted."""
  here = pathlib.Path(__file__).resolve().parent
  return tuple(sorted(p.stem[len("vit_"):] for p in here.glob("vit_*.py")
                      if p.stem != "vit_common"))


# One configs/vit_<x>.py per way of computing the position encoding (pair tables, 3-D blocks,
# learned generators, dense maps, biases, absolute embeddings, augmentation): checks that are too
# costly for every config (bf16 export, CPU lowering through the loop) run on these.
FAMILIES = ("none", "ape", "mixed", "spherical", "liere", "string_cayley", "string_circulant",
            "comrope_ap", "lookhere", "fire", "prope", "dinov3", "eva02")


def load(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of configs/vit_<name>.py (a name of `config_names()`) with argument `arg`."""
  if name not in config_names():
    raise ValueError(f"config {name!r}: no configs/vit_{name}.py; allowed: "
                     f"{', '.join(config_names())}.")
  return importlib.import_module(f"configs.vit_{name}").get_config(arg)


def _model(encoding: str, options: dict, **recipe) -> ml_collections.ConfigDict:
  m = vit.default_config()
  _overridable(m, _OPTIONAL_MODEL_KEYS)
  m.encoding = encoding
  m.update(recipe)
  m.update(options)
  if encoding == "liere" and "block_size" not in options:
    # Dense LieRE (the recipe's choice, above); follows --config.model.head_dim. Other block
    # entries (ComRoPE) keep model.block_size None: their entry's default.
    m.block_size = m.get_ref("head_dim")
  return m


def get_config(encoding: str, arg: str | None = None,
               **model_options) -> ml_collections.ConfigDict:
  """The full, locked config for `encoding` (a registry name), a mode argument, and model
  options that make a variant of the entry (e.g. ape=True)."""
  entry = ENCODINGS.get(encoding)   # ValueError listing the names.
  encoding = ENCODINGS.canonical(encoding)
  arg = common.parse_arg(arg, smoke=False, fmnist=False, imagenet=False)
  modes = [m for m in MODES if arg[m]]
  if len(modes) > 1:
    raise ValueError(f"config arguments {modes} exclude each other; give at most one of "
                     f"{', '.join(MODES)}.")
  mode = modes[0] if modes else "cifar100"
  # ImageNet's head_dim 64, rounded down to what the entry can split (63 for triplets: Table 5).
  imagenet_head_dim = 64 - 64 % (entry.multiple or 1)

  c = common.training_defaults()
  c.task = "classification"  # tasks/classification.py.
  c.loss = "softmax_xent"  # "softmax_xent" | "sigmoid_xent" (DeiT-III BCE).
  if mode == "cifar100":
    c.data = vision.default_config("spherical_cifar100")  # RRC, flip, 3-Aug, CJ, Mixup/CutMix.
    c.model = _model(encoding, model_options, variant="S/4", head_dim=60, dropout=0.1,
                     drop_path=0.1, layerscale_init=1e-4)
    c.training.batch_size = 1024
    c.training.total_epochs = 400.0
    c.optim.update(name="lamb", lr=4e-3, weight_decay=0.05, warmup_epochs=5.0)
    c.eval.every_epochs = 10.0
    c.checkpoint.every_epochs = 10.0
  elif mode == "imagenet":
    c.data = vision.default_config("spherical_imagenet")  # RRC, flip, 3-Aug, CJ; no mixing.
    # JPEG decoding and augmentation in grain worker processes (per host). Size it to the
    # host's accelerators with README "Input workers" (benchmarks/bench_data.py).
    c.data.worker_processes = 32
    c.model = _model(encoding, model_options, variant="S/16", head_dim=imagenet_head_dim,
                     dropout=0.0, drop_path=0.0, layerscale_init=1e-4)
    c.training.batch_size = 512
    c.training.total_epochs = 200.0
    c.optim.update(name="lamb", lr=4e-3, weight_decay=0.05, warmup_epochs=5.0)
    c.eval.every_epochs = 5.0
    c.checkpoint.every_epochs = 1.0
  elif mode == "fmnist":
    c.data = vision.default_config("none")
    c.data.update(name="fashion_mnist", image_size=28, crop="pad", crop_padding=2, flip=True)
    # head_dim 24 (3 heads, width 72): divisible by 3 and 4, so every encoding splits it.
    c.model = _model(encoding, model_options, variant="Ti/4", head_dim=24, depth=4,
                     dropout=0.0, drop_path=0.0, layerscale_init=None)
    c.training.batch_size = 128
    c.training.total_epochs = 3.0  # Sized so that a 14-encoding sweep fits ~70 min on 2 cores.
    c.optim.update(name="lamb", lr=1e-2, weight_decay=0.05, warmup_epochs=0.5)
    c.eval.every_epochs = 3.0  # Once, at the end: eval.py does the resolution sweep afterwards.
    c.eval.batch_size = 1000
    c.eval.image_sizes = (20, 36, 44)
    c.checkpoint.every_epochs = 1.0
  else:  # smoke
    c.data = vision.default_config("none")
    c.data.update(name="digits", image_size=8, num_workers=0)
    c.model = _model(encoding, model_options, variant="Ti/2", head_dim=12, depth=2,
                     dropout=0.0, drop_path=0.0, layerscale_init=None)
    c.training.batch_size = 64
    c.training.total_steps = 600
    c.training.log_every_steps = 50
    c.optim.update(name="lamb", lr=1e-2, weight_decay=0.05, warmup_steps=30)
    c.eval.every_steps = 200
    c.eval.batch_size = 128
    c.eval.image_sizes = (4, 6, 12, 16)
    c.checkpoint.every_steps = 100
  # The model is built for the resolution it trains at; one key sets both.
  c.model.train_image_size = c.data.get_ref("image_size")
  c.lock()
  return c
