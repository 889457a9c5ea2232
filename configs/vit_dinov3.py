r"""ViT with DINOv3's RoPE: base 100, rotate-half, row first, centred coordinates in (-1, 1).

Training-time position augmentation on, DINOv3's released setting: rescale_coords = 2
(shift and jitter off), one draw per forward pass (timm's Eva; the original draws per block).
The argument `augment=False` (e.g. `:fmnist,augment=False`) turns it off: the resolution
study's "DINOv3 without augmentation" (configs/sweep_vit.py).

Default: the Spherical-RoPE paper's CIFAR-100 ViT-S recipe (which of its conflicting numbers
are used: configs/vit_common.py). Every key is documented in configs/common.py (training loop),
models/vit.py (model.*), data/vision.py (data.*) and tasks/classification.py (loss, eval.*).

  # digits 8x8, 600 steps (run time and accuracy: not measured):
  python train.py --config=configs/vit_dinov3.py:smoke --workdir=/tmp/runs/vit_dinov3_smoke
  python eval.py --workdirs=/tmp/runs/vit_dinov3_smoke
  # Fashion-MNIST, 3 epochs = 1407 steps (batch 128) of the 4-layer, 72-wide ViT of
  # configs/vit_axial.py:fmnist (~4-5 min on 2 CPU cores there); XLA counts 8.95 GFLOP per
  # step vs axial's 8.95 (transcendentals not counted). Time and accuracy: not
  # measured:
  python train.py --config=configs/vit_dinov3.py:fmnist --workdir=/tmp/runs/vit_dinov3_fmnist
  # CIFAR-100, 400 epochs (needs tfds-prepared cifar100: --config.data.data_dir=DIR):
  python train.py --config=configs/vit_dinov3.py --workdir=/mnt/bucket/vit_dinov3_c100
  # ImageNet-1k, 200 epochs (tfds imagenet2012), a TPU pod, on every host:
  python train.py --config=configs/vit_dinov3.py:imagenet --workdir=/mnt/bucket/vit_dinov3_in1k --multihost

Expected top-1: not measured here.
"""
from configs import common
from configs import vit_common


def get_config(arg=None):
  parsed = common.parse_arg(arg, augment=True, **{m: False for m in vit_common.MODES})
  c = vit_common.get_config("dinov3", ",".join(m for m in vit_common.MODES if parsed[m]))
  if parsed.augment:
    c.model.position_augment.rescale = 2.0
  return c
