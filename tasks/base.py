"""The Task interface: everything the training loop needs to know about a problem.

A task turns a config into a model, data and a loss. The loop
(trainer/loop.py) never looks inside batches or models; it only calls these methods. Batches
are LOCAL (this process's rows) numpy pytrees whose leaves have the example axis first.
"""
import abc
from typing import Any, Iterable, Iterator, Mapping

import flax.linen as nn
import jax
import ml_collections
from jax.sharding import PartitionSpec

Batch = Mapping[str, Any]
Params = Any


class Task(abc.ABC):
  """Model + data + loss for one kind of training run (subclass and `tasks.register`)."""

  #: The flax module being trained.
  model: nn.Module
  #: What `count_units` counts, for throughput logs ("images", "tokens").
  unit: str = "examples"

  def __init__(self, config: ml_collections.ConfigDict):
    """Builds model and data from the full config; validates it (ValueError naming the key)."""
    self.config = config

  @staticmethod
  def upgrade_config(config: dict) -> dict:
    """A run's config.json (as a dict) written by an earlier version, in today's form.

    The trainer compares it with the config a resumed run is given (`check_config`): keys that
    newer code added with defaults reproducing the old behaviour are filled in here, so they
    do not count as a change. Default: unchanged.
    """
    return config

  @property
  @abc.abstractmethod
  def num_train_examples(self) -> int | None:
    """Size of one epoch (to convert `*_epochs` into steps); None if there is no epoch."""

  @abc.abstractmethod
  def init_inputs(self) -> Batch:
    """A small dummy LOCAL batch with the shapes/dtypes the model is initialised with."""

  @abc.abstractmethod
  def init_params(self, rng: jax.Array) -> Params:
    """Fresh parameters (a plain pytree) from a PRNG key; traceable (runs under jit)."""

  def param_logical_specs(self) -> Any:
    """The logical axis names of every parameter: a pytree like `init_params`'s whose leaves
    are PartitionSpecs of logical names (e.g. P("embed", "mlp"); P() = unnamed, replicated).

    The trainer maps them onto the mesh (trainer/sharding.py). Default: every parameter
    unnamed. Tasks whose models box their parameters with `nn.with_logical_partitioning`
    override this with `nn.get_partition_spec` of the boxed tree (shapes only, no compute).
    """
    shapes = jax.eval_shape(self.init_params, jax.random.key(0))
    return jax.tree.map(lambda _: PartitionSpec(), shapes)

  @abc.abstractmethod
  def train_iterator(self, start_step: int, process_index: int,
                     process_count: int) -> Iterator[Batch]:
    """LOCAL training batches for steps start_step+1, start_step+2, ...

    The global batch of a step depends only on (config.seed, step), and process p yields rows
    [p*b, (p+1)*b) of it, so resuming needs only `start_step`.
    """

  @abc.abstractmethod
  def loss_fn(self, params: Params, batch: Batch,
              rng: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(mean loss over the GLOBAL batch, dict of scalar metrics) for a training step; traced.

    `rng` is a fresh key for this step (dropout etc.).
    """

  @abc.abstractmethod
  def eval_sets(self) -> Mapping[str, Iterable[Batch]]:
    """{name: re-iterable of LOCAL eval batches for this process}; same batch count on all."""

  @abc.abstractmethod
  def eval_step(self, params: Params, batch: Batch) -> dict[str, jax.Array]:
    """Metric SUMS over the valid examples of a global batch, plus "count" (their number).

    The loop adds them over batches and reports `sum / count` for every key but "count".
    """

  def count_units(self, local_batch: Batch) -> int:
    """How many `unit`s a LOCAL batch holds (default: its number of examples)."""
    return len(jax.tree.leaves(local_batch)[0])
