r"""ViT with Circulant-STRING (Schenck et al. 2025): dense per-head circulant generators.

Integer (row, col) positions; c ~ N(0, 0.02^2) (the spec's goldens; no official code).

Default: the Spherical-RoPE paper's CIFAR-100 ViT-S recipe (which of its conflicting numbers
are used: configs/vit_common.py). Every key is documented in configs/common.py (training loop),
models/vit.py (model.*), data/vision.py (data.*) and tasks/classification.py (loss, eval.*).

  # digits 8x8, 600 steps (run time and accuracy: not measured):
  python train.py --config=configs/vit_string_circulant.py:smoke --workdir=/tmp/runs/vit_string_circulant_smoke
  python eval.py --workdirs=/tmp/runs/vit_string_circulant_smoke
  # Fashion-MNIST, 3 epochs = 1407 steps (batch 128) of the 4-layer, 72-wide ViT of
  # configs/vit_axial.py:fmnist (~4-5 min on 2 CPU cores there); this encoding's
  # per-step cost not counted. Time and accuracy: not measured:
  python train.py --config=configs/vit_string_circulant.py:fmnist --workdir=/tmp/runs/vit_string_circulant_fmnist
  # CIFAR-100, 400 epochs (needs tfds-prepared cifar100: --config.data.data_dir=DIR):
  python train.py --config=configs/vit_string_circulant.py --workdir=/mnt/bucket/vit_string_circulant_c100
  # ImageNet-1k, 200 epochs (tfds imagenet2012), a TPU pod, on every host:
  python train.py --config=configs/vit_string_circulant.py:imagenet --workdir=/mnt/bucket/vit_string_circulant_in1k --multihost

Expected top-1: not measured here.
"""
from configs import vit_common


def get_config(arg=None):
  return vit_common.get_config("string_circulant", arg)
