r"""ViT with rope-vit's RoPE-Mixed plus a learned APE ('RoPE-Mixed + APE').

Default: the Spherical-RoPE paper's CIFAR-100 ViT-S recipe (which of its conflicting numbers
are used: configs/vit_common.py). Every key is documented in configs/common.py (training loop),
models/vit.py (model.*), data/vision.py (data.*) and tasks/classification.py (loss, eval.*).

  # ~1-2 min on 2 CPU cores (digits 8x8, 600 steps; ~85-90% top-1):
  python train.py --config=configs/vit_mixed_ape.py:smoke --workdir=/tmp/runs/vit_mixed_ape_smoke
  python eval.py --workdirs=/tmp/runs/vit_mixed_ape_smoke   # accuracy at 4..16 px, JSON + PNG
  # Fashion-MNIST, 3 epochs, ~4-5 min on 2 CPU cores (82.2% top-1, seed 0):
  python train.py --config=configs/vit_mixed_ape.py:fmnist --workdir=/tmp/runs/vit_mixed_ape_fmnist
  # CIFAR-100, 400 epochs (needs tfds-prepared cifar100: --config.data.data_dir=DIR);
  # roughly 20k steps of batch 1024, a few hours on one TPU v4-8 / 8 GPUs:
  python train.py --config=configs/vit_mixed_ape.py --workdir=/mnt/bucket/vit_mixed_ape_c100
  # ImageNet-1k, 200 epochs (tfds imagenet2012), a TPU pod, workdir on a shared mount (gcsfuse/NFS), on every host:
  python train.py --config=configs/vit_mixed_ape.py:imagenet --workdir=/mnt/bucket/vit_mixed_ape_in1k --multihost

Expected CIFAR-100 top-1 (paper, mean of 3 seeds): not in the paper.
"""
from configs import vit_common


def get_config(arg=None):
  return vit_common.get_config("mixed", arg, ape=True)
