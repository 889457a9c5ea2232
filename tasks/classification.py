"""Image classification: a vision model (models.<model.name>) on data.vision datasets.

Config keys read here (configs/vit_common.py sets and documents them):
  model.*                 the model config (model.name picks the module, e.g. "vit"); configs
                          of old runs (model.posenc) are read by models.vit.upgrade_config.
  data.*                  data.vision options (dataset, resolution, augmentation).
  loss                    "softmax_xent" (cross-entropy with the possibly soft/mixed targets) or
                          "sigmoid_xent" (DeiT-III / rope-vit's binary cross-entropy, averaged
                          over examples and classes as timm's BinaryCrossEntropy does).
  eval.batch_size         global eval batch size.
  eval.image_sizes        extra test resolutions evaluated besides data.image_size (the
                          resolution-extrapolation protocol, data.eval_protocol: "resize" or
                          "canvas"); () = only data.image_size.
  seed, training.batch_size.

Eval sets: "eval" at the training resolution, "eval_<S>px" at every other size S of
eval.image_sizes. Metrics: accuracy (top-1) and loss.
"""
import importlib
from typing import Any, Iterator, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import tasks
from data import vision
from tasks import base
from trainer import mesh as mesh_lib

LOSSES = ("softmax_xent", "sigmoid_xent")
# model.name -> module with default_config / validate_config / model_from_config.
MODEL_MODULES = {"vit": "models.vit"}


def eval_set_name(image_size: int, train_image_size: int) -> str:
  """The name of the eval set at `image_size`: "eval" at the training size, else "eval_<S>px"."""
  return "eval" if image_size == train_image_size else f"eval_{image_size}px"


def _per_example_loss(kind: str, logits: jax.Array, targets: jax.Array) -> jax.Array:
  """logits, targets [b, K] (targets: probabilities) -> loss [b]."""
  if kind == "softmax_xent":
    return optax.softmax_cross_entropy(logits, targets)
  return optax.sigmoid_binary_cross_entropy(logits, targets).mean(axis=-1)


@tasks.register("classification")
class Classification(base.Task):
  """Supervised image classification; see the module docstring for the config keys."""

  unit = "images"

  @staticmethod
  def upgrade_config(config: dict) -> dict:
    """The model part through its module's `upgrade_config` (old `posenc` names, new options);
    data options added since (e.g. `eval_protocol`, `worker_processes`) get their defaults,
    which `data.vision.validate_config` gives a config without them anyway; so does `mesh`
    (pure data parallelism, trainer.mesh.DEFAULTS)."""
    config = mesh_lib.upgrade_config(config)
    if isinstance(config.get("data"), Mapping):
      config = dict(config, data={**vision.default_config().to_dict(), **config["data"]})
    model = config.get("model") or {}
    if model.get("name") not in MODEL_MODULES:
      return config
    module = importlib.import_module(MODEL_MODULES[model["name"]])
    return dict(config, model=module.upgrade_config(ml_collections.ConfigDict(model)).to_dict())

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    if config.loss not in LOSSES:
      raise ValueError(f"loss={config.loss!r} is unknown; allowed: {', '.join(LOSSES)}.")
    if config.model.name not in MODEL_MODULES:
      raise ValueError(f"model.name={config.model.name!r} is unknown for task "
                       f"'classification'; allowed: {', '.join(MODEL_MODULES)}.")
    self.info = vision.dataset_info(config.data.name)  # ValueError listing the datasets.
    vision.validate_config(config.data)
    self.image_size = int(config.data.image_size)
    self.eval_sizes = tuple(dict.fromkeys(
        (self.image_size,) + tuple(int(s) for s in config.eval.image_sizes)))
    models_module = importlib.import_module(MODEL_MODULES[config.model.name])
    if config.model.train_image_size != self.image_size:
      raise ValueError(
          f"model.train_image_size={config.model.train_image_size} differs from "
          f"data.image_size={self.image_size}; the model stores positions for the size it "
          "is trained at.")
    for size in self.eval_sizes:
      option = "data.image_size" if size == self.image_size else "eval.image_sizes"
      if size < 1:
        raise ValueError(f"{option} contains {size}; image sizes must be positive.")
      if size < self.image_size and config.data.get("eval_protocol") == "canvas":
        raise ValueError(f"{option} contains {size} with data.eval_protocol='canvas': the "
                         f"image keeps its training size {self.image_size} on the canvas, so "
                         "test sizes must be at least that.")
      try:
        models_module.validate_config(config.model, size)
      except ValueError as e:
        raise ValueError(f"{option}={size}: {e}") from e
    self.model = models_module.model_from_config(config.model, self.info.num_classes)
    self._num_train = self._count_train_examples()

  def _count_train_examples(self) -> int:
    c = self.config.data
    split = c.train_split or self.info.train_split
    n = (self.info.num_train if split == self.info.train_split
         else len(vision.open_source(c.name, split, c.data_dir)))
    return min(n, c.max_train_examples) if c.max_train_examples else n

  @property
  def num_train_examples(self) -> int:
    return self._num_train

  def init_inputs(self) -> dict[str, np.ndarray]:
    s, k = self.image_size, self.info.num_classes
    return {"image": np.zeros((1, s, s, self.info.channels), np.float32),
            "label": np.zeros((1, k), np.float32)}

  def init_params(self, rng: jax.Array) -> Any:
    # The model boxes every parameter with its logical axis names (models/vit.py
    # LOGICAL_AXES); the loop, optax and orbax keep plain arrays, and apply takes either.
    return nn.unbox(self.init_boxed_params(rng))

  def init_boxed_params(self, rng: jax.Array) -> Any:
    """Fresh parameters as `nn.Partitioned` boxes carrying their logical axis names (for a
    mesh: `nn.get_partition_spec(jax.eval_shape(task.init_boxed_params, rng))`)."""
    images = jnp.asarray(self.init_inputs()["image"])
    return self.model.init({"params": rng}, images, train=False)["params"]

  def param_logical_specs(self) -> Any:
    return nn.get_partition_spec(jax.eval_shape(self.init_boxed_params, jax.random.key(0)))

  def train_iterator(self, start_step: int, process_index: int,
                     process_count: int) -> Iterator[dict[str, np.ndarray]]:
    # The data pipeline's iterator starts AT step `start_step` (its 0-based batch index), which
    # is the batch of the loop's update number start_step + 1.
    return vision.make_train_iterator(
        self.config.data, global_batch_size=self.config.training.batch_size,
        seed=self.config.seed, start_step=start_step, process_index=process_index,
        process_count=process_count)

  def loss_fn(self, params: Any, batch: Mapping[str, jax.Array],
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    logits = self.model.apply({"params": params}, batch["image"], train=True,
                              rngs={"dropout": rng})
    targets = batch["label"]
    loss = _per_example_loss(self.config.loss, logits, targets).mean()
    # With Mixup/CutMix the "right" class is the dominant one of the mixed target.
    accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(targets, -1))
    return loss, {"accuracy": accuracy}

  def eval_sets(self) -> dict[str, vision.EvalIterable]:
    return {
        eval_set_name(size, self.image_size): vision.make_eval_iterator(
            self.config.data, batch_size=self.config.eval.batch_size, image_size=size,
            process_index=jax.process_index(), process_count=jax.process_count())
        for size in self.eval_sizes}

  def eval_step(self, params: Any, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    logits = self.model.apply({"params": params}, batch["image"], train=False)
    mask = batch["mask"].astype(jnp.float32)
    targets = jax.nn.one_hot(batch["label"], logits.shape[-1])
    loss = _per_example_loss(self.config.loss, logits, targets)
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {"accuracy": jnp.sum(correct * mask), "loss": jnp.sum(loss * mask),
            "count": jnp.sum(mask)}
