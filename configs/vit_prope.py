r"""ViT with 2-D p-RoPE (Barbero et al.): rope-vit's axial table truncated to p = 0.25 per axis.

Each axis keeps its int(0.25 * head_dim / 4) highest frequencies; the rest pass unrotated.
:smoke uses head_dim 16 (12 would keep no frequency).

Default: the Spherical-RoPE paper's CIFAR-100 ViT-S recipe (which of its conflicting numbers
are used: configs/vit_common.py). Every key is documented in configs/common.py (training loop),
models/vit.py (model.*), data/vision.py (data.*) and tasks/classification.py (loss, eval.*).

  # digits 8x8, 600 steps (run time and accuracy: not measured):
  python train.py --config=configs/vit_prope.py:smoke --workdir=/tmp/runs/vit_prope_smoke
  python eval.py --workdirs=/tmp/runs/vit_prope_smoke
  # Fashion-MNIST, 3 epochs = 1407 steps (batch 128) of the 4-layer, 72-wide ViT of
  # configs/vit_axial.py:fmnist (~4-5 min on 2 CPU cores there); this encoding's
  # per-step cost not counted. Time and accuracy: not measured:
  python train.py --config=configs/vit_prope.py:fmnist --workdir=/tmp/runs/vit_prope_fmnist
  # CIFAR-100, 400 epochs (needs tfds-prepared cifar100: --config.data.data_dir=DIR):
  python train.py --config=configs/vit_prope.py --workdir=/mnt/bucket/vit_prope_c100
  # ImageNet-1k, 200 epochs (tfds imagenet2012), a TPU pod, on every host:
  python train.py --config=configs/vit_prope.py:imagenet --workdir=/mnt/bucket/vit_prope_in1k --multihost

Expected top-1: not measured here.
"""
from configs import vit_common


def get_config(arg=None):
  c = vit_common.get_config("prope", arg)
  if c.data.name == "digits":   # :smoke: head_dim 12 keeps no frequency at p = 0.25
    c.model.head_dim = 16
  return c
