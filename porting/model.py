"""The ViT of a converted checkpoint: its model config, and its parameters checked against it.

`model_config(ported)`: models/vit.py's default config with the family's values.
`complete_params(ported, config, num_classes)`: the parameters with a head (a zero head when
the checkpoint has none, or PortError when its classes differ from the dataset's), checked
path by path and shape by shape against the model's own `init` (a converter bug shows here,
before anything is written).
"""
import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from models import vit
from porting.state_dict import PortError


def model_config(ported, dtype: str = "float32") -> ml_collections.ConfigDict:
  """The model config (models/vit.py keys) of `ported`, validated by `model_from_config`."""
  c = vit.default_config()
  c.update(ported.model)
  c.train_image_size = int(ported.image_size)
  c.dtype = dtype
  return c


def _flat(tree) -> dict:
  """{"a/b/c": leaf} of a nested parameter dict."""
  return traverse_util.flatten_dict(tree, sep="/")


def complete_params(ported, config: ml_collections.ConfigDict, num_classes: int,
                    channels: int = 3) -> dict:
  """`ported.params` with a head for `num_classes`, as float32 arrays, checked against the
  model's parameter tree (images of `channels` channels); PortError naming the key when the
  checkpoint's classes or input channels differ from the dataset's."""
  params = dict(ported.params)
  taken = params["embedding"]["kernel"].shape[-2]    # [p, p, C, width]
  if taken != channels:
    raise PortError(f"patch_embed.proj.weight takes {taken}-channel images, the dataset's have "
                    f"{channels}: port to a dataset of {taken}-channel images (--dataset).")
  width = vit.model_dims(config)["width"]
  if "head" in params:
    classes = params["head"]["kernel"].shape[-1]
    if classes != num_classes:
      raise PortError(f"head.weight has {classes} classes, the dataset {num_classes}: port to a "
                      f"dataset with {classes} classes (--dataset), then fine-tune with "
                      f"train.py --config.init_from (the head is then re-initialised).")
  else:
    # No classifier in the file (DINOv3, EVA-02 MIM): a zero head, as big_vision fine-tunes.
    params["head"] = {"kernel": np.zeros((width, num_classes), np.float32),
                      "bias": np.zeros((num_classes,), np.float32)}
  model = vit.model_from_config(config, num_classes)
  size = int(config.train_image_size)
  images = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
  shapes = _flat(nn.unbox(jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False), images)["params"]))
  got = _flat(params)
  missing = sorted(set(shapes) - set(got))
  extra = sorted(set(got) - set(shapes))
  wrong = sorted(f"{k} {list(np.shape(got[k]))} vs {list(shapes[k].shape)}"
                 for k in set(shapes) & set(got) if tuple(np.shape(got[k])) != shapes[k].shape)
  if missing or extra or wrong:
    raise RuntimeError(f"converter bug: the converted parameters do not fit the model: "
                       f"missing {missing}, extra {extra}, shapes {wrong}.")
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
