r"""ViT with FIRE (Li et al. 2024): a learned MLP bias of the log-normalised token distance.

1-D over the row-major token index (no 2-D form in the sources); torch Linear init,
c = 0.1, L = |1 * 512|.

Default: the Spherical-RoPE paper's CIFAR-100 ViT-S recipe (which of its conflicting numbers
are used: configs/vit_common.py). Every key is documented in configs/common.py (training loop),
models/vit.py (model.*), data/vision.py (data.*) and tasks/classification.py (loss, eval.*).

  # digits 8x8, 600 steps (run time and accuracy: not measured):
  python train.py --config=configs/vit_fire.py:smoke --workdir=/tmp/runs/vit_fire_smoke
  python eval.py --workdirs=/tmp/runs/vit_fire_smoke
  # Fashion-MNIST, 3 epochs = 1407 steps (batch 128) of the 4-layer, 72-wide ViT of
  # configs/vit_axial.py:fmnist (~4-5 min on 2 CPU cores there); XLA counts 8.93 GFLOP per
  # step vs axial's 8.95 (transcendentals not counted). Time and accuracy: not
  # measured:
  python train.py --config=configs/vit_fire.py:fmnist --workdir=/tmp/runs/vit_fire_fmnist
  # CIFAR-100, 400 epochs (needs tfds-prepared cifar100: --config.data.data_dir=DIR):
  python train.py --config=configs/vit_fire.py --workdir=/mnt/bucket/vit_fire_c100
  # ImageNet-1k, 200 epochs (tfds imagenet2012), a TPU pod, on every host:
  python train.py --config=configs/vit_fire.py:imagenet --workdir=/mnt/bucket/vit_fire_in1k --multihost

Expected top-1: not measured here.
"""
from configs import vit_common


def get_config(arg=None):
  return vit_common.get_config("fire", arg)
