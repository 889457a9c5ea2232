r"""ViT with ComRoPE-LD (Yu et al., Longin-Yu/ComRoPE): linearly dependent block generators.

Positions (i + 0.5) / n, class token at the centre (0.5, 0.5) and rotated; P, theta ~ N(0, 1);
block_size 2 (the reference config's default).

Default: the Spherical-RoPE paper's CIFAR-100 ViT-S recipe (which of its conflicting numbers
are used: configs/vit_common.py). Every key is documented in configs/common.py (training loop),
models/vit.py (model.*), data/vision.py (data.*) and tasks/classification.py (loss, eval.*).

  # digits 8x8, 600 steps (run time and accuracy: not measured):
  python train.py --config=configs/vit_comrope_ld.py:smoke --workdir=/tmp/runs/vit_comrope_ld_smoke
  python eval.py --workdirs=/tmp/runs/vit_comrope_ld_smoke
  # Fashion-MNIST, 3 epochs = 1407 steps (batch 128) of the 4-layer, 72-wide ViT of
  # configs/vit_axial.py:fmnist (~4-5 min on 2 CPU cores there); XLA counts 8.99 GFLOP per
  # step vs axial's 8.95 (transcendentals not counted). Time and accuracy: not
  # measured:
  python train.py --config=configs/vit_comrope_ld.py:fmnist --workdir=/tmp/runs/vit_comrope_ld_fmnist
  # CIFAR-100, 400 epochs (needs tfds-prepared cifar100: --config.data.data_dir=DIR):
  python train.py --config=configs/vit_comrope_ld.py --workdir=/mnt/bucket/vit_comrope_ld_c100
  # ImageNet-1k, 200 epochs (tfds imagenet2012), a TPU pod, on every host:
  python train.py --config=configs/vit_comrope_ld.py:imagenet --workdir=/mnt/bucket/vit_comrope_ld_in1k --multihost

Expected top-1: not measured here.
"""
from configs import vit_common


def get_config(arg=None):
  return vit_common.get_config("comrope_ld", arg, block_size=2)
