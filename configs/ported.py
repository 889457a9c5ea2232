r"""Fine-tuning a ported checkpoint: the config of its workdir, starting from its parameters.

The argument is a workdir written by scripts/port_checkpoint.py (README "Porting
checkpoints"): its model (every family option), dataset and resolution, on
configs/vit_common.py's ImageNet recipe (200 epochs of LAMB; shorten it with
--config.training.total_epochs / --config.optim.lr for a fine-tune), with `init_from` set to it
(parameters only, fresh optimizer; a head for another dataset's classes starts fresh).

  python scripts/port_checkpoint.py --from=ropevit --input=pytorch_model.bin \
      --workdir=/tmp/ported/rope_mixed_s
  python train.py --config=configs/ported.py:/tmp/ported/rope_mixed_s \
      --workdir=/tmp/runs/rope_mixed_s_ft --config.training.total_epochs=10 \
      --config.optim.lr=1e-4 --config.data.data_dir=$TFDS_DIR
"""
import json
import os

from configs import vit_common

# Model keys vit_common sets itself (the recipe's and the resolution's); the rest is the port's.
_RECIPE_KEYS = ("name", "encoding", "train_image_size", "position_augment")


def get_config(arg=None):
  if not arg:
    raise ValueError("configs/ported.py needs the ported workdir: "
                     "--config=configs/ported.py:DIR.")
  path = os.path.join(arg, "config.json")
  if not os.path.isfile(path):
    raise ValueError(f"configs/ported.py:{arg}: no config.json there (port a checkpoint with "
                     "scripts/port_checkpoint.py first).")
  with open(path) as f:
    ported = json.load(f)
  model = ported["model"]
  c = vit_common.get_config(model["encoding"], "imagenet",
                            **{k: v for k, v in model.items() if k not in _RECIPE_KEYS})
  c.data.name = ported["data"]["name"]
  c.data.image_size = ported["data"]["image_size"]
  c.data.data_dir = ported["data"].get("data_dir")
  c.init_from = arg
  return c
