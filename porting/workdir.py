"""A converted checkpoint as a training workdir: config.json + an orbax checkpoint at step 0.

Exactly what `train.py` writes (trainer/loop.py): the full experiment config
(configs/vit_common.py's ImageNet recipe with the family's model values, the dataset and its
native resolution) and the train state `{params, opt_state, step, rng}` (trainer/step.py) with
the ported parameters, a fresh optimizer state, step 0 and the seed's training key. So
`eval.py --workdirs=DIR` evaluates it at any resolution and `train.py
--config.init_from=DIR` fine-tunes from its parameters.

Everything (config, task, parameter tree, optimizer state) is built and checked before the
first write: a failure leaves the workdir untouched.
"""
import os
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections

import tasks
from configs import vit_common
from porting import model as port_model
from porting.state_dict import PortError
from trainer import loop
from trainer import workdir as workdir_lib


def experiment_config(ported, *, dataset: str, data_dir: Optional[str] = None,
                      seed: int = 0) -> ml_collections.ConfigDict:
  """The full config of the ported model (locked, like a config file's)."""
  options = {k: v for k, v in ported.model.items() if k != "encoding"}
  c = vit_common.get_config(ported.model["encoding"], "imagenet", **options)
  c.data.name = dataset
  c.data.image_size = int(ported.image_size)   # model.train_image_size follows it
  if data_dir:
    c.data.data_dir = data_dir
  c.seed = seed
  return c


def _check_empty(workdir: str) -> None:
  workdir_lib.check_path(workdir)
  paths = loop.workdir_paths(workdir)
  if os.path.exists(paths["config"]) or os.path.exists(paths["checkpoints"]):
    raise PortError(f"--workdir={workdir} already holds a run (config.json or checkpoints/); "
                    "give a new directory.")


def write(ported, workdir: str, *, dataset: str = "imagenet2012",
          data_dir: Optional[str] = None, seed: int = 0) -> ml_collections.ConfigDict:
  """Writes the workdir of `ported`; returns its config. PortError / ValueError before any
  write if the workdir is in use, the dataset is unknown or the parameters do not fit."""
  _check_empty(workdir)
  config = experiment_config(ported, dataset=dataset, data_dir=data_dir, seed=seed)
  task = tasks.get_task(config)          # validates the config (model, data, resolutions)
  params = port_model.complete_params(ported, config.model, task.info.num_classes,
                                        task.info.channels)
  setup = loop.build(config, task=task)
  abstract = loop.abstract_state(setup, config.seed)
  _, train_key = jax.random.split(jax.random.key(config.seed))   # as trainer/step.py's init
  state = {"params": params, "opt_state": setup.tx.init(params),
           "step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(train_key)}
  if jax.tree.structure(state) != jax.tree.structure(abstract):
    raise RuntimeError("converter bug: the ported train state is not train.py's.")

  os.makedirs(workdir, exist_ok=True)
  checkpoints = loop.open_checkpoints(config, workdir)
  try:
    checkpoints.save(0, state)
    checkpoints.wait()
  finally:
    checkpoints.close()
  loop.write_config(config, workdir, loop.ConfigCheck(old=None, old_text=None, changes={}), 0)
  return config
