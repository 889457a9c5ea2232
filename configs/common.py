"""Pieces shared by every config: the `:arg` parser and the training-loop defaults.

`parse_arg` (big_vision style) turns the string after the colon of `--config=file.py:ARG` into
a typed ConfigDict:
  --config=configs/vit_spherical.py:smoke          # a boolean needs no value for True
  --config=configs/vit_spherical.py:imagenet=True  # explicit value
  --config=configs/vit_spherical.py:fmnist,seed=2  # several, comma-separated
Values are typed like the defaults given to `parse_arg`; unknown names are a ValueError.

`training_defaults()` holds every key the training loop (trainer/loop.py) reads; a task config
updates it and adds its own `model` / `data` sections.
"""
from typing import Any

import ml_collections
from ml_collections import config_dict

_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0", "")


def _convert(name: str, text: str, default: Any) -> Any:
  if isinstance(default, bool):
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise ValueError(f"config argument {name}={text!r}: expected a boolean.")
  try:
    return type(default)(text)
  except ValueError as e:
    raise ValueError(f"config argument {name}={text!r}: expected {type(default).__name__}.") \
        from e


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
  """Parses "a,b=1,c=x" into a ConfigDict with the keys and default values of `spec`.

  Args:
    arg: the text after ":" in --config=file.py:arg (None or "" = all defaults).
    **spec: every accepted name with its default (its type types the value).

  Returns:
    A ConfigDict with every key of `spec`. A bare name sets a boolean to True; a bare value
    (no "=") is allowed only alone and goes to the first key of `spec`.

  Raises:
    ValueError naming the unknown key / bad value and listing the allowed keys.
  """
  result = ml_collections.ConfigDict(dict(spec))
  if not arg:
    return result
  items = [item.strip() for item in arg.split(",") if item.strip()]
  for item in items:
    name, has_value, text = item.partition("=")
    name = name.strip()
    if not has_value and name not in spec:
      if len(items) == 1 and spec and not isinstance(next(iter(spec.values())), bool):
        name, text, has_value = next(iter(spec)), item, True
      else:
        raise ValueError(f"config argument {name!r} is unknown; allowed: {', '.join(spec)}.")
    if name not in spec:
      raise ValueError(f"config argument {name!r} is unknown; allowed: {', '.join(spec)}.")
    if not has_value:
      if not isinstance(spec[name], bool):
        raise ValueError(f"config argument {name!r} needs a value ({name}=...).")
      result[name] = True
    else:
      result[name] = _convert(name, text.strip(), spec[name])
  return result


def training_defaults() -> ml_collections.ConfigDict:
  """Every key of the training loop with a generic default (a recipe overrides them).

  Durations come in pairs `<name>_steps` / `<name>_epochs`; `_steps` wins when both are set.
  """
  c = ml_collections.ConfigDict()
  c.task = "classification"  # Registry key of tasks.get_task ("classification", later "vlm").
  c.seed = 0  # Seeds parameters, data order, augmentation and dropout (run = f(seed)).
  c.platform = "any"  # "any" | "tpu" | "gpu": train.py stops at start-up, naming the package
  #   to install (jax[tpu] / jax[cuda12]), when the run finds no such device. --multihost
  #   (a pod / cluster) asks for a TPU or GPU in any case. A re-run may change it.
  c.init_from = config_dict.placeholder(str)  # A workdir (a trained run, or one written by
  #   scripts/port_checkpoint.py): a new run starts from its newest checkpoint's parameters
  #   with a fresh optimizer (the head is re-initialised if absent or of another size).
  #   Ignored when resuming.

  c.training = ml_collections.ConfigDict()
  c.training.batch_size = 256  # GLOBAL batch (all devices / processes); divisible by both.
  c.training.total_epochs = config_dict.placeholder(float)  # Run length in epochs, or
  c.training.total_steps = config_dict.placeholder(int)  # ... in optimizer steps (wins).
  c.training.log_every_steps = 50  # Train-metric / throughput log period (also the NaN check
  #   and, with several processes, the SIGTERM agreement period).
  c.training.tensorboard = True  # Also write TensorBoard event files (workdir/tensorboard).
  c.training.peak_tflops_per_device = config_dict.placeholder(float)  # Peak for the logged
  #   MFU (perf/mfu); None: trainer/cost.py's bf16 table (TPU v4-v6e, A100, H100, H200) or,
  #   on CPU, a float32 matmul measured at start-up. Set it for other GPUs.

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "lamb"  # "lamb" (timm Lamb) | "adamw" (AdamW; Adam = weight_decay 0).
  c.optim.lr = 1e-3  # Peak learning rate (used as given: no batch-size scaling).
  c.optim.b1 = 0.9  # Adam/LAMB first-moment decay.
  c.optim.b2 = 0.999  # Adam/LAMB second-moment decay.
  c.optim.eps = 1e-6  # Adam/LAMB epsilon (timm Lamb: 1e-6; torch AdamW: 1e-8).
  c.optim.weight_decay = 0.05  # Decoupled weight decay; never on position parameters,
  #   norms, biases, cls token, LayerScale (trainer.optim.decays).
  c.optim.grad_clip_norm = 1.0  # Clip gradients to this global L2 norm (0 = no clipping).
  c.optim.schedule = "cosine"  # After warm-up: "cosine" decay to end_lr | "constant".
  c.optim.warmup_epochs = config_dict.placeholder(float)  # Linear warm-up length in epochs,
  c.optim.warmup_steps = config_dict.placeholder(int)  # ... or in steps (0 = none).
  c.optim.warmup_init_lr = 1e-6  # Learning rate at step 0 (timm/DeiT warmup_lr).
  c.optim.end_lr = 1e-5  # Learning rate at the last step (timm/DeiT min_lr).

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 1024  # GLOBAL eval batch (the last one is padded; metrics are exact).
  c.eval.every_epochs = config_dict.placeholder(float)  # Eval period in epochs, or
  c.eval.every_steps = config_dict.placeholder(int)  # ... in steps; both None: only at the end.
  c.eval.image_sizes = ()  # Extra test resolutions also evaluated during training.

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_epochs = config_dict.placeholder(float)  # Save period in epochs, or
  c.checkpoint.every_steps = config_dict.placeholder(int)  # ... in steps. Saves also happen
  #   after every evaluation, at the end, and on SIGTERM.
  c.checkpoint.keep = 3  # Keep the newest `keep` checkpoints ...
  c.checkpoint.best_metric = "eval/accuracy"  # ... and the best one by this eval metric
  #   ("" = no best-checkpoint tracking).
  c.checkpoint.best_mode = "max"  # "max" | "min": which value of best_metric is best.
  c.checkpoint.async_save = True  # Write checkpoints in the background (saves return early).

  # The device mesh (trainer/mesh.py): mesh.data x mesh.fsdp = every device of every process.
  # Batches are split over both axes; parameters and optimizer state over "fsdp" only (by
  # their logical axis names, trainer/sharding.py), so per-device state memory is ~1/fsdp.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = 1  # Devices sharing one copy of the state (1: pure data parallelism). Must
  #   divide the device count; a parameter no named dimension of which it divides stays whole.
  c.mesh.data = -1  # Data-parallel replicas of the state; -1: every device fsdp leaves.
  return c
