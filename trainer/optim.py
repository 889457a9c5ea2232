"""Optimizers and learning-rate schedules (optax), with the repository's weight-decay rule.

Everything is built from `config.optim` (see configs/common.py for the keys). The learning
rate is linear warm-up followed by cosine decay, stepped every update (timm steps it per
epoch; per step is smoother and equal in the limit).
"""
import math
from typing import Any, Callable

import jax
import ml_collections
import optax

OPTIMIZERS = ("lamb", "adamw")
SCHEDULES = ("cosine", "constant")

# Names that mark a parameter as exempt from weight decay (see `decays`): substrings of any
# path element, or the exact name of the leaf.
_NO_DECAY_SUBSTRINGS = ("posenc", "norm")
_NO_DECAY_NAMES = ("bias", "cls", "registers", "ls")


def _path_names(path: tuple[Any, ...]) -> list[str]:
  names = []
  for entry in path:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        names.append(str(getattr(entry, attr)))
        break
    else:
      names.append(str(entry))
  return names


def decays(path: tuple[Any, ...]) -> bool:
  """Whether the parameter at `path` (a jax key path) gets weight decay.

  No decay for position parameters (any path element containing "posenc": APE, learned
  frequencies, LieRE generators), normalisation layers (any element containing "norm",
  e.g. "LayerNorm_0", "encoder_norm"), and leaves named "bias", "cls", "registers" (register
  tokens, as DINOv3 / timm exempt them) or "ls" (LayerScale).
  Matching is case-insensitive.
  """
  names = [n.lower() for n in _path_names(path)]
  if any(s in n for n in names for s in _NO_DECAY_SUBSTRINGS):
    return False
  return not (names and names[-1] in _NO_DECAY_NAMES)


def decay_mask(params: Any) -> Any:
  """A pytree of bools like `params`: True where weight decay applies (see `decays`)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: decays(path), params)


def check_learning_rates(optim: ml_collections.ConfigDict) -> None:
  """ValueError naming the option unless optim.lr > 0 and the other rates are >= 0 (finite)."""
  for key, minimum in (("lr", None), ("warmup_init_lr", 0.0), ("end_lr", 0.0)):
    value = optim.get(key)
    if value is None and key != "lr":
      continue
    try:
      number = float(value)
    except (TypeError, ValueError):
      raise ValueError(f"optim.{key}={value!r} must be a number.") from None
    if not math.isfinite(number) or (number <= 0 if minimum is None else number < minimum):
      need = "a positive finite number" if minimum is None else "a finite number >= 0"
      raise ValueError(f"optim.{key}={value} must be {need}.")


def make_schedule(optim: ml_collections.ConfigDict, *, total_steps: int,
                  warmup_steps: int) -> optax.Schedule:
  """Linear warm-up from `optim.warmup_init_lr` to `optim.lr`, then cosine to `optim.end_lr`.

  The learning rate used for update `s` (0-based) is `schedule(s)`.
  """
  check_learning_rates(optim)
  if optim.schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule={optim.schedule!r}; allowed: {', '.join(SCHEDULES)}.")
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(
        f"The warm-up ({warmup_steps} steps, from optim.warmup_steps/optim.warmup_epochs) must "
        f"be shorter than the run ({total_steps} steps, from training.total_steps/"
        "training.total_epochs).")
  if optim.schedule == "constant":
    after = optax.constant_schedule(optim.lr)
  else:
    after = optax.cosine_decay_schedule(
        optim.lr, decay_steps=total_steps - warmup_steps, alpha=optim.end_lr / optim.lr)
  if warmup_steps == 0:
    return after
  warmup = optax.linear_schedule(optim.warmup_init_lr, optim.lr, warmup_steps)
  return optax.join_schedules([warmup, after], [warmup_steps])


def _lamb(schedule: optax.Schedule, optim: ml_collections.ConfigDict,
          mask: Callable[[Any], Any]) -> optax.GradientTransformation:
  """LAMB as in timm's `Lamb` (the Spherical-RoPE paper and DeiT-III train with it).

  Adam moments, decoupled weight decay on the decayed parameters, and the layer-wise trust
  ratio ||w|| / ||update|| on the decayed parameters only: timm (`always_adapt=False`) skips
  the trust ratio for groups without weight decay, whereas `optax.lamb` applies it to all.
  """
  return optax.chain(
      optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=optim.eps),
      optax.add_decayed_weights(optim.weight_decay, mask),
      optax.masked(optax.scale_by_trust_ratio(), mask),
      optax.scale_by_learning_rate(schedule),
  )


def make_optimizer(optim: ml_collections.ConfigDict, *, total_steps: int,
                   warmup_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The optimizer described by `optim` and its learning-rate schedule.

  Gradients are first clipped to global norm `optim.grad_clip_norm` (None/0 = no clipping).
  Weight decay skips the parameters listed in `decays`.
  """
  if optim.name not in OPTIMIZERS:
    raise ValueError(f"optim.name={optim.name!r}; allowed: {', '.join(OPTIMIZERS)}.")
  check_learning_rates(optim)
  schedule = make_schedule(optim, total_steps=total_steps, warmup_steps=warmup_steps)
  if optim.name == "lamb":
    tx = _lamb(schedule, optim, decay_mask)
  else:  # adamw (LieRE's recipe uses Adam = adamw with weight_decay 0).
    tx = optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                     weight_decay=optim.weight_decay, mask=decay_mask)
  if optim.grad_clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), tx)
  return tx, schedule
