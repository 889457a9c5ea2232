"""The train state and the pure functions that create and update it.

The train state is a plain dict, which is also exactly what a checkpoint holds:
  params:    the model parameters (pytree of float32 arrays),
  opt_state: the optax state (moments, schedule count, ...),
  step:      int32 scalar, number of updates applied so far,
  rng:       uint32 [2], raw key data of the training PRNG key (constant; the key of update s
             is fold_in(rng, s), so randomness is a pure function of (seed, step)).
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

State = dict[str, Any]
Task = Any  # A tasks/base.py Task; not imported: the trainer imports no task code.


def make_init_fn(task: Task, tx: optax.GradientTransformation) -> Callable[[jax.Array], State]:
  """`init(key) -> state` for a typed PRNG key (jax.random.key(seed)); jit-able."""

  def init(key: jax.Array) -> State:
    init_key, train_key = jax.random.split(key)
    params = task.init_params(init_key)
    return {"params": params, "opt_state": tx.init(params),
            "step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(train_key)}

  return init


def make_train_step(task: Task, tx: optax.GradientTransformation,
                    schedule: optax.Schedule) -> Callable[[State, Any], tuple[State, dict]]:
  """`train_step(state, global_batch) -> (new_state, metrics)`; jit with the state donated.

  Metrics (scalars): the task's own (e.g. accuracy), "loss", "grad_norm" (before clipping),
  "update_norm", "param_norm" and "lr" (the learning rate of this update).
  """

  def train_step(state: State, batch: Any) -> tuple[State, dict[str, jax.Array]]:
    key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
    grad_fn = jax.value_and_grad(task.loss_fn, has_aux=True)
    (loss, metrics), grads = grad_fn(state["params"], batch, key)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   update_norm=optax.tree.norm(updates), param_norm=optax.tree.norm(params),
                   lr=schedule(state["step"]))
    new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
                 "rng": state["rng"]}
    return new_state, metrics

  return train_step
