r"""ViT with LookHere (Fuller et al. 2024): directional distance-penalty logit biases.

Global slope 1, layer slopes (1.5, 0.5); directions 'halves' (4k heads) or 'halves-none'
(6 heads: the reference's 6-head rule needs a split; why this one: models/vit_encodings.py
lookhere_directions). ViT-Ti's 3 heads cannot use it: :smoke and :fmnist use 6 heads at the
same width (S/2 head_dim 6, S/4 head_dim 12).

Default: the Spherical-RoPE paper's CIFAR-100 ViT-S recipe (which of its conflicting numbers
are used: configs/vit_common.py). Every key is documented in configs/common.py (training loop),
models/vit.py (model.*), data/vision.py (data.*) and tasks/classification.py (loss, eval.*).

  # digits 8x8, 600 steps (run time and accuracy: not measured):
  python train.py --config=configs/vit_lookhere.py:smoke --workdir=/tmp/runs/vit_lookhere_smoke
  python eval.py --workdirs=/tmp/runs/vit_lookhere_smoke
  # Fashion-MNIST, 3 epochs = 1407 steps (batch 128) of the 4-layer, 72-wide ViT of
  # configs/vit_axial.py:fmnist (~4-5 min on 2 CPU cores there); this encoding's
  # per-step cost (6 heads x 12) not counted. Time and accuracy: not measured:
  python train.py --config=configs/vit_lookhere.py:fmnist --workdir=/tmp/runs/vit_lookhere_fmnist
  # CIFAR-100, 400 epochs (needs tfds-prepared cifar100: --config.data.data_dir=DIR):
  python train.py --config=configs/vit_lookhere.py --workdir=/mnt/bucket/vit_lookhere_c100
  # ImageNet-1k, 200 epochs (tfds imagenet2012), a TPU pod, on every host:
  python train.py --config=configs/vit_lookhere.py:imagenet --workdir=/mnt/bucket/vit_lookhere_in1k --multihost

Expected top-1: not measured here.
"""
from configs import vit_common


def get_config(arg=None):
  c = vit_common.get_config("lookhere", arg)
  if c.data.name == "digits":          # :smoke, 6 heads x 6 = width 36
    c.model.update(dict(variant="S/2", head_dim=6))
  elif c.data.name == "fashion_mnist":  # :fmnist, 6 heads x 12 = width 72
    c.model.update(dict(variant="S/4", head_dim=12))
  return c
